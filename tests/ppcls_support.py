"""Helpers for the PaddleClas tests: a checkout's location, a tiny dataset,
and running PaddleClas's own tools in subprocesses."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "ppcls_configs"

# The tiny dataset: a few classes, a few dozen small images.
NUM_CLASSES = 3
TRAIN_PER_CLASS = 8
VAL_PER_CLASS = 4
IMAGE_HW = (48, 64)
# Small training/eval sizes, set with -o overrides only.
CROP = 56
RESIZE = 64
BATCH = 8


# The pip wheel paddleclas: the built-in ReXNet and its ppcls tree. It pins
# numpy==1.24.4, which has no wheel for Python 3.12+, so it is not installed there.
needs_paddleclas_wheel = pytest.mark.skipif(
    importlib.util.find_spec("paddleclas") is None,
    reason="the paddleclas wheel is not installed (Python 3.12+ has none: it pins "
           "numpy==1.24.4); these tests use its ppcls and built-in ReXNet")


def paddleclas_root() -> Path:
    """The PaddleClas source checkout from PADDLECLAS_ROOT, or skip."""
    value = os.environ.get("PADDLECLAS_ROOT")
    if not value:
        pytest.skip("PADDLECLAS_ROOT is not set: these tests run PaddleClas's own "
                    "tools/*.py and need a PaddleClas source checkout (git clone "
                    "https://github.com/PaddlePaddle/PaddleClas; .ci/run extracts one "
                    "when a mirror is available)")
    root = Path(value)
    if not (root / "tools" / "train.py").is_file() or not (root / "ppcls").is_dir():
        pytest.fail(f"PADDLECLAS_ROOT={root} is not a PaddleClas checkout "
                    f"(no tools/train.py or ppcls/)")
    return root


def sample_photos(folder: Path) -> list[Path]:
    """Real photos: scikit-learn's two samples (640x427), and a portrait crop of
    odd width (287x427) written into ``folder``."""
    from importlib import resources
    from PIL import Image
    images = resources.files("sklearn.datasets") / "images"
    paths = [Path(str(images / "china.jpg")), Path(str(images / "flower.jpg"))]
    portrait = Path(folder) / "portrait.png"
    Image.open(paths[0]).convert("RGB").crop((101, 0, 388, 427)).save(portrait)
    return [*paths, portrait]


def seed_transform(path, resize_short: int | None = None, crop: int | None = None) -> np.ndarray:
    """The seed's validation transform, written out with PIL and numpy: CHW float32.

    The seed (PPIM) used paddle.vision's Resize(256, 'bicubic') and
    CenterCrop(224) on PIL images: the long side is truncated, the crop
    offset rounded.
    """
    from PIL import Image
    from rexnet_plugin.zoo import EVAL_TRANSFORM as t
    resize_short, crop = resize_short or t.resize_short, crop or t.crop_size
    assert t.interpolation == "bicubic"
    img = Image.open(path).convert("RGB")
    w, h = img.size
    size = (resize_short, int(resize_short * h / w)) if w < h else (int(resize_short * w / h), resize_short)
    img = img.resize(size, Image.BICUBIC)
    left = int(round((size[0] - crop) / 2.0))
    top = int(round((size[1] - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - np.array(t.mean, np.float32)) / np.array(t.std, np.float32)
    return x.transpose(2, 0, 1)


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write into the checkout
    env.pop("REXNET_PLUGIN_AUTOLOAD", None)
    if "PYTHONPATH" in extra:  # added in front: the network guard stays on the path
        extra["PYTHONPATH"] = os.pathsep.join(filter(None, [extra["PYTHONPATH"],
                                                            env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def make_dataset(root: Path) -> Path:
    """An ImageNet-format dataset: <split>/<class>/<i>.jpg and <split>_list.txt.

    Each class has its own dominant colour, so there is something to learn.
    """
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        lines = []
        for label in range(NUM_CLASSES):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 60, (*IMAGE_HW, 3))
                pixels[..., label] += 180
                rel = f"{split}/{label}/{i}.jpg"
                Image.fromarray(pixels.astype(np.uint8)).save(root / rel, quality=95)
                lines.append(f"{rel} {label}")
        (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
    return root


def data_overrides(data: Path, train=True, evaluate=True) -> list[str]:
    """-o overrides pointing a shipped config at the tiny dataset, on the CPU."""
    o = ["Global.device=cpu", f"Arch.class_num={NUM_CLASSES}",
         f"Global.image_shape=[3,{CROP},{CROP}]"]
    if train:
        o += [f"DataLoader.Train.dataset.image_root={data}",
              f"DataLoader.Train.dataset.cls_label_path={data}/train_list.txt",
              f"DataLoader.Train.dataset.transform_ops.1.RandCropImage.size={CROP}",
              f"DataLoader.Train.dataset.transform_ops.3.TimmAutoAugment.img_size={CROP}",
              f"DataLoader.Train.sampler.batch_size={BATCH}",
              "DataLoader.Train.loader.num_workers=0",
              "Metric.Train.0.TopkAcc.topk=[1,2]"]
    if evaluate:
        o += [f"DataLoader.Eval.dataset.image_root={data}",
              f"DataLoader.Eval.dataset.cls_label_path={data}/val_list.txt",
              f"DataLoader.Eval.dataset.transform_ops.1.Resize.size={RESIZE}",
              f"DataLoader.Eval.dataset.transform_ops.2.CenterCrop.size={CROP}",
              f"DataLoader.Eval.sampler.batch_size={BATCH}",
              "DataLoader.Eval.loader.num_workers=0",
              "Metric.Eval.0.TopkAcc.topk=[1,2]"]
    return o


def run_tool(root: Path, tool: str, config: Path, overrides: list[str], cwd: Path,
             launcher: list[str] | None = None, expect_ok: bool = True,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """python [launcher] <root>/tools/<tool>.py -c <config> -o ... in ``cwd``."""
    cmd = [sys.executable, *(launcher or []), str(root / "tools" / f"{tool}.py"),
           "-c", str(config)]
    for item in overrides:
        cmd += ["-o", item]
    result = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True,
                            text=True, timeout=timeout)
    if expect_ok and result.returncode != 0:
        raise AssertionError(f"{tool}.py failed ({result.returncode}):\n"
                             f"{' '.join(cmd)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result
