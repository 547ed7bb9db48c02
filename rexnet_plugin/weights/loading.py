"""``pretrained=``: a published source, a file or a URL, checked against the model first."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..model import ReXNet
from ..zoo import IMAGENET_CLASSES, PUBLISHERS, SOURCE_NAMES, VARIANTS, WeightSource, get_variant
from . import download
from .checks import (CheckpointInfo, check_state_dict, describe_model, inspect_state,
                     ready_to_set, variant_of_plan)
from .download import DEFAULT_TIMEOUT
from .errors import WeightsError
from .formats import read_checkpoint, torch_install_hint
from .layouts import canonical_state

logger = logging.getLogger(__name__)


def load_state_dict(path: str | os.PathLike, format: str | None = None, *,
                    name: str | None = None) -> dict:
    """Read a checkpoint of any supported format and layout, in the canonical layout."""
    return canonical_state(read_checkpoint(path, format, name)[0], name or str(path))[0]


def inspect_checkpoint(path: str | os.PathLike, format: str | None = None) -> CheckpointInfo:
    """What a checkpoint file is: its variant (width, kind) and class count."""
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
    sources = f"a source name ({sources}); " if sources else ""
    return (f"False; True (the variant's default source); {sources}the path of a .pdparams, "
            f".safetensors or .pth file; or an http(s) URL")


def source_for(variant: str | None, name: str) -> WeightSource:
    """The variant's published file ``name`` ("ppim", "timm" ...), with a clear error."""
    if variant is None:
        raise WeightsError(f"pretrained={name!r} names a published file, but this model is none "
                           f"of {', '.join(VARIANTS)}; pass the path or URL of a checkpoint")
    sources = VARIANTS[variant].weights
    if name not in sources:
        raise WeightsError(f"{variant} has no {name!r} weights (published for it: "
                           f"{', '.join(repr(s) for s in sources) or 'none'}). Accepted values "
                           f"of pretrained: {_accepted(variant)}.")
    return sources[name]


def _url_source(url: str) -> tuple[WeightSource | None, str]:
    """The published file at ``url`` (if any) and its name in the cache."""
    source = next((s for v in VARIANTS.values() for s in v.weights.values() if s.url == url), None)
    return source, source.filename if source else download.filename_from_url(url)


def forget(name_or_url: str) -> list[str]:
    """Delete a cached file and its first-download record, to accept a changed file."""
    return download.forget(_url_source(name_or_url)[1] if _is_url(name_or_url) else name_or_url)


def should_skip_head(class_num: int, pretrained, skip_head: bool = False,
                     variant: str | None = None) -> bool:
    """Leave the checkpoint's classifier out? If asked, headless, or fine-tuning published ones."""
    if skip_head or not class_num:
        return True
    if pretrained is True:  # every default source is an ImageNet-1k file
        return class_num != IMAGENET_CLASSES
    # A source name: the variant's file, else any (a source name has one class count).
    tables = [*([get_variant(variant).weights] if variant else []), *(
        v.weights for v in VARIANTS.values())] if isinstance(pretrained, str) else []
    published = next((t[pretrained].class_num for t in tables if pretrained in t), class_num)
    return class_num != published  # a path or URL: its classifier must fit


def load_pretrained(model, pretrained, variant: str | None = None, skip_head: bool = False, *,
                    progress: bool = True, download_timeout: float | None = DEFAULT_TIMEOUT):
    """Load ``pretrained`` (False, True, a source name, a file or a URL) into ``model``, checked."""
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
            raise WeightsError(f"pretrained=True: {variant or 'this model'} has no published "
                               f"ImageNet weights; pass the path or URL of a checkpoint, or use "
                               f"{', '.join(n for n, v in VARIANTS.items() if v.weights)}")
        pretrained = VARIANTS[variant].default_source

    def checked(path: Path, label: str) -> dict:
        return check_state_dict(model, load_state_dict(path, name=label), label, skip_head)

    if isinstance(pretrained, str) and (pretrained in SOURCE_NAMES or _is_url(pretrained)):
        if pretrained in SOURCE_NAMES:
            source = source_for(variant, pretrained)
            what, name = f"{variant} '{pretrained}' weights", source.filename
            url = download.mirror_url(name) or (None if source.manual else source.url)
            manual = (f"The {pretrained} weights of {variant} are on a host that needs a "
                      f"browser ({PUBLISHERS[source.publisher].title}). Open {source.url}, save "
                      f"the file, and pass its path (pretrained='/path/to/{name}') or save it as "
                      f"{download.cache_path(name)}. Reading .pth needs torch ("
                      f"{torch_install_hint()}), or convert it once with 'rexnet-plugin convert "
                      f"{name} {variant}.pdparams'.")
        else:
            (source, name), what, url, manual = _url_source(pretrained), "", pretrained, None
        dest = download.cache_path(name)

        def verify(path: Path) -> dict:  # a cached file named by its path, a download by its URL
            if path != dest:
                return checked(path, f"{what or 'the file'} downloaded from "
                                     f"{download.public_url(url)}")
            return checked(path, f"{what} ({path})" if what else str(path))
        state = download.fetch(url, name, verify, manual=manual, size=source and source.size,
                               sha256=source and source.sha256, progress=progress, timeout=timeout)
        return state, f"{what} ({dest})" if what else download.public_url(url)

    if isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained).expanduser()
        if not path.is_file() and Path(f"{path}.pdparams").is_file():
            path = Path(f"{path}.pdparams")  # PaddleClas passes paths without the suffix
        if not path.is_file():
            raise WeightsError(f"pretrained={str(pretrained)!r} is not a file, a URL or a "
                               f"source name. Accepted: {_accepted(variant)}.")
        return checked(path, str(path)), str(path)

    raise WeightsError(f"pretrained={pretrained!r} ({type(pretrained).__name__}) is not "
                       f"understood. Accepted: {_accepted(variant)}.")


def fetch_pretrained(variant: str, source: str | None = None, *, progress: bool = True,
                     download_timeout: float | None = DEFAULT_TIMEOUT) -> Path:
    """The cached path of a published file, downloaded (and checked) if missing."""
    v = get_variant(variant)
    source = source or v.default_source
    if source is None:
        raise WeightsError(f"{variant} has no published weights")
    published = source_for(v.name, source)
    _obtain(ReXNet(**v.arch, class_num=published.class_num), source, v.name, False, progress,
            download_timeout)
    return download.cache_path(published.filename)


def sources_table(variants=None) -> str:
    """Every published file of ``variants`` (default: all), and whether it is cached."""
    rows = [f"cache: {download.cache_dir()} (set {download.CACHE_ENV} to move it)"]
    if os.environ.get(download.MIRROR_ENV):
        rows.append(f"mirror: {download.public_url(os.environ[download.MIRROR_ENV])}")
    rows.append(f"{'variant':<16}{'source':<12}{'layout':<10}{'cached':<8}file / URL")
    for name in [get_variant(n).name for n in variants] if variants else VARIANTS:
        if not VARIANTS[name].weights:
            rows.append(f"{name:<16}{'-':<12}{'':<10}{'':<8}no published weights")
        for i, (source, w) in enumerate(VARIANTS[name].weights.items()):
            cached = "yes" if download.cache_path(w.filename).is_file() else "no"
            rows += [f"{name:<16}{source + ' *' * (i == 0):<12}{w.layout:<10}{cached:<8}"
                     f"{w.filename}{' (manual download)' * w.manual}", f"{'':<46}{w.url}"]
    return "\n".join(rows + ["* = the source pretrained=True loads"])
