"""The side-by-side speed benchmark: this package's ReXNet against PaddleClas's own.

    python benchmarks/run.py                # every mode, then the docs regenerated
    python benchmarks/run.py --repeats 50
    python benchmarks/run.py --all          # also ablation.py and profiles.py
    python benchmarks/run.py --modes onnxruntime_int8_b1   # some modes only: written to
                                            # results/partial/, the docs left alone

For one variant with the same weights, in the same run: the exported model
in Paddle Inference (oneDNN) fp32 and bf16, ONNX Runtime fp32 and int8
(`rexnet-plugin quantize`), OpenVINO fp32, bf16 and int8, each against the
built-in in the same runtime, or against the built-in's paddle2onnx export
in OpenVINO with its defaults (the peer a CPU user would pick); the dygraph
eval forward and training step. Every (mode, implementation) pair runs in
its own worker process; the two workers of a mode take turns (``run_mode``).
Then peak.py's machine rates and agreement.py's bf16/int8 agreement are
added, results/<variant>.json and .md written (report.py) and
scripts/update_docs.py regenerates the docs' tables. README.md in this
folder says more.

The built-in is ``ReXNetV1`` from the PaddleClas wheel, taken from its
defining module; it gets our state dict unchanged (same key layout).
"""

from __future__ import annotations

import argparse
import shlex

import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

try:
    import resource  # Unix
except ImportError:  # pragma: no cover
    resource = None

from rexnet_plugin.files import write_json

from agreement import WORKER_TIMEOUT_S
from peak import describe_machine

SCHEMA = "rexnet-plugin-bench/1"
IMPLEMENTATIONS = ("ours", "builtin")
BUILTIN_MODULE = "paddleclas.ppcls.arch.backbone.model_zoo.rexnet"
BUILTIN_CLASS = "ReXNetV1"
# Forward + backward cost about three forwards (the usual estimate: the
# backward computes gradients for both the inputs and the weights).
TRAIN_FLOP_FACTOR = 3
BLOCK = 5  # timed batches per turn of a worker
SETTLE_S = 0.3  # pause between turns: longer than Intel OpenMP's 200 ms spin-wait


@dataclass(frozen=True)
class Mode:
    """One way of running the model."""

    key: str
    # "paddle_inference", "onnxruntime", "openvino", "dygraph_eval" or "dygraph_train"
    runtime: str
    batch: int
    image_size: int
    precision: str = "fp32"
    goal: float | None = None  # the target for ours/built-in latency
    # The built-in's worker runs this instead, in builtin_precision: the int8
    # modes compare with the built-in's fp32 Paddle Inference, which has no
    # int8 of its own here, and the OpenVINO modes with OpenVINO's defaults.
    builtin_runtime: str | None = None
    builtin_precision: str = "fp32"  # or "default": what the runtime picks

    @property
    def title(self) -> str:
        if self.builtin_runtime == "openvino":
            ours = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime",
                    "paddle_inference": "Paddle Inference oneDNN"}[self.runtime]
            return f"{ours} {self.precision}; built-in: OpenVINO defaults"
        if self.precision == "int8":
            return "ONNX Runtime int8 (quantize); built-in: Paddle Inference oneDNN fp32"
        return {"paddle_inference": f"Paddle Inference oneDNN {self.precision}",
                "onnxruntime": "ONNX Runtime (paddle2onnx)",
                "dygraph_eval": "dygraph eval forward",
                "dygraph_train": "dygraph train step"}[self.runtime]


# (mode key without the batch, runtime, precision, goal) of the modes against the peer.
PEER_PATHS = (("openvino_fp32", "openvino", "fp32", 1.0),
              ("openvino_bf16", "openvino", "bf16", 1.0),
              ("openvino_int8", "openvino", "int8", 0.5),
              ("onnxruntime_int8_vs_openvino", "onnxruntime", "int8", 0.5),
              ("onnxruntime_fp32_vs_openvino", "onnxruntime", "fp32", 1.0),
              ("paddle_fp32_vs_openvino", "paddle_inference", "fp32", 1.0),
              ("paddle_bf16_vs_openvino", "paddle_inference", "bf16", 1.0))

