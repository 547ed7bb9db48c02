"""Shared by the scripts that write generated files (update_configs.py,
update_tipc_configs.py): compare with what is on disk, then check or rewrite."""

from __future__ import annotations

import sys
from pathlib import Path


def sync(expected: dict[Path, str], on_disk: list[Path], argv: list[str] | None = None) -> int:
    """Write each ``expected`` file whose text differs and remove ``on_disk``
    files not in it; with ``--check`` in ``argv``, only list them (exit 1)."""
    from rexnet_plugin.files import write_text
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    drifted = [p for p, text in expected.items()
               if not p.exists() or p.read_text(encoding="utf-8") != text]
    stale = [p for p in sorted(on_disk) if p not in expected]
    if check:
        for path in drifted + stale:
            print(f"out of date: {path}")
        return 1 if drifted or stale else 0
    for path in drifted:
        write_text(path, expected[path])
        print(f"wrote {path}")
    for path in stale:
        path.unlink()
        print(f"removed {path} (no such variant in zoo.VARIANTS)")
    return 0
