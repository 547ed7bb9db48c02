"""The variant table: every named ReXNet, as data.

One source of truth. The factories (``factories.py``), the PaddleClas
registration, the configs' tests, the README tables and the benchmarks all
read ``VARIANTS``; nothing else lists variant names or their numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The official README (github.com/clovaai/rexnet: "Actual performance scores"
# for 0.9, "ImageNet classification results" for 1.0-3.0, "ReXNet-lites vs.
# EfficientNet-lites" for lite): top-1 / top-5 at 224.
PAPER_SOURCE = "https://github.com/clovaai/rexnet#pretrained"
# The seed model zoo (PPIM, github.com/AgentMaker/Paddle-Image-Models,
# docs/en/model_zoo/rexnet.md), measured with EVAL_TRANSFORM below.
SEED_SOURCE = "https://github.com/AgentMaker/Paddle-Image-Models"
# PaddleClas docs/en/models/ImageNet1k/ReXNet.md, measured with its default
# cv2 resize, which is why its figures sit ~0.4 points below the seed's.
PADDLECLAS_SOURCE = "https://github.com/PaddlePaddle/PaddleClas"
# timm re-hosts the official weights on the Hugging Face hub (model cards
# timm/rexnet_*.nav_in1k); accuracy from timm's results/results-imagenet.csv
# (224, crop 0.875, bicubic: the same transform as the seed's).
TIMM_SOURCE = "https://github.com/huggingface/pytorch-image-models"


@dataclass(frozen=True)
class EvalTransform:
    """The seed's validation transform (PIL backend)."""

    resize_short: int = 256
    interpolation: str = "bicubic"
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


EVAL_TRANSFORM = EvalTransform()


@dataclass(frozen=True)
class Publisher:
    """Who publishes a family of weight files, and on what terms."""

    title: str
    home: str
    license: str  # as the publisher states it
    license_where: str  # where it is stated
    accuracy_measured_with: str


# Source name -> publisher. The source names are the values of
# ``pretrained=`` that pick a published file; the first source listed for a
# variant is what ``pretrained=True`` loads.
PUBLISHERS: dict[str, Publisher] = {
    "seed": Publisher(
        "Seed model zoo (PPIM, AgentMaker/Paddle-Image-Models)", SEED_SOURCE,
        "Apache-2.0", "the repository's LICENSE file and setup.py; no separate "
        "terms for the weight files", "PIL bicubic resize 256, center crop 224"),
    "paddleclas": Publisher(
        "PaddleClas (PaddlePaddle)", PADDLECLAS_SOURCE,
        "Apache-2.0", "the repository's LICENSE file",
        "PaddleClas's default eval pipeline (cv2 resize 256, center crop 224)"),
    "timm": Publisher(
        "timm (Hugging Face hub, timm/rexnet_*.nav_in1k)", TIMM_SOURCE,
        "MIT", "the license field of the model cards: mit",
        "timm validate.py: bicubic resize 256 (crop_pct 0.875), center crop 224"),
    "official": Publisher(
        "NAVER AI Lab, official ReXNet (clovaai/rexnet)", PAPER_SOURCE.split("#")[0],
        "MIT", "the repository's LICENSE file and README ('distributed under MIT "
        "license')", "the paper's protocol, 224x224"),
}


@dataclass(frozen=True)
class WeightSource:
    """One published checkpoint. ``layout`` says which key names it uses."""

    url: str
    filename: str  # the name in the cache and on a mirror
    layout: str  # "paddle", "official" or "timm"
    top1: float | None = None  # as reported by whoever publishes the file
    top5: float | None = None
    sha256: str | None = None  # None where the publisher gives none
    size: int | None = None  # bytes; None where not known exactly
    # True when ``url`` is a page that needs a browser (Google Drive): the
    # user downloads the file and passes its path.
    manual: bool = False


@dataclass(frozen=True)
class Variant:
    name: str
    width_mult: float
    lite: bool = False
    # Key of this variant in shared/reference/official_shapes.json.
    official_name: str = ""
    paper_top1: float | None = None
    paper_top5: float | None = None
    weights: dict[str, WeightSource] = field(default_factory=dict)

    @property
    def arch(self) -> dict:
        """Keyword arguments for ``ReXNet``."""
        return {"width_mult": self.width_mult, "lite": self.lite}

    @property
    def default_source(self) -> str | None:
        """The source ``pretrained=True`` uses: the first one listed."""
        return next(iter(self.weights), None)


_SEED_URL = ("https://bj.bcebos.com/v1/ai-studio-online/{key}"
             "?responseContentDisposition=attachment%3B%20filename%3D{filename}")
_PADDLECLAS_URL = ("https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/"
                   "{name}_pretrained.pdparams")
_TIMM_URL = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
# The official README's links (Google Drive file ids).
_DRIVE_URL = "https://drive.google.com/file/d/{id}/view?usp=sharing"