MODES = {m.key: m for m in [
    Mode("paddle_fp32_b1", "paddle_inference", 1, 224, goal=0.75),
    Mode("paddle_fp32_b8", "paddle_inference", 8, 224, goal=0.75),
    Mode("paddle_bf16_b1", "paddle_inference", 1, 224, "bf16"),
    Mode("paddle_bf16_b8", "paddle_inference", 8, 224, "bf16"),
    Mode("onnxruntime_b1", "onnxruntime", 1, 224),
    Mode("onnxruntime_b8", "onnxruntime", 8, 224),
    Mode("onnxruntime_int8_b1", "onnxruntime", 1, 224, "int8", goal=0.5,
         builtin_runtime="paddle_inference"),
    Mode("onnxruntime_int8_b8", "onnxruntime", 8, 224, "int8", goal=0.5,
         builtin_runtime="paddle_inference"),
    # Every path of ours against the peer: the built-in's ONNX in OpenVINO with
    # its defaults (bf16 on a CPU with AVX512-BF16). fp32 and bf16 are to match
    # it, the fastest path to take half its time.
    *(Mode(f"{key}_b{batch}", runtime, batch, 224, precision, goal,
           builtin_runtime="openvino", builtin_precision="default")
      for key, runtime, precision, goal in PEER_PATHS for batch in (1, 8)),
    Mode("dygraph_eval_b8", "dygraph_eval", 8, 224),
    Mode("dygraph_train_b16", "dygraph_train", 16, 160, goal=0.85),
]}


# -- statistics -------------------------------------------------------------------

def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(samples: list[tuple[float, float, int]], batch: int, macs_per_image: int,
              flop_factor: int, memory: dict) -> dict:
    """Per-image statistics of one implementation in one mode.

    ``samples``: per timed batch, (wall seconds, CPU seconds, minor page faults).
    """
    wall_s, cpu_s, faults = zip(*samples)
    per_image = [1e3 * t / batch for t in wall_s]
    median = statistics.median(per_image)
    q1, q3 = _quartiles(per_image)
    images_per_s = 1e3 / median
    return {
        "ms_per_image": {"median": median, "q1": q1, "q3": q3,
                         "min": min(per_image), "max": max(per_image)},
        "images_per_s": images_per_s,
        "cpu_ms_per_image": statistics.median(1e3 * t / batch for t in cpu_s),
        "gflop_per_s": 2 * flop_factor * macs_per_image * images_per_s / 1e9,
        "page_faults_per_batch": statistics.median(faults),
        **memory,
        "batches_ms": [round(1e3 * t, 4) for t in wall_s],
    }


# -- worker processes ---------------------------------------------------------------

def _memory_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    if field == "VmHWM" and resource:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
    return None


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _inputs(batch: int, size: int):
    import numpy as np
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, 3, size, size)).astype("float32"),
            rng.integers(0, 1000, (batch,)).astype("int64"))


def _build_dygraph(impl: str, job: dict):
    import paddle
    if impl == "ours":
        from rexnet_plugin.model import ReXNet
        model = ReXNet(**job["arch"], class_num=job["class_num"])
    else:
        model = builtin_class()(width_mult=job["arch"]["width_mult"], class_num=job["class_num"])
    model.set_state_dict(paddle.load(job["weights_file"]))
    return model


