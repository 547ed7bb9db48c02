"""``pretrained=``: a published source, a file or a URL, read, renamed to the canonical
layout and checked against the model before it loads (docs/weights.md)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..model import ReXNet
from ..zoo import (IMAGENET_CLASSES, PUBLISHERS, SOURCE_NAMES, VARIANTS, WeightSource,
                   get_variant)
from . import download
from .download import DEFAULT_TIMEOUT
from .checks import (CheckpointInfo, check_state_dict, describe_model, inspect_state,
                     ready_to_set, variant_of_plan)
from .errors import WeightsError
from .formats import read_checkpoint
from .layouts import canonical_state

logger = logging.getLogger(__name__)


def load_state_dict(path: str | os.PathLike, format: str | None = None) -> dict:
    """Read a local checkpoint of any supported format and layout, in the canonical layout."""
    raw, _ = read_checkpoint(path, format)
    return canonical_state(raw, str(path))[0]


def inspect_checkpoint(path: str | os.PathLike, format: str | None = None) -> CheckpointInfo:
    """What a checkpoint file is: its variant (width, V1/lite) and class count."""
    return inspect_state(load_state_dict(path, format))


def model_from_checkpoint(path: str | os.PathLike, **kwargs):
    """The variant (and class count) a checkpoint file is for, loaded; ``kwargs`` go to ReXNet."""
    state = load_state_dict(path)
    info = inspect_state(state)
    if info.variant is None:
        raise WeightsError(f"{path} holds {info.describe()}; build the model with "
                           f"ReXNet(width_mult=...) and load it with load_pretrained")
    model = ReXNet(**VARIANTS[info.variant].arch, class_num=info.class_num or None, **kwargs)
    model.set_state_dict(ready_to_set(model, check_state_dict(model, state, str(path))))
    return model


def _is_url(value) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


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
    """A URL's name in the cache: a published file's table name, else one made from the URL."""
    source = _source_for_url(url)
    return source.filename if source else download.filename_from_url(url)


def forget(name_or_url: str) -> list[str]:
    """Delete a cached file and its first-download record (by cache name or URL), so that a
    changed file can be accepted deliberately. Returns what was removed."""
    return download.forget(cache_name(name_or_url) if _is_url(name_or_url) else name_or_url)


def should_skip_head(class_num: int, pretrained, skip_head: bool = False,
                     variant: str | None = None) -> bool:
    """Is the checkpoint's classifier left out? When asked, for a headless model, and for
    published weights (True or a source name) of another class count: fine-tuning."""
    if skip_head or not class_num:
        return True
    published = published_class_num(pretrained, variant)
    return published is not None and class_num != published


def published_class_num(pretrained, variant: str | None = None) -> int | None:
    """The class count of the published file ``pretrained`` picks; None for a path or URL."""
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


def load_pretrained(model, pretrained, variant: str | None = None, skip_head: bool = False, *,
                    progress: bool = True, download_timeout: float | None = DEFAULT_TIMEOUT):
    """Load ``pretrained`` into ``model`` after a full check; return the model.

    ``pretrained``: False/None, True (the variant's default source), a source name
    (``SOURCE_NAMES``), a local file (without suffix, ``.pdparams`` is tried, as
    PaddleClas does) or an http(s) URL. ``skip_head``: leave out a classifier of
    another class count. ``download_timeout``: seconds a whole download may take (0: no limit).
    """
    if pretrained is False or pretrained is None:
        return model
    name = get_variant(variant).name if variant else variant_of_plan(model.plan)
    state, label = _obtain(model, pretrained, name, skip_head, progress, download_timeout)
    model.set_state_dict(ready_to_set(model, state))
    logger.info("loaded %s into %s", label, describe_model(model))
    return model


def _obtain(model, pretrained, variant, skip_head, progress, timeout) -> tuple[dict, str]:
    """(checked canonical state, label of where it came from)."""
    if pretrained is True:
        if variant is None or not VARIANTS[variant].weights:
            raise WeightsError(
                f"pretrained=True: {variant or 'this model'} has no published ImageNet "
                f"weights. Pass the path or URL of a checkpoint. Variants with published "
                f"weights: {', '.join(n for n, v in VARIANTS.items() if v.weights)}.")
        pretrained = VARIANTS[variant].default_source

    def verify(what: str, url: str | None = None, dest: Path | None = None):
        """A reader + checker whose errors name the file: its path, or a download's URL."""
        def read_and_check(path: Path) -> dict:
            if url is not None and path != dest:
                label = f"{what or 'the file'} downloaded from {download.public_url(url)}"
            else:
                label = f"{what} ({path})" if what else str(path)
            raw, _ = read_checkpoint(path, name=label)
            state, _ = canonical_state(raw, label)
            return check_state_dict(model, state, label, skip_head)
        return read_and_check

    if isinstance(pretrained, str) and (pretrained in SOURCE_NAMES or _is_url(pretrained)):
        if pretrained in SOURCE_NAMES:
            source = source_for(variant, pretrained)
            what, name = f"{variant} '{pretrained}' weights", source.filename
            url = download.mirror_url(name) or (None if source.manual else source.url)
            manual = _manual_message(variant, pretrained, source, download.cache_path(name))
        else:
            source, what, url, manual = _source_for_url(pretrained), "", pretrained, None
            name = cache_name(url)
        dest = download.cache_path(name)
        state = download.fetch(url, name, verify(what, url, dest), manual=manual,
                               size=source and source.size, sha256=source and source.sha256,
                               progress=progress, timeout=timeout)
        return state, f"{what} ({dest})" if what else download.public_url(url)

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


def fetch_pretrained(variant: str, source: str | None = None, *, progress: bool = True,
                     download_timeout: float | None = DEFAULT_TIMEOUT) -> Path:
    """Download (or find in the cache) a published file, checked against a fresh model;
    return its cached path (for machines that go offline later)."""
    v = get_variant(variant)
    source = source or v.default_source
    if source is None:
        raise WeightsError(f"{variant} has no published weights")
    model = ReXNet(**v.arch, class_num=source_for(v.name, source).class_num)
    _obtain(model, source, v.name, False, progress, download_timeout)
    return download.cache_path(source_for(v.name, source).filename)


def sources_table(variants=None) -> str:
    """Every published file of ``variants`` (default: all), and whether it is cached."""
    names = [get_variant(n).name for n in variants] if variants else list(VARIANTS)
    folder = download.cache_dir()
    rows = [f"cache: {folder} (set {download.CACHE_ENV} to move it)"]
    if os.environ.get(download.MIRROR_ENV):
        rows.append(f"mirror: {download.public_url(os.environ[download.MIRROR_ENV])}")
    rows.append(f"{'variant':<16}{'source':<12}{'layout':<10}{'cached':<8}file / URL")
    for name in names:
        sources = VARIANTS[name].weights
        if not sources:
            rows.append(f"{name:<16}{'-':<12}{'':<10}{'':<8}no published weights")
        for i, (source, w) in enumerate(sources.items()):
            label = source + (" *" if i == 0 else "")
            cached = "yes" if download.cache_path(w.filename).is_file() else "no"
            how = " (manual download)" if w.manual else ""
            rows.append(f"{name:<16}{label:<12}{w.layout:<10}{cached:<8}{w.filename}{how}")
            rows.append(f"{'':<46}{w.url}")
    rows.append("* = the source pretrained=True loads")
    return "\n".join(rows)

