"""Image folders in PaddleClas's ImageNetDataset format, and their loading.

The format: ``train_list.txt`` and ``val_list.txt`` hold one
``relative/path.png label`` per line (one space between, labels 0..K-1),
paths relative to the folder; ``label_list.txt`` (optional) holds
``label name`` per line. The bundled dataset is scikit-learn's handwritten
digits written out in that format.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import DataError, RecipeError
from ..files import atomic_dir, atomic_path

TRAIN_LIST = "train_list.txt"
VAL_LIST = "val_list.txt"
LABEL_LIST = "label_list.txt"

DIGIT_NAMES = tuple(str(d) for d in range(10))
# The digits are written once at this size; the transforms resize them to
# the training size. 32 px is the smallest input ReXNet accepts.
DIGITS_IMAGE_SIZE = 32
DIGITS_VAL_FRACTION = 0.2
# The split is fixed, so that every run is scored on the same held-out images.
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class ImageFolder:
    """A validated ImageNet-format folder."""

    root: Path
    train: list[tuple[str, int]]  # (path relative to root, label)
    val: list[tuple[str, int]]
    class_names: list[str]
    train_list: Path
    val_list: Path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_list_text(self) -> str:
        return "".join(f"{i} {name}\n" for i, name in enumerate(self.class_names))


def write_digits(root: str | os.PathLike) -> ImageFolder:
    """Write scikit-learn's 1,797 handwritten digits as an ImageNet-format folder.

    The 8x8 scans (values 0-16) become ``DIGITS_IMAGE_SIZE`` px RGB PNGs
    (bicubic upscaling, grey replicated to three channels) under
    ``images/<digit>/``; the train/val split is stratified and fixed by
    ``DIGITS_SPLIT_SEED``. Written into a temporary folder, then renamed.
    """
    import cv2
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root)
    digits = load_digits()
    scans = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    indices = np.arange(len(scans))
    train_idx, val_idx = train_test_split(
        indices, test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SPLIT_SEED,
        stratify=digits.target)

    with atomic_dir(root) as tmp:
        paths = []
        for i, (scan, label) in enumerate(zip(scans, digits.target)):
            big = cv2.resize(scan, (DIGITS_IMAGE_SIZE, DIGITS_IMAGE_SIZE),
                             interpolation=cv2.INTER_CUBIC)
            rel = f"images/{label}/{i:04d}.png"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(tmp / rel), cv2.merge([big, big, big])):
                raise OSError(f"could not write {tmp / rel}")
            paths.append(rel)
        for name, idx in ((TRAIN_LIST, train_idx), (VAL_LIST, val_idx)):
            (tmp / name).write_text("".join(f"{paths[i]} {digits.target[i]}\n" for i in idx))
        (tmp / LABEL_LIST).write_text("".join(f"{i} {n}\n" for i, n in enumerate(DIGIT_NAMES)))
    return read_image_folder(root)


def limit_train(folder: ImageFolder, count: int, list_path: Path) -> ImageFolder:
    """The same folder with only the first ``count`` training images, listed in ``list_path``."""
    train = folder.train[:count]
    with atomic_path(list_path) as tmp:
        tmp.write_text("".join(f"{rel} {label}\n" for rel, label in train))
    return replace(folder, train=train, train_list=list_path)


def _read_list(path: Path, root: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise DataError(
            f"{path} not found. An ImageNet-format folder needs {TRAIN_LIST} and "
            f"{VAL_LIST}, each with one 'relative/path.jpg label' per line.")
    samples = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        # PaddleClas's ImageNetDataset splits on one space: paths cannot hold one.
        fields = line.strip().split(" ")
        if len(fields) != 2:
            raise DataError(
                f"{path}:{lineno}: expected 'relative/path label' separated by one "
                f"space, got {line.strip()!r}. Paths must not contain spaces.")
        rel, label = fields
        try:
            label = int(label)
        except ValueError:
            raise DataError(f"{path}:{lineno}: label {label!r} is not an integer; "
                            f"labels are class indices 0, 1, 2, ...") from None
        if label < 0:
            raise DataError(f"{path}:{lineno}: label {label} is negative; labels "
                            f"are class indices 0, 1, 2, ...")
        if os.path.isabs(rel):
            raise DataError(f"{path}:{lineno}: {rel} is an absolute path; write it "
                            f"relative to {root}")
        if not (root / rel).is_file():
            raise DataError(f"{path}:{lineno}: image {root / rel} does not exist")
        samples.append((rel, label))
    if not samples:
        raise DataError(f"{path} lists no images")
    return samples


def _read_label_names(path: Path, num_labels: int) -> list[str]:
    if not path.is_file():
        return [str(i) for i in range(num_labels)]
    names = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        label, _, name = line.strip().partition(" ")
        try:
            label = int(label)
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected 'label name' with an integer "
                            f"label, got {line.strip()!r}") from None
        if label in names:
            raise DataError(f"{path}:{lineno}: label {label} is listed twice")
        names[label] = name.strip() or str(label)
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: labels must be 0..{len(names) - 1} with none "
                        f"missing; found {sorted(names)}")
    if len(names) < num_labels:
        raise DataError(f"{path} names {len(names)} classes, but the lists use "
                        f"label {num_labels - 1}; add the missing names")
    return [names[i] for i in range(len(names))]


def read_image_folder(root: str | os.PathLike) -> ImageFolder:
    """Validate an ImageNet-format folder; raise DataError naming the file and line."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: not a directory. Pass a folder holding "
                        f"{TRAIN_LIST}, {VAL_LIST} and the images.")
    train = _read_list(root / TRAIN_LIST, root)
    val = _read_list(root / VAL_LIST, root)
    num_labels = 1 + max(label for _, label in train + val)
    names = _read_label_names(root / LABEL_LIST, num_labels)
    if len({label for _, label in train}) < 2:
        raise DataError(f"{root / TRAIN_LIST}: needs images of at least two classes")
    return ImageFolder(root, train, val, names, root / TRAIN_LIST, root / VAL_LIST)


