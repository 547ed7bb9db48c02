"""The demo from start to end: data, training, evaluation, export, report."""

from __future__ import annotations

import os
import platform
import random
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..zoo import DEFAULT_VARIANT, get_variant
from . import data as data_mod
from . import recipe as recipe_mod
from . import train_ppcls
from .errors import DemoError, DemoInterrupted
from ..files import atomic_dir, atomic_path, write_json

# The default schedule: calibrated to pass 90% top-1 on the digits' held-out
# split within 5 minutes on 2 CPU cores (README, "Run the demo").
DEFAULT_EPOCHS = 6
DEFAULT_DIGITS_IMAGE_SIZE = 32
DEFAULT_DATA_IMAGE_SIZE = 224  # a user's photos: the configs' own size
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEARNING_RATE = 0.05
WARMUP_EPOCHS = 1
DEFAULT_OUT = "rexnet_demo"

MARKER = ".rexnet-demo"  # marks a folder this command wrote, so reruns may overwrite it
# Present from the start of a run until metrics.json is written: a failed or
# interrupted run leaves a folder that says it is incomplete.
INCOMPLETE = "INCOMPLETE.txt"
# What a previous run wrote; removed first, so that none sits beside a new run's files.
RESULTS = ("metrics.json", "config.yaml", "report.png", "training_curves.png",
           "confusion_matrix.png", "calibration_list.txt", "train_subset_list.txt",
           "model", "model_int8", "checkpoints", "ppcls_output")


@dataclass(frozen=True)
class DemoSettings:
    variant: str = DEFAULT_VARIANT
    epochs: int = DEFAULT_EPOCHS
    image_size: int | None = None  # None: 32 for the digits, 224 for --data
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    seed: int = 0
    out: Path = Path(DEFAULT_OUT)
    data: Path | None = None
    pretrained: str | None = None
    engine: str = "auto"  # auto, paddle or paddleclas
    force: bool = False
    train_images: int | None = None  # first N images of the training list only
    progress: bool = True
    show_predictions: int = 8

    def resolved(self) -> "DemoSettings":
        """Checked settings, with the dataset-dependent defaults filled in."""
        from ..model import MIN_INPUT_SIZE
        get_variant(self.variant)  # ValueError listing the valid names
        size = self.image_size or (DEFAULT_DATA_IMAGE_SIZE if self.data else
                                   DEFAULT_DIGITS_IMAGE_SIZE)
        if size < MIN_INPUT_SIZE:
            raise DemoError(f"--image-size {size}: ReXNet needs at least "
                            f"{MIN_INPUT_SIZE} px (five stride-2 stages)")
        for name, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if value < 1:
                raise DemoError(f"{name} {value}: must be at least 1")
        if not self.learning_rate > 0:
            raise DemoError(f"--lr {self.learning_rate}: must be above 0 (default "
                            f"{DEFAULT_LEARNING_RATE})")
        if self.train_images is not None and self.train_images < 1:
            raise DemoError(f"--train-images {self.train_images}: must be at least 1")
        if self.engine not in ("auto", "paddle", "paddleclas"):
            raise DemoError(f"engine {self.engine!r}: use auto, paddle or paddleclas")
        return replace(self, image_size=size, out=Path(self.out).resolve(),
                       data=Path(self.data).resolve() if self.data else None)


