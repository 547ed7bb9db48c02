"""The ``rexnet-plugin`` command. Each subcommand lives in its own module;
this file only wires up argparse."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` (temp
    files, half-written folders) runs before the command exits."""


def _raise_terminated(signum, frame):
    raise Terminated


def _variants(args) -> int:
    from .complexity import count_conv_macs, count_params
    from .factories import create_model
    from .zoo import VARIANTS
    print(f"{'variant':<16}{'kind':<6}{'width':>6}{'params (M)':>12}{'MACs@224 (G)':>14}"
          f"{'paper top-1':>13}  published weights")
    for name, v in VARIANTS.items():
        model = create_model(name)
        top1 = "-" if v.paper_top1 is None else f"{v.paper_top1:.1f}"
        print(f"{name:<16}{v.kind_label:<6}{v.width_mult:>6}"
              f"{count_params(model) / 1e6:>12.2f}{count_conv_macs(model)['total'] / 1e9:>14.3f}"
              f"{top1:>13}  {', '.join(v.weights) or '-'}")
    return 0


def _configs(args) -> int:
    from .integrations import configs
    if args.toolkit == "ppdet":
        if args.names:
            print("rexnet-plugin configs: --names is for --toolkit ppcls and tipc; the "
                  "PaddleDetection configs are written together", file=sys.stderr)
            return 2
        kind = configs.PPDET_STANDALONE if args.standalone else configs.PPDET_CHECKOUT
        warning = configs.ppdet_destination_warning(args.dest, kind)
        if warning:
            print(f"rexnet-plugin configs: warning: {warning}")
        report = configs.copy_ppdet_configs(args.dest, kind=kind, force=args.force)
        return configs.print_report(report, "override keys with -o on PaddleDetection's tools")
    if args.standalone:
        print("rexnet-plugin configs: --standalone is for --toolkit ppdet", file=sys.stderr)
        return 2
    from .zoo import VARIANTS
    unknown = [n for n in args.names or [] if n not in VARIANTS]
    if unknown:
        print(f"rexnet-plugin configs: unknown variant(s) {', '.join(unknown)}; "
              f"valid names: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    if args.toolkit == "tipc":
        warning = configs.tipc_destination_warning(args.dest, args.names)
        if warning:
            print(f"rexnet-plugin configs: warning: {warning}")
        report = configs.copy_tipc_configs(args.dest, force=args.force, names=args.names)
        return configs.print_report(report, "copy a file under another name")
    report = configs.copy_ppcls_configs(args.dest, force=args.force, names=args.names)
    return configs.print_report(report, "pass -o overrides to PaddleClas's tools")


def _convert(args) -> int:
    from .weights.convert import convert
    from .weights.errors import WeightsError
    try:
        print(convert(args.src, args.dst, variant=args.variant, src_format=args.src_format,
                      layout=args.layout, force=args.force))
    except (WeightsError, ValueError) as err:  # files.FolderNotWritableError is a ValueError
        print(f"rexnet-plugin convert: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a disk that fills up while writing, for instance
        print(f"rexnet-plugin convert: error: cannot write {args.dst}: {err.strerror or err}; "
              f"nothing was written", file=sys.stderr)
        return 2
    return 0


def _weights(args) -> int:
    from .weights import fetch_pretrained, forget, sources_table
    from .weights.errors import WeightsError
    if args.forget:
        try:
            for name in args.forget:
                removed = forget(name)
                print(f"{name}: removed {'; '.join(removed)}" if removed else
                      f"{name}: nothing recorded or cached under this name; the next "
                      f"download is accepted as it is")
        except WeightsError as err:
            print(f"rexnet-plugin weights: error: {err}", file=sys.stderr)
            return 2
        return 0
    if not args.download:
        try:
            print(sources_table(args.variants))
        except ValueError as err:  # an unknown variant name
            print(f"rexnet-plugin weights: error: {err}", file=sys.stderr)
            return 2
        return 0
    if not args.variants:
        print("rexnet-plugin weights: error: name the variants to --download", file=sys.stderr)
        return 2
    try:
        for name in args.variants:
            print(fetch_pretrained(name, args.source))
    except (WeightsError, ValueError) as err:
        print(f"rexnet-plugin weights: error: {err}", file=sys.stderr)
        return 2
    return 0


def _image_size(text: str):
    """'224', '256x192' (H x W), or 'dynamic'."""
    if text == "dynamic":
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise argparse.ArgumentTypeError(f"{text!r}: expected 224, HxW (e.g. 256x192) or dynamic")


def _export(args) -> int:
    from .deploy.export import export_model
    from .weights.errors import WeightsError
    try:
        result = export_model(args.model, args.weights, args.output, onnx=args.onnx,
                              image_size=args.image_size, class_num=args.class_num,
                              opset=args.opset, untrained=args.untrained,
                              softmax=not args.logits, label_list=args.label_list)
    except (WeightsError, ValueError, FileNotFoundError, ImportError) as err:
        # files.FolderNotWritableError is a ValueError
        print(f"rexnet-plugin export: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a disk that fills up while writing, for instance
        print(f"rexnet-plugin export: error: {err.strerror or err}"
              f"{f' ({err.filename})' if err.filename else ''}; the output folder was left "
              f"as it was", file=sys.stderr)
        return 2
    print(result.describe())
    return 0


def _bench(args) -> int:
    import shlex
    from .deploy.bench import parse_modes, run_benchmark, text_summary, write_results
    from .zoo import DEFAULT_VARIANT
    try:
        modes = parse_modes(args.modes)
        doc = run_benchmark(args.variant or DEFAULT_VARIANT, args.weights, modes,
                            warmup=args.warmup, repeats=args.repeats, threads=args.threads,
                            command="rexnet-plugin " + shlex.join(sys.argv[1:]))
    except (ValueError, ImportError) as err:
        print(f"rexnet-plugin bench: error: {err}", file=sys.stderr)
        return 2
    print(text_summary(doc))
    print(f"wrote {write_results(doc, args.output)}")
    return 0


def _predict(args) -> int:
    from .deploy.predict import run_from_args
    return run_from_args(args)


def _quantize(args) -> int:
    from .deploy.quantize import QuantizeError, quantize_export
    try:
        out = quantize_export(args.model_dir, args.calib, args.out, num_images=args.num_images,
                              progress=True)
    except (QuantizeError, ValueError, ImportError) as err:
        # files.FolderNotWritableError is a ValueError
        print(f"rexnet-plugin quantize: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a disk that fills up while writing, for instance
        print(f"rexnet-plugin quantize: error: {err.strerror or err}"
              f"{f' ({err.filename})' if err.filename else ''}; nothing was written to "
              f"{args.out}", file=sys.stderr)
        return 2
    print(f"int8 model: {out} (ONNX Runtime; run it with rexnet-plugin predict {out} IMAGE...)")
    return 0


def _paddlex_pipeline(args) -> int:
    from .integrations import paddlex as pdx
    try:
        name = pdx.check_model_dir(args.model_dir, args.model_name)
        engines = pdx.registered_engines(name)  # PaddleX installed, ReXNet bound
        output = args.output or f"{name}_pipeline.yaml"
        path = pdx.write_pipeline_config(output, args.model_dir, name, args.batch_size,
                                         args.topk)
    except (pdx.PaddleXError, ValueError, OSError) as err:
        print(f"rexnet-plugin paddlex-pipeline: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} (PaddleX {pdx.paddlex_version()}, {name}; engines: "
          f"{', '.join(engines)})")
    print(f"  paddlex --pipeline {path} --input photo.jpg --device cpu")
    print(f"  python -c \"import paddlex; [r.print() for r in "
          f"paddlex.create_pipeline('{path}').predict('photo.jpg')]\"")
    print(f"  paddlex --serve --pipeline {path} --device cpu --host 127.0.0.1 --port 8080")
    return 0


def _demo(args) -> int:
    from .demo.run import run_from_args
    return run_from_args(args)


def _add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from .demo import run as demo
    from .zoo import VARIANTS
    p.add_argument("--variant", default=demo.DEFAULT_VARIANT, choices=list(VARIANTS),
                   metavar="NAME", help=f"one of {', '.join(VARIANTS)} "
                                        f"(default {demo.DEFAULT_VARIANT})")
    p.add_argument("--epochs", type=int, default=demo.DEFAULT_EPOCHS,
                   help=f"training epochs (default {demo.DEFAULT_EPOCHS})")
    p.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help=f"square input size, at least 32 (default "
                        f"{demo.DEFAULT_DIGITS_IMAGE_SIZE} for the digits, "
                        f"{demo.DEFAULT_DATA_IMAGE_SIZE} for --data)")
    p.add_argument("--batch-size", type=int, default=demo.DEFAULT_BATCH_SIZE,
                   help=f"default {demo.DEFAULT_BATCH_SIZE}")
    p.add_argument("--lr", type=float, default=demo.DEFAULT_LEARNING_RATE,
                   dest="learning_rate", help=f"peak learning rate of the cosine "
                                              f"schedule (default {demo.DEFAULT_LEARNING_RATE})")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, "
                   "shuffling and augmentation (default 0; the digits' split is fixed)")
    p.add_argument("-o", "--out", type=Path, default=Path(demo.DEFAULT_OUT), metavar="DIR",
                   help=f"report folder (default ./{demo.DEFAULT_OUT})")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="your own ImageNet-format folder (train_list.txt, val_list.txt, "
                        "optional label_list.txt) instead of the digits")
    p.add_argument("--pretrained", default=None, metavar="CKPT",
                   help="start from these weights (classifier skipped if its shape differs)")
    p.add_argument("--engine", choices=("auto", "paddle", "paddleclas"), default="auto",
                   help="auto (default): PaddleClas's tools/train.py when PADDLECLAS_ROOT "
                        "is set, else a Paddle dygraph loop (paddle)")
    p.add_argument("--train-images", type=int, default=None, metavar="N",
                   help="train on the first N training images only (quick checks)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty --out folder not made by this command")


def build_parser() -> argparse.ArgumentParser:
    from .deploy.artifacts import DEFAULT_OPSET
    from .deploy.bench import MODES as bench_modes  # stdlib-only module: cheap to import
    from .deploy import predict as predict_mod  # numpy, no paddle
    from .deploy import quantize as quantize_mod  # numpy, no paddle
    parser = argparse.ArgumentParser(
        prog="rexnet-plugin",
        description="ReXNet for PaddlePaddle, PaddleClas, PaddleDetection and PaddleX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("variants", help="list the variants with params and MACs")
    p.set_defaults(func=_variants)

    p = sub.add_parser(
        "configs", help="write the PaddleClas, TIPC or PaddleDetection configs into a folder",
        description="Copy the configs shipped with the package into DIR: PaddleClas's "
                    "(ppcls_configs/*.yaml); with --toolkit tipc, PaddleClas's TIPC chain's "
                    "(tipc_configs/*.txt); with --toolkit ppdet, PaddleDetection's "
                    "(ppdet_configs/). A file you edited is kept unless --force.")
    p.add_argument("--toolkit", choices=["ppcls", "tipc", "ppdet"], default="ppcls",
                   help="ppcls (default): PaddleClas configs; tipc: TIPC configs for "
                        "<PaddleClas>/test_tipc/configs/rexnet_plugin; ppdet: PaddleDetection "
                        "configs for <PaddleDetection>/configs/rexnet")
    p.add_argument("--dest", required=True, metavar="DIR",
                   help="target folder, e.g. ppcls_configs inside your PaddleClas checkout, "
                        "test_tipc/configs/rexnet_plugin there, or configs/rexnet inside your "
                        "PaddleDetection checkout")
    p.add_argument("--force", action="store_true",
                   help="overwrite files that differ from the shipped configs")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="only these variants (default: all; ppcls and tipc only)")
    p.add_argument("--standalone", action="store_true",
                   help="ppdet only: the one-file configs for the pip wheel paddledet, "
                        "instead of the checkout configs that _BASE_ on PaddleDetection's")
    p.set_defaults(func=_configs)

    p = sub.add_parser(
        "convert", help="convert a checkpoint (.pth, .safetensors, .pdparams) to .pdparams "
                        "or .safetensors",
        description="Convert a ReXNet checkpoint in any layout (Paddle, official PyTorch, "
                    "timm) to the Paddle layout; the output format follows DST's suffix.")
    p.add_argument("src", metavar="SRC", help="the checkpoint to read")
    p.add_argument("dst", metavar="DST", help="the file to write: .pdparams or .safetensors")
    p.add_argument("--variant", help="check the weights against this variant (default: the "
                                     "one inferred from the shapes)")
    p.add_argument("--src-format", choices=["pdparams", "safetensors", "pth"],
                   help="format of SRC (default: from its content and suffix)")
    p.add_argument("--layout", choices=["paddle", "official"], default="paddle",
                   help="key names to write: paddle (default) or official PyTorch names "
                        "(.safetensors only)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=_convert)

    p = sub.add_parser("weights", help="list the published weights and the cache; "
                                       "--download fetches them")
    p.add_argument("variants", nargs="*", metavar="VARIANT",
                   help="variants to list or download (default: all)")
    p.add_argument("--download", action="store_true",
                   help="download into the cache and check each file against its model")
    p.add_argument("--source", help="source to download (default: the variant's first)")
    p.add_argument("--forget", action="append", metavar="NAME_OR_URL",
                   help="delete a cached file and the sha256 recorded on its first download, so "
                        "that a changed file is accepted on its next download (repeatable)")
    p.set_defaults(func=_weights)

    p = sub.add_parser(
        "export", help="export to Paddle Inference (and ONNX with --onnx)",
        description="Build a variant (or the model of a PaddleClas config), load its weights "
                    "and export it for Paddle Inference, with its preprocessing in "
                    "inference.yml (PaddleClas deploy / PaddleX / FastDeploy format); --onnx "
                    "adds an ONNX file converted by paddle2onnx and checked against Paddle "
                    "Inference with ONNX Runtime. A re-export replaces the folder's whole "
                    "export (files it does not write again are deleted).")
    p.add_argument("model", metavar="MODEL",
                   help="a variant name (ReXNet_1_0 ...) or a PaddleClas YAML; from a YAML, "
                        "Arch.name, Arch.class_num, Global.image_shape, "
                        "Global.pretrained_model and Global.save_inference_dir are used")
    p.add_argument("--weights", help="checkpoint path, source name (seed, paddleclas, ...) "
                                     "or URL (default: the config's Global.pretrained_model)")
    p.add_argument("--untrained", action="store_true", help="export random weights")
    p.add_argument("-o", "--output", help="output directory (default: the config's "
                                          "Global.save_inference_dir, else ./inference)")
    p.add_argument("--onnx", action="store_true", help="also write inference.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--image-size", type=_image_size, default=-1, metavar="SIZE",
                   help="input size: 224, HxW or dynamic (default: the config's "
                        "Global.image_shape, else 224)")
    p.add_argument("--class-num", type=int, help="classes (default: the config's, else 1000)")
    p.add_argument("--label-list", metavar="FILE",
                   help="class names for inference.yml: PaddleClas's class_id_map_file format "
                        "('<id> <name>' lines) or one name per line (default: the config's "
                        "Infer.PostProcess.class_id_map_file; ImageNet's for 1000 classes)")
    p.add_argument("--logits", action="store_true",
                   help="output raw logits; by default the model ends in softmax and outputs "
                        "probabilities, as PaddleClas's export_model.py does")
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "bench", help="time this ReXNet against PaddleClas's built-in, side by side",
        description="Time this package's ReXNet and PaddleClas's built-in ReXNetV1 (same "
                    "variant, same weights, timed in alternating turns) in Paddle Inference "
                    "fp32/bf16, ONNX Runtime, dygraph eval and dygraph training; write "
                    "<variant>.json (python benchmarks/run.py adds the markdown report).")
    p.add_argument("--variant", help="a V1 variant (default ReXNet_1_0)")
    p.add_argument("--weights", help="checkpoint for both models (default: random init, "
                                     "copied into both)")
    p.add_argument("--modes", help=f"comma-separated subset of: {', '.join(bench_modes)} "
                                   f"(default: all)")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches first (default 5)")
    p.add_argument("--repeats", type=int, default=30, help="timed batches (default 30)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all)")
    p.add_argument("-o", "--output", default="bench-results",
                   help="directory for the JSON (default ./bench-results)")
    p.set_defaults(func=_bench)

    p = sub.add_parser(
        "predict", help="classify images with an exported model folder (fp32, bf16, int8)",
        description="Classify images with a model folder written by rexnet-plugin export "
                    "or quantize, or by PaddleClas's tools/export_model.py with "
                    "Global.export_for_fd=True, using the folder's own preprocessing "
                    "(inference.yml). Runs Paddle Inference (oneDNN) when the folder has "
                    "inference.json, else ONNX Runtime on inference.onnx (an int8 folder).")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the model folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images (searched recursively), or "
                        "ImageNet-format list files (*.txt: '<relative path> <label>' lines, "
                        "paths relative to the list's folder)")
    p.add_argument("--topk", type=int, default=None, metavar="K",
                   help="classes per image (default: inference.yml's PostProcess.Topk.topk)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per line: {"image", "class_id", "score", "topk": '
                        '[[class_id, score], ...]}')
    p.add_argument("--batch-size", type=int, default=predict_mod.DEFAULT_BATCH_SIZE,
                   metavar="N", help=f"images per run (default {predict_mod.DEFAULT_BATCH_SIZE})")
    p.add_argument("--precision", choices=predict_mod.PRECISIONS, default="fp32",
                   help="bf16: an fp32 model run in bfloat16 by OpenVINO or Paddle "
                        "Inference (needs AVX512-BF16 or AMX). Default fp32 (an int8 folder "
                        "runs int8)")
    p.add_argument("--runtime", choices=predict_mod.RUNTIMES, default=None,
                   help="paddle: Paddle Inference with oneDNN; onnx: ONNX Runtime on "
                        "inference.onnx; openvino: OpenVINO on inference.onnx (default: the "
                        "fastest the folder allows, named on stderr: openvino when installed "
                        "and the folder has inference.onnx, onnx for an int8 folder, else "
                        "paddle; docs/speed.md)")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "quantize", help="int8 post-training quantization of an exported model folder",
        description="Quantize an exported fp32 model folder (rexnet-plugin export, or "
                    "PaddleClas's tools/export_model.py with Global.export_for_fd=True) to "
                    "int8 for ONNX Runtime: per-channel int8 weights, uint8 activations "
                    "calibrated on your images preprocessed by the folder's inference.yml. "
                    "OUT_DIR gets inference.onnx, inference.yml and quantization.json; it is "
                    "written whole or not at all.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="the fp32 model folder")
    p.add_argument("--calib", required=True, metavar="LIST_OR_DIR",
                   help="calibration images: an ImageNet-format list file ('<relative path> "
                        "<label>' lines, paths relative to the list's folder) or a folder of "
                        f"images; at least {quantize_mod.MIN_CALIBRATION_IMAGES}, RGB")
    p.add_argument("--out", required=True, metavar="OUT_DIR",
                   help="a new (or empty) folder for the int8 model")
    p.add_argument("--num-images", type=int, default=quantize_mod.DEFAULT_CALIBRATION_IMAGES,
                   metavar="N", help=f"calibration images used, spread evenly over --calib "
                                     f"(default {quantize_mod.DEFAULT_CALIBRATION_IMAGES}, "
                                     f"at least {quantize_mod.MIN_CALIBRATION_IMAGES})")
    p.set_defaults(func=_quantize)

    p = sub.add_parser(
        "demo", help="train, evaluate, export, quantize and predict on bundled digits "
                     "(offline)",
        description="Train a ReXNet from scratch on scikit-learn's bundled handwritten "
                    "digits (or --data DIR), report held-out top-1, export to Paddle "
                    "Inference and predict with it, quantize to int8 (ONNX Runtime) on the "
                    "training images and report its top-1. Writes a report folder (--out).")
    _add_demo_arguments(p)
    p.set_defaults(func=_demo)

    p = sub.add_parser(
        "paddlex-pipeline", help="write a PaddleX image_classification pipeline YAML for "
                                 "an export (needs the [paddlex] extra)",
        description="Check that PaddleX can run an export folder (its inference.yml names "
                    "a ReXNet variant that PaddleX has bound), then write the pipeline YAML "
                    "that `paddlex --pipeline FILE` and paddlex.create_pipeline(FILE) read.")
    p.add_argument("model_dir", help="folder written by rexnet-plugin export (or PaddleClas's "
                                     "export_model.py -o Global.export_for_fd=True)")
    p.add_argument("-o", "--output", help="YAML to write (default ./<model>_pipeline.yaml)")
    p.add_argument("--model-name", help="check the folder holds this variant (default: the "
                                        "folder's Global.model_name)")
    p.add_argument("--batch-size", type=int, default=1, help="default 1")
    p.add_argument("--topk", type=int, help="classes per image (default: inference.yml's)")
    p.set_defaults(func=_paddlex_pipeline)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a job scheduler, docker stop) cleans up as Ctrl-C does; exit
    # code 143 = 128 + SIGTERM, what the shell reports for a process it ended.
    # Importing paddle installs paddle's own SIGTERM handler (a stack dump, then
    # death), so every command that uses paddle imports it before ours goes in.
    if args.command != "configs":
        import paddle  # noqa: F401
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        return args.func(args)
    except Terminated:
        print(f"rexnet-plugin {args.command}: terminated (SIGTERM); temporary files were "
              f"removed", file=sys.stderr)
        return 128 + int(signal.SIGTERM)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
