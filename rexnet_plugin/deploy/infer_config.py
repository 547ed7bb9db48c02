"""``inference.yml``: the preprocessing and post-processing beside an exported model.

The format is PaddleClas's: what ``tools/export_model.py -o
Global.export_for_fd=True`` writes (``ppcls/utils/config.py``,
``dump_infer_config``), and what PaddleX, FastDeploy and PaddleClas's own
``deploy/python`` read::

    Global:
      model_name: ReXNet_1_0
    PreProcess:
      transform_ops:
      - ResizeImage: {resize_short: 256, interpolation: bicubic, backend: pil}
      - CropImage: {size: 224}
      - NormalizeImage: {scale: 0.00392156862745098, mean: [...], std: [...],
                         order: '', channel_num: 3}
      - ToCHWImage: null
    PostProcess:
      Topk: {topk: 5, label_list: [...]}

``InferConfig.preprocess`` runs those operators with the meaning PaddleClas's
``deploy/python/preprocess.py`` gives them, on an image decoded to RGB by PIL
(tests/test_infer_config.py compares it with PaddleClas's operators).

Nothing here imports paddle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..zoo import EvalTransform
from .artifacts import INFER_CONFIG_FILENAME

OPS = ("ResizeImage", "CropImage", "NormalizeImage", "ToCHWImage")
_FIX_MISSING = ("export the model with `rexnet-plugin export`, or with PaddleClas's "
                "tools/export_model.py -o Global.export_for_fd=True")
# Interpolation names of PaddleClas's UnifiedResize, per backend.
_PIL_INTERPOLATION = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC",
                      "box": "BOX", "lanczos": "LANCZOS", "hamming": "HAMMING"}
_CV2_INTERPOLATION = ("nearest", "bilinear", "area", "bicubic", "lanczos")
# The largest image side a size in inference.yml or a resize may give: bounds
# the memory of any image and any file (a 1x10000 PNG resized to a short side
# of 256 would be 256x2,560,000 pixels).
MAX_SIDE = 8192


def _short(value) -> str:
    """A bounded repr for messages: a YAML file's aliases can expand to gigabytes."""
    import reprlib
    limits = reprlib.Repr()
    limits.maxlevel, limits.maxstring, limits.maxother = 2, 60, 60
    return limits.repr(value)


class InferConfigError(ValueError):
    """An inference.yml that is missing or that this package cannot follow."""


# -- writing ------------------------------------------------------------------------

def eval_transform_ops(transform: EvalTransform, crop: tuple[int, int] | None = None) -> list[dict]:
    """``transform`` as PaddleClas deploy operators (PIL backend); ``crop``
    (width, height) replaces its square crop.

    Close to, not exactly, ``transform``: ResizeImage rounds the long side
    where the seed's paddle.vision Resize truncates it, and CropImage floors
    the offset where CenterCrop rounds it (docs/deployment.md gives the
    measured difference).
    """
    return [
        {"ResizeImage": {"resize_short": transform.resize_short,
                         "interpolation": transform.interpolation, "backend": "pil"}},
        {"CropImage": {"size": list(crop) if crop else transform.crop_size}},
        {"NormalizeImage": {"scale": 1.0 / 255.0, "mean": list(transform.mean),
                            "std": list(transform.std), "order": "", "channel_num": 3}},
        {"ToCHWImage": None},
    ]


def ops_from_paddleclas(transforms, where: str) -> list[dict]:
    """A PaddleClas config's ``Infer.transforms`` as inference.yml operators,
    made as PaddleClas's dump_infer_config makes them: DecodeImage dropped,
    NormalizeImage's scale a number and its channel_num 3. Raises
    InferConfigError (naming ``where``) when an operator is not one the
    deploy tools run (paddle.vision's Resize and CenterCrop, for instance)."""
    import copy
    if not isinstance(transforms, list):
        raise InferConfigError(f"{where} is {_short(transforms)}; expected a list of operators")
    ops = []
    for item in copy.deepcopy(transforms):
        if isinstance(item, dict) and "DecodeImage" in item:
            continue
        if isinstance(item, dict) and "NormalizeImage" in item:
            params = item["NormalizeImage"] = dict(item["NormalizeImage"] or {})
            params["channel_num"] = 3
            if "scale" in params:
                params["scale"] = _number(params["scale"], "NormalizeImage", "scale", where)
        ops.append(item)
    _build_ops(ops, where)
    return ops


