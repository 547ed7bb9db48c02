"""The weights cache and checked downloads into it: safe names; ``downloads.json``, the
sha256 and size of each file's first download (a later one that differs is refused until
``forget``); size and checksums (published, offered by the server), then ``verify`` on
the temp file before it is renamed into place."""

from __future__ import annotations

import base64
import binascii
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.client import HTTPException
from pathlib import Path
from typing import Callable, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlparse, urlsplit, urlunsplit

from ..files import atomic_path, write_json
from .errors import (ChecksumError, CorruptCheckpointError, DownloadError,
                     IncompleteDownloadError, ManualDownloadError, WeightsError)
from .formats import format_of_suffix

try:
    import fcntl
except ImportError:  # Windows: records are written without a lock
    fcntl = None

logger = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_ENV = "REXNET_PLUGIN_HOME"
DEFAULT_CACHE = Path("~/.cache/rexnet_plugin")
MANIFEST_NAME = "downloads.json"
_STARTUP_FOLDER_NAMES = {"site-packages", "dist-packages"}  # Python runs their .pth files
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
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
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise WeightsError(f"{name!r} is not a cache file name (letters, digits and ._- only, "
                           f"not starting with a dot, at most 200 characters)")
    if name == MANIFEST_NAME:
        raise WeightsError(f"{name} is the cache's record of first downloads, not a cached "
                           f"file; pass the name of a cached file")
    if name.lower().endswith(".pth"):
        name = name[:-4] + ".pt"
    folder = cache_dir()
    path = folder / name
    if Path(os.path.abspath(path)).parent != Path(os.path.abspath(folder)):
        raise WeightsError(f"refusing to write {path}: it is not directly inside the weights "
                           f"cache {folder}")
    return path


def filename_from_url(url: str) -> str:
    """``url-<hash of the URL>-<its file name, plain, at most 80 characters><suffix>``,
    from the URL alone (or a bcebos link's ``responseContentDisposition``)."""
    parsed = urlparse(url)
    disposition = parse_qs(parsed.query).get("responseContentDisposition", [""])[0]
    raw = disposition.split("filename=", 1)[1] if "filename=" in disposition else parsed.path
    for _ in range(4):  # "%252F" needs two rounds
        raw, before = unquote(raw), raw
        if raw == before:
            break
    last = raw.replace("\\", "/").rsplit("/", 1)[-1]
    readable = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", last)).strip("._-")
    stem, dot, ext = readable.rpartition(".")
    suffix = _CACHED_SUFFIX.get(format_of_suffix(f".{ext}")) if dot else None
    if suffix is None:
        stem = readable.replace(".", "_")
    stem = stem[:80].strip("._-") or "checkpoint"
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"url-{digest}-{stem}{suffix or ''}"


