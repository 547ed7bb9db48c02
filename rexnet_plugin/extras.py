"""What a command needs beyond Paddle, checked before long work, with the pip command to add it."""

from __future__ import annotations

import importlib.util
import json
import sys
from urllib.parse import unquote, urlparse

# module -> (distribution, the extra that brings it; None: a base dependency)
_PROVIDERS = {"paddle2onnx": ("paddle2onnx", None), "onnx": ("onnx", None),
              "onnxruntime": ("onnxruntime", None), "torch": ("torch", "torch"),
              "paddlex": ("paddlex", "paddlex"), "openvino": ("openvino", "openvino"),
              "ppdet": ("paddledet", "detection")}
# Base dependencies that have no wheel for some Pythons (pyproject.toml's markers).
_NO_WHEEL = {"paddle2onnx": (3, 13)}


class MissingDependencyError(ImportError):
    """A package a command needs is missing; the message gives the fix."""


def install_command(extra: str | None = None) -> str:
    """``pip install`` of this package (with ``extra``) from where PEP 610's direct_url.json
    says it came, else from the index."""
    from importlib import metadata
    suffix = f"[{extra}]" if extra else ""
    try:
        record = json.loads(metadata.distribution("rexnet-plugin").read_text("direct_url.json")
                            or "null")
    except (metadata.PackageNotFoundError, ValueError):
        record = None
    url = record.get("url", "") if isinstance(record, dict) else ""
    if url.startswith("file://"):
        path = unquote(urlparse(url).path)
        editable = (record.get("dir_info") or {}).get("editable", False)
        return f'pip install {"-e " if editable else ""}"{path}{suffix}"'
    return f'pip install "rexnet-plugin{suffix}"'


def missing(*modules: str) -> str | None:
    """Why ``modules`` cannot be imported and how to fix it, or None if they can."""
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    for module in absent:
        since = _NO_WHEEL.get(module)
        if since and sys.version_info[:2] >= since:
            return (f"{module} has no wheel for Python {sys.version_info[0]}."
                    f"{sys.version_info[1]}; use Python 3.9 to {since[0]}.{since[1] - 1} "
                    f"for this step")
    extras = {_PROVIDERS.get(m, (m, None))[1] for m in absent}
    names = ", ".join(_PROVIDERS.get(m, (m, None))[0] for m in absent)
    extra = next((e for e in extras if e), None)
    return f"{names} {'is' if len(absent) == 1 else 'are'} not installed: {install_command(extra)}"


def require(what: str, *modules: str) -> None:
    """Raise MissingDependencyError naming ``what`` needs ``modules`` and the fix."""
    reason = missing(*modules)
    if reason:
        raise MissingDependencyError(f"{what} needs {', '.join(modules)}: {reason}")
