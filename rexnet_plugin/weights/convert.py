"""``rexnet-plugin convert SRC DST``: any ReXNet checkpoint to .pdparams or .safetensors.

The source can be a .pdparams, .safetensors or PyTorch .pth file in the
Paddle, official PyTorch or timm layout; the output uses the canonical
Paddle layout (what ``paddle.load`` + ``set_state_dict`` and PaddleClas's
``pretrained_model`` expect), or the official PyTorch names with
``--layout official`` for a .safetensors file PyTorch users can load.
Before writing, the weights are checked against the variant they are for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .formats import read_checkpoint, write_checkpoint
from .errors import WeightsError
from ..files import ensure_writable_dir
from ..model import ReXNet
from ..zoo import VARIANTS, get_variant
from .checks import CheckpointInfo, check_state_dict, inspect_state, non_float_tensors
from .layouts import canonical_state, to_official

OUTPUT_LAYOUTS = ("paddle", "official")


@dataclass(frozen=True)
class ConversionReport:
    src: Path
    src_format: str
    src_layout: str
    dst: Path
    dst_format: str
    dst_layout: str
    info: CheckpointInfo
    tensors: int
    dropped: int  # num_batches_tracked counters, which Paddle does not keep
    checked_against: str | None  # the variant whose model the weights were checked on

    def __str__(self) -> str:
        check = (f"checked against a {self.checked_against} model: every key and shape fits"
                 if self.checked_against else
                 "not checked against a model (not a named variant; pass --variant to check)")
        return "\n".join([
            f"read      {self.src} ({self.src_format}, {self.src_layout} layout)",
            f"variant   {self.info.describe()}",
            f"tensors   {self.tensors} converted"
            + (f" ({self.dropped} num_batches_tracked dropped)" if self.dropped else ""),
            f"check     {check}",
            f"wrote     {self.dst} ({self.dst_format}, {self.dst_layout} layout)",
        ])


def convert(src: str | os.PathLike, dst: str | os.PathLike, variant: str | None = None,
            src_format: str | None = None, layout: str = "paddle",
            force: bool = False) -> ConversionReport:
    """Convert ``src`` to ``dst`` (format from its suffix); see the module docstring."""
    src, dst = Path(src), Path(dst)
    if layout not in OUTPUT_LAYOUTS:
        raise WeightsError(f"layout={layout!r}: expected one of {', '.join(OUTPUT_LAYOUTS)}")
    if layout == "official" and dst.suffix.lower() != ".safetensors":
        raise WeightsError(f"--layout official is for .safetensors files read by PyTorch; "
                           f"{dst.name} should end in .safetensors")
    if dst.exists() and not force:
        raise WeightsError(f"{dst} already exists; pass --force to replace it")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise WeightsError(f"{dst} is the source file; write to another path")
    if variant is not None:
        variant = get_variant(variant).name

    raw, src_fmt = read_checkpoint(src, src_format)
    state, src_layout = canonical_state(raw, str(src))
    dropped = sum(k.endswith("num_batches_tracked") for k in raw)
    info = inspect_state(state)

    checked = variant or info.variant
    if checked is not None:
        model = ReXNet(**VARIANTS[checked].arch, class_num=info.class_num or None)
        check_state_dict(model, state, str(src))
    elif bad := non_float_tensors(state):
        raise WeightsError(f"{src}: {', '.join(bad[:5])} hold "
                           f"{', '.join(sorted({str(state[k].dtype) for k in bad}))} values; "
                           f"weights must be floating point, so the file was written wrongly")

    # Paddle models are float32, and paddle's set_state_dict refuses other
    # float dtypes; float16/bfloat16 sources widen losslessly.
    state = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
             for k, v in state.items()}
    out = state if layout == "paddle" else to_official(state)
    ensure_writable_dir(dst.parent, "output folder")
    from .. import __version__
    dst_fmt = write_checkpoint(out, dst, metadata={
        "layout": layout, "variant": checked or "", "source": src.name,
        "converted_by": f"rexnet-plugin {__version__}"})
    return ConversionReport(src, src_fmt, src_layout, dst, dst_fmt, layout, info,
                            len(out), dropped, checked)
