"""bf16 and int8 against fp32: top-1 agreement on real inputs (benchmarks/run.py).

Reads the official test vectors (``../shared/reference`` or
``$REXNET_REFERENCE_DIR``): a development tool, not part of the package.
"""

from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path

WORKER_TIMEOUT_S = 900  # one batch (or the setup) taking longer than this is a hang


def default_reference_dir() -> Path | None:
    env = os.environ.get("REXNET_REFERENCE_DIR")
    if env:
        return Path(env)
    beside_checkout = Path(__file__).resolve().parents[2] / "shared" / "reference"
    return beside_checkout if beside_checkout.is_dir() else None



def sample_photos(size: int = 224):
    """A few dozen real photos: scikit-learn's two sample images, cropped and flipped.

    Each photo is resized (short side 256 and 320, bicubic), cut into five
    crops of ``size`` (centre and corners) and mirrored: 2 x 2 x 5 x 2 = 40
    images, normalised like ImageNet evaluation.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from rexnet_plugin.zoo import EVAL_TRANSFORM as t
    mean, std = np.array(t.mean, "float32"), np.array(t.std, "float32")
    out = []
    for array in load_sample_images().images:
        photo = Image.fromarray(array)
        for short in (256, 320):
            scale = short / min(photo.size)
            resized = photo.resize((round(photo.width * scale), round(photo.height * scale)),
                                   Image.BICUBIC)
            w, h = resized.size
            corners = [((w - size) // 2, (h - size) // 2), (0, 0), (w - size, 0),
                       (0, h - size), (w - size, h - size)]
            for left, top in corners:
                crop = resized.crop((left, top, left + size, top + size))
                for image in (crop, crop.transpose(Image.FLIP_LEFT_RIGHT)):
                    pixels = (np.asarray(image, "float32") / 255 - mean) / std
                    out.append(pixels.transpose(2, 0, 1))
    return np.stack(out)


def _agreement(fp32, bf16) -> dict:
    """How often bf16's top-1 is fp32's, and how close the flipped cases were.

    The margin is fp32's top-1 logit minus its runner-up: a flip with a tiny
    margin is a near-tie, not a wrong answer.
    """
    import numpy as np
    top1_32, top1_16 = fp32.argmax(1), bf16.argmax(1)
    ordered = np.sort(fp32, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    flipped = top1_32 != top1_16
    return {"images": int(len(fp32)), "top1_agree": int((~flipped).sum()),
            "top1_agreement": float((~flipped).mean()),
            "distinct_fp32_top1": int(len(set(top1_32.tolist()))),
            "median_fp32_margin": float(np.median(margins)),
            "largest_flipped_margin": float(margins[flipped].max()) if flipped.any() else None,
            "max_abs_logit_diff": float(np.abs(fp32 - bf16).max()),
            "fp32_logit_range": float(fp32.max() - fp32.min())}


def _reference_models(reference_dir, pattern: str):
    """(npz path, its arrays, inspect_state's info, the model with those weights)
    for each test-vector file matching ``pattern``."""
    import numpy as np
    from rexnet_plugin.model import ReXNet
    from rexnet_plugin.weights import inspect_state, to_canonical
    from rexnet_plugin.zoo import VARIANTS
    for path in sorted(Path(reference_dir).glob(pattern)):
        data = np.load(path)
        state = to_canonical({k: data[k].astype("float32") for k in data.files
                              if not k.startswith(("a.", "b."))})
        info = inspect_state(state)  # which variant these weights are
        model = ReXNet(**VARIANTS[info.variant].arch, class_num=info.class_num)
        model.set_state_dict(state)
        yield path, data, info, model


def bf16_agreement(reference_dir: str | os.PathLike, threads: int | None = None) -> list[dict]:
    """Top-1 agreement of bf16 with fp32 Paddle Inference on real inputs.

    For every official test-vector file in ``reference_dir`` (weights that
    make the logits depend on the input; see shared/reference/README.md):
    its own inputs, and the photos of ``sample_photos``.
    """
    import numpy as np
    from rexnet_plugin.deploy.export import export_inference
    from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
    photos = sample_photos()
    rows = []
    for path, data, info, model in _reference_models(reference_dir, "rexnet_*.npz"):
        name = info.variant
        with tempfile.TemporaryDirectory() as tmp:
            export_inference(model, tmp)  # dynamic H, W: case b is 161x97
            fp32 = create_predictor(tmp, threads=threads)
            bf16 = create_predictor(tmp, threads=threads, precision="bf16")
            batches = {"reference_inputs": [data["a.input"], data["b.input"]],
                       "sample_photos": [photos[i:i + 8] for i in range(0, len(photos), 8)]}
            row = {"variant": name, "weights": f"the weights of the test vectors {path.name}"}
            for key, inputs in batches.items():
                logits32 = np.concatenate([run_predictor(fp32, x) for x in inputs])
                logits16 = np.concatenate([run_predictor(bf16, x) for x in inputs])
                row[key] = _agreement(logits32, logits16)
        rows.append(row)
    return rows


def photo_crops(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` random square crops of the two sample photos as JPEG files in
    ``folder``: calibration images, other crops than ``sample_photos``'."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = photos[i % 2]
        side = int(rng.integers(180, 400))
        left = int(rng.integers(0, photo.width - side))
        top = int(rng.integers(0, photo.height - side))
        crop = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(folder / f"{i:03d}.jpg", quality=90)
    return folder


def int8_agreement(reference_dir: str | os.PathLike, threads: int | None = None,
                   calibration_images: int = 64) -> list[dict]:
    """Top-1 agreement of the int8 model (rexnet-plugin quantize, ONNX Runtime)
    with fp32 Paddle Inference, on the sample photos, for the V1 test-vector
    weights; calibrated on other crops of the same photos."""
    import numpy as np
    from rexnet_plugin.deploy.artifacts import ONNX_FILENAME
    from rexnet_plugin.deploy.export import export_inference
    from rexnet_plugin.deploy.infer_config import write_infer_config
    from rexnet_plugin.deploy.quantize import quantize_export
    from rexnet_plugin.deploy.runtime import (create_onnx_session, create_predictor, run_onnx,
                                              run_predictor)
    from rexnet_plugin.zoo import EVAL_TRANSFORM
    photos = sample_photos()
    rows = []
    for path, _, info, model in _reference_models(reference_dir, "rexnet_v1_*.npz"):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            export_inference(model, tmp / "fp32", 224)
            write_infer_config(tmp / "fp32", model_name=info.variant, transform=EVAL_TRANSFORM,
                               softmax=False)
            calib = photo_crops(tmp / "calib", calibration_images)
            out = quantize_export(tmp / "fp32", calib, tmp / "int8",
                                  num_images=calibration_images, progress=False)
            fp32 = create_predictor(tmp / "fp32", threads=threads)
            int8 = create_onnx_session(out / ONNX_FILENAME, threads=threads)
            batches = [photos[i:i + 8] for i in range(0, len(photos), 8)]
            logits32 = np.concatenate([run_predictor(fp32, x) for x in batches])
            logits8 = np.concatenate([run_onnx(int8, x) for x in batches])
        rows.append({"variant": info.variant,
                     "weights": f"the weights of the test vectors {path.name}",
                     "calibration": f"{calibration_images} other crops of the same photos",
                     "sample_photos": _agreement(logits32, logits8)})
    return rows


def _agreement_worker(conn, reference_dir: str, threads: int, log_path: str) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        conn.send(("result", bf16_agreement(reference_dir, threads)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def run_agreement(reference_dir: Path, threads: int, log_dir: Path) -> list[dict]:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    log = log_dir / "bf16-agreement.log"
    process = ctx.Process(target=_agreement_worker, args=(child, str(reference_dir), threads, str(log)))
    process.start()
    child.close()
    try:
        if not conn.poll(WORKER_TIMEOUT_S):
            raise RuntimeError(f"bf16 agreement gave no answer in {WORKER_TIMEOUT_S} s; log: {log}")
        kind, payload = conn.recv()
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=30)
    if kind == "error":
        raise RuntimeError(f"bf16 agreement failed:\n{payload}")
    return payload


