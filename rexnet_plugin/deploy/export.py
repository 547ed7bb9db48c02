"""Export to Paddle Inference (Paddle 3 writes PIR: ``inference.json`` +
``inference.pdiparams``) and to ONNX through paddle2onnx: ``rexnet-plugin export``."""

from __future__ import annotations

import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import paddle
from paddle.static import InputSpec

from ..files import atomic_dir, atomic_path, ensure_writable_dir
from .artifacts import (DEFAULT_OPSET, EXPORT_FILES, INFER_CONFIG_FILENAME, MODEL_FILENAME,
                        ONNX_FILENAME, PARAMS_FILENAME)
from .runtime import create_onnx_session, create_predictor, run_onnx, run_predictor

# ONNX Runtime against Paddle Inference, as a fraction of each image's logit range (at least
# 1; fp32 keeps ~7 digits of logits in the hundreds); bounds the probabilities' error too.
ONNX_RTOL = 1e-5
# PaddleClas's predictor loads these instead of inference.*: never export beside them.
SHADOWING_FILES = ("inference_int8.pdiparams",)
# The shipped configs' Infer.PostProcess.class_id_map_file (a checkout's or the wheel's).
IMAGENET_LABEL_FILE = "ppcls/utils/imagenet1k_label_list.txt"


def prepare_output(out_dir: str | os.PathLike) -> Path:
    """Check before any work that an export can replace ``out_dir`` (ValueErrors name it)."""
    out_dir = Path(out_dir).resolve() if Path(out_dir).is_symlink() else Path(out_dir)
    existed = out_dir.exists()
    ensure_writable_dir(out_dir, "output folder")
    ensure_writable_dir(out_dir.parent, "folder holding the output folder")  # temps go there
    if not existed:
        out_dir.rmdir()  # made only for the check: a failed export leaves no empty folder
    shadowing = ", ".join(name for name in SHADOWING_FILES if (out_dir / name).exists())
    if shadowing:
        raise ValueError(f"{out_dir} holds {shadowing}: PaddleClas's predictor would load that "
                         f"model instead of the new inference.json. Export to another folder, "
                         f"or delete {shadowing} (and its model file) first.")
    return out_dir


@contextmanager
def export_folder(out_dir: Path):
    """A temp folder that replaces ``out_dir`` in one rename on success, the user's own files
    linked in (a reader never sees a mix); on any error ``out_dir`` stays."""
    with atomic_dir(out_dir) as tmp:
        yield tmp
        for entry in out_dir.iterdir() if out_dir.is_dir() else ():
            if entry.name not in EXPORT_FILES and not (tmp / entry.name).exists():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, tmp / entry.name, symlinks=True, copy_function=_link)
                else:
                    _link(entry, tmp / entry.name)


def _link(src, dst) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst, follow_symlinks=False)


def _save_inference(model: paddle.nn.Layer, folder: Path, image_size) -> None:
    """Save in eval mode: dynamic batch, fixed (int or (H, W)) or dynamic (None) size."""
    hw = [image_size] * 2 if isinstance(image_size, int) else list(image_size or [None] * 2)
    was_training = model.training
    model.eval()
    try:
        paddle.jit.save(model, str(folder / "inference"),
                        input_spec=[InputSpec([None, 3, *hw], "float32", "x")])
    finally:
        model.train(was_training)


def export_inference(model: paddle.nn.Layer, out_dir: str | os.PathLike,
                     image_size: int | tuple[int, int] | None = None) -> Path:
    """``model`` as a Paddle Inference model, replacing ``out_dir``'s set."""
    out_dir = prepare_output(out_dir)
    with export_folder(out_dir) as tmp:
        _save_inference(model, tmp, image_size)
    return out_dir


