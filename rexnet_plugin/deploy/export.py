"""Export to Paddle Inference and ONNX (``rexnet-plugin export``).

Paddle 3.x ``paddle.jit.save`` writes PIR: ``<prefix>.json`` plus
``<prefix>.pdiparams`` (no ``.pdmodel``). ONNX goes through paddle2onnx from
that directory. ``rexnet-plugin export`` is ``export_model`` below.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import paddle
from paddle.static import InputSpec

from ..files import atomic_path, ensure_writable_dir, process_alive
from .artifacts import (DEFAULT_OPSET, EXPORT_FILES, INFER_CONFIG_FILENAME, MODEL_FILENAME,
                        ONNX_FILENAME, PARAMS_FILENAME, STALE_EXPORT_FILES)
from .runtime import create_onnx_session, create_predictor, run_onnx, run_predictor

try:
    import fcntl
except ImportError:  # Windows: a temp folder's process id alone tells whether it is live
    fcntl = None

# ONNX Runtime must reproduce Paddle Inference's fp32 outputs within this.
# ONNX Runtime against Paddle Inference, as a fraction of each image's logit
# range (at least 1): a trained model's logits reach hundreds, and fp32 keeps
# about 7 digits of them; a probability moves by at most a quarter of its
# logit's error, so the same bound holds for softmax outputs.
ONNX_RTOL = 1e-5
# PaddleClas's predictor loads these instead of inference.* when they are in
# the folder: an export never writes beside them.
SHADOWING_FILES = ("inference_int8.pdiparams",)
# What a reader of a model folder needs before anything else: inference.yml
# (predict, quantize, PaddleX), then the model graph (Paddle Inference, ONNX
# Runtime). Removed first and written last when an export replaces a set.
_ENTRY_FILES = (ONNX_FILENAME, MODEL_FILENAME, INFER_CONFIG_FILENAME)
# Temp folders: .export-<pid>-<8 hex>, locked while their export runs.
_TEMP_PREFIX = ".export-"
_TEMP_NAME = re.compile(r"\.export-(?P<pid>\d+)-[0-9a-f]{8}")
_LOCK_NAME = ".lock"
# A temp folder of another form (older versions of this package) is swept
# once nothing has touched it for this long.
_STALE_SECONDS = 3600


def input_spec(image_size: int | tuple[int, int] | None = None) -> InputSpec:
    """Dynamic batch; a fixed size (square or (H, W)), or dynamic H and W when None."""
    if image_size is None:
        hw = [None, None]
    elif isinstance(image_size, int):
        hw = [image_size, image_size]
    else:
        hw = list(image_size)
    return InputSpec([None, 3, *hw], "float32", "x")


# -- the export folder: temp folders, sweeping, replacing the whole set ----------------

def _is_stale_temp(path: Path) -> bool:
    """A temp folder whose export is gone: its lock is free and its process is
    dead (SIGKILL, a crash, a power cut)."""
    match = _TEMP_NAME.fullmatch(path.name)
    if match is None:  # an older version's mkdtemp name: by its contents and age
        try:
            owned = EXPORT_FILES + STALE_EXPORT_FILES
            ours = all(p.name in owned or p.name.startswith(".") for p in path.iterdir())
            return ours and time.time() - path.stat().st_mtime > _STALE_SECONDS
        except OSError:
            return False
    if fcntl is not None:
        try:
            with open(path / _LOCK_NAME, "rb") as lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # a live export holds it
                except OSError:
                    pass  # no locks on this file system: the process id decides
        except FileNotFoundError:
            pass  # killed before it took the lock
        except OSError:
            return False
    return not process_alive(int(match["pid"]))


def sweep_stale_exports(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.export-*`` temp folders that killed exports left in ``folder``;
    return them. A running export's folder is never touched."""
    folder = Path(folder)
    swept = []
    try:
        candidates = [p for p in folder.glob(f"{_TEMP_PREFIX}*") if p.is_dir()]
    except OSError:
        return swept
    for path in candidates:
        if _is_stale_temp(path):
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
    return swept


@contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM back while a few renames run, so that Ctrl-C or
    kill cannot stop a replacement halfway; they are delivered right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def prepare_output(out_dir: str | os.PathLike) -> Path:
    """Check that an export can go to ``out_dir`` before any work; sweep the
    temp folders killed exports left there. Raises FolderNotWritableError
    (a ValueError) or ValueError naming the folder and the fix."""
    out_dir = Path(out_dir)
    existed = out_dir.exists()
    ensure_writable_dir(out_dir, "output folder")
    if not existed:
        out_dir.rmdir()  # made only for the check: a failed export leaves no empty folder
    else:
        shadowing = [name for name in SHADOWING_FILES if (out_dir / name).exists()]
        if shadowing:
            raise ValueError(
                f"{out_dir} holds {', '.join(shadowing)}: PaddleClas's predictor would load "
                f"that model instead of the new inference.json. Export to another folder, "
                f"or delete {', '.join(shadowing)} (and its model file) first.")
        sweep_stale_exports(out_dir)
    sweep_stale_exports(out_dir.parent)
    return out_dir


@contextmanager
def staged_export(out_dir: str | os.PathLike):
    """Yield a temp folder to write a whole export into; on success it becomes
    ``out_dir``'s export set. Every file of the set (``EXPORT_FILES``, and the
    old-IR ``STALE_EXPORT_FILES``) that the temp folder lacks is deleted from
    ``out_dir``: no file of an earlier export stays beside the new one. Other
    files in ``out_dir`` are kept. On any error the temp folder goes, and
    ``out_dir`` is as it was.

    The set is swapped as one unit: under a lock on ``out_dir`` (two exports
    into one folder take turns), the files every reader needs first
    (``_ENTRY_FILES``) are removed first and put back last, so that a crash
    midway leaves a folder that nothing runs, never a mix of two exports.
    """
    out_dir = Path(out_dir)
    home = out_dir if out_dir.is_dir() else out_dir.parent
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    lock = open(tmp / _LOCK_NAME, "wb")
    try:
        if fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            except OSError:
                pass  # no locks on this file system: the process id tells
        yield tmp
        new = {p.name for p in tmp.iterdir() if p.name != _LOCK_NAME}
        out_dir.mkdir(parents=True, exist_ok=True)
        with _signals_deferred(), _locked(out_dir):
            for name in _ENTRY_FILES + EXPORT_FILES + STALE_EXPORT_FILES:
                if name not in new or name in _ENTRY_FILES:
                    (out_dir / name).unlink(missing_ok=True)
            last = [name for name in _ENTRY_FILES if name in new]
            for name in sorted(new - set(last)) + last:
                os.replace(tmp / name, out_dir / name)
    finally:
        lock.close()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _locked(folder: Path):
    """An exclusive lock on ``folder`` itself (no lock file is left behind);
    none on Windows."""
    if fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks on this file system
        yield
    finally:
        os.close(fd)


def _save_inference(model: paddle.nn.Layer, folder: Path,
                    image_size: int | tuple[int, int] | None) -> None:
    was_training = model.training
    model.eval()
    try:
        paddle.jit.save(model, str(folder / "inference"), input_spec=[input_spec(image_size)])
    finally:
        model.train(was_training)


def export_inference(model: paddle.nn.Layer, out_dir: str | os.PathLike,
                     image_size: int | tuple[int, int] | None = None) -> Path:
    """Save ``model`` (put in eval mode) as a Paddle Inference model.

    Returns the directory, which then holds ``inference.json`` and
    ``inference.pdiparams``. Written to a temp folder first, then moved in,
    so an interrupted export never leaves a half-written file; the new files
    replace the folder's whole export set, so an ``inference.onnx`` or
    ``inference.yml`` of an earlier export is deleted (write those after).
    """
    out_dir = prepare_output(out_dir)
    with staged_export(out_dir) as tmp:
        _save_inference(model, tmp, image_size)
    return out_dir


