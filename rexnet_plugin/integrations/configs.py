"""The configs shipped with the package, and ``rexnet-plugin configs``.

PaddleClas configs live in ``ppcls_configs/`` (one plain YAML per variant),
PaddleClas TIPC configs in ``tipc_configs/`` (two per variant: GPU and CPU),
and PaddleDetection configs in ``ppdet_configs/`` (``rexnet/`` for a source
checkout, whose ``_BASE_`` paths start with ``../``; ``standalone/`` for the
pip wheel). The folders ship inside the wheel (``rexnet_plugin/ppcls_configs``,
``rexnet_plugin/tipc_configs`` and ``rexnet_plugin/ppdet_configs`` link to
them). ``rexnet-plugin configs --dest DIR`` copies them out; a file the user
edited is kept unless ``force``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..files import write_text
from ..zoo import VARIANTS

PPCLS = "ppcls"
TIPC = "tipc"
PPDET_CHECKOUT = "rexnet"        # ppdet_configs/rexnet: _BASE_ on <checkout>/configs
PPDET_STANDALONE = "standalone"  # ppdet_configs/standalone: self-contained


def ppcls_dir():
    """The PaddleClas configs inside the installed package (a Traversable)."""
    return resources.files("rexnet_plugin") / "ppcls_configs"


def tipc_dir():
    """The PaddleClas TIPC configs inside the installed package (a Traversable)."""
    return resources.files("rexnet_plugin") / "tipc_configs"


def tipc_filenames(names: list[str] | None = None) -> list[str]:
    """The TIPC configs (GPU and CPU) of ``names`` (default: every variant)."""
    wanted = set(names or VARIANTS)
    return sorted(p.name for p in tipc_dir().iterdir() if p.name.endswith(".txt")
                  and p.name.split("_train_infer_python")[0] in wanted)


def ppdet_dir(kind: str = PPDET_CHECKOUT):
    """The PaddleDetection configs of ``kind`` inside the installed package."""
    if kind not in (PPDET_CHECKOUT, PPDET_STANDALONE):
        raise ValueError(f"kind={kind!r}: expected {PPDET_CHECKOUT!r} or {PPDET_STANDALONE!r}")
    return resources.files("rexnet_plugin") / "ppdet_configs" / kind


def ppcls_filename(name: str) -> str:
    return f"{name}.yaml"


def ppdet_names(kind: str = PPDET_CHECKOUT) -> list[str]:
    return sorted(p.name for p in ppdet_dir(kind).iterdir() if p.name.endswith(".yml"))


def copy_shipped(source, filenames: list[str], dest: str | os.PathLike,
                 force: bool = False) -> dict[str, list[Path]]:
    """Copy ``filenames`` from ``source`` (a folder in the package) into ``dest``.

    A file that exists with other content (say, the user edited it) is left
    alone unless ``force``. Returns {"written", "unchanged", "kept"} -> paths.
    """
    dest = Path(dest)
    report = {"written": [], "unchanged": [], "kept": []}
    for name in filenames:
        text = (source / name).read_text(encoding="utf-8")
        target = dest / name
        if target.exists():
            if target.read_text(encoding="utf-8") == text:
                report["unchanged"].append(target)
                continue
            if not force:
                report["kept"].append(target)
                continue
        write_text(target, text)
        report["written"].append(target)
    return report


def copy_ppcls_configs(dest: str | os.PathLike, force: bool = False,
                       names: list[str] | None = None) -> dict[str, list[Path]]:
    """Copy the PaddleClas configs (all variants, or ``names``) into ``dest``."""
    return copy_shipped(ppcls_dir(), [ppcls_filename(n) for n in names or VARIANTS], dest, force)


def copy_tipc_configs(dest: str | os.PathLike, force: bool = False,
                      names: list[str] | None = None) -> dict[str, list[Path]]:
    """Copy the TIPC configs (all variants, or ``names``) into ``dest``."""
    return copy_shipped(tipc_dir(), tipc_filenames(names), dest, force)


def tipc_destination_warning(dest: str | os.PathLike, names: list[str] | None = None) -> str | None:
    """A warning when TIPC configs go where the chain will not find what they
    name: their paths (tools/train.py, ppcls_configs/<variant>.yaml) are
    relative to the PaddleClas root, where the chain runs."""
    dest = Path(dest).resolve()
    root = dest.parent.parent.parent
    if dest.parent.name != "configs" or dest.parent.parent.name != "test_tipc" or not (
            root / "test_tipc" / "test_train_inference_python.sh").is_file():
        return (f"{dest} is not inside a PaddleClas checkout's test_tipc/configs/: the "
                f"chain runs from the PaddleClas root and reads tools/ and "
                f"ppcls_configs/ from there. Use --dest <PaddleClas>/test_tipc/configs/"
                f"rexnet_plugin.")
    missing = [n for n in names or VARIANTS if not (root / "ppcls_configs" / ppcls_filename(n)).is_file()]
    if missing:
        return (f"{root / 'ppcls_configs'} lacks {', '.join(ppcls_filename(n) for n in missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}, which the TIPC configs train with: run "
                f"rexnet-plugin configs --dest {root / 'ppcls_configs'}")
    return None


def copy_ppdet_configs(dest: str | os.PathLike, kind: str = PPDET_CHECKOUT,
                       force: bool = False) -> dict[str, list[Path]]:
    """Copy the PaddleDetection configs of ``kind`` into ``dest``."""
    return copy_shipped(ppdet_dir(kind), ppdet_names(kind), dest, force)


def ppdet_destination_warning(dest: str | os.PathLike, kind: str) -> str | None:
    """A warning when checkout configs go where their ``../`` bases cannot resolve."""
    if kind != PPDET_CHECKOUT:
        return None
    configs = Path(dest).resolve().parent
    if not (configs / "runtime.yml").is_file():
        return (f"{configs} does not look like PaddleDetection's configs/ folder (no "
                f"runtime.yml): the _BASE_ paths (../faster_rcnn/..., ../picodet/...) "
                f"will not resolve. Use --dest <PaddleDetection>/configs/rexnet, or "
                f"--standalone for the one-file configs.")
    return None


def print_report(report: dict[str, list[Path]], instead: str) -> int:
    """Print what a copy did; 1 if edited files were kept, else 0."""
    for path in report["written"]:
        print(f"wrote     {path}")
    for path in report["unchanged"]:
        print(f"unchanged {path}")
    for path in report["kept"]:
        print(f"KEPT      {path}: it differs from the shipped config (edited?); "
              f"not overwritten")
    if report["kept"]:
        print(f"{len(report['kept'])} file(s) kept as they are. Rerun with --force to "
              f"replace them with the shipped configs (your changes would be lost), "
              f"or {instead} instead of editing.")
        return 1
    return 0