def _official(filename, drive_id):
    return WeightSource(_DRIVE_URL.format(id=drive_id), filename, "official", manual=True)


def _v1(name, width, paper, seed_key=None, seed_acc=None, paddleclas_acc=None,
        timm_acc=None, drive_id=None):
    weights = {}
    if seed_key:
        filename = f"rexnetv1_{width:.1f}x.pdparams"
        weights["seed"] = WeightSource(
            _SEED_URL.format(key=seed_key, filename=filename), filename,
            "paddle", *seed_acc)
    if paddleclas_acc:
        weights["paddleclas"] = WeightSource(
            _PADDLECLAS_URL.format(name=name), f"{name}_pretrained.pdparams",
            "paddle", *paddleclas_acc)
    if timm_acc:
        timm_name = f"rexnet_{round(width * 100)}.nav_in1k"
        weights["timm"] = WeightSource(
            _TIMM_URL.format(name=timm_name), f"{timm_name}.safetensors", "timm", *timm_acc)
    if drive_id:
        weights["official"] = _official(f"rexnetv1_{width:.1f}.pth", drive_id)
    return Variant(name, width, False, f"rexnetv1_{width:.1f}", *paper, weights)


def _lite(name, width, paper, drive_id):
    weights = {"official": _official(f"rexnet_lite_{width:.1f}.pth", drive_id)}
    return Variant(name, width, True, f"rexnetv1_lite_{width:.1f}", *paper, weights)


_NO_PAPER = (None, None)  # 2.2 appears only in the detection results

VARIANTS: dict[str, Variant] = {v.name: v for v in [
    _v1("ReXNet_0_9", 0.9, (77.2, 93.5)),
    _v1("ReXNet_1_0", 1.0, (77.9, 93.9),
        "6c890dd95dfc4e388335adfa298163d3ab413cca558e4abe966d52cb5c3aee31",
        (77.86, 93.87), (77.46, 93.70), (77.862, 93.890),
        "1xeIJ3wb83uOowU008ykYj6wDX2dsncA9"),
    _v1("ReXNet_1_3", 1.3, (79.5, 94.7),
        "41a4cc3e6d9545b9b69b4782cafa01147eb7661ec6af4f43841adc734149b3a7",
        (79.50, 94.68), (79.13, 94.64), (79.492, 94.680),
        "1x2ziK9Oyv66Y9NsxJxXsdjzpQF2uSJj0"),
    _v1("ReXNet_1_5", 1.5, (80.3, 95.2),
        "20b131a7cb1840b5aed37c512b2665fb20c72eebe4344da5a3c6f0ab0592a323",
        (80.32, 95.17), (80.06, 95.12), (80.322, 95.164),
        "1TOBGsbDhTHWBgqcRnyKIR0tHsJTOPUIG"),
    _v1("ReXNet_2_0", 2.0, (81.6, 95.7),
        "b4df9f7be43446b0952a25ee6e83f2e443e3b879a00046f6bb33278319cb5fd0",
        (81.64, 95.66), (81.22, 95.36), (81.636, 95.672),
        "1R1aOTKIe1Mvck86NanqcjWnlR8DY-Z4C"),
    _v1("ReXNet_2_2", 2.2, _NO_PAPER),
    _v1("ReXNet_3_0", 3.0, (82.8, 96.2),
        "9663f0570f0a4e4a8dde0b9799c539f5e22f46917d3d4e5a9d566cd213032d25",
        (82.45, 96.26), (82.09, 96.12), (82.780, 96.230),
        "1iXAsr8gs3pRz0QyHKomdj5SGVzPWbIs2"),
    _lite("ReXNetLite_1_0", 1.0, (76.2, 92.8), "1d9G4pLwZwkoDR2TRPCQlxiWiuC7R-Oqf"),
    _lite("ReXNetLite_1_3", 1.3, (77.8, 93.8), "1NsbsdI8qAHG6HdMxmySXcrl9NdEx3s0L"),
    _lite("ReXNetLite_1_5", 1.5, (78.6, 94.2), "12QzIh9A-U0PBGaLNOIr4gX2MoZEBnRjk"),
    _lite("ReXNetLite_2_0", 2.0, (80.2, 95.0), "1pGdG9HWnqSAu1FajmaMJMK5JyOJaiFyW"),
]}

# The five variants PaddleClas and the seed publish weights for.
SEED_VARIANTS = tuple(name for name, v in VARIANTS.items() if "seed" in v.weights)


def get_variant(name: str) -> Variant:
    """Look a variant up by name, with an error that lists the valid ones."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        import difflib
        close = difflib.get_close_matches(str(name), VARIANTS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown ReXNet variant {name!r}.{hint} Valid names: "
            f"{', '.join(VARIANTS)}. For another width, build "
            f"ReXNet(width_mult=...) directly.") from None