def _prepare_out(out: Path, force: bool) -> None:
    """Refuse to write into a non-empty folder this command did not create."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; pass a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise DemoError(
            f"--out {out} is not empty and was not written by 'rexnet-plugin demo'. "
            f"Pass another --out, or --force to write the report into it (files with "
            f"the report's names are overwritten; nothing else is touched).")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by rexnet-plugin demo\n")
    (out / INCOMPLETE).write_text(
        "rexnet-plugin demo started here and has not finished: this folder is incomplete.\n"
        "A finished run writes metrics.json and removes this file. Rerun the demo to start "
        "afresh (it replaces this folder's results).\n")
    for stale in RESULTS:
        path = out / stale
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _seed_everything(seed: int) -> None:
    import paddle
    paddle.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _versions() -> dict:
    from importlib import metadata
    out = {"python": platform.python_version()}
    for dist in ("rexnet-plugin", "paddlepaddle", "paddleclas", "numpy", "scikit-learn",
                 "opencv-python", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    times = os.times()  # portable; children count once they have been waited for
    return times.user + times.system + times.children_user + times.children_system


def _rerun_command(settings: DemoSettings) -> str:
    """The CLI command for these settings (options left at their defaults omitted)."""
    defaults = DemoSettings()
    options = {"variant": "--variant", "epochs": "--epochs", "image_size": "--image-size",
               "batch_size": "--batch-size", "learning_rate": "--lr", "seed": "--seed",
               "out": "--out", "data": "--data", "pretrained": "--pretrained",
               "engine": "--engine", "train_images": "--train-images"}
    argv = ["rexnet-plugin", "demo"]
    for field, option in options.items():
        value = getattr(settings, field)
        if value is not None and (value != getattr(defaults, field) or field == "out"):
            argv += [option, str(value)]
    if settings.force:
        argv.append("--force")
    return shlex.join(argv)


def _load_checkpoint(network, path: Path, variant: str) -> None:
    from ..weights import load_pretrained
    load_pretrained(network, path, variant=variant)


def _say(message: str) -> None:
    print(message, flush=True)


# Paddle's warnings that say nothing about this run.
_QUIET = ("No ccache found", "When training, we now always track global mean",
          "To copy construct from a tensor")


def run_demo(settings: DemoSettings, on_epoch_end=None) -> dict:
    """Run the whole demo; return what metrics.json holds.

    ``on_epoch_end(epoch)`` is called after each epoch of the Paddle path
    (tests use it to simulate Ctrl-C).
    """
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        return _run(settings, on_epoch_end)


def _run(settings: DemoSettings, on_epoch_end) -> dict:
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    settings = settings.resolved()
    root = (train_ppcls.paddleclas_root(required=settings.engine == "paddleclas")
            if settings.engine != "paddle" else None)
    engine = "paddleclas" if root else "paddle"
    out = settings.out
    config_path = recipe_mod.shipped_config(settings.variant)
    timings = {}
    # Checked before any work: the demo's own needs, then the int8 step's.
    from ..extras import missing, require
    require("rexnet-plugin demo", "sklearn", "cv2", "matplotlib")
    int8_unavailable = missing("paddle2onnx", "onnx", "onnxruntime")
    if int8_unavailable:
        _say(f"the int8 step will be skipped: {int8_unavailable}")

    # 1. data ------------------------------------------------------------
    tick = time.perf_counter()
    if settings.data:  # checked before anything is written
        folder = data_mod.read_image_folder(settings.data)
        data_info = {"source": str(settings.data)}
    _prepare_out(out, settings.force)
    if not settings.data:
        folder = data_mod.write_digits(out / "data")
        data_info = {"source": "sklearn.datasets.load_digits (1,797 8x8 scans of handwritten "
                               "digits), written as PNG",
                     "folder": str(out / "data"), "split_seed": data_mod.DIGITS_SPLIT_SEED,
                     "val_fraction": data_mod.DIGITS_VAL_FRACTION}
    if settings.train_images and settings.train_images < len(folder.train):
        folder = data_mod.limit_train(folder, settings.train_images,
                                      out / "train_subset_list.txt")
    data_info.update(train_images=len(folder.train), val_images=len(folder.val),
                     classes=folder.num_classes, class_names=folder.class_names)
    timings["data_s"] = time.perf_counter() - tick
    _say(f"data: {len(folder.train)} training and {len(folder.val)} held-out images, "
         f"{folder.num_classes} classes ({folder.root})")

    # 2. the recipe: shipped PaddleClas config + overrides ----------------
    recipe = recipe_mod.Recipe(
        variant=settings.variant, epochs=settings.epochs, image_size=settings.image_size,
        batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        warmup_epochs=min(WARMUP_EPOCHS, settings.epochs - 1), seed=settings.seed,
        digits=settings.data is None)
    ppcls_output = out / "ppcls_output"
    options = recipe_mod.overrides(recipe, folder, ppcls_output, settings.pretrained)
    config = recipe_mod.effective_config(config_path, options)
    with atomic_path(out / "config.yaml") as tmp:
        import yaml
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    ppcls_argv = recipe_mod.paddleclas_command(root or Path("$PADDLECLAS_ROOT"),
                                               config_path, options)

    # 3. training -------------------------------------------------------
    _seed_everything(settings.seed)
    network = _build_network(config["Arch"])
    history: list[dict] = []
    interrupted = False
    tick = time.perf_counter()
    _say(f"training {settings.variant} from "
         f"{'scratch' if not settings.pretrained else settings.pretrained} for "
         f"{settings.epochs} epochs at {settings.image_size} px, "
         + ("with PaddleClas's engine (" + str(root) + ")" if engine == "paddleclas"
            else "with paddle.Model.fit (set PADDLECLAS_ROOT to use PaddleClas's engine)"))
    try:
        if engine == "paddleclas":
            _say("PaddleClas command: " + " ".join(ppcls_argv[:4]) + " -o ... (see metrics.json)")
            train_ppcls.train_with_paddleclas(ppcls_argv, root, ppcls_output)
        else:
            from .train_paddle import train_with_paddle
            train_with_paddle(config, folder, network, out / "checkpoints", history,
                              settings.seed, progress=settings.progress,
                              on_epoch_end=on_epoch_end)
    except KeyboardInterrupt:
        interrupted = True
    timings["train_s"] = time.perf_counter() - tick

    # The weights to evaluate: the last completed epoch.
    if engine == "paddleclas":
        history = train_ppcls.read_history(ppcls_output)
        candidates = train_ppcls.checkpoints(ppcls_output)
    else:
        from .train_paddle import last_checkpoint
        found = last_checkpoint(out / "checkpoints")
        candidates = [found] if found else []
    epochs_done, checkpoint = _load_newest(network, candidates, settings.variant)
    if checkpoint is None and interrupted:
        raise DemoInterrupted(
            "Interrupted before the first epoch finished: no checkpoint, nothing to "
            f"evaluate. Rerun: {_rerun_command(settings)}")
    if checkpoint is None:
        raise DemoError(f"training finished without a loadable checkpoint in "
                        f"{ppcls_output if engine == 'paddleclas' else out / 'checkpoints'}")
    history = [h for h in history if h["epoch"] <= epochs_done]
    if engine == "paddleclas":
        train_ppcls.prune_checkpoints(ppcls_output, keep=checkpoint)
    if interrupted:
        _say(f"\nInterrupted: evaluating and exporting the last completed epoch "
             f"({epochs_done}/{settings.epochs}, {checkpoint}). For the full schedule, "
             f"rerun: {_rerun_command(settings)}")

    # 4. export, then held-out evaluation in dygraph and Paddle Inference --
    from ..deploy.export import export_inference
    from ..deploy.runtime import create_predictor
    tick = time.perf_counter()
    model_dir = out / "model"
    eval_ops = config["DataLoader"]["Eval"]["dataset"]["transform_ops"]
    with atomic_dir(model_dir) as tmp:
        export_inference(network, tmp, image_size=settings.image_size)
        (tmp / data_mod.LABEL_LIST).write_text(folder.label_list_text())
        _write_infer_config(tmp, settings.variant, eval_ops, folder.class_names)
    timings["export_s"] = time.perf_counter() - tick

    # 5. int8: quantize model/ on the training images (rexnet-plugin quantize) --
    tick = time.perf_counter()
    int8_dir = out / "model_int8"
    from ..deploy.quantize import MIN_CALIBRATION_IMAGES
    int8_model, calibration, int8_skipped = None, None, None
    shutil.rmtree(int8_dir, ignore_errors=True)  # a previous run's: this run's replaces it
    if int8_unavailable:
        int8_skipped = f"int8 skipped: {int8_unavailable}"
        _say(int8_skipped)
    elif len(folder.train) < MIN_CALIBRATION_IMAGES:
        int8_skipped = (f"int8 skipped: quantization calibrates on at least "
                        f"{MIN_CALIBRATION_IMAGES} images, and there are {len(folder.train)} "
                        f"training images")
        _say(int8_skipped)
    else:
        _say("quantizing model/ to int8 (ONNX Runtime), calibrated on training images")
        int8_model, calibration = _quantize(model_dir, _calibration_list(folder, out),
                                            int8_dir, settings.progress)
    timings["quantize_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    from .report import evaluate, write_plots
    predictor = create_predictor(model_dir, mkldnn=True)
    evaluation = evaluate(network, predictor, folder, eval_ops, int8_model=int8_model)
    timings["evaluate_and_predict_s"] = time.perf_counter() - tick

    # 6. report ---------------------------------------------------------
    names = folder.class_names
    _say(f"\nheld-out predictions (Paddle Inference, oneDNN), first {settings.show_predictions}:")
    shown = range(min(settings.show_predictions, len(folder.val)))
    for (rel, label), pred, logits in ((folder.val[i], evaluation.predictions[i],
                                        evaluation.predictor_logits[i]) for i in shown):
        prob = np.exp(logits - logits.max())
        prob = prob[pred] / prob.sum()
        mark = "ok" if pred == label else "WRONG"
        _say(f"  {rel:<28} true {names[label]:<8} predicted {names[pred]:<8} "
             f"p={prob:.2f}  {mark}")

    matrix = evaluation.confusion_matrix(folder.num_classes)
    start = "fine-tuned" if settings.pretrained else "from scratch"
    title = (f"{settings.variant} {start} on "
             f"{settings.data.name if settings.data else 'sklearn digits'} "
             f"({settings.image_size} px, {epochs_done} epochs, {engine}): held-out top-1 "
             f"{100 * evaluation.top1:.1f}%"
             + (f" (int8 {100 * evaluation.int8_top1:.1f}%)" if int8_model else "")
             + f" on {len(folder.val)} images")
    plots = write_plots(out, history, matrix, names, title)

    timings["total_s"] = time.perf_counter() - started
    metrics = {
        "top1": evaluation.top1,
        "dygraph_top1": evaluation.dygraph_top1,
        "per_class_accuracy": evaluation.per_class_accuracy(names),
        "confusion_matrix": matrix.tolist(),
        "predictor": {"backend": "Paddle Inference, CPU, oneDNN",
                      "agreement_with_dygraph": evaluation.agreement,
                      "max_abs_logit_diff": evaluation.max_abs_logit_diff},
        # model/ quantized (rexnet-plugin quantize) and run on the held-out images.
        "int8": ({"top1": evaluation.int8_top1,
                  "agreement_with_fp32": evaluation.int8_agreement,
                  "backend": {"onnx": "ONNX Runtime, CPU",
                              "paddle": "Paddle Inference, CPU, oneDNN"}[int8_model.runtime],
                  "model_dir": str(int8_dir), "calibration": calibration}
                 if int8_model else {"skipped": int8_skipped}),
        # The engine's own held-out top-1 at the last epoch (PaddleClas's or
        # paddle.Model's): a cross-check of the evaluation above.
        "engine_last_val_top1": history[-1].get("val_top1") if history else None,
        "epochs_completed": epochs_done,
        "interrupted": interrupted,
        "history": history,
        "engine": engine,
        "settings": {**{k: (str(v) if isinstance(v, Path) else v)
                        for k, v in asdict(settings).items()
                        if k not in ("progress", "show_predictions")},
                     "warmup_epochs": recipe.warmup_epochs},
        "data": data_info,
        "checkpoint": str(checkpoint),
        "model_dir": str(model_dir),
        "config": {"shipped": str(config_path), "effective": str(out / "config.yaml"),
                   "paddleclas_overrides": options,
                   "paddleclas_command": ppcls_argv},
        "plots": plots,
        "timings_s": timings,
        "cpu_time_s": _cpu_seconds() - cpu_started,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions(),
        "command": _rerun_command(settings),
    }
    write_json(out / "metrics.json", metrics)
    (out / INCOMPLETE).unlink()

    _say(f"\nheld-out top-1: {100 * evaluation.top1:.2f}% ({len(folder.val)} images, "
         f"{epochs_done} epochs{f' of {settings.epochs}, interrupted' if interrupted else ''})")
    _say(f"Paddle Inference vs dygraph: {100 * evaluation.agreement:.1f}% same class, "
         f"max |logit diff| {evaluation.max_abs_logit_diff:.2e}")
    if int8_model:
        agree = round(evaluation.int8_agreement * len(folder.val))
        _say(f"int8 (ONNX Runtime, calibrated on {calibration['images']} training images): "
             f"held-out top-1 {100 * evaluation.int8_top1:.2f}%, the fp32 predictor's class "
             f"on {agree}/{len(folder.val)}")
    _say(f"report: {out} (report.png, training_curves.png, confusion_matrix.png, "
         f"metrics.json, model/{', model_int8/' if int8_model else ''})")
    _say(f"total time: {timings['total_s']:.0f} s ({timings['total_s'] / 60:.1f} min)")
    return metrics


def _calibration_list(folder, out: Path) -> Path:
    """The training list, with paths relative to the list's own folder (what
    quantize reads). --train-images writes its list into ``out``, with paths
    relative to the data folder (PaddleClas's image_root): rewritten here."""
    if folder.train_list.parent == folder.root:
        return folder.train_list
    path = out / "calibration_list.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{Path(os.path.relpath(folder.root / rel, out)).as_posix()} "
                               f"{label}\n" for rel, label in folder.train))
    return path


