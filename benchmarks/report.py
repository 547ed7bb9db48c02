"""Reports of the side-by-side benchmark: markdown from its JSON document.

``benchmarks/run.py`` writes ``results/<variant>.md`` with these; the
README's and docs' speed sections are made from the same JSON
(``scripts/update_docs.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

from rexnet_plugin.files import write_text


def _ms(stats: dict) -> str:
    m = stats["ms_per_image"]
    return f"{m['median']:.2f} ({m['q1']:.2f}–{m['q3']:.2f})"


def _rss(stats: dict) -> str:
    return f"{stats['peak_rss_mb']:.0f} (+{stats['peak_growth_mb']:.0f})"


def markdown_table(doc: dict) -> str:
    """The speed table (one row per mode), from a result document."""
    rows = ["| Mode | Batch | Input | ours ms/img (IQR) | built-in ms/img (IQR) | ours / built-in "
            "| ours img/s | built-in img/s | ours GFLOP/s | peak RSS (growth) ours / built-in, MB |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for m in doc["modes"]:
        size = f"{m['image_size']}²"
        if m.get("skipped"):
            rows.append(f"| {m['title']} | {m['batch']} | {size} | skipped: {m['skipped']} "
                        f"| | | | | | |")
            continue
        o, b = m["results"]["ours"], m["results"]["builtin"]
        goal = "" if m["goal"] is None else f" (goal ≤ {m['goal']:.2f})"
        rows.append(
            f"| {m['title']} | {m['batch']} | {size} | {_ms(o)} | {_ms(b)} | **{m['ratio']:.2f}**{goal} "
            f"| {o['images_per_s']:.1f} | {b['images_per_s']:.1f} | {o['gflop_per_s']:.1f} "
            f"| {_rss(o)} / {_rss(b)} |")
    return "\n".join(rows)


def cpu_table(doc: dict) -> str:
    """CPU time and page faults: less sensitive to other processes than wall time."""
    rows = ["| Mode | Batch | ours CPU ms/img | built-in CPU ms/img | CPU ratio "
            "| ours page faults/batch | built-in page faults/batch |", "|---|---|---|---|---|---|---|"]
    for m in doc["modes"]:
        if m.get("skipped"):
            continue
        o, b = m["results"]["ours"], m["results"]["builtin"]
        rows.append(f"| {m['title']} | {m['batch']} | {o['cpu_ms_per_image']:.2f} "
                    f"| {b['cpu_ms_per_image']:.2f} | {o['cpu_ms_per_image'] / b['cpu_ms_per_image']:.2f} "
                    f"| {o['page_faults_per_batch']:.0f} | {b['page_faults_per_batch']:.0f} |")
    return "\n".join(rows)


def bf16_summary(doc: dict) -> str:
    """bf16 against fp32: speed (ours) and top-1 agreement."""
    by_key = {m["key"]: m for m in doc["modes"] if not m.get("skipped")}
    lines = []
    for batch in (1, 8):
        fp32, bf16 = by_key.get(f"paddle_fp32_b{batch}"), by_key.get(f"paddle_bf16_b{batch}")
        if fp32 and bf16:
            f = fp32["results"]["ours"]["ms_per_image"]["median"]
            h = bf16["results"]["ours"]["ms_per_image"]["median"]
            lines.append(f"- batch {batch}: bf16 takes {h / f:.2f}x the fp32 time "
                         f"({h:.2f} vs {f:.2f} ms/img, ours).")
    for row in doc.get("bf16_agreement", []):
        for label, key in (("its test-vector inputs", "reference_inputs"),
                           ("the sample photos", "sample_photos")):
            a = row[key]
            flips = ("" if a["largest_flipped_margin"] is None else
                     f"; the flipped ones had fp32 top-1/top-2 margins of at most "
                     f"{a['largest_flipped_margin']:.3f} (median margin {a['median_fp32_margin']:.3f})")
            lines.append(f"- `{row['variant']}` with {row['weights']}, {label}: top-1 agrees on "
                         f"{a['top1_agree']}/{a['images']} ({a['distinct_fp32_top1']} distinct fp32 "
                         f"classes){flips}; max |logit diff| {a['max_abs_logit_diff']:.3f} for a "
                         f"logit range of {a['fp32_logit_range']:.1f}.")
    return "\n".join(lines)


def int8_summary(doc: dict) -> str:
    """int8 (ours, quantized) against the built-in's fp32 Paddle Inference, and agreement."""
    lines = []
    for m in doc["modes"]:
        if m.get("skipped") or m.get("precision") != "int8" \
                or m.get("builtin_runtime") != "paddle_inference":
            continue
        o, b = (m["results"][i]["ms_per_image"]["median"] for i in ("ours", "builtin"))
        met = "met" if m["goal_met"] else "not met"
        lines.append(f"- batch {m['batch']}: int8 {o:.2f} ms/img against the built-in's fp32 "
                     f"Paddle Inference {b:.2f} ms/img: **{m['ratio']:.2f}x** the built-in's "
                     f"latency (goal ≤ {m['goal']:.2f}: {met}).")
    for row in doc.get("int8_agreement", []):
        a = row["sample_photos"]
        lines.append(f"- `{row['variant']}` with {row['weights']}, the sample photos (int8 "
                     f"calibrated on {row['calibration']}): top-1 agrees with fp32 on "
                     f"{a['top1_agree']}/{a['images']} ({a['distinct_fp32_top1']} distinct fp32 "
                     f"classes; median fp32 top-1/top-2 margin {a['median_fp32_margin']:.2f}); "
                     f"max |logit diff| {a['max_abs_logit_diff']:.2f} for a logit range of "
                     f"{a['fp32_logit_range']:.1f}.")
    return "\n".join(lines)


