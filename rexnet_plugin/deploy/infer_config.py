"""``inference.yml`` (PaddleClas deploy's format, read by PaddleX and FastDeploy) and one small
interpreter of its PreProcess operators, tested against PaddleClas's deploy/python/preprocess.py."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..zoo import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from .artifacts import INFER_CONFIG_FILENAME

_FIX_MISSING = ("export the model with `rexnet-plugin export`, or with PaddleClas's "
                "tools/export_model.py -o Global.export_for_fd=True")
# The operators and their parameters with PaddleClas deploy's defaults.
_PARAMS = {
    "ResizeImage": {"size": None, "resize_short": None, "interpolation": None, "backend": "cv2"},
    "CropImage": {"size": None},
    "NormalizeImage": {"scale": None, "mean": None, "std": None, "order": "chw",
                       "channel_num": 3},
    "ToCHWImage": {},
}
# Interpolation names of PaddleClas's UnifiedResize, per backend.
_INTERPOLATION = {"pil": ("nearest", "bilinear", "bicubic", "box", "lanczos", "hamming"),
                  "cv2": ("nearest", "bilinear", "area", "bicubic", "lanczos")}
# The largest side a size in inference.yml or a resize may give: bounded memory.
MAX_SIDE = 8192


def _short(value) -> str:
    """A bounded repr for messages: a YAML file's aliases can expand to gigabytes."""
    import reprlib
    limits = reprlib.Repr()
    limits.maxlevel, limits.maxstring, limits.maxother = 2, 60, 60
    return limits.repr(value)


class InferConfigError(ValueError):
    """An inference.yml that is missing or that this package cannot follow."""


def eval_transform_ops(transform: EvalTransform, crop: tuple[int, int] | None = None) -> list:
    """``transform`` as deploy operators, ``crop`` (W, H) replacing its square crop; close to,
    not exactly, the transform (docs/deployment.md)."""
    return [
        {"ResizeImage": {"resize_short": transform.resize_short,
                         "interpolation": transform.interpolation, "backend": "pil"}},
        {"CropImage": {"size": list(crop) if crop else transform.crop_size}},
        {"NormalizeImage": {"scale": 1.0 / 255.0, "mean": list(transform.mean),
                            "std": list(transform.std), "order": "", "channel_num": 3}},
        {"ToCHWImage": None},
    ]


def ops_from_paddleclas(transforms, where: str) -> list:
    """A PaddleClas config's ``Infer.transforms`` as its dump_infer_config writes them;
    InferConfigError naming ``where`` for operators deploy cannot run."""
    import copy
    if not isinstance(transforms, list):
        raise InferConfigError(f"{where} is {_short(transforms)}; expected a list of operators")
    ops = [item for item in copy.deepcopy(transforms)
           if not (isinstance(item, dict) and "DecodeImage" in item)]
    for item in ops:
        if isinstance(item, dict) and "NormalizeImage" in item:
            params = item["NormalizeImage"] = dict(item["NormalizeImage"] or {})
            params["channel_num"] = 3
            if "scale" in params:
                params["scale"] = _number(params["scale"], "NormalizeImage.scale", where)
    preprocess_ops(ops, where)
    return ops


