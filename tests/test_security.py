"""Probes kept as tests: what an attacker, a lying server, a slow
link or a killed process can do to the weights cache, and the messages for
files that are not what they claim.

Everything runs against a local HTTP server on 127.0.0.1 (weights_helpers.FileServer)
and is bounded in time: trickling and stalled responses end after at most a
few seconds, and the subprocesses are killed by the tests themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
from safetensors.numpy import save_file

from conftest import load_reference_npz
from rexnet_plugin import create_model
from rexnet_plugin.cli import main
from rexnet_plugin.files import sweep_stale
from rexnet_plugin.weights import download, load_pretrained, to_canonical
from rexnet_plugin.weights.errors import (ChecksumError, CorruptCheckpointError, DownloadError,
                                          UnsafeCheckpointError, WeightsError)
from rexnet_plugin.weights.formats import write_checkpoint
from rexnet_plugin.zoo import VARIANTS
from weights_helpers import (_server, cache, cache_files, local_only,  # noqa: F401
                             official_to_timm, server)

PPIM = VARIANTS["ReXNet_1_0"].weights["ppim"]
TIMM = VARIANTS["ReXNet_1_0"].weights["timm"]
ROOT = Path(__file__).resolve().parents[1]
TEMP_MARK = ".rexnet-tmp-"  # files.temp_path's names
TEMPS = f"*{TEMP_MARK}*"


@pytest.fixture(scope="module")
def reference():
    return load_reference_npz("ReXNet_1_0")


@pytest.fixture(scope="module")
def good_bytes(reference, tmp_path_factory):
    """A valid ReXNet_1_0 .pdparams (the official weights)."""
    path = tmp_path_factory.mktemp("ckpt") / "good.pdparams"
    write_checkpoint(to_canonical(reference[0]), path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def other_bytes(reference, tmp_path_factory):
    """Another valid ReXNet_1_0 .pdparams: one bias nudged, as a re-trained file would be."""
    state = to_canonical(reference[0])
    state["output.1.bias"] = state["output.1.bias"] + np.float32(0.01)
    path = tmp_path_factory.mktemp("ckpt") / "other.pdparams"
    write_checkpoint(state, path)
    return path.read_bytes()


def _logits(model, reference):
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(reference[1]["a"]["input"])).numpy()


def _all_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# -- 1. cache names that cannot escape ---------------------------------------------

HOSTILE_URLS = {
    "encoded slashes": "/x/..%2F..%2F..%2Fescaped.pdparams",
    "double-encoded slashes": "/x/..%252F..%252F..%252Fescaped.pdparams",
    "backslashes": "/x/..%5C..%5C..%5Cescaped.pdparams",
    "absolute path": "/x/%2Ftmp%2Fescaped.pdparams",
    "query filename with ..": "/dl?responseContentDisposition=attachment%3B%20filename%3D..%2F..%2F..%2Fescaped.pdparams",
    "query absolute filename": "/dl?responseContentDisposition=attachment;filename=/tmp/escaped.pdparams",
    "NUL": "/x/escaped%00.pdparams",
    "over-long name": "/x/" + "a" * 300 + ".pdparams",
    "name ending .pth": "/x/zz_escaped.pth",
    "name ending .py": "/x/escaped.py",
    "dot-dot only": "/x/..",
}


@pytest.fixture(scope="module")
def safetensors_bytes(reference, tmp_path_factory):
    """A valid ReXNet_1_0 .safetensors (official names): read by its content, whatever its name."""
    path = tmp_path_factory.mktemp("ckpt") / "official.safetensors"
    save_file(reference[0], str(path))
    return path.read_bytes()


@pytest.mark.parametrize("case", list(HOSTILE_URLS))
def test_hostile_url_is_cached_inside_the_cache(case, server, cache, good_bytes, safetensors_bytes,
                                                reference, tmp_path):
    path = HOSTILE_URLS[case]
    # The attack: a valid safetensors file saved under a .pth (or .py) name.
    server.add(path.split("?")[0], safetensors_bytes if case.startswith("name ending") else good_bytes)
    before = _all_files(tmp_path)
    model = create_model("ReXNet_1_0", pretrained=server.base + path)
    assert np.abs(_logits(model, reference) - reference[1]["a"]["logits"]).max() <= 1e-4
    new = _all_files(tmp_path) - before
    assert all(p.parent == cache for p in new), sorted(map(str, new))
    (cached,) = [p for p in new if p.name != download.MANIFEST_NAME]
    assert re.fullmatch(r"url-[0-9a-f]{16}-[A-Za-z0-9][A-Za-z0-9._-]*", cached.name), cached.name
    assert len(cached.name) <= 120 and not cached.name.endswith((".pth", ".py"))
    assert not any(p.stem == "escaped" for p in tmp_path.parent.iterdir())


@pytest.mark.parametrize("url", [
    "http://h/%2e%2e%2f%2e%2e%2fx.pdparams", "http://h/..%c0%af..%c0%afx.pdparams",
    "http://h/a/" + "%2F" * 500 + "x.pdparams", "http://h/" + "\u00e9" * 300 + ".safetensors",
    "http://h/x.PTH", "http://h/x.pyc", "http://h/x.pdparams%00.py", "http://h/.hidden.pdparams",
    "http://h/?responseContentDisposition=filename%3D%22..%5C..%5Cx.pth%22", "http://h/",
])
def test_cache_names_are_plain_and_bounded(url):
    """No server needed: the name alone, for inputs too large or odd to serve."""
    name = download.filename_from_url(url)
    assert re.fullmatch(r"url-[0-9a-f]{16}-[A-Za-z0-9][A-Za-z0-9._-]*", name) and ".." not in name
    assert len(name) <= 120 and not name.lower().endswith((".pth", ".py", ".pyc"))
    assert download.cache_path(name).parent == download.cache_dir()


def test_names_that_are_not_plain_are_refused(cache):
    for name in ("../x.pdparams", "/tmp/x.pdparams", ".hidden", "a/b", "a\\b", "x\0y", ""):
        with pytest.raises(WeightsError, match="is not a cache file name"):
            download.cache_path(name)


def test_hostile_content_disposition_header_is_ignored(server, cache, good_bytes, tmp_path):
    for i, value in enumerate(['attachment; filename="../../../escaped.pth"',
                               "attachment; filename*=UTF-8''..%2F..%2Fescaped.py",
                               'attachment; filename="/tmp/escaped.pdparams"']):
        url = server.add(f"/cd/{i}/model.pdparams", good_bytes,
                         headers={"Content-Disposition": value})
        create_model("ReXNet_1_0", pretrained=url)
    assert {p.parent for p in _all_files(tmp_path)} == {cache}
    assert all(n.endswith("-model.pdparams") for n in cache_files(cache))


def test_a_url_naming_a_path_outside_stays_inside_the_cache(server, cache, good_bytes, tmp_path):
    """A crafted URL whose file name climbs out of the cache: the file lands inside it."""
    url = server.add("/x/..%2F..%2F..%2Fescaped.pdparams", good_bytes)
    assert main(["export", "ReXNet_1_0", "--weights", url, "-o", str(tmp_path / "out")]) == 0
    escaped = [p for p in _all_files(tmp_path) if "escaped" in p.name and p.parent != cache]
    assert escaped == [] and not (tmp_path.parent / "escaped.pdparams").exists()
    assert any(n.endswith("-escaped.pdparams") for n in cache_files(cache))


def test_cache_in_a_site_packages_folder_is_refused(server, cache, good_bytes, monkeypatch):
    """Python runs .pth files found in site-packages at start-up: no downloads there."""
    import site
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(cache)])
    url = server.add("/x/model.pdparams", good_bytes)
    with pytest.raises(WeightsError) as err:
        create_model("ReXNet_1_0", pretrained=url)
    msg = str(err.value)
    assert str(cache) in msg and download.CACHE_ENV in msg and ".pth" in msg
    assert server.hits["/x/model.pdparams"] == 0 and cache_files(cache) == set()


# -- 2. integrity: the server's checksums, the manifest ------------------------------

def _serve_ppim_on_mirror(server, monkeypatch, data, headers=None):
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    return server.add("/" + PPIM.filename, data, headers=headers)


@pytest.mark.parametrize("header", ["Content-MD5", "ETag"])
def test_md5_offered_by_the_server_is_checked(header, server, cache, good_bytes, monkeypatch):
    wrong = {"Content-MD5": _md5_b64(b"something else"),
             "ETag": '"%s"' % hashlib.md5(b"something else").hexdigest()}[header]
    url = _serve_ppim_on_mirror(server, monkeypatch, good_bytes, {header: wrong})
    with pytest.raises(ChecksumError) as err:
        create_model("ReXNet_1_0", pretrained=True)
    msg = str(err.value)
    assert url in msg and hashlib.md5(good_bytes).hexdigest() in msg and header in msg
    assert cache_files(cache) == set()
    right = {"Content-MD5": _md5_b64(good_bytes),
             "ETag": '"%s"' % hashlib.md5(good_bytes).hexdigest()}[header]
    server.headers["/" + PPIM.filename] = {header: right}
    create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == {PPIM.filename}


@pytest.mark.parametrize("etag", ['"%s-3"' % ("a" * 32), 'W/"%s"' % ("b" * 32), '"5f2b-19a4c"'])
def test_etags_that_are_not_md5_digests_are_not_checked(etag, server, cache, good_bytes, monkeypatch):
    """Multipart uploads ("-N"), weak ETags and server-made tags say nothing about the bytes."""
    _serve_ppim_on_mirror(server, monkeypatch, good_bytes, {"ETag": etag})
    create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == {PPIM.filename}


def test_opaque_etag_beside_a_right_content_md5(server, cache, good_bytes, monkeypatch):
    """An object store that sends Content-MD5 and a 32-hex ETag that differs from it: the
    ETag is opaque (a multipart upload), the Content-MD5 is the body's."""
    _serve_ppim_on_mirror(server, monkeypatch, good_bytes,
                          {"Content-MD5": _md5_b64(good_bytes), "ETag": '"%s"' % ("c" * 32)})
    create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == {PPIM.filename}


