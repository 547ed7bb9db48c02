"""Run `rexnet-plugin demo` over several seeds and report the spread.

    python scripts/calibrate_demo.py --seeds 0 1 2 3 4            # the default run
    python scripts/calibrate_demo.py --seeds 0 1 2 3 4 --reduced  # the CI test's run

Each seed runs in its own process, as a user would run it; the wall time
is measured around the command and the CPU time (user + system) from the
finished child. The thresholds in the README and in tests/test_demo.py
come from this script's output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reduced_args() -> list[str]:
    """The reduced settings of tests/test_demo.py (REDUCED), as CLI options."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_demo import REDUCED
    return [f"--{key.replace('_', '-')}={value}" for key, value in REDUCED.items()]


def run_one(seed: int, extra: list[str], out: Path) -> dict:
    argv = [sys.executable, "-m", "rexnet_plugin.cli", "demo", "--seed", str(seed),
            "--out", str(out), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"seed {seed} failed ({result.returncode}):\n{result.stdout[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seed": seed, "top1": metrics["top1"], "wall_s": wall, "cpu_s": cpu,
            "epochs": metrics["epochs_completed"],
            "val_top1_per_epoch": [h.get("val_top1") for h in metrics["history"]],
            "agreement": metrics["predictor"]["agreement_with_dygraph"],
            "int8_top1": metrics["int8"].get("top1"),
            "int8_agreement": metrics["int8"].get("agreement_with_fp32")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--reduced", action="store_true",
                        help="the reduced settings of the CI test (tests/test_demo.py)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args, extra = parser.parse_known_args()
    if args.reduced:
        extra = reduced_args() + extra
    print(f"rexnet-plugin demo {' '.join(extra)}  (seeds {args.seeds}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            row = run_one(seed, extra, Path(tmp) / f"seed{seed}")
            rows.append(row)
            int8 = ("" if row["int8_top1"] is None else
                    f" (int8 {100 * row['int8_top1']:.2f}%, "
                    f"{100 * row['int8_agreement']:.2f}% same class as fp32)")
            print(f"seed {seed}: top-1 {100 * row['top1']:.2f}%{int8}, "
                  f"wall {row['wall_s']:.0f} s, "
                  f"CPU {row['cpu_s']:.0f} s, held-out top-1 per epoch "
                  f"{[round(100 * v, 1) for v in row['val_top1_per_epoch'] if v is not None]}",
                  flush=True)
    top1 = [100 * r["top1"] for r in rows]
    wall = [r["wall_s"] for r in rows]
    cpu = [r["cpu_s"] for r in rows]
    print(f"top-1 %: min {min(top1):.2f}, median {statistics.median(top1):.2f}, "
          f"max {max(top1):.2f} over {len(rows)} seeds")
    if all(r["int8_top1"] is not None for r in rows):
        gap = [100 * (r["top1"] - r["int8_top1"]) for r in rows]
        agree = [100 * r["int8_agreement"] for r in rows]
        print(f"fp32 - int8 top-1 (points): min {min(gap):.2f}, max {max(gap):.2f}; int8 "
              f"agreement with fp32 %: min {min(agree):.2f}, median "
              f"{statistics.median(agree):.2f}")
    print(f"wall s: min {min(wall):.0f}, median {statistics.median(wall):.0f}, "
          f"max {max(wall):.0f}; CPU s: median {statistics.median(cpu):.0f}; load average now "
          f"{os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"args": extra, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