def _setup_step(impl: str, job: dict):
    """Build what ``impl`` runs in ``job``'s mode; return a function running one batch."""
    mode = Mode(**job["mode"])
    images, labels = _inputs(mode.batch, mode.image_size)
    if impl == "builtin" and mode.builtin_runtime:
        mode = Mode(mode.key, mode.builtin_runtime, mode.batch, mode.image_size,
                    mode.builtin_precision)
    if mode.runtime == "paddle_inference":
        from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
        predictor = create_predictor(job["model_dirs"][impl], threads=job["threads"],
                                     precision=mode.precision)
        return lambda: run_predictor(predictor, images)
    if mode.runtime == "onnxruntime":
        from rexnet_plugin.deploy.runtime import create_onnx_session, run_onnx
        files = job["int8_files"] if mode.precision == "int8" else job["onnx_files"]
        session = create_onnx_session(files[impl], threads=job["threads"])
        return lambda: run_onnx(session, images)
    if mode.runtime == "openvino":
        from rexnet_plugin.deploy.runtime import create_openvino_session, run_openvino
        files = job["int8_files"] if mode.precision == "int8" else job["onnx_files"]
        if mode.precision == "default":  # the peer: OpenVINO with its defaults
            import openvino as ov
            session = ov.Core().compile_model(files[impl], "CPU",
                                              {"INFERENCE_NUM_THREADS": job["threads"]})
        else:  # int8: its float parts in fp32, as load_model runs an int8 folder
            session = create_openvino_session(
                files[impl], threads=job["threads"],
                precision="fp32" if mode.precision == "int8" else mode.precision)
        return lambda: run_openvino(session, images)

    import paddle
    import paddle.nn.functional as F
    model = _build_dygraph(impl, job)
    x = paddle.to_tensor(images)
    if mode.runtime == "dygraph_eval":
        model.eval()

        def step():
            with paddle.no_grad():
                return model(x).numpy()
        return step
    model.train()
    y = paddle.to_tensor(labels)
    optimizer = paddle.optimizer.Momentum(
        learning_rate=0.01, momentum=0.9, parameters=model.parameters(),
        weight_decay=paddle.regularizer.L2Decay(1e-5))

    def train_step():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        return float(loss)
    return train_step


def _worker(conn, impl: str, job: dict, log_path: str) -> None:
    """Set up one implementation, then run a batch each time the parent asks."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # Before paddle loads: its dygraph kernels take their thread count from here.
    os.environ["OMP_NUM_THREADS"] = str(job["threads"])
    try:
        mode = Mode(**job["mode"])
        import paddle  # noqa: F401  (the baseline below includes it)
        if impl == "builtin" and mode.runtime.startswith("dygraph"):
            builtin_class()
        before = _memory_kb("VmRSS")
        step = _setup_step(impl, job)
        conn.send(("ready", None))
        while True:
            command = conn.recv()
            if command == "run":
                faults = _minor_faults()
                wall, cpu = time.perf_counter(), time.process_time()
                step()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                conn.send(("time", (wall, cpu, _minor_faults() - faults)))
            else:
                peak = _memory_kb("VmHWM")
                conn.send(("done", {"peak_rss_mb": _mb(peak), "rss_before_model_mb": _mb(before),
                                    "peak_growth_mb": _mb(peak - before) if peak and before else None}))
                return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class _Worker:
    def __init__(self, impl: str, job: dict, log_path: Path):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.impl, self.log_path = impl, log_path
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, impl, job, str(log_path)),
                                   daemon=True)
        self.process.start()
        child.close()

    def ask(self, command: str | None = None):
        if command:
            self.conn.send(command)
        if not self.conn.poll(WORKER_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"{self.impl} worker gave no answer in {WORKER_TIMEOUT_S} s; "
                               f"its log ends:\n{self._log_tail()}")
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"{self.impl} worker died (exit code {self.process.exitcode}); "
                               f"its log ends:\n{self._log_tail()}") from None
        if kind == "error":
            raise RuntimeError(f"{self.impl} worker failed:\n{payload}")
        return payload

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self):
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=30)


def run_mode(mode: Mode, job: dict, warmup: int, repeats: int, macs: int,
             log_dir: Path, block: int = BLOCK, settle_s: float = SETTLE_S) -> dict:
    """Time both implementations in ``mode``, taking turns.

    After ``warmup`` batches each, the workers take turns of ``block`` timed
    batches, alternating who goes first. Before each turn the parent waits
    ``settle_s`` and runs one untimed batch: Paddle's Intel OpenMP threads
    (MKL, in the dygraph modes) spin for 200 ms after their last work
    (KMP_BLOCKTIME), and on a few cores the spinning threads of the worker
    that just ran would steal the cores of the one being timed.
    """
    job = {**job, "mode": asdict(mode)}
    workers = {impl: _Worker(impl, job, log_dir / f"{mode.key}-{impl}.log")
               for impl in IMPLEMENTATIONS}
    try:
        for worker in workers.values():
            worker.ask()  # ready
        for worker in workers.values():
            time.sleep(settle_s)
            for _ in range(warmup):
                worker.ask("run")
        samples = {impl: [] for impl in IMPLEMENTATIONS}  # (wall s, cpu s, page faults)
        for turn in range(-(-repeats // block)):
            order = IMPLEMENTATIONS if turn % 2 == 0 else IMPLEMENTATIONS[::-1]
            for impl in order:
                time.sleep(settle_s)
                workers[impl].ask("run")  # wakes its threads; untimed
                for _ in range(min(block, repeats - turn * block)):
                    samples[impl].append(workers[impl].ask("run"))
        memory = {impl: workers[impl].ask("stop") for impl in IMPLEMENTATIONS}
    finally:
        for worker in workers.values():
            worker.stop()
    factor = TRAIN_FLOP_FACTOR if mode.runtime == "dygraph_train" else 1
    results = {impl: summarize(samples[impl], mode.batch, macs, factor, memory[impl])
               for impl in IMPLEMENTATIONS}
    ours, builtin = (results[i]["ms_per_image"]["median"] for i in IMPLEMENTATIONS)
    return {**asdict(mode), "title": mode.title, "macs_per_image": macs,
            "flop_factor": factor, "results": results,
            "ratio": ours / builtin, "goal_met": None if mode.goal is None else ours / builtin <= mode.goal}


# -- the benchmark ----------------------------------------------------------------------

def builtin_class():
    """PaddleClas's own ReXNet class, from the module that defines it."""
    import importlib
    try:
        module = importlib.import_module(BUILTIN_MODULE)
    except ImportError as err:
        raise ImportError(f"the comparison needs PaddleClas's built-in ReXNet ({BUILTIN_MODULE}), "
                          f"from the paddleclas wheel, which installs on Python 3.9 to 3.11 "
                          f"(pip install paddleclas==2.6.0); on 3.12+ it has no wheel") from err
    cls = getattr(module, BUILTIN_CLASS)
    if cls.__module__ != BUILTIN_MODULE:  # the comparison would be ours against ours
        raise RuntimeError(f"{BUILTIN_MODULE}.{BUILTIN_CLASS} was replaced by {cls.__module__}")
    return cls