@pytest.fixture(scope="module")
def timm_bytes(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_file(official_to_timm(reference[0]), str(path))
    return path.read_bytes()


def _serve_like_the_hub(server, monkeypatch, data, sha256, size=None):
    """Hugging Face: /resolve/ answers 302 with X-Linked-Etag (the LFS sha256) and
    X-Linked-Size; the CDN it points to serves the bytes with its own ETag."""
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    server.add("/cdn/blob", data, headers={"ETag": '"%s"' % ("d" * 64)})
    server.redirects["/" + TIMM.filename] = ("/cdn/blob", {
        "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(size or len(data)),
        "X-Repo-Commit": "0" * 40, "ETag": f'"{sha256}"'})


def test_hub_sha256_is_checked(server, cache, timm_bytes, monkeypatch):
    _serve_like_the_hub(server, monkeypatch, timm_bytes, "e" * 64)
    with pytest.raises(ChecksumError) as err:
        create_model("ReXNet_1_0", pretrained="timm")
    msg = str(err.value)
    assert "e" * 64 in msg and hashlib.sha256(timm_bytes).hexdigest() in msg and "X-Linked-Etag" in msg
    assert cache_files(cache) == set()
    _serve_like_the_hub(server, monkeypatch, timm_bytes, "0" * 64, size=len(timm_bytes) + 1)
    with pytest.raises(DownloadError, match=f"{len(timm_bytes) + 1}"):
        create_model("ReXNet_1_0", pretrained="timm")
    _serve_like_the_hub(server, monkeypatch, timm_bytes, hashlib.sha256(timm_bytes).hexdigest())
    create_model("ReXNet_1_0", pretrained="timm")
    assert cache_files(cache) == {TIMM.filename}


def test_first_download_is_recorded_and_a_changed_file_refused(server, cache, good_bytes,
                                                               other_bytes, monkeypatch, capsys):
    _serve_ppim_on_mirror(server, monkeypatch, good_bytes)
    create_model("ReXNet_1_0", pretrained=True)
    manifest = json.loads((cache / download.MANIFEST_NAME).read_text())
    entry = manifest["files"][PPIM.filename]
    assert entry["sha256"] == hashlib.sha256(good_bytes).hexdigest()
    assert entry["size"] == len(good_bytes) and entry["url"] == f"{server.base}/{PPIM.filename}"

    # The server now has another (valid) file; the damaged cached copy makes us download it.
    server.add("/" + PPIM.filename, other_bytes)
    (cache / PPIM.filename).write_bytes(b"damaged")
    with pytest.raises(ChecksumError) as err:
        create_model("ReXNet_1_0", pretrained=True)
    msg = str(err.value)
    assert hashlib.sha256(good_bytes).hexdigest() in msg
    assert hashlib.sha256(other_bytes).hexdigest() in msg
    assert f"rexnet-plugin weights --forget {PPIM.filename}" in msg
    assert not (cache / PPIM.filename).exists() or (cache / PPIM.filename).read_bytes() == b"damaged"

    # Accepting it deliberately: forget, then load.
    assert main(["weights", "--forget", PPIM.filename]) == 0
    assert PPIM.filename in capsys.readouterr().out
    create_model("ReXNet_1_0", pretrained=True)
    assert (cache / PPIM.filename).read_bytes() == other_bytes
    manifest = json.loads((cache / download.MANIFEST_NAME).read_text())
    assert manifest["files"][PPIM.filename]["sha256"] == hashlib.sha256(other_bytes).hexdigest()


def test_mirror_copy_that_differs_from_the_first_download_is_refused(
        server, cache, good_bytes, other_bytes, monkeypatch):
    weights = VARIANTS["ReXNet_1_0"].weights
    import dataclasses
    monkeypatch.setitem(weights, "ppim", dataclasses.replace(
        PPIM, url=server.add("/publisher/ppim", good_bytes)))
    create_model("ReXNet_1_0", pretrained=True)
    (cache / PPIM.filename).unlink()
    monkeypatch.setenv(download.MIRROR_ENV, server.base + "/mirror")
    server.add(f"/mirror/{PPIM.filename}", other_bytes)
    with pytest.raises(ChecksumError, match=f"{server.base}/publisher/ppim"):
        create_model("ReXNet_1_0", pretrained=True)
    server.add(f"/mirror/{PPIM.filename}", good_bytes)  # a faithful mirror is fine
    create_model("ReXNet_1_0", pretrained=True)
    assert cache_files(cache) == {PPIM.filename}


def test_forget_by_url_and_unknown_names(server, cache, good_bytes, capsys):
    url = server.add("/x/model.pdparams", good_bytes)
    create_model("ReXNet_1_0", pretrained=url)
    (name,) = cache_files(cache)
    assert main(["weights", "--forget", url]) == 0
    assert "removed" in capsys.readouterr().out and cache_files(cache) == set()
    assert name not in json.loads((cache / download.MANIFEST_NAME).read_text())["files"]
    assert main(["weights", "--forget", "no-such-file.pdparams"]) == 0
    assert "nothing recorded or cached" in capsys.readouterr().out
    assert main(["weights", "--forget", "../outside.pdparams"]) == 2
    assert "is not a cache file name" in capsys.readouterr().err


# -- 3. an overall deadline ------------------------------------------------------------

def test_trickling_server_hits_the_deadline(server, cache, good_bytes):
    url = server.add("/slow/model.pdparams", good_bytes)
    server.trickle["/slow/model.pdparams"] = (1024, 0.2)
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        load_pretrained(create_model("ReXNet_1_0"), url, download_timeout=1)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    received = int(re.search(r"after (\d+) of", msg).group(1))
    assert url in msg and "longer than 1 s" in msg and "--timeout" in msg
    assert 1024 <= received < len(good_bytes)
    assert cache_files(cache) == set()


def test_stalled_server_hits_the_deadline_of_the_command(server, cache, good_bytes, monkeypatch,
                                                         capsys):
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    server.add("/" + PPIM.filename, good_bytes)
    server.stall["/" + PPIM.filename] = 4096
    start = time.monotonic()
    assert main(["weights", "ReXNet_1_0", "--download", "--timeout", "1"]) == 2
    assert time.monotonic() - start < 5
    assert "longer than 1 s" in capsys.readouterr().err
    assert cache_files(cache) == set()


@pytest.mark.parametrize("value", ["-3", "nan"])
def test_bad_timeout_is_named(value, cache, capsys):
    assert main(["weights", "ReXNet_1_0", "--download", "--timeout", value]) == 2
    assert f"timeout={float(value)}" in capsys.readouterr().err


# -- 4. killed downloads leave nothing behind ------------------------------------------

def _start_download(server, cache, good_bytes):
    """A `rexnet-plugin weights --download` process whose server stalls mid-file."""
    server.add("/" + PPIM.filename, good_bytes)
    server.stall["/" + PPIM.filename] = 1 << 20
    env = dict(os.environ, **{download.CACHE_ENV: str(cache), download.MIRROR_ENV: server.base})
    proc = subprocess.Popen([sys.executable, "-m", "rexnet_plugin.cli", "weights", "ReXNet_1_0",
                             "--download"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not [p for p in cache.glob(TEMPS) if p.stat().st_size >= 1 << 19]:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the download did not start: {proc.communicate()}")
        time.sleep(0.1)
    return proc


def test_sweep_removes_only_temp_files_without_a_live_writer(cache):
    cache.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = cache / f".{PPIM.filename}{TEMP_MARK}{dead}-0123abcd.pdparams"
    mine = cache / f".{PPIM.filename}{TEMP_MARK}{os.getpid()}-4567abcd.pdparams"  # alive
    other = cache / ".not-a-download.part"
    for path in (orphan, mine, other):
        path.write_bytes(b"partial")
    assert sweep_stale(cache) == [orphan]
    assert {p.name for p in cache.iterdir()} == {mine.name, other.name}


def test_sigterm_cleans_up_like_ctrl_c_and_live_downloads_are_not_swept(server, cache, good_bytes):
    proc = _start_download(server, cache, good_bytes)
    try:
        (part,) = cache.glob(TEMPS)
        sweep_stale(cache)  # another run touching the cache meanwhile
        assert part.exists(), "a live download's temp file was swept"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err.lower()
    assert cache_files(cache) == set()


def test_sigkill_leaves_a_part_file_that_the_next_run_sweeps(server, cache, good_bytes, reference,
                                                            monkeypatch):
    proc = _start_download(server, cache, good_bytes)
    proc.kill()
    proc.communicate(timeout=30)
    assert len(list(cache.glob(TEMPS))) == 1  # what SIGKILL leaves: nothing can run
    server.release()
    server.stall.clear()
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    model = create_model("ReXNet_1_0", pretrained="ppim")
    assert np.abs(_logits(model, reference) - reference[1]["a"]["logits"]).max() <= 1e-4
    assert cache_files(cache) == {PPIM.filename}


# -- 5. messages ------------------------------------------------------------------------

def test_unsafe_download_is_named_by_its_url(server, cache):
    import pickle

    class RunsCode:
        def __reduce__(self):
            return os.system, ("true",)
    url = server.add("/evil/model.pdparams", pickle.dumps({"features.0.weight": RunsCode()}))
    with pytest.raises(UnsafeCheckpointError) as err:
        create_model("ReXNet_1_0", pretrained=url)
    msg = str(err.value)
    assert url in msg and TEMP_MARK not in msg
    assert cache_files(cache) == set()


def _bf16_safetensors(state: dict, path: Path) -> dict:
    """Write ``state`` as bfloat16 .safetensors (by the format's spec: numpy has no
    bfloat16); return the float32 values the file holds exactly."""
    header, blobs, offset, exact = {}, [], 0, {}
    for key, value in state.items():
        bits = (np.ascontiguousarray(value, np.float32).view(np.uint32) >> 16).astype("<u2")
        exact[key] = (bits.astype(np.uint32) << 16).view(np.float32)
        header[key] = {"dtype": "BF16", "shape": list(value.shape),
                       "data_offsets": [offset, offset + bits.nbytes]}
        blobs.append(bits.tobytes())
        offset += bits.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))
    return exact


def test_bfloat16_safetensors_loads_exactly(reference, tmp_path):
    exact = _bf16_safetensors(reference[0], tmp_path / "bf16.safetensors")
    model = create_model("ReXNet_1_0", pretrained=str(tmp_path / "bf16.safetensors"))
    want = create_model("ReXNet_1_0")
    want.set_state_dict(to_canonical(exact))
    assert np.array_equal(_logits(model, reference), _logits(want, reference))


def test_integer_tensor_is_refused_by_convert_and_load(reference, tmp_path, capsys):
    state = dict(reference[0])
    state["features.0.weight"] = state["features.0.weight"].astype(np.int32)
    save_file(state, str(tmp_path / "int.safetensors"))
    assert main(["convert", str(tmp_path / "int.safetensors"), str(tmp_path / "out.pdparams")]) == 2
    err = capsys.readouterr().err
    assert "features.0.weight" in err and "int32" in err
    assert not (tmp_path / "out.pdparams").exists()
    with pytest.raises(WeightsError, match=r"features\.0\.weight.*int32"):
        create_model("ReXNet_1_0", pretrained=str(tmp_path / "int.safetensors"))


@pytest.mark.parametrize("content,looks_like", [
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>\n",
     "an HTML page"),
    (os.urandom(4096).replace(b"\x80", b"\x81").replace(b"PK", b"QK"), "not a checkpoint"),
    (b"", "empty"),
])
def test_non_checkpoint_named_pth_is_not_called_unsafe(content, looks_like, tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError) as err:
        create_model("ReXNet_1_0", pretrained=str(path))
    msg = str(err.value)
    assert looks_like in msg and "not a checkpoint" in msg and str(path) in msg
    assert "weights_only=False" not in msg and "unsafe" not in msg.lower()


