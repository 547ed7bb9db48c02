"""``rexnet-plugin demo``: train a ReXNet offline on bundled digits (or --data), then
export, quantize and predict with the package's public pieces (docs/demo.md)."""

from .data import DataError, DemoError, DemoInterrupted
from .run import DemoSettings, run_demo

__all__ = ["DataError", "DemoError", "DemoInterrupted", "DemoSettings", "run_demo"]
