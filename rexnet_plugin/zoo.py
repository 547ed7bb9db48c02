"""The variant table (no paddle): everything else reads ``VARIANTS``; a variant is one row."""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGENET_CLASSES = 1000
IMAGENET12K_CLASSES = 11821  # timm's ImageNet-12k subset (sw_in12k)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_VARIANT = "ReXNet_1_0"  # the demo's, the benchmark's and ppdet's default


@dataclass(frozen=True)
class EvalTransform:
    """Resize the short side, center-crop, normalise; the default is PPIM's (PIL)."""
    resize_short: int = 256
    interpolation: str = "bicubic"
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def crop_pct(self) -> float:
        return self.crop_size / self.resize_short

    def describe(self) -> str:
        return (f"resize the short side to {self.resize_short} ({self.interpolation}, PIL), "
                f"center-crop {self.crop_size}, scale to [0, 1], normalise with mean "
                f"{list(self.mean)} and std {list(self.std)}")


EVAL_TRANSFORM = EvalTransform()
# timm tests its ReXNet-R weights (trained at 224) at 288 with crop_pct 1.0.
R_EVAL_TRANSFORM = EvalTransform(resize_short=288, crop_size=288)
_TIMM_HOME = "https://github.com/huggingface/pytorch-image-models"


@dataclass(frozen=True)
class Publisher:
    title: str
    home: str
    license: str  # as the publisher states it
    license_where: str
    accuracy_measured_with: str


# Keyed by publisher; a variant's weight sources (the ``pretrained=`` names)
# are the keys of ``Variant.weights``, the first being ``pretrained=True``'s.
PUBLISHERS: dict[str, Publisher] = {
    "ppim": Publisher(
        "PPIM (AgentMaker/Paddle-Image-Models)", "https://github.com/AgentMaker/Paddle-Image-Models",
        "Apache-2.0", "the repository's LICENSE file and setup.py; no separate terms for the "
        "weight files", "PIL bicubic resize 256, center crop 224"),
    "paddleclas": Publisher(
        "PaddleClas (PaddlePaddle)", "https://github.com/PaddlePaddle/PaddleClas", "Apache-2.0",
        "the repository's LICENSE file",
        "PaddleClas's default eval pipeline (cv2 resize 256, center crop 224)"),
    "timm": Publisher(
        "timm (Hugging Face hub, timm/rexnet_*.nav_in1k)", _TIMM_HOME, "MIT",
        "the license field of the model cards: mit",
        "timm validate.py: bicubic resize 256 (crop_pct 0.875), center crop 224"),
    "timm_rexnetr": Publisher(
        "timm (Hugging Face hub, timm/rexnetr_*.sw_in12k_ft_in1k and .sw_in12k)", _TIMM_HOME,
        "Apache-2.0", "the license field of the model cards and of timm's pretrained "
        "configs: apache-2.0", "timm validate.py, bicubic: test size 288 with crop_pct "
        "1.0 (the figures used here), and 224 with crop_pct 0.95"),
    "official": Publisher(
        "NAVER AI Lab, official ReXNet (clovaai/rexnet)", "https://github.com/clovaai/rexnet",
        "MIT", "the repository's LICENSE file and README ('distributed under MIT license')",
        "the paper's protocol, 224x224"),
}


@dataclass(frozen=True)
class Accuracy:
    """ImageNet-1k validation accuracy (%) as the publisher reports it."""
    top1: float
    top5: float
    image_size: int = 224
    crop_pct: float = 0.875


@dataclass(frozen=True)
class WeightSource:
    """One published checkpoint; ``layout`` ("paddle", "official", "timm") names its keys."""
    url: str
    filename: str  # in the cache and on a mirror
    layout: str
    publisher: str  # key of PUBLISHERS
    accuracy: tuple[Accuracy, ...] = ()  # the first at the variant's eval_transform
    class_num: int = IMAGENET_CLASSES
    sha256: str | None = None  # None where the publisher gives none
    size: int | None = None
    manual: bool = False  # url is a browser page (Google Drive): the user passes the file


# The kinds of ReXNet (Variant.kind, plan.ChannelPlan.kind) and their names in the docs.
KINDS = {"v1": "ReXNet V1", "lite": "ReXNet-lite", "r": "ReXNet-R"}


