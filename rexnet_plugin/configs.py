"""PaddleClas configs for every variant, and ``rexnet-plugin configs``.

``ppcls_configs/<Name>.yaml`` is ``TEMPLATE`` rendered for each name in
``zoo.VARIANTS``; ``python scripts/update_configs.py`` rewrites them and
tests/test_ppcls_configs.py fails when they drift. The files ship inside the
wheel (``rexnet_plugin/ppcls_configs`` links to the folder), and
``rexnet-plugin configs --dest DIR`` copies them out for a PaddleClas checkout.
"""

from __future__ import annotations

import os
import string
from importlib import resources
from pathlib import Path

from .files import write_text
from .zoo import EVAL_TRANSFORM, VARIANTS

# Official recipe: 128 images per GPU on 4 GPUs, lr 0.5 for that total.
OFFICIAL_TOTAL_BATCH = 512
OFFICIAL_LR = 0.5
# PaddleClas's configs assume 4 GPUs (its Engine warns otherwise for SGD)
# and 64 images per GPU for ReXNet.
PADDLECLAS_GPUS = 4
PER_GPU_BATCH = 64


def scaled_lr(value: float, per_gpu_batch: int = PER_GPU_BATCH,
              gpus: int = PADDLECLAS_GPUS) -> float:
    """Linear scaling rule: value * (per_gpu_batch * gpus) / 512."""
    return value * per_gpu_batch * gpus / OFFICIAL_TOTAL_BATCH


