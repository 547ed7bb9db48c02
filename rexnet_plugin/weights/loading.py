"""Resolve ``pretrained=`` and load checkpoints into models.

``load_pretrained(model, pretrained)`` accepts False, True (the variant's
default source), a source name from the variant table ("ppim",
"paddleclas", "timm", "official", "timm_in12k"), a local file or a URL. Whatever the
source, the state dict goes through the same steps:

1. read the file (``formats``: .pdparams, .safetensors, .pth);
2. detect its key layout and rename it to the canonical one (``layouts``);
3. check it against the model (``checks``), naming the checkpoint's variant
   when it is another one, or listing missing/unexpected keys and shape
   conflicts;
4. load it.

Downloads land in the cache (``download``) only after steps 1-3 pass.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..model import ReXNet
from ..zoo import (IMAGENET_CLASSES, PUBLISHERS, SOURCE_NAMES, VARIANTS, WeightSource,
                   get_variant)
from . import cache, download
from .checks import (CheckpointInfo, check_state_dict, describe_model, inspect_state,
                     ready_to_set, variant_of_plan)
from .errors import ManualDownloadError, WeightsError
from .formats import read_checkpoint
from .layouts import canonical_state

logger = logging.getLogger(__name__)

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
    state = load_state_dict(path)
    info = inspect_state(state)
    if info.variant is None:
        raise WeightsError(f"{path} holds {info.describe()}; build the model with "
                           f"ReXNet(width_mult=...) and load it with load_pretrained")
    model = ReXNet(**VARIANTS[info.variant].arch, class_num=info.class_num or None, **kwargs)
    model.set_state_dict(ready_to_set(model, check_state_dict(model, state, str(path))))
    return model


# -- resolving ``pretrained=`` ----------------------------------------------------

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
    """The variant's published file ``name`` ("ppim", "timm" ...), with a clear error."""
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


def cache_name(url: str) -> str:
    """The name a URL's file has in the cache: a published file's table name, else
    ``cache.filename_from_url``."""
    source = _source_for_url(url)
    return source.filename if source else cache.filename_from_url(url)


def forget(name_or_url: str) -> list[str]:
    """Forget a cached download (its file and the sha256 recorded on its first
    download), so that a changed file can be accepted deliberately. Takes the
    cache name (as the refusal message gives it) or the URL. Returns what was removed."""
    name = cache_name(name_or_url) if _is_url(name_or_url) else name_or_url
    return cache.forget(name)


def should_skip_head(class_num: int, pretrained, skip_head: bool = False,
                     variant: str | None = None) -> bool:
    """The one rule: is the checkpoint's classifier left out when loading?

    Yes when asked (``skip_head``), for a headless model (``class_num`` 0),
    and for published weights (True or a source name) meeting another class
    count than the file's (1000 for ImageNet-1k, 11,821 for timm's
    ImageNet-12k): fine-tuning, as with every PaddleClas model. Any other
    classifier mismatch is an error that says how to fix it.
    """
    if skip_head or not class_num:
        return True
    published = published_class_num(pretrained, variant)
    return published is not None and class_num != published


def published_class_num(pretrained, variant: str | None = None) -> int | None:
    """The class count of the published file ``pretrained`` picks (True or a
    source name), or None for a path or URL."""
    if variant is not None:
        weights = get_variant(variant).weights
        name = next(iter(weights), None) if pretrained is True else pretrained
        if isinstance(name, str) and name in weights:
            return weights[name].class_num
    if pretrained is True:
        return IMAGENET_CLASSES  # every variant's default source is an ImageNet-1k file
    if isinstance(pretrained, str) and pretrained in SOURCE_NAMES:
        # Without a variant: a source name has one class count in the whole table.
        return next(v.weights[pretrained].class_num for v in VARIANTS.values()
                    if pretrained in v.weights)
    return None


