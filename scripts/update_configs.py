"""Keep ppcls_configs/*.yaml in step with the variant table.

    python scripts/update_configs.py          # rewrite the files that drifted
    python scripts/update_configs.py --check  # exit 1 if any file would change

The PaddleClas configs are plain YAML files, one per variant, which users
read and edit. They share one recipe: ``ppcls_configs/ReXNet_1_0.yaml`` is
the template, and only its first line and the lines marked
``# per variant: <field>`` differ between variants. This script stamps those
lines for every variant of ``rexnet_plugin.zoo.VARIANTS``;
tests/test_ppcls_configs.py fails when a file drifts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "ppcls_configs"
TEMPLATE_VARIANT = "ReXNet_1_0"
# "key: value  # per variant: field"; a value is one word or a [list].
_MARKED = re.compile(r"^(?P<key>\s*-?\s*[\w.]+:\s*)(?P<value>\[[^\]]*\]|\S+)"
                     r"(?P<mark>\s+# per variant: (?P<field>\w+))$")


def variant_fields(name: str) -> dict[str, str]:
    """The values of the marked lines for variant ``name``."""
    from rexnet_plugin.zoo import VARIANTS
    v = VARIANTS[name]
    t = v.eval_transform
    return {"name": name, "resize_short": str(t.resize_short), "crop_size": str(t.crop_size),
            "interpolation": t.interpolation,
            # the export input (PaddleClas's export_model) at the eval crop
            "image_shape": f"[3, {t.crop_size}, {t.crop_size}]"}


def title_line(name: str) -> str:
    from rexnet_plugin.zoo import KINDS, VARIANTS
    v = VARIANTS[name]
    return f"# {name}: {KINDS[v.kind]} x{v.width_mult} for PaddleClas, from rexnet-plugin."


def stamp(template: str, name: str) -> str:
    """The config of ``name``: ``template`` with its first line and marked lines replaced."""
    fields = variant_fields(name)
    lines = template.split("\n")
    lines[0] = title_line(name)
    for i, line in enumerate(lines):
        match = _MARKED.match(line)
        if match:
            field = match["field"]
            if field not in fields:
                raise SystemExit(f"{CONFIG_DIR / (TEMPLATE_VARIANT + '.yaml')}:{i + 1}: unknown "
                                 f"field {field!r}; known: {', '.join(fields)}")
            lines[i] = f"{match['key']}{fields[field]}{match['mark']}"
    return "\n".join(lines)


def expected_configs() -> dict[Path, str]:
    from rexnet_plugin.zoo import VARIANTS
    template = (CONFIG_DIR / f"{TEMPLATE_VARIANT}.yaml").read_text(encoding="utf-8")
    return {CONFIG_DIR / f"{name}.yaml": stamp(template, name) for name in VARIANTS}


def main() -> int:
    from generated_files import sync
    return sync(expected_configs(), list(CONFIG_DIR.glob("*.yaml")))


if __name__ == "__main__":
    sys.exit(main())
