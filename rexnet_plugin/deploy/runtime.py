"""Run exported models on the CPU: Paddle Inference predictors, ONNX Runtime
sessions and OpenVINO compiled models.

Also what the CPU can do (bf16), and the allocator setting that makes every
Paddle Inference run faster on glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import numpy as np

from .artifacts import MODEL_FILENAME, PARAMS_FILENAME

PRECISIONS = ("fp32", "bf16")
# CPU instructions that run bf16 natively (Intel Cooper Lake+, AMD Zen 4+; AMX).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# glibc mallopt parameters, and the size up to which freed blocks are kept.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_RETAIN_BYTES = 1 << 30


class UnsupportedCPUError(RuntimeError):
    """The CPU lacks the instructions a requested precision needs."""


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


# How ONNX Runtime's worker threads wait for the next operator:
#   "run" (default): spin while a run lasts, stop when it returns;
#   "0": always sleep; "1": ONNX Runtime's own default, spin between runs too.
ORT_SPINNING_ENV = "REXNET_ORT_SPINNING"
ORT_SPINNING_VALUES = ("run", "0", "1")
# Set to 0 to run a batch as one piece on all threads (see SplitBatchSession).
ORT_SPLIT_BATCH_ENV = "REXNET_ORT_SPLIT_BATCH"


def ort_spinning() -> str:
    """The REXNET_ORT_SPINNING setting: one of ORT_SPINNING_VALUES."""
    value = os.environ.get(ORT_SPINNING_ENV, "run").strip() or "run"
    if value not in ORT_SPINNING_VALUES:
        raise ValueError(f"{ORT_SPINNING_ENV}={value!r} is not one of "
                         f"{', '.join(ORT_SPINNING_VALUES)}; unset it for the default 'run'")
    return value


def _ort_session(onnx_path, threads: int):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # paddle2onnx leaves unused initializers: no warnings
    spinning = ort_spinning()
    allow = "0" if spinning == "0" else "1"
    options.add_session_config_entry("session.intra_op.allow_spinning", allow)
    options.add_session_config_entry("session.inter_op.allow_spinning", allow)
    if spinning == "run":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class SplitBatchSession:
    """An ONNX Runtime session that runs a batch of at least ``threads`` images
    as ``threads`` slices at once, each in a single-threaded session of its
    own, and smaller batches on all threads in one session.

    Each slice then runs its ops without waiting for other threads at every
    op's end; on the 2-core benchmark machine that was faster for the int8
    model at batch 8 (docs/deployment.md). Same outputs: the rows are
    independent. The slices' sessions are made on the first large batch.
    Offers what the code here uses of an InferenceSession: run, get_inputs,
    get_outputs.
    """

    def __init__(self, onnx_path, threads: int):
        self._path, self._threads = onnx_path, threads
        self._whole = _ort_session(onnx_path, threads)
        self._parts = None
        self._pool = None
        batch = self._whole.get_inputs()[0].shape[0]
        self._splittable = (threads > 1 and len(self._whole.get_inputs()) == 1
                            and not isinstance(batch, int))

    def get_inputs(self):
        return self._whole.get_inputs()

    def get_outputs(self):
        return self._whole.get_outputs()

    def run(self, output_names, feeds: dict, run_options=None):
        (name, x), = feeds.items() if len(feeds) == 1 else ((None, None),)
        if not self._splittable or name is None or len(x) < self._threads:
            return self._whole.run(output_names, feeds, run_options)
        if self._parts is None:
            from concurrent.futures import ThreadPoolExecutor
            self._parts = [_ort_session(self._path, 1) for _ in range(self._threads)]
            self._pool = ThreadPoolExecutor(self._threads)
        slices = np.array_split(x, self._threads)
        results = list(self._pool.map(
            lambda part: part[0].run(output_names, {name: part[1]}, run_options),
            zip(self._parts, slices)))
        return [np.concatenate([r[i] for r in results]) for i in range(len(results[0]))]


def create_onnx_session(onnx_path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation on.

    Its intra-op threads spin between operators while a run lasts and stop
    when it returns (``session.force_spinning_stop``): spinning hands each
    operator to the threads at once, and an idle session then takes no core
    from other work. ``REXNET_ORT_SPINNING=0`` makes them always sleep,
    ``=1`` restores ONNX Runtime's default. A batch of at least
    ``threads`` images is split over one single-threaded session per thread
    (``SplitBatchSession``); ``REXNET_ORT_SPLIT_BATCH=0`` turns that off.
    See docs/deployment.md.
    """
    threads = threads or os.cpu_count() or 1
    if os.environ.get(ORT_SPLIT_BATCH_ENV, "1").strip() == "0":
        return _ort_session(onnx_path, threads)
    return SplitBatchSession(onnx_path, threads)