# ---------------------------------------------------------------- transforms
# The transform ops of a PaddleClas config (DataLoader.*.dataset.transform_ops),
# rebuilt on cv2 and numpy so that training without a PaddleClas checkout
# reads the same config. PaddleClas's engine uses its own implementation.

def _scale_value(scale) -> float:
    if scale is None:
        return 1.0 / 255.0
    if isinstance(scale, str):  # PaddleClas writes "1.0/255.0"
        num, _, den = scale.partition("/")
        return float(num) / float(den or 1)
    return float(scale)


def _interpolation(name):
    import cv2
    table = {None: cv2.INTER_LINEAR, "bilinear": cv2.INTER_LINEAR,
             "nearest": cv2.INTER_NEAREST, "bicubic": cv2.INTER_CUBIC,
             "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}
    if name not in table:
        raise ValueError(f"interpolation {name!r} is not supported; use one of "
                         f"{', '.join(k for k in table if k)}")
    return table[name]


class _Decode:
    def __init__(self, to_rgb=True, channel_first=False, **_):
        if channel_first:
            raise ValueError("DecodeImage: channel_first=True is not supported here")
        self.to_rgb = to_rgb

    def __call__(self, img, rng):
        return img[:, :, ::-1] if self.to_rgb else img  # cv2 decodes BGR


class _Resize:
    def __init__(self, size=None, resize_short=None, interpolation=None, **_):
        self.size, self.resize_short = size, resize_short
        self.interpolation = _interpolation(interpolation)

    def __call__(self, img, rng):
        import cv2
        h, w = img.shape[:2]
        if self.resize_short:
            ratio = self.resize_short / min(h, w)
            out_w, out_h = round(w * ratio), round(h * ratio)
        else:
            size = self.size
            out_w, out_h = (size, size) if isinstance(size, int) else size
        return cv2.resize(img, (out_w, out_h), interpolation=self.interpolation)


class _CenterCrop:
    def __init__(self, size, **_):
        self.w, self.h = (size, size) if isinstance(size, int) else size

    def __call__(self, img, rng):
        h, w = img.shape[:2]
        top, left = (h - self.h) // 2, (w - self.w) // 2
        return img[top:top + self.h, left:left + self.w]


class _RandomResizedCrop:
    """PaddleClas's RandCropImage: one random area and aspect, clipped to fit, resized."""

    def __init__(self, size, scale=None, ratio=None, interpolation=None,
                 use_log_aspect=False, **_):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale = scale or (0.08, 1.0)
        self.ratio = ratio or (3 / 4, 4 / 3)
        self.use_log_aspect = use_log_aspect
        self.interpolation = _interpolation(interpolation)

    def __call__(self, img, rng):
        import cv2
        if self.use_log_aspect:
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        else:
            aspect = rng.uniform(*self.ratio)
        h, w = img.shape[:2]
        bound = min((w / h) / aspect, (h / w) * aspect)
        area = w * h * rng.uniform(min(self.scale[0], bound), min(self.scale[1], bound))
        cw, ch = int(math.sqrt(area * aspect)), int(math.sqrt(area / aspect))
        left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return cv2.resize(img[top:top + ch, left:left + cw], self.size,
                          interpolation=self.interpolation)


class _RandomFlip:
    def __init__(self, flip_code=1, **_):
        self.axis = {1: 1, 0: 0, -1: (0, 1)}[flip_code]

    def __call__(self, img, rng):
        return np.flip(img, self.axis) if rng.randint(0, 1) == 1 else img


class _Normalize:
    def __init__(self, scale=None, mean=None, std=None, order="chw", **_):
        shape = (3, 1, 1) if order == "chw" else (1, 1, 3)
        self.scale = np.float32(_scale_value(scale))
        self.mean = np.array(mean or (0.485, 0.456, 0.406), "float32").reshape(shape)
        self.std = np.array(std or (0.229, 0.224, 0.225), "float32").reshape(shape)

    def __call__(self, img, rng):
        return (img.astype("float32") * self.scale - self.mean) / self.std


class _ToCHW:
    def __init__(self, **_):
        pass

    def __call__(self, img, rng):
        return img.transpose(2, 0, 1)


TRANSFORM_OPS = {
    "DecodeImage": _Decode, "ResizeImage": _Resize, "CropImage": _CenterCrop,
    "RandCropImage": _RandomResizedCrop, "RandFlipImage": _RandomFlip,
    "NormalizeImage": _Normalize, "ToCHWImage": _ToCHW,
}


def build_transforms(transform_ops: list, where: str = "transform_ops"):
    """PaddleClas ``transform_ops`` -> ``f(bgr_uint8_hwc, rng) -> float32 CHW``.

    ``rng`` is a ``random.Random``; the random ops draw from it in the order
    PaddleClas's draw from the ``random`` module, so equal seeds give equal images.
    """
    ops = []
    for entry in transform_ops:
        (name, params), = entry.items()
        if name not in TRANSFORM_OPS:
            raise RecipeError(
                f"{where}: op {name!r} is not supported without a PaddleClas checkout "
                f"(supported: {', '.join(TRANSFORM_OPS)}). Set PADDLECLAS_ROOT to train "
                f"with PaddleClas's engine, which has all its ops.")
        ops.append(TRANSFORM_OPS[name](**(params or {})))

    # PaddleClas's dataset turns HWC into CHW after the ops, unless an op did.
    to_chw = not any(isinstance(op, _ToCHW) for op in ops)

    def apply(img, rng):
        for op in ops:
            img = op(img, rng)
        if to_chw:
            img = img.transpose(2, 0, 1)
        return np.ascontiguousarray(img, dtype="float32")
    return apply


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 HWC, like PaddleClas's cv2 decoding; a clear error if unreadable."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot decode image {path}; remove it from the list or "
                        f"convert it to PNG/JPEG")
    return img


def make_dataset(folder: ImageFolder, split: str, transform_ops: list, seed: int):
    """A ``paddle.io.Dataset`` of (image, label) for the 'train' or 'val' list."""
    import paddle

    samples = folder.train if split == "train" else folder.val
    section = "Train" if split == "train" else "Eval"
    transform = build_transforms(transform_ops, f"DataLoader.{section}.dataset.transform_ops")

    class ListDataset(paddle.io.Dataset):
        def __init__(self):
            super().__init__()
            self.samples = samples
            self.rng = random.Random(seed)

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            rel, label = self.samples[i]
            return transform(read_image(folder.root / rel), self.rng), np.int64(label)

    return ListDataset()
