"""Find, convert, check and load ReXNet checkpoints.

``load_pretrained(model, pretrained)`` accepts False, True (the variant's
default source), a source name from the variant table ("seed",
"paddleclas", "timm", "official"), a local file or a URL. Whatever the
source, the state dict goes through the same steps:

1. read the file (``checkpoint_io``: .pdparams, .safetensors, .pth);
2. detect its key layout (Paddle, official PyTorch or timm) and rename it
   to the canonical one: the official names with Paddle's BN names
   (``_mean``/``_variance``), which is what ``ReXNet.state_dict()`` has;
3. check it against the model, naming the checkpoint's variant when it is
   another one, or listing missing/unexpected keys and shape conflicts;
4. load it.

Downloads land in the cache (``download.py``) only after steps 1-3 pass.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import download
from .checkpoint_io import read_checkpoint
from .errors import (ManualDownloadError, NotReXNetError, WeightsError,  # noqa: F401 (re-exported)
                     WrongVariantError)
from .zoo import PUBLISHERS, VARIANTS, WeightSource, get_variant

logger = logging.getLogger(__name__)

LAYOUTS = ("paddle", "official", "timm")
_MODULE_PREFIX = "module."  # torch DataParallel / DistributedDataParallel
_BLOCKS_START = 3  # features[0:3] is the stem; bottlenecks start at features.3


# -- layouts ----------------------------------------------------------------

def _strip_module_prefix(state: dict) -> dict:
    if state and all(k.startswith(_MODULE_PREFIX) for k in state):
        return {k[len(_MODULE_PREFIX):]: v for k, v in state.items()}
    return state


def detect_layout(state: dict) -> str | None:
    """"paddle", "official", "timm", or None when the keys are not ReXNet's."""
    keys = _strip_module_prefix(state).keys()
    if "stem.conv.weight" in keys:
        head = state.get("head.fc.weight", state.get(_MODULE_PREFIX + "head.fc.weight"))
        if head is None or np.ndim(head) == 2:  # timm's classifier is a Linear
            return "timm"
        return None
    if "features.0.weight" in keys:
        if any(k.endswith(("._mean", "._variance")) for k in keys):
            return "paddle"
        if any(k.endswith((".running_mean", ".running_var")) for k in keys):
            return "official"
    return None


def timm_to_official(state: dict) -> dict:
    """Rename a timm ``rexnet_*`` state dict to the official PyTorch names.

    timm's modules are named; the official ones are positions in
    Sequentials, and those positions depend on which parts a block has (an
    expansion conv, an SE module). So each block's keys are placed by that
    rule, not by a table. ``head.fc.weight`` [C, F] becomes the official
    1x1 conv ``output.1.weight`` [C, F, 1, 1].
    """
    state = _strip_module_prefix(state)
    blocks = sorted({int(m.group(1)) for k in state
                     if (m := re.match(r"features\.(\d+)\.conv_pwl\.", k))})
    last = max(blocks, default=-1) + 1  # timm's final 1x1 ConvNormAct
    has_exp = {b for b in blocks if f"features.{b}.conv_exp.conv.weight" in state}
    has_se = {b for b in blocks if f"features.{b}.se.fc1.weight" in state}

    def block_positions(b):
        """timm module -> index in the official block's ``out`` Sequential."""
        pos, i = {}, 0
        if b in has_exp:
            pos["conv_exp"] = i
            i += 3  # conv, BN, SiLU
        pos["conv_dw"] = i
        i += 2  # conv, BN
        if b in has_se:
            pos["se"] = i
            i += 1
        i += 1  # ReLU6
        pos["conv_pwl"] = i
        return pos

    se_names = {"fc1": "fc.0", "bn": "fc.1", "fc2": "fc.3"}
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"stem\.(conv|bn)\.(\w+)", key):
            new = f"features.{0 if m.group(1) == 'conv' else 1}.{m.group(2)}"
        elif m := re.fullmatch(r"features\.(\d+)\.(conv|bn)\.(\w+)", key):
            if int(m.group(1)) != last:
                raise NotReXNetError(f"unexpected timm key {key!r}: not a ReXNet layout")
            new = f"features.{_BLOCKS_START + last + (m.group(2) == 'bn')}.{m.group(3)}"
        elif m := re.fullmatch(r"features\.(\d+)\.(conv_exp|conv_dw|conv_pwl)\.(conv|bn)\.(\w+)", key):
            b, module, part, tensor = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            i = block_positions(b)[module] + (part == "bn")
            new = f"features.{_BLOCKS_START + b}.out.{i}.{tensor}"
        elif m := re.fullmatch(r"features\.(\d+)\.se\.(fc1|bn|fc2)\.(\w+)", key):
            b = int(m.group(1))
            new = (f"features.{_BLOCKS_START + b}.out.{block_positions(b)['se']}."
                   f"{se_names[m.group(2)]}.{m.group(3)}")
        elif key == "head.fc.weight":
            new, value = "output.1.weight", np.reshape(value, (*np.shape(value), 1, 1))
        elif key == "head.fc.bias":
            new = "output.1.bias"
        else:
            raise NotReXNetError(f"unexpected timm key {key!r}: not the layout of timm's "
                                 f"rexnet_* models")
        out[new] = value
    return out


