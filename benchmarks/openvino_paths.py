"""OpenVINO paths tried against the peer: python benchmarks/openvino_paths.py

The peer is PaddleClas's built-in ReXNet, exported with paddle2onnx, in
OpenVINO with its defaults. Each path below runs our export (same weights)
in its own worker process; all are alive at once and take turns of a few
timed batches, in alternating order, so that the machine's load hits all
alike (the same protocol as run.py). Kept paths are
in `python benchmarks/run.py`; this records the ones tried beside them:

* precision: fp32 (f32 hint), bf16 (bf16 hint);
* batch 8 as one request on all threads, or split over one stream per
  thread;
* batch 1 on 1 thread instead of 2;
* our graph with the partial shortcut as Pad + Add (OpenVINO fuses the Add
  into the conv before it) instead of Split, Add and Concat;
* int8: this package's QDQ model (rexnet-plugin quantize, tuned for ONNX
  Runtime), the same quantizer with symmetric int8 activations on the
  convolutions only, and NNCF (nncf.quantize on the OpenVINO model, the
  performance preset, with and without the SiLU/SE Sigmoid and Multiply
  ignored), where nncf is installed.

Also profiles the peer and our bf16 and int8 paths by OpenVINO layer type
(PERF_COUNT): the share of the 1x1 convolutions bounds what int8 can gain.

Writes benchmarks/results/openvino_paths.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BLOCK = 5
PROFILE_KINDS = ("Convolution 1x1", "depthwise Convolution", "Convolution",
                 "other layers (activations, SE, shortcut, reorders, quantize)")
PROFILED = ("peer (built-in, OpenVINO defaults)", "ours bf16", "ours int8 qdq",
            "ours int8 nncf ignore sigmoid multiply")
SETTLE_S = 0.3


# -- a worker: one path in its own process --------------------------------------------------

def worker(spec: dict) -> None:
    """Compile spec's model, then time `n` batches each time a line `n` arrives."""
    import numpy as np
    import openvino as ov
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": spec["threads"], "NUM_STREAMS": spec["streams"],
              **spec["config"]}
    compiled = core.compile_model(spec["model"], "CPU", config)
    requests = [compiled.create_infer_request() for _ in range(spec["streams"])]
    x = np.random.default_rng(0).standard_normal((spec["batch"], 3, 224, 224)).astype("float32")
    parts = np.array_split(x, spec["streams"])

    def run():
        for request, part in zip(requests, parts):
            request.start_async([part])
        for request in requests:
            request.wait()

    for _ in range(spec["warmup"]):
        run()
    print(json.dumps({"precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string()}),
          flush=True)
    for line in sys.stdin:
        run()  # untimed: wakes the threads
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


# -- the models ---------------------------------------------------------------------------

def prepare(workdir: Path) -> dict:
    """Our export, the built-in's, our int8 QDQ and the other int8 variants."""
    from run import MODES, _prepare
    job, _, macs = _prepare("ReXNet_1_0", None, workdir, [MODES["openvino_int8_b1"]])
    files = {"peer": job["onnx_files"]["builtin"], "ours": job["onnx_files"]["ours"],
             "ours_int8_qdq": job["int8_files"]["ours"]}
    files["ours_pad_shortcut"] = _pad_shortcut(files["ours"], workdir / "pad_shortcut.onnx")
    calib = _calibration(workdir / "ours")
    files["ours_int8_qdq_symmetric_conv"] = _qdq_symmetric(files["ours"], calib, workdir)
    try:
        import nncf  # noqa: F401
    except ImportError:
        print("nncf not installed: its rows are skipped (pip install nncf)")
    else:
        files["ours_int8_nncf"] = _nncf(files["ours"], calib, workdir / "nncf.xml", ())
        files["ours_int8_nncf_ignore_sigmoid_multiply"] = _nncf(
            files["ours"], calib, workdir / "nncf_ignored.xml", ("Multiply", "Sigmoid"))
    return {"files": files, "macs": macs[224]}


def _pad_shortcut(fp32: str, out: Path) -> str:
    """Our ONNX with each Split -> Add(head, x) -> Concat(sum, tail) replaced by
    Add(out, Pad(x)): the same numbers (x + 0 on the tail channels)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(fp32)
    graph = model.graph
    source = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def resolve(name):
        while name in source:
            name = source[name]
        return name
    nodes = [n for n in graph.node if n.op_type != "Identity"]
    for n in nodes:
        n.input[:] = [resolve(i) for i in n.input]
    for o in graph.output:  # keep the graph's output names
        if o.name in source:
            nodes.append(helper.make_node("Identity", [resolve(o.name)], [o.name]))
    users = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t)
                      for n in nodes if n.op_type == "Constant"})
    drop, replace = set(), {}
    for split in (n for n in nodes if n.op_type == "Split" and len(n.output) == 2):
        heads, tails = users.get(split.output[0], []), users.get(split.output[1], [])
        if len(heads) != 1 or len(tails) != 1:
            continue
        add, concat = heads[0], tails[0]
        if add.op_type != "Add" or concat.op_type != "Concat" \
                or list(concat.input) != [add.output[0], split.output[1]]:
            continue
        x = next(i for i in add.input if i != split.output[0])
        extra = int(constants[split.input[1]][1])
        pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], "int64"),
                                       f"{split.name}_pads")
        graph.initializer.append(pads)
        padded = f"{split.name}_padded_x"
        replace[id(split)] = [helper.make_node("Pad", [x, pads.name], [padded]),
                              helper.make_node("Add", [split.input[0], padded], [concat.output[0]])]
        drop |= {id(add), id(concat)}
    rewritten = []
    for n in nodes:
        if id(n) not in drop:
            rewritten += replace.get(id(n), [n])
    graph.ClearField("node")
    graph.node.extend(rewritten)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return str(out)


def _calibration(model_dir: Path):
    """The benchmark's calibration images, preprocessed by the folder's inference.yml."""
    from rexnet_plugin.deploy.quantize import calibration_images, load_calibration
    paths = calibration_images(model_dir.parent / "calibration", 32)
    return load_calibration(model_dir, paths, progress=False)


def _qdq_symmetric(fp32: str, calib, workdir: Path) -> str:
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from rexnet_plugin.deploy.quantize import Batches
    prepared, out = workdir / "prepared.onnx", workdir / "qdq_symmetric.onnx"
    quant_pre_process(fp32, str(prepared), skip_symbolic_shape=True)
    name = onnx.load(str(prepared)).graph.input[0].name
    quantize_static(str(prepared), str(out), Batches(name, calib),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": True})
    return str(out)


def _nncf(fp32: str, calib, out: Path, ignored_types: tuple) -> str:
    import nncf
    import openvino as ov
    model = ov.Core().read_model(fp32)
    scope = nncf.IgnoredScope(types=list(ignored_types)) if ignored_types else None
    quantized = nncf.quantize(model, nncf.Dataset([x[None] for x in calib]),
                              preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(calib), ignored_scope=scope)
    ov.save_model(quantized, str(out))
    return str(out)


def paths(files: dict, batch: int, threads: int) -> dict:
    """name -> worker spec, for one batch size."""
    def spec(model, config=None, streams=1, path_threads=threads):
        return {"model": files[model], "batch": batch, "threads": path_threads,
                "streams": streams, "config": config or {}}
    split = threads if batch >= threads else 1
    f32, bf16 = {"INFERENCE_PRECISION_HINT": "f32"}, {"INFERENCE_PRECISION_HINT": "bf16"}
    out = {"peer (built-in, OpenVINO defaults)": spec("peer"),
           "ours fp32": spec("ours", f32, split),
           "ours bf16": spec("ours", bf16, split),
           "ours bf16, shortcut as Pad + Add": spec("ours_pad_shortcut", bf16, split)}
    if split > 1:
        out["ours fp32, one stream"] = spec("ours", f32)
        out["ours bf16, one stream"] = spec("ours", bf16)
    else:
        out["ours bf16, 1 thread"] = spec("ours", bf16, path_threads=1)
    for name in files:
        if name.startswith("ours_int8"):
            out[name.replace("_", " ")] = spec(name, f32, split)
    out["ours int8 nncf, bf16 float parts"] = spec("ours_int8_nncf", bf16, split) \
        if "ours_int8_nncf" in files else None
    return {k: v for k, v in out.items() if v}


def profile(spec: dict, runs: int = 10) -> dict:
    """Share of the run per kind of layer (OpenVINO's per-layer counters)."""
    import numpy as np
    import openvino as ov
    config = {"INFERENCE_NUM_THREADS": spec["threads"], "NUM_STREAMS": 1, "PERF_COUNT": True,
              **spec["config"]}
    request = ov.Core().compile_model(spec["model"], "CPU", config).create_infer_request()
    x = np.random.default_rng(0).standard_normal((spec["batch"], 3, 224, 224)).astype("float32")
    for _ in range(3):
        request.infer([x])
    totals = {}
    for _ in range(runs):
        request.infer([x])
        for layer in request.profiling_info:
            kind = layer.node_type
            if kind == "Convolution" and "1x1" in layer.exec_type:
                kind = "Convolution 1x1"
            elif kind == "GroupConvolution":
                kind = "depthwise Convolution"
            elif kind not in ("Convolution",):
                kind = "other layers (activations, SE, shortcut, reorders, quantize)"
            totals[kind] = totals.get(kind, 0.0) + layer.real_time.total_seconds()
    whole = sum(totals.values())
    return {kind: t / whole for kind, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def measure(specs: dict, warmup: int, repeats: int) -> dict:
    """Median ms/img per path, all workers alive, alternating turns."""
    procs = {}
    try:
        for name, spec in specs.items():
            procs[name] = subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps({**spec, "warmup": warmup})],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        precision = {name: json.loads(p.stdout.readline())["precision"]
                     for name, p in procs.items()}
        samples = {name: [] for name in procs}
        names = list(procs)
        for turn in range(-(-repeats // BLOCK)):
            for name in names if turn % 2 == 0 else names[::-1]:
                time.sleep(SETTLE_S)
                procs[name].stdin.write(f"{min(BLOCK, repeats - turn * BLOCK)}\n")
                procs[name].stdin.flush()
                samples[name] += json.loads(procs[name].stdout.readline())
    finally:
        for p in procs.values():
            if p.stdin:
                p.stdin.close()
            p.wait(timeout=60)
    out = {}
    for name, spec in specs.items():
        per_image = [1e3 * t / spec["batch"] for t in samples[name]]
        out[name] = {"ms_per_image": statistics.median(per_image),
                     "q1": statistics.quantiles(per_image, n=4)[0],
                     "q3": statistics.quantiles(per_image, n=4)[2],
                     "inference_precision": precision[name],
                     "threads": spec["threads"], "streams": spec["streams"]}
    return out


def markdown(doc: dict) -> str:
    lines = ["# OpenVINO paths for ReXNet_1_0 at 224, against the peer", "",
             f"Generated by `{doc['command']}` on {doc['created']} ({doc['duration_s']} s); "
             f"load average {doc['load_average_start'][0]:.1f} at the start, "
             f"{doc['load_average_end'][0]:.1f} at the end (2 cores shared with other work: "
             f"compare the ratios, not the milliseconds). {doc['repeats']} timed batches per "
             f"path, in alternating turns of {BLOCK}; each path in its own process.", ""]
    for batch, rows in doc["batches"].items():
        peer = next(r for n, r in rows.items() if n.startswith("peer"))["ms_per_image"]
        lines += [f"## Batch {batch}", "",
                  "| Path | runs in | threads / streams | ms/img (IQR) | / peer | GFLOP/s |",
                  "|---|---|---|---|---|---|"]
        for name, r in sorted(rows.items(), key=lambda kv: kv[1]["ms_per_image"]):
            rate = 2 * doc["macs_per_image"] / r["ms_per_image"] / 1e6
            lines.append(f"| {name} | {r['inference_precision']} | {r['threads']} / "
                         f"{r['streams']} | {r['ms_per_image']:.2f} ({r['q1']:.2f}–{r['q3']:.2f}) "
                         f"| **{r['ms_per_image'] / peer:.2f}** | {rate:.0f} |")
        lines.append("")
    lines += ["## Where the time goes (OpenVINO's per-layer counters, batch 1 and 8)", "",
              "| Path | Batch | " + " | ".join(PROFILE_KINDS) + " |",
              "|---|---|" + "---|" * len(PROFILE_KINDS)]
    for name, shares in doc["profiles"].items():
        path, batch = name.rsplit(" @ batch ", 1)
        lines.append(f"| {path} | {batch} | "
                     + " | ".join(f"{100 * shares.get(k, 0):.0f}%" for k in PROFILE_KINDS) + " |")
    return "\n".join(lines + [""])


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    from rexnet_plugin.files import write_json, write_text
    started = time.time()
    doc = {"command": "python benchmarks/openvino_paths.py " + " ".join(sys.argv[1:]),
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "load_average_start": list(os.getloadavg()), "repeats": args.repeats,
           "threads": args.threads, "batches": {}}
    with tempfile.TemporaryDirectory(prefix="rexnet-ov-paths-") as tmp:
        prepared = prepare(Path(tmp))
        doc["macs_per_image"] = prepared["macs"]
        for batch in (1, 8):
            print(f"batch {batch}")
            doc["batches"][batch] = measure(paths(prepared["files"], batch, args.threads),
                                            args.warmup, args.repeats)
            for name, r in doc["batches"][batch].items():
                print(f"  {name:45s} {r['ms_per_image']:7.2f} ms/img ({r['inference_precision']})")
        doc["profiles"] = {}
        for batch in (1, 8):
            specs = paths(prepared["files"], batch, args.threads)
            for name in PROFILED:
                if name in specs:
                    doc["profiles"][f"{name} @ batch {batch}"] = profile(specs[name])
    doc["load_average_end"] = list(os.getloadavg())
    doc["duration_s"] = round(time.time() - started, 1)
    write_json(RESULTS / "openvino_paths.json", doc)
    write_text(RESULTS / "openvino_paths.md", markdown(doc))
    print(f"wrote {RESULTS / 'openvino_paths.md'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
