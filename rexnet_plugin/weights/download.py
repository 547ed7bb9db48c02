"""Download checkpoints into the cache (``cache``): checked, atomic, bounded in time.

What is checked, before the file is renamed into place:

1. the byte count: Content-Length, the published size, ``X-Linked-Size``;
   a file of unknown size is stopped at ``MAX_DOWNLOAD_BYTES``;
2. checksums: the published sha256 (variant table) and every checksum the
   server offers (``offered_checksums``: Hugging Face's LFS sha256, an
   object store's MD5);
3. the first download: the sha256 and size that the cache's manifest
   recorded for this file. A later download (again, or from a mirror) that
   differs is refused until ``cache.forget(name)``; a first one is recorded;
4. ``verify``: the caller's full read and check against the model.

A cached file is checked at every load: a regular file (links are not
followed), the published size and sha256 if known, and the size and sha256
of its first download; anything else is downloaded again.

The download streams into a temp file beside its target (``cache.temp_download``):
any failure, Ctrl-C (and SIGTERM under the ``rexnet-plugin`` command) deletes
it, and what a killed process leaves is swept by the next download into that
folder. Besides the per-read timeout, an overall deadline
(``REXNET_PLUGIN_DOWNLOAD_TIMEOUT``) bounds every download.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import os
import re
import socket
import stat
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import quote, unquote, urlparse, urlsplit, urlunsplit

from . import cache
from .cache import CACHE_ENV, cache_dir  # noqa: F401  (callers and tests use them from here too)
from .errors import (ChangedFileError, ChecksumError, CorruptCheckpointError, DownloadError,
                     DownloadTimeoutError, IncompleteDownloadError, WeightsError)

logger = logging.getLogger(__name__)
T = TypeVar("T")

MIRROR_ENV = "REXNET_PLUGIN_MIRROR"
DEADLINE_ENV = "REXNET_PLUGIN_DOWNLOAD_TIMEOUT"
# The largest file (ReXNet_3_0, ~140 MB) takes 25 minutes at 100 kB/s.
DEFAULT_DEADLINE_SECONDS = 3600
_READ_TIMEOUT_SECONDS = 60
_CHUNK_BYTES = 1 << 20
# A file of unknown size is stopped here: the largest ReXNet checkpoint
# (ReXNet_3_0 in float32) is about 140 MB; float64 would be about 280 MB.
MAX_DOWNLOAD_BYTES = 512 << 20


def mirror_url(filename: str) -> str | None:
    """The file's URL on ``$REXNET_PLUGIN_MIRROR`` (a base URL, which may carry
    a query string such as a token), if one is set."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return None
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{quote(filename)}"))


def public_url(url: str) -> str:
    """``url`` without the user name and password it may carry, for messages and records."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _request(url: str) -> urllib.request.Request:
    """A GET of ``url``; its credentials (user:password@) become a Basic
    Authorization header, which a redirect to another host does not receive."""
    from .. import __version__
    parts = urlsplit(url)
    request = urllib.request.Request(public_url(url),
                                     headers={"User-Agent": f"rexnet-plugin/{__version__}"})
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(secret.encode()).decode())
    return request


def download_deadline() -> float | None:
    """Seconds a whole download may take (``$REXNET_PLUGIN_DOWNLOAD_TIMEOUT``); None: no limit."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return DEFAULT_DEADLINE_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and seconds >= 0):
        raise WeightsError(f"{DEADLINE_ENV}={text} is not a number of seconds; set it to the "
                           f"time a whole download may take, e.g. {DEFAULT_DEADLINE_SECONDS} "
                           f"(the default), or 0 for no limit")
    return seconds or None


def _how_to_get_it_by_hand(url: str, dest: Path) -> str:
    url = public_url(url)
    name = dest.name.split("-", 2)[-1] if dest.name.startswith("url-") else dest.name
    return (f"If this machine is offline or cannot reach {urlparse(url).netloc}, download "
            f"{url} by other means and pass its path (pretrained='/path/to/{name}'), "
            f"or copy it to {dest}, where it is found next time. A mirror can be set "
            f"with {MIRROR_ENV}=<base URL>.")


# -- what the server says about the file ------------------------------------------

