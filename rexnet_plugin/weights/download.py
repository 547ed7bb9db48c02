"""The weights cache and checked downloads into it (rules in docs/weights.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import site
import socket
import stat
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, quote, unquote, urlparse, urlsplit, urlunsplit

from ..files import atomic_path, write_json
from .errors import (ChecksumError, CorruptCheckpointError, DownloadError,
                     ManualDownloadError, WeightsError)
from .formats import format_of_suffix

try:
    import fcntl
except ImportError:  # Windows: records are written without a lock
    fcntl = None

logger = logging.getLogger(__name__)

CACHE_ENV = "REXNET_PLUGIN_HOME"
DEFAULT_CACHE = Path("~/.cache/rexnet_plugin")
MANIFEST_NAME = "downloads.json"
# No cached name ends in ".pth" (run by Python from a site folder) or ".py".
_CACHED_SUFFIX = {"pdparams": ".pdparams", "safetensors": ".safetensors", "pth": ".pt"}

MIRROR_ENV = "REXNET_PLUGIN_MIRROR"
DEFAULT_TIMEOUT = 3600  # seconds; ReXNet_3_0 (~140 MB) takes 25 minutes at 100 kB/s
_READ_TIMEOUT_SECONDS = 60
_CHUNK_BYTES = 1 << 20
# A file of unknown size stops here: the largest ReXNet checkpoint is ~140 MB in float32.
MAX_DOWNLOAD_BYTES = 512 << 20


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cache_path(name: str) -> Path:
    """The cached file ``name`` (``.pth`` kept as ``.pt``); refused unless a plain name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", name) or ".." in name:
        raise WeightsError(f"{name!r} is not a cache file name (letters, digits and ._- only, "
                           f"not starting with a dot, at most 200 characters)")
    if name == MANIFEST_NAME:
        raise WeightsError(f"{name} is the cache's record of first downloads, not a cached "
                           f"file; pass the name of a cached file")
    return cache_dir() / (name[:-4] + ".pt" if name.lower().endswith(".pth") else name)


def filename_from_url(url: str) -> str:
    """``url-<URL hash>-<plain file name from the URL or a bcebos Content-Disposition>``."""
    parsed = urlparse(url)
    disposition = parse_qs(parsed.query).get("responseContentDisposition", [""])[0]
    raw = disposition.split("filename=", 1)[1] if "filename=" in disposition else parsed.path
    while unquote(raw) != raw:  # "%252F" needs two rounds; each one shortens it
        raw = unquote(raw)
    last = raw.replace("\\", "/").rsplit("/", 1)[-1]
    readable = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", last)).strip("._-")
    stem, dot, ext = readable.rpartition(".")
    suffix = _CACHED_SUFFIX.get(format_of_suffix(f".{ext}")) if dot else None
    stem = (stem if suffix else readable.replace(".", "_"))[:80].strip("._-") or "checkpoint"
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"url-{digest}-{stem}{suffix or ''}"