def test_missing_classifier_weight_is_named_not_class_num_0(reference, tmp_path):
    state = dict(reference[0])
    del state["output.1.weight"]
    save_file(state, str(tmp_path / "no_head_weight.safetensors"))
    with pytest.raises(WeightsError) as err:
        create_model("ReXNet_1_0", pretrained=str(tmp_path / "no_head_weight.safetensors"))
    msg = str(err.value)
    assert "output.1.weight" in msg and "incomplete" in msg and "class_num=0" not in msg


def test_class_count_hint_names_the_command_line_flag(reference, tmp_path):
    save_file(reference[0], str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError) as err:
        create_model("ReXNet_1_0", class_num=10, pretrained=str(tmp_path / "w.safetensors"))
    assert "class_num=1000 (--class-num 1000 on the rexnet-plugin command line)" in str(err.value)


@pytest.mark.parametrize("kind", ["under a file", "read-only folder"])
def test_convert_into_an_unwritable_folder(kind, reference, tmp_path, capsys):
    save_file(reference[0], str(tmp_path / "w.safetensors"))
    if kind == "under a file":
        (tmp_path / "a-file").write_text("")
        folder = tmp_path / "a-file" / "out"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders; run the tests as a normal user")
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        code = main(["convert", str(tmp_path / "w.safetensors"), str(folder / "w.pdparams")])
    finally:
        if folder.is_dir():
            folder.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and str(folder) in err and "Traceback" not in err
    assert "writable" in err


