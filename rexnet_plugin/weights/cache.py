"""The weights cache: where files go, what was first downloaded, what killed
downloads left behind.

* ``cache_path(name)``: a plain file name (letters, digits, ``._-``) whose
  path is checked to lie directly in the cache folder. A published file keeps
  its table name, except that ``.pth`` becomes ``.pt``; an arbitrary URL gets
  ``filename_from_url(url)``, made from the URL alone, never from the
  server's headers. No cached name ends in ``.pth``, and ``prepare_cache``
  refuses a site-packages folder: Python runs ``.pth`` files there at start-up.
* The manifest (``downloads.json``): the sha256 and size of each file's first
  download, so that a later download that differs can be refused
  (``download.fetch``) until ``forget(name)``, and a cached file that no
  longer matches is noticed. Updates hold a lock (``updating_manifest``); a
  damaged manifest is kept as a copy before it is rewritten.
* Temp files: ``temp_download`` writes ``.<name>.<pid>-<random>.part<ext>``,
  locked while its process lives; ``sweep_stale_downloads`` deletes those
  whose process is gone (SIGKILL, a crash).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import stat
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from .errors import WeightsError
from .formats import format_of_suffix
from ..files import process_alive, write_json

try:
    import fcntl
except ImportError:  # Windows: stale temp files are told apart by age alone
    fcntl = None

logger = logging.getLogger(__name__)

CACHE_ENV = "REXNET_PLUGIN_HOME"
DEFAULT_CACHE = Path("~/.cache/rexnet_plugin")
MANIFEST_NAME = "downloads.json"
# Folders whose .pth files Python runs at start-up, by name.
_STARTUP_FOLDER_NAMES = ("site-packages", "dist-packages")
# A live download writes at least every read timeout (60 s); a temp file
# untouched for this long has no writer, even one this machine cannot see.
_STALE_SECONDS = 600
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_URL_STEM_CHARS = 80
# The suffix a cached file gets for each format; torch files get ".pt", so no
# cached name ends in ".pth" (run by Python from a site folder) or ".py".
_CACHED_SUFFIX = {"pdparams": ".pdparams", "safetensors": ".safetensors", "pth": ".pt"}
_TEMP_NAME = re.compile(r"\..+\.(?:(?P<pid>\d+)-)?[0-9a-f]{8}\.part(?:\.[A-Za-z0-9]+)?")


# -- where files go ------------------------------------------------------------

def cache_dir() -> Path:
    """``$REXNET_PLUGIN_HOME``, else ``~/.cache/rexnet_plugin``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cache_path(name: str) -> Path:
    """The path of the cached file ``name``; refused unless it is a plain name in the cache.

    A ``.pth`` name is cached as ``.pt``: Python would run a ``.pth`` file's
    import lines if the cache ever sat in a site-packages folder.
    """
    folder = cache_dir()
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise WeightsError(f"{name!r} is not a cache file name (letters, digits and ._- only, "
                           f"not starting with a dot, at most 200 characters)")
    if name == MANIFEST_NAME:
        raise WeightsError(f"{name} is the cache's record of first downloads, not a cached "
                           f"file; pass the name of a cached file")
    if name.lower().endswith(".pth"):
        name = name[:-4] + ".pt"
    path = folder / name
    check_inside(path, folder)
    return path


def check_inside(path: Path, folder: Path) -> None:
    # abspath folds "..", so a name that slipped through could not point elsewhere.
    if Path(os.path.abspath(path)).parent != Path(os.path.abspath(folder)):
        raise WeightsError(f"refusing to write {path}: it is not directly inside the weights "
                           f"cache {folder}")


def filename_from_url(url: str) -> str:
    """The cache name of an arbitrary URL: ``url-<hash>-<name><suffix>``.

    The hash (of the whole URL) keeps names unique. The readable part is the
    URL's file name (or a bcebos link's ``responseContentDisposition``
    filename), fully decoded, cut to its last component, reduced to letters,
    digits and ``._-`` and to 80 characters. The suffix is kept for checkpoint
    formats only; torch suffixes become ``.pt``.
    """
    parsed = urlparse(url)
    disposition = parse_qs(parsed.query).get("responseContentDisposition", [""])[0]
    raw = disposition.split("filename=", 1)[1] if "filename=" in disposition else parsed.path
    for _ in range(4):  # "%252F" needs two rounds
        decoded = unquote(raw)
        if decoded == raw:
            break
        raw = decoded
    last = raw.replace("\\", "/").rsplit("/", 1)[-1]
    readable = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", last)).strip("._-")
    stem, dot, ext = readable.rpartition(".")
    suffix = _CACHED_SUFFIX.get(format_of_suffix(f".{ext}")) if dot else None
    if suffix is None:
        stem = readable.replace(".", "_")
    stem = stem[:_URL_STEM_CHARS].strip("._-") or "checkpoint"
    digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"url-{digest}-{stem}{suffix or ''}"


def _startup_folders() -> set[str]:
    """Folders whose ``.pth`` files Python runs at start-up (site-packages)."""
    import site
    folders = list(getattr(site, "getsitepackages", list)())
    folders.append(getattr(site, "getusersitepackages", str)())
    folders += [p for p in sys.path if os.path.basename(os.path.normpath(p or "."))
                in ("site-packages", "dist-packages")]
    return {os.path.realpath(p) for p in folders if p}


