"""Markdown tables computed from the variant table, the built models and the
committed benchmark results: the generated sections of README.md and docs/.

scripts/update_docs.py writes them; tests/test_docs.py checks that they are
current. A development tool: the package never imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from rexnet_plugin.complexity import count_conv_macs, count_params
from rexnet_plugin.factories import create_model
from rexnet_plugin.zoo import (DEFAULT_VARIANT, EVAL_TRANSFORM, KINDS, PUBLISHERS, SOURCE_NAMES,
                               VARIANTS)

ROOT = Path(__file__).resolve().parents[1]


def _fmt(value, spec="{:.2f}"):
    return "—" if value is None else spec.format(value)


def variants_table() -> str:
    """Every variant with params and MACs measured on the built model."""
    rows = ["| Variant | Kind | Width | Params (M) | MACs @224 (G) | Paper top-1 | Paper top-5 |",
            "|---|---|---|---|---|---|---|"]
    for name, v in VARIANTS.items():
        model = create_model(name)
        macs = count_conv_macs(model, 224)["total"]
        rows.append(f"| `{name}` | {KINDS[v.kind]} | {v.width_mult} | "
                    f"{count_params(model) / 1e6:.2f} | {macs / 1e9:.3f} | "
                    f"{_fmt(v.paper_top1, '{:.1f}')} | {_fmt(v.paper_top5, '{:.1f}')} |")
    return "\n".join(rows)


def published_accuracy_table() -> str:
    """Accuracy each publisher reports for its own weight files, with the test
    size and crop_pct; the first row of a file is at the variant's eval transform."""
    rows = ["| Variant | Source | Test size (crop_pct) | top-1 | top-5 |",
            "|---|---|---|---|---|"]
    for name, v in VARIANTS.items():
        for source, w in v.weights.items():
            for acc in w.accuracy:
                rows.append(f"| `{name}` | {source} | {acc.image_size} ({acc.crop_pct:.3f}) | "
                            f"{_fmt(acc.top1)} | {_fmt(acc.top5)} |")
    return "\n".join(rows)


def weight_sources_table() -> str:
    """Each publisher of weights: what it serves, how it downloads, its licence."""
    rows = ["| `pretrained=` | Publisher | Variants | Classes | Layout, format | Download | "
            "Licence (as published) | Accuracy measured with |",
            "|---|---|---|---|---|---|---|---|"]
    pairs = dict.fromkeys((s, w.publisher) for v in VARIANTS.values() for s, w in v.weights.items())
    for source, publisher in sorted(pairs, key=lambda pair: SOURCE_NAMES.index(pair[0])):
        p = PUBLISHERS[publisher]
        files = {n: v.weights[source] for n, v in VARIANTS.items()
                 if source in v.weights and v.weights[source].publisher == publisher}
        layouts = sorted({w.layout for w in files.values()})
        formats = sorted({w.filename.rsplit(".", 1)[-1] for w in files.values()})
        manual = any(w.manual for w in files.values())
        classes = ", ".join(f"{c:,}" for c in sorted({w.class_num for w in files.values()}))
        rows.append(
            f"| `\"{source}\"` | [{p.title}]({p.home}) | {', '.join(f'`{n}`' for n in files)} | "
            f"{classes} | "
            f"{', '.join(layouts)}; {', '.join('.' + f for f in formats)} | "
            f"{'by hand (Google Drive needs a browser)' if manual else 'automatic'} | "
            f"{p.license} ({p.license_where}) | {p.accuracy_measured_with} |")
    return "\n".join(rows)


def weight_files_table() -> str:
    """Every published file, per variant and source, linked."""
    sources = list(SOURCE_NAMES)
    rows = ["| Variant | " + " | ".join(f"`{s}`" for s in sources) + " |",
            "|---|" + "---|" * len(sources)]
    for name, v in VARIANTS.items():
        cells = []
        for s in sources:
            w = v.weights.get(s)
            cells.append("—" if w is None else f"[{w.filename}]({w.url})")
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def feature_channels_table() -> str:
    """Channels of the stage outputs at each stride, for detection necks."""
    strides = (4, 8, 16, 32)
    rows = ["| Variant | " + " | ".join(f"stride {s}" for s in strides) + " | head |",
            "|---|" + "---|" * (len(strides) + 1)]
    for name in VARIANTS:
        model = create_model(name, class_num=0)
        channels = {i["reduction"]: i["num_chs"] for i in model.feature_info}
        rows.append(f"| `{name}` | " + " | ".join(str(channels[s]) for s in strides)
                    + f" | {model.num_features} |")
    return "\n".join(rows)