# -- a second attack pass --------------------------------------------------------------

OFFICIAL = VARIANTS["ReXNet_1_0"].weights["official"]


def _url_model(server, good_bytes, path="/x/model.pdparams"):
    return server.add(path, good_bytes)


@pytest.mark.parametrize("folder", ["site-packages", "dist-packages"])
def test_another_interpreters_site_packages_is_refused(folder, server, safetensors_bytes,
                                                       tmp_path, monkeypatch):
    """The attack: REXNET_PLUGIN_HOME=<another venv>/site-packages and a
    mirror serving the official .pth name."""
    home = tmp_path / "venv" / "lib" / "python3.11" / folder
    monkeypatch.setenv(download.CACHE_ENV, str(home))
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    server.add("/" + OFFICIAL.filename, safetensors_bytes)
    with pytest.raises(WeightsError, match="is a site-packages folder"):
        create_model("ReXNet_1_0", pretrained="official")
    assert server.hits["/" + OFFICIAL.filename] == 0 and not home.exists()


def test_official_names_are_cached_without_pth(server, cache, safetensors_bytes, reference,
                                               monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    server.add("/" + OFFICIAL.filename, safetensors_bytes)
    model = create_model("ReXNet_1_0", pretrained="official")
    assert np.abs(_logits(model, reference) - reference[1]["a"]["logits"]).max() <= 1e-4
    assert cache_files(cache) == {OFFICIAL.filename[:-len(".pth")] + ".pt"}
    assert main(["weights", "--forget", OFFICIAL.filename]) == 0 and cache_files(cache) == set()


@pytest.mark.parametrize("how", ["replaced", "symlink"])
def test_a_tampered_cache_hit_is_noticed(how, server, cache, good_bytes, other_bytes, reference,
                                         tmp_path, caplog):
    url = _url_model(server, good_bytes)
    create_model("ReXNet_1_0", pretrained=url)
    (name,) = cache_files(cache)
    if how == "replaced":
        (cache / name).write_bytes(other_bytes)
    else:
        (tmp_path / "other.pdparams").write_bytes(other_bytes)
        (cache / name).unlink()
        (cache / name).symlink_to(tmp_path / "other.pdparams")
    model = create_model("ReXNet_1_0", pretrained=url)
    assert np.abs(_logits(model, reference) - reference[1]["a"]["logits"]).max() <= 1e-4
    assert "damaged" in caplog.text and server.hits["/x/model.pdparams"] == 2
    assert not (cache / name).is_symlink() and (cache / name).read_bytes() == good_bytes


def test_a_concurrent_first_download_of_other_bytes_is_refused(server, cache, good_bytes,
                                                               other_bytes):
    """The record is checked under the manifest's lock, after the download: another
    process may have recorded its file meanwhile."""
    url = _url_model(server, good_bytes)
    create_model("ReXNet_1_0", pretrained=url)
    (name,) = cache_files(cache)
    (cache / name).unlink()
    server.add("/x/model.pdparams", other_bytes)
    with pytest.raises(ChecksumError, match="different file"):
        create_model("ReXNet_1_0", pretrained=url)
    assert cache_files(cache) == set()
    manifest = json.loads((cache / download.MANIFEST_NAME).read_text())
    assert manifest["files"][name]["sha256"] == hashlib.sha256(good_bytes).hexdigest()


def test_a_download_of_unknown_size_is_capped(server, cache, good_bytes, monkeypatch):
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 1 << 20, raising=False)
    url = _url_model(server, good_bytes)
    server.no_length.add("/x/model.pdparams")
    with pytest.raises(DownloadError, match="more than 1 MB"):
        create_model("ReXNet_1_0", pretrained=url)
    server.no_length.clear()  # announced: refused before reading
    with pytest.raises(DownloadError, match=f"announces {len(good_bytes)} bytes"):
        create_model("ReXNet_1_0", pretrained=url)
    assert cache_files(cache) == set()