def export_onnx(model_dir: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """A Paddle Inference folder to ONNX (bytes: paddle2onnx writing files runs polygraphy,
    which pip-installs packages)."""
    from ..extras import require
    require("ONNX export", "paddle2onnx")
    import paddle2onnx
    model_dir = Path(model_dir)
    files = [model_dir / MODEL_FILENAME, model_dir / PARAMS_FILENAME]
    if not all(path.is_file() for path in files):
        raise FileNotFoundError(f"{files[0]} or {files[1].name} not found: export the model to "
                                f"Paddle Inference first (rexnet-plugin export)")
    onnx_path = Path(onnx_path) if onnx_path else model_dir / ONNX_FILENAME
    try:
        data = paddle2onnx.export(*map(str, files), save_file=None, opset_version=opset,
                                  optimize_tool="None")
    except Exception as err:  # it logs the cause, then fails on its own return
        raise RuntimeError(f"paddle2onnx could not convert {model_dir} (opset {opset}); "
                           f"its log above says why") from err
    with atomic_path(onnx_path, suffix=".onnx") as tmp:
        tmp.write_bytes(data)
    return onnx_path


@dataclass
class ExportSource:
    """What to export, read from a variant name or a PaddleClas config."""
    variant: str
    class_num: int
    image_size: int | tuple[int, int] | None
    weights: str | None  # the config's Global.pretrained_model
    label: str  # "ReXNet_1_0" or "ppcls_configs/ReXNet_1_0.yaml"
    output: str | None = None  # the config's Global.save_inference_dir
    label_file: str | None = None  # the config's Infer.PostProcess.class_id_map_file
    config_dir: Path | None = None
    infer_transforms: list | None = None  # the config's Infer.transforms


def read_export_source(model: str) -> ExportSource:
    """A variant name, or a PaddleClas YAML whose ``Arch.name`` is one."""
    from ..zoo import IMAGENET_CLASSES, VARIANTS, get_variant
    from .infer_config import _bad
    path = Path(model)
    if not model.endswith((".yaml", ".yml")) and not path.is_file():
        v = get_variant(model)
        return ExportSource(v.name, IMAGENET_CLASSES, v.eval_transform.crop_size, None, model,
                            label_file=IMAGENET_LABEL_FILE)
    import yaml
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found; pass a PaddleClas YAML (e.g. "
                                f"ppcls_configs/ReXNet_1_0.yaml) or a variant name")
    try:
        config = yaml.safe_load(path.read_text())
    except RecursionError:
        raise ValueError(f"{path} nests too deeply to be a PaddleClas config") from None
    config = config if isinstance(config, dict) else {}
    arch, glob, infer = (config.get(k) if isinstance(config.get(k), dict) else {}
                         for k in ("Arch", "Global", "Infer"))
    name = arch.get("name")
    if not isinstance(name, str) or name not in VARIANTS:
        raise _bad(path, "Arch.name", name, f"a ReXNet variant: {', '.join(VARIANTS)}")
    class_num = arch.get("class_num", IMAGENET_CLASSES)
    if isinstance(class_num, bool) or not isinstance(class_num, int) or class_num <= 0:
        raise _bad(path, "Arch.class_num", class_num, "a positive integer")
    crop = VARIANTS[name].eval_transform.crop_size
    shape = glob.get("image_shape") or [3, crop, crop]
    if not (isinstance(shape, list) and len(shape) == 3 and shape[0] == 3
            and all(isinstance(d, int) for d in shape)):
        raise _bad(path, "Global.image_shape", shape, "[3, H, W]")
    post = infer.get("PostProcess")
    label_file = post.get("class_id_map_file") if isinstance(post, dict) else None
    return ExportSource(name, class_num, shape[1] if shape[1] == shape[2] else tuple(shape[1:]),
                        glob.get("pretrained_model"), str(path), glob.get("save_inference_dir"),
                        label_file, path.parent, infer.get("transforms"))


def _labels(source: ExportSource, label_list: str | None,
            class_num: int) -> tuple[list[str] | None, str]:
    """The class names and where they came from (or why none): a class_id_map_file inside the
    working folder, the config's or the paddleclas wheel's (so not /etc/passwd)."""
    import importlib.util
    from ..files import is_regular_file_inside
    from ..zoo import IMAGENET_CLASSES
    from .infer_config import read_label_list
    if label_list:
        found = label_list
    elif not source.label_file or (source.config_dir is None and class_num != IMAGENET_CLASSES):
        return None, "none (pass --label-list FILE)"
    else:
        spec = importlib.util.find_spec("paddleclas")
        bases = [Path.cwd(), *([source.config_dir] if source.config_dir else []),
                 *map(Path, (spec and spec.submodule_search_locations) or [])]
        found = next((base / source.label_file for base in bases
                      if is_regular_file_inside(base / source.label_file, base)), None)
        if found is None:
            return None, f"none ({source.label_file} not found; pass --label-list FILE)"
    names = read_label_list(found)
    if len(names) != class_num and label_list:
        raise ValueError(f"--label-list {label_list} has {len(names)} names; the model has "
                         f"{class_num} classes. Pass a list with one name per class.")
    if len(names) != class_num:
        return None, (f"none ({found} has {len(names)} names for {class_num} classes; pass "
                      f"--label-list FILE)")
    return names, f"{len(names)} names from {found}"


def _preprocessing(source: ExportSource, transform, hw) -> tuple[dict, str]:
    """write_infer_config's keywords and their description: the config's Infer.transforms when
    they give the exported size, else the eval transform fitted to it, keeping the crop ratio."""
    from .infer_config import InferConfigError, ops_from_paddleclas, preprocess_ops
    note = ""
    if source.infer_transforms is not None:
        try:
            ops = ops_from_paddleclas(source.infer_transforms, f"{source.label}: Infer.transforms")
            shape = preprocess_ops(ops)(np.zeros((427, 640, 3), np.uint8)).shape  # a photo
        except InferConfigError as err:
            note = f" (not the config's Infer.transforms: {str(err).split(': ', 2)[-1]})"
        else:
            if hw is None or shape[1:] == tuple(hw):
                names = ", ".join(f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
                                  if name in ("ResizeImage", "CropImage") and params else name
                                  for op in ops for name, params in op.items())
                return {"transform_ops": ops}, f"the config's Infer.transforms: {names}"
            note = (f" (not the config's Infer.transforms: they give {shape[1]}x{shape[2]}, "
                    f"the model takes {hw[0]}x{hw[1]})")
    crop = None
    if hw and tuple(hw) != (transform.crop_size,) * 2:  # the short side covers the crop
        (h, w), crop = hw, (hw[1], hw[0]) if hw[0] != hw[1] else None
        transform = replace(transform, resize_short=math.floor(max(h, w) / transform.crop_pct),
                            crop_size=min(h, w))
    text = transform.describe()
    if crop:
        text = text.replace(f"center-crop {transform.crop_size}",
                            f"center-crop {crop[0]}x{crop[1]} (W x H)")
    return {"transform": transform, "crop": crop}, text + note


@dataclass
class ExportResult:
    """What ``export_model`` wrote; ``describe()`` is the command's report."""
    variant: str
    class_num: int
    input_shape: list  # None: dynamic
    model_dir: Path
    labels: str  # where the class names came from, or why none
    onnx_rel_diff: float | None  # None: no ONNX
    report: str

    def describe(self) -> str:
        return self.report


def export_model(model: str, weights: str | None, output: str | os.PathLike | None = None,
                 onnx: bool = False, image_size: int | tuple[int, int] | None = -1,
                 class_num: int | None = None, opset: int = DEFAULT_OPSET,
                 untrained: bool = False, softmax: bool = True,
                 label_list: str | None = None) -> ExportResult:
    """``rexnet-plugin export`` (docs/deployment.md); ``image_size`` -1 keeps the model's, None
    is dynamic. The set is written to a temp folder, checked, then moved in."""
    from ..model import MIN_INPUT_SIZE, ReXNet
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
    class_num = source.class_num if class_num is None else class_num
    size = source.image_size if image_size == -1 else image_size
    hw = (size, size) if isinstance(size, int) else size  # None: dynamic
    if hw and min(hw) < MIN_INPUT_SIZE:
        raise ValueError(f"--image-size {size}: ReXNet needs at least {MIN_INPUT_SIZE} px on "
                         f"each side (five stride-2 stages); 224 is the training size")
    out_dir = prepare_output(Path(output or source.output or "inference"))
    labels, labels_note = _labels(source, label_list, class_num)
    variant = get_variant(source.variant)
    preprocessing, preprocessing_text = _preprocessing(source, variant.eval_transform, hw)

    net = ReXNet(**variant.arch, class_num=class_num)
    if not untrained:
        load_pretrained(net, weights, variant=source.variant)
    exported = paddle.nn.Sequential(net, paddle.nn.Softmax(axis=-1)) if softmax else net
    probe = np.random.default_rng(0).standard_normal((2, 3, *(hw or (224, 224))), "float32")
    onnx_diff = None
    with export_folder(out_dir) as tmp:
        _save_inference(exported, tmp, size)
        write_infer_config(tmp, model_name=source.variant, label_list=labels, softmax=softmax,
                           **preprocessing)
        predictor = create_predictor(tmp)  # loads what was written; gives the tensor names
        expected = run_predictor(predictor, probe)
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
    dims = ", ".join(map(str, hw or "HW"))
    lines = [
        f"Exported {source.variant} ({class_num} classes; weights: "
        f"{'untrained (random)' if untrained else weights})",
        f"  input   {predictor.get_input_names()[0]}: float32 [N, 3, {dims}]"
        f"  NCHW RGB, any batch size N" + ("; any H, W >= 32" if hw is None else ""),
        f"          preprocessing: {preprocessing_text}",
        f"  output  {predictor.get_output_names()[0]}: float32 [N, {class_num}] "
        + ("probabilities (softmax, as PaddleClas exports; --logits for raw logits)" if softmax
           else "logits (no softmax)"),
        f"  Paddle Inference: {out_dir / MODEL_FILENAME}, {out_dir / PARAMS_FILENAME}",
        f"  {INFER_CONFIG_FILENAME}:    {out_dir / INFER_CONFIG_FILENAME} (PaddleClas deploy / "
        f"PaddleX / FastDeploy format; labels: {labels_note})"]
    if onnx:
        lines.append(f"  ONNX:             {out_dir / ONNX_FILENAME} (ONNX Runtime vs Paddle "
                     f"Inference on a random batch: the {'probabilities' if softmax else 'logits'}"
                     f" differ by at most {onnx_diff:.1e} x the logit range; limit {ONNX_RTOL})")
    return ExportResult(source.variant, class_num, [None, 3, *(hw or (None, None))], out_dir,
                        labels_note, onnx_diff, "\n".join(lines))