@dataclass
class _Received:
    size: int = 0
    sha256: str = ""
    md5: str = ""
    # (algorithm, hex digest, which header said so)
    offered: list[tuple[str, str, str]] = field(default_factory=list)


def _etag(value: str | None) -> str | None:
    """An ETag's value, or None for a weak one (W/"..."), which promises no bytes."""
    if not value or value.strip().startswith("W/"):
        return None
    return value.strip().strip('"').lower()


def _md5_from_base64(value: str | None) -> str | None:
    try:
        digest = base64.b64decode(value.strip(), validate=True) if value else b""
    except (binascii.Error, ValueError):
        return None
    return digest.hex() if len(digest) == 16 else None


def offered_checksums(redirect_headers: list, final) -> list[tuple[str, str, str]]:
    """Every checksum the server sent: ``[(algorithm, hex digest, header)]``.

    * ``X-Linked-Etag`` (Hugging Face hub, on the ``/resolve/`` redirect): the
      LFS file's sha256; so is a 64-hex ``ETag`` on a hub response (one that
      carries ``X-Repo-Commit``).
    * ``Content-MD5`` and ``x-goog-hash: md5=`` on the final response: the
      body's MD5 (bcebos sends Content-MD5, as PaddleDetection relies on).
    * A plain 32-hex ``ETag`` on the final response: an object store's MD5
      (S3, BOS, GCS single uploads). Not a multipart ``"...-N"`` ETag, a weak
      one, a compressed response's, nor one that differs from a Content-MD5
      sent beside it (then it is opaque).
    """
    offered = []
    for headers in [*redirect_headers, final]:
        linked = _etag(headers.get("X-Linked-Etag"))
        hub = _etag(headers.get("ETag")) if headers.get("X-Repo-Commit") else None
        if linked and re.fullmatch(r"[0-9a-f]{64}", linked):
            offered.append(("sha256", linked, "X-Linked-Etag"))
        elif hub and re.fullmatch(r"[0-9a-f]{64}", hub):
            offered.append(("sha256", hub, "ETag"))
    md5s = [(m, "Content-MD5") for m in [_md5_from_base64(final.get("Content-MD5"))] if m]
    for part in (final.get("x-goog-hash") or "").split(","):
        if part.strip().startswith("md5=") and (m := _md5_from_base64(part.strip()[4:])):
            md5s.append((m, "x-goog-hash"))
    etag = _etag(final.get("ETag"))
    if (etag and re.fullmatch(r"[0-9a-f]{32}", etag) and not final.get("Content-Encoding")
            and not final.get("X-Repo-Commit") and all(etag == m for m, _ in md5s)):
        md5s.append((etag, "ETag"))
    return offered + [("md5", m, where) for m, where in md5s]


def _offered_sizes(redirect_headers: list, final) -> list[tuple[int, str]]:
    sizes = [(int(h["X-Linked-Size"]), "X-Linked-Size") for h in [*redirect_headers, final]
             if (h.get("X-Linked-Size") or "").isdigit()]
    length = final.get("Content-Length")
    return sizes + ([(int(length), "Content-Length")] if (length or "").isdigit() else [])