def to_canonical(state: dict) -> dict:
    """Any ReXNet layout -> the canonical Paddle layout (BN ``_mean``/``_variance``).

    Strips a ``module.`` prefix, maps timm names, renames ``running_mean``/
    ``running_var`` and drops ``num_batches_tracked``.
    """
    state = _strip_module_prefix(state)
    if "stem.conv.weight" in state:
        state = timm_to_official(state)
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = re.sub(r"\.running_mean$", "._mean", key)
        key = re.sub(r"\.running_var$", "._variance", key)
        out[key] = value
    return out


def to_official(state: dict) -> dict:
    """Canonical (Paddle) names -> official PyTorch names, for PyTorch users."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"\._mean$", ".running_mean", key)
        out[re.sub(r"\._variance$", ".running_var", key)] = value
    return out


def canonical_state(state: dict, source: str) -> tuple[dict, str]:
    """(canonical state, layout it came in); NotReXNetError if it is not ReXNet."""
    layout = detect_layout(state)
    if layout is None:
        keys = list(state)
        raise NotReXNetError(
            f"{source} is not a ReXNet checkpoint: it has none of the keys of ReXNet's "
            f"layouts (Paddle/official 'features.0.weight' with BN statistics, timm "
            f"'stem.conv.weight'). Its first keys: {', '.join(keys[:6])}"
            f"{' ...' if len(keys) > 6 else ''}. Pass a ReXNet checkpoint.")
    canonical = to_canonical(state)
    stem = canonical.get("features.0.weight")
    if np.ndim(stem) != 4 or tuple(np.shape(stem)[1:]) != (3, 3, 3) \
            or f"features.{_BLOCKS_START}.out.0.weight" not in canonical:
        raise NotReXNetError(
            f"{source} has ReXNet-like key names but not ReXNet's structure (stem conv "
            f"{list(np.shape(stem))}, expected [C, 3, 3, 3] followed by bottlenecks at "
            f"features.{_BLOCKS_START}); it is not a ReXNet checkpoint.")
    return canonical, layout


# -- what a checkpoint is ------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    """The shape facts that tell ReXNet variants apart."""

    stem_channels: int
    block_channels: tuple[int, ...]
    head_channels: int
    has_se: bool

    def describe(self) -> str:
        return (f"stem {self.stem_channels}, {len(self.block_channels)} blocks ending at "
                f"{self.block_channels[-1] if self.block_channels else '?'} channels, head "
                f"{self.head_channels}, {'with' if self.has_se else 'without'} SE")


def plan_signature(plan) -> Signature:
    return Signature(plan.stem_channels, tuple(b.out_channels for b in plan.blocks),
                     plan.head_channels, any(b.use_se for b in plan.blocks))


@functools.lru_cache(maxsize=None)
def _variant_signatures() -> dict[str, Signature]:
    from .model import channel_plan
    return {name: plan_signature(channel_plan(v.width_mult, lite=v.lite))
            for name, v in VARIANTS.items()}


def variant_of_plan(plan) -> str | None:
    """The named variant with this channel plan, if any."""
    sig = plan_signature(plan)
    return next((n for n, s in _variant_signatures().items() if s == sig), None)


@dataclass(frozen=True)
class CheckpointInfo:
    """What the shapes of a canonical state dict say it is."""

    signature: Signature
    class_num: int  # 0 for a headless checkpoint
    variant: str | None  # the named variant whose channel plan matches

    @property
    def lite(self) -> bool | None:
        return VARIANTS[self.variant].lite if self.variant else None

    def describe(self) -> str:
        classes = f"{self.class_num} classes" if self.class_num else "no classifier"
        if self.variant:
            v = VARIANTS[self.variant]
            return (f"{self.variant} (ReXNet{'-lite' if v.lite else ' V1'}, width "
                    f"{v.width_mult}, {classes})")
        return (f"a ReXNet that is none of the named variants ({self.signature.describe()}, "
                f"{classes})")


def inspect_state(state: dict) -> CheckpointInfo:
    """Infer width, kind (V1/lite) and class count of a canonical state dict."""
    shape = {k: np.shape(v) for k, v in state.items()}
    blocks = []
    b = _BLOCKS_START
    while f"features.{b}.out.0.weight" in shape:
        bn_means = [int(m.group(1)) for k in shape
                    if (m := re.fullmatch(rf"features\.{b}\.out\.(\d+)\._mean", k))]
        blocks.append(shape[f"features.{b}.out.{max(bn_means)}._mean"][0] if bn_means else 0)
        b += 1
    head = shape.get(f"features.{b}.weight", (0,))[0]
    has_se = any(re.fullmatch(r"features\.\d+\.out\.\d+\.fc\.0\.weight", k) for k in shape)
    sig = Signature(shape["features.0.weight"][0], tuple(blocks), head, has_se)
    classifier = [int(m.group(1)) for k in shape
                  if (m := re.fullmatch(r"output\.(\d+)\.weight", k)) and len(shape[k]) == 4]
    class_num = shape[f"output.{max(classifier)}.weight"][0] if classifier else 0
    variant = next((n for n, s in _variant_signatures().items() if s == sig), None)
    return CheckpointInfo(sig, class_num, variant)


# -- checking against a model ---------------------------------------------------

def _describe_model(model) -> str:
    name = variant_of_plan(model.plan)
    kind = "ReXNet-lite" if model.lite else "ReXNet V1"
    classes = f"{model.class_num} classes" if model.class_num else "no classifier"
    return f"{name + ' (' if name else ''}{kind}, width {model.width_mult}, {classes}{')' if name else ''}"


def _key_report(missing, unexpected, conflicts, shapes, own, limit=10) -> list[str]:
    lines = []
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:limit])}"
                     + (" ..." if len(missing) > limit else ""))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:limit])}"
                     + (" ..." if len(unexpected) > limit else ""))
    for k in conflicts[:limit]:
        lines.append(f"  shape conflict at {k}: checkpoint {shapes[k]}, model {own[k]}")
    if len(conflicts) > limit:
        lines.append(f"  ... and {len(conflicts) - limit} more shape conflicts")
    return lines


def check_state_dict(model, state: dict, source: str, skip_head: bool = False) -> dict:
    """Compare a canonical ``state`` with ``model``; raise one readable error on mismatch.

    With ``skip_head``, classifier tensors the model lacks or has in another
    shape are left out (fine-tuning on another class count, or a headless
    backbone); the model keeps its own initial classifier. Returns the
    state to load.
    """
    own = {k: list(v.shape) for k, v in model.state_dict().items()}
    shapes = {k: list(np.shape(v)) for k, v in state.items()}
    skipped = []
    if skip_head:
        skipped = [k for k in state if k.startswith("output.") and shapes[k] != own.get(k)]
        state = {k: v for k, v in state.items() if k not in skipped}
        shapes = {k: shapes[k] for k in state}
        own = {k: v for k, v in own.items() if not k.startswith("output.") or k in state}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    conflicts = sorted(k for k in set(own) & set(shapes) if own[k] != shapes[k])
    if not (missing or unexpected or conflicts):
        if skipped:
            logger.info("%s: classifier not loaded (%s); it keeps its initial weights",
                        source, ", ".join(skipped))
        return state

    report = _key_report(missing, unexpected, conflicts, shapes, own)
    try:
        info = inspect_state(state)
    except (KeyError, IndexError, ValueError):  # too broken to say what it is
        info = None
    if info is not None and info.signature != plan_signature(model.plan):
        fix = (f"build {info.variant} instead (create_model('{info.variant}'))"
               if info.variant else "build a ReXNet with the checkpoint's width")
        raise WrongVariantError("\n".join(
            [f"{source} holds {info.describe()}, but the model is {_describe_model(model)}. "
             f"Pass the checkpoint made for this variant, or {fix}. First differences:"]
            + _key_report(missing, unexpected, conflicts, shapes, own, limit=3)))
    lines = [f"{source} does not fit the model {_describe_model(model)}:"] + report
    if any(k.startswith("output.") for k in conflicts + unexpected + missing):
        ckpt_classes = info.class_num if info is not None else "?"
        lines.append(f"  The classifier differs (checkpoint: {ckpt_classes} classes, model: "
                     f"{model.class_num}): set class_num={ckpt_classes} to use its classifier, or "
                     f"load with skip_head=True to keep the model's new classifier and load "
                     f"everything else.")
    raise WeightsError("\n".join(lines))


def _ready_to_set(model, state: dict) -> dict:
    """The full state for ``set_state_dict``: floats cast to the model's dtype (a
    float16 file into a float32 model), and the model's own tensors for keys
    the checkpoint does not fill (a skipped head), so Paddle warns about nothing."""
    own = model.state_dict()
    out = {k: v for k, v in own.items() if k not in state}
    for key, value in state.items():
        target = np.dtype(str(own[key].dtype).replace("paddle.", ""))
        value = np.asarray(value)
        out[key] = value.astype(target) if value.dtype != target and \
            np.issubdtype(value.dtype, np.floating) else value
    return out


# -- reading a file ------------------------------------------------------------

def load_state_dict(path: str | os.PathLike, format: str | None = None) -> dict:
    """Read a local checkpoint of any supported format and layout, in the canonical layout."""
    raw, _ = read_checkpoint(path, format)
    return canonical_state(raw, str(path))[0]


def inspect_checkpoint(path: str | os.PathLike, format: str | None = None) -> CheckpointInfo:
    """What a checkpoint file is: its variant (width, V1/lite) and class count."""
    return inspect_state(load_state_dict(path, format))


def model_from_checkpoint(path: str | os.PathLike, **kwargs):
    """Build the variant a checkpoint file is for, with its class count, and load it.

    ``kwargs`` go to ``ReXNet`` (dropout_ratio, drop_path_rate ...).
    """
    from .factories import create_model
    state = load_state_dict(path)
    info = inspect_state(state)
    if info.variant is None:
        raise WeightsError(f"{path} holds {info.describe()}; build the model with "
                           f"ReXNet(width_mult=...) and load it with load_pretrained")
    model = create_model(info.variant, class_num=info.class_num or None, **kwargs)
    model.set_state_dict(_ready_to_set(model, check_state_dict(model, state, str(path))))
    return model


# -- resolving ``pretrained=`` ----------------------------------------------------

SOURCE_NAMES = tuple(PUBLISHERS)


def _is_url(value) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _variant_name(model, variant: str | None) -> str | None:
    if variant is not None:
        return get_variant(variant).name
    return variant_of_plan(model.plan) if hasattr(model, "plan") else None


def _accepted(variant: str | None) -> str:
    sources = ", ".join(repr(s) for s in VARIANTS[variant].weights) if variant else ""
    return ("False; True (the variant's default source); "
            + (f"a source name ({sources}); " if sources else "")
            + "the path of a .pdparams, .safetensors or .pth file; or an http(s) URL")


def source_for(variant: str | None, name: str) -> WeightSource:
    """The variant's published file ``name`` ("seed", "timm" ...), with a clear error."""
    if variant is None:
        raise WeightsError(
            f"pretrained={name!r} names a published file, but this model is not one of the "
            f"named variants ({', '.join(VARIANTS)}); pass the path or URL of a checkpoint.")
    sources = VARIANTS[variant].weights
    if name not in sources:
        have = ", ".join(repr(s) for s in sources) or "none"
        raise WeightsError(
            f"{variant} has no {name!r} weights (published for it: {have}). Accepted values "
            f"of pretrained: {_accepted(variant)}.")
    return sources[name]


