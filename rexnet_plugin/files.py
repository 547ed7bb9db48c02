"""Nothing half-written: write a temp beside the target, then rename it over the target."""

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
    """A ValueError too, so commands report it like any bad argument (exit 2)."""


def ensure_writable_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` and write a probe in it (mode bits miss read-only mounts and ACLs)."""
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


# Temps beside their target: .<target>.rexnet-tmp-<pid>-<8 hex><suffix>; a folder being
# replaced is first renamed .<target>.rexnet-old-<pid>-<8 hex>.
_TEMP_NAME = re.compile(
    r"\.(?P<target>.+)\.rexnet-(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}(?:\.[A-Za-z0-9]+)?")


def temp_path(target: str | os.PathLike, suffix: str = "", kind: str = "tmp") -> Path:
    """A new hidden name beside ``target`` carrying this process's id (see sweep_stale)."""
    target = Path(target)
    return target.with_name(f".{target.name}.rexnet-{kind}-{os.getpid()}-"
                            f"{secrets.token_hex(4)}{suffix}")


def remove(path: Path) -> None:
    """Delete a file, a link or a folder tree; nothing if it is missing."""
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else \
        path.unlink(missing_ok=True)


def sweep_stale(folder: str | os.PathLike) -> list[Path]:
    """Delete (and return) the temps in ``folder`` whose writer is gone; put back a folder
    whose writer died mid-swap, between its two renames."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    swept = []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or process_alive(int(match["pid"])):
            continue
        target = entry.with_name(match["target"])
        if match["kind"] == "old" and not os.path.lexists(target):
            entry.rename(target)
        else:
            remove(entry)
            swept.append(entry)
    return swept


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temp path beside ``path`` (a file or folder to make) that replaces ``path`` on
    success and is deleted on any error; dead writers' temps are swept first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir() and not path.is_symlink():
            old = temp_path(path, kind="old")
            path.rename(old)
            tmp.rename(path)
            remove(old)
        else:
            os.replace(tmp, path)
    finally:
        remove(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """``atomic_path`` for a folder: yields the temp folder, already made."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        yield tmp


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data) -> None:
    write_text(path, json.dumps(data, indent=1) + "\n")


def is_regular_file_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file whose real path lies inside ``folder``'s."""
    real, home = os.path.realpath(path), os.path.realpath(folder)
    return os.path.isfile(real) and os.path.commonpath([real, home]) == home


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs; True off POSIX, where os.kill would end it."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
