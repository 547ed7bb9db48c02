"""The demo, step by step: data, training, export, int8, evaluation, report (docs/demo.md)."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..files import atomic_dir, atomic_path, remove, write_json
from ..zoo import DEFAULT_VARIANT, IMAGENET_MEAN, IMAGENET_STD, EvalTransform, get_variant
from . import data as data_mod
from .data import DIGITS_IMAGE_SIZE, DemoError, DemoInterrupted

DATA_IMAGE_SIZE = 224  # a user's photos (--data): the configs' own size
ENGINES = ("auto", "paddle", "paddleclas")  # auto: paddleclas when PADDLECLAS_ROOT is set
MARKER = ".rexnet-demo"  # marks a folder this command wrote, so reruns may overwrite it
INCOMPLETE = "INCOMPLETE.txt"  # from the start of a run until metrics.json is written
# A previous run's results, removed first so that none sits beside a new run's.
RESULTS = ("metrics.json", "report.png", "train_subset_list.txt", "model", "model_int8",
           "checkpoints", "ppcls_output")


@dataclass(frozen=True)
class DemoSettings:
    """The defaults (the CLI's too) pass 90% held-out top-1 on the digits in about 5 CPU
    minutes (docs/demo.md)."""
    variant: str = DEFAULT_VARIANT
    epochs: int = 6
    image_size: int | None = None  # None: DIGITS_IMAGE_SIZE, DATA_IMAGE_SIZE for --data
    batch_size: int = 64
    learning_rate: float = 0.05
    seed: int = 0
    out: Path = Path("rexnet_demo")
    data: Path | None = None
    pretrained: str | None = None
    engine: str = "auto"  # one of ENGINES
    force: bool = False
    train_images: int | None = None  # the first N images of the training list only
    progress: bool = True


def _checked(s: DemoSettings) -> DemoSettings:
    from ..model import MIN_INPUT_SIZE
    get_variant(s.variant)  # ValueError listing the valid names
    size = s.image_size or (DATA_IMAGE_SIZE if s.data else DIGITS_IMAGE_SIZE)
    for bad, message in (
            (size < MIN_INPUT_SIZE, f"--image-size {size}: ReXNet needs at least {MIN_INPUT_SIZE}"),
            *((value < 1, f"{name} {value}: must be at least 1") for name, value in (
                ("--epochs", s.epochs), ("--batch-size", s.batch_size),
                ("--train-images", 1 if s.train_images is None else s.train_images))),
            (not s.learning_rate > 0, f"--lr {s.learning_rate}: must be above 0"),
            (s.engine not in ENGINES, f"--engine {s.engine!r}: use {', '.join(ENGINES)}")):
        if bad:
            raise DemoError(message)
    return replace(s, image_size=size, out=Path(s.out).resolve(),
                   data=Path(s.data).resolve() if s.data else None)


def _prepare_out(out: Path, force: bool) -> None:
    """Refuse a non-empty folder not written here; mark it incomplete; clear old results."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise DemoError(f"--out {out} is not empty and was not written by 'rexnet-plugin "
                        f"demo'. Pass another --out, or --force to write the report into it "
                        f"(files with the report's names are overwritten).")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by rexnet-plugin demo\n")
    (out / INCOMPLETE).write_text("rexnet-plugin demo started here and has not finished. A "
                                  "finished run writes metrics.json and removes this file.\n")
    for name in RESULTS:
        remove(out / name)


def _eval_ops(s: DemoSettings) -> list[dict]:
    """The held-out transform as deploy operators (model/inference.yml); digits: whole."""
    from ..deploy.infer_config import eval_transform_ops
    ops = eval_transform_ops(EvalTransform(round(s.image_size * 256 / 224), "bilinear",
                                           s.image_size))
    return ops if s.data else [{"ResizeImage": {"size": s.image_size}}, *ops[2:]]


def _shipped_config(variant: str) -> tuple[Path, dict]:
    import yaml
    from ..integrations.configs import shipped
    path = Path(str(shipped("ppcls_configs", f"{variant}.yaml")))
    return path, yaml.safe_load(path.read_text())


