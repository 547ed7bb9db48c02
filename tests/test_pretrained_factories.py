"""Every factory loads pretrained=<path>, <URL>, <source name> and True.

The weights are a freshly initialised model of the same variant, so each
load can be compared tensor by tensor; the published files are served by
the local HTTP server under their table file names (REXNET_PLUGIN_MIRROR).
"""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from safetensors.numpy import save_file

import rexnet_plugin
from rexnet_plugin.weights import download
from rexnet_plugin.weights.download import cache_path
from rexnet_plugin.weights.formats import write_checkpoint
from rexnet_plugin.weights.errors import ManualDownloadError, WeightsError
from rexnet_plugin.weights import to_official
from rexnet_plugin.zoo import VARIANTS
from weights_helpers import (_server, cache, cache_files, local_only,  # noqa: F401
                             official_to_timm, server, state_of)


def _assert_loaded(model, expected: dict):
    loaded = state_of(model)
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert np.array_equal(loaded[key], value), key


# The widest (the same code, models of 30-35 M parameters) only with -m slow.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if v.width_mult >= 2
                                  else n for n, v in VARIANTS.items()])
def test_factory_loads_every_kind_of_pretrained(name, server, cache, tmp_path, monkeypatch):
    """Every published source of the 1.0 models, and a file and a URL; the wider ones
    (the same code, larger models) load True and their last source, to keep it fast."""
    factory = getattr(rexnet_plugin, name)
    paddle.seed(123)
    expected = state_of(factory())
    paddle.seed(7)  # another init, so that a load that did nothing would show
    sources = VARIANTS[name].weights
    if VARIANTS[name].width_mult == 1.0:
        save_file(expected, str(tmp_path / "w.safetensors"))
        _assert_loaded(factory(pretrained=str(tmp_path / "w.safetensors")), expected)
        write_checkpoint(expected, tmp_path / "w.pdparams")
        _assert_loaded(factory(pretrained=server.add(f"/files/{name}.pdparams",
                                                     tmp_path / "w.pdparams")), expected)
    else:
        sources = {s: sources[s] for s in list(sources)[1:][-1:]}
    # The published files, each in its own layout, served by the mirror.
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    for source, w in VARIANTS[name].weights.items():
        if source not in {*sources, VARIANTS[name].default_source}:
            continue  # a file this run does not load
        path = tmp_path / w.filename
        if w.layout == "paddle":
            write_checkpoint(expected, path)
        elif w.layout == "timm":
            save_file(official_to_timm(to_official(expected)), str(path))
        else:  # official .pth files; the reader goes by content, so safetensors bytes do here
            save_file(to_official(expected), str(path))
        server.add("/" + w.filename, path)
    for source in sources:
        _assert_loaded(factory(pretrained=source), expected)
    if VARIANTS[name].weights:
        _assert_loaded(factory(pretrained=True), expected)
    else:
        with pytest.raises(WeightsError, match=f"{name} has no published ImageNet weights"):
            factory(pretrained=True)
    # Cached under their names, .pth as .pt; the URL's file under its own name.
    loaded = {VARIANTS[name].default_source, *sources} - {None}
    assert {f for f in cache_files(cache) if not f.startswith("url-")} == {
        cache_path(VARIANTS[name].weights[s].filename).name for s in loaded}


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if "official" in v.weights])
def test_official_source_without_mirror_asks_for_a_manual_download(name, cache):
    with pytest.raises(ManualDownloadError, match="drive.google.com"):
        getattr(rexnet_plugin, name)(pretrained="official")
    assert cache_files(cache) == set()