def _source_for_url(url: str) -> WeightSource | None:
    return next((s for v in VARIANTS.values() for s in v.weights.values() if s.url == url), None)


def load_pretrained(model, pretrained, variant: str | None = None,
                    skip_head: bool = False, *, progress: bool = True):
    """Load ``pretrained`` into ``model`` after a full check; return the model.

    ``pretrained``: False/None (nothing); True (the variant's default
    source); a source name ("seed", "paddleclas", "timm", "official"); a
    local file (.pdparams, .safetensors, .pth; a path without suffix also
    tries ``.pdparams``, as PaddleClas does); or an http(s) URL.
    ``variant``: the model's name in the variant table (found from the model
    when omitted). ``skip_head``: leave out a classifier whose class count
    differs (fine-tuning). ``progress``: show a download progress bar.
    """
    if pretrained is False or pretrained is None:
        return model
    name = _variant_name(model, variant)
    state, label = _obtain(model, pretrained, name, skip_head, progress)
    model.set_state_dict(_ready_to_set(model, state))
    logger.info("loaded %s into %s", label, _describe_model(model))
    return model


def _obtain(model, pretrained, variant, skip_head, progress) -> tuple[dict, str]:
    """(checked canonical state, label of where it came from)."""
    if pretrained is True:
        if variant is None or not VARIANTS[variant].weights:
            raise WeightsError(
                f"pretrained=True: {variant or 'this model'} has no published ImageNet "
                f"weights. Pass the path or URL of a checkpoint. Variants with published "
                f"weights: {', '.join(n for n, v in VARIANTS.items() if v.weights)}.")
        pretrained = VARIANTS[variant].default_source

    def verify(what: str, url: str | None = None, dest: Path | None = None):
        """A reader + checker whose errors name the file: the cached or local
        path, or, for a download's hidden temp file, the URL."""
        def read_and_check(path: Path) -> dict:
            if url is not None and path != dest:
                label = f"{what or 'the file'} downloaded from {url}"
            else:
                label = f"{what} ({path})" if what else str(path)
            raw, _ = read_checkpoint(path)
            state, _ = canonical_state(raw, label)
            return check_state_dict(model, state, label, skip_head)
        return read_and_check

    if isinstance(pretrained, str) and pretrained in SOURCE_NAMES:
        source = source_for(variant, pretrained)
        label = f"{variant} '{pretrained}' weights"
        dest = download.cache_dir() / source.filename
        url = download.mirror_url(source.filename)
        if url is None and source.manual:
            if dest.is_file():
                return verify(label)(dest), f"{label} ({dest})"
            raise ManualDownloadError(_manual_message(variant, pretrained, source, dest))
        url = url or source.url
        state = download.fetch(url, dest, verify(label, url, dest), size=source.size,
                               sha256=source.sha256, progress=progress)
        return state, f"{label} ({dest})"

    if _is_url(pretrained):
        source = _source_for_url(pretrained)
        filename = source.filename if source else download.filename_from_url(pretrained)
        dest = download.cache_dir() / filename
        state = download.fetch(pretrained, dest, verify("", pretrained, dest),
                               size=source.size if source else None,
                               sha256=source.sha256 if source else None, progress=progress)
        return state, pretrained

    if isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained).expanduser()
        if not path.is_file() and Path(f"{path}.pdparams").is_file():
            path = Path(f"{path}.pdparams")  # PaddleClas passes paths without the suffix
        if not path.is_file():
            raise WeightsError(f"pretrained={str(pretrained)!r} is not a file, a URL or a "
                               f"source name. Accepted: {_accepted(variant)}.")
        return verify("")(path), str(path)

    raise WeightsError(f"pretrained={pretrained!r} ({type(pretrained).__name__}) is not "
                       f"understood. Accepted: {_accepted(variant)}.")