def _prepare(variant: str, weights, workdir: Path, modes: list[Mode]) -> tuple[dict, dict, dict]:
    """Build both models with the same weights; export what the modes need.

    Returns the workers' job, facts for the report, and conv MACs per image
    for each image size.
    """
    import numpy as np
    import paddle
    from rexnet_plugin.complexity import count_conv_macs
    from rexnet_plugin.deploy.export import export_inference, export_onnx
    from rexnet_plugin.model import ReXNet
    from rexnet_plugin.weights import load_pretrained
    from rexnet_plugin.zoo import get_variant

    v = get_variant(variant)
    if v.kind == "lite":
        raise ValueError(f"{variant} is a ReXNet-lite; PaddleClas has no built-in lite model "
                         f"to compare with. Pick a V1 variant (ReXNet_1_0 ...).")
    paddle.seed(0)
    ours = ReXNet(**v.arch)
    if weights:
        load_pretrained(ours, weights, variant=v.name)
    builtin = builtin_class()(width_mult=v.width_mult, class_num=ours.class_num)
    state = ours.state_dict()
    theirs = {k: list(t.shape) for k, t in builtin.state_dict().items()}
    mine = {k: list(t.shape) for k, t in state.items()}
    if mine != theirs:
        raise RuntimeError(f"PaddleClas's {BUILTIN_CLASS} no longer has our state-dict layout: "
                           f"{sorted(set(mine) ^ set(theirs))[:5]}")
    builtin.set_state_dict(state)
    weights_file = workdir / "weights.pdparams"
    paddle.save(state, str(weights_file))

    # Same weights, so the same outputs: the comparison is like for like.
    ours.eval()
    builtin.eval()
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype("float32"))
    with paddle.no_grad():
        diff = float((ours(x) - builtin(x)).abs().max())

    job = {"arch": v.arch, "class_num": ours.class_num, "weights_file": str(weights_file),
           "threads": None, "model_dirs": {}, "onnx_files": {}, "int8_files": {}}
    exported = ("paddle_inference", "onnxruntime", "openvino")
    sizes = {m.image_size for m in modes if m.runtime in exported}
    if len(sizes) > 1:
        raise ValueError(f"exported modes must share one image size; got {sorted(sizes)}")
    for impl, model in (("ours", ours), ("builtin", builtin)):
        if sizes:
            job["model_dirs"][impl] = str(export_inference(model, workdir / impl, next(iter(sizes))))
        if any(m.runtime in ("onnxruntime", "openvino") for m in modes):
            job["onnx_files"][impl] = str(export_onnx(workdir / impl))
    if any(m.precision == "int8" for m in modes):
        job["int8_files"]["ours"] = str(_quantize_for_bench(v, workdir, next(iter(sizes))))
    macs = {size: count_conv_macs(ours, size)["total"] for size in {m.image_size for m in modes}}
    info = {"variant": v.name, "width_mult": v.width_mult, "class_num": ours.class_num,
            "weights": str(weights) if weights else "random init (paddle.seed(0)), copied into both",
            "outputs_max_abs_diff": diff}
    return job, info, macs