# PaddleClas's own ReXNet configs (ppcls/configs/ImageNet/ReXNet/ReXNet_*.yaml,
# PaddleClas 2.6 / develop), for the README's comparison.
_PADDLECLAS_BUILTIN_RECIPE = {
    "epochs": "120",
    "schedule": "Piecewise: 0.1, /10 at epochs 30, 60, 90",
    "optimizer": "Momentum 0.9",
    "weight decay": "L2 1e-4 on every tensor",
    "label smoothing": "none",
    "train augmentation": "RandCropImage (cv2, bilinear), flip",
    "batch": "64 per GPU x 4",
    "eval transform": "ResizeImage 256 (cv2, bilinear), CropImage 224",
}


def ppcls_recipe_table() -> str:
    """The shipped configs' training recipe next to PaddleClas's built-in one."""
    c = yaml.safe_load((ROOT / "ppcls_configs" / "ReXNet_1_5.yaml").read_text())
    opt, lr = c["Optimizer"], c["Optimizer"]["lr"]
    train = c["DataLoader"]["Train"]
    ops = {next(iter(op)): op[next(iter(op))] for op in train["dataset"]["transform_ops"]}
    t = EVAL_TRANSFORM
    ours = {
        "epochs": f"{c['Global']['epochs']}",
        "schedule": f"{lr['name']}: {_number(lr['learning_rate'])}, {lr['warmup_epoch']} warm-up "
                    f"epochs from {_number(lr['warmup_start_lr'])}, down to {_number(lr['eta_min'])}",
        "optimizer": f"{opt['name']} {opt['momentum']}" + (", Nesterov" if opt["use_nesterov"] else ""),
        "weight decay": f"{opt['regularizer']['name']} {_number(opt['regularizer']['coeff'])} "
                        f"on every tensor (see below)",
        "label smoothing": f"{c['Loss']['Train'][0]['CELoss']['epsilon']}",
        "train augmentation": (
            f"RandCropImage (PIL, bilinear/bicubic at random), flip, RandAugment "
            f"{ops['TimmAutoAugment']['config_str']}, random erasing "
            f"p={ops['RandomErasing']['EPSILON']} ({ops['RandomErasing']['mode']})"),
        "batch": f"{train['sampler']['batch_size']} per GPU x 4",
        "eval transform": f"Resize {t.resize_short} (PIL, {t.interpolation}), CenterCrop {t.crop_size}",
    }
    official = {
        "epochs": "`--epochs 400` (+10 cool-down epochs in timm)",
        "schedule": "`--lr 0.5 --sched cosine` for 512 images; timm's warm-up 3 epochs from 1e-4, min 1e-5",
        "optimizer": "`--opt sgd` (timm: momentum 0.9, Nesterov)",
        "weight decay": "`--weight-decay 1e-5`; timm skips biases and BN",
        "label smoothing": "timm default 0.1",
        "train augmentation": "timm defaults + `--aa rand-m9-mstd0.5 --reprob 0.2 --remode pixel`",
        "batch": "`--batch-size 128` x 4 GPUs",
        "eval transform": "PPIM's: PIL bicubic 256, center crop 224",
    }
    rows = ["| | rexnet-plugin's `ppcls_configs/` | official recipe (source) | PaddleClas's built-in configs |",
            "|---|---|---|---|"]
    for key, value in ours.items():
        rows.append(f"| {key} | {value} | {official[key]} | {_PADDLECLAS_BUILTIN_RECIPE[key]} |")
    return "\n".join(rows)


def _number(value: float) -> str:
    """Plain decimal, as the configs write it."""
    return f"{value:.12f}".rstrip("0").rstrip(".")