@dataclass(frozen=True)
class Variant:
    name: str
    width_mult: float
    kind: str = "v1"  # a key of KINDS
    ch_div: int | None = None  # ReXNet-R only (timm's ch_div)
    official_name: str = ""  # key in shared/reference/official_shapes.json
    timm_name: str = ""  # rexnet_100, rexnetr_200 ... where timm has it
    paper_top1: float | None = None
    paper_top5: float | None = None
    weights: dict[str, WeightSource] = field(default_factory=dict)
    eval_transform: EvalTransform = EVAL_TRANSFORM  # of its accuracy figures and configs

    def __post_init__(self):
        if self.kind not in KINDS or (self.kind == "r") != (self.ch_div is not None):
            raise ValueError(f"{self.name}: kind {self.kind!r} with ch_div {self.ch_div!r}; "
                             f"kinds are {', '.join(KINDS)} and only 'r' has a ch_div")

    @property
    def arch(self) -> dict:  # ReXNet's (and plan.channel_plan's) keyword arguments
        return {"width_mult": self.width_mult, "lite": self.kind == "lite",
                "ch_div": self.ch_div}

    @property
    def default_source(self) -> str | None:
        return next(iter(self.weights), None)


_PPIM_URL = ("https://bj.bcebos.com/v1/ai-studio-online/{key}"
             "?responseContentDisposition=attachment%3B%20filename%3D{filename}")
_PADDLECLAS_URL = ("https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/"
                   "{name}_pretrained.pdparams")
_TIMM_URL = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
_DRIVE_URL = "https://drive.google.com/file/d/{id}/view?usp=sharing"  # the official README's


def _official(filename: str, drive_id: str) -> WeightSource:
    return WeightSource(_DRIVE_URL.format(id=drive_id), filename, "official", "official",
                        manual=True)


def _timm(name: str, publisher: str, accuracy=(), class_num=IMAGENET_CLASSES) -> WeightSource:
    return WeightSource(_TIMM_URL.format(name=name), f"{name}.safetensors", "timm", publisher,
                        accuracy, class_num)


def _v1(name: str, *, width: float, paper: tuple = (None, None), ppim_key: str = "",
        ppim_acc=None, paddleclas_acc=None, timm_acc=None, drive_id: str = "") -> Variant:
    """A ReXNet V1 row; ``*_acc`` are (top-1, top-5) as each publisher reports them."""
    weights = {}
    if ppim_key:
        filename = f"rexnetv1_{width:.1f}x.pdparams"
        weights["ppim"] = WeightSource(_PPIM_URL.format(key=ppim_key, filename=filename),
                                       filename, "paddle", "ppim", (Accuracy(*ppim_acc),))
    if paddleclas_acc:
        weights["paddleclas"] = WeightSource(
            _PADDLECLAS_URL.format(name=name), f"{name}_pretrained.pdparams", "paddle",
            "paddleclas", (Accuracy(*paddleclas_acc),))
    timm_name = f"rexnet_{round(width * 100)}" if timm_acc else ""
    if timm_acc:
        weights["timm"] = _timm(f"{timm_name}.nav_in1k", "timm", (Accuracy(*timm_acc),))
    if drive_id:
        weights["official"] = _official(f"rexnetv1_{width:.1f}.pth", drive_id)
    return Variant(name, width, "v1", official_name=f"rexnetv1_{width:.1f}",
                   timm_name=timm_name, paper_top1=paper[0], paper_top5=paper[1],
                   weights=weights)


def _lite(name: str, *, width: float, paper: tuple, drive_id: str) -> Variant:
    """A ReXNet-lite row; only NAVER publishes lite weights."""
    return Variant(name, width, "lite", official_name=f"rexnetv1_lite_{width:.1f}",
                   paper_top1=paper[0], paper_top5=paper[1],
                   weights={"official": _official(f"rexnet_lite_{width:.1f}.pth", drive_id)})


