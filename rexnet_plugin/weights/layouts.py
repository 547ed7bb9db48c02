"""Key layouts (Paddle, official PyTorch, timm) renamed to the canonical one, ``ReXNet``'s."""

from __future__ import annotations

import re

import numpy as np

from ..plan import STEM_INDEX_END
from .errors import NotReXNetError


def _strip_module_prefix(state: dict) -> dict:
    """Without the ``module.`` of torch's DataParallel / DistributedDataParallel."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def detect_layout(state: dict) -> str | None:
    """"paddle", "official", "timm", or None when the keys are not ReXNet's."""
    state = _strip_module_prefix(state)
    keys = state.keys()
    if "stem.conv.weight" in keys:  # timm's classifier is a Linear
        return "timm" if np.ndim(state.get("head.fc.weight", np.zeros((1, 1)))) == 2 else None
    if "features.0.weight" in keys:
        if any(k.endswith(("._mean", "._variance")) for k in keys):
            return "paddle"
        if any(k.endswith((".running_mean", ".running_var")) for k in keys):
            return "official"
    return None


def timm_to_official(state: dict) -> dict:
    """timm ``rexnet_*``/``rexnetr_*`` names -> official ones (positions by the block's parts)."""
    state = _strip_module_prefix(state)
    blocks = sorted({int(m.group(1)) for k in state
                     if (m := re.match(r"features\.(\d+)\.conv_pwl\.", k))})
    last = max(blocks, default=-1) + 1  # timm's final 1x1 ConvNormAct
    has_exp = {b for b in blocks if f"features.{b}.conv_exp.conv.weight" in state}
    has_se = {b for b in blocks if f"features.{b}.se.fc1.weight" in state}

    def positions(b):  # timm module -> index in the official block's ``out`` Sequential
        exp = 3 * (b in has_exp)  # conv_exp is conv, BN, SiLU; conv_dw conv, BN; ReLU6 before pwl
        return {"conv_exp": 0, "conv_dw": exp, "se": exp + 2, "conv_pwl": exp + 3 + (b in has_se)}

    se_names = {"fc1": "fc.0", "bn": "fc.1", "fc2": "fc.3"}
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"stem\.(conv|bn)\.(\w+)", key):
            new = f"features.{int(m.group(1) == 'bn')}.{m.group(2)}"
        elif (m := re.fullmatch(r"features\.(\d+)\.(conv|bn)\.(\w+)", key)) and \
                int(m.group(1)) == last:
            new = f"features.{STEM_INDEX_END + last + (m.group(2) == 'bn')}.{m.group(3)}"
        elif m := re.fullmatch(r"features\.(\d+)\.(?:(conv_exp|conv_dw|conv_pwl)\.(conv|bn)|"
                               r"se\.(fc1|bn|fc2))\.(\w+)", key):
            b, module, part, se_part, tensor = int(m.group(1)), *m.groups()[1:]
            pos = positions(b)
            inner = pos[module] + (part == "bn") if module else f"{pos['se']}.{se_names[se_part]}"
            new = f"features.{STEM_INDEX_END + b}.out.{inner}.{tensor}"
        elif key == "head.fc.weight":
            new, value = "output.1.weight", np.reshape(value, (*np.shape(value), 1, 1))
        elif key == "head.fc.bias":
            new = "output.1.bias"
        else:
            raise NotReXNetError(f"unexpected timm key {key!r}: not the layout of timm's "
                                 f"rexnet_* / rexnetr_* models")
        out[new] = value
    return out


_BN_TO_PADDLE = {".running_mean": "._mean", ".running_var": "._variance"}


def _rename_bn(key: str, table: dict) -> str:
    return next((key[:-len(o)] + n for o, n in table.items() if key.endswith(o)), key)


def to_canonical(state: dict) -> dict:
    """Any ReXNet layout -> the canonical one (no ``module.``, no ``num_batches_tracked``)."""
    state = _strip_module_prefix(state)
    if "stem.conv.weight" in state:
        state = timm_to_official(state)
    return {_rename_bn(k, _BN_TO_PADDLE): v for k, v in state.items()
            if not k.endswith("num_batches_tracked")}


def to_official(state: dict) -> dict:
    """Canonical names -> official PyTorch names."""
    return {_rename_bn(k, {v: o for o, v in _BN_TO_PADDLE.items()}): v for k, v in state.items()}


def canonical_state(state: dict, source: str) -> tuple[dict, str]:
    """(canonical state, layout it came in); NotReXNetError if it is not ReXNet."""
    layout = detect_layout(state)
    if layout is None:
        raise NotReXNetError(f"{source} is not a ReXNet checkpoint: it has none of the keys of "
                             f"ReXNet's layouts ('features.0.weight' with BN statistics, timm's "
                             f"'stem.conv.weight'). Its first keys: {', '.join(list(state)[:6])}")
    canonical = to_canonical(state)
    stem = canonical.get("features.0.weight")
    if np.ndim(stem) != 4 or tuple(np.shape(stem)[1:]) != (3, 3, 3) \
            or f"features.{STEM_INDEX_END}.out.0.weight" not in canonical:
        raise NotReXNetError(f"{source} has ReXNet-like key names but not ReXNet's structure "
                             f"(stem conv {list(np.shape(stem))}, not [C, 3, 3, 3] followed by "
                             f"bottlenecks at features.{STEM_INDEX_END})")
    return canonical, layout

