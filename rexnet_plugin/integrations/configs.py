"""The configs shipped inside the package, and ``rexnet-plugin configs`` that copies them out:
ppcls_configs/, tipc_configs/, ppdet_configs/rexnet (``_BASE_`` on a PaddleDetection checkout)
and ppdet_configs/standalone (for the pip wheel)."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..files import write_text
from ..zoo import VARIANTS

PPDET_CHECKOUT = "rexnet"
PPDET_STANDALONE = "standalone"


def shipped(*parts):
    """A folder or file shipped in the package (a Traversable)."""
    return resources.files("rexnet_plugin").joinpath("/".join(parts))


def ppdet_names(kind: str = PPDET_CHECKOUT) -> list[str]:
    return sorted(p.name for p in shipped("ppdet_configs", kind).iterdir()
                  if p.name.endswith(".yml"))


def copy_shipped(source, filenames: list[str], dest: str | os.PathLike,
                 force: bool = False) -> dict[str, list[Path]]:
    """Copy ``filenames`` from ``source`` into ``dest``; a file with other content
    (edited?) is kept unless ``force``. Returns {"written", "unchanged", "kept"}."""
    report = {"written": [], "unchanged": [], "kept": []}
    for name in filenames:
        text = (source / name).read_text(encoding="utf-8")
        target = Path(dest) / name
        if target.exists() and target.read_text(encoding="utf-8") == text:
            report["unchanged"].append(target)
        elif target.exists() and not force:
            report["kept"].append(target)
        else:
            write_text(target, text)
            report["written"].append(target)
    return report


def copy_ppcls_configs(dest, force: bool = False, names: list[str] | None = None):
    return copy_shipped(shipped("ppcls_configs"), [f"{n}.yaml" for n in names or VARIANTS],
                        dest, force)


def copy_tipc_configs(dest, force: bool = False, names: list[str] | None = None):
    wanted = set(names or VARIANTS)  # GPU and CPU files: <name>_train_infer_python*.txt
    return copy_shipped(shipped("tipc_configs"), sorted(
        p.name for p in shipped("tipc_configs").iterdir() if p.name.endswith(".txt")
        and p.name.split("_train_infer_python")[0] in wanted), dest, force)


def copy_ppdet_configs(dest, kind: str = PPDET_CHECKOUT, force: bool = False):
    return copy_shipped(shipped("ppdet_configs", kind), ppdet_names(kind), dest, force)


def tipc_destination_warning(dest, names: list[str] | None = None) -> str | None:
    """TIPC configs name paths relative to the PaddleClas root, where the chain runs."""
    dest = Path(dest).resolve()
    root = dest.parent.parent.parent
    if dest.parent.name != "configs" or dest.parent.parent.name != "test_tipc" or not (
            root / "test_tipc" / "test_train_inference_python.sh").is_file():
        return (f"{dest} is not inside a PaddleClas checkout's test_tipc/configs/: the chain "
                f"runs from the PaddleClas root and reads tools/ and ppcls_configs/ from "
                f"there. Use --dest <PaddleClas>/test_tipc/configs/rexnet_plugin.")
    missing = [f"{n}.yaml" for n in names or VARIANTS
               if not (root / "ppcls_configs" / f"{n}.yaml").is_file()]
    if missing:
        return (f"{root / 'ppcls_configs'} lacks {', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}, which the TIPC configs train with: "
                f"run rexnet-plugin configs --dest {root / 'ppcls_configs'}")
    return None


def ppdet_destination_warning(dest, kind: str) -> str | None:
    """Checkout configs need PaddleDetection's configs/ beside them for their ``../`` bases."""
    configs = Path(dest).resolve().parent
    if kind == PPDET_CHECKOUT and not (configs / "runtime.yml").is_file():
        return (f"{configs} does not look like PaddleDetection's configs/ folder (no "
                f"runtime.yml): the _BASE_ paths (../faster_rcnn/..., ../picodet/...) will "
                f"not resolve. Use --dest <PaddleDetection>/configs/rexnet, or --standalone "
                f"for the one-file configs.")
    return None


def print_report(report: dict[str, list[Path]], instead: str) -> int:
    """Print what a copy did; 1 if edited files were kept, else 0."""
    kept = ": it differs from the shipped config (edited?); not overwritten"
    for key, label, note in (("written", "wrote    ", ""), ("unchanged", "unchanged", ""),
                             ("kept", "KEPT     ", kept)):
        for path in report[key]:
            print(f"{label} {path}{note}")
    if report["kept"]:
        print(f"{len(report['kept'])} file(s) kept as they are. Rerun with --force to replace "
              f"them with the shipped configs (your changes would be lost), or {instead} "
              f"instead of editing.")
    return 1 if report["kept"] else 0