def prepare_cache(folder: Path) -> None:
    """Create the cache ``folder``; refuse a site-packages folder (any folder so
    named, this interpreter's or another's)."""
    names = {os.path.basename(os.path.normpath(p)).lower()
             for p in (os.path.abspath(folder), os.path.realpath(folder))}
    if names & set(_STARTUP_FOLDER_NAMES) or os.path.realpath(folder) in _startup_folders():
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
    """``path`` opened for reading, if it is a regular file and not a link
    (a FIFO would block; a link could point anywhere); OSError otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
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


# -- the manifest of first downloads ---------------------------------------------

def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool))


def _load_manifest(folder: Path) -> tuple[dict[str, dict], str | None]:
    """(the valid entries, what is wrong with the file or None)."""
    path = folder / MANIFEST_NAME
    try:
        with open_regular(path) as f:
            files = json.loads(f.read().decode("utf-8")).get("files")
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, AttributeError, RecursionError) as err:
        return {}, f"it cannot be read ({type(err).__name__})"
    if not isinstance(files, dict):
        return {}, "its 'files' is not a mapping"
    valid = {k: v for k, v in files.items() if _valid_entry(v)}
    bad = len(files) - len(valid)
    return valid, (f"{bad} of its entries are not {{sha256, size, ...}} records" if bad else None)


def read_manifest(folder: Path) -> dict[str, dict]:
    """``{cache name: {"sha256", "size", "url", "first_downloaded"}}`` of ``folder``:
    the valid entries (a damaged file is reported by ``updating_manifest``)."""
    files, problem = _load_manifest(folder)
    if problem:
        logger.warning("%s: %s; those records are not used", folder / MANIFEST_NAME, problem)
    return files


def first_download(name: str) -> dict | None:
    """What the manifest recorded on the first download of ``name``, if anything."""
    return read_manifest(cache_dir()).get(name)


def new_entry(url: str, sha256: str, size: int) -> dict:
    return {"sha256": sha256, "size": size, "url": url,
            "first_downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@contextmanager
def updating_manifest(folder: Path):
    """Yield the manifest's entries (a dict to change) while holding a lock on
    the cache folder; write them back if changed. A damaged manifest is first
    renamed to ``downloads.json.damaged-<time>``, and a warning says so."""
    # The folder itself: no lock file to leave behind (Windows: no lock, no fd).
    lock = os.open(folder, os.O_RDONLY) if fcntl is not None else None
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
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            copy = folder / f"{MANIFEST_NAME}.damaged-{stamp}"
            os.replace(folder / MANIFEST_NAME, copy)  # kept as it is, never read again
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
    """Drop ``name`` from the cache and its manifest, so that its next download
    is accepted and recorded afresh. Returns what was removed."""
    path = cache_path(name)
    removed = []
    if not path.parent.is_dir():
        return removed
    with updating_manifest(path.parent) as files:
        entry = files.pop(path.name, None)
        if entry is not None:
            removed.append(f"the recorded first download (sha256 {entry.get('sha256')}, "
                           f"from {entry.get('url')})")
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(f"the cached file {path}")
    return removed


# -- stale temp files ----------------------------------------------------------------

def _is_stale(path: Path, pid: str | None) -> bool:
    try:
        with open_regular(path) as f:  # not a FIFO: opening it would block
            if fcntl is not None:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False  # a live download holds it
                except OSError:
                    pass  # no locks on this file system: age and pid decide
            age = time.time() - os.fstat(f.fileno()).st_mtime
    except OSError:
        return False
    return age > _STALE_SECONDS or (pid is not None and not process_alive(int(pid)))


def sweep_stale_downloads(folder: Path) -> list[Path]:
    """Delete the temp files that killed downloads left in ``folder``; return them.

    A temp file is stale when no process holds its lock and its writer's
    process is gone, or when nothing wrote to it for 10 minutes. A live
    download's file is never touched.
    """
    swept = []
    for path in folder.glob(".*.part*"):
        match = _TEMP_NAME.fullmatch(path.name)
        if match is None or not _is_stale(path, match["pid"]):
            continue
        try:
            path.unlink()
        except OSError:
            continue
        swept.append(path)
    if swept:
        logger.info("removed %d temp file(s) left by interrupted downloads in %s",
                    len(swept), folder)
    return swept


@contextmanager
def temp_download(dest: Path):
    """Yield ``(temp path, open file)`` beside ``dest``, locked while this process
    writes; delete it on any error. The caller renames it onto ``dest``
    (``os.replace``), under the manifest's lock."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{secrets.token_hex(4)}.part{dest.suffix}")
    check_inside(tmp, dest.parent)
    try:
        out = open(tmp, "xb")
    except OSError as err:
        raise WeightsError(f"cannot write to the weights cache {dest.parent} ({err.strerror}); "
                           f"set {CACHE_ENV} to a writable folder") from None
    try:
        if fcntl is not None:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)
        yield tmp, out
    finally:
        out.close()
        tmp.unlink(missing_ok=True)