def _quantize_for_bench(v, workdir: Path, size: int) -> Path:
    """Our export quantized by ``quantize_export``, calibrated on fabricated
    images (the calibration data sets the int8 ranges, not the speed)."""
    import numpy as np
    from PIL import Image
    from rexnet_plugin.deploy.artifacts import ONNX_FILENAME
    from rexnet_plugin.deploy.infer_config import write_infer_config
    from rexnet_plugin.deploy.quantize import MIN_CALIBRATION_IMAGES, quantize_export
    write_infer_config(workdir / "ours", model_name=v.name, transform=v.eval_transform,
                       crop=(size, size))
    calib = workdir / "calibration"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(MIN_CALIBRATION_IMAGES):
        # Smooth colour images: noise upsampled, not pixel noise.
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size + 32, size + 32), Image.BICUBIC).save(
            calib / f"{i:03d}.png")
    out = quantize_export(workdir / "ours", calib, workdir / "ours_int8",
                          num_images=MIN_CALIBRATION_IMAGES, progress=False)
    return out / ONNX_FILENAME


def _skip_reason(mode: Mode) -> str | None:
    """Why ``mode`` cannot run here, or None."""
    from rexnet_plugin.extras import missing
    from rexnet_plugin.deploy.runtime import bf16_supported
    if mode.precision == "bf16" and not bf16_supported():
        return "the CPU has no AVX512-BF16/AMX-BF16"
    if "openvino" in (mode.runtime, mode.builtin_runtime) and missing("openvino"):
        return f"needs OpenVINO: {missing('openvino')}"
    if mode.runtime in ("onnxruntime", "openvino"):
        return missing("paddle2onnx", "onnxruntime", "ml_dtypes")
    return None


def run_benchmark(variant: str, weights=None, modes: list[Mode] | None = None,
                  warmup: int = 5, repeats: int = 30, threads: int | None = None,
                  command: str | None = None, log=print) -> dict:
    """Run every mode for both implementations; return the result document."""
    modes = list(MODES.values()) if modes is None else list(modes)
    threads = threads or os.cpu_count() or 1
    started = time.time()
    doc = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": command or "python benchmarks/run.py",
           "settings": {"warmup": warmup, "repeats": repeats, "threads": threads,
                        "timing": "wall clock per batch (time.perf_counter) in the worker; "
                                  "cpu = process CPU time of the worker (time.process_time)",
                        "turns": f"the two workers take turns of {BLOCK} timed batches, "
                                 f"alternating who goes first; each turn starts after a "
                                 f"{SETTLE_S} s pause and one untimed batch",
                        "memory": "VmHWM (peak resident set) of each worker process",
                        "page_faults": "minor page faults of the worker during each timed batch"},
           "machine": describe_machine(), "load_average_start": list(os.getloadavg())}
    skipped = {m.key: _skip_reason(m) for m in modes if _skip_reason(m)}
    with tempfile.TemporaryDirectory(prefix="rexnet-bench-") as tmp:
        workdir = Path(tmp)
        log(f"preparing {variant}: building both models, exporting to {workdir}")
        job, info, macs = _prepare(variant, weights, workdir,
                                   [m for m in modes if m.key not in skipped])
        job["threads"] = threads
        doc.update(info)
        doc["modes"] = []
        for mode in modes:
            if mode.key in skipped:
                log(f"{mode.key}: skipped ({skipped[mode.key]})")
                doc["modes"].append({**asdict(mode), "title": mode.title,
                                     "skipped": skipped[mode.key]})
                continue
            log(f"{mode.key}: {mode.title}, batch {mode.batch}, {mode.image_size}x{mode.image_size}")
            entry = run_mode(mode, job, warmup, repeats, macs[mode.image_size], workdir)
            o, b = (entry["results"][i]["ms_per_image"]["median"] for i in IMPLEMENTATIONS)
            log(f"  ours {o:.2f} ms/img, built-in {b:.2f} ms/img, ratio {entry['ratio']:.3f}")
            doc["modes"].append(entry)
    doc["load_average_end"] = list(os.getloadavg())
    doc["duration_s"] = round(time.time() - started, 1)
    return doc