TEMPLATE = string.Template("""\
# ${name}: ${kind} x${width} for PaddleClas, from rexnet-plugin.
# Generated from rexnet_plugin/configs.py (python scripts/update_configs.py).
#
# Arch.name resolves to rexnet-plugin's model once the package is installed
# (pip install rexnet-plugin): PaddleClas itself needs no change.
#
# Train follows the official recipe (github.com/clovaai/rexnet, README,
# "Training own ReXNet"), run there with timm's train.py:
#   ./distributed_train.sh 4 /imagenet/ --model rexnetv1 --opt sgd --amp \\
#     --lr 0.5 --weight-decay 1e-5 --batch-size 128 --epochs 400 --sched cosine \\
#     --remode pixel --reprob 0.2 --drop 0.2 --aa rand-m9-mstd0.5
# Values the command leaves out are timm train.py's defaults of that time
# (commit 78fa0772, June 2020), marked "timm default" below.
#
# Batch and learning rates: the official run used 128 x 4 GPUs = 512 images
# per step. This config keeps PaddleClas's 64 per GPU on 4 GPUs = 256, and
# scales every learning rate linearly:
#   lr = official_lr * (batch_size * n_gpus) / 512
# e.g. 0.5 * (64 * 4) / 512 = ${lr}. With another batch or GPU count, rescale
# learning_rate, warmup_start_lr and eta_min with the same formula.
#
# Eval and Infer reproduce the seed's validation transform exactly:
# ${eval_text}.

Global:
  checkpoints: null
  pretrained_model: null
  output_dir: ./output/
  device: gpu
  save_interval: 1
  eval_during_train: True
  eval_interval: 1
  # official --epochs 400. timm then adds 10 cool-down epochs at min-lr
  # (timm default --cooldown-epochs 10); PaddleClas's Cosine has none.
  epochs: 400
  print_batch_step: 10
  use_visualdl: False
  image_shape: [3, ${crop}, ${crop}]
  save_inference_dir: ./inference
  to_static: False

# official --amp (fp16 mixed precision): a speed setting; switch it on for
# GPUs with -o AMP.use_amp=True. Off here so that the config runs on a CPU.
AMP:
  use_amp: False
  use_fp16_test: False
  scale_loss: 128.0
  use_dynamic_loss_scaling: True
  use_promote: False
  level: O1

Arch:
  name: ${name}
  class_num: 1000
  dropout_ratio: 0.2  # official --drop 0.2
  # Fine-tuning from a checkpoint with another class count: set class_num,
  # pretrained: <path> (or Global.pretrained_model) and skip_head: True.

Loss:
  Train:
    - CELoss:
        weight: 1.0
        epsilon: 0.1  # label smoothing: timm default --smoothing 0.1
  Eval:
    - CELoss:
        weight: 1.0

Optimizer:
  name: Momentum
  momentum: 0.9       # timm default --momentum 0.9
  use_nesterov: True  # official --opt sgd: timm's "sgd" is SGD with nesterov=True
  # timm exempts biases and BN (1-D tensors) from weight decay. PaddleClas's
  # no_weight_decay_name would too, but with Paddle 3.x it silently drops the
  # weight decay of every tensor (paddle's Momentum rewrites its parameter
  # groups and PaddleClas builds it twice), so 1e-5 applies to all tensors.
  lr:
    name: Cosine
    learning_rate: ${lr}  # official --lr 0.5 at batch 512, scaled (see top)
    warmup_epoch: 3   # timm default --warmup-epochs 3
    warmup_start_lr: ${warmup_lr}  # timm default --warmup-lr 1e-4, scaled
    eta_min: ${min_lr}  # timm default --min-lr 1e-5, scaled
  regularizer:
    name: L2
    coeff: 0.00001  # official --weight-decay 1e-5 (coupled L2, as torch's SGD)

DataLoader:
  Train:
    dataset:
      name: ImageNetDataset
      image_root: ./dataset/ILSVRC2012/
      cls_label_path: ./dataset/ILSVRC2012/train_list.txt
      transform_ops:
        - DecodeImage:
            to_rgb: True
            channel_first: False
            backend: pil  # timm augments PIL images
        # timm RandomResizedCropAndInterpolation: scale 0.08-1, log-uniform
        # aspect 3/4-4/3, bilinear or bicubic at random (timm default
        # --train-interpolation random)
        - RandCropImage:
            size: ${crop}
            scale: [0.08, 1.0]
            ratio: [0.75, 1.3333333333333333]
            use_log_aspect: True
            interpolation: random
            backend: pil
        - RandFlipImage:
            flip_code: 1  # timm default --hflip 0.5
        # official --aa rand-m9-mstd0.5 (timm's RandAugment, ported by
        # PaddleClas); timm gives it no fixed interpolation when training
        # interpolation is random. No colour jitter: timm skips it with --aa.
        - TimmAutoAugment:
            config_str: rand-m9-mstd0.5
            interpolation: random
            img_size: ${crop}
        - NormalizeImage:
            scale: 1.0/255.0
            mean: ${mean}
            std: ${std}
            order: ''
        # official --reprob 0.2 --remode pixel, after normalisation as in
        # timm; area 0.02-1/3, log aspect 0.3-1/0.3, 10 attempts, one box
        # (timm RandomErasing defaults, --recount 1)
        - RandomErasing:
            EPSILON: 0.2
            sl: 0.02
            sh: 1.0/3.0
            r1: 0.3
            attempt: 10
            use_log_aspect: True
            mode: pixel
    sampler:
      name: DistributedBatchSampler
      batch_size: ${batch}  # per GPU; official 128 per GPU (see top)
      drop_last: True  # timm drops the last partial training batch
      shuffle: True
    loader:
      num_workers: 4
      use_shared_memory: True

  Eval:
    dataset:
      name: ImageNetDataset
      image_root: ./dataset/ILSVRC2012/
      cls_label_path: ./dataset/ILSVRC2012/val_list.txt
      # The seed's transform. Resize and CenterCrop are paddle.vision's
      # operators, which PaddleClas exposes under these names, working on a
      # PIL image: the seed used exactly them. (ResizeImage rounds the long
      # side and CropImage floors the offset; the seed truncates the long side
      # and rounds the offset, so those would shift some images by a pixel.)
      transform_ops:
        - DecodeImage:
            to_np: False
            channel_first: False
            backend: pil
        - Resize:
            size: ${resize}
            interpolation: ${interpolation}
        - CenterCrop:
            size: ${crop}
        - NormalizeImage:
            scale: 1.0/255.0
            mean: ${mean}
            std: ${std}
            order: ''
    sampler:
      name: DistributedBatchSampler
      batch_size: ${batch}
      drop_last: False
      shuffle: False
    loader:
      num_workers: 4
      use_shared_memory: True

Infer:
  infer_imgs: docs/images/inference_deployment/whl_demo.jpg
  batch_size: 10
  transforms:  # the same as Eval, then HWC -> CHW
    - DecodeImage:
        to_np: False
        channel_first: False
        backend: pil
    - Resize:
        size: ${resize}
        interpolation: ${interpolation}
    - CenterCrop:
        size: ${crop}
    - NormalizeImage:
        scale: 1.0/255.0
        mean: ${mean}
        std: ${std}
        order: ''
    - ToCHWImage:
  PostProcess:
    name: Topk
    topk: 5
    class_id_map_file: ppcls/utils/imagenet1k_label_list.txt

Metric:
  Train:
    - TopkAcc:
        topk: [1, 5]
  Eval:
    - TopkAcc:
        topk: [1, 5]
""")


