"""The PaddleDetection configs shipped in ``ppdet_configs/``, written out.

``rexnet-plugin configs --toolkit ppdet --dest <PaddleDetection>/configs/rexnet``
puts the checkout configs (``ppdet_configs/rexnet/``, whose ``_BASE_`` paths
start with ``../``) where they resolve; ``--standalone`` writes the one-file
configs for the pip wheel instead. An existing file with other content (an
edited config) is kept unless ``force``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from .configs import copy_shipped, print_report

CHECKOUT = "rexnet"        # ppdet_configs/rexnet: _BASE_ on <checkout>/configs
STANDALONE = "standalone"  # ppdet_configs/standalone: self-contained


def shipped_dir(kind: str = CHECKOUT):
    """The configs of ``kind`` inside the installed package (a Traversable)."""
    if kind not in (CHECKOUT, STANDALONE):
        raise ValueError(f"kind={kind!r}: expected {CHECKOUT!r} or {STANDALONE!r}")
    return resources.files("rexnet_plugin") / "ppdet_configs" / kind


def config_names(kind: str = CHECKOUT) -> list[str]:
    return sorted(p.name for p in shipped_dir(kind).iterdir() if p.name.endswith(".yml"))


def copy_configs(dest: str | os.PathLike, kind: str = CHECKOUT,
                 force: bool = False) -> dict[str, list[Path]]:
    """Copy the shipped configs of ``kind`` into ``dest`` (see configs.copy_shipped)."""
    return copy_shipped(shipped_dir(kind), config_names(kind), Path(dest), force)


def check_destination(dest: str | os.PathLike, kind: str) -> str | None:
    """A warning when checkout configs go where their ``../`` bases cannot resolve."""
    if kind != CHECKOUT:
        return None
    configs = Path(dest).resolve().parent
    if not (configs / "runtime.yml").is_file():
        return (f"{configs} does not look like PaddleDetection's configs/ folder (no "
                f"runtime.yml): the _BASE_ paths (../faster_rcnn/..., ../picodet/...) "
                f"will not resolve. Use --dest <PaddleDetection>/configs/rexnet, or "
                f"--standalone for the one-file configs.")
    return None


def main(args) -> int:
    """``rexnet-plugin configs --toolkit ppdet --dest DIR [--standalone] [--force]``."""
    kind = STANDALONE if getattr(args, "standalone", False) else CHECKOUT
    warning = check_destination(args.dest, kind)
    if warning:
        print(f"rexnet-plugin configs: warning: {warning}")
    report = copy_configs(args.dest, kind=kind, force=args.force)
    return print_report(report, "override keys with -o on PaddleDetection's tools")
