"""Rerun the side-by-side benchmark and regenerate everything made from it.

    python benchmarks/run.py                # every mode, default settings
    python benchmarks/run.py --repeats 50   # any `rexnet-plugin bench` option
    python benchmarks/run.py --all          # also ablation.py and profiles.py
    python benchmarks/run.py --modes onnxruntime_int8_b1   # some modes only: written to
                                            # results/partial/, the docs left alone

Runs the measurement (rexnet_plugin/deploy/bench.py, the same as
`rexnet-plugin bench`), adds the machine's peak rates (peak.py) and the
bf16 and int8 agreement on real inputs (agreement.py), writes benchmarks/results/<variant>.json and .md
(report.py), then regenerates the generated sections of the README and
docs/ (scripts/update_docs.py), whose speed tables are made from that JSON.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def main() -> int:
    from agreement import default_reference_dir, int8_agreement, run_agreement
    from peak import peaks
    from report import write_markdown

    from rexnet_plugin.deploy.bench import parse_modes, run_benchmark, write_results
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
