"""Rerun the side-by-side benchmark and regenerate everything made from it.

    python benchmarks/run.py                # every mode, default settings
    python benchmarks/run.py --repeats 50   # any `rexnet-plugin bench` option
    python benchmarks/run.py --all          # also ablation.py and profiles.py

Writes benchmarks/results/<variant>.json and .md (rexnet_plugin/bench.py does
the work), then regenerates the README's generated sections, whose speed
table is made from that JSON (scripts/update_readme.py). With --all, also
reruns benchmarks/ablation.py and benchmarks/profiles.py, whose results the
README and benchmarks/README.md cite.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from rexnet_plugin.cli import main as cli
    argv = sys.argv[1:]
    run_all = "--all" in argv
    argv = [a for a in argv if a != "--all"]
    command = " ".join(["python benchmarks/run.py", shlex.join(argv)]).strip()
    code = cli(["bench", "-o", str(ROOT / "benchmarks" / "results"),
                "--command-line", command, *argv])
    if code:
        return code
    scripts = [ROOT / "scripts" / "update_readme.py"]
    if run_all:
        scripts = [ROOT / "benchmarks" / "ablation.py", ROOT / "benchmarks" / "profiles.py",
                   *scripts]
    for script in scripts:
        code = subprocess.call([sys.executable, str(script)])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
