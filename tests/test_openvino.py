"""OpenVINO as a runtime: its outputs against Paddle Inference's, the
precision it is asked for, and the runtime a folder gets by default.

Needs ``pip install 'rexnet-plugin[openvino]'``; skipped otherwise (but for
the error a missing OpenVINO gives). Speed is measured by
``benchmarks/run.py``, never here.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import export_reference_model, load_reference_npz
from rexnet_plugin.cli import main
from rexnet_plugin.deploy import predict as predict_mod
from rexnet_plugin.deploy import runtime
from rexnet_plugin.deploy.artifacts import ONNX_FILENAME
from rexnet_plugin.extras import missing

needs_openvino = pytest.mark.skipif(not runtime.openvino_available(),
                                    reason=missing("openvino") or "")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ReXNet_1_0 with the test-vector weights, exported with ONNX (softmax output)."""
    return export_reference_model(tmp_path_factory.mktemp("export"))[0]


@pytest.fixture(scope="module")
def inputs():
    """The official test vectors' two 224x224 inputs, and four of them perturbed."""
    x = load_reference_npz("ReXNet_1_0")[1]["a"]["input"].astype("float32")
    noise = np.random.default_rng(0).standard_normal((4, *x.shape[1:])).astype("float32")
    return np.concatenate([x, x[[0, 1, 0, 1]] + 0.5 * noise])


@pytest.fixture(scope="module")
def paddle_probs(exported, inputs):
    predictor = runtime.create_predictor(exported, threads=2)
    return runtime.run_predictor(predictor, inputs)


@needs_openvino
def test_fp32_means_fp32_and_matches_paddle_inference(exported, inputs, paddle_probs):
    session = runtime.create_openvino_session(exported / ONNX_FILENAME, threads=2,
                                              precision="fp32")
    assert session.inference_precision == "f32"
    probs = runtime.run_openvino(session, inputs)
    assert probs.shape == paddle_probs.shape
    assert float(np.abs(probs - paddle_probs).max()) <= 1e-5


@needs_openvino
def test_bf16_where_the_cpu_has_it(exported, inputs, paddle_probs):
    if not runtime.bf16_supported():
        with pytest.raises(runtime.UnsupportedCPUError, match="AVX512-BF16"):
            runtime.create_openvino_session(exported / ONNX_FILENAME, precision="bf16")
        return
    session = runtime.create_openvino_session(exported / ONNX_FILENAME, threads=2,
                                              precision="bf16")
    assert session.inference_precision == "bf16"
    probs = runtime.run_openvino(session, inputs)
    diff = float(np.abs(probs - paddle_probs).max())
    # bfloat16 (8 bits of mantissa) moves the probabilities, not far.
    assert 1e-5 < diff < 2e-2, diff


@needs_openvino
def test_a_batch_split_over_streams_gives_each_image_its_own_answer(exported, inputs,
                                                                    paddle_probs):
    session = runtime.create_openvino_session(exported / ONNX_FILENAME, threads=2)
    batch = np.concatenate([inputs, inputs[::-1], inputs[:1]])  # odd size: unequal slices
    probs = runtime.run_openvino(session, batch)
    expected = np.concatenate([paddle_probs, paddle_probs[::-1], paddle_probs[:1]])
    assert float(np.abs(probs - expected).max()) <= 1e-5
    one = runtime.run_openvino(session, inputs[:1])  # smaller than the threads: one stream
    assert float(np.abs(one - paddle_probs[:1]).max()) <= 1e-5


@needs_openvino
def test_load_model_and_predict_run_openvino(exported, inputs, paddle_probs, capsys, tmp_path):
    loaded = predict_mod.load_model(exported)  # the default: the fastest, OpenVINO here
    assert (loaded.runtime, loaded.precision) == ("openvino", "fp32")
    assert "OpenVINO" in loaded.describe()
    assert float(np.abs(loaded.run(inputs) - paddle_probs).max()) <= 1e-5
    from PIL import Image
    photo = tmp_path / "photo.png"
    Image.fromarray((inputs[0].transpose(1, 2, 0) * 40 + 120).clip(0, 255).astype("uint8")).save(photo)
    results = {}
    for name in ("paddle", "openvino"):
        assert main(["predict", str(exported), str(photo), "--json", "--runtime", name]) == 0
        out = capsys.readouterr()
        results[name] = json.loads(out.out)
        assert predict_mod.RUNTIME_NAMES[name] in out.err  # says which runtime ran
    assert results["openvino"]["class_id"] == results["paddle"]["class_id"]
    assert results["openvino"]["score"] == pytest.approx(results["paddle"]["score"], abs=1e-5)