def test_a_full_disk_is_a_clear_error(server, cache, good_bytes, monkeypatch):
    """RLIMIT_FSIZE stands in for a full disk: writes past 1 MB fail (EFBIG)."""
    from ppcls_support import subprocess_env
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    server.add("/" + PPIM.filename, good_bytes)
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
            "from rexnet_plugin.cli import main; "
            "sys.exit(main(['weights', '--download', 'ReXNet_1_0', '--source', 'ppim']))")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot write" in result.stderr
    assert cache_files(cache) == set()


def test_protocol_2_pdparams_load(reference, tmp_path):
    state = {k: paddle.to_tensor(v) for k, v in to_canonical(reference[0]).items()}
    path = tmp_path / "p2.pdparams"
    paddle.save(state, str(path), protocol=2)
    model = create_model("ReXNet_1_0", pretrained=str(path))
    assert np.abs(_logits(model, reference) - reference[1]["a"]["logits"]).max() <= 1e-4


def test_codecs_encode_is_admitted_only_for_latin1_bytes(tmp_path):
    import codecs
    import pickle

    class Rot13:
        def __reduce__(self):
            return codecs.encode, ("abc", "rot13")
    path = tmp_path / "bad.pdparams"
    path.write_bytes(pickle.dumps({"w": Rot13()}, protocol=2))
    with pytest.raises(WeightsError, match="rot13|codecs"):
        create_model("ReXNet_1_0", pretrained=str(path))


