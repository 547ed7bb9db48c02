"""Writing files so that nothing is ever half-written: a temp file beside the
target (same folder, so the rename is atomic), then ``os.replace``; and a
check that an output folder can be written at all, before any work."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


class FolderNotWritableError(PermissionError, ValueError):
    """An output folder that cannot be created or written. A ValueError too, so
    that commands report it like any other bad argument (exit code 2)."""


def ensure_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and check that a file can be written in it,
    by writing one (permission bits alone miss read-only mounts and ACLs).

    Raises FolderNotWritableError naming the folder, the reason and the fix.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        if isinstance(err, (NotADirectoryError, FileExistsError)):
            reason = "a file is in the way, where a folder should be"
        raise FolderNotWritableError(
            f"cannot write to the {what} {folder}: {reason}. Choose a folder you can write "
            f"to, or make this one writable (e.g. chmod u+w {folder}).") from None
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a new hidden temp path beside ``path``; rename it onto ``path`` on
    success, delete it on any error (KeyboardInterrupt included).

    The suffix lets a writer keep the extension that a reader looks at.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=1) + "\n")


# atomic_dir's folders: .<name>.rexnet-tmp-<pid> and .<name>.rexnet-old-<pid>.
_DIR_TEMP_NAME = re.compile(r"\..+\.rexnet-(?:tmp|old)-(?P<pid>\d+)")


def sweep_stale_dirs(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp folders of ``atomic_dir`` in ``folder`` whose process is
    gone (SIGKILL, a crash); return them. A live process's folder is kept."""
    swept = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return swept
    for entry in entries:
        match = _DIR_TEMP_NAME.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() \
                and not process_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            swept.append(entry)
    return swept


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder; it replaces ``path`` (a folder) on success.
    Temp folders that killed processes left beside ``path`` are swept first."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.rexnet-tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.rexnet-old-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_dirs(path.parent)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_regular_file_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file (not a FIFO, a device, a folder) whose
    real path, links followed, lies inside ``folder``'s real path."""
    real, home = os.path.realpath(path), os.path.realpath(folder)
    return os.path.isfile(real) and os.path.commonpath([real, home]) == home


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a temp file's owner): on POSIX
    only; elsewhere True, since os.kill would end the process there."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
