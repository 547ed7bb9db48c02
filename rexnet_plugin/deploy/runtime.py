"""Run exported models on the CPU: Paddle Inference, ONNX Runtime and OpenVINO."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from .artifacts import MODEL_FILENAME, PARAMS_FILENAME

PRECISIONS = ("fp32", "bf16")
# CPU instructions that run bf16 natively (Intel Cooper Lake+, AMD Zen 4+; AMX).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class UnsupportedCPUError(ValueError):
    """The CPU lacks the instructions a requested precision needs."""


def _cpuinfo(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(key)), None)
    except OSError:
        return None


def cpu_flags() -> frozenset[str]:
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def bf16_supported() -> bool:
    """True when the CPU runs bf16 natively; without /proc/cpuinfo, oneDNN's own check."""
    flags = cpu_flags()
    if flags:
        return bool(flags.intersection(BF16_CPU_FLAGS))
    from paddle.base import core
    return bool(core.supports_bfloat16_fast_performance())


def check_precision(precision: str, mkldnn: bool = True) -> None:
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


def create_predictor(model_dir: str | os.PathLike, mkldnn: bool = True,
                     threads: int | None = None, precision: str = "fp32"):
    """A Paddle Inference CPU predictor (no enable_memory_optim: it fails on Paddle 3.3.1)."""
    check_precision(precision, mkldnn)
    from paddle import inference
    model_dir = Path(model_dir)
    config = inference.Config(str(model_dir / MODEL_FILENAME), str(model_dir / PARAMS_FILENAME))
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
    """An ONNX Runtime CPU session; its threads stop spinning when idle (docs/deployment.md)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # paddle2onnx leaves unused initializers: no warnings
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, images: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(images, dtype="float32")})[0]


def openvino_available() -> bool:
    from ..extras import missing
    return missing("openvino") is None


def create_openvino_session(model_path: str | os.PathLike, threads: int | None = None,
                            precision: str = "fp32"):
    """An OpenVINO CPU CompiledModel; float ops run in ``precision``, int8 ops stay int8."""
    check_precision(precision)
    import openvino as ov  # without the hint it runs fp32 models in bf16 where the CPU can
    return ov.Core().compile_model(str(model_path), "CPU", {
        "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1,
        "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]})


def run_openvino(session, images: np.ndarray) -> np.ndarray:
    return session([np.ascontiguousarray(images, dtype="float32")])[0]