def test_the_manifest_cannot_be_forgotten_and_a_damaged_one_is_kept(server, cache, good_bytes,
                                                                    caplog, capsys):
    url = _url_model(server, good_bytes)
    create_model("ReXNet_1_0", pretrained=url)
    manifest = cache / download.MANIFEST_NAME
    before = manifest.read_text()
    assert main(["weights", "--forget", download.MANIFEST_NAME]) == 2
    assert "not a cached file" in capsys.readouterr().err and manifest.read_text() == before
    # An entry of the wrong type, and a damaged file: no traceback, a copy is kept.
    (name,) = cache_files(cache)
    manifest.write_text(json.dumps({"files": {name: 5}}))
    create_model("ReXNet_1_0", pretrained=url)
    manifest.write_text('{"files": {"broken')
    (cache / name).unlink()
    create_model("ReXNet_1_0", pretrained=url)
    copies = sorted(cache.glob(download.MANIFEST_NAME + ".damaged-*"))
    assert copies and copies[-1].read_text() == '{"files": {"broken'
    assert "it was kept as" in caplog.text and len(copies) == 1
    assert json.loads(manifest.read_text())["files"][name]["size"] == len(good_bytes)


def test_a_fifo_named_like_a_temp_file_does_not_hang_loads(server, cache, good_bytes, alarm):
    cache.mkdir()
    os.mkfifo(cache / f".model.pdparams{TEMP_MARK}99999999-0123abcd.pdparams")
    url = _url_model(server, good_bytes)
    alarm(20)
    create_model("ReXNet_1_0", pretrained=url)


