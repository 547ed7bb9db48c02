"""The weights cache: safe file names, and ``downloads.json``, the sha256 and size of each
file's first download (a later download that differs is refused until ``forget``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import site
import stat
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from ..files import write_json
from .errors import WeightsError
from .formats import format_of_suffix

try:
    import fcntl
except ImportError:  # Windows: records are written without a lock
    fcntl = None

logger = logging.getLogger(__name__)

CACHE_ENV = "REXNET_PLUGIN_HOME"
DEFAULT_CACHE = Path("~/.cache/rexnet_plugin")
MANIFEST_NAME = "downloads.json"
_STARTUP_FOLDER_NAMES = {"site-packages", "dist-packages"}  # Python runs their .pth files
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# No cached name ends in ".pth" (run by Python from a site folder) or ".py".
_CACHED_SUFFIX = {"pdparams": ".pdparams", "safetensors": ".safetensors", "pth": ".pt"}


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


def read_manifest(folder: Path) -> dict[str, dict]:
    files, problem = _load_manifest(folder)
    if problem:
        logger.warning("%s: %s; those records are not used", folder / MANIFEST_NAME, problem)
    return files


def first_download(name: str) -> dict | None:
    return read_manifest(cache_dir()).get(name)


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