def write_infer_config(model_dir: str | os.PathLike, *, model_name: str,
                       transform: EvalTransform | None = None, topk: int = 5,
                       label_list: list[str] | None = None, softmax: bool | None = None,
                       crop: tuple[int, int] | None = None,
                       transform_ops: list | None = None) -> Path:
    """Write ``<model_dir>/inference.yml`` atomically, preprocessing ``transform`` (``crop``:
    (W, H)) or ``transform_ops``; ``softmax`` becomes ``Global.infer_add_softmax`` unless None."""
    import yaml
    from ..files import write_text
    if (transform is None) == (transform_ops is None):
        raise ValueError("pass either transform (an EvalTransform) or transform_ops")
    if transform_ops is None:
        transform_ops = eval_transform_ops(transform, crop)
    preprocess_ops(transform_ops)
    if not (isinstance(model_name, str) and model_name and _positive(topk)
            and all(isinstance(n, str) for n in label_list or [])):
        raise ValueError(f"model_name={_short(model_name)}, topk={_short(topk)}, label_list: "
                         f"expected a name such as ReXNet_1_0, a positive integer, strings")
    glob = {"model_name": model_name, **({} if softmax is None else
                                          {"infer_add_softmax": bool(softmax)})}
    data = {"Global": glob, "PreProcess": {"transform_ops": transform_ops},
            "PostProcess": {"Topk": {"topk": topk, **({"label_list": list(label_list)}
                                                      if label_list else {})}}}
    path = Path(model_dir) / INFER_CONFIG_FILENAME
    write_text(path, "# PaddleClas's deploy format (PaddleX and FastDeploy read it), by "
               "rexnet-plugin\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def read_label_list(path: str | os.PathLike) -> list[str]:
    """Class names from a class_id_map_file (``<id> <name>``, ids 0..N-1) or one per line."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the label list {path}: {err}") from None
    if not lines:
        raise ValueError(f"label list {path} is empty: expected one class per line, "
                         f"'<id> <name>' (PaddleClas's class_id_map_file) or '<name>'")
    pairs = [line.split(maxsplit=1) for line in lines]
    if not all(len(p) == 2 and p[0].isdigit() for p in pairs):
        return lines
    names = {int(i): name for i, name in pairs}
    if sorted(names) != list(range(len(lines))):
        raise ValueError(f"label list {path}: the ids are not 0..{len(lines) - 1}, each once; "
                         f"expected '<id> <name>' lines with ids 0, 1, 2, ...")
    return [names[i] for i in range(len(lines))]


def _bad(where: str, key: str, value, expected: str) -> InferConfigError:
    return InferConfigError(f"{where}: {key} is {_short(value)}; expected {expected}")


def _positive(value, limit=None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value > 0
            and (limit is None or value <= limit))


def _pair(value, key: str, where: str) -> tuple[int, int]:
    """An int size, or [w, h] (PaddleClas deploy reads lists as width, height)."""
    pair = [value] * 2 if not isinstance(value, (list, tuple)) else value
    if len(pair) != 2 or not all(_positive(v, MAX_SIDE) for v in pair):
        raise _bad(where, key, value, f"a positive integer or [width, height], at most {MAX_SIDE}")
    return pair[0], pair[1]


def _number(value, key: str, where: str) -> float:
    """A number, or PaddleClas's 'a/b' string (e.g. 1.0/255.0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        num, _, den = value.partition("/")
        return float(num) / float(den or 1)
    except (AttributeError, ValueError, ZeroDivisionError):
        raise _bad(where, key, value, "a number such as 0.00392156862745098 (or 1.0/255.0)") from None


def _resize(p: dict, where: str):
    short, backend, name = p["resize_short"], p["backend"], p["interpolation"] or "bilinear"
    if short is not None and not (type(short) is int and short <= MAX_SIDE):  # <= 0: size
        raise _bad(where, "ResizeImage.resize_short", short, f"a positive integer, at most "
                   f"{MAX_SIDE}")
    if not _positive(short) and p["size"] is None:
        raise InferConfigError(f"{where}: ResizeImage needs resize_short or size")
    size = None if _positive(short) else _pair(p["size"], "ResizeImage.size", where)
    if not (isinstance(backend, str) and backend.lower() in _INTERPOLATION):
        raise _bad(where, "ResizeImage.backend", backend, "pil or cv2")
    names = _INTERPOLATION[backend.lower()]
    if not (isinstance(name, str) and name.lower() in names):
        raise _bad(where, "ResizeImage.interpolation", p["interpolation"], f"with backend "
                   f"{backend}: {', '.join(names)} (not 'random': inference is deterministic)")
    backend, name = backend.lower(), name.lower()

    def resize(img):
        h, w = img.shape[:2]
        percent = float(short or 1) / min(w, h)  # PaddleClas's formula, for its rounding
        wh = size or (int(round(w * percent)), int(round(h * percent)))
        if max(wh) > MAX_SIDE:  # before resizing: bounded memory
            raise InferConfigError(
                f"{where}: ResizeImage (resize_short {short}) would make this {w}x{h} image "
                f"{wh[0]}x{wh[1]}, over the limit of {MAX_SIDE} pixels a side: its aspect "
                f"ratio is too extreme. Crop the image first")
        if backend == "pil":
            from PIL import Image
            return np.asarray(Image.fromarray(img).resize(wh, getattr(Image, name.upper())))
        import cv2
        flag = {"bilinear": "LINEAR", "lanczos": "LANCZOS4", "bicubic": "CUBIC"}.get(name, name)
        return cv2.resize(img, wh, interpolation=getattr(cv2, f"INTER_{flag.upper()}"))
    return resize


def _crop(p: dict, where: str):
    w, h = _pair(p["size"], "CropImage.size", where)

    def crop(img):
        img_h, img_w = img.shape[:2]
        if img_h < h or img_w < w:
            raise InferConfigError(f"{where}: CropImage size {w}x{h} is larger than the "
                                   f"resized image ({img_w}x{img_h})")
        top, left = (img_h - h) // 2, (img_w - w) // 2  # floor, as PaddleClas
        return img[top:top + h, left:left + w]
    return crop


def _normalize(p: dict, where: str):
    scale = np.float32(1 / 255 if p["scale"] is None
                       else _number(p["scale"], "NormalizeImage.scale", where))
    if p["order"] not in ("", "hwc", "chw"):
        raise _bad(where, "NormalizeImage.order", p["order"], "'' or 'hwc' (image is H, W, C), "
                   "'chw'")
    if p["channel_num"] != 3:
        raise _bad(where, "NormalizeImage.channel_num", p["channel_num"], "3: the model takes "
                   "3 channels")
    shape, arrays = (3, 1, 1) if p["order"] == "chw" else (1, 1, 3), []
    for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        value = default if p[key] is None else p[key]
        if not (isinstance(value, (list, tuple)) and len(value) == 3
                and all(type(v) in (int, float) and (v or key == "mean") for v in value)):
            raise _bad(where, f"NormalizeImage.{key}", value, "three numbers (R, G, B), std not 0")
        arrays.append(np.array(value, np.float32).reshape(shape))
    mean, std = arrays

    def normalize(img):
        if img.shape[shape.index(3)] != 3:
            raise InferConfigError(f"{where}: NormalizeImage with order {p['order']!r} does "
                                   f"not fit an image of shape {img.shape}")
        return ((img.astype(np.float32) * scale - mean) / std).astype(np.float32)
    return normalize


_BUILDERS = {"ResizeImage": _resize, "CropImage": _crop, "NormalizeImage": _normalize,
             "ToCHWImage": lambda p, where: lambda img: img.transpose(2, 0, 1)}


def preprocess_ops(transform_ops, where: str = "transform_ops"):
    """Operators -> ``f(PIL image or RGB uint8 [H, W, 3]) -> float32 [3, H, W]``, each checked
    here (InferConfigError naming ``where``, the key and the accepted values)."""
    if not isinstance(transform_ops, list) or not transform_ops:
        raise _bad(where, "PreProcess.transform_ops", transform_ops, f"a list of operators "
                   f"({', '.join(_PARAMS)})")
    ops = []
    for i, item in enumerate(transform_ops):
        at = f"{where}: transform_ops[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise InferConfigError(f"{at} is {_short(item)}; expected {{name: parameters}}")
        (name, given), = item.items()
        if name not in _PARAMS:
            raise InferConfigError(
                f"{at} is {_short(name)}, which this package cannot run; it runs "
                f"{', '.join(_PARAMS)} (what PaddleClas writes for classifiers). Re-export the "
                f"model, or edit the file to use those.")
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise _bad(at, f"{name}'s parameters", given, "a mapping")
        unknown = sorted(map(str, set(given) - set(_PARAMS[name])))
        if unknown:
            raise InferConfigError(f"{at}: {name} has unknown parameter(s) {', '.join(unknown)}"
                                   f"; accepted: {', '.join(_PARAMS[name]) or 'none'}")
        ops.append(_BUILDERS[name]({**_PARAMS[name], **given}, at))

    def preprocess(image) -> np.ndarray:
        x = image if isinstance(image, np.ndarray) else np.asarray(image.convert("RGB"))
        for op in ops:
            x = op(x)
        if x.ndim != 3 or x.shape[0] != 3 or x.dtype != np.float32:
            raise InferConfigError(f"{where}: PreProcess.transform_ops give {x.dtype} "
                                   f"{x.shape}, not float32 [3, H, W]; end them with "
                                   f"NormalizeImage and ToCHWImage")
        return np.ascontiguousarray(x)
    return preprocess


@dataclass(frozen=True)
class InferConfig:
    """What an ``inference.yml`` says; None where it does not say."""
    path: Path
    model_name: str | None
    transform_ops: list
    topk: int
    label_list: list[str] | None
    softmax: bool | None = None
    _preprocess: object = field(default=None, repr=False, compare=False)

    def preprocess(self, image) -> np.ndarray:
        """One image (a path or a PIL image) -> float32 [3, H, W]; errors name the image."""
        from .images import open_rgb
        if isinstance(image, (str, os.PathLike)):
            image, name = open_rgb(image), str(image)
        else:
            name = "the image"
        try:
            return self._preprocess(image)
        except InferConfigError as err:
            raise InferConfigError(f"{name}: {err}") from None

    def stack(self, arrays: list, paths: list) -> np.ndarray:
        """One batch of preprocessed images; InferConfigError if their sizes differ."""
        if len({a.shape for a in arrays}) > 1:
            sizes = ", ".join(f"{p} {a.shape[2]}x{a.shape[1]}" for p, a in zip(paths, arrays))
            raise InferConfigError(f"{self.path}: the preprocessing gives images of different "
                                   f"sizes ({sizes[:1000]}); a batch needs one size: end "
                                   f"PreProcess.transform_ops with a CropImage (or predict "
                                   f"with --batch-size 1)")
        return np.stack(arrays)


def read_infer_config(model_dir: str | os.PathLike) -> InferConfig:
    """Read ``<model_dir>/inference.yml`` (``model_dir`` may also be the file)."""
    import yaml
    path = Path(model_dir)
    if path.is_dir() or path.name != INFER_CONFIG_FILENAME:
        path = path / INFER_CONFIG_FILENAME
    if not path.is_file():
        what = "is not a folder" if not path.parent.is_dir() else f"has no {path.name}"
        raise InferConfigError(f"{path.parent} {what}: a model folder needs the preprocessing "
                               f"in {path.name}; {_FIX_MISSING}")
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
        raise _bad(path, "Global", glob, "a mapping")
    for key, kind, expected in (("model_name", str, "a name"),
                                ("infer_add_softmax", bool, "true or false")):
        if not isinstance(glob.get(key), (kind, type(None))):
            raise _bad(path, f"Global.{key}", glob[key], expected)
    pre = data.get("PreProcess")
    if not isinstance(pre, dict) or "transform_ops" not in pre:
        raise InferConfigError(f"{path}: no PreProcess.transform_ops; {_FIX_MISSING}")
    preprocess = preprocess_ops(pre["transform_ops"], str(path))
    post = data.get("PostProcess")
    topk_config = post.get("Topk") if isinstance(post, dict) else None
    if not isinstance(topk_config, dict):
        found = ", ".join(map(str, post)) if isinstance(post, dict) else _short(post)
        raise InferConfigError(f"{path}: PostProcess is {found}, not Topk: this is not a "
                               f"classifier's inference.yml ({_FIX_MISSING})")
    topk, label_list = topk_config.get("topk", 5), topk_config.get("label_list")
    if not _positive(topk):
        raise _bad(path, "PostProcess.Topk.topk", topk, "a positive integer")
    if label_list is not None and (not isinstance(label_list, list)
                                   or not all(isinstance(n, str) for n in label_list)):
        raise InferConfigError(f"{path}: PostProcess.Topk.label_list is not a list of class "
                               f"names")
    return InferConfig(path, glob.get("model_name"), pre["transform_ops"], topk,
                       label_list or None, glob.get("infer_add_softmax"), preprocess)