def _manual_message(variant: str, source_name: str, source: WeightSource, dest: Path) -> str:
    from .checkpoint_io import TORCH_INSTALL_HINT
    return (f"The {source_name} weights of {variant} ({PUBLISHERS[source_name].title}) are on "
            f"a host that needs a browser, so they cannot be downloaded for you. Open "
            f"{source.url}, save the file, and either pass its path "
            f"(pretrained='/path/to/{source.filename}') or save it as {dest} so that "
            f"pretrained={source_name!r} finds it. Reading .pth needs torch "
            f"({TORCH_INSTALL_HINT}); or convert it once with "
            f"'rexnet-plugin convert {source.filename} {variant}.pdparams'.")


def fetch_pretrained(variant: str, source: str | None = None, *, progress: bool = True) -> Path:
    """Download (or find in the cache) a published file, checked against a fresh model.

    For machines that go offline later: run this once, then ``pretrained=True``
    or the source name loads from the cache. Returns the cached path.
    """
    from .factories import create_model
    v = get_variant(variant)
    source = source or v.default_source
    if source is None:
        raise WeightsError(f"{variant} has no published weights")
    model = create_model(variant)
    _obtain(model, source, v.name, False, progress)
    return download.cache_dir() / source_for(v.name, source).filename


def sources_table(variants=None) -> str:
    """Every published file of ``variants`` (default: all) with its cache state."""
    names = [get_variant(n).name for n in variants] if variants else list(VARIANTS)
    cache = download.cache_dir()
    rows = [f"cache: {cache} (set {download.CACHE_ENV} to move it)"]
    if os.environ.get(download.MIRROR_ENV):
        rows.append(f"mirror: {os.environ[download.MIRROR_ENV]}")
    rows.append(f"{'variant':<16}{'source':<12}{'layout':<10}{'cached':<8}file / URL")
    for name in names:
        sources = VARIANTS[name].weights
        if not sources:
            rows.append(f"{name:<16}{'-':<12}{'':<10}{'':<8}no published weights")
        for i, (source, w) in enumerate(sources.items()):
            label = source + (" *" if i == 0 else "")
            cached = "yes" if (cache / w.filename).is_file() else "no"
            how = " (manual download)" if w.manual else ""
            rows.append(f"{name:<16}{label:<12}{w.layout:<10}{cached:<8}{w.filename}{how}")
            rows.append(f"{'':<46}{w.url}")
    rows.append("* = the source pretrained=True loads")
    return "\n".join(rows)