def _number(value: float) -> str:
    """Plain decimal: YAML 1.1 (PyYAML, PaddleClas) reads "5e-05" as a string."""
    return f"{value:.12f}".rstrip("0").rstrip(".")


def render(name: str) -> str:
    """The PaddleClas config of variant ``name``."""
    variant = VARIANTS[name]
    t = EVAL_TRANSFORM
    eval_text = (f"resize the short side to {t.resize_short} ({t.interpolation}, PIL),\n"
                 f"# center-crop {t.crop_size}, scale to [0, 1], normalise with the ImageNet mean/std")
    return TEMPLATE.substitute(
        name=name, kind="ReXNet-lite" if variant.lite else "ReXNet V1",
        width=variant.width_mult, eval_text=eval_text,
        lr=_number(scaled_lr(OFFICIAL_LR)), warmup_lr=_number(scaled_lr(1e-4)),
        min_lr=_number(scaled_lr(1e-5)), batch=PER_GPU_BATCH,
        resize=t.resize_short, crop=t.crop_size, interpolation=t.interpolation,
        mean=list(t.mean), std=list(t.std))


def config_filename(name: str) -> str:
    return f"{name}.yaml"


def shipped_dir():
    """The configs inside the installed package (a Traversable)."""
    return resources.files("rexnet_plugin") / "ppcls_configs"


def copy_configs(dest: str | os.PathLike, force: bool = False,
                 names: list[str] | None = None) -> dict[str, list[Path]]:
    """Copy the shipped configs (all variants, or ``names``) into ``dest``."""
    return copy_shipped(shipped_dir(), [config_filename(n) for n in names or VARIANTS],
                        Path(dest), force)


def copy_shipped(source, filenames: list[str], dest: Path,
                 force: bool) -> dict[str, list[Path]]:
    """Copy ``filenames`` from ``source`` (a folder in the package) into ``dest``.

    A file that exists with other content (say, the user edited it) is left
    alone unless ``force``. Returns {"written", "unchanged", "kept"} -> paths.
    """
    report = {"written": [], "unchanged": [], "kept": []}
    for name in filenames:
        text = (source / name).read_text(encoding="utf-8")
        target = dest / name
        if target.exists():
            if target.read_text(encoding="utf-8") == text:
                report["unchanged"].append(target)
                continue
            if not force:
                report["kept"].append(target)
                continue
        write_text(target, text)
        report["written"].append(target)
    return report


def main(args) -> int:
    """``rexnet-plugin configs --dest DIR [--force] [--names ...]``."""
    unknown = [n for n in args.names or [] if n not in VARIANTS]
    if unknown:
        print(f"rexnet-plugin configs: unknown variant(s) {', '.join(unknown)}; "
              f"valid names: {', '.join(VARIANTS)}")
        return 2
    report = copy_configs(args.dest, force=args.force, names=args.names)
    return print_report(report, "pass -o overrides to PaddleClas's tools")


def print_report(report: dict[str, list[Path]], instead: str) -> int:
    """Print what copy_configs did; 1 if edited files were kept, else 0."""
    for path in report["written"]:
        print(f"wrote     {path}")
    for path in report["unchanged"]:
        print(f"unchanged {path}")
    for path in report["kept"]:
        print(f"KEPT      {path}: it differs from the shipped config (edited?); "
              f"not overwritten")
    if report["kept"]:
        print(f"{len(report['kept'])} file(s) kept as they are. Rerun with --force to "
              f"replace them with the shipped configs (your changes would be lost), "
              f"or {instead} instead of editing.")
        return 1
    return 0