def _r(name: str, *, width: float, ch_div: int, acc_288=None, acc_224=None) -> Variant:
    """A ReXNet-R row: timm's ImageNet-12k weights and their 1k fine-tune (acc at 288, 224)."""
    timm_name = f"rexnetr_{round(width * 100)}"
    weights = {}
    if acc_288:
        weights["timm"] = _timm(f"{timm_name}.sw_in12k_ft_in1k", "timm_rexnetr", (
            Accuracy(*acc_288, image_size=288, crop_pct=1.0),
            Accuracy(*acc_224, image_size=224, crop_pct=0.95)))
        weights["timm_in12k"] = _timm(f"{timm_name}.sw_in12k", "timm_rexnetr",
                                      class_num=IMAGENET12K_CLASSES)
    return Variant(name, width, "r", ch_div, timm_name=timm_name, weights=weights,
                   eval_transform=R_EVAL_TRANSFORM if weights else EVAL_TRANSFORM)


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    _v1("ReXNet_0_9", width=0.9, paper=(77.2, 93.5)),
    _v1("ReXNet_1_0", width=1.0, paper=(77.9, 93.9),
        ppim_key="6c890dd95dfc4e388335adfa298163d3ab413cca558e4abe966d52cb5c3aee31",
        ppim_acc=(77.86, 93.87), paddleclas_acc=(77.46, 93.70), timm_acc=(77.862, 93.890),
        drive_id="1xeIJ3wb83uOowU008ykYj6wDX2dsncA9"),
    _v1("ReXNet_1_3", width=1.3, paper=(79.5, 94.7),
        ppim_key="41a4cc3e6d9545b9b69b4782cafa01147eb7661ec6af4f43841adc734149b3a7",
        ppim_acc=(79.50, 94.68), paddleclas_acc=(79.13, 94.64), timm_acc=(79.492, 94.680),
        drive_id="1x2ziK9Oyv66Y9NsxJxXsdjzpQF2uSJj0"),
    _v1("ReXNet_1_5", width=1.5, paper=(80.3, 95.2),
        ppim_key="20b131a7cb1840b5aed37c512b2665fb20c72eebe4344da5a3c6f0ab0592a323",
        ppim_acc=(80.32, 95.17), paddleclas_acc=(80.06, 95.12), timm_acc=(80.322, 95.164),
        drive_id="1TOBGsbDhTHWBgqcRnyKIR0tHsJTOPUIG"),
    _v1("ReXNet_2_0", width=2.0, paper=(81.6, 95.7),
        ppim_key="b4df9f7be43446b0952a25ee6e83f2e443e3b879a00046f6bb33278319cb5fd0",
        ppim_acc=(81.64, 95.66), paddleclas_acc=(81.22, 95.36), timm_acc=(81.636, 95.672),
        drive_id="1R1aOTKIe1Mvck86NanqcjWnlR8DY-Z4C"),
    _v1("ReXNet_2_2", width=2.2),  # only in the paper's detection results
    _v1("ReXNet_3_0", width=3.0, paper=(82.8, 96.2),
        ppim_key="9663f0570f0a4e4a8dde0b9799c539f5e22f46917d3d4e5a9d566cd213032d25",
        ppim_acc=(82.45, 96.26), paddleclas_acc=(82.09, 96.12), timm_acc=(82.780, 96.230),
        drive_id="1iXAsr8gs3pRz0QyHKomdj5SGVzPWbIs2"),
    _lite("ReXNetLite_1_0", width=1.0, paper=(76.2, 92.8),
          drive_id="1d9G4pLwZwkoDR2TRPCQlxiWiuC7R-Oqf"),
    _lite("ReXNetLite_1_3", width=1.3, paper=(77.8, 93.8),
          drive_id="1NsbsdI8qAHG6HdMxmySXcrl9NdEx3s0L"),
    _lite("ReXNetLite_1_5", width=1.5, paper=(78.6, 94.2),
          drive_id="12QzIh9A-U0PBGaLNOIr4gX2MoZEBnRjk"),
    _lite("ReXNetLite_2_0", width=2.0, paper=(80.2, 95.0),
          drive_id="1pGdG9HWnqSAu1FajmaMJMK5JyOJaiFyW"),
    # timm: "ReXNet V1 ... w/ rounded (mod 8) channels" (mod 16 for 3.0).
    _r("ReXNetR_1_0", width=1.0, ch_div=8),
    _r("ReXNetR_1_3", width=1.3, ch_div=8),
    _r("ReXNetR_1_5", width=1.5, ch_div=8),
    _r("ReXNetR_2_0", width=2.0, ch_div=8, acc_288=(83.160, 96.646), acc_224=(82.602, 96.396)),
    _r("ReXNetR_3_0", width=3.0, ch_div=16, acc_288=(84.582, 97.278), acc_224=(84.036, 96.994)),
]}

SOURCE_NAMES = tuple(dict.fromkeys(s for v in VARIANTS.values() for s in v.weights))
PPIM_VARIANTS = tuple(name for name, v in VARIANTS.items() if "ppim" in v.weights)
# PaddleClas 2.3+ ships these built in (ppcls.arch.backbone ReXNet_*).
PADDLECLAS_BUILTIN_NAMES = tuple(n for n, v in VARIANTS.items() if "paddleclas" in v.weights)


def get_variant(name: str) -> Variant:
    """Look a variant up by name, with an error that lists the valid ones."""
    try:
        return VARIANTS[name]
    except (KeyError, TypeError):
        import difflib
        close = difflib.get_close_matches(str(name), VARIANTS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        build = ("ReXNet(width_mult=..., ch_div=8) (ReXNet-R)"
                 if str(name).lower().startswith("rexnetr") else "ReXNet(width_mult=...)")
        raise ValueError(
            f"Unknown ReXNet variant {name!r}.{hint} Valid names: "
            f"{', '.join(VARIANTS)}. For another width, build {build} directly.") from None
