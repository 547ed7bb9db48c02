"""Downloads: checked, atomic, cached, and each failure its own clear error.

A local HTTP server (weights_helpers.FileServer) stands in for the hosts,
reached either through REXNET_PLUGIN_MIRROR or by pointing a table entry's
URL at it. After every failure the cache holds no file, temp files included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import paddle
import pytest
import tqdm
from safetensors.numpy import save_file

from conftest import load_reference_npz
from rexnet_plugin import create_model
from rexnet_plugin.weights import download
from rexnet_plugin.weights.formats import write_checkpoint
from rexnet_plugin.weights.errors import (ChecksumError, CorruptCheckpointError, DownloadError,
                                  ManualDownloadError, NotReXNetError,
                                  WeightsError, WrongVariantError)
from rexnet_plugin.weights import fetch_pretrained, to_canonical
from rexnet_plugin.zoo import VARIANTS
from weights_helpers import (_server, cache, cache_files, closed_port, local_only,  # noqa: F401
                             official_to_timm, server)

PPIM = VARIANTS["ReXNet_1_0"].weights["ppim"]
PPIM_PATH = "/" + PPIM.filename  # where the mirror serves it


@pytest.fixture(scope="module")
def reference():
    state, cases = load_reference_npz("ReXNet_1_0")
    return state, cases


@pytest.fixture
def ppim_bytes(reference, tmp_path):
    write_checkpoint(to_canonical(reference[0]), tmp_path / "ppim.pdparams")
    return (tmp_path / "ppim.pdparams").read_bytes()


@pytest.fixture
def mirror(server, cache, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    return server


def _assert_reference_logits(model, reference):
    _, cases = reference
    model.eval()
    with paddle.no_grad():
        logits = model(paddle.to_tensor(cases["a"]["input"])).numpy()
    assert np.abs(logits - cases["a"]["logits"]).max() <= 1e-4


def test_download_once_then_reuse_the_cache(mirror, cache, ppim_bytes, reference):
    mirror.add(PPIM_PATH, ppim_bytes)
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained=True), reference)
    assert mirror.hits[PPIM_PATH] == 1
    assert cache_files(cache) == {PPIM.filename}
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained="ppim"), reference)
    assert mirror.hits[PPIM_PATH] == 1  # served from the cache


def test_damaged_cache_file_is_downloaded_again(mirror, cache, ppim_bytes, reference):
    mirror.add(PPIM_PATH, ppim_bytes)
    create_model("ReXNet_1_0", pretrained=True)
    cached = cache / PPIM.filename
    cached.write_bytes(cached.read_bytes()[:1000])
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained=True), reference)
    assert mirror.hits[PPIM_PATH] == 2
    assert cached.read_bytes() == ppim_bytes and cache_files(cache) == {PPIM.filename}


def test_table_url_itself_is_used_without_a_mirror(server, cache, ppim_bytes, reference, monkeypatch):
    url = server.add("/v1/ai-studio-online/abc", ppim_bytes) + "?responseContentDisposition=x"
    monkeypatch.setitem(VARIANTS["ReXNet_1_0"].weights, "ppim", dataclasses.replace(PPIM, url=url))
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained=True), reference)
    assert server.hits["/v1/ai-studio-online/abc"] == 1 and cache_files(cache) == {PPIM.filename}


def test_timm_and_paddleclas_sources(mirror, cache, ppim_bytes, reference, tmp_path):
    timm = VARIANTS["ReXNet_1_0"].weights["timm"]
    paddleclas = VARIANTS["ReXNet_1_0"].weights["paddleclas"]
    save_file(official_to_timm(reference[0]), str(tmp_path / "model.safetensors"))
    mirror.add("/" + timm.filename, tmp_path / "model.safetensors")
    mirror.add("/" + paddleclas.filename, ppim_bytes)
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained="timm"), reference)
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained="paddleclas"), reference)
    assert cache_files(cache) == {timm.filename, paddleclas.filename}


def test_plain_url_is_cached_under_its_own_name(server, cache, ppim_bytes, reference):
    url = server.add("/models/ReXNet_1_0_best.pdparams", ppim_bytes)
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained=url), reference)
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained=url), reference)
    assert server.hits["/models/ReXNet_1_0_best.pdparams"] == 1
    (name,) = cache_files(cache)
    assert name.startswith("url-") and name.endswith("-ReXNet_1_0_best.pdparams")


def test_fetch_pretrained_fills_the_cache_for_offline_use(mirror, cache, ppim_bytes):
    mirror.add(PPIM_PATH, ppim_bytes)
    assert fetch_pretrained("ReXNet_1_0") == cache / PPIM.filename
    assert cache_files(cache) == {PPIM.filename}


# -- every failure: its own error, a clean cache --------------------------------

def test_truncated_download(mirror, cache, ppim_bytes):
    mirror.add(PPIM_PATH, ppim_bytes)
    mirror.truncate.add(PPIM_PATH)
    with pytest.raises(DownloadError) as err:
        create_model("ReXNet_1_0", pretrained=True)
    msg = str(err.value)
    assert f"{mirror.base}{PPIM_PATH}" in msg and f"of {len(ppim_bytes)} bytes" in msg
    assert cache_files(cache) == set()


def test_corrupt_download(mirror, cache):
    mirror.add(PPIM_PATH, os.urandom(50_000))
    with pytest.raises(CorruptCheckpointError, match=f"downloaded from {mirror.base}{PPIM_PATH}"):
        create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == set()


def test_download_for_the_wrong_variant(mirror, cache, tmp_path):
    lite, _ = load_reference_npz("ReXNetLite_1_0")
    write_checkpoint(to_canonical(lite), tmp_path / "lite.pdparams")
    mirror.add(PPIM_PATH, tmp_path / "lite.pdparams")
    with pytest.raises(WrongVariantError, match=r"holds ReXNetLite_1_0 .* but the model is ReXNet_1_0"):
        create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == set()


def test_download_that_is_not_rexnet(mirror, cache, tmp_path):
    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, str(tmp_path / "r.safetensors"))
    mirror.add(PPIM_PATH, tmp_path / "r.safetensors")
    with pytest.raises(NotReXNetError, match="not a ReXNet checkpoint"):
        create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == set()


def test_unreachable_host(cache, monkeypatch):
    base = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv(download.MIRROR_ENV, base)
    with pytest.raises(DownloadError) as err:
        create_model("ReXNet_1_0", pretrained=True)
    msg = str(err.value)
    assert f"could not download {base}{PPIM_PATH}" in msg
    assert f"pass its path (pretrained='/path/to/{PPIM.filename}')" in msg
    assert str(cache / PPIM.filename) in msg
    assert cache_files(cache) == set()


def test_cache_that_cannot_be_created(mirror, cache, ppim_bytes, monkeypatch):
    mirror.add(PPIM_PATH, ppim_bytes)
    blocker = cache.parent / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(download.CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(WeightsError) as err:
        create_model("ReXNet_1_0", pretrained=True)
    msg = str(err.value)
    assert str(blocker / "cache") in msg and f"set {download.CACHE_ENV} to a writable folder" in msg
    assert mirror.hits.get(PPIM_PATH, 0) == 0  # refused before downloading anything


def test_http_error(mirror, cache):
    with pytest.raises(DownloadError, match="HTTP 404"):
        create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == set()


def test_published_size_and_checksum_are_checked(mirror, cache, ppim_bytes, monkeypatch):
    mirror.add(PPIM_PATH, ppim_bytes)
    weights = VARIANTS["ReXNet_1_0"].weights
    monkeypatch.setitem(weights, "ppim", dataclasses.replace(PPIM, size=len(ppim_bytes) + 1))
    with pytest.raises(match=f"the published file has {len(ppim_bytes) + 1}"):
        create_model("ReXNet_1_0", pretrained=True)
    monkeypatch.setitem(weights, "ppim", dataclasses.replace(PPIM, sha256="0" * 64))
    with pytest.raises(ChecksumError, match="sha256"):
        create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == set()
    good = dataclasses.replace(PPIM, size=len(ppim_bytes), sha256=hashlib.sha256(ppim_bytes).hexdigest())
    monkeypatch.setitem(weights, "ppim", good)
    create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == {PPIM.filename}


def test_ctrl_c_during_download_leaves_nothing(mirror, cache, ppim_bytes, monkeypatch):
    mirror.add(PPIM_PATH, ppim_bytes)
    monkeypatch.setattr(download, "_CHUNK_BYTES", 4096)

    class InterruptedBar(tqdm.tqdm):
        """Ctrl-C arrives after the first chunk is on disk."""
        def update(self, n=1):
            raise KeyboardInterrupt
    monkeypatch.setattr(tqdm, "tqdm", InterruptedBar)
    with pytest.raises(KeyboardInterrupt):
        create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == set()


# -- sources that cannot download -------------------------------------------------

def test_official_weights_need_a_manual_download(cache, tmp_path, reference):
    official = VARIANTS["ReXNet_1_0"].weights["official"]
    with pytest.raises(ManualDownloadError) as err:
        create_model("ReXNet_1_0", pretrained="official")
    msg = str(err.value)
    # Cached as .pt: no file the plugin names ends in .pth
    cached = cache / official.filename.replace(".pth", ".pt")
    assert official.url in msg and "pass its path" in msg and str(cached) in msg
    torch = pytest.importorskip("torch", reason="torch is not installed: pip install 'rexnet-plugin[torch]'")
    cache.mkdir(parents=True)
    torch.save({k: torch.from_numpy(v) for k, v in reference[0].items()}, cached)
    _assert_reference_logits(create_model("ReXNet_1_0", pretrained="official"), reference)


def test_lite_default_is_the_official_manual_download(cache):
    url = VARIANTS["ReXNetLite_1_0"].weights["official"].url
    with pytest.raises(ManualDownloadError, match=url.replace("?", r"\?")):
        create_model("ReXNetLite_1_0", pretrained=True)


@pytest.mark.parametrize("name,pretrained,match", [
    ("ReXNet_0_9", True, "ReXNet_0_9 has no published ImageNet weights"),
    ("ReXNetLite_1_0", "ppim", r"ReXNetLite_1_0 has no 'ppim' weights \(published for it: 'official'\)"),
    ("ReXNet_1_0", "no/such/file.pdparams", "is not a file, a URL or a source name"),
    ("ReXNet_1_0", "seed", r"is not a file, a URL or a source name\. Accepted: .*'ppim', "
                           r"'paddleclas', 'timm', 'official'"),
    ("ReXNet_1_0", 3, r"pretrained=3 \(int\) is not understood"),
])
def test_bad_pretrained_values(cache, name, pretrained, match):
    with pytest.raises(WeightsError, match=match):
        create_model(name, pretrained=pretrained)


def test_weights_command_downloads_and_lists(mirror, cache, ppim_bytes, capsys):
    from rexnet_plugin.cli import main
    mirror.add(PPIM_PATH, ppim_bytes)
    assert main(["weights", "ReXNet_1_0", "--download"]) == 0
    assert capsys.readouterr().out.strip() == str(cache / PPIM.filename)
    assert main(["weights", "ReXNet_1_0"]) == 0
    listing = capsys.readouterr().out
    assert f"ppim *      paddle    yes     {PPIM.filename}" in listing
    assert "timm        timm      no" in listing
    # With a mirror even the official files download; this one has none of them.
    assert main(["weights", "ReXNet_1_0", "--download", "--source", "official"]) == 2
    assert "HTTP 404" in capsys.readouterr().err
    assert cache_files(cache) == {PPIM.filename}


def test_error_about_a_cached_file_names_its_path(cache, tmp_path):
    lite, _ = load_reference_npz("ReXNetLite_1_0")
    write_checkpoint(to_canonical(lite), cache / PPIM.filename)  # a file put there by hand
    with pytest.raises(WrongVariantError, match=f"'ppim' weights \\({cache / PPIM.filename}\\) holds ReXNetLite_1_0"):
        create_model("ReXNet_1_0", pretrained="ppim")
