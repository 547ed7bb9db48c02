"""Post-training static int8 quantization of an exported model (``rexnet-plugin quantize``).

The int8 model is an ONNX file run by ONNX Runtime: ONNX Runtime's own
quantizer (``onnxruntime.quantization.quantize_static``) in QDQ format,
per-channel int8 weights, uint8 activations with ranges calibrated on real
images; the partial shortcut (Split, Add, Concat) and Softmax stay float32
(QUANTIZED_OPS says why). ONNX Runtime was measured against
Paddle Inference's oneDNN int8 on this model; docs/deployment.md gives the
figures and the reason for the choice.

Input: a model folder written by ``rexnet-plugin export`` or by PaddleClas's
``tools/export_model.py`` (``inference.json`` + ``inference.pdiparams``,
optionally ``inference.onnx``, and ``inference.yml``). Calibration images are
preprocessed with that folder's own ``inference.yml``.

Output folder (``quantize_export``'s ``out_dir``)::

    inference.onnx      the int8 model (artifacts.ONNX_FILENAME)
    inference.yml       copied from the source folder: the same preprocessing
    quantization.json   source, calibration images, method, library versions

It is written to a temp folder beside ``out_dir`` and renamed at the end:
an error, Ctrl-C or SIGTERM leaves nothing under ``out_dir``; what SIGKILL
leaves (ONNX Runtime's temp files included) is swept by the next run.

Nothing is read from outside the model folder: its files, and the ONNX
external data they name, must resolve inside it, links followed.
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

from .channel_align import align_channels
from .artifacts import (INFER_CONFIG_FILENAME, MODEL_FILENAME, ONNX_FILENAME, PARAMS_FILENAME,
                        QUANTIZATION_FILENAME)
from .images import ImageInputError, collect_images, check_image
from .infer_config import InferConfigError, read_infer_config

# Fewer images than this give activation ranges that depend too much on
# which images were picked.
MIN_CALIBRATION_IMAGES = 32
DEFAULT_CALIBRATION_IMAGES = 256
CALIBRATION_BATCH = 8
# Operators quantized: the convs, and SiLU's and the SE gate's Sigmoid and Mul
# (int8 there saves a dequantize/quantize pair around each; measured faster
# than convs alone, and than also quantizing Add/Concat/Split), and ReLU6's
# Clip and the SE block's Relu: the quantizer then drops them and gives the op
# before each their output range, where a float Clip left a requantizing
# dequantize/quantize pair in every block. The rest stay float32: the partial shortcut (Split, Add,
# Concat), Softmax and the head's Reshape.
QUANTIZED_OPS = ("Conv", "Sigmoid", "Mul", "Clip", "Relu")
# onnxruntime.quantization.CalibrationMethod member. MinMax: Percentile and
# Entropy agreed no better with fp32 on the reference weights, and keep every
# activation in memory (minutes and GBs at 256 images; docs/deployment.md).
CALIBRATION_METHOD = "MinMax"
# Zero-pad the blocks' expanded channels (deploy/channel_align.py) first.
ALIGN_CHANNELS = True
# PIL modes of single-channel images.
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_FIX_MODEL = ("pass a folder written by `rexnet-plugin export` or by PaddleClas's "
              "tools/export_model.py -o Global.export_for_fd=True")


class QuantizeError(ValueError):
    """Bad input to quantize; the message names the path or option and the fix."""


# -- checks, before any work ---------------------------------------------------------

def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """The folder holds an fp32 model and its inference.yml; raise QuantizeError if not."""
    folder = Path(model_dir)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "not found"
        raise QuantizeError(f"model folder {folder} {what}: {_FIX_MODEL}")
    if (folder / QUANTIZATION_FILENAME).is_file():
        raise QuantizeError(f"{folder} holds an int8 model already ({QUANTIZATION_FILENAME}); "
                            f"quantize the fp32 folder it was made from")
    has_paddle = (folder / MODEL_FILENAME).is_file() and (folder / PARAMS_FILENAME).is_file()
    if not has_paddle and not (folder / ONNX_FILENAME).is_file():
        raise QuantizeError(
            f"{folder} is not a model folder: it has neither {MODEL_FILENAME} + "
            f"{PARAMS_FILENAME} nor {ONNX_FILENAME}; {_FIX_MODEL}")
    from ..files import is_regular_file_inside
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
    """``path`` is an ONNX model whose external data, if any, lie inside its
    folder (links followed). onnx.load would follow a link anywhere (ONNX
    Runtime refuses one); this reads the graph without the data."""
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
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise QuantizeError(f"--out {out} is a file; pass a new folder name")
        if any(out.iterdir()):
            raise QuantizeError(f"--out {out} exists and is not empty; pass a new folder, or "
                                f"delete this one first (quantize never mixes its files with "
                                f"others)")
    from ..files import ensure_writable_dir
    parent = out.parent
    existed = parent.exists()
    ensure_writable_dir(parent, "parent folder of --out")
    if not existed:
        parent.rmdir()  # made only for the check
    return out


def calibration_images(calib: str | os.PathLike,
                       num_images: int = DEFAULT_CALIBRATION_IMAGES) -> list[Path]:
    """Up to ``num_images`` images from a list file or folder, spread evenly over
    it (lists are often sorted by class), each checked to be an RGB image."""
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
                            f"file (*.txt) or a folder of at least {MIN_CALIBRATION_IMAGES} "
                            f"images")
    try:
        paths = [item.path for item in collect_images([calib])]
    except ImageInputError as err:
        raise QuantizeError(f"--calib: {err}") from None
    if len(paths) < MIN_CALIBRATION_IMAGES:
        raise QuantizeError(f"--calib {calib} gives {len(paths)} image(s); calibration needs at "
                            f"least {MIN_CALIBRATION_IMAGES} (default "
                            f"{DEFAULT_CALIBRATION_IMAGES}), like the images the model will see")
    if len(paths) > num_images:
        picks = np.linspace(0, len(paths) - 1, num_images).round().astype(int)
        paths = [paths[i] for i in picks]
    _check_rgb(paths, calib)
    return paths


def _check_rgb(paths: list[Path], calib: Path) -> None:
    """Each file is an image and not grayscale. A grayscale image would be
    calibrated as three equal channels, which a colour model never sees in
    use; so it is refused, listed with the fix, rather than converted."""
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
        shown = ", ".join(str(p) for p in gray[:5]) + (
            f" and {len(gray) - 5} more" if len(gray) > 5 else "")
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


# -- quantization ------------------------------------------------------------------

class _Batches:
    """onnxruntime's CalibrationDataReader over an array, in batches."""

    def __init__(self, name: str, data: np.ndarray, progress: bool):
        from onnxruntime.quantization import CalibrationDataReader  # noqa: F401
        starts = range(0, len(data), CALIBRATION_BATCH)
        self._iter = iter(_progress(
            [{name: data[s:s + CALIBRATION_BATCH]} for s in starts], progress,
            f"calibrating (batches of {CALIBRATION_BATCH})", "batch"))

    def get_next(self):
        return next(self._iter, None)


