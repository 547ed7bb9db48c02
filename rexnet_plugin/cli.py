"""The ``rexnet-plugin`` command: argparse wiring; the work lives in the modules."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` cleans up."""


def _raise_terminated(signum, frame):
    raise Terminated


def _run_from_args(module: str):
    """A command whose module checks its own arguments (predict, demo)."""
    return lambda args: importlib.import_module(module, __package__).run_from_args(args)


def _variants(args) -> int:
    from .complexity import count_conv_macs, count_params
    from .factories import create_model
    from .zoo import VARIANTS
    print(f"{'variant':<16}{'kind':<6}{'width':>6}{'params (M)':>12}{'MACs@224 (G)':>14}"
          f"{'paper top-1':>13}  published weights")
    for name, v in VARIANTS.items():
        model = create_model(name)
        top1 = "-" if v.paper_top1 is None else f"{v.paper_top1:.1f}"
        print(f"{name:<16}{v.kind:<6}{v.width_mult:>6}{count_params(model) / 1e6:>12.2f}"
              f"{count_conv_macs(model)['total'] / 1e9:>14.3f}{top1:>13}  "
              f"{', '.join(v.weights) or '-'}")
    return 0


def _configs(args) -> int:
    from .integrations import configs
    from .zoo import get_variant
    if args.toolkit == "ppdet" and args.names:
        raise ValueError("--names is for --toolkit ppcls and tipc; the PaddleDetection "
                         "configs are written together")
    if args.toolkit != "ppdet" and args.standalone:
        raise ValueError("--standalone is for --toolkit ppdet")
    for name in args.names or []:
        get_variant(name)  # an unknown name: the error lists the valid ones
    if args.toolkit == "ppdet":
        kind = configs.PPDET_STANDALONE if args.standalone else configs.PPDET_CHECKOUT
        warning = configs.ppdet_destination_warning(args.dest, kind)
        report = configs.copy_ppdet_configs(args.dest, kind=kind, force=args.force)
        instead = "override keys with -o on PaddleDetection's tools"
    elif args.toolkit == "tipc":
        warning = configs.tipc_destination_warning(args.dest, args.names)
        report = configs.copy_tipc_configs(args.dest, force=args.force, names=args.names)
        instead = "copy a file under another name"
    else:
        warning = None
        report = configs.copy_ppcls_configs(args.dest, force=args.force, names=args.names)
        instead = "pass -o overrides to PaddleClas's tools"
    if warning:
        print(f"rexnet-plugin configs: warning: {warning}")
    return configs.print_report(report, instead)


def _convert(args) -> int:
    from .weights.convert import convert
    print(convert(args.src, args.dst, variant=args.variant, src_format=args.src_format,
                  layout=args.layout, force=args.force))
    return 0


def _weights(args) -> int:
    from .weights import fetch_pretrained, forget, sources_table
    for name in args.forget or []:
        removed = forget(name)
        print(f"{name}: removed {'; '.join(removed)}" if removed else f"{name}: nothing "
              f"recorded or cached under this name; the next download is accepted as it is")
    if not args.forget and not args.download:
        print(sources_table(args.variants))
    if args.forget or not args.download:
        return 0
    if not args.variants:
        raise ValueError("name the variants to --download")
    for name in args.variants:
        print(fetch_pretrained(name, args.source, **(
            {} if args.timeout is None else {"download_timeout": args.timeout})))
    return 0


def _image_size(text: str):
    """'224', '256x192' (H x W), or 'dynamic'."""
    if text == "dynamic":
        return None
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.isdigit() for p in parts):
        return int(parts[0]) if len(parts) == 1 else tuple(map(int, parts))
    raise argparse.ArgumentTypeError(f"{text!r}: expected 224, HxW (e.g. 256x192) or dynamic")


