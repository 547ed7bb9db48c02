"""``rexnet-plugin quantize``: post-training static int8 with ONNX Runtime's quantizer.

Reads a model folder (``rexnet-plugin export`` or PaddleClas's
``tools/export_model.py``) and writes, atomically, a new folder with the
int8 ``inference.onnx`` (QDQ), the same ``inference.yml`` and
``quantization.json``. docs/deployment.md explains the method's choices.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .artifacts import (INFER_CONFIG_FILENAME, MODEL_FILENAME, ONNX_FILENAME, PARAMS_FILENAME,
                        QUANTIZATION_FILENAME)
from .channel_align import align_channels
from .images import ImageInputError, check_image, collect_images
from .infer_config import InferConfigError, read_infer_config

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
_FIX_MODEL = ("pass a folder written by `rexnet-plugin export` or by PaddleClas's "
              "tools/export_model.py -o Global.export_for_fd=True")


class QuantizeError(ValueError):
    """Bad input to quantize; the message names the path or option and the fix."""


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The folder holds an fp32 model and its inference.yml; raise QuantizeError if not."""
    from ..files import is_regular_file_inside
    folder = Path(model_dir)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "not found"
        raise QuantizeError(f"model folder {folder} {what}: {_FIX_MODEL}")
    if (folder / QUANTIZATION_FILENAME).is_file():
        raise QuantizeError(f"{folder} holds an int8 model already ({QUANTIZATION_FILENAME}); "
                            f"quantize the fp32 folder it was made from")
    has_paddle = (folder / MODEL_FILENAME).is_file() and (folder / PARAMS_FILENAME).is_file()
    if not has_paddle and not (folder / ONNX_FILENAME).is_file():
        raise QuantizeError(f"{folder} is not a model folder: it has neither {MODEL_FILENAME} + "
                            f"{PARAMS_FILENAME} nor {ONNX_FILENAME}; {_FIX_MODEL}")
    for name in (MODEL_FILENAME, PARAMS_FILENAME, ONNX_FILENAME, INFER_CONFIG_FILENAME):
        if os.path.lexists(folder / name) and not is_regular_file_inside(folder / name, folder):
            raise QuantizeError(f"{folder / name} is a link to a file outside {folder}, or not "
                                f"a regular file; a model folder is read only from inside: "
                                f"copy the file into the folder")
    if (folder / ONNX_FILENAME).is_file():
        check_onnx_file(folder / ONNX_FILENAME)
    try:
        read_infer_config(folder)
    except InferConfigError as err:
        raise QuantizeError(str(err)) from None
    return folder


def check_onnx_file(path: Path) -> None:
    """``path`` is an ONNX model whose external data lie inside its folder
    (links followed): onnx.load would follow a link anywhere."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors  # initializers and attributes
    from ..files import is_regular_file_inside
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # DecodeError for a damaged or truncated file
        raise QuantizeError(f"{path} is not a readable ONNX model ({type(err).__name__}); "
                            f"export it again: {_FIX_MODEL}") from None
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not is_regular_file_inside(path.parent / location, path.parent):
            raise QuantizeError(
                f"{path}: the external data of tensor {tensor.name[:100]!r} ({location[:200]!r}) "
                f"resolves outside {path.parent}, or is not a regular file; a model folder is "
                f"read only from inside. Nothing was written.")


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` must not exist, or be an empty folder in a writable place."""
    from ..files import ensure_writable_dir
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QuantizeError(f"--out {out} is a file; pass a new folder name")
    if out.exists() and any(out.iterdir()):
        raise QuantizeError(f"--out {out} exists and is not empty; pass a new folder, or "
                            f"delete this one first (quantize never mixes its files with others)")
    existed = out.parent.exists()
    ensure_writable_dir(out.parent, "parent folder of --out")
    if not existed:
        out.parent.rmdir()  # made only for the check
    return out