def prepare_cache(folder: Path) -> None:
    """Create ``folder``; refuse a site-packages folder (or one named like another's)."""
    startup = {os.path.realpath(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    names = {os.path.basename(os.path.normpath(p)).lower()
             for p in (os.path.abspath(folder), os.path.realpath(folder))}
    if names & _STARTUP_FOLDER_NAMES or os.path.realpath(folder) in startup:
        raise WeightsError(
            f"the weights cache {folder} is a site-packages folder (or named like one), where "
            f"Python runs every .pth file at start-up: a downloaded file there could run "
            f"code. Set {CACHE_ENV} to a folder of its own (the default is {DEFAULT_CACHE}).")
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
            files = json.loads(f.read().decode("utf-8")).get("files")
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, AttributeError, RecursionError) as err:
        return {}, f"it cannot be read ({type(err).__name__})"
    if not isinstance(files, dict):
        return {}, "its 'files' is not a mapping"
    valid = {k: v for k, v in files.items() if isinstance(v, dict) and isinstance(
        v.get("sha256"), str) and type(v.get("size")) is int}
    bad = len(files) - len(valid)
    return valid, (f"{bad} of its entries are not {{sha256, size, ...}} records" if bad else None)


def first_download(name: str) -> dict | None:
    files, problem = _load_manifest(cache_dir())
    if problem:
        logger.warning("%s: %s; those records are not used", cache_dir() / MANIFEST_NAME, problem)
    return files.get(name)


@contextmanager
def updating_manifest(folder: Path):
    """Yield the entries to change, under a lock on the folder; write them back if
    changed. A damaged manifest is kept as ``downloads.json.damaged-<time>``."""
    lock = os.open(folder, os.O_RDONLY) if fcntl else None
    try:
        if lock is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
            except OSError:
                pass  # no locks on this file system
        files, problem = _load_manifest(folder)
        before = json.dumps(files, sort_keys=True)
        yield files
        if json.dumps(files, sort_keys=True) == before:
            return
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
    path = cache_path(name)
    removed = []
    if not path.parent.is_dir():
        return removed
    with updating_manifest(path.parent) as files:
        entry = files.pop(path.name, None)
        if entry is not None:
            removed.append(f"the recorded first download (sha256 {entry['sha256']}, "
                           f"from {entry.get('url')})")
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(f"the cached file {path}")
    return removed


def mirror_url(filename: str) -> str | None:
    """The file's URL on ``$REXNET_PLUGIN_MIRROR`` (its query string kept), if set."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return None
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{quote(filename)}"))


def public_url(url: str) -> str:
    """``url`` without its user name and password, for messages and records."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _request(url: str) -> urllib.request.Request:
    """A GET; credentials become a Basic header that a redirect does not receive."""
    from .. import __version__
    parts = urlsplit(url)
    request = urllib.request.Request(public_url(url),
                                     headers={"User-Agent": f"rexnet-plugin/{__version__}"})
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        request.add_unredirected_header(
            "Authorization", "Basic " + base64.b64encode(secret.encode()).decode())
    return request


def _by_hand(url: str, dest: Path) -> str:
    url = public_url(url)
    name = dest.name.split("-", 2)[-1] if dest.name.startswith("url-") else dest.name
    return (f"If this machine is offline or cannot reach {urlparse(url).netloc}, download "
            f"{url} by other means and pass its path (pretrained='/path/to/{name}'), "
            f"or copy it to {dest}, where it is found next time. A mirror can be set "
            f"with {MIRROR_ENV}=<base URL>.")


@dataclass
class _Received:
    size: int = 0
    sha256: str = ""
    md5: str = ""
    offered: list[tuple[str, str, str]] = field(default_factory=list)  # (algorithm, hex, header)


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
    """Every checksum the server sent (rules in docs/weights.md): the hub's LFS sha256
    (``X-Linked-Etag``, a hub's 64-hex ``ETag``), ``Content-MD5``, ``x-goog-hash``,
    and a plain 32-hex ``ETag`` unless compressed or contradicting a Content-MD5."""
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


def _offered_sizes(redirect_headers: list, final) -> list[tuple[int, str]]:
    sizes = [(int(h["X-Linked-Size"]), "X-Linked-Size") for h in [*redirect_headers, final]
             if (h.get("X-Linked-Size") or "").isdigit()]
    length = final.get("Content-Length")
    return sizes + ([(int(length), "Content-Length")] if (length or "").isdigit() else [])


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


def fetch(url: str | None, name: str, verify: Callable[[Path], T], *, size: int | None = None,
          sha256: str | None = None, progress: bool = True, manual: str | None = None,
          timeout: float | None = DEFAULT_TIMEOUT) -> T:
    """``verify(path)`` of the cached file ``name``, downloading ``url`` first if it is
    missing or fails its checks (no ``url``: ``manual`` says how to get it). ``timeout``:
    seconds the whole download may take (0: no limit). ``verify`` raises WeightsError."""
    if timeout is not None and not timeout >= 0:
        raise WeightsError(f"timeout={timeout!r}: expected the seconds a whole download may "
                           f"take (--timeout on the command line), or 0 for no limit")
    dest = cache_path(name)
    if os.path.lexists(dest):
        problem = cached_problem(dest, size, sha256)
        if problem is None:
            try:
                return verify(dest)
            except CorruptCheckpointError as err:
                problem = f"it cannot be read ({err})"
        if url is None:
            raise WeightsError(f"{dest} cannot be used: {problem}. {manual}")
        logger.warning("cached %s is damaged (%s); downloading it again", dest, problem)
        dest.unlink(missing_ok=True)
    if url is None:
        raise ManualDownloadError(manual)
    prepare_cache(dest.parent)
    try:
        with atomic_path(dest, dest.suffix) as tmp:
            got = _stream(url, tmp, dest, size, progress, timeout or None)
            _check_checksums(url, dest, got, sha256)
            try:
                result = verify(tmp)
            except WeightsError as err:
                raise type(err)(f"{err}\nNothing was kept in the cache.") from None
            # Under the lock: of two first downloads at once, the second meets the first's record.
            with updating_manifest(dest.parent) as files:
                if dest.name in files:
                    _check_same_as_first(url, dest.name, got, files[dest.name])
                else:
                    files[dest.name] = {"sha256": got.sha256, "size": got.size,
                                        "url": public_url(url), "first_downloaded":
                                        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    except OSError as err:  # a full disk, a quota
        raise DownloadError(f"cannot write the download of {public_url(url)} to the weights "
                            f"cache {dest.parent}: {err.strerror or err}; nothing was kept. "
                            f"Free some space, or set {CACHE_ENV} to a folder on another "
                            f"disk.") from None
    logger.info("saved %s", dest)
    return result


def cached_problem(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why a cached file may not be used, or None: not a regular file (links are not
    followed), or its size or sha256 differs from the published or first download's."""
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            raise WeightsError(f"{path} is a folder, where the weights cache keeps a file; "
                               f"move it away")
        if not stat.S_ISREG(info.st_mode):
            return "it is a link or not a regular file (the cache follows no links)"
        first = first_download(path.name) or {}
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


def _check_checksums(url: str, dest: Path, got: _Received, published_sha256: str | None) -> None:
    expected = [("sha256", published_sha256, "the variant table")] if published_sha256 else []
    offered = [(a, want, f"the server's {header} header") for a, want, header in got.offered]
    for algorithm, want, where in expected + offered:
        have = got.sha256 if algorithm == "sha256" else got.md5
        if have != want.lower():
            raise ChecksumError(
                f"the download of {public_url(url)} has {algorithm} {have}, but {where} says "
                f"{want}; nothing was kept. The file was damaged on the way, or the server "
                f"holds another file than it describes. Try again; if it fails again, the "
                f"file on the server has changed. " + _by_hand(url, dest))


def _check_same_as_first(url: str, name: str, got: _Received, first: dict) -> None:
    if got.sha256 == first["sha256"] and got.size == first["size"]:
        return
    url = public_url(url)
    raise ChecksumError(
        f"{url} sent a different file from the one first downloaded as {name}:\n"
        f"  now:   sha256 {got.sha256}, {got.size} bytes, from {url}\n"
        f"  first: sha256 {first['sha256']}, {first['size']} bytes, from "
        f"{first.get('url')} on {first.get('first_downloaded')}\n"
        f"Nothing was kept. A published checkpoint should not change, and a mirror should "
        f"serve the same file. If you trust the new file (its publisher replaced it), accept "
        f"it with 'rexnet-plugin weights --forget {name}' (in Python: "
        f"rexnet_plugin.weights.forget({name!r})) and load it again.")


def _stream(url: str, tmp: Path, dest: Path, size: int | None, progress: bool,
            deadline: float | None) -> _Received:
    from tqdm import tqdm
    request, redirects = _request(url), _KeepRedirectHeaders()
    url = public_url(url)  # for messages
    logger.info("downloading %s to %s", url, dest)
    got, expected = _Received(), size
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    start = time.monotonic()
    # A read may wait up to its timeout, so the deadline is overrun by at most that.
    timeout = min(_READ_TIMEOUT_SECONDS, deadline or _READ_TIMEOUT_SECONDS)

    def too_slow() -> DownloadError:
        return DownloadError(
            f"the download of {url} was stopped after {got.size} of {expected or '?'} bytes: "
            f"it took longer than {deadline:g} s (timeout=, or --timeout of 'rexnet-plugin "
            f"weights --download'; default {DEFAULT_TIMEOUT}). Nothing was kept. On a slow "
            f"link, allow more seconds (0 for no limit). " + _by_hand(url, dest))

    def refuse(cls, what: str) -> DownloadError:
        return cls(f"{url} {what}; nothing was kept. " + _by_hand(url, dest))

    def cut(why: str = "") -> DownloadError:
        return IncompleteDownloadError(
            f"the download of {url} stopped after {got.size} of {expected or '?'} bytes{why}; "
            f"the partial file was deleted. Try again. " + _by_hand(url, dest))
    try:
        with urllib.request.build_opener(redirects).open(request, timeout=timeout) as response, \
                open(tmp, "xb") as out:
            got.offered = offered_checksums(redirects.headers, response.headers)
            known_from = "the published file has"
            for announced, where in _offered_sizes(redirects.headers, response.headers):
                if expected is not None and announced != expected:
                    raise refuse(IncompleteDownloadError, f"announces {announced} bytes "
                                 f"({where}), but {known_from} {expected}")
                expected, known_from = announced, f"its {where} says"
            limit = MAX_DOWNLOAD_BYTES if expected is None else expected
            if limit > MAX_DOWNLOAD_BYTES:
                raise refuse(DownloadError, f"announces {limit} bytes: more than "
                             f"{MAX_DOWNLOAD_BYTES >> 20} MB, far more than any ReXNet "
                             f"checkpoint. The URL is probably not a checkpoint")
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None if progress else True) as bar:
                # read1 returns what has arrived: the deadline holds against trickling.
                while block := response.read1(_CHUNK_BYTES):
                    got.size += len(block)
                    if got.size > limit and expected is None:
                        raise refuse(DownloadError, f"sends more than {limit >> 20} MB, with no "
                                     f"size announced: far more than any ReXNet checkpoint. "
                                     f"The URL is probably not a checkpoint")
                    if got.size > limit:
                        raise refuse(IncompleteDownloadError, f"sends more than the "
                                     f"{expected} bytes that {known_from}")
                    out.write(block)
                    sha256.update(block)
                    md5.update(block)
                    bar.update(len(block))
                    if deadline and time.monotonic() - start > deadline:
                        raise too_slow()
    except urllib.error.HTTPError as err:
        raise DownloadError(f"could not download {url}: HTTP {err.code} {err.reason}. "
                            + _by_hand(url, dest)) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as err:
        if deadline and time.monotonic() - start >= deadline:
            raise too_slow() from None
        raise DownloadError(f"could not download {url}: {getattr(err, 'reason', err)}. "
                            + _by_hand(url, dest)) from None
    except HTTPException as err:  # IncompleteRead: the server closed the connection early
        raise cut(f" ({type(err).__name__})") from None
    if expected is not None and got.size != expected:
        raise cut()
    got.sha256, got.md5 = sha256.hexdigest(), md5.hexdigest()
    return got
