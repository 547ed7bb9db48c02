"""The demo's training recipe, as a PaddleClas config.

One recipe feeds both training paths: the shipped
``ppcls_configs/<Variant>.yaml`` plus the ``-o key=value`` overrides from
``overrides()``. With a PaddleClas checkout, its unmodified
``tools/train.py`` gets exactly those; without one, ``effective_config()``
applies the same overrides to the same YAML and the Paddle path reads
optimizer, learning rate, loss, transforms and batch sizes from the result.
"""

from __future__ import annotations

import ast
import copy
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from .data import ImageFolder
from .errors import RecipeError

# ImageNet statistics, as in every PaddleClas config.
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class Recipe:
    """What the demo varies in the config; the rest comes from the shipped YAML."""

    variant: str
    epochs: int
    image_size: int
    batch_size: int
    learning_rate: float
    warmup_epochs: int
    seed: int
    digits: bool  # bundled digits (no flips, gentle crops) or a user's photos


def shipped_config(variant: str) -> Path:
    """The PaddleClas config this package ships for ``variant``."""
    path = resources.files("rexnet_plugin") / "ppcls_configs" / f"{variant}.yaml"
    if not path.is_file():
        raise RecipeError(
            f"no PaddleClas config shipped for {variant}: expected {path}. "
            f"Reinstall rexnet-plugin, or pick another --variant.")
    return Path(str(path))


def _normalize():
    return {"NormalizeImage": {"scale": "1.0/255.0", "mean": MEAN, "std": STD, "order": ""}}


def transform_ops(recipe: Recipe, train: bool) -> list:
    """PaddleClas transform ops for the recipe's data and image size."""
    size = recipe.image_size
    decode = {"DecodeImage": {"to_rgb": True, "channel_first": False}}
    if recipe.digits:
        # Digits are centred and orientation matters: a gentle crop, no flip.
        if train:
            return [decode, {"RandCropImage": {"size": size, "scale": [0.75, 1.0],
                                               "ratio": [0.9, 1.1]}}, _normalize()]
        return [decode, {"ResizeImage": {"size": size}}, _normalize()]
    if train:  # the usual ImageNet training transforms, at the chosen size
        return [decode, {"RandCropImage": {"size": size}},
                {"RandFlipImage": {"flip_code": 1}}, _normalize()]
    return [decode, {"ResizeImage": {"resize_short": round(size * 256 / 224)}},
            {"CropImage": {"size": size}}, _normalize()]


def overrides(recipe: Recipe, folder: ImageFolder, output_dir: Path,
              pretrained: str | None = None) -> list[str]:
    """PaddleClas ``-o key=value`` options: the demo on top of the shipped config.

    Values are Python literals, which PaddleClas's ``override`` evaluates;
    whole sections (a dataset, the learning rate) are replaced at once so
    nothing of the ImageNet recipe leaks in.
    """
    def dataset(list_file, train):
        return {"name": "ImageNetDataset", "image_root": str(folder.root),
                "cls_label_path": str(list_file),
                "transform_ops": transform_ops(recipe, train)}

    def sampler(train):
        return {"name": "DistributedBatchSampler", "batch_size": recipe.batch_size,
                "drop_last": False, "shuffle": train}

    # Single process: data loading is cheap next to the model on two cores.
    loader = {"num_workers": 0, "use_shared_memory": False}
    options = {
        "Global.device": "cpu",
        "Global.seed": recipe.seed,
        "Global.epochs": recipe.epochs,
        "Global.output_dir": str(output_dir),
        "Global.save_interval": 1,
        "Global.eval_during_train": True,
        "Global.eval_interval": 1,
        "Global.print_batch_step": 5,
        "Global.use_visualdl": False,
        "Global.image_shape": [3, recipe.image_size, recipe.image_size],
        "Arch.name": recipe.variant,
        "Arch.class_num": folder.num_classes,
        "Optimizer.lr": {"name": "Cosine", "learning_rate": recipe.learning_rate,
                         "warmup_epoch": recipe.warmup_epochs,
                         "warmup_start_lr": recipe.learning_rate / 10},
        "DataLoader.Train.dataset": dataset(folder.train_list, True),
        "DataLoader.Train.sampler": sampler(True),
        "DataLoader.Train.loader": loader,
        "DataLoader.Eval.dataset": dataset(folder.val_list, False),
        "DataLoader.Eval.sampler": sampler(False),
        "DataLoader.Eval.loader": loader,
    }
    if pretrained:
        # rexnet-plugin's PaddleClas factory loads any source (file, URL, source
        # name) and, with skip_head, leaves out a classifier of another size.
        options.update({"Arch.pretrained": str(pretrained), "Arch.skip_head": True})
    out = []
    for key, value in options.items():
        text = f"{key}={value!r}"
        if text.count("=") != 1:  # PaddleClas splits each option on "="
            raise RecipeError(f"{key}: PaddleClas's -o cannot pass a value containing "
                              f"'=' ({value!r}); rename the folder")
        out.append(text)
    return out


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: dict, options: list[str]) -> dict:
    """Apply ``key.sub.0.leaf=value`` options, as PaddleClas's ``-o`` does."""
    config = copy.deepcopy(config)
    for option in options:
        key, _, value = option.partition("=")
        node, parts = config, key.split(".")
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"-o {option}: {'.'.join(parts[:i + 1])} is not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = _parse_value(value)
        else:
            node[last] = _parse_value(value)
    return config