def output_shape(transform_ops, image_hw: tuple[int, int] = (427, 640)) -> tuple:
    """The shape ``transform_ops`` give an image of ``image_hw`` (a landscape
    photo by default): whether they fit a model's fixed input."""
    x = np.zeros((*image_hw, 3), dtype=np.uint8)
    for op in _build_ops(transform_ops, "transform_ops"):
        x = op(x)
    return tuple(x.shape)


def write_infer_config(model_dir: str | os.PathLike, *, model_name: str,
                       transform: EvalTransform | None = None, topk: int = 5,
                       label_list: list[str] | None = None,
                       softmax: bool | None = None,
                       crop: tuple[int, int] | None = None,
                       transform_ops: list[dict] | None = None) -> Path:
    """Write ``<model_dir>/inference.yml`` (atomically); return its path.

    The preprocessing is ``transform`` (as deploy operators), or
    ``transform_ops`` as given (e.g. from ``ops_from_paddleclas``).
    ``softmax``: whether the exported model ends in softmax (its outputs are
    probabilities), recorded as ``Global.infer_add_softmax``, the name of
    PaddleClas's own switch; None records nothing. ``crop``: (width, height)
    for a model exported at a fixed size that is not square.
    """
    import yaml
    from ..files import write_text
    if (transform is None) == (transform_ops is None):
        raise ValueError("pass either transform (an EvalTransform) or transform_ops")
    if transform_ops is not None:
        _build_ops(transform_ops, "transform_ops")
    else:
        transform_ops = eval_transform_ops(transform, crop)
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name={_short(model_name)}: expected a model name such as "
                         f"ReXNet_1_0")
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk={_short(topk)}: expected a positive integer")
    if label_list is not None and not all(isinstance(n, str) for n in label_list):
        raise ValueError("label_list: expected a list of class names (strings)")
    glob = {"model_name": model_name}
    if softmax is not None:
        glob["infer_add_softmax"] = bool(softmax)
    topk_config = {"topk": topk}
    if label_list:
        topk_config["label_list"] = list(label_list)
    data = {"Global": glob, "PreProcess": {"transform_ops": transform_ops},
            "PostProcess": {"Topk": topk_config}}
    path = Path(model_dir) / INFER_CONFIG_FILENAME
    header = ("# Preprocessing and post-processing of the model in this folder, in\n"
              "# PaddleClas's deploy format (PaddleX and FastDeploy read it). Written by\n"
              "# rexnet-plugin.\n")
    write_text(path, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def read_label_list(path: str | os.PathLike) -> list[str]:
    """Class names from a PaddleClas class_id_map_file (``<id> <name>`` per line,
    ids 0..N-1) or from a file of one name per line."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise FileNotFoundError(f"label list {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the label list {path}: {err}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"label list {path} is empty: expected one class per line, "
                         f"'<id> <name>' (PaddleClas's class_id_map_file) or '<name>'")
    pairs = [line.split(maxsplit=1) for line in lines]
    if all(len(p) == 2 and p[0].isdigit() for p in pairs):
        names = {int(i): name for i, name in pairs}
        if sorted(names) != list(range(len(lines))):
            raise ValueError(f"label list {path}: the ids are not 0..{len(lines) - 1}, each "
                             f"once; expected '<id> <name>' lines with ids 0, 1, 2, ...")
        return [names[i] for i in range(len(lines))]
    return lines


# -- reading ------------------------------------------------------------------------

def _params(op: str, given, accepted: dict, where: str) -> dict:
    """``given`` (an op's mapping or None) checked against ``accepted`` defaults."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InferConfigError(f"{where}: the parameters of {op} are {_short(given)}; expected a "
                               f"mapping")
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise InferConfigError(f"{where}: {op} has unknown parameter(s) {', '.join(unknown)}; "
                               f"accepted: {', '.join(accepted) or 'none'}")
    return {**accepted, **given}


def _side(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SIDE


def _pair(value, op: str, key: str, where: str) -> tuple[int, int]:
    """An int size, or [w, h] (PaddleClas deploy reads lists as width, height)."""
    if _side(value):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_side, value)):
        return value[0], value[1]
    raise InferConfigError(f"{where}: {op}.{key} is {_short(value)}; expected a positive integer "
                           f"or [width, height], at most {MAX_SIDE}")


