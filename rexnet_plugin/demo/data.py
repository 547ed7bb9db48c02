"""Image folders in PaddleClas's ImageNetDataset format (``relative/path.png label`` lines)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..deploy.infer_config import read_label_list
from ..files import atomic_dir

TRAIN_LIST, VAL_LIST, LABEL_LIST = "train_list.txt", "val_list.txt", "label_list.txt"
DIGITS_IMAGE_SIZE = 32  # the smallest input ReXNet takes


class DemoError(ValueError):
    """A problem the user can fix; the message says how (the CLI prints it, exit 2)."""


class DataError(DemoError):
    """A dataset folder that cannot be used; the message names the file and line."""


class DemoInterrupted(DemoError):
    """Ctrl-C before any epoch completed: nothing to evaluate."""


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    train: list[tuple[str, int]]  # (path relative to root, label)
    val: list[tuple[str, int]]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def write_digits(root: str | os.PathLike) -> ImageFolder:
    """scikit-learn's 8x8 digits as 32 px RGB PNGs with a stratified, fixed 80/20 split."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    scans = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    # random_state fixed: every run is scored on the same held-out images
    train, val = train_test_split(np.arange(len(scans)), test_size=0.2, random_state=0,
                                  stratify=digits.target)
    paths = [f"images/{label}/{i:04d}.png" for i, label in enumerate(digits.target)]
    with atomic_dir(Path(root)) as tmp:
        for scan, rel in zip(scans, paths):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(scan).resize((DIGITS_IMAGE_SIZE,) * 2, Image.BICUBIC).convert(
                "RGB").save(tmp / rel)
        for name, idx in ((TRAIN_LIST, train), (VAL_LIST, val)):
            (tmp / name).write_text("".join(f"{paths[i]} {digits.target[i]}\n" for i in idx))
        (tmp / LABEL_LIST).write_text("".join(f"{d} {d}\n" for d in range(10)))
    return read_image_folder(root)


def _read_list(path: Path, root: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise DataError(f"{path} not found. An ImageNet-format folder needs {TRAIN_LIST} and "
                        f"{VAL_LIST}, each with one 'relative/path.jpg label' per line.")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        # PaddleClas's ImageNetDataset splits on one space: paths cannot hold one.
        match = re.fullmatch(r"(\S+) (\d+)", line.strip())
        if line.strip() and not match:
            raise DataError(f"{path}:{lineno}: expected 'relative/path label' (one space "
                            f"between, a label index 0, 1, 2, ...; no spaces in paths), got "
                            f"{line.strip()!r}")
        if match and os.path.isabs(match[1]):
            raise DataError(f"{path}:{lineno}: {match[1]} is an absolute path; write it "
                            f"relative to {root}")
        if match and not (root / match[1]).is_file():
            raise DataError(f"{path}:{lineno}: image {root / match[1]} does not exist")
        rows += [(match[1], int(match[2]))] if match else []
    if not rows:
        raise DataError(f"{path} lists no images")
    return rows


def read_image_folder(root: str | os.PathLike) -> ImageFolder:
    """Validate an ImageNet-format folder; raise DataError naming the file and line."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: not a directory. Pass a folder holding "
                        f"{TRAIN_LIST}, {VAL_LIST} and the images.")
    train, val = _read_list(root / TRAIN_LIST, root), _read_list(root / VAL_LIST, root)
    if len({label for _, label in train}) < 2:
        raise DataError(f"{root / TRAIN_LIST}: needs images of at least two classes")
    used = 1 + max(label for _, label in train + val)
    names = [str(i) for i in range(used)]
    if (root / LABEL_LIST).is_file():
        try:  # PaddleClas's class_id_map_file format, as export --label-list reads it
            names = read_label_list(root / LABEL_LIST)
        except ValueError as err:
            raise DataError(str(err)) from None
        if len(names) < used:
            raise DataError(f"{root / LABEL_LIST} names {len(names)} classes, but the lists "
                            f"use the labels 0..{used - 1}: add a line for each")
    return ImageFolder(root, train, val, names)


def dataset(folder: ImageFolder, samples: list[tuple[str, int]], transform):
    """A ``paddle.io.Dataset`` of (transform(RGB PIL image), label)."""
    import paddle
    from PIL import Image

    class ListDataset(paddle.io.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            rel, label = samples[i]
            with Image.open(folder.root / rel) as image:
                return transform(image.convert("RGB")), np.int64(label)
    return ListDataset()