class _KeepRedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping each redirect's headers
    (Hugging Face puts the file's sha256 on the redirect, not on the CDN's reply)."""

    def __init__(self):
        self.headers = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlparse(newurl).scheme not in ("http", "https"):  # urllib would follow ftp://
            raise DownloadError(f"{public_url(req.full_url)} redirects to "
                                f"{public_url(newurl)}, which is not http(s); refused")
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# -- fetching ---------------------------------------------------------------------

def fetch(url: str, name: str, verify: Callable[[Path], T], *, size: int | None = None,
          sha256: str | None = None, progress: bool = True) -> T:
    """Return ``verify(path)`` of the cached file ``name``, downloading ``url`` first
    if it is not cached (see the module docstring for the checks).

    ``verify`` reads and checks the file (raising WeightsError if it does not
    fit); for a download it runs on the temp file, before the rename.
    """
    dest = cache.cache_path(name)
    cache.prepare_cache(dest.parent)
    cache.sweep_stale_downloads(dest.parent)
    if os.path.lexists(dest):
        problem = cached_problem(dest, size, sha256)
        if problem is None:
            try:
                return verify(dest)
            except CorruptCheckpointError as err:
                problem = f"it cannot be read ({err})"
        logger.warning("cached %s is damaged (%s); downloading it again", dest, problem)
        dest.unlink(missing_ok=True)

    deadline = download_deadline()
    with cache.temp_download(dest) as (tmp, out):
        got = _stream(url, out, dest, size, progress, deadline)
        out.close()  # all written (and Windows cannot rename an open file)
        _check_checksums(url, dest, got, sha256)
        first = cache.first_download(dest.name)
        if first is not None:
            _check_same_as_first(url, dest.name, got, first)
        try:
            result = verify(tmp)
        except WeightsError as err:
            raise type(err)(f"{err}\nNothing was kept in the cache.") from None
        # Two first downloads at once: the second compares with the first's record.
        try:
            with cache.updating_manifest(dest.parent) as files:
                if dest.name in files:
                    _check_same_as_first(url, dest.name, got, files[dest.name])
                else:
                    files[dest.name] = cache.new_entry(public_url(url), got.sha256, got.size)
                cache.check_inside(dest, dest.parent)
                os.replace(tmp, dest)
        except OSError as err:  # a full disk
            raise DownloadError(f"cannot write to the weights cache {dest.parent}: "
                                f"{err.strerror or err}; nothing was kept. Free some space, or "
                                f"set {CACHE_ENV} to a folder on another disk.") from None
    logger.info("saved %s", dest)
    return result


def cached_problem(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why a cached file may not be used, or None: not a regular file (a link
    is not followed), or its size or sha256 differs from the published file's
    or from its first download's (downloads.json). Hashing costs about 1 s
    per GB (docs/weights.md)."""
    try:
        info = os.lstat(path)
    except OSError as err:
        return f"it cannot be read ({err.strerror})"
    if stat.S_ISDIR(info.st_mode):
        raise WeightsError(f"{path} is a folder, where the weights cache keeps a file; "
                           f"move it away")
    if not stat.S_ISREG(info.st_mode):
        return "it is a link or not a regular file (the cache follows no links)"
    first = cache.first_download(path.name)
    for expected, what in ((size, "the published file"),
                           (first and first["size"], "its first download")):
        if expected is not None and info.st_size != expected:
            return f"it has {info.st_size} bytes, {what} {expected}"
    if sha256 is None and first is None:
        return None
    try:
        actual = cache.sha256_of(path)
    except OSError as err:
        return f"it cannot be read ({err})"
    if sha256 is not None and actual != sha256:
        return "its sha256 differs from the published one"
    if first is not None and actual != first["sha256"]:
        return ("its sha256 differs from its first download's (recorded in "
                f"{cache.MANIFEST_NAME}): it was changed after it was downloaded")
    return None


def _check_checksums(url: str, dest: Path, got: _Received, published_sha256: str | None) -> None:
    expected = [("sha256", published_sha256, "the variant table")] if published_sha256 else []
    offered = [(a, want, f"the server's {header} header") for a, want, header in got.offered]
    for algorithm, want, where in expected + offered:
        have = got.sha256 if algorithm == "sha256" else got.md5
        if have != want.lower():
            raise ChecksumError(
                f"the download of {public_url(url)} has {algorithm} {have}, but {where} says "
                f"{want}; "
                f"nothing was kept. The file was damaged on the way, or the server holds "
                f"another file than it describes. Try again; if it fails again, the file on "
                f"the server has changed. " + _how_to_get_it_by_hand(url, dest))


def _check_same_as_first(url: str, name: str, got: _Received, first: dict) -> None:
    if got.sha256 == first.get("sha256") and got.size == first.get("size"):
        return
    url = public_url(url)
    raise ChangedFileError(
        f"{url} sent a different file from the one first downloaded as {name}:\n"
        f"  now:   sha256 {got.sha256}, {got.size} bytes, from {url}\n"
        f"  first: sha256 {first.get('sha256')}, {first.get('size')} bytes, from "
        f"{first.get('url')} on {first.get('first_downloaded')}\n"
        f"Nothing was kept. A published checkpoint should not change, and a mirror should "
        f"serve the same file. If you trust the new file (its publisher replaced it), accept "
        f"it with 'rexnet-plugin weights --forget {name}' (in Python: "
        f"rexnet_plugin.weights.forget({name!r})) and load it again.")


