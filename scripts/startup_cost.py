"""What the autoload .pth adds to interpreter start-up: python scripts/startup_cost.py

Runs ``python -c pass`` many times, alternating the hook on (default) and
off (REXNET_PLUGIN_AUTOLOAD=0: the .pth line then imports nothing), and
prints the medians; then ``python -X importtime -c pass`` for the import
cost of the hook's modules alone, which the noise of whole start-ups hides.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time


def start_once(env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t0


def import_times(env: dict) -> dict[str, int]:
    """Cumulative microseconds per rexnet_plugin module, from -X importtime."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=env,
                         check=True, capture_output=True, text=True).stderr
    found = {}
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(\S+)", line)
        if m and m.group(3).startswith("rexnet_plugin"):
            found[m.group(3)] = int(m.group(2))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="start-ups per setting")
    args = parser.parse_args()

    on = {k: v for k, v in os.environ.items() if k != "REXNET_PLUGIN_AUTOLOAD"}
    on.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with cached bytecode, as users run
    off = dict(on, REXNET_PLUGIN_AUTOLOAD="0")
    start_once(on)  # write the bytecode caches
    times = {"hook on": [], "hook off": []}
    for _ in range(args.runs):
        times["hook on"].append(start_once(on))
        times["hook off"].append(start_once(off))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"python -c pass, median of {args.runs} alternating runs ({sys.executable}):")
    for k, v in med.items():
        print(f"  {k:9s} {v:7.2f} ms")
    print(f"  difference {med['hook on'] - med['hook off']:+.2f} ms (noisy: whole start-ups)")
    imports = [import_times(on) for _ in range(min(args.runs, 20))]
    autoload = "rexnet_plugin.integrations.autoload"
    if all(autoload in i for i in imports):
        cost = statistics.median(i[autoload] for i in imports) / 1e3
        print(f"  import of the hook's modules (-X importtime, cumulative, median): {cost:.2f} ms")
    else:
        print("  the hook's modules were not imported: is rexnet-plugin installed?")
    return 0


if __name__ == "__main__":
    sys.exit(main())
