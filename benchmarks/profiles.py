"""Where the time goes, ours against the built-in: python benchmarks/profiles.py

Two profiles, written to benchmarks/results/profile.md:

* Paddle Inference oneDNN fp32: every oneDNN primitive timed by oneDNN
  itself (ONEDNN_VERBOSE), minimum over the timed runs for each primitive,
  summed by kind. Work outside oneDNN primitives (Paddle's per-op dispatch,
  non-oneDNN kernels) is the difference to the run's CPU time.
* The dygraph training step and eval forward: paddle.profiler's operator
  summary, grouped.

Both use 1 thread, so that other processes on a shared machine disturb
them least. They show how much of the time is convolution kernels that the
two implementations share, which bounds the ratio any change to the
model's Python code can reach.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rexnet_plugin.files import write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMPLEMENTATIONS = ("ours", "builtin")


def _build(impl: str):
    import paddle
    from run import builtin_class
    from rexnet_plugin.model import ReXNet
    paddle.seed(0)
    ours = ReXNet()
    if impl == "ours":
        return ours
    builtin = builtin_class()()
    builtin.set_state_dict(ours.state_dict())
    return builtin


# -- Paddle Inference: oneDNN primitives -----------------------------------------------

MARK = "=== timed runs ==="


def _inference_child(model_dir: str, batch: int, runs: int) -> None:
    """Runs in a subprocess with ONEDNN_VERBOSE=1; prints its CPU time per run."""
    import numpy as np
    from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
    predictor = create_predictor(model_dir, threads=1)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype("float32")
    for _ in range(5):
        run_predictor(predictor, x)
    cpu = []
    print(MARK, flush=True)
    for _ in range(runs):
        start = time.process_time()
        run_predictor(predictor, x)
        cpu.append(time.process_time() - start)
    print(MARK, flush=True)
    print("CPU_MS", 1e3 * min(cpu), flush=True)


def _kind(fields: list[str]) -> str:
    kind, shape = fields[5], fields[-2]
    if kind == "convolution":
        if shape.startswith("g"):
            return "conv depthwise 3x3"
        if "ih1oh1" in shape:
            return "conv on 1x1 maps (SE, classifier)"
        return "conv 1x1 (and the stem)" if "kh1" in shape or "ic3oc" in shape else "conv other"
    if kind == "binary":
        return "elementwise " + next(f for f in fields if f.startswith("alg:"))[len("alg:binary_"):]
    return kind


def inference_profile(model_dir: Path, batch: int, runs: int) -> dict:
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", str(model_dir), str(batch), str(runs)],
                         capture_output=True, text=True, env=env, check=True).stdout
    timed = out.split(MARK)[1].splitlines()
    cpu_ms = float(out.rsplit("CPU_MS", 1)[1])
    execs = [line.split(",") for line in timed if line.startswith("onednn_verbose,v1,primitive,exec")]
    per_run = len(execs) // runs
    totals, counts = collections.defaultdict(float), collections.Counter()
    for i in range(per_run):
        fields = execs[i]
        fastest = min(float(execs[r * per_run + i][-1]) for r in range(runs))
        totals[_kind(fields)] += fastest
        counts[_kind(fields)] += 1
    return {"cpu_ms_per_run": cpu_ms, "primitives_per_run": per_run,
            "by_kind_ms": dict(totals), "counts": dict(counts)}


# -- dygraph training step ------------------------------------------------------------------

GROUPS = (("depthwise conv", ("depthwise_conv2d",)), ("conv", ("conv2d",)),
          ("batch norm", ("batch_norm",)), ("activation", ("silu", "swish", "relu6", "relu", "sigmoid")),
          ("shortcut", ("split", "concat", "slice", "set_value", "add")),
          ("SE scale and pooling", ("multiply", "pool2d")))


def _group(name: str) -> str:
    op = name.replace("Global_", "").replace("GradNode", "").replace("Final", "").replace(" dygraph", "")
    op = "".join("_" + c.lower() if c.isupper() else c for c in op).lstrip("_")
    for group, ops in GROUPS:
        if any(op == o or op.startswith(o + "_") for o in ops):
            return group
    return "other (optimizer, loss, reshape ...)"


def dygraph_profile(impl: str, train: bool, steps: int) -> dict:
    """Training step (batch 16, 160x160) or eval forward (batch 8, 224x224)."""
    import numpy as np
    import paddle
    import paddle.nn.functional as F
    import paddle.profiler as profiler
    model = _build(impl)
    rng = np.random.default_rng(0)
    if train:
        model.train()
        x = paddle.to_tensor(rng.standard_normal((16, 3, 160, 160)).astype("float32"))
        y = paddle.to_tensor(rng.integers(0, 1000, (16,)))
        opt = paddle.optimizer.Momentum(0.01, 0.9, parameters=model.parameters())

        def step():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
    else:
        model.eval()
        x = paddle.to_tensor(rng.standard_normal((8, 3, 224, 224)).astype("float32"))

        def step():
            with paddle.no_grad():
                model(x)
    for _ in range(2):
        step()
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                             on_trace_ready=lambda _: None)  # no trace files
    prof.start()
    for _ in range(steps):
        step()
        prof.step()
    prof.stop()
    totals = collections.defaultdict(float)
    # Operator view: forward kernels ("conv2d dygraph") and grad nodes, each once.
    from paddle.profiler.profiler_statistic import StatisticData
    stats = StatisticData(prof.profiler_result.get_data(), prof.profiler_result.get_extra_info())
    for name, item in stats.event_summary.items.items():
        totals[_group(name)] += item.cpu_time / 1e6 / steps  # ns -> ms per step
    return {"ms_per_step": dict(totals)}


def _table(rows: dict[str, dict[str, float]], unit: str) -> list[str]:
    kinds = sorted({k for r in rows.values() for k in r}, key=lambda k: -rows["builtin"].get(k, 0))
    lines = [f"| | ours {unit} | built-in {unit} | ours share | built-in share |",
             "|---|---|---|---|---|"]
    total_o, total_b = sum(rows["ours"].values()), sum(rows["builtin"].values())
    for k in kinds:
        o, b = rows["ours"].get(k, 0.0), rows["builtin"].get(k, 0.0)
        lines.append(f"| {k} | {o:.2f} | {b:.2f} | {o / total_o:.0%} | {b / total_b:.0%} |")
    lines.append(f"| **sum** | {total_o:.2f} | {total_b:.2f} | | |")
    return lines


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _inference_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed inference runs")
    parser.add_argument("--steps", type=int, default=3, help="profiled training steps")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    from rexnet_plugin.deploy.export import export_inference
    doc = {"command": "python benchmarks/profiles.py " + " ".join(sys.argv[1:]), "inference": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for impl in IMPLEMENTATIONS:
            export_inference(_build(impl), Path(tmp) / impl, 224)
        for batch in (1, 8):
            doc["inference"][batch] = {impl: inference_profile(Path(tmp) / impl, batch, args.runs)
                                       for impl in IMPLEMENTATIONS}
    doc["train"] = {impl: dygraph_profile(impl, True, args.steps) for impl in IMPLEMENTATIONS}
    doc["eval"] = {impl: dygraph_profile(impl, False, args.steps) for impl in IMPLEMENTATIONS}

    lines = ["# Profiles: where ours and the built-in spend their time", "",
             f"Generated by `{doc['command'].strip()}`, 1 thread, same weights. The two "
             f"columns of a table were measured one after the other, not interleaved, so "
             f"on a busy machine compare the shares; `benchmarks/run.py` gives the ratios.", ""]
    for batch, rows in doc["inference"].items():
        prims = {impl: r["by_kind_ms"] for impl, r in rows.items()}
        for impl, r in rows.items():
            prims[impl]["outside oneDNN primitives (dispatch, other kernels)"] = max(
                0.0, r["cpu_ms_per_run"] - sum(r["by_kind_ms"].values()))
        lines += [f"## Paddle Inference oneDNN fp32, batch {batch}, ms per run", "",
                  f"Fastest of {args.runs} runs per primitive; the last row is the run's CPU "
                  f"time minus the primitives. Primitives per run: ours "
                  f"{rows['ours']['primitives_per_run']}, built-in {rows['builtin']['primitives_per_run']}.",
                  "", *_table(prims, "ms"), ""]
    for key, title in (("train", "Dygraph training step (batch 16, 160x160)"),
                       ("eval", "Dygraph eval forward (batch 8, 224x224)")):
        lines += [f"## {title}, ms per step", "",
                  f"paddle.profiler operator summary over {args.steps} steps, forward kernels "
                  f"and grad nodes, grouped.", "",
                  *_table({impl: r["ms_per_step"] for impl, r in doc[key].items()}, "ms"), ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for path, text in ((RESULTS / "profile.json", json.dumps(doc, indent=1) + "\n"),
                       (RESULTS / "profile.md", "\n".join(lines))):
        write_text(path, text)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
