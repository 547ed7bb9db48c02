"""The machine's limit: fp32 and int8 multiply-accumulate rates of this CPU.

    python benchmarks/peak.py            # writes results/peak.json

(benchmarks/run.py measures the same in each run and keeps it in its JSON.)

Two figures each, for all threads (``--threads``, default every CPU):

* measured: the best of a few large matrix products in ONNX Runtime (its
  MLAS kernels: ``MatMul`` in fp32, ``MatMulInteger`` uint8 x int8, the
  VNNI path on CPUs with AVX512-VNNI / AVX-VNNI), as GFLOP/s and GOP/s
  (2 operations per multiply-accumulate);
* bf16, where the CPU has AVX512-BF16/AMX and OpenVINO is installed: the
  same fp32 ``MatMul`` compiled by OpenVINO with
  ``INFERENCE_PRECISION_HINT: bf16`` (oneDNN's bf16 kernels);
* nominal: clock x cores x operations per cycle, assuming two 512-bit FMA
  pipes per core (64 fp32 FLOP/cycle), VNNI's 4 int8 products per 32-bit
  lane (4x that) and AVX512-BF16's 2 bf16 products per lane (2x). Only a
  guide: the clock is /proc/cpuinfo's, not the turbo.

report.py divides each mode's GFLOP/s by these (fp32 modes by the fp32
peak, bf16 modes and OpenVINO's defaults by the bf16 peak where there is
one, int8 modes by the int8 peak): the distance to the machine's limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FP32_FLOP_PER_CYCLE = 64  # 2 FMA pipes x 16 fp32 lanes x 2
INT8_OPS_PER_CYCLE = 4 * FP32_FLOP_PER_CYCLE  # VNNI: 4 uint8*int8 products per 32-bit lane
BF16_FLOP_PER_CYCLE = 2 * FP32_FLOP_PER_CYCLE  # AVX512-BF16: 2 bf16 products per 32-bit lane


def _clock_ghz() -> float | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1e3
    except (OSError, ValueError):
        pass
    return None


def _matmul_model(kind: str, n: int):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    if kind == "fp32":
        b = numpy_helper.from_array(rng.standard_normal((n, n)).astype("float32"), "b")
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:
        b = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "b")
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph([node], kind, [helper.make_tensor_value_info("a", a_type, [n, n])],
                              [helper.make_tensor_value_info("y", y_type, [n, n])], [b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def measure(kind: str, threads: int, n: int = 2048, repeats: int = 15) -> dict:
    """Best and median rate of an n x n x n product, in G(FL)OP/s.

    kind: "fp32" or "int8" (ONNX Runtime), "bf16" (OpenVINO)."""
    import numpy as np
    rng = np.random.default_rng(1)
    a = (rng.integers(0, 256, (n, n), dtype=np.uint8) if kind == "int8"
         else rng.standard_normal((n, n)).astype("float32"))
    if kind == "bf16":
        import openvino as ov
        core = ov.Core()
        request = core.compile_model(core.read_model(_matmul_model("fp32", n), b""), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16",
        }).create_infer_request()
        run = lambda: request.infer([a])  # noqa: E731
    else:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(_matmul_model(kind, n), options,
                                       providers=["CPUExecutionProvider"])
        run = lambda: session.run(None, {"a": a})  # noqa: E731
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    ops = 2 * n ** 3
    return {"best": ops / min(times) / 1e9, "median": ops / statistics.median(times) / 1e9,
            "matrix": n, "repeats": repeats}


def peaks(threads: int) -> dict:
    """Measured and nominal fp32, int8 (and bf16) peaks for ``threads`` threads."""
    from rexnet_plugin.deploy.runtime import bf16_supported, openvino_available
    clock = _clock_ghz()
    measured = {"fp32_gflop_per_s": measure("fp32", threads),
                "int8_gop_per_s": measure("int8", threads)}
    nominal = None if clock is None else {
        "fp32_gflop_per_s": clock * threads * FP32_FLOP_PER_CYCLE,
        "int8_gop_per_s": clock * threads * INT8_OPS_PER_CYCLE,
        "assumes": f"{FP32_FLOP_PER_CYCLE} fp32 FLOP, {INT8_OPS_PER_CYCLE} int8 OP and "
                   f"{BF16_FLOP_PER_CYCLE} bf16 FLOP per cycle per core at the listed clock"}
    if bf16_supported() and openvino_available():
        measured["bf16_gflop_per_s"] = measure("bf16", threads)
        if nominal:
            nominal["bf16_gflop_per_s"] = clock * threads * BF16_FLOP_PER_CYCLE
    return {"threads": threads, "clock_ghz": clock,
            "load_average_start": list(os.getloadavg()),
            "measured": measured, "nominal": nominal,
            "load_average_end": list(os.getloadavg())}


# CPU features that matter for these kernels, as /proc/cpuinfo names them.
RELEVANT_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                      "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


# -- the machine ----------------------------------------------------------------

def _lscpu() -> dict:
    try:
        out = subprocess.run(["lscpu", "-J"], capture_output=True, text=True, timeout=30).stdout
        return {row["field"].rstrip(":"): row["data"] for row in json.loads(out)["lscpu"]}
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return {}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def describe_machine() -> dict:
    """CPU model, cores, relevant instruction sets and library versions."""
    from rexnet_plugin.deploy.runtime import cpu_flags, cpu_model
    lscpu = _lscpu()
    flags = cpu_flags()
    import paddle
    return {
        "cpu_model": lscpu.get("Model name") or cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "cores_per_socket": lscpu.get("Core(s) per socket"),
        "sockets": lscpu.get("Socket(s)"),
        "l2_cache": lscpu.get("L2 cache"),
        "l3_cache": lscpu.get("L3 cache"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "cpu_flags": [f for f in RELEVANT_CPU_FLAGS if f in flags],
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {"paddlepaddle": paddle.version.full_version,
                     "paddle_commit": paddle.version.commit,
                     **{d: _version(d) for d in ("paddleclas", "rexnet-plugin", "numpy",
                                                 "onnxruntime", "paddle2onnx", "onnx",
                                                 "openvino")}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from rexnet_plugin.files import write_json
    doc = {"command": "python benchmarks/peak.py" + (f" --threads {args.threads}"
                                                    if args.threads != os.cpu_count() else ""),
           **peaks(args.threads), "machine": describe_machine()}
    path = RESULTS / "peak.json"
    write_json(path, doc)
    m = doc["measured"]
    print(f"fp32 {m['fp32_gflop_per_s']['best']:.0f} GFLOP/s, int8 "
          f"{m['int8_gop_per_s']['best']:.0f} GOP/s measured (best of {m['fp32_gflop_per_s']['repeats']}); "
          f"nominal {doc['nominal']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