def run_onnx(session, images: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(images, dtype="float32")})[0]


# -- OpenVINO ---------------------------------------------------------------------------

# OpenVINO's INFERENCE_PRECISION_HINT for each precision. Without a hint it
# runs an fp32 model in bf16 on CPUs with AVX512-BF16 or AMX: fp32 here is
# always asked for. An int8 model keeps its quantized ops in int8 either way.
OPENVINO_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def openvino_available() -> bool:
    from ..extras import missing
    return missing("openvino") is None


class OpenVINOSession:
    """An OpenVINO model compiled for the CPU, run one batch at a time.

    A batch of at least ``threads`` images runs as ``threads`` slices at once,
    on ``threads`` inference streams of one thread each, as
    ``SplitBatchSession`` does for ONNX Runtime: no thread then waits for
    another at each layer's end (faster at batch 8 in most runs on the 2-core
    benchmark machine, not all: docs/speed.md). Smaller batches run on all
    threads in one stream. Same outputs: the rows are independent. The
    streams are compiled on the first large batch.
    """

    def __init__(self, model_path, threads: int, precision: str | None):
        import openvino as ov
        self._core, self._path, self._threads = ov.Core(), str(model_path), threads
        self._config = {"INFERENCE_NUM_THREADS": threads}
        if precision is not None:
            self._config["INFERENCE_PRECISION_HINT"] = OPENVINO_PRECISION_HINTS[precision]
        compiled = self._core.compile_model(self._path, "CPU", {**self._config, "NUM_STREAMS": 1})
        self._whole = compiled.create_infer_request()
        self._streams = None
        # What OpenVINO runs the float parts in ("f32", "bf16").
        self.inference_precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def run(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype="float32")
        if self._threads == 1 or len(x) < self._threads:
            return self._whole.infer([x])[0]
        if self._streams is None:
            compiled = self._core.compile_model(
                self._path, "CPU", {**self._config, "NUM_STREAMS": self._threads})
            self._streams = [compiled.create_infer_request() for _ in range(self._threads)]
        for request, part in zip(self._streams, np.array_split(x, self._threads)):
            request.start_async([part])
        for request in self._streams:
            request.wait()
        return np.concatenate([r.get_output_tensor(0).data for r in self._streams])


def create_openvino_session(model_path: str | os.PathLike, threads: int | None = None,
                            precision: str | None = "fp32") -> OpenVINOSession:
    """OpenVINO on the CPU for an ONNX (or OpenVINO IR) file.

    ``precision``: "fp32" runs fp32 (never silently bf16), "bf16" needs a CPU
    with AVX512-BF16/AMX (UnsupportedCPUError otherwise), None leaves the
    choice to OpenVINO (its defaults: bf16 where the CPU has it). For an int8
    model the precision is that of its float parts.
    """
    if precision is not None:
        check_precision(precision)
    return OpenVINOSession(model_path, threads or os.cpu_count() or 1, precision)


def run_openvino(session: OpenVINOSession, images: np.ndarray) -> np.ndarray:
    return session.run(images)