def speed_section() -> str:
    """The speed table and its context, from the committed benchmark JSON."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import (bf16_summary, fastest_fp32, int8_summary, limits_table, machine_text,
                        markdown_table, peer_summary)
    path = ROOT / "benchmarks" / "results" / f"{DEFAULT_VARIANT}.json"
    if not path.is_file():
        return f"(no results yet: run `python benchmarks/run.py` to write {path.name})"
    doc = json.loads(path.read_text())
    return "\n".join([
        markdown_table(doc), "",
        f"Command: `{doc['command']}` ({doc['created']}, {doc['duration_s'] / 60:.0f} min). "
        f"Weights: {doc['weights']}.", "",
        "Machine: " + machine_text(doc), "",
        "Against the peer, PaddleClas's built-in exported with paddle2onnx and run by OpenVINO "
        "with its defaults (each ratio from one mode: the two side by side):", "",
        peer_summary(doc) or "(no OpenVINO rows in this run)", "",
        "int8 (`rexnet-plugin quantize`, ONNX Runtime) against the built-in's fp32 Paddle "
        "Inference:", "", int8_summary(doc) or "(no int8 rows in this run)", "",
        "Fastest fp32 runtime per batch size (median ms/img, fastest first):", "",
        fastest_fp32(doc), "",
        "Distance to the machine's limit:", "", limits_table(doc) or "(no peak in this run)", "",
        "bf16 against fp32:", "", bf16_summary(doc)])


def speed_summary() -> str:
    """The README's lines on int8 and bf16, from the committed benchmark JSON."""
    path = ROOT / "benchmarks" / "results" / f"{DEFAULT_VARIANT}.json"
    if not path.is_file():
        return f"(no results yet: run `python benchmarks/run.py` to write {path.name})"
    doc = json.loads(path.read_text())
    modes = {m["key"]: m for m in doc["modes"] if not m.get("skipped")}
    lines = []
    # The fastest path per batch against the peer (the built-in, OpenVINO defaults).
    peer = [m for m in modes.values() if m.get("builtin_runtime") == "openvino"]
    best = {b: min((m for m in peer if m["batch"] == b), key=lambda m: m["ratio"], default=None)
            for b in (1, 8)}
    if all(best.values()):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from report import RUNTIME_NAMES as names
        lines.append(
            f"Against PaddleClas's built-in ReXNet exported to ONNX and run by OpenVINO with "
            f"its defaults (what a CPU user would pick), same run: our fastest path took "
            + " and ".join(f"{best[b]['ratio']:.2f}x (batch {b}, {names[best[b]['runtime']]} "
                           f"{best[b]['precision']})" for b in (1, 8))
            + f" of its latency (goal: 0.5x; load average {doc['load_average_start'][0]:.1f} "
            f"to {doc['load_average_end'][0]:.1f} on the 2 cores during the run: the ratios move "
            f"with the load; docs/speed.md).")
    int8 = [modes.get(f"onnxruntime_int8_b{b}") for b in (1, 8)]
    if all(int8):
        lines.append(
            f"Measured ({DEFAULT_VARIANT}, 2 shared cores, docs/speed.md): int8 took "
            f"{int8[0]['ratio']:.2f}x (batch 1) and {int8[1]['ratio']:.2f}x (batch 8) the "
            f"latency of PaddleClas's built-in ReXNet in fp32 Paddle Inference, same weights, "
            f"same run (goal: 0.5x; the ratio moves with the machine's load).")
    fp32 = [modes.get(f"paddle_fp32_b{b}") for b in (1, 8)]
    bf16 = [modes.get(f"paddle_bf16_b{b}") for b in (1, 8)]
    if all(fp32) and all(bf16):
        speed = [f["results"]["ours"]["ms_per_image"]["median"]
                 / h["results"]["ours"]["ms_per_image"]["median"] for f, h in zip(fp32, bf16)]
        if speed[1] < 1.5:
            lines.append(
                f"bf16 in Paddle Inference (`--runtime paddle --precision bf16`) is not a "
                f"speed-up: at batch 8 it ran at {speed[1]:.2f}x its own fp32 speed, short of "
                f"the 1.5x that would make it one. It gives fp32's top-1 on most images "
                f"(docs/speed.md) on CPUs with AVX512-BF16; in OpenVINO, bf16 is the peer's "
                f"own default, compared above.")
        else:
            lines.append(f"bf16 (`--precision bf16`, Paddle Inference): {speed[1]:.2f}x its own "
                         f"fp32 speed at batch 8.")
    return "\n".join(lines)


# README section name -> generator. A section is the text between
# "<!-- begin:NAME -->" and "<!-- end:NAME -->".
SECTIONS = {
    "variants": variants_table,
    "published-accuracy": published_accuracy_table,
    "weight-sources": weight_sources_table,
    "weight-files": weight_files_table,
    "feature-channels": feature_channels_table,
    "ppcls-recipe": ppcls_recipe_table,
    "speed": speed_section,
    "speed-summary": speed_summary,
}