RUNTIME_NAMES = {"paddle_inference": "Paddle Inference oneDNN", "onnxruntime": "ONNX Runtime",
                 "openvino": "OpenVINO"}


def _runs(doc: dict):
    """(batch, label, precision, stats, mode) of every exported-model run."""
    for m in doc["modes"]:
        if m.get("skipped") or m["runtime"] not in RUNTIME_NAMES:
            continue
        yield m["batch"], f"ours, {RUNTIME_NAMES[m['runtime']]} {m['precision']}", \
            m["precision"], m["results"]["ours"], m
        builtin_runtime = m.get("builtin_runtime") or m["runtime"]
        builtin_precision = m.get("builtin_precision", "fp32") if m.get("builtin_runtime") \
            else m["precision"]
        if builtin_precision == "default":
            builtin_precision = "defaults"
        yield m["batch"], f"built-in, {RUNTIME_NAMES[builtin_runtime]} {builtin_precision}", \
            builtin_precision, m["results"]["builtin"], m


def peer_summary(doc: dict) -> str:
    """Each path against the peer, the built-in in OpenVINO with its defaults,
    measured side by side in the same mode; and the fastest path per batch."""
    lines = []
    for batch in sorted({m["batch"] for m in doc["modes"] if m.get("builtin_runtime") == "openvino"}):
        rows = [m for m in doc["modes"] if m.get("builtin_runtime") == "openvino"
                and m["batch"] == batch and not m.get("skipped")]
        if not rows:
            continue
        parts = []
        for m in sorted(rows, key=lambda m: m["ratio"]):
            o, b = (m["results"][i]["ms_per_image"]["median"] for i in ("ours", "builtin"))
            parts.append(f"ours {RUNTIME_NAMES[m['runtime']]} {m['precision']} {o:.2f} vs "
                         f"{b:.2f} ms/img, **{m['ratio']:.2f}x**")
        best = min(rows, key=lambda m: m["ratio"])
        ours_q3 = best["results"]["ours"]["ms_per_image"]["q3"]
        peer_q1 = best["results"]["builtin"]["ms_per_image"]["q1"]
        met = ("not met" if best["ratio"] > 0.5 else
               "met, beyond the spread: ours' upper quartile is within 0.5x the peer's lower one"
               if ours_q3 <= 0.5 * peer_q1 else
               f"met by the medians only; the quartiles ({ours_q3:.2f} ms/img for ours' upper, "
               f"{peer_q1:.2f} for the peer's lower) overlap the goal, so not a firm result")
        peer = [m["results"]["builtin"]["ms_per_image"]["median"] for m in rows]
        lines.append(f"- batch {batch}: " + "; ".join(parts) + f". Fastest: "
                     f"{RUNTIME_NAMES[best['runtime']]} {best['precision']}, {best['ratio']:.2f}x "
                     f"the peer (goal ≤ 0.50: {met}). The peer's own median ranged from "
                     f"{min(peer):.2f} to {max(peer):.2f} ms/img over these modes: the "
                     f"machine's load moved that much within the run.")
    return "\n".join(lines)


def fastest_fp32(doc: dict) -> str:
    """The fastest fp32 runtime per batch size, ours and the built-in's."""
    best = {}
    for batch, label, precision, stats, _ in _runs(doc):
        if precision != "fp32":
            continue
        ms = stats["ms_per_image"]["median"]
        best.setdefault(batch, {})
        best[batch][label] = min(ms, best[batch].get(label, ms))
    lines = []
    for batch in sorted(best):
        ranked = sorted(best[batch].items(), key=lambda kv: kv[1])
        lines.append(f"- batch {batch}: " + "; ".join(
            f"{'**' + label + '**' if i == 0 else label} {ms:.2f} ms/img"
            for i, (label, ms) in enumerate(ranked)))
    return "\n".join(lines)