def test_without_openvino_the_default_is_paddle_and_asking_for_it_says_how(exported,
                                                                          monkeypatch):
    monkeypatch.setattr(runtime, "openvino_available", lambda: False)
    assert predict_mod.load_model(exported).runtime == "paddle"
    from rexnet_plugin.extras import install_command
    with pytest.raises(predict_mod.ModelFolderError,
                       match=re.escape(install_command("openvino"))):
        predict_mod.load_model(exported, runtime="openvino")


@needs_openvino
def test_an_int8_folder_runs_in_openvino(exported, tmp_path):
    """The QDQ model of rexnet-plugin quantize, read by OpenVINO, against fp32
    Paddle Inference on 40 crops of real photos, with the bounds that
    tests/test_quantize.py sets for ONNX Runtime (the default for an int8
    folder). These random weights have many near-ties: the two runtimes
    round differently and agree with each other on about 3 in 4."""
    pytest.importorskip("onnxruntime.quantization", reason="needs onnxruntime")
    from rexnet_plugin.deploy.quantize import MIN_CALIBRATION_IMAGES, quantize_export
    from test_quantize import _photo_crops, agreement  # benchmarks/agreement.py
    calib = _photo_crops(tmp_path / "calib", MIN_CALIBRATION_IMAGES)
    int8 = quantize_export(exported, calib, tmp_path / "int8",
                           num_images=MIN_CALIBRATION_IMAGES, progress=False)
    default = predict_mod.load_model(int8)
    assert (default.runtime, default.precision) == ("onnx", "int8")
    openvino = predict_mod.load_model(int8, runtime="openvino")
    assert (openvino.runtime, openvino.precision) == ("openvino", "int8")
    photos = agreement.sample_photos()
    fp32 = runtime.create_predictor(exported, threads=2)
    expected = np.concatenate([runtime.run_predictor(fp32, photos[i:i + 8])
                               for i in range(0, 40, 8)])
    got = np.concatenate([openvino.run(photos[i:i + 8]) for i in range(0, 40, 8)])
    assert len(set(expected.argmax(1))) >= 5  # the inputs matter
    assert np.sum(got.argmax(1) == expected.argmax(1)) >= 20
    top5 = np.argsort(-got, axis=1)[:, :5]
    assert np.mean([t in row for t, row in zip(expected.argmax(1), top5)]) >= 0.9


@needs_openvino
def test_bench_mode_against_the_peer_reports_the_ratio(tmp_path):
    """A tiny OpenVINO mode (batch 2, 64x64, 3 timed batches): ours in fp32 against
    the built-in in OpenVINO with its defaults. The report, never the speed."""
    import sys
    from conftest import ROOT
    from rexnet_plugin.deploy import bench
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report
    tiny = bench.Mode("openvino_fp32_b2", "openvino", 2, 64, "fp32", 1.0,
                      builtin_runtime="openvino", builtin_precision="default")
    doc = bench.run_benchmark("ReXNet_1_0", modes=[tiny], warmup=1, repeats=3, threads=2,
                              log=lambda *_: None)
    mode, = doc["modes"]
    assert mode["title"] == "OpenVINO fp32; built-in: OpenVINO defaults"
    medians = {i: mode["results"][i]["ms_per_image"]["median"] for i in bench.IMPLEMENTATIONS}
    assert mode["ratio"] == pytest.approx(medians["ours"] / medians["builtin"])
    assert doc["machine"]["versions"]["openvino"]
    assert f"**{mode['ratio']:.2f}x**" in report.peer_summary(doc)
    labels = [label for _, label, *_ in report._runs(doc)]
    assert labels == ["ours, OpenVINO fp32", "built-in, OpenVINO defaults"]
