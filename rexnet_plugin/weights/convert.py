"""``rexnet-plugin convert SRC DST``: any ReXNet checkpoint, checked, to .pdparams/.safetensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..files import ensure_writable_dir
from ..model import ReXNet
from ..zoo import VARIANTS, get_variant
from .checks import check_state_dict, inspect_state, non_float_tensors
from .errors import WeightsError
from .formats import read_checkpoint, write_checkpoint
from .layouts import canonical_state, to_official


def convert(src: str | os.PathLike, dst: str | os.PathLike, variant: str | None = None,
            src_format: str | None = None, layout: str = "paddle", force: bool = False) -> str:
    """Convert ``src`` to ``dst`` (format from its suffix); return a report of what was done."""
    src, dst = Path(src), Path(dst)
    if layout not in ("paddle", "official"):
        raise WeightsError(f"layout={layout!r}: expected 'paddle' or 'official'")
    if layout == "official" and dst.suffix.lower() != ".safetensors":
        raise WeightsError(f"--layout official is for .safetensors files read by PyTorch; "
                           f"{dst.name} should end in .safetensors")
    if dst.exists() and not force:
        raise WeightsError(f"{dst} already exists; pass --force to replace it")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise WeightsError(f"{dst} is the source file; write to another path")
    raw, src_fmt = read_checkpoint(src, src_format)
    state, src_layout = canonical_state(raw, str(src))
    info = inspect_state(state)
    checked = get_variant(variant).name if variant else info.variant
    if checked is not None:
        check_state_dict(ReXNet(**VARIANTS[checked].arch, class_num=info.class_num or None),
                         state, str(src))
    elif bad := non_float_tensors(state):
        raise WeightsError(f"{src}: {', '.join(f'{k} ({state[k].dtype})' for k in bad[:5])} are "
                           f"not floating point; the file was written wrongly")
    # Paddle models are float32 and refuse other float dtypes; narrower floats widen exactly.
    state = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
             for k, v in state.items()}
    out = state if layout == "paddle" else to_official(state)
    ensure_writable_dir(dst.parent, "output folder")
    from .. import __version__
    dst_fmt = write_checkpoint(out, dst, metadata={
        "layout": layout, "variant": checked or "", "source": src.name,
        "converted_by": f"rexnet-plugin {__version__}"})
    dropped = sum(k.endswith("num_batches_tracked") for k in raw)
    return "\n".join([
        f"read      {src} ({src_fmt}, {src_layout} layout)", f"variant   {info.describe()}",
        f"tensors   {len(out)} converted" + (f" ({dropped} num_batches_tracked dropped)"
                                               if dropped else ""),
        f"check     " + (f"checked against a {checked} model: every key and shape fits" if checked
                         else "not checked against a model (not a named variant; pass --variant)"),
        f"wrote     {dst} ({dst_fmt}, {layout} layout)"])