def _quantize(model_dir: Path, calib_list: Path, int8_dir: Path, progress: bool):
    """model/ quantized to int8 as rexnet-plugin quantize does, calibrated on the
    training images of ``calib_list`` (quantize's default number, spread over the
    list); returns it loaded (deploy.predict.load_model) and the calibration record."""
    import json
    from ..deploy.artifacts import QUANTIZATION_FILENAME
    from ..deploy.predict import load_model
    from ..deploy.quantize import quantize_export
    quantize_export(model_dir, calib_list, int8_dir, progress=progress)
    record = json.loads((int8_dir / QUANTIZATION_FILENAME).read_text())
    return load_model(int8_dir), record["calibration"]


def _write_infer_config(model_dir: Path, variant: str, eval_ops: list,
                        class_names: list[str]) -> None:
    """inference.yml for model/: the recipe's eval transform as PaddleClas's deploy
    operators (what rexnet-plugin predict and quantize read), logits out."""
    from ..deploy.infer_config import ops_from_paddleclas, write_infer_config
    ops = ops_from_paddleclas(eval_ops, "DataLoader.Eval.dataset.transform_ops")
    if not any("ToCHWImage" in op for op in ops):  # PaddleClas's dataset transposes itself
        ops.append({"ToCHWImage": None})
    write_infer_config(model_dir, model_name=variant, transform_ops=ops,
                       topk=min(5, len(class_names)), label_list=list(class_names),
                       softmax=False)