def effective_config(config_path: Path, options: list[str]) -> dict:
    """The shipped YAML with the demo's overrides applied."""
    with open(config_path) as f:
        config = yaml.safe_load(f)
    return apply_overrides(config, options)


def paddleclas_command(paddleclas_root: Path, config_path: Path,
                       options: list[str]) -> list[str]:
    """argv running PaddleClas's own ``tools/train.py`` with the recipe."""
    argv = [sys.executable, str(paddleclas_root / "tools" / "train.py"), "-c", str(config_path)]
    for option in options:
        argv += ["-o", option]
    return argv


# ---------------------------------------------------------------- Paddle path
# Build optimizer, schedule and loss from the config sections, with the
# meaning PaddleClas gives them (ppcls/optimizer, ppcls/loss).

def build_lr(lr_config: dict, epochs: int, steps_per_epoch: int):
    import paddle
    config = dict(lr_config)
    name = config.pop("name", None)
    base = float(config.get("learning_rate", 0.1))
    warmup_epochs = int(config.get("warmup_epoch", 0))
    warmup_steps = warmup_epochs * steps_per_epoch
    if name == "Cosine":
        t_max = (epochs - warmup_epochs) * steps_per_epoch
        schedule = (paddle.optimizer.lr.CosineAnnealingDecay(
            base, T_max=t_max, eta_min=float(config.get("eta_min", 0.0)))
            if t_max > 0 else base)
    elif name == "Piecewise":
        boundaries = [e * steps_per_epoch for e in config["decay_epochs"]]
        schedule = paddle.optimizer.lr.PiecewiseDecay(boundaries, config["values"])
        base = config["values"][0]
    elif name in ("Constant", "ConstLR"):
        schedule = base
    else:
        raise RecipeError(
            f"Optimizer.lr.name={name!r} is not supported without a PaddleClas checkout "
            f"(supported: Cosine, Piecewise, Constant). Set PADDLECLAS_ROOT to use "
            f"PaddleClas's engine.")
    if warmup_steps > 0:
        schedule = paddle.optimizer.lr.LinearWarmup(
            schedule, warmup_steps, float(config.get("warmup_start_lr", 0.0)), base)
    if not isinstance(schedule, paddle.optimizer.lr.LRScheduler):
        schedule = paddle.optimizer.lr.LambdaDecay(base, lambda step: 1.0)
    return schedule


def build_optimizer(opt_config: dict, parameters, epochs: int, steps_per_epoch: int):
    import paddle
    name = opt_config.get("name")
    if name != "Momentum":
        raise RecipeError(
            f"Optimizer.name={name!r} is not supported without a PaddleClas checkout "
            f"(supported: Momentum). Set PADDLECLAS_ROOT to use PaddleClas's engine.")
    lr = build_lr(opt_config.get("lr", {}), epochs, steps_per_epoch)
    regularizer = opt_config.get("regularizer") or {}
    if regularizer and regularizer.get("name") != "L2":
        raise RecipeError(f"Optimizer.regularizer.name={regularizer.get('name')!r}: "
                          f"only L2 is supported without a PaddleClas checkout")
    decay = (paddle.regularizer.L2Decay(float(regularizer["coeff"]))
             if regularizer else None)
    return paddle.optimizer.Momentum(
        learning_rate=lr, momentum=float(opt_config.get("momentum", 0.9)),
        parameters=parameters, use_nesterov=bool(opt_config.get("use_nesterov", False)),
        weight_decay=decay)


def build_loss(loss_config: list, where: str = "Loss.Train"):
    """A Loss section (``Loss.Train`` or ``Loss.Eval``): one CELoss, optionally label-smoothed."""
    import paddle
    if len(loss_config) != 1 or "CELoss" not in loss_config[0]:
        raise RecipeError(
            f"{where}={loss_config!r}: only a single CELoss is supported without a "
            f"PaddleClas checkout. Set PADDLECLAS_ROOT to use PaddleClas's engine.")
    params = loss_config[0]["CELoss"] or {}
    if float(params.get("weight", 1.0)) != 1.0:
        raise RecipeError(f"{where}.0.CELoss.weight={params['weight']}: only 1.0 is "
                          f"supported without a PaddleClas checkout")
    epsilon = params.get("epsilon") or 0.0
    return paddle.nn.CrossEntropyLoss(label_smoothing=float(epsilon) if 0 < epsilon < 1 else 0.0)