def test_redirects_to_other_schemes_are_refused(server, cache, good_bytes):
    server.redirects["/x/model.pdparams"] = ("ftp://127.0.0.1:1/model.pdparams", {})
    with pytest.raises(DownloadError, match="not http"):
        create_model("ReXNet_1_0", pretrained=server.base + "/x/model.pdparams")


def test_mirror_urls_keep_their_query_and_hide_their_credentials(server, cache, good_bytes,
                                                                 reference, monkeypatch):
    server.add("/m/" + PPIM.filename, good_bytes)
    monkeypatch.setenv(download.MIRROR_ENV, server.base + "/m?token=abc")
    model = create_model("ReXNet_1_0", pretrained="ppim")
    assert np.abs(_logits(model, reference) - reference[1]["a"]["logits"]).max() <= 1e-4
    host = server.base.split("//")[1]
    monkeypatch.setenv(download.MIRROR_ENV, f"http://someone:s3cret@{host}/missing")
    (cache / PPIM.filename).unlink()
    with pytest.raises(DownloadError) as err:
        create_model("ReXNet_1_0", pretrained="ppim")
    assert "s3cret" not in str(err.value) and "HTTP 404" in str(err.value)
    assert "s3cret" not in (cache / download.MANIFEST_NAME).read_text()


def test_an_impossible_safetensors_shape_is_a_clear_error(reference, tmp_path, capsys):
    """A zero-size tensor of shape [0, 2**62]: numpy's reshape overflowed (a bare ValueError)."""
    import struct
    path = tmp_path / "ok.safetensors"
    save_file(reference[0], str(path))
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    header["extra"] = {"dtype": "F32", "shape": [0, 2 ** 62], "data_offsets": [0, 0]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    with pytest.raises(CorruptCheckpointError, match=r"bad\.safetensors.*extra.*impossible shape"):
        create_model("ReXNet_1_0", pretrained=str(bad))
    assert main(["convert", str(bad), str(tmp_path / "out.pdparams")]) == 2
    assert "impossible shape" in capsys.readouterr().err