def _build_network(arch: dict):
    """The model of the config's Arch section, as PaddleClas's factory builds it."""
    from ..factories import create_model
    from ..weights import load_pretrained
    arch = dict(arch)
    name, pretrained = arch.pop("name"), arch.pop("pretrained", False)
    skip_head = arch.pop("skip_head", False)
    network = create_model(name, **arch)
    if pretrained:
        load_pretrained(network, pretrained, variant=name, skip_head=skip_head)
    return network


def _load_newest(network, candidates: list[tuple[int, Path]], variant: str):
    """Load the newest checkpoint that reads back whole; (epoch, path) or (0, None)."""
    for epoch, path in candidates:
        try:
            _load_checkpoint(network, path, variant)
            return epoch, path
        except Exception as error:  # a file cut short by Ctrl-C: try the one before
            _say(f"skipping checkpoint {path}: {error}")
    return 0, None


def run_from_args(args) -> int:
    """``rexnet-plugin demo``: exit 0 on success, 2 on bad input, 130 on Ctrl-C."""
    # Before paddle loads: keep its C++ warnings (e.g. about PIR export) quiet.
    os.environ.setdefault("GLOG_minloglevel", "2")
    from ..extras import MissingDependencyError
    from ..weights.errors import WeightsError
    settings = DemoSettings(
        variant=args.variant, epochs=args.epochs, image_size=args.image_size,
        batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
        out=args.out, data=args.data, pretrained=args.pretrained, engine=args.engine,
        force=args.force, train_images=args.train_images)
    try:
        metrics = run_demo(settings)
    except DemoInterrupted as error:
        print(f"\n{error}", file=sys.stderr)
        return _incomplete_note(settings, 130)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return _incomplete_note(settings, 130)
    except (DemoError, WeightsError, MissingDependencyError) as error:
        print(f"rexnet-plugin demo: error: {error}", file=sys.stderr)
        return _incomplete_note(settings, 2)
    except BaseException:
        _incomplete_note(settings, 1)
        raise
    return 130 if metrics["interrupted"] else 0


def _incomplete_note(settings: DemoSettings, code: int) -> int:
    marker = Path(settings.out).resolve() / INCOMPLETE
    if marker.exists():
        print(f"{marker.parent} is incomplete ({INCOMPLETE} says so); the next run starts "
              f"afresh: {_rerun_command(settings)}", file=sys.stderr)
    return code