def write_results(doc: dict, out_dir: str | os.PathLike) -> Path:
    """``<variant>.json`` in out_dir, written atomically."""
    path = Path(out_dir) / f"{doc['variant']}.json"
    write_json(path, doc)
    return path


def text_summary(doc: dict) -> str:
    """One line per mode: medians and the ours/built-in ratio."""
    lines = [f"{doc['variant']}, {doc['settings']['threads']} threads "
             f"(ms per image, median of the timed batches)"]
    for m in doc["modes"]:
        if m.get("skipped"):
            lines.append(f"  {m['key']:<22} skipped: {m['skipped']}")
            continue
        o, b = (m["results"][i]["ms_per_image"]["median"] for i in IMPLEMENTATIONS)
        lines.append(f"  {m['key']:<22} ours {o:7.2f}  built-in {b:7.2f}  ratio {m['ratio']:.2f}")
    return "\n".join(lines)


def parse_modes(text: str | None) -> list[Mode]:
    if not text:
        return list(MODES.values())
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODES]
    if unknown:
        raise ValueError(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    return [MODES[k] for k in keys]


HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def main() -> int:
    from agreement import default_reference_dir, int8_agreement, run_agreement
    from peak import peaks
    from report import write_markdown

    from rexnet_plugin.deploy.runtime import bf16_supported
    from rexnet_plugin.zoo import DEFAULT_VARIANT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default=DEFAULT_VARIANT)
    parser.add_argument("--weights")
    parser.add_argument("--modes")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--all", action="store_true", help="also ablation.py and profiles.py")
    args = parser.parse_args()
    command = " ".join(["python benchmarks/run.py", shlex.join(sys.argv[1:])]).strip()

    try:
        modes = parse_modes(args.modes)
    except ValueError as error:
        parser.error(f"--modes: {error}")
    doc = run_benchmark(args.variant, args.weights, modes, warmup=args.warmup,
                        repeats=args.repeats, threads=args.threads, command=command)
    doc["peak"] = peaks(doc["settings"]["threads"])
    reference = default_reference_dir()
    if reference is not None and any(m.get("precision") == "int8" and not m.get("skipped")
                                     for m in doc["modes"]):
        print(f"int8 vs fp32 top-1 agreement (reference vectors in {reference}, sample photos)")
        doc["int8_agreement"] = int8_agreement(reference, doc["settings"]["threads"])
    if bf16_supported() and reference is not None:
        print(f"bf16 vs fp32 top-1 agreement (reference vectors in {reference}, sample photos)")
        with tempfile.TemporaryDirectory() as logs:
            doc["bf16_agreement"] = run_agreement(reference, doc["settings"]["threads"],
                                                  Path(logs))
    # README.md and docs/ are made from a full run: a --modes run is kept apart.
    out_dir = RESULTS / "partial" if args.modes else RESULTS
    out_dir.mkdir(exist_ok=True)
    for path in (write_results(doc, out_dir), write_markdown(doc, out_dir)):
        print(f"wrote {path}")
    if args.modes:
        print("a --modes run: README.md, docs/ and the committed results are left as they are")
        return 0
    scripts = [ROOT / "scripts" / "update_docs.py"]
    if args.all:
        scripts = [HERE / "ablation.py", HERE / "profiles.py", *scripts]
    for script in scripts:
        code = subprocess.call([sys.executable, str(script)])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