def _export(args) -> int:
    from .deploy.export import export_model
    print(export_model(args.model, args.weights, args.output, onnx=args.onnx,
                       image_size=args.image_size, class_num=args.class_num, opset=args.opset,
                       untrained=args.untrained, softmax=not args.logits,
                       label_list=args.label_list).describe())
    return 0


def _bench(args) -> int:
    from .deploy.bench import time_folder
    # A bad folder or option: a ValueError, which main() reports.
    rows = time_folder(args.folder, args.batch, args.warmup, args.repeats, args.threads)
    print(f"{args.folder}: ms per image, median of {args.repeats} runs, one process")
    for row in rows:
        times = f"skipped: {row['skipped'][:160]}" if "skipped" in row else "  ".join(
            f"{k} {v:7.2f}" for k, v in row.items() if k != "path")
        print(f"  {row['path']:<14} {times}")
    return 0


def _quantize(args) -> int:
    from .deploy.quantize import quantize_export
    out = quantize_export(args.model_dir, args.calib, args.out, num_images=args.num_images,
                          progress=True)
    print(f"int8 model: {out} (ONNX Runtime; run it with rexnet-plugin predict {out} IMAGE...)")
    return 0


def _paddlex_pipeline(args) -> int:
    from .integrations import paddlex as pdx
    try:
        name = pdx.check_model_dir(args.model_dir, args.model_name)
        engines = pdx.registered_engines(name)  # PaddleX installed, ReXNet bound
        path = pdx.write_pipeline_config(args.output or f"{name}_pipeline.yaml", args.model_dir,
                                         name, args.batch_size, args.topk)
    except pdx.PaddleXError as err:
        raise ValueError(str(err)) from None
    print(f"wrote {path} (PaddleX {pdx.paddlex_version()}, {name}; engines: "
          f"{', '.join(engines)})\n  paddlex --pipeline {path} --input photo.jpg --device cpu\n"
          f"  python -c \"import paddlex; [r.print() for r in paddlex.create_pipeline('{path}')"
          f".predict('photo.jpg')]\"\n  paddlex --serve --pipeline {path} --device cpu "
          f"--host 127.0.0.1 --port 8080")
    return 0