def _train_paddle(s, folder, network, checkpoint: Path, history: list, on_epoch_end) -> None:
    """The smallest dygraph loop, with the shipped config's optimizer and loss; after each
    epoch a checkpoint written whole, then the held-out top-1 and loss."""
    import paddle
    import paddle.nn.functional as F
    from paddle.vision import transforms as T
    from tqdm import tqdm
    config = _shipped_config(s.variant)[1]
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    augment = ([T.RandomResizedCrop(s.image_size), T.RandomHorizontalFlip()] if s.data else
               # digits are centred and their orientation matters: a gentle crop, no flip
               [T.RandomResizedCrop(s.image_size, scale=(0.75, 1.0), ratio=(0.9, 1.1))])
    resize = ([T.Resize(s.image_size)] if not s.data else
              [T.Resize(round(s.image_size * 256 / 224)), T.CenterCrop(s.image_size)])
    train, val = (paddle.io.DataLoader(data_mod.dataset(folder, samples, T.Compose(ops)),
                                       batch_size=s.batch_size, shuffle=shuffle)
                  for samples, ops, shuffle in ((folder.train, augment + normalize, True),
                                                (folder.val, resize + normalize, False)))
    steps, lr, opt = len(train), s.learning_rate, config["Optimizer"]
    warmup = min(1, s.epochs - 1) * steps  # one warm-up epoch
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(lr, T_max=s.epochs * steps - warmup)
    if warmup:
        schedule = paddle.optimizer.lr.LinearWarmup(schedule, warmup, lr / 10, lr)
    optimizer = paddle.optimizer.Momentum(
        schedule, opt["momentum"], network.parameters(), use_nesterov=opt["use_nesterov"],
        weight_decay=paddle.regularizer.L2Decay(opt["regularizer"]["coeff"]))
    smoothing, n = config["Loss"]["Train"][0]["CELoss"]["epsilon"], len(folder.train)
    with tqdm(total=s.epochs * steps, unit="step", disable=not s.progress,
              dynamic_ncols=True) as bar:
        for epoch in range(1, s.epochs + 1):
            bar.set_description(f"epoch {epoch}/{s.epochs}")
            stats = {"epoch": epoch, "train_loss": 0.0, "train_top1": 0.0}
            for images, labels in train:
                logits = network(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
                loss.backward()
                optimizer.step()
                optimizer.clear_grad()
                schedule.step()
                stats["train_loss"] += float(loss) * len(labels) / n
                stats["train_top1"] += int((logits.argmax(1) == labels).sum()) / n
                bar.update()
            with atomic_path(checkpoint) as tmp:
                paddle.save(network.state_dict(), str(tmp))
            history.append(stats)
            network.eval()
            with paddle.no_grad():
                logits, labels = (paddle.concat(z) for z in zip(*((network(x), y) for x, y in val)))
            network.train()
            stats["val_loss"] = float(F.cross_entropy(logits, labels))
            stats["val_top1"] = float((logits.argmax(1) == labels).astype("float32").mean())
            bar.write("epoch {epoch}/{}: train loss {train_loss:.3f}, top-1 {train_top1:.3f}; "
                      "held-out loss {val_loss:.3f}, top-1 {val_top1:.3f}".format(
                          s.epochs, **stats))
            if on_epoch_end is not None:  # tests simulate Ctrl-C here
                on_epoch_end(epoch)


def _train_paddleclas(s, folder, root: Path, out: Path, history: list) -> None:
    """PaddleClas's own tools/train.py, unmodified, in a child process, with the shipped
    config and -o options; ``history`` is read back from its train.log."""
    size, normalize = s.image_size, _eval_ops(s)[-2]
    crop = {"size": size} if s.data else {"size": size, "scale": [0.75, 1.0], "ratio": [0.9, 1.1]}
    decode = {"DecodeImage": {"to_rgb": True, "channel_first": False}}
    flip = [{"RandFlipImage": {"flip_code": 1}}] if s.data else []
    train_list = out / "train_subset_list.txt"  # the --train-images subset, or all
    train_list.write_text("".join(f"{rel} {label}\n" for rel, label in folder.train))

    def section(list_file, ops, shuffle):
        return {"dataset": {"name": "ImageNetDataset", "image_root": str(folder.root),
                            "cls_label_path": str(list_file), "transform_ops": ops},
                "sampler": {"name": "DistributedBatchSampler", "batch_size": s.batch_size,
                            "drop_last": False, "shuffle": shuffle},
                "loader": {"num_workers": 0, "use_shared_memory": False}}
    output = out / "ppcls_output"
    options = {"Global.device": "cpu", "Global.seed": s.seed, "Global.epochs": s.epochs,
               "Global.output_dir": str(output), "Global.image_shape": [3, size, size],
               "Arch.class_num": folder.num_classes,
               "Optimizer.lr": {"name": "Cosine", "learning_rate": s.learning_rate,
                                "warmup_epoch": min(1, s.epochs - 1),
                                "warmup_start_lr": s.learning_rate / 10},
               "DataLoader.Train": section(train_list, [decode, {"RandCropImage": crop}, *flip,
                                                        normalize], True),
               "DataLoader.Eval": section(folder.root / data_mod.VAL_LIST,
                                          [decode, *_eval_ops(s)[:-1]], False)}
    if s.pretrained:  # this package's PaddleClas factory loads any weight source
        options.update({"Arch.pretrained": s.pretrained, "Arch.skip_head": True})
    argv = [sys.executable, "tools/train.py", "-c", str(_shipped_config(s.variant)[0])]
    for key, value in options.items():
        if "=" in repr(value):  # PaddleClas splits each -o on "="
            raise DemoError(f"{key}={value!r}: PaddleClas's -o cannot pass '='; rename the folder")
        argv += ["-o", f"{key}={value!r}"]
    log = output / "train.log"
    try:  # Ctrl-C reaches the child too; subprocess.run waits for it, then re-raises
        subprocess.run(argv, cwd=root, check=True, env={**os.environ,
                                                        "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.CalledProcessError as error:
        raise DemoError(f"PaddleClas's tools/train.py exited with code {error.returncode}; its "
                        f"log: {log}. Rerun it in {root}: {shlex.join(argv)}")
    finally:
        text = log.read_text(errors="replace") if log.is_file() else ""
        for split, epoch, values in re.findall(r"\[(Train|Eval)\]\[Epoch (\d+)\D.*\[Avg\](.*)",
                                               text):
            if split == "Train":
                history.append({"epoch": int(epoch)})
            for name, value in re.findall(r"\b(loss|top1): ([\d.]+)", values) if history else []:
                history[-1][f"{'train' if split == 'Train' else 'val'}_{name}"] = float(value)


def _write_report(out: Path, history: list, matrix: np.ndarray, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key in zip(axes, ("loss", "top1")):
        for split, label in (("train", "train"), ("val", "held-out")):
            ax.plot([h["epoch"] for h in history], [h.get(f"{split}_{key}") for h in history],
                    marker="o", label=label)
        ax.set(title=key, xlabel="epoch")
        ax.legend()
    axes[2].imshow(matrix, cmap="Blues")
    axes[2].set(title="confusion matrix (held-out)", xlabel="predicted", ylabel="true")
    fig.suptitle(title, fontsize=10)
    with atomic_path(out / "report.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)


def run_demo(s: DemoSettings, on_epoch_end=None) -> dict:
    """Run the whole demo; return what metrics.json holds."""
    import paddle
    from ..deploy import export as export_mod, infer_config, predict, quantize
    from ..deploy.artifacts import QUANTIZATION_FILENAME
    from ..extras import missing, require
    from ..factories import create_model
    from ..weights import load_pretrained
    started, cpu_started, timings = time.perf_counter(), sum(os.times()[:4]), {}
    s = _checked(s)
    out, root = s.out, os.environ.get("PADDLECLAS_ROOT") if s.engine != "paddle" else None
    if (s.engine == "paddleclas" or root) and not (Path(root or "") / "tools/train.py").is_file():
        raise DemoError(f"--engine {s.engine} trains with PaddleClas's tools/train.py, not found "
                        f"in PADDLECLAS_ROOT={root or ''}: set it to a PaddleClas checkout, or "
                        f"pass --engine paddle")
    require("rexnet-plugin demo", "sklearn", "matplotlib")
    if int8_skipped := missing("paddle2onnx", "onnx", "onnxruntime"):
        print(f"the int8 step will be skipped: {int8_skipped}", flush=True)

    tick = time.perf_counter()
    folder = data_mod.read_image_folder(s.data) if s.data else None  # checked before writing
    _prepare_out(out, s.force)
    folder = folder or data_mod.write_digits(out / "data")
    calib_list, calib_count = folder.root / data_mod.TRAIN_LIST, len(folder.train)
    folder = replace(folder, train=folder.train[:s.train_images])
    timings["data_s"] = time.perf_counter() - tick
    print(f"data: {len(folder.train)} training and {len(folder.val)} held-out images, "
          f"{folder.num_classes} classes ({folder.root})", flush=True)

    paddle.seed(s.seed)
    np.random.seed(s.seed)  # the DataLoader's shuffling
    random.seed(s.seed)  # paddle.vision's random transforms
    network = create_model(s.variant, pretrained=s.pretrained or False, skip_head=True,
                           class_num=folder.num_classes,
                           dropout_ratio=_shipped_config(s.variant)[1]["Arch"]["dropout_ratio"])
    print(f"training {s.variant} from {s.pretrained or 'scratch'} for {s.epochs} epochs at "
          f"{s.image_size} px with " + (f"PaddleClas's tools/train.py ({root})" if root else
                                        "a Paddle dygraph loop"), flush=True)
    history, interrupted, tick = [], False, time.perf_counter()
    last = out / "checkpoints" / "last.pdparams"
    try:
        if root:
            _train_paddleclas(s, folder, Path(root).resolve(), out, history)
        else:
            _train_paddle(s, folder, network, last, history, on_epoch_end)
    except KeyboardInterrupt:
        interrupted = True
    timings["train_s"] = time.perf_counter() - tick
    checkpoints = (sorted(((int(p.stem[6:]), p) for p in out.glob(
        "ppcls_output/**/epoch_*.pdparams")), reverse=True) if root else
        [(len(history), last)] if history else [])
    epochs_done, checkpoint = 0, None
    for epoch, path in checkpoints:  # the newest that reads back whole
        try:
            load_pretrained(network, path, s.variant)
            epochs_done, checkpoint = epoch, path
            break
        except Exception as error:  # a file cut short by Ctrl-C: try the one before
            print(f"skipping checkpoint {path}: {error}", flush=True)
    if checkpoint is None:
        raise DemoInterrupted("Interrupted before the first epoch finished: no checkpoint, "
                              "nothing to evaluate. Rerun the same command to start afresh."
                              ) if interrupted else DemoError(
            f"training finished without a loadable checkpoint in {out}")
    history = [h for h in history if h["epoch"] <= epochs_done]
    if interrupted:
        print(f"\nInterrupted: evaluating and exporting the last completed epoch ({epochs_done}"
              f"/{s.epochs}). For the full schedule, rerun the same command.", flush=True)

    tick = time.perf_counter()  # export and int8, as rexnet-plugin export and quantize do
    with atomic_dir(out / "model") as tmp:
        export_mod.export_inference(network, tmp, image_size=s.image_size)
        (tmp / data_mod.LABEL_LIST).write_text(
            "".join(f"{i} {n}\n" for i, n in enumerate(folder.class_names)))
        infer_config.write_infer_config(
            tmp, model_name=s.variant, transform_ops=_eval_ops(s), softmax=False,
            topk=min(5, folder.num_classes), label_list=folder.class_names)
    timings["export_s"], tick = time.perf_counter() - tick, time.perf_counter()
    if not int8_skipped and calib_count < quantize.MIN_CALIBRATION_IMAGES:
        int8_skipped = (f"quantization calibrates on at least {quantize.MIN_CALIBRATION_IMAGES}"
                        f" images, and {calib_list} lists {calib_count}")
    print(f"int8 skipped: {int8_skipped}" if int8_skipped else
          f"quantizing model/ to int8, calibrated on {calib_list}", flush=True)
    if not int8_skipped:
        quantize.quantize_export(out / "model", calib_list, out / "model_int8", progress=s.progress)
    timings["quantize_s"], tick = time.perf_counter() - tick, time.perf_counter()

    # Held-out evaluation: dygraph, Paddle Inference and int8 on the same inputs, those
    # of model/inference.yml (what rexnet-plugin predict runs).
    fp32 = predict.load_model(out / "model", runtime="paddle")
    int8 = None if int8_skipped else predict.load_model(out / "model_int8")
    network.eval()
    runs = {"dygraph": lambda x: network(paddle.to_tensor(x)).numpy(), "fp32": fp32.run,
            **({"int8": int8.run} if int8 else {})}
    logits = {name: [] for name in runs}
    for start in range(0, len(folder.val), 64):
        x = np.stack([fp32.config.preprocess(folder.root / rel)
                      for rel, _ in folder.val[start:start + 64]])
        with paddle.no_grad():
            for name, run in runs.items():
                logits[name].append(run(x))
    logits = {name: np.concatenate(chunks) for name, chunks in logits.items()}
    labels, predicted = np.array([label for _, label in folder.val]), logits["fp32"].argmax(1)
    dygraph, int8_pred = logits["dygraph"], int8 and logits["int8"].argmax(1)
    timings["evaluate_s"] = time.perf_counter() - tick
    top1, k, names = float((predicted == labels).mean()), folder.num_classes, folder.class_names
    matrix = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    int8_metrics = {"skipped": int8_skipped} if not int8 else {
        "top1": float((int8_pred == labels).mean()),
        "agreement_with_fp32": float((int8_pred == predicted).mean()),
        "backend": int8.describe(), "model_dir": str(out / "model_int8"),
        "calibration": json.loads((out / "model_int8" / QUANTIZATION_FILENAME).read_text()
                                  )["calibration"]}
    _write_report(out, history, matrix, (
        f"{s.variant} {'fine-tuned' if s.pretrained else 'from scratch'} on "
        f"{s.data.name if s.data else 'sklearn digits'} ({s.image_size} px, {epochs_done} "
        f"epochs): held-out top-1 {100 * top1:.1f}%" + (
            f" (int8 {100 * int8_metrics['top1']:.1f}%)" if int8 else "")))
    timings["total_s"] = time.perf_counter() - started
    agreement = float((dygraph.argmax(1) == predicted).mean())
    metrics = {
        "top1": top1, "dygraph_top1": float((dygraph.argmax(1) == labels).mean()),
        "per_class_accuracy": {n: float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum()
                               else None for i, n in enumerate(names)},
        "confusion_matrix": matrix.tolist(),
        "predictor": {"backend": fp32.describe(), "agreement_with_dygraph": agreement,
                      "max_abs_logit_diff": float(np.abs(dygraph - logits["fp32"]).max())},
        "int8": int8_metrics,
        "engine_last_val_top1": history[-1].get("val_top1") if history else None,
        "epochs_completed": epochs_done, "interrupted": interrupted, "history": history,
        "engine": "paddleclas" if root else "paddle",
        "settings": {key: str(v) if isinstance(v, Path) else v for key, v in asdict(s).items()},
        "data": {"folder": str(folder.root), "train_images": len(folder.train),
                 "val_images": len(folder.val), "classes": k, "class_names": names},
        "checkpoint": str(checkpoint), "model_dir": str(out / "model"), "timings_s": timings,
        "cpu_time_s": sum(os.times()[:4]) - cpu_started, "cpu_count": os.cpu_count(),
        "versions": {"python": sys.version.split()[0], "paddlepaddle": paddle.__version__}}
    write_json(out / "metrics.json", metrics)
    (out / INCOMPLETE).unlink()
    print(f"\nheld-out top-1: {100 * top1:.2f}% ({len(labels)} images, {epochs_done} epochs"
          f"{f' of {s.epochs}, interrupted' if interrupted else ''}); Paddle Inference gives "
          f"dygraph's class on {100 * agreement:.1f}%" + (
              f"\nint8 ({int8.describe()}): held-out top-1 {100 * int8_metrics['top1']:.2f}%, "
              f"the fp32 class on {np.sum(int8_pred == predicted)}/{len(labels)}" if int8 else ""))
    print(f"report: {out} (report.png, metrics.json, model/{', model_int8/' * bool(int8)})\n"
          f"total time: {timings['total_s']:.0f} s", flush=True)
    return metrics


def run_from_args(args) -> int:
    """``rexnet-plugin demo``: exit 0, or 130 on Ctrl-C; the CLI reports bad input (exit 2)."""
    settings = DemoSettings(**{f.name: getattr(args, f.name) for f in fields(DemoSettings)
                               if f.name != "progress"})
    try:
        return 130 if run_demo(settings)["interrupted"] else 0
    except (DemoInterrupted, KeyboardInterrupt) as error:
        print(f"\n{str(error) or 'Interrupted.'}", file=sys.stderr)
        return 130
    finally:
        marker = Path(settings.out).resolve() / INCOMPLETE
        if marker.exists():
            print(f"{marker.parent} is incomplete ({INCOMPLETE} says so); rerun the same "
                  f"command to start afresh", file=sys.stderr)
