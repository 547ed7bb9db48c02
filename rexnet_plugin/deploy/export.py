"""Export to Paddle Inference and ONNX (``rexnet-plugin export``).

Paddle 3.x ``paddle.jit.save`` writes PIR: ``<prefix>.json`` plus
``<prefix>.pdiparams`` (no ``.pdmodel``). ONNX goes through paddle2onnx from
that directory. ``rexnet-plugin export`` is ``export_model`` below.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle
from paddle.static import InputSpec

from .artifacts import DEFAULT_OPSET, MODEL_FILENAME, ONNX_FILENAME, PARAMS_FILENAME
from .runtime import create_onnx_session, create_predictor, run_onnx, run_predictor

# ONNX Runtime must reproduce Paddle Inference's fp32 outputs within this.
ONNX_ATOL = 1e-4


def input_spec(image_size: int | tuple[int, int] | None = None) -> InputSpec:
    """Dynamic batch; a fixed size (square or (H, W)), or dynamic H and W when None."""
    if image_size is None:
        hw = [None, None]
    elif isinstance(image_size, int):
        hw = [image_size, image_size]
    else:
        hw = list(image_size)
    return InputSpec([None, 3, *hw], "float32", "x")


def _replace_files(tmp_dir: Path, out_dir: Path) -> None:
    """Move every file of tmp_dir into out_dir, each with an atomic rename."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in tmp_dir.iterdir():
        os.replace(path, out_dir / path.name)


