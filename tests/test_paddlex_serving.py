"""ReXNet in PaddleX beyond one image: batches through create_model, the
high-performance engine's binding, and the unmodified `paddlex --serve` on the
pipeline file this package writes (a real server on a free port of
127.0.0.1, real photos, bad requests, concurrent clients). Every answer is
checked against the dygraph model with the official test-vector weights."""

from __future__ import annotations

import base64
import http.client
import importlib.metadata
import importlib.util
import io
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ppcls_support import sample_photos, seed_transform, subprocess_env

paddlex = pytest.importorskip(
    "paddlex", reason="PaddleX is not installed: pip install \"rexnet-plugin[paddlex]\"")
from rexnet_plugin.integrations import paddlex as pdx  # noqa: E402

VARIANT = "ReXNet_1_0"  # the variant with real (reference-vector) weights offline
TOPK = 5
CLIENTS, REQUESTS = 8, 40


@pytest.fixture(scope="module")
def exported(reference_export):
    return reference_export


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos (scikit-learn's two samples) as PNGs of sizes where
    inference.yml's preprocessing and the seed's transform agree exactly
    (elsewhere the crop can move by a pixel: docs/deployment.md)."""
    from PIL import Image
    folder = tmp_path_factory.mktemp("photos")
    china, flower = (Image.open(p).convert("RGB") for p in sample_photos(folder)[:2])
    crops = {"china_landscape": (china, (0, 0, 640, 427), (384, 256)),
             "flower_portrait": (flower, (178, 0, 462, 427), (256, 384)),
             "flower_square": (flower, (106, 0, 533, 427), (256, 256))}
    paths = []
    for name, (image, box, size) in crops.items():
        paths.append(folder / f"{name}.png")
        image.crop(box).resize(size, Image.BICUBIC).save(paths[-1], icc_profile=None)
    return paths


@pytest.fixture(scope="module")
def expected(exported, photos):
    """The dygraph model's top-5 (ids, probabilities) per photo under the seed's transform."""
    import paddle
    _, dygraph = exported
    with paddle.no_grad():
        logits = dygraph(paddle.to_tensor(np.stack([seed_transform(p) for p in photos])))
    probs = paddle.nn.functional.softmax(logits, axis=1).numpy()
    top = [(list(map(int, np.argsort(-p)[:TOPK])), p) for p in probs]
    assert len({tuple(ids) for ids, _ in top}) == len(photos)  # the photo matters
    return [(ids, p[ids]) for ids, p in top]


@pytest.fixture(scope="module")
def model(exported):
    return paddlex.create_model(VARIANT, model_dir=str(exported[0]), device="cpu")


@pytest.fixture(scope="module")
def labels(exported):
    from rexnet_plugin.deploy.infer_config import read_infer_config
    return read_infer_config(exported[0]).label_list


def assert_topk(ids, scores, names, want, labels, what):
    want_ids, want_scores = want
    assert list(map(int, ids)) == want_ids, what
    np.testing.assert_allclose(np.asarray(scores, np.float64), want_scores, rtol=0, atol=1e-4,
                               err_msg=what)  # PaddleX rounds scores to 5 decimals
    assert list(names) == [labels[i] for i in want_ids], what


# -- batches and engines, in process ----------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 2])
def test_each_image_of_a_batch_gets_its_own_topk(model, photos, expected, labels, batch_size):
    """3 photos in batches of 2 (then 1) or 1: PaddleX 3.7.2 itself gives every image
    the whole batch's class_ids; the ReXNet binding splits them."""
    results = list(model.predict([str(p) for p in photos], batch_size=batch_size))
    assert len(results) == len(photos)
    for result, want, photo in zip(results, expected, photos):
        assert np.asarray(result["class_ids"]).shape == (TOPK,), photo
        assert_topk(result["class_ids"], result["scores"], result["label_names"], want,
                    labels, f"{photo} batch_size={batch_size}")


def test_an_unboundedly_elongated_image_is_refused(model):
    with pytest.raises(ValueError, match=r"1x10000 pixels.*more than 100 times"):
        next(model.predict(np.zeros((10000, 1, 3), np.uint8)))


def test_use_hpip_without_ultra_infer_names_it(exported):
    if importlib.util.find_spec("ultra_infer") is not None:
        pytest.skip("ultra-infer is installed here")
    with pytest.raises(Exception, match="ultra-infer"):  # PaddleX's own DependencyError
        paddlex.create_model(VARIANT, model_dir=str(exported[0]), device="cpu", use_hpip=True)


def test_hpi_runner_takes_the_users_backend_else_paddle_inference():
    """PaddleX's automatic backend choice knows only its own model names."""
    build = lambda **kwargs: pdx._hpi_runner(default_builder=lambda **given: given, **kwargs)
    given = build(model_name=VARIANT, engine_config={"auto_config": True, "device_type": "cpu"})
    assert given["engine_config"] == {"auto_config": False, "backend": "paddle",
                                      "device_type": "cpu"}
    assert given["model_name"] == VARIANT
    chosen = build(engine_config={"auto_config": True, "backend": "openvino"})
    assert chosen["engine_config"] == {"auto_config": False, "backend": "openvino"}


@pytest.mark.slow
def test_use_hpip_builds_paddlexs_hpi_runner(exported, photos, expected, labels, tmp_path,
                                             monkeypatch):
    """As far as it goes without ultra-infer (not on PyPI): with an empty
    stand-in package, PaddleX's own HPIRunner is built for ReXNet (its backend
    table does not know the name, so the binding picks Paddle Inference) and
    predicts the dygraph top-5."""
    from paddlex.utils.deps import is_dep_available
    (tmp_path / "ultra_infer").mkdir()
    (tmp_path / "ultra_infer" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    is_dep_available.cache_clear()  # PaddleX caches "ultra-infer is missing"
    try:
        model = paddlex.create_model(VARIANT, model_dir=str(exported[0]), device="cpu",
                                     use_hpip=True)
        result = next(model.predict(str(photos[0])))
    finally:
        is_dep_available.cache_clear()
    assert type(model._predictor.runner).__name__ == "HPIRunner"
    assert_topk(result["class_ids"], result["scores"], result["label_names"], expected[0],
                labels, "hpi")


# -- paddlex --serve ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: dict | None = None):
    """(HTTP status, JSON answer, seconds) with the standard library's client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        start = time.perf_counter()
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data), time.perf_counter() - start
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """The unmodified `paddlex --serve` on the pipeline file of
    `rexnet-plugin paddlex-pipeline`, offline (no font given), on a free port."""
    from paddlex.utils.deps import EXTRAS, is_dep_available
    missing = [dep for dep in EXTRAS["serving"] if not is_dep_available(dep)]
    if missing:
        pytest.skip(f"PaddleX's serving packages are missing ({', '.join(missing)}): "
                    f"pip install \"rexnet-plugin[paddlex]\"")
    groups = importlib.metadata.entry_points().select(group="paddlex.serving.plugins")
    assert any(ep.value.startswith("rexnet_plugin.") for ep in groups), (
        "rexnet-plugin's entry points are not installed (group paddlex.serving.plugins): "
        "reinstall it (pip install -e .)")
    base = tmp_path_factory.mktemp("serve")
    pipeline = pdx.write_pipeline_config(base / "pipeline.yaml", exported[0])
    script = Path(sys.executable).with_name("paddlex")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "paddlex"]
    port = free_port()
    env = subprocess_env()
    env.pop("PADDLE_PDX_LOCAL_FONT_FILE_PATH", None)
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen([*command, "--serve", "--pipeline", str(pipeline), "--device", "cpu",
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"paddlex --serve exited with {proc.returncode}:\n"
                            + (base / "server.log").read_text(errors="replace")[-3000:])
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "paddlex --serve did not answer /health in 180 s"
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def encoded(path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def image_file(width: int, height: int, mode: str = "L", kind: str = "PNG") -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, kind)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.slow
def test_serve_answers_each_photo_like_dygraph(server, photos, expected, labels):
    for photo, want in zip(photos, expected):
        status, answer, _ = request(server, "POST", "/image-classification",
                                    {"image": encoded(photo)})
        assert status == 200, answer
        assert answer["errorCode"] == 0
        assert answer["result"].get("image") is None  # nothing drawn: no font to download
        categories = answer["result"]["categories"]
        assert_topk([c["id"] for c in categories], [c["score"] for c in categories],
                    [c["name"] for c in categories], want, labels, str(photo))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bad base64", "not an image", "decompression bomb",
                                  "1x10000 pixels", "GIF"])
def test_serve_answers_bad_images_with_422(server, case):
    """PaddleX alone answers each of these with 500 (the bomb after decoding it)."""
    image = {"bad base64": "not*base64!",
             "not an image": base64.b64encode(b"plain text, not an image\n" * 50).decode(),
             # 200 million 1-bit pixels in about 25 KB of PNG.
             "decompression bomb": image_file(20000, 10000, "1"),
             "1x10000 pixels": image_file(1, 10000),
             "GIF": image_file(32, 32, kind="GIF")}[case]
    status, answer, _ = request(server, "POST", "/image-classification", {"image": image})
    assert status == 422, answer
    assert set(answer) == {"logId", "errorCode", "errorMsg"}  # PaddleX's error envelope
    assert answer["errorCode"] == 422
    assert {"bad base64": "base64", "not an image": "not an image",
            "decompression bomb": "200000000 pixels", "1x10000 pixels": "1x10000",
            "GIF": "GIF file"}[case] in answer["errorMsg"]


@pytest.mark.slow
def test_serve_under_concurrent_load(server, photos, expected):
    """8 clients, 40 requests: every answer is its own photo's top-5 (speed: benchmarks/)."""
    images = [encoded(p) for p in photos]

    def one(i):
        status, answer, seconds = request(server, "POST", "/image-classification",
                                          {"image": images[i % len(images)]})
        assert status == 200, answer
        ids = [c["id"] for c in answer["result"]["categories"]]
        assert ids == expected[i % len(images)][0], i
        return seconds

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        latencies = sorted(pool.map(one, range(REQUESTS)))
    wall = time.perf_counter() - start
    assert len(latencies) == REQUESTS
    print(f"{REQUESTS} requests, {CLIENTS} clients: {REQUESTS / wall:.1f} requests/s, "
          f"p50 {latencies[REQUESTS // 2] * 1e3:.0f} ms, "
          f"p95 {latencies[int(REQUESTS * 0.95)] * 1e3:.0f} ms")
    assert request(server, "GET", "/health")[0] == 200
