"""``rexnet-plugin quantize``: post-training static int8 (QDQ) with ONNX Runtime's quantizer,
into a new folder with inference.yml and quantization.json (docs/deployment.md: the choices)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import numpy as np

from .artifacts import (INFER_CONFIG_FILENAME, MODEL_FILENAME, ONNX_FILENAME,
                        QUANTIZATION_FILENAME)
from .channel_align import align_channels
from .images import ImageInputError, collect_images
from .infer_config import read_infer_config
from .predict import check_folder, check_onnx_file

# Fewer images give ranges that depend too much on which were picked.
MIN_CALIBRATION_IMAGES = 32
DEFAULT_CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 8
# Quantizing SiLU's and the SE gate's Sigmoid and Mul saves a dequantize/quantize
# pair around each; Clip (ReLU6) and Relu are then dropped into the op before them.
# The partial shortcut (Split, Add, Concat), Softmax and Reshape stay float32.
QUANTIZED_OPS = ("Conv", "Sigmoid", "Mul", "Clip", "Relu")
# MinMax: Percentile and Entropy agreed no better with fp32, at minutes and GBs.
CALIBRATION_METHOD = "MinMax"
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


class QuantizeError(ValueError):
    """Bad input to quantize; the message names the path or option and the fix."""


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The folder holds an fp32 model and its inference.yml; raise QuantizeError if not."""
    folder, _, has_onnx = check_folder(model_dir, QuantizeError)
    if (folder / QUANTIZATION_FILENAME).is_file():
        raise QuantizeError(f"{folder} holds an int8 model already ({QUANTIZATION_FILENAME}); "
                            f"quantize the fp32 folder it was made from")
    if has_onnx:
        check_onnx_file(folder / ONNX_FILENAME, QuantizeError)
    read_infer_config(folder)
    return folder


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` must not exist, or be an empty folder in a writable place."""
    from ..files import ensure_writable_dir
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QuantizeError(f"--out {out} exists and is a file or not empty; pass a new folder, "
                            f"or delete it first (quantize never mixes its files with others)")
    existed = out.parent.exists()
    ensure_writable_dir(out.parent, "parent folder of --out")
    if not existed:
        out.parent.rmdir()  # made only for the check
    return out


def calibration_images(calib: str | os.PathLike,
                       num_images: int = DEFAULT_CALIBRATION_IMAGES) -> list[Path]:
    """Up to ``num_images`` images of a list file or folder, spread evenly (lists are often
    sorted by class)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) \
            or num_images < MIN_CALIBRATION_IMAGES:
        raise QuantizeError(f"--num-images {num_images!r}: expected an integer of at least "
                            f"{MIN_CALIBRATION_IMAGES} (default {DEFAULT_CALIBRATION_IMAGES})")
    calib = Path(calib)
    try:
        paths = [item.path for item in collect_images([calib])]
    except ImageInputError as err:
        raise QuantizeError(f"--calib: {err}") from None
    if len(paths) < MIN_CALIBRATION_IMAGES:
        raise QuantizeError(f"--calib {calib} gives {len(paths)} image(s); calibration needs at "
                            f"least {MIN_CALIBRATION_IMAGES} (default "
                            f"{DEFAULT_CALIBRATION_IMAGES}), like the images the model will see")
    if len(paths) > num_images:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, num_images).round().astype(int)]
    return paths


def load_calibration(model_dir: Path, paths: list[Path], progress: bool = True) -> np.ndarray:
    """The images preprocessed by the model's inference.yml: float32 [N, 3, H, W]. Grayscale
    images are refused: calibrated as three equal channels, which a colour model never sees."""
    from PIL import Image
    config = read_infer_config(model_dir)
    arrays, gray = [], []
    for path in _progress(paths, progress, "preprocessing calibration images"):
        try:
            arrays.append(config.preprocess(path))
        except ValueError as err:
            raise QuantizeError(f"--calib: {err}") from None
        with Image.open(path) as image:
            gray += [path] if image.mode in GRAYSCALE_MODES else []
    if gray:
        raise QuantizeError(
            f"--calib: {len(gray)} grayscale image(s) ({', '.join(map(str, gray[:5]))}"
            f"{f' and {len(gray) - 5} more' if len(gray) > 5 else ''}). Calibration needs colour "
            f"images like those the model will classify: remove them from the calibration set, "
            f"or convert them to RGB if that is what your deployment feeds the model (python -c "
            f"\"from PIL import Image; Image.open('in.png').convert('RGB').save('in.png')\")")
    return config.stack(arrays, paths)


def _progress(items, enabled: bool, desc: str, unit: str = "img"):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False)


class Batches:
    """onnxruntime's CalibrationDataReader protocol over an array, in batches."""

    def __init__(self, name: str, data: np.ndarray, progress: bool = False):
        self._iter = iter(_progress(
            [{name: data[s:s + CALIBRATION_BATCH]} for s in range(0, len(data), CALIBRATION_BATCH)],
            progress, f"calibrating (batches of {CALIBRATION_BATCH})", "batch"))

    def get_next(self):
        return next(self._iter, None)


def quantize_onnx(fp32_path: Path, data: np.ndarray, out_path: Path, workdir: Path,
                  progress: bool = True) -> dict:
    """int8 ``out_path`` from ``fp32_path`` calibrated on ``data``; returns the method."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    onnxruntime.set_default_logger_severity(3)  # no warning per unused initializer
    # Folds BatchNorm into Conv and infers shapes (ONNX's: the symbolic pass
    # stops at paddle2onnx's Shape/Slice head).
    prepared = workdir / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    model, padded = align_channels(onnx.load(str(prepared)))
    onnx.save(model, str(prepared))
    quantize_static(str(prepared), str(out_path), Batches(model.graph.input[0].name, data, progress),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                    per_channel=True, reduce_range=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod[CALIBRATION_METHOD],
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return {"format": "QDQ", "weights": "int8, per channel, symmetric",
            "activations": "uint8, per tensor, asymmetric", "calibration": CALIBRATION_METHOD,
            "quantized_ops": list(QUANTIZED_OPS), "runtime": "onnxruntime",
            "channels_padded": [f"{a}->{b}" for a, b in padded]}


def quantize_export(model_dir: str | os.PathLike, calib: str | os.PathLike,
                    out_dir: str | os.PathLike, *, num_images: int = DEFAULT_CALIBRATION_IMAGES,
                    progress: bool = True) -> Path:
    """The fp32 model in ``model_dir`` as int8 in the new ``out_dir``, calibrated on up to
    ``num_images`` of ``calib``; bad input fails before any work, and nothing is left on error."""
    from importlib.metadata import distributions
    from ..extras import require
    from ..files import atomic_dir, write_json
    has_onnx = (Path(model_dir) / ONNX_FILENAME).is_file()
    require("quantize", "onnx", "onnxruntime", *([] if has_onnx else ["paddle2onnx"]))
    model_dir = check_model_dir(model_dir)
    out = check_out_dir(out_dir)
    paths = calibration_images(calib, num_images)
    data = load_calibration(model_dir, paths, progress)
    with atomic_dir(out) as tmp:
        work = tmp / ".work"
        work.mkdir()
        try:
            # The quantizer's temp folders (ort.quant.*) in ours, where a killed run's get swept.
            with mock.patch.object(tempfile, "tempdir", str(work)):
                if has_onnx:
                    source, source_file = model_dir / ONNX_FILENAME, ONNX_FILENAME
                else:
                    from .export import export_onnx
                    source, source_file = export_onnx(model_dir, work / "fp32.onnx"), MODEL_FILENAME
                method = quantize_onnx(source, data, tmp / ONNX_FILENAME, work, progress)
        except (QuantizeError, OSError):
            raise
        except Exception as err:  # an op ONNX Runtime does not know, damaged parameters
            reason = (str(err).strip().splitlines() or [""])[0][:300]
            raise QuantizeError(f"{model_dir}: the model cannot be quantized "
                                f"({type(err).__name__}: {reason}); its files are damaged "
                                f"or not a ReXNet export: export it again. Nothing was written."
                                ) from None
        shutil.rmtree(work)
        shutil.copyfile(model_dir / INFER_CONFIG_FILENAME, tmp / INFER_CONFIG_FILENAME)
        versions = {name: next((d.version for d in distributions(name=name)), None) for name
                    in ("rexnet-plugin", "onnxruntime", "onnx", "paddle2onnx", "paddlepaddle")}
        write_json(tmp / QUANTIZATION_FILENAME, {
            "precision": "int8", "source": {"folder": str(model_dir.resolve()), "model": source_file},
            "calibration": {"source": str(Path(calib).resolve()), "images": len(paths),
                            "input_shape": list(data.shape[1:])},
            "method": method, "versions": versions,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return out