def export_inference(model: paddle.nn.Layer, out_dir: str | os.PathLike,
                     image_size: int | tuple[int, int] | None = None) -> Path:
    """Save ``model`` (put in eval mode) as a Paddle Inference model.

    Returns the directory, which holds ``inference.json`` and
    ``inference.pdiparams``. Files are written beside it first, then moved
    in, so an interrupted export never leaves a half-written file.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    try:
        paddle.jit.save(model, str(tmp / "inference"), input_spec=[input_spec(image_size)])
        _replace_files(tmp, out_dir)
    finally:
        model.train(was_training)
        shutil.rmtree(tmp, ignore_errors=True)
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
    try:
        import paddle2onnx
    except ImportError as err:
        raise ImportError("ONNX export needs paddle2onnx: pip install 'rexnet-plugin[onnx]'") from err
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
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(f".{onnx_path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, onnx_path)
    return onnx_path


# -- rexnet-plugin export ---------------------------------------------------------

@dataclass
class ExportSource:
    """What to export, read from a variant name or a PaddleClas config."""

    variant: str
    class_num: int
    image_size: int | tuple[int, int] | None
    weights: str | None  # None: none given (the config's Global.pretrained_model is used)
    label: str  # "ReXNet_1_0" or "ppcls_configs/ReXNet_1_0.yaml"
    output: str | None = None  # the config's Global.save_inference_dir


def read_export_source(model: str) -> ExportSource:
    """A variant name, or a PaddleClas YAML whose ``Arch.name`` is one."""
    from ..zoo import EVAL_TRANSFORM, IMAGENET_CLASSES, VARIANTS, get_variant
    if not model.endswith((".yaml", ".yml")) and not Path(model).is_file():
        return ExportSource(get_variant(model).name, IMAGENET_CLASSES, EVAL_TRANSFORM.crop_size,
                            None, model)
    import yaml
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found; pass a PaddleClas YAML (e.g. "
                                f"ppcls_configs/ReXNet_1_0.yaml) or a variant name")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a PaddleClas config (a YAML mapping with Arch and Global)")
    arch = config.get("Arch") or {}
    name = arch.get("name")
    if name not in VARIANTS:
        raise ValueError(f"{path}: Arch.name is {name!r}, not a ReXNet variant; expected one "
                         f"of {', '.join(VARIANTS)}")
    class_num = arch.get("class_num", IMAGENET_CLASSES)
    if not isinstance(class_num, int) or class_num <= 0:
        raise ValueError(f"{path}: Arch.class_num is {class_num!r}; expected a positive integer")
    glob = config.get("Global") or {}
    shape = glob.get("image_shape") or [3, EVAL_TRANSFORM.crop_size, EVAL_TRANSFORM.crop_size]
    if len(shape) != 3 or shape[0] != 3:
        raise ValueError(f"{path}: Global.image_shape is {shape!r}; expected [3, H, W]")
    size = shape[1] if shape[1] == shape[2] else (shape[1], shape[2])
    return ExportSource(name, class_num, size, glob.get("pretrained_model"), str(path),
                        glob.get("save_inference_dir"))


@dataclass
class ExportResult:
    variant: str
    class_num: int
    weights: str
    model_dir: Path
    input_name: str
    input_shape: list
    output_name: str
    files: list[Path] = field(default_factory=list)
    onnx_path: Path | None = None
    onnx_max_abs_diff: float | None = None

    def describe(self) -> str:
        from ..zoo import EVAL_TRANSFORM
        shape = ", ".join("N" if d is None else str(d) for d in self.input_shape)
        lines = [
            f"Exported {self.variant} ({self.class_num} classes; weights: {self.weights})",
            f"  input   {self.input_name}: float32 [{shape}]  NCHW RGB, any batch size N"
            + ("; any H, W >= 32" if None in self.input_shape[2:] else ""),
            f"          preprocessing: {EVAL_TRANSFORM.describe()}",
            f"  output  {self.output_name}: float32 [N, {self.class_num}] logits",
            "  Paddle Inference: " + ", ".join(str(p) for p in self.files),
        ]
        if self.onnx_path:
            lines.append(f"  ONNX:             {self.onnx_path} (ONNX Runtime vs Paddle "
                         f"Inference on a random batch: max |diff| {self.onnx_max_abs_diff:.1e})")
        return "\n".join(lines)


def export_model(model: str, weights: str | None, output: str | os.PathLike | None = None,
                 onnx: bool = False, image_size: int | tuple[int, int] | None = -1,
                 class_num: int | None = None, opset: int = DEFAULT_OPSET,
                 untrained: bool = False) -> ExportResult:
    """``rexnet-plugin export``: build, load weights, export, check.

    ``model``: a variant name or a PaddleClas YAML (its Arch.name, Arch.class_num,
    Global.image_shape, Global.pretrained_model and Global.save_inference_dir
    are read). ``weights``: anything ``weights.load_pretrained`` accepts
    (path, source name, URL). ``image_size``: -1 keeps the variant's/config's
    (224 by default), None exports dynamic H and W. ``untrained`` exports
    random weights (benchmarks, smoke tests).
    """
    from ..model import ReXNet
    from ..weights import load_pretrained
    from ..zoo import get_variant

    source = read_export_source(model)
    weights = weights or source.weights
    if not weights and not untrained:
        raise ValueError(f"no weights for {source.label}: pass --weights PATH (or a source "
                         f"name such as 'seed'), or --untrained to export random weights")
    if class_num is not None:
        source.class_num = class_num
    size = source.image_size if image_size == -1 else image_size
    out_dir = Path(output or source.output or "inference")

    net = ReXNet(**get_variant(source.variant).arch, class_num=source.class_num)
    if untrained:
        weights_label = "untrained (random)"
    else:
        load_pretrained(net, weights, variant=source.variant)
        weights_label = str(weights)
    export_inference(net, out_dir, size)

    # Load what was written: proves the files work and gives the tensor names.
    predictor = create_predictor(out_dir)
    probe_hw = (size, size) if isinstance(size, int) else (size or (224, 224))
    probe = np.random.default_rng(0).standard_normal((2, 3, *probe_hw)).astype("float32")
    expected = run_predictor(predictor, probe)
    shape = [None if d in (None, -1) else d for d in input_spec(size).shape]
    result = ExportResult(
        source.variant, source.class_num, weights_label, out_dir,
        predictor.get_input_names()[0], shape, predictor.get_output_names()[0],
        [out_dir / MODEL_FILENAME, out_dir / PARAMS_FILENAME])
    if onnx:
        result.onnx_path = export_onnx(out_dir, opset=opset)
        got = run_onnx(create_onnx_session(result.onnx_path), probe)
        result.onnx_max_abs_diff = float(np.abs(got - expected).max())
        if result.onnx_max_abs_diff > ONNX_ATOL:
            raise RuntimeError(f"{result.onnx_path}: ONNX Runtime differs from Paddle Inference "
                               f"by {result.onnx_max_abs_diff:.2e} (> {ONNX_ATOL}); please report "
                               f"this with your paddle2onnx and onnxruntime versions")
    return result