def _number(value, op: str, key: str, where: str) -> float:
    """A number, or PaddleClas's 'a/b' string (e.g. 1.0/255.0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parts = [float(p) for p in value.split("/")]
            if len(parts) == 1:
                return parts[0]
            if len(parts) == 2:
                return parts[0] / parts[1]
        except (ValueError, ZeroDivisionError):
            pass
    raise InferConfigError(f"{where}: {op}.{key} is {_short(value)}; expected a number such as "
                           f"0.00392156862745098 (or 1.0/255.0)")


def _triple(value, op: str, key: str, where: str) -> np.ndarray:
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return np.array(value, dtype=np.float32)
    raise InferConfigError(f"{where}: {op}.{key} is {_short(value)}; expected three numbers "
                           f"(R, G, B)")


class _ResizeImage:
    def __init__(self, params, where):
        p = _params("ResizeImage", params, {"size": None, "resize_short": None,
                                            "interpolation": None, "backend": "cv2",
                                            "return_numpy": True}, where)
        short = p["resize_short"]
        if short is not None and (isinstance(short, bool) or not isinstance(short, int)
                                  or short > MAX_SIDE):
            raise InferConfigError(f"{where}: ResizeImage.resize_short is {_short(short)}; "
                                   f"expected a positive integer, at most {MAX_SIDE}")
        if short is not None and short > 0:  # PaddleClas: resize_short wins over size
            self.short, self.size = short, None
        elif p["size"] is not None:
            self.short, self.size = None, _pair(p["size"], "ResizeImage", "size", where)
        else:
            raise InferConfigError(f"{where}: ResizeImage needs resize_short or size")
        backend = p["backend"].lower() if isinstance(p["backend"], str) else None
        names = {"pil": tuple(_PIL_INTERPOLATION), "cv2": _CV2_INTERPOLATION}.get(backend)
        if names is None:
            raise InferConfigError(f"{where}: ResizeImage.backend is {_short(p['backend'])}; "
                                   f"accepted: pil, cv2")
        interpolation = p["interpolation"] or "bilinear"
        interpolation = interpolation.lower() if isinstance(interpolation, str) else None
        if interpolation not in names:
            raise InferConfigError(
                f"{where}: ResizeImage.interpolation is {_short(p['interpolation'])}; accepted "
                f"with backend {backend}: {', '.join(names)} (not 'random': inference must be "
                f"deterministic)")
        if p["return_numpy"] is not True:
            raise InferConfigError(f"{where}: ResizeImage.return_numpy must be true (the next "
                                   f"operators take arrays)")
        self.backend, self.interpolation = backend, interpolation
        self.where = where

    def __call__(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self.short is not None:
            percent = float(self.short) / min(w, h)
            size = (int(round(w * percent)), int(round(h * percent)))
            if max(size) > MAX_SIDE:  # checked before resizing: bounded memory
                raise InferConfigError(
                    f"{self.where}: ResizeImage (resize_short {self.short}) would make this "
                    f"{w}x{h} image {size[0]}x{size[1]}, over the limit of {MAX_SIDE} pixels "
                    f"a side: its aspect ratio is too extreme. Crop the image first")
        else:
            size = self.size
        if self.backend == "pil":
            from PIL import Image
            resample = getattr(Image, _PIL_INTERPOLATION[self.interpolation])
            return np.asarray(Image.fromarray(img).resize(size, resample))
        import cv2
        flag = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
                "area": cv2.INTER_AREA, "bicubic": cv2.INTER_CUBIC,
                "lanczos": cv2.INTER_LANCZOS4}[self.interpolation]
        return cv2.resize(img, size, interpolation=flag)


class _CropImage:
    def __init__(self, params, where):
        p = _params("CropImage", params, {"size": None}, where)
        self.w, self.h = _pair(p["size"], "CropImage", "size", where)
        self.where = where

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img_h, img_w = img.shape[:2]
        if img_h < self.h or img_w < self.w:
            raise InferConfigError(f"{self.where}: CropImage size {self.w}x{self.h} is larger "
                                   f"than the resized image ({img_w}x{img_h})")
        left, top = (img_w - self.w) // 2, (img_h - self.h) // 2  # floor, as PaddleClas
        return img[top:top + self.h, left:left + self.w, :]


class _NormalizeImage:
    def __init__(self, params, where):
        p = _params("NormalizeImage", params, {"scale": None, "mean": None, "std": None,
                                               "order": "chw", "output_fp16": False,
                                               "channel_num": 3}, where)
        self.scale = np.float32(1.0 / 255.0 if p["scale"] is None
                                else _number(p["scale"], "NormalizeImage", "scale", where))
        mean = _triple(p["mean"] if p["mean"] is not None else [0.485, 0.456, 0.406],
                       "NormalizeImage", "mean", where)
        std = _triple(p["std"] if p["std"] is not None else [0.229, 0.224, 0.225],
                      "NormalizeImage", "std", where)
        if not np.all(std != 0):
            raise InferConfigError(f"{where}: NormalizeImage.std has a zero: {p['std']}")
        if p["order"] not in ("", "hwc", "chw"):
            raise InferConfigError(f"{where}: NormalizeImage.order is {_short(p['order'])}; "
                                   f"accepted: '' or 'hwc' (image is H, W, C), 'chw'")
        if p["channel_num"] != 3:
            raise InferConfigError(f"{where}: NormalizeImage.channel_num is "
                                   f"{_short(p['channel_num'])}; the model takes 3 channels")
        if p["output_fp16"]:
            raise InferConfigError(f"{where}: NormalizeImage.output_fp16 is not supported; "
                                   f"the exported models take float32")
        shape = (3, 1, 1) if p["order"] == "chw" else (1, 1, 3)
        self.mean, self.std = mean.reshape(shape), std.reshape(shape)
        self.order, self.where = p["order"], where

    def __call__(self, img: np.ndarray) -> np.ndarray:
        try:
            return ((img.astype("float32") * self.scale - self.mean) / self.std).astype("float32")
        except ValueError:
            raise InferConfigError(f"{self.where}: NormalizeImage with order "
                                   f"{_short(self.order)} does not fit an image of shape "
                                   f"{img.shape}") from None


class _ToCHWImage:
    def __init__(self, params, where):
        _params("ToCHWImage", params, {}, where)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return img.transpose((2, 0, 1))


_OP_CLASSES = {"ResizeImage": _ResizeImage, "CropImage": _CropImage,
               "NormalizeImage": _NormalizeImage, "ToCHWImage": _ToCHWImage}


def _build_ops(transform_ops, where: str) -> list:
    if not isinstance(transform_ops, list) or not transform_ops:
        raise InferConfigError(f"{where}: PreProcess.transform_ops is {_short(transform_ops)}; "
                               f"expected a list of operators ({', '.join(OPS)})")
    ops = []
    for i, item in enumerate(transform_ops):
        if not isinstance(item, dict) or len(item) != 1:
            raise InferConfigError(f"{where}: PreProcess.transform_ops[{i}] is {_short(item)}; "
                                   f"expected one operator name with its parameters")
        (name, params), = item.items()
        if name not in _OP_CLASSES:
            raise InferConfigError(
                f"{where}: PreProcess.transform_ops[{i}] is {_short(name)}, which this package "
                f"cannot run; it runs {', '.join(OPS)} (what PaddleClas writes for "
                f"classifiers). Re-export the model, or edit the file to use those.")
        ops.append(_OP_CLASSES[name](params, f"{where}: transform_ops[{i}]"))
    return ops


@dataclass(frozen=True)
class InferConfig:
    """What an ``inference.yml`` says. ``model_name`` is None when the file
    names no model (PaddleClas writes one only with ``Global.pdx_model_name``);
    ``softmax`` is None when the file does not record it (PaddleClas's own
    export appends softmax unless ``Arch.infer_add_softmax=False``)."""

    path: Path
    model_name: str | None
    transform_ops: list
    topk: int
    label_list: list[str] | None
    softmax: bool | None = None
    _ops: list = field(default=None, repr=False, compare=False)

    def preprocess(self, image) -> np.ndarray:
        """One image (a path or a PIL image) -> float32 [3, H, W], decoded to RGB by PIL.

        Raises ImageInputError (a ValueError) for a file PIL cannot read, and
        InferConfigError naming the file for an image the operators refuse.
        """
        from PIL import Image
        from .images import check_image, open_rgb
        if isinstance(image, Image.Image):
            pil, name = image, "the image"
        else:
            check_image(image)
            pil, name = open_rgb(image), str(image)
        x = np.asarray(pil.convert("RGB"))
        try:
            for op in self._ops:
                x = op(x)
        except InferConfigError as err:
            raise InferConfigError(f"{name}: {err}") from None
        if not (isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[0] == 3
                and x.dtype == np.float32):
            raise InferConfigError(f"{self.path}: PreProcess.transform_ops give "
                                   f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}, "
                                   f"not float32 [3, H, W]; end them with NormalizeImage and "
                                   f"ToCHWImage")
        return np.ascontiguousarray(x)


def read_infer_config(model_dir: str | os.PathLike) -> InferConfig:
    """Read ``<model_dir>/inference.yml`` (``model_dir`` may also be the file)."""
    import yaml
    path = Path(model_dir)
    if path.is_dir() or path.name != INFER_CONFIG_FILENAME:
        path = path / INFER_CONFIG_FILENAME
    if not path.is_file():
        folder = path.parent
        what = "is not a folder" if not folder.is_dir() else f"has no {INFER_CONFIG_FILENAME}"
        raise InferConfigError(f"{folder} {what}: a model folder needs the preprocessing in "
                               f"{INFER_CONFIG_FILENAME}; {_FIX_MISSING}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InferConfigError(f"{path} is not valid YAML ({err}); {_FIX_MISSING}") from None
    except RecursionError:
        raise InferConfigError(f"{path} nests too deeply to be read; {_FIX_MISSING}") from None
    if not isinstance(data, dict):
        raise InferConfigError(f"{path}: expected a mapping with PreProcess and PostProcess; "
                               f"{_FIX_MISSING}")
    glob = data.get("Global") or {}
    if not isinstance(glob, dict):
        raise InferConfigError(f"{path}: Global is {_short(glob)}; expected a mapping")
    model_name = glob.get("model_name")
    if model_name is not None and not isinstance(model_name, str):
        raise InferConfigError(f"{path}: Global.model_name is {_short(model_name)}; expected "
                               f"a name")
    softmax = glob.get("infer_add_softmax")
    if softmax is not None and not isinstance(softmax, bool):
        raise InferConfigError(f"{path}: Global.infer_add_softmax is {_short(softmax)}; expected "
                               f"true or false")
    pre = data.get("PreProcess")
    if not isinstance(pre, dict) or "transform_ops" not in pre:
        raise InferConfigError(f"{path}: no PreProcess.transform_ops; {_FIX_MISSING}")
    ops = _build_ops(pre["transform_ops"], str(path))
    post = data.get("PostProcess")
    topk_config = post.get("Topk") if isinstance(post, dict) else None
    if not isinstance(topk_config, dict):
        found = ", ".join(post) if isinstance(post, dict) else repr(post)
        raise InferConfigError(f"{path}: PostProcess is {found}, not Topk: this is not a "
                               f"classifier's inference.yml ({_FIX_MISSING})")
    topk = topk_config.get("topk", 5)
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise InferConfigError(f"{path}: PostProcess.Topk.topk is {_short(topk)}; expected a "
                               f"positive integer")
    label_list = topk_config.get("label_list")
    if label_list is not None and (not isinstance(label_list, list)
                                   or not all(isinstance(n, str) for n in label_list)):
        raise InferConfigError(f"{path}: PostProcess.Topk.label_list is not a list of class "
                               f"names")
    return InferConfig(path, model_name, pre["transform_ops"], topk, label_list or None,
                       softmax, ops)
