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
from rexnet_plugin.weights.cache import cache_path
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


@pytest.mark.parametrize("name", list(VARIANTS))
def test_factory_loads_every_kind_of_pretrained(name, server, cache, tmp_path, monkeypatch):
    factory = getattr(rexnet_plugin, name)
    paddle.seed(123)
    expected = state_of(factory())
    write_checkpoint(expected, tmp_path / "w.pdparams")
    save_file(expected, str(tmp_path / "w.safetensors"))

    paddle.seed(7)  # another init, so that a load that did nothing would show
    _assert_loaded(factory(pretrained=str(tmp_path / "w.safetensors")), expected)
    _assert_loaded(factory(pretrained=server.add(f"/files/{name}.pdparams", tmp_path / "w.pdparams")),
                   expected)

    # The published files, each in its own layout, served by the mirror.
    # Every source name is tried on the 1.0 models; the wider ones try their
    # default (True) and their last source, to keep the test fast.
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    sources = VARIANTS[name].weights
    if VARIANTS[name].width_mult != 1.0:
        sources = {s: sources[s] for s in list(sources)[:1] + list(sources)[-1:]}
    for source, w in sources.items():
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
    url_files = {f for f in cache_files(cache) if f.startswith("url-")}
    assert len(url_files) == 1  # the plain URL above
    # cached under their names, .pth as .pt
    assert cache_files(cache) - url_files == {cache_path(w.filename).name
                                              for w in sources.values()}
    if sources:
        _assert_loaded(factory(pretrained=True), expected)
    else:
        with pytest.raises(WeightsError, match=f"{name} has no published ImageNet weights"):
            factory(pretrained=True)


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if "official" in v.weights])
def test_official_source_without_mirror_asks_for_a_manual_download(name, cache):
    with pytest.raises(ManualDownloadError, match="drive.google.com"):
        getattr(rexnet_plugin, name)(pretrained="official")
    assert cache_files(cache) == set()
