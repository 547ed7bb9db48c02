"""Regenerate the generated sections of README.md and docs/*.md.

    python scripts/update_docs.py           # rewrite what changed
    python scripts/update_docs.py --check   # exit 1 if anything would change

A section sits between "<!-- begin:NAME -->" and "<!-- end:NAME -->"; its
generator is readme_tables.SECTIONS[NAME] (beside this script).
tests/test_docs.py fails when a section is out of date.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(text: str, where: Path | str = "README.md") -> str:
    from readme_tables import SECTIONS

    def replace(match):
        name = match.group(1)
        if name not in SECTIONS:
            raise SystemExit(f"{where}: unknown generated section {name!r}; "
                             f"known: {', '.join(SECTIONS)}")
        return f"<!-- begin:{name} -->\n{SECTIONS[name]()}\n<!-- end:{name} -->"

    return re.sub(r"<!-- begin:([\w-]+) -->.*?<!-- end:\1 -->", replace, text, flags=re.S)


def main() -> int:
    from rexnet_plugin.files import write_text
    check = "--check" in sys.argv[1:]
    stale = []
    for path in documents():
        old = path.read_text(encoding="utf-8")
        new = render(old, path)
        if new == old:
            continue
        stale.append(path)
        if check:
            print(f"out of date: {path}")
        else:
            write_text(path, new)
            print(f"updated {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