def calibration_images(calib: str | os.PathLike,
                       num_images: int = DEFAULT_CALIBRATION_IMAGES) -> list[Path]:
    """Up to ``num_images`` RGB images from a list file or folder, spread evenly
    over it (lists are often sorted by class)."""
    if isinstance(num_images, bool) or not isinstance(num_images, int) \
            or num_images < MIN_CALIBRATION_IMAGES:
        raise QuantizeError(f"--num-images {num_images!r}: expected an integer of at least "
                            f"{MIN_CALIBRATION_IMAGES} (default {DEFAULT_CALIBRATION_IMAGES})")
    calib = Path(calib)
    if not calib.exists():
        raise QuantizeError(f"--calib {calib} not found; pass an ImageNet-format list file "
                            f"('<relative path> <label>' lines) or a folder of images")
    if calib.is_file() and calib.suffix.lower() != ".txt":
        raise QuantizeError(f"--calib {calib} is a single file; pass an ImageNet-format list "
                            f"file (*.txt) or a folder of at least {MIN_CALIBRATION_IMAGES} images")
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
    _check_rgb(paths, calib)
    return paths


def _check_rgb(paths: list[Path], calib: Path) -> None:
    """Refuse grayscale images (calibrated as three equal channels, which a
    colour model never sees), listed with the fix."""
    from PIL import Image
    gray = []
    for path in paths:
        try:
            check_image(path)
        except ImageInputError as err:
            raise QuantizeError(f"--calib {calib}: {err}") from None
        with Image.open(path) as image:
            if image.mode in GRAYSCALE_MODES:
                gray.append(path)
    if gray:
        shown = ", ".join(map(str, gray[:5])) + (f" and {len(gray) - 5} more" if len(gray) > 5
                                                 else "")
        raise QuantizeError(
            f"--calib {calib}: {len(gray)} grayscale image(s) ({shown}). Calibration needs "
            f"colour images like those the model will classify: remove them from the "
            f"calibration set, or convert them to RGB if that is what your deployment feeds "
            f"the model (python -c \"from PIL import Image; "
            f"Image.open('in.png').convert('RGB').save('in.png')\")")


def load_calibration(model_dir: Path, paths: list[Path], progress: bool = True) -> np.ndarray:
    """The images preprocessed by the model's inference.yml: float32 [N, 3, H, W]."""
    config = read_infer_config(model_dir)
    arrays = []
    for path in _progress(paths, progress, "preprocessing calibration images"):
        try:
            arrays.append(config.preprocess(path))
        except (ValueError, FileNotFoundError) as err:
            raise QuantizeError(f"--calib: {err}") from None
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise QuantizeError(f"{config.path}: the preprocessing gives images of different "
                            f"sizes ({shapes[0]}, {shapes[-1]}, ...); calibration needs one "
                            f"size: end PreProcess.transform_ops with a CropImage")
    return np.stack(arrays)


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


@contextmanager
def _temp_files_in(folder: Path):
    """Put the quantizer's tempfile folders (ort.quant.*, ~20 MB) inside the
    output's temp folder, where a killed run's leftovers get swept; restored after."""
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def quantize_onnx(fp32_path: Path, data: np.ndarray, out_path: Path, workdir: Path,
                  progress: bool = True) -> dict:
    """int8 ``out_path`` from ``fp32_path``, activations calibrated on ``data``.
    Returns the method's settings (for quantization.json)."""
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
    """Quantize the fp32 model in ``model_dir`` to int8 into the new folder ``out_dir``.

    ``calib``: an ImageNet-format list file or a folder; up to ``num_images``
    (at least 32) of its images, spread evenly, calibrate the activations.
    Bad input raises QuantizeError before any work; nothing is left under
    ``out_dir`` on an error, Ctrl-C or SIGTERM.
    """
    from importlib.metadata import PackageNotFoundError, version
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
            with _temp_files_in(work):
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
                                f"or not a ReXNet export: {_FIX_MODEL}. Nothing was written."
                                ) from None
        shutil.rmtree(work)
        shutil.copyfile(model_dir / INFER_CONFIG_FILENAME, tmp / INFER_CONFIG_FILENAME)
        versions = {}
        for dist in ("rexnet-plugin", "onnxruntime", "onnx", "paddle2onnx", "paddlepaddle"):
            try:
                versions[dist] = version(dist)
            except PackageNotFoundError:
                versions[dist] = None
        write_json(tmp / QUANTIZATION_FILENAME, {
            "precision": "int8",
            "source": {"folder": str(model_dir.resolve()), "model": source_file},
            "calibration": {"source": str(Path(calib).resolve()), "images": len(paths),
                            "input_shape": list(data.shape[1:])},
            "method": method,
            "versions": versions,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
    return out