def prepare_cache(folder: Path) -> None:
    """Create ``folder``; refuse a site-packages folder (or one named like one)."""
    startup = {os.path.realpath(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    names = {os.path.basename(os.path.normpath(p)).lower()
             for p in (os.path.abspath(folder), os.path.realpath(folder))}
    if names & {"site-packages", "dist-packages"} or os.path.realpath(folder) in startup:
        raise WeightsError(f"the weights cache {folder} is a site-packages folder, whose .pth "
                           f"files Python runs; set {CACHE_ENV} to a folder of its own")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create the weights cache {folder} ({err.strerror}); set "
                           f"{CACHE_ENV} to a writable folder") from None


def open_regular(path: Path):
    """``path`` opened for reading if a regular file, not a link (a FIFO would block)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_manifest(folder: Path) -> tuple[dict[str, dict], str | None]:
    """(the valid entries, what is wrong with the file or None)."""
    try:
        with open_regular(folder / MANIFEST_NAME) as f:
            files = dict(json.load(f)["files"].items())  # errors when not a mapping
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, AttributeError, KeyError, TypeError, RecursionError) as err:
        return {}, f"it cannot be read ({type(err).__name__})"
    valid = {k: v for k, v in files.items() if isinstance(v, dict) and isinstance(
        v.get("sha256"), str) and type(v.get("size")) is int}
    bad = len(files) - len(valid)
    return valid, (f"{bad} of its entries are not {{sha256, size, ...}} records" if bad else None)


@contextmanager
def updating_manifest(folder: Path):
    """Yield the entries to change, under a lock; write them back (a damaged file kept aside)."""
    lock = os.open(folder, os.O_RDONLY) if fcntl else None
    try:
        if lock is not None:
            with suppress(OSError):  # no locks on this file system
                fcntl.flock(lock, fcntl.LOCK_EX)
        files, problem = _load_manifest(folder)
        yield files
        if problem:
            copy = folder / f"{MANIFEST_NAME}.damaged-{datetime.now(timezone.utc):%Y%m%dT%H%M%S.%f}"
            os.replace(folder / MANIFEST_NAME, copy)
            logger.warning("%s: %s; it was kept as %s, and a new one holds the readable "
                           "records", folder / MANIFEST_NAME, problem, copy)
        write_json(folder / MANIFEST_NAME, {
            "about": "sha256 and size of each file's first download, written by "
                     "rexnet-plugin; 'rexnet-plugin weights --forget NAME' removes an entry",
            "files": files})
    finally:
        if lock is not None:
            os.close(lock)  # releases the lock


def forget(name: str) -> list[str]:
    """Drop ``name`` from the cache and its manifest; return what was removed."""
    path, removed = cache_path(name), []
    if not path.parent.is_dir():
        return removed
    with updating_manifest(path.parent) as files:
        if entry := files.pop(path.name, None):
            removed.append(f"the first download's record (sha256 {entry['sha256']})")
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(f"the cached file {path}")
    return removed


def mirror_url(filename: str) -> str | None:
    """The file's URL on ``$REXNET_PLUGIN_MIRROR`` (its query string kept), if set."""
    if not (base := os.environ.get(MIRROR_ENV, "").strip()):
        return None
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{quote(filename)}"))


def public_url(url: str) -> str:
    """``url`` without its user name and password, for messages and records."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])) \
        if "@" in parts.netloc else url


def _etag(value: str | None) -> str | None:
    """An ETag's value, or None for a weak one (W/"..."), which promises no bytes."""
    value = (value or "").strip()
    return None if not value or value.startswith("W/") else value.strip('"').lower()


def _md5_from_base64(value: str | None) -> str | None:
    with suppress(ValueError):  # binascii.Error: not base64
        digest = base64.b64decode((value or "").strip(), validate=True)
        return digest.hex() if len(digest) == 16 else None


def offered_checksums(redirect_headers: list, final) -> list[tuple[str, str, str]]:
    """(algorithm, hex, header) of every checksum the server sent (rules in docs/weights.md)."""
    offered = []
    for headers in [*redirect_headers, final]:
        linked = _etag(headers.get("X-Linked-Etag"))
        hub = _etag(headers.get("ETag")) if headers.get("X-Repo-Commit") else None
        for value, header in ((linked, "X-Linked-Etag"), (hub, "ETag")):
            if value and re.fullmatch(r"[0-9a-f]{64}", value):
                offered.append(("sha256", value, header))
                break
    md5s = [(m, "Content-MD5") for m in [_md5_from_base64(final.get("Content-MD5"))] if m]
    for part in (final.get("x-goog-hash") or "").split(","):
        if part.strip().startswith("md5=") and (m := _md5_from_base64(part.strip()[4:])):
            md5s.append((m, "x-goog-hash"))
    etag = _etag(final.get("ETag"))
    if (etag and re.fullmatch(r"[0-9a-f]{32}", etag) and not final.get("Content-Encoding")
            and not final.get("X-Repo-Commit") and all(etag == m for m, _ in md5s)):
        md5s.append((etag, "ETag"))
    return offered + [("md5", m, where) for m, where in md5s]


class _KeepRedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Keeps each redirect's headers (the hub puts the sha256 on its redirect)."""
    def __init__(self):
        self.headers = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlparse(newurl).scheme not in ("http", "https"):  # urllib would follow ftp://
            raise DownloadError(f"{public_url(req.full_url)} redirects to "
                                f"{public_url(newurl)}, which is not http(s); refused")
        self.headers.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str | None, name: str, verify: Callable, *, size: int | None = None,
          sha256: str | None = None, progress: bool = True, manual: str | None = None,
          timeout: float | None = DEFAULT_TIMEOUT):
    """``verify(path)`` of the cached file ``name``, downloaded from ``url`` (else ``manual``)."""
    if timeout is not None and not timeout >= 0:
        raise WeightsError(f"timeout={timeout!r}: expected the seconds a download may take "
                           f"(--timeout), or 0 for no limit")
    dest, problem = cache_path(name), None
    if os.path.lexists(dest):
        if (problem := cached_problem(dest, size, sha256)) is None:
            try:
                return verify(dest)
            except CorruptCheckpointError as err:
                problem = f"it cannot be read ({err})"
        if url is not None:
            logger.warning("cached %s is damaged (%s); downloading it again", dest, problem)
            dest.unlink(missing_ok=True)
    if url is None:
        raise ManualDownloadError(f"{dest} cannot be used: {problem}. {manual}" if problem
                                  else manual)
    prepare_cache(dest.parent)
    try:
        with atomic_path(dest, dest.suffix) as tmp:
            try:
                got = _stream(url, tmp, dest, size, sha256, progress, timeout or None)
                result = verify(tmp)
            except WeightsError as err:
                plain = dest.name.split("-", 2)[-1] if dest.name.startswith("url-") else dest.name
                hint = (f" Offline? Download {public_url(url)} by other means and pass its path "
                        f"(pretrained='/path/to/{plain}') or copy it to {dest}; or set a mirror: "
                        f"{MIRROR_ENV}=<base URL>.")
                raise type(err)(f"{err}\nNothing was kept in the cache."
                                + hint * isinstance(err, DownloadError)) from None
            # Under the lock: of two first downloads at once, the second meets the first's record.
            with updating_manifest(dest.parent) as files:
                first = files.setdefault(dest.name, {
                    "sha256": got[0], "size": got[1], "url": public_url(url),
                    "first_downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                if (first["sha256"], first["size"]) != got:
                    raise ChecksumError(
                        f"{public_url(url)} sent a different file from the one first downloaded "
                        f"as {dest.name}:\n  now:   sha256 {got[0]}, {got[1]} bytes\n  first: "
                        f"sha256 {first['sha256']}, {first['size']} bytes, from {first.get('url')}"
                        f" on {first.get('first_downloaded')}\nNothing was kept. If you trust the "
                        f"new file, accept it with 'rexnet-plugin weights --forget {dest.name}' "
                        f"(in Python: rexnet_plugin.weights.forget({dest.name!r})).")
    except OSError as err:  # a full disk, a quota
        raise DownloadError(f"cannot write {public_url(url)} to the weights cache {dest.parent}: "
                            f"{err.strerror or err}; nothing was kept. Free some space, or set "
                            f"{CACHE_ENV} to a folder on another disk.") from None
    logger.info("saved %s", dest)
    return result


def cached_problem(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why a cached file may not be used (a link, or another size or sha256), or None."""
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            raise WeightsError(f"{path} is a folder, where the cache keeps a file; move it away")
        if not stat.S_ISREG(info.st_mode):
            return "it is a link or not a regular file (the cache follows no links)"
        files, problem = _load_manifest(path.parent)
        if problem:
            logger.warning("%s: %s; those records are not used", path.parent / MANIFEST_NAME,
                           problem)
        first = files.get(path.name, {})
        actual = sha256_of(path) if sha256 or first else None
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    for want_size, want_sha256, what in (
            (size, sha256, "the published file's"),
            (first.get("size"), first.get("sha256"),
             f"its first download's (in {MANIFEST_NAME}): it was changed since")):
        if want_size is not None and info.st_size != want_size:
            return f"it has {info.st_size} bytes, not {what} {want_size}"
        if want_sha256 is not None and actual != want_sha256:
            return f"its sha256 differs from {what}"
    return None


def _stream(url: str, tmp: Path, dest: Path, size: int | None, sha256: str | None,
            progress: bool, deadline: float | None) -> tuple[str, int]:
    """(sha256, size) of ``url`` written to ``tmp``, bounded and checked (docs/weights.md)."""
    from tqdm import tqdm

    from .. import __version__
    parts, redirects = urlsplit(url), _KeepRedirectHeaders()
    url = public_url(url)  # for messages
    request = urllib.request.Request(url, headers={"User-Agent": f"rexnet-plugin/{__version__}"})
    if parts.username is not None:  # a Basic header that a redirect does not receive
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_unredirected_header("Authorization",
                                        f"Basic {base64.b64encode(secret).decode()}")
    logger.info("downloading %s to %s", url, dest)
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    got, expected, cut, start = 0, size, "", time.monotonic()
    # A read may wait up to its timeout, so the deadline is overrun by at most that.
    timeout = min(_READ_TIMEOUT_SECONDS, deadline or _READ_TIMEOUT_SECONDS)
    try:
        with urllib.request.build_opener(redirects).open(request, timeout=timeout) as response, \
                open(tmp, "xb") as out:
            known_from, final = "the published file has", response.headers
            sizes = [(h.get("X-Linked-Size"), "X-Linked-Size") for h in [*redirects.headers, final]]
            for announced, where in [*sizes, (final.get("Content-Length"), "Content-Length")]:
                if not (announced or "").isdigit():
                    continue
                if expected is not None and int(announced) != expected:
                    raise DownloadError(f"{url} announces {announced} bytes ({where}), "
                                                  f"but {known_from} {expected}")
                expected, known_from = int(announced), f"its {where} says"
            too_big = (f"more than {MAX_DOWNLOAD_BYTES >> 20} MB, far more than any ReXNet "
                       f"checkpoint: the URL is probably not a checkpoint")
            if (expected or 0) > MAX_DOWNLOAD_BYTES:
                raise DownloadError(f"{url} announces {expected} bytes: {too_big}")
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None if progress else True) as bar:
                # read1 returns what has arrived: the deadline holds against trickling.
                while block := response.read1(_CHUNK_BYTES):
                    got += len(block)
                    if expected is None and got > MAX_DOWNLOAD_BYTES:
                        raise DownloadError(f"{url} sends, with no size announced, {too_big}")
                    if expected is not None and got > expected:
                        raise DownloadError(f"{url} sends more than the {expected} "
                                                      f"bytes that {known_from}")
                    out.write(block)
                    for h in hashes.values():
                        h.update(block)
                    bar.update(len(block))
                    if deadline and time.monotonic() - start > deadline:
                        raise socket.timeout  # reported as the deadline below
            offered = offered_checksums(redirects.headers, final)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}.") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
        if deadline and time.monotonic() - start >= deadline:
            raise DownloadError(f"the download of {url} was stopped after {got} of "
                                f"{expected or '?'} bytes: it took longer than {deadline:g} s "
                                f"(--timeout or timeout=; 0 for no limit)") from None
        raise DownloadError(f"could not download {url}: {getattr(err, 'reason', err)}.") from None
    except HTTPException as err:  # IncompleteRead: the server closed the connection early
        cut = f" ({type(err).__name__})"
    if cut or (expected is not None and got != expected):
        raise DownloadError(f"the download of {url} stopped after {got} of "
                                      f"{expected or '?'} bytes{cut}. Try again.")
    digests = {name: h.hexdigest() for name, h in hashes.items()}
    published = [("sha256", sha256, "the variant table")] if sha256 else []
    for algorithm, want, where in published + [
            (a, want, f"the server's {header} header") for a, want, header in offered]:
        if digests[algorithm] != want.lower():
            raise ChecksumError(f"the download of {url} has {algorithm} {digests[algorithm]}, "
                                f"but {where} says {want}; try again")
    return digests["sha256"], got