def _stream(url: str, out, dest: Path, size: int | None, progress: bool,
            deadline: float | None) -> _Received:
    from tqdm import tqdm
    request = _request(url)
    url = public_url(url)  # for messages
    redirects = _KeepRedirectHeaders()
    logger.info("downloading %s to %s", url, dest)
    got, expected = _Received(), size
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    start = time.monotonic()
    # A read may wait up to the timeout, so the deadline is overrun by at most that.
    timeout = min(_READ_TIMEOUT_SECONDS, deadline) if deadline else _READ_TIMEOUT_SECONDS
    try:
        with urllib.request.build_opener(redirects).open(request, timeout=timeout) as response:
            got.offered = offered_checksums(redirects.headers, response.headers)
            known_from = "the published file has"
            for announced, where in _offered_sizes(redirects.headers, response.headers):
                if expected is not None and announced != expected:
                    raise IncompleteDownloadError(
                        f"{url} announces {announced} bytes ({where}), but {known_from} "
                        f"{expected}; nothing was kept. " + _how_to_get_it_by_hand(url, dest))
                expected, known_from = announced, f"its {where} says"
            limit = MAX_DOWNLOAD_BYTES if expected is None else expected
            if limit > MAX_DOWNLOAD_BYTES:
                raise _too_large(url, dest, f"announces {limit} bytes")
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None if progress else True) as bar:
                # read1 returns what has arrived, so the deadline is checked even
                # when a server trickles.
                while block := response.read1(_CHUNK_BYTES):
                    got.size += len(block)
                    if got.size > limit:
                        if expected is None:
                            raise _too_large(url, dest, "sends more, with no size announced")
                        raise IncompleteDownloadError(
                            f"{url} sends more than the {expected} bytes that {known_from}; "
                            f"nothing was kept. " + _how_to_get_it_by_hand(url, dest))
                    try:
                        out.write(block)
                    except OSError as err:  # a full disk, a quota
                        raise DownloadError(
                            f"cannot write the download of {url} to the weights cache "
                            f"{dest.parent}: {err.strerror or err}; nothing was kept. Free "
                            f"some space, or set {CACHE_ENV} to a folder on another disk."
                        ) from None
                    sha256.update(block)
                    md5.update(block)
                    bar.update(len(block))
                    if deadline and time.monotonic() - start > deadline:
                        raise _deadline_error(url, dest, got.size, expected, deadline)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}. "
                            + _how_to_get_it_by_hand(url, dest)) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
        if deadline and time.monotonic() - start >= deadline:
            raise _deadline_error(url, dest, got.size, expected, deadline) from None
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}. "
                            + _how_to_get_it_by_hand(url, dest)) from None
    except HTTPException as err:  # IncompleteRead: the server closed the connection early
        raise IncompleteDownloadError(
            f"the download of {url} stopped after {got.size} of {expected or '?'} bytes "
            f"({type(err).__name__}); the partial file was deleted. Try again. "
            + _how_to_get_it_by_hand(url, dest)) from None
    if expected is not None and got.size != expected:
        raise IncompleteDownloadError(
            f"the download of {url} stopped after {got.size} of {expected} bytes; the "
            f"partial file was deleted. Try again. " + _how_to_get_it_by_hand(url, dest))
    got.sha256, got.md5 = sha256.hexdigest(), md5.hexdigest()
    return got


def _too_large(url: str, dest: Path, what: str) -> DownloadError:
    return DownloadError(
        f"{url} {what}: more than {MAX_DOWNLOAD_BYTES >> 20} MB, far more than any ReXNet "
        f"checkpoint; stopped, nothing was kept. The URL is probably not a checkpoint. "
        + _how_to_get_it_by_hand(url, dest))


def _deadline_error(url: str, dest: Path, received: int, expected: int | None,
                    deadline: float) -> DownloadTimeoutError:
    return DownloadTimeoutError(
        f"the download of {public_url(url)} was stopped after {received} of "
        f"{expected or '?'} bytes: it "
        f"took longer than {deadline:g} s, the limit set by {DEADLINE_ENV} (default "
        f"{DEFAULT_DEADLINE_SECONDS}). Nothing was kept. On a slow link, set {DEADLINE_ENV} "
        f"to more seconds (0 for no limit). " + _how_to_get_it_by_hand(url, dest))