def load_pretrained(model, pretrained, variant: str | None = None,
                    skip_head: bool = False, *, progress: bool = True):
    """Load ``pretrained`` into ``model`` after a full check; return the model.

    ``pretrained``: False/None (nothing); True (the variant's default
    source); a source name ("ppim", "paddleclas", "timm", "official",
    "timm_in12k"); a
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
    model.set_state_dict(ready_to_set(model, state))
    logger.info("loaded %s into %s", label, describe_model(model))
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
                label = f"{what or 'the file'} downloaded from {download.public_url(url)}"
            else:
                label = f"{what} ({path})" if what else str(path)
            raw, _ = read_checkpoint(path, name=label)
            state, _ = canonical_state(raw, label)
            return check_state_dict(model, state, label, skip_head)
        return read_and_check

    if isinstance(pretrained, str) and pretrained in SOURCE_NAMES:
        source = source_for(variant, pretrained)
        label = f"{variant} '{pretrained}' weights"
        dest = cache.cache_path(source.filename)
        url = download.mirror_url(source.filename)
        if url is None and source.manual:
            if os.path.lexists(dest):
                problem = download.cached_problem(dest, source.size, source.sha256)
                if problem:
                    raise WeightsError(f"{dest} cannot be used: {problem}. "
                                       + _manual_message(variant, pretrained, source, dest))
                return verify(label)(dest), f"{label} ({dest})"
            raise ManualDownloadError(_manual_message(variant, pretrained, source, dest))
        url = url or source.url
        state = download.fetch(url, source.filename, verify(label, url, dest), size=source.size,
                               sha256=source.sha256, progress=progress)
        return state, f"{label} ({dest})"

    if _is_url(pretrained):
        source = _source_for_url(pretrained)
        name = cache_name(pretrained)
        dest = cache.cache_path(name)
        state = download.fetch(pretrained, name, verify("", pretrained, dest),
                               size=source.size if source else None,
                               sha256=source.sha256 if source else None, progress=progress)
        return state, download.public_url(pretrained)

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
    from .formats import torch_install_hint
    return (f"The {source_name} weights of {variant} ({PUBLISHERS[source.publisher].title}) are on "
            f"a host that needs a browser, so they cannot be downloaded for you. Open "
            f"{source.url}, save the file, and either pass its path "
            f"(pretrained='/path/to/{source.filename}') or save it as {dest} so that "
            f"pretrained={source_name!r} finds it. Reading .pth needs torch "
            f"({torch_install_hint()}); or convert it once with "
            f"'rexnet-plugin convert {source.filename} {variant}.pdparams'.")


def fetch_pretrained(variant: str, source: str | None = None, *, progress: bool = True) -> Path:
    """Download (or find in the cache) a published file, checked against a fresh model.

    For machines that go offline later: run this once, then ``pretrained=True``
    or the source name loads from the cache. Returns the cached path.
    """
    v = get_variant(variant)
    source = source or v.default_source
    if source is None:
        raise WeightsError(f"{variant} has no published weights")
    model = ReXNet(**v.arch, class_num=source_for(v.name, source).class_num)
    _obtain(model, source, v.name, False, progress)
    return cache.cache_path(source_for(v.name, source).filename)


def sources_table(variants=None) -> str:
    """Every published file of ``variants`` (default: all) with its cache state."""
    names = [get_variant(n).name for n in variants] if variants else list(VARIANTS)
    folder = cache.cache_dir()
    rows = [f"cache: {folder} (set {cache.CACHE_ENV} to move it)"]
    if os.environ.get(download.MIRROR_ENV):
        rows.append(f"mirror: {download.public_url(os.environ[download.MIRROR_ENV])}")
    rows.append(f"{'variant':<16}{'source':<12}{'layout':<10}{'cached':<8}file / URL")
    for name in names:
        sources = VARIANTS[name].weights
        if not sources:
            rows.append(f"{name:<16}{'-':<12}{'':<10}{'':<8}no published weights")
        for i, (source, w) in enumerate(sources.items()):
            label = source + (" *" if i == 0 else "")
            cached = "yes" if cache.cache_path(w.filename).is_file() else "no"
            how = " (manual download)" if w.manual else ""
            rows.append(f"{name:<16}{label:<12}{w.layout:<10}{cached:<8}{w.filename}{how}")
            rows.append(f"{'':<46}{w.url}")
    rows.append("* = the source pretrained=True loads")
    return "\n".join(rows)

