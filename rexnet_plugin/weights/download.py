"""Download checkpoints into the cache, atomically and checked.

A download streams into a temp file inside the cache folder, then checks the
byte count against Content-Length and the published size, the sha256 where
one is published, and finally calls ``verify`` (the caller's full state-dict
check against the model). Only then is it renamed into place. Any failure,
Ctrl-C included, deletes the temp file, so the cache never holds a partial
or unchecked file; two processes downloading at once each write their own
temp file and the rename is atomic.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlparse

from .errors import (ChecksumError, CorruptCheckpointError, DownloadError,
                     IncompleteDownloadError, WeightsError)
from ..files import atomic_path

logger = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_ENV = "REXNET_PLUGIN_HOME"
MIRROR_ENV = "REXNET_PLUGIN_MIRROR"
DEFAULT_CACHE = Path("~/.cache/rexnet_plugin")
_TIMEOUT_SECONDS = 60
_CHUNK_BYTES = 1 << 20


def cache_dir() -> Path:
    """``$REXNET_PLUGIN_HOME``, else ``~/.cache/rexnet_plugin``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def mirror_url(filename: str) -> str | None:
    """The file's URL on ``$REXNET_PLUGIN_MIRROR`` (a base URL), if one is set."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    return f"{base.rstrip('/')}/{quote(filename)}" if base else None


def filename_from_url(url: str) -> str:
    """A cache file name for an arbitrary URL: a short hash of it plus its file name."""
    parsed = urlparse(url)
    # bcebos-style links carry the real name in responseContentDisposition.
    disposition = parse_qs(parsed.query).get("responseContentDisposition", [""])[0]
    name = disposition.split("filename=")[-1].strip('"') if "filename=" in disposition else ""
    name = name or unquote(Path(parsed.path).name) or "checkpoint"
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return f"url-{digest}-{name}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def _how_to_get_it_by_hand(url: str, dest: Path) -> str:
    name = dest.name.split("-", 2)[-1] if dest.name.startswith("url-") else dest.name
    return (f"If this machine is offline or cannot reach {urlparse(url).netloc}, download "
            f"{url} by other means and pass its path (pretrained='/path/to/{name}'), "
            f"or copy it to {dest}, where it is found next time. A mirror can be set "
            f"with {MIRROR_ENV}=<base URL>.")


def _cheap_check(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why a cached file is bad, or None. Size and the published sha256 only."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"it has {actual} bytes, the published file {size}"
    if sha256 is not None and sha256_of(path) != sha256:
        return "its sha256 differs from the published one"
    return None


def fetch(url: str, dest: Path, verify: Callable[[Path], T], *, size: int | None = None,
          sha256: str | None = None, progress: bool = True) -> T:
    """Return ``verify(dest)``, downloading ``url`` to ``dest`` first if it is not cached.

    ``verify`` reads and checks the file (raising WeightsError if it does
    not fit); it runs on the temp file, before the rename.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create the weights cache {dest.parent} ({err}); set "
                           f"{CACHE_ENV} to a writable folder") from None
    if dest.is_file():
        problem = _cheap_check(dest, size, sha256)
        if problem is None:
            try:
                return verify(dest)
            except CorruptCheckpointError as err:
                problem = f"it cannot be read ({err})"
        logger.warning("cached %s is damaged (%s); downloading it again", dest, problem)
        dest.unlink(missing_ok=True)

    # The temp file keeps the suffix, which tells a .pth pickle from a .pdparams
    # one; any failure (Ctrl-C included) deletes it.
    with atomic_path(dest, suffix=f".part{dest.suffix}") as tmp:
        try:
            out = open(tmp, "xb")
        except OSError as err:
            raise WeightsError(f"cannot write to the weights cache {dest.parent} ({err}); set "
                               f"{CACHE_ENV} to a writable folder") from None
        with out:
            _stream(url, out, dest, size, progress)
        if sha256 is not None and (got := sha256_of(tmp)) != sha256:
            raise ChecksumError(f"the download of {url} has sha256 {got}, but the published "
                                f"file has {sha256}; it was deleted. Try again; if it fails "
                                f"again, the file on the server has changed.")
        try:
            result = verify(tmp)
        except CorruptCheckpointError as err:
            raise CorruptCheckpointError(f"the file downloaded from {url} is not a readable "
                                         f"checkpoint; it was deleted. {err}") from None
    logger.info("saved %s", dest)
    return result


def _stream(url: str, out, dest: Path, size: int | None, progress: bool) -> None:
    from tqdm import tqdm
    from .. import __version__
    request = urllib.request.Request(url, headers={"User-Agent": f"rexnet-plugin/{__version__}"})
    logger.info("downloading %s to %s", url, dest)
    received, expected = 0, size
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit():
                if size is not None and int(length) != size:
                    raise IncompleteDownloadError(
                        f"{url} announces {length} bytes, but the published file has {size}; "
                        f"nothing was kept. " + _how_to_get_it_by_hand(url, dest))
                expected = int(length)
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None if progress else True) as bar:
                while block := response.read(_CHUNK_BYTES):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as err:
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}. "
                            + _how_to_get_it_by_hand(url, dest)) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}. "
                            + _how_to_get_it_by_hand(url, dest)) from None
    except HTTPException as err:  # IncompleteRead: the server closed the connection early
        received += len(getattr(err, "partial", b""))
        raise IncompleteDownloadError(
            f"the download of {url} stopped after {received} of {expected or '?'} bytes "
            f"({type(err).__name__}); the partial file was deleted. Try again. "
            + _how_to_get_it_by_hand(url, dest)) from None
    if expected is not None and received != expected:
        raise IncompleteDownloadError(
            f"the download of {url} stopped after {received} of {expected} bytes; the "
            f"partial file was deleted. Try again. " + _how_to_get_it_by_hand(url, dest))
