"""Regenerate ppcls_configs/*.yaml from rexnet_plugin/configs.py: python scripts/update_configs.py

tests/test_ppcls_configs.py fails when the files and the template drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "ppcls_configs"


def main() -> int:
    from rexnet_plugin.configs import config_filename, render
    from rexnet_plugin.files import write_text
    from rexnet_plugin.zoo import VARIANTS

    expected = {config_filename(name): render(name) for name in VARIANTS}
    for filename, text in expected.items():
        path = CONFIG_DIR / filename
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)
            print(f"wrote {path}")
    for stale in sorted(CONFIG_DIR.glob("*.yaml")):
        if stale.name not in expected:
            stale.unlink()
            print(f"removed {stale} (no such variant in zoo.VARIANTS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