def export_onnx(model_dir: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """Convert an exported Paddle Inference directory to ONNX with paddle2onnx.

    paddle2onnx 2.x, asked to write the file itself, first "optimizes" it
    with polygraphy, which pip-installs packages during the conversion and
    can upgrade numpy. Here it returns the bytes instead (``save_file=None``
    skips that step; ``optimize_tool="None"`` says so twice), and the file
    is written atomically. The Python environment stays as it was
    (tests/test_export.py compares ``pip freeze`` before and after).
    """
    from ..extras import require
    require("ONNX export", "paddle2onnx")
    import paddle2onnx
    model_dir = Path(model_dir)
    model_file, params_file = model_dir / MODEL_FILENAME, model_dir / PARAMS_FILENAME
    for path in (model_file, params_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export the model to Paddle Inference "
                                    f"first (export_inference or rexnet-plugin export)")
    onnx_path = Path(onnx_path) if onnx_path else model_dir / ONNX_FILENAME
    try:
        data = paddle2onnx.export(str(model_file), str(params_file), save_file=None,
                                  opset_version=opset, optimize_tool="None")
    except Exception as err:  # it logs the cause, then fails on its own return
        raise RuntimeError(f"paddle2onnx could not convert {model_dir} (opset {opset}); "
                           f"its log above says why") from err
    if not data:
        raise RuntimeError(f"paddle2onnx returned an empty model for {model_dir}")
    with atomic_path(onnx_path, suffix=".onnx") as tmp:
        tmp.write_bytes(data)
    return onnx_path


# -- rexnet-plugin export ---------------------------------------------------------

# What the shipped configs name as Infer.PostProcess.class_id_map_file: the
# ImageNet-1k class names, relative to a PaddleClas checkout or the wheel.
IMAGENET_LABEL_FILE = "ppcls/utils/imagenet1k_label_list.txt"


@dataclass
class ExportSource:
    """What to export, read from a variant name or a PaddleClas config."""

    variant: str
    class_num: int
    image_size: int | tuple[int, int] | None
    weights: str | None  # None: none given (the config's Global.pretrained_model is used)
    label: str  # "ReXNet_1_0" or "ppcls_configs/ReXNet_1_0.yaml"
    output: str | None = None  # the config's Global.save_inference_dir
    label_file: str | None = None  # the config's Infer.PostProcess.class_id_map_file
    config_dir: Path | None = None
    infer_transforms: list | None = None  # the config's Infer.transforms


def read_export_source(model: str) -> ExportSource:
    """A variant name, or a PaddleClas YAML whose ``Arch.name`` is one."""
    from ..zoo import IMAGENET_CLASSES, VARIANTS, get_variant
    if not model.endswith((".yaml", ".yml")) and not Path(model).is_file():
        v = get_variant(model)
        return ExportSource(v.name, IMAGENET_CLASSES, v.eval_transform.crop_size, None, model,
                            label_file=IMAGENET_LABEL_FILE)
    import yaml
    from .infer_config import _short
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found; pass a PaddleClas YAML (e.g. "
                                f"ppcls_configs/ReXNet_1_0.yaml) or a variant name")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except RecursionError:
        raise ValueError(f"{path} nests too deeply to be a PaddleClas config") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a PaddleClas config (a YAML mapping with Arch and Global)")
    arch = config.get("Arch") or {}
    name = arch.get("name") if isinstance(arch, dict) else None
    if not isinstance(name, str) or name not in VARIANTS:
        raise ValueError(f"{path}: Arch.name is {_short(name)}, not a ReXNet variant; expected one "
                         f"of {', '.join(VARIANTS)}")
    class_num = arch.get("class_num", IMAGENET_CLASSES)
    if not isinstance(class_num, int) or class_num <= 0:
        raise ValueError(f"{path}: Arch.class_num is {_short(class_num)}; expected a positive "
                         f"integer")
    glob = config.get("Global") or {}
    crop = VARIANTS[name].eval_transform.crop_size
    shape = glob.get("image_shape") or [3, crop, crop]
    if not isinstance(shape, list) or len(shape) != 3 or shape[0] != 3:
        raise ValueError(f"{path}: Global.image_shape is {_short(shape)}; expected [3, H, W]")
    size = shape[1] if shape[1] == shape[2] else (shape[1], shape[2])
    infer = config.get("Infer") or {}
    post = infer.get("PostProcess") or {}
    label_file = post.get("class_id_map_file") if isinstance(post, dict) else None
    return ExportSource(name, class_num, size, glob.get("pretrained_model"), str(path),
                        glob.get("save_inference_dir"), label_file, path.parent,
                        infer.get("transforms"))


def _find_label_file(name: str, config_dir: Path | None) -> Path | None:
    """A class_id_map_file as PaddleClas's tools find it (from the working
    folder, a checkout's root), else beside the config, else in the
    installed paddleclas package; only inside that folder, links followed
    (a config cannot copy /etc/passwd into inference.yml)."""
    import importlib.util
    from ..files import is_regular_file_inside
    bases = [Path.cwd()] + ([config_dir] if config_dir is not None else [])
    spec = importlib.util.find_spec("paddleclas")
    if spec is not None and spec.submodule_search_locations:
        bases += [Path(p) for p in spec.submodule_search_locations]
    return next((base / name for base in bases
                 if is_regular_file_inside(base / name, base)), None)


def _labels(source: ExportSource, label_list: str | None,
            class_num: int) -> tuple[list[str] | None, str]:
    """The class names for inference.yml, and where they came from (or why none)."""
    from ..zoo import IMAGENET_CLASSES
    from .infer_config import read_label_list
    if label_list:
        names = read_label_list(label_list)
        if len(names) != class_num:
            raise ValueError(f"--label-list {label_list} has {len(names)} names; the model has "
                             f"{class_num} classes. Pass a list with one name per class.")
        return names, f"{len(names)} names from {label_list}"
    imagenet_default = source.config_dir is None  # a variant name: ImageNet's 1000 names
    if not source.label_file or (imagenet_default and class_num != IMAGENET_CLASSES):
        return None, "none (pass --label-list FILE)"
    found = _find_label_file(source.label_file, source.config_dir)
    if found is None:
        return None, f"none ({source.label_file} not found; pass --label-list FILE)"
    names = read_label_list(found)
    if len(names) != class_num:
        return None, (f"none ({found} has {len(names)} names for {class_num} classes; pass "
                      f"--label-list FILE)")
    return names, f"{len(names)} names from {found}"


def _preprocessing(source: ExportSource, transform, size) -> tuple[dict, str]:
    """inference.yml's preprocessing (write_infer_config keywords) and its description.

    A config's ``Infer.transforms``, as PaddleClas's own export_for_fd takes
    them, when they are deploy operators that give the exported input size;
    otherwise the variant's eval transform fitted to that size.
    """
    from .infer_config import InferConfigError, ops_from_paddleclas, output_shape
    note = ""
    if source.infer_transforms is not None:
        where = f"{source.label}: Infer.transforms"
        try:
            ops = ops_from_paddleclas(source.infer_transforms, where)
            shape = output_shape(ops)
        except InferConfigError as err:
            note = f" (not the config's Infer.transforms: {str(err).split(': ', 2)[-1]})"
        else:
            hw = (size, size) if isinstance(size, int) else size
            if hw is None or shape[1:] == tuple(hw):
                names = ", ".join(_op_summary(op) for op in ops)
                return {"transform_ops": ops}, f"the config's Infer.transforms: {names}"
            note = (f" (not the config's Infer.transforms: they give {shape[1]}x{shape[2]}, "
                    f"the model takes {hw[0]}x{hw[1]})")
    transform, crop = _transform_for(transform, size)
    text = transform.describe()
    if crop:
        text = text.replace(f"center-crop {transform.crop_size}",
                            f"center-crop {crop[0]}x{crop[1]} (W x H)")
    return {"transform": transform, "crop": crop}, text + note


def _op_summary(op: dict) -> str:
    (name, params), = op.items()
    if name in ("ResizeImage", "CropImage") and params:
        return f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
    return name


def _transform_for(transform, size):
    """The variant's eval transform, fitted to the exported input size: a
    fixed size other than its crop keeps its crop ratio (resize_short =
    floor(size / crop_pct)). Returns (transform, crop as (w, h) or None)."""
    import math
    if isinstance(size, tuple) and size[0] == size[1]:
        size = size[0]
    if size is None or size == transform.crop_size:
        return transform, None
    if isinstance(size, int):
        return replace(transform, resize_short=math.floor(size / transform.crop_pct),
                       crop_size=size), None
    h, w = size  # not square: cover the longer side of the crop
    return replace(transform, resize_short=math.floor(max(h, w) / transform.crop_pct),
                   crop_size=min(h, w)), (w, h)


@dataclass
class ExportResult:
    variant: str
    class_num: int
    weights: str
    model_dir: Path
    input_name: str
    input_shape: list
    output_name: str
    softmax: bool = True
    preprocessing: str = ""
    labels: str = ""
    files: list[Path] = field(default_factory=list)
    infer_config: Path | None = None
    onnx_path: Path | None = None
    onnx_rel_diff: float | None = None

    def describe(self) -> str:
        shape = ", ".join(str(d) if d is not None else name
                          for d, name in zip(self.input_shape, "NCHW"))
        output = ("probabilities (softmax, as PaddleClas exports; --logits for raw logits)"
                  if self.softmax else "logits (no softmax)")
        lines = [
            f"Exported {self.variant} ({self.class_num} classes; weights: {self.weights})",
            f"  input   {self.input_name}: float32 [{shape}]  NCHW RGB, any batch size N"
            + ("; any H, W >= 32" if None in self.input_shape[2:] else ""),
            f"          preprocessing: {self.preprocessing}",
            f"  output  {self.output_name}: float32 [N, {self.class_num}] {output}",
            "  Paddle Inference: " + ", ".join(str(p) for p in self.files),
            f"  {INFER_CONFIG_FILENAME}:    {self.infer_config} (PaddleClas deploy / PaddleX / "
            f"FastDeploy format; labels: {self.labels})",
        ]
        if self.onnx_path:
            compared = "probabilities" if self.softmax else "logits"
            lines.append(f"  ONNX:             {self.onnx_path} (ONNX Runtime vs Paddle "
                         f"Inference on a random batch: the {compared} differ by at most "
                         f"{self.onnx_rel_diff:.1e} x the logit range; limit {ONNX_RTOL})")
        return "\n".join(lines)


def export_model(model: str, weights: str | None, output: str | os.PathLike | None = None,
                 onnx: bool = False, image_size: int | tuple[int, int] | None = -1,
                 class_num: int | None = None, opset: int = DEFAULT_OPSET,
                 untrained: bool = False, softmax: bool = True,
                 label_list: str | None = None) -> ExportResult:
    """``rexnet-plugin export``: build, load weights, export, check.

    ``model``: a variant name or a PaddleClas YAML (its Arch.name, Arch.class_num,
    Global.image_shape, Global.pretrained_model, Global.save_inference_dir,
    Infer.transforms and Infer.PostProcess.class_id_map_file are read). ``weights``: anything
    ``weights.load_pretrained`` accepts (path, source name, URL). ``image_size``:
    -1 keeps the variant's/config's, None exports dynamic H and W.
    ``untrained`` exports random weights (benchmarks, smoke tests). ``softmax``
    appends softmax, as PaddleClas's export does (``Arch.infer_add_softmax``).
    ``label_list``: class names for inference.yml (default: the config's
    class_id_map_file; ImageNet's for a variant name with 1000 classes).

    The folder gets inference.json, inference.pdiparams, inference.yml (and
    inference.onnx), written to a temp folder, checked, then moved in as one
    set: files of an earlier export that this one does not write are deleted.
    """
    from ..model import ReXNet
    from ..weights import load_pretrained
    from ..zoo import get_variant
    from .infer_config import write_infer_config

    if onnx:  # before any work
        from ..extras import require
        require("--onnx", "paddle2onnx", "onnxruntime")
    source = read_export_source(model)
    if weights and untrained:
        raise ValueError(f"--weights {weights} and --untrained contradict each other: drop "
                         f"--untrained to export these weights, or --weights for random ones")
    weights = weights or source.weights
    if not weights and not untrained:
        raise ValueError(f"no weights for {source.label}: pass --weights PATH (or a source "
                         f"name such as 'ppim'), or --untrained to export random weights")
    if class_num is not None:
        source.class_num = class_num
    size = source.image_size if image_size == -1 else image_size
    from ..model import MIN_INPUT_SIZE
    if size is not None and min((size, size) if isinstance(size, int) else size) < MIN_INPUT_SIZE:
        raise ValueError(f"--image-size {size}: ReXNet needs at least {MIN_INPUT_SIZE} px on "
                         f"each side (five stride-2 stages); 224 is the training size")
    out_dir = prepare_output(Path(output or source.output or "inference"))
    labels, labels_note = _labels(source, label_list, source.class_num)
    variant = get_variant(source.variant)
    preprocessing, preprocessing_text = _preprocessing(source, variant.eval_transform, size)

    net = ReXNet(**variant.arch, class_num=source.class_num)
    if untrained:
        weights_label = "untrained (random)"
    else:
        load_pretrained(net, weights, variant=source.variant)
        weights_label = str(weights)
    exported = paddle.nn.Sequential(net, paddle.nn.Softmax(axis=-1)) if softmax else net

    probe_hw = (size, size) if isinstance(size, int) else (size or (224, 224))
    probe = np.random.default_rng(0).standard_normal((2, 3, *probe_hw)).astype("float32")
    with staged_export(out_dir) as tmp:
        _save_inference(exported, tmp, size)
        write_infer_config(tmp, model_name=source.variant, label_list=labels, softmax=softmax,
                           **preprocessing)
        # Load what was written: proves the files work and gives the tensor names.
        predictor = create_predictor(tmp)
        expected = run_predictor(predictor, probe)
        onnx_diff = None
        if onnx:
            got = run_onnx(create_onnx_session(export_onnx(tmp, opset=opset)), probe)
            net.eval()
            with paddle.no_grad():
                logits = net(paddle.to_tensor(probe)).numpy()
            scale = np.maximum(np.ptp(logits, axis=1, keepdims=True), 1.0)
            onnx_diff = float((np.abs(got - expected) / scale).max())
            if not onnx_diff <= ONNX_RTOL:  # NaN fails too
                raise RuntimeError(f"ONNX Runtime differs from Paddle Inference by "
                                   f"{onnx_diff:.2e} of the logit range (> {ONNX_RTOL}); "
                                   f"nothing was written to {out_dir}. Please report this "
                                   f"with your paddle2onnx and onnxruntime versions")
    shape = [None if d in (None, -1) else d for d in input_spec(size).shape]
    return ExportResult(
        source.variant, source.class_num, weights_label, out_dir,
        predictor.get_input_names()[0], shape, predictor.get_output_names()[0],
        softmax, preprocessing_text, labels_note,
        [out_dir / MODEL_FILENAME, out_dir / PARAMS_FILENAME],
        out_dir / INFER_CONFIG_FILENAME, out_dir / ONNX_FILENAME if onnx else None, onnx_diff)