def limits_table(doc: dict) -> str:
    """Each exported run's conv throughput against the machine's peak (doc["peak"])."""
    peak = doc.get("peak")
    if not peak:
        return ""
    rows = ["| Run | Batch | G(FL)OP/s | measured peak | % of it | nominal peak | % of it |",
            "|---|---|---|---|---|---|---|"]
    seen = set()
    for batch, label, precision, stats, _ in _runs(doc):
        if (batch, label) in seen:  # the peer, timed in several modes: its first
            continue
        seen.add((batch, label))
        key = {"int8": "int8_gop_per_s", "bf16": "bf16_gflop_per_s",
               "defaults": "bf16_gflop_per_s"}.get(precision, "fp32_gflop_per_s")
        if key not in peak["measured"]:  # no bf16 peak measured (or no bf16 here)
            key = "fp32_gflop_per_s"
        measured = peak["measured"][key]["best"]
        nominal = (peak.get("nominal") or {}).get(key)
        rate = stats["gflop_per_s"]
        rows.append(f"| {label} | {batch} | {rate:.0f} | {measured:.0f} | {100 * rate / measured:.0f}% "
                    f"| {'' if nominal is None else f'{nominal:.0f}'} "
                    f"| {'' if nominal is None else f'{100 * rate / nominal:.0f}%'} |")
    kinds = ("int8: ONNX Runtime's MatMulInteger (uint8 x int8); fp32: its fp32 MatMul; "
             "bf16 and OpenVINO's defaults: OpenVINO's MatMul with a bf16 precision hint, "
             "where measured, else the fp32 peak")
    return "\n".join(rows + ["", f"Peaks from `benchmarks/peak.py` in the same run "
                              f"({peak['threads']} threads; measured = best 2048³ matrix product, "
                              f"{kinds}; nominal = {peak['nominal']['assumes'] if peak.get('nominal') else 'n/a'}). "
                              f"Conv work only (2 ops per multiply-accumulate)."])


def machine_text(doc: dict) -> str:
    m = doc["machine"]
    v = m["versions"]
    cores = m["logical_cpus"]
    return (f"{m['cpu_model']}, {cores} logical CPUs ({m['threads_per_core']} thread(s) per core"
            f"{', ' + m['hypervisor'] + ' VM' if m.get('hypervisor') else ''}), L2 {m['l2_cache']}, "
            f"L3 {m['l3_cache']}; flags: {', '.join(m['cpu_flags'])}. PaddlePaddle "
            f"{v['paddlepaddle']}, PaddleClas {v['paddleclas']}, ONNX Runtime {v['onnxruntime']}, "
            f"paddle2onnx {v['paddle2onnx']}, OpenVINO {v.get('openvino')}, Python {m['python']}. {doc['settings']['threads']} "
            f"threads; {doc['settings']['warmup']} warm-up and {doc['settings']['repeats']} timed "
            f"batches per mode and implementation, in alternating turns; load average "
            f"{doc['load_average_start'][0]:.1f} at the start, {doc['load_average_end'][0]:.1f} "
            f"at the end.")


def markdown_report(doc: dict) -> str:
    text = [f"# {doc['variant']}: rexnet-plugin against PaddleClas's built-in ReXNet", "",
            f"Generated by `{doc['command']}` on {doc['created']} ({doc['duration_s']} s). "
            f"Weights: {doc['weights']}; largest output difference between the two models: "
            f"{doc['outputs_max_abs_diff']:.1e}.", "",
            markdown_table(doc), "", "Machine: " + machine_text(doc), "",
            "CPU time of the worker processes (all threads) and minor page faults, per timed "
            "batch (medians):", "", cpu_table(doc), ""]
    bf16 = bf16_summary(doc)
    if bf16:
        text += ["bf16 (opt-in, `precision=\"bf16\"`):", "", bf16, ""]
    int8 = int8_summary(doc)
    if int8:
        text += ["int8 (`rexnet-plugin quantize`, ONNX Runtime):", "", int8, ""]
    fastest = fastest_fp32(doc)
    if fastest:
        text += ["Fastest fp32 runtime per batch size (median ms/img, fastest first):", "",
                 fastest, ""]
    peer = peer_summary(doc)
    if peer:
        text += ["Against the peer, PaddleClas's built-in exported with paddle2onnx and run by "
                 "OpenVINO with its defaults (each ratio from one mode: the two side by side):",
                 "", peer, ""]
    limits = limits_table(doc)
    if limits:
        text += ["Distance to the machine's limit:", "", limits, ""]
    return "\n".join(text)


def write_markdown(doc: dict, out_dir: str | os.PathLike) -> Path:
    path = Path(out_dir) / f"{doc['variant']}.md"
    write_text(path, markdown_report(doc))
    return path
