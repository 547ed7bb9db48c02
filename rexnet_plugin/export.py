"""Export to Paddle Inference and ONNX, and run the exported models.

Paddle 3.x ``paddle.jit.save`` writes PIR: ``<prefix>.json`` plus
``<prefix>.pdiparams`` (no ``.pdmodel``). ONNX goes through paddle2onnx from
that directory. ``rexnet-plugin export`` is ``export_model`` below.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle
from paddle.static import InputSpec

MODEL_FILENAME = "inference.json"
PARAMS_FILENAME = "inference.pdiparams"
ONNX_FILENAME = "inference.onnx"
# Opset 13 covers every op of the exported graph and every current ONNX
# Runtime; paddle2onnx raises it by itself if an op needs more.
DEFAULT_OPSET = 13
PRECISIONS = ("fp32", "bf16")
# CPU instructions that run bf16 natively (Intel Cooper Lake+, AMD Zen 4+; AMX).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# ONNX Runtime must reproduce Paddle Inference's fp32 outputs within this.
ONNX_ATOL = 1e-4
# glibc mallopt parameters, and the size up to which freed blocks are kept.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_RETAIN_BYTES = 1 << 30


class UnsupportedCPUError(RuntimeError):
    """The CPU lacks the instructions a requested precision needs."""


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


# -- CPU capabilities ---------------------------------------------------------

def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def bf16_supported() -> bool:
    """True when the CPU runs bf16 natively (AVX512-BF16 or AMX-BF16).

    Reads /proc/cpuinfo; elsewhere asks Paddle (oneDNN's own ISA check).
    """
    flags = cpu_flags()
    if flags:
        return bool(flags.intersection(BF16_CPU_FLAGS))
    from paddle.base import core
    return bool(core.supports_bfloat16_fast_performance())


def check_precision(precision: str, mkldnn: bool = True) -> None:
    """Raise a clear error when ``precision`` cannot run here."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        if not mkldnn:
            raise ValueError("precision='bf16' runs through oneDNN: leave mkldnn=True")
        if not bf16_supported():
            raise UnsupportedCPUError(
                f"precision='bf16' needs a CPU with AVX512-BF16 or AMX-BF16 instructions "
                f"({' or '.join(BF16_CPU_FLAGS)} in /proc/cpuinfo); this CPU ({cpu_model()}) "
                f"has neither. Use precision='fp32'.")


# -- running the exported model -------------------------------------------------

def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS.

    Paddle Inference allocates every intermediate tensor afresh on each run
    (its memory_optimize pass fails on 3.3.1), and glibc serves blocks over
    128 KiB (up to 32 MiB) with mmap and unmaps them on free. Each run then
    page-faults its large activations in again: for ReXNet_1_0 at batch 8,
    about 9,400 page faults and 20 ms of kernel time per run on the
    benchmark machine, a quarter of the run. Raising glibc's mmap and trim
    thresholds keeps that memory in the heap, where the next run reuses it.
    The peak memory stays what the model needs; it is just not given back.

    Process-wide and idempotent. Returns False (doing nothing) off glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, _RETAIN_BYTES)
                and libc.mallopt(_M_TRIM_THRESHOLD, 2 * _RETAIN_BYTES))


def create_predictor(model_dir: str | os.PathLike, mkldnn: bool = True,
                     threads: int | None = None, precision: str = "fp32",
                     retain_memory: bool = True):
    """A Paddle Inference predictor on the CPU, oneDNN on by default.

    ``precision="bf16"`` (opt-in) runs the convolutions in bfloat16 on CPUs
    with AVX512-BF16/AMX; elsewhere it raises UnsupportedCPUError.
    ``retain_memory`` calls ``retain_freed_memory()`` (see there; it makes
    every run faster, for any model). Deliberately no
    ``enable_memory_optim()``: it fails on Paddle 3.3.1 ("Not find
    predictor_id 0 and pass_name memory_optimize_pass").
    """
    check_precision(precision, mkldnn)
    if retain_memory:
        retain_freed_memory()
    from paddle import inference
    model_dir = Path(model_dir)
    config = inference.Config(str(model_dir / MODEL_FILENAME),
                              str(model_dir / PARAMS_FILENAME))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads or os.cpu_count() or 1)
    if mkldnn:
        config.enable_mkldnn()
    if precision == "bf16":
        config.enable_mkldnn_bfloat16()
    return inference.create_predictor(config)


def run_predictor(predictor, images: np.ndarray) -> np.ndarray:
    """Run one batch [N, 3, H, W] float32 through a predictor."""
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(images.shape))
    handle.copy_from_cpu(np.ascontiguousarray(images, dtype="float32"))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def create_onnx_session(onnx_path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation on."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # paddle2onnx leaves unused initializers: no warnings
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(images, dtype="float32")})[0]


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
    from .factories import IMAGENET_CLASSES
    from .zoo import EVAL_TRANSFORM, VARIANTS, get_variant
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
        from .tables import eval_transform_text
        shape = ", ".join("N" if d is None else str(d) for d in self.input_shape)
        lines = [
            f"Exported {self.variant} ({self.class_num} classes; weights: {self.weights})",
            f"  input   {self.input_name}: float32 [{shape}]  NCHW RGB, any batch size N"
            + ("; any H, W >= 32" if None in self.input_shape[2:] else ""),
            f"          preprocessing: {eval_transform_text()}",
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
    from .model import ReXNet
    from .weights import load_pretrained
    from .zoo import get_variant

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