def _add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from .demo import run as demo
    from .zoo import VARIANTS
    d = demo.DemoSettings
    p.add_argument("--variant", default=d.variant, choices=list(VARIANTS), metavar="NAME",
                   help=f"one of {', '.join(VARIANTS)} (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="default %(default)s")
    p.add_argument("--image-size", type=int, metavar="PX", help="square input size, at least "
                   f"32 (default {demo.DIGITS_IMAGE_SIZE} for the digits, "
                   f"{demo.DATA_IMAGE_SIZE} for --data)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="default %(default)s")
    p.add_argument("--lr", type=float, default=d.learning_rate, dest="learning_rate",
                   help="peak learning rate of the cosine schedule (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, "
                   "shuffling and augmentation (default 0; the digits' split is fixed)")
    p.add_argument("-o", "--out", type=Path, default=d.out, metavar="DIR",
                   help="report folder (default ./%(default)s)")
    p.add_argument("--data", type=Path, metavar="DIR", help="your own ImageNet-format folder "
                   "(train_list.txt, val_list.txt, optional label_list.txt) instead of the digits")
    p.add_argument("--pretrained", metavar="CKPT",
                   help="start from these weights (classifier skipped if its shape differs)")
    p.add_argument("--engine", choices=demo.ENGINES, default="auto",
                   help="auto (default): PaddleClas's tools/train.py when PADDLECLAS_ROOT "
                        "is set, else a Paddle dygraph loop (paddle)")
    p.add_argument("--train-images", type=int, metavar="N",
                   help="train on the first N training images only (quick checks)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out folder not made by this command")


def build_parser() -> argparse.ArgumentParser:
    from .deploy.artifacts import DEFAULT_OPSET
    from .deploy import predict as predict_mod  # numpy, no paddle
    from .deploy import quantize as quantize_mod  # numpy, no paddle
    parser = argparse.ArgumentParser(prog="rexnet-plugin", description="ReXNet for "
                                     "PaddlePaddle, PaddleClas, PaddleDetection and PaddleX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help, description=None):
        p = sub.add_parser(name, help=help, description=description or help)
        p.set_defaults(func=func)
        return p

    command("variants", _variants, "list the variants with params and MACs")

    p = command("configs", _configs, "write the PaddleClas, TIPC or PaddleDetection configs "
                "into a folder; a file you edited is kept unless --force")
    p.add_argument("--toolkit", choices=["ppcls", "tipc", "ppdet"], default="ppcls",
                   help="PaddleClas (default), its TIPC chain, or PaddleDetection")
    p.add_argument("--dest", required=True, metavar="DIR", help="target folder")
    p.add_argument("--force", action="store_true",
                   help="overwrite files that differ from the shipped configs")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="only these variants (default: all; ppcls and tipc only)")
    p.add_argument("--standalone", action="store_true", help="ppdet only: one-file configs "
                   "for the paddledet wheel, not a checkout's (_BASE_ on its configs)")

    p = command("convert", _convert, "convert a checkpoint (.pth, .safetensors, .pdparams) "
                "of any layout (Paddle, official, timm) to .pdparams or .safetensors")
    p.add_argument("src", metavar="SRC", help="the checkpoint to read")
    p.add_argument("dst", metavar="DST", help="the file to write: .pdparams or .safetensors")
    p.add_argument("--variant", help="check the weights against this variant (default: inferred)")
    p.add_argument("--src-format", choices=["pdparams", "safetensors", "pth"],
                   help="format of SRC (default: from its content and suffix)")
    p.add_argument("--layout", choices=["paddle", "official"], default="paddle",
                   help="key names to write (official: .safetensors only)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")

    p = command("weights", _weights, "list the published weights and cache; --download them")
    p.add_argument("variants", nargs="*", metavar="VARIANT",
                   help="variants to list or download (default: all)")
    p.add_argument("--download", action="store_true",
                   help="download into the cache and check each file against its model")
    p.add_argument("--source", help="source to download (default: the variant's first)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="seconds each whole "
                   "download may take (default: one hour; 0: no limit)")
    p.add_argument("--forget", action="append", metavar="NAME_OR_URL", help="delete a "
                   "cached file and its recorded sha256 (a changed file is then accepted)")

    p = command("export", _export, "export to Paddle Inference (and ONNX with --onnx)",
                "Build a variant or a PaddleClas config's model, load its weights and export "
                "it with its preprocessing in inference.yml; --onnx adds an ONNX file checked "
                "against Paddle Inference. A re-export replaces the folder's whole export.")
    p.add_argument("model", metavar="MODEL",
                   help="a variant name or a PaddleClas YAML (Arch, Global.image_shape, "
                        "Global.pretrained_model and Global.save_inference_dir are used)")
    p.add_argument("--weights", help="checkpoint path, source name (ppim, paddleclas, ...) "
                                     "or URL (default: the config's)")
    p.add_argument("--untrained", action="store_true", help="export random weights")
    p.add_argument("-o", "--output", help="default: the config's, else ./inference")
    p.add_argument("--onnx", action="store_true", help="also write inference.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="default %(default)s")
    p.add_argument("--image-size", type=_image_size, default=-1, metavar="SIZE",
                   help="224, HxW or dynamic (default: the config's, else 224)")
    p.add_argument("--class-num", type=int, help="classes (default: the config's, else 1000)")
    p.add_argument("--label-list", metavar="FILE", help="class names: '<id> <name>' lines or "
                   "one per line (default: the config's; ImageNet's for 1000)")
    p.add_argument("--logits", action="store_true", help="output logits, not probabilities")

    p = command("bench", _bench, "time a model folder in each runtime and precision it allows",
                "Time a model folder (rexnet-plugin export or quantize) in Paddle Inference, "
                "ONNX Runtime and OpenVINO, fp32 and bf16 where the CPU has it, one after the "
                "other in this process. The side-by-side comparison with PaddleClas's built-in, "
                "each path in its own process, is python benchmarks/run.py in a source checkout "
                "(docs/speed.md).")
    p.add_argument("folder", help="model folder")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="default 1 8")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs (default 20)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all)")

    p = command("predict", _run_from_args(".deploy.predict"), "classify images with an "
                "exported model folder (fp32, bf16, int8), preprocessed by its inference.yml")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by export or "
                   "quantize, or by PaddleClas's export_model.py with Global.export_for_fd=True")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images, or ImageNet-format list files")
    p.add_argument("--topk", type=int, metavar="K", help="default: inference.yml's")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--batch-size", type=int, default=predict_mod.DEFAULT_BATCH_SIZE,
                   metavar="N", help="images per run (default %(default)s)")
    p.add_argument("--precision", choices=predict_mod.PRECISIONS, default="fp32",
                   help="bf16 needs AVX512-BF16 or AMX (an int8 folder runs int8)")
    p.add_argument("--runtime", choices=predict_mod.RUNTIMES,
                   help="default: the fastest the folder allows, named on stderr")

    p = command("quantize", _quantize, "int8 post-training quantization of an exported "
                "model folder for ONNX Runtime, written whole or not at all")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the fp32 model folder")
    p.add_argument("--calib", required=True, metavar="LIST_OR_DIR",
                   help=f"calibration images: an ImageNet-format list file or a folder; at "
                        f"least {quantize_mod.MIN_CALIBRATION_IMAGES}")
    p.add_argument("--out", required=True, metavar="OUT_DIR",
                   help="a new (or empty) folder for the int8 model")
    p.add_argument("--num-images", type=int, default=quantize_mod.DEFAULT_CALIBRATION_IMAGES,
                   metavar="N", help="calibration images used, spread over --calib (default "
                                     "%(default)s)")

    _add_demo_arguments(command(
        "demo", _run_from_args(".demo.run"), "train, evaluate, export, quantize and predict on "
        "bundled digits (offline)", "Train a ReXNet from scratch on scikit-learn's bundled "
        "handwritten digits (or --data DIR), report held-out top-1, export to Paddle Inference "
        "and predict with it, quantize to int8 (ONNX Runtime) on the training images and report "
        "its top-1. Writes a report folder (--out)."))

    p = command("paddlex-pipeline", _paddlex_pipeline, "write a PaddleX image_classification "
                "pipeline YAML for an export folder (needs the [paddlex] extra)")
    p.add_argument("model_dir", help="folder written by rexnet-plugin export")
    p.add_argument("-o", "--output", help="YAML to write (default ./<model>_pipeline.yaml)")
    p.add_argument("--model-name", help="check the folder holds this variant")
    p.add_argument("--batch-size", type=int, default=1, help="default 1")
    p.add_argument("--topk", type=int, help="default: inference.yml's")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = f"rexnet-plugin {args.command}:"
    # paddle installs a SIGTERM handler on import, so ours (clean up as Ctrl-C does) goes after.
    if args.command != "configs":
        import paddle  # noqa: F401
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        return args.func(args)
    except Terminated:
        print(f"{say} terminated (SIGTERM); temporary files were removed", file=sys.stderr)
        return 128 + int(signal.SIGTERM)
    except (ValueError, ImportError, FileNotFoundError) as err:  # bad input, a missing extra
        print(f"{say} error: {err}", file=sys.stderr)
    except OSError as err:  # a disk that fills up while writing, say
        where = f" ({err.filename})" if err.filename else ""
        print(f"{say} error: cannot write: {err.strerror or err}{where}; nothing was written "
              f"and existing outputs were left as they were", file=sys.stderr)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 2


if __name__ == "__main__":
    sys.exit(main())