def fp32_onnx(model_dir: Path, workdir: Path) -> tuple[Path, str]:
    """The fp32 ONNX model of a folder: its inference.onnx, else one converted
    from inference.json by paddle2onnx (into ``workdir``). Returns (path, source)."""
    onnx_file = model_dir / ONNX_FILENAME
    if onnx_file.is_file():
        return onnx_file, ONNX_FILENAME
    from .export import export_onnx
    return export_onnx(model_dir, workdir / "fp32.onnx"), MODEL_FILENAME


@contextmanager
def _temp_files_in(folder: Path):
    """ONNX Runtime's quantizer makes its temp folders with tempfile (ort.quant.*,
    ~20 MB): put them in ``folder``, inside the output's temp folder, so that a
    killed run leaves them where the next run sweeps. tempfile.tempdir is
    process-wide: it is restored right after."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
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
    # paddle2onnx leaves unused initializers: ONNX Runtime would warn about each
    # (process-wide; create_onnx_session sets the same level on its sessions).
    onnxruntime.set_default_logger_severity(3)
    # Folds BatchNorm into Conv, removes Identity and Constant nodes, infers
    # shapes (ONNX's; the symbolic pass stops at paddle2onnx's Shape/Slice head).
    prepared = workdir / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    name = model.graph.input[0].name
    padded = []
    if ALIGN_CHANNELS:
        model, padded = align_channels(model)
        onnx.save(model, str(prepared))
    settings = {"format": "QDQ", "weights": "int8, per channel, symmetric",
                "activations": "uint8, per tensor, asymmetric",
                "calibration": CALIBRATION_METHOD, "quantized_ops": list(QUANTIZED_OPS),
                "runtime": "onnxruntime",
                "channels_padded": [f"{a}->{b}" for a, b in padded]}
    quantize_static(str(prepared), str(out_path), _Batches(name, data, progress),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                    per_channel=True, reduce_range=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod[CALIBRATION_METHOD],
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return settings


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for dist in ("rexnet-plugin", "onnxruntime", "onnx", "paddle2onnx", "paddlepaddle"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def quantize_export(model_dir: str | os.PathLike, calib: str | os.PathLike,
                    out_dir: str | os.PathLike, *, num_images: int = DEFAULT_CALIBRATION_IMAGES,
                    progress: bool = True) -> Path:
    """Quantize the fp32 model in ``model_dir`` to int8 into the new folder ``out_dir``.

    ``calib``: an ImageNet-format list file or a folder of images; up to
    ``num_images`` of them (at least 32), spread evenly, calibrate the
    activations. Returns ``out_dir``. Raises QuantizeError (a ValueError)
    naming the path or option and the fix, before any work, for bad input.
    """
    from ..extras import require
    from ..files import atomic_dir, write_json
    converter = [] if (Path(model_dir) / ONNX_FILENAME).is_file() else ["paddle2onnx"]
    require("quantize", "onnx", "onnxruntime", *converter)
    model_dir = check_model_dir(model_dir)
    out = check_out_dir(out_dir)
    paths = calibration_images(calib, num_images)
    data = load_calibration(model_dir, paths, progress)
    # An empty OUT_DIR (checked above) is replaced only once the new one is complete.
    with atomic_dir(out) as tmp:
        work = tmp / ".work"
        work.mkdir()
        try:
            with _temp_files_in(work):
                source, source_file = fp32_onnx(model_dir, work)
                method = quantize_onnx(source, data, tmp / ONNX_FILENAME, work, progress)
        except (QuantizeError, OSError):
            raise
        except Exception as err:  # an op ONNX Runtime does not know, damaged parameters
            reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            raise QuantizeError(f"{model_dir}: the model cannot be quantized "
                                f"({type(err).__name__}: {reason}); its files are damaged "
                                f"or not a ReXNet export: {_FIX_MODEL}. Nothing was written."
                                ) from None
        shutil.rmtree(work)
        shutil.copyfile(model_dir / INFER_CONFIG_FILENAME, tmp / INFER_CONFIG_FILENAME)
        write_json(tmp / QUANTIZATION_FILENAME, {
            "precision": "int8",
            "source": {"folder": str(model_dir.resolve()), "model": source_file},
            "calibration": {"source": str(Path(calib).resolve()), "images": len(paths),
                            "input_shape": list(data.shape[1:])},
            "method": method,
            "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
    return out
