"""Regenerate the README's generated sections: python scripts/update_readme.py

Each section sits between "<!-- begin:NAME -->" and "<!-- end:NAME -->"; its
generator is rexnet_plugin.tables.SECTIONS[NAME].
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def render(text: str) -> str:
    from rexnet_plugin.tables import SECTIONS

    def replace(match):
        name = match.group(1)
        if name not in SECTIONS:
            raise SystemExit(f"{README}: unknown generated section {name!r}; "
                             f"known: {', '.join(SECTIONS)}")
        return f"<!-- begin:{name} -->\n{SECTIONS[name]()}\n<!-- end:{name} -->"

    return re.sub(r"<!-- begin:([\w-]+) -->.*?<!-- end:\1 -->", replace, text, flags=re.S)


def main() -> int:
    old = README.read_text()
    new = render(old)
    if new != old:
        tmp = README.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(README)
        print(f"updated {README}")
    else:
        print(f"{README} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
