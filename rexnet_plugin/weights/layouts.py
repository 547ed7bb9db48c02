"""Key layouts (Paddle, official PyTorch, timm) and renaming them to the canonical one,
Paddle's (BN ``_mean``/``_variance``), which ``ReXNet.state_dict()`` has."""

from __future__ import annotations

import re

import numpy as np

from ..plan import STEM_INDEX_END
from .errors import NotReXNetError

_MODULE_PREFIX = "module."  # torch DataParallel / DistributedDataParallel


def _strip_module_prefix(state: dict) -> dict:
    if state and all(k.startswith(_MODULE_PREFIX) for k in state):
        return {k[len(_MODULE_PREFIX):]: v for k, v in state.items()}
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
    """timm ``rexnet_*``/``rexnetr_*`` names -> official ones. Official blocks are
    Sequentials whose positions depend on the parts a block has (expansion, SE), so
    keys are placed by rule; ``head.fc.weight`` [C, F] becomes ``output.1.weight`` [C, F, 1, 1]."""
    state = _strip_module_prefix(state)
    blocks = sorted({int(m.group(1)) for k in state
                     if (m := re.match(r"features\.(\d+)\.conv_pwl\.", k))})
    last = max(blocks, default=-1) + 1  # timm's final 1x1 ConvNormAct
    has_exp = {b for b in blocks if f"features.{b}.conv_exp.conv.weight" in state}
    has_se = {b for b in blocks if f"features.{b}.se.fc1.weight" in state}

    def block_positions(b):
        """timm module -> index in the official block's ``out`` Sequential."""
        pos, i = {}, 0
        if b in has_exp:
            pos["conv_exp"] = i
            i += 3  # conv, BN, SiLU
        pos["conv_dw"] = i
        i += 2  # conv, BN
        if b in has_se:
            pos["se"] = i
            i += 1
        i += 1  # ReLU6
        pos["conv_pwl"] = i
        return pos

    se_names = {"fc1": "fc.0", "bn": "fc.1", "fc2": "fc.3"}
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"stem\.(conv|bn)\.(\w+)", key):
            new = f"features.{0 if m.group(1) == 'conv' else 1}.{m.group(2)}"
        elif m := re.fullmatch(r"features\.(\d+)\.(conv|bn)\.(\w+)", key):
            if int(m.group(1)) != last:
                raise NotReXNetError(f"unexpected timm key {key!r}: not a ReXNet layout")
            new = f"features.{STEM_INDEX_END + last + (m.group(2) == 'bn')}.{m.group(3)}"
        elif m := re.fullmatch(r"features\.(\d+)\.(conv_exp|conv_dw|conv_pwl)\.(conv|bn)\.(\w+)", key):
            b, module, part, tensor = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            i = block_positions(b)[module] + (part == "bn")
            new = f"features.{STEM_INDEX_END + b}.out.{i}.{tensor}"
        elif m := re.fullmatch(r"features\.(\d+)\.se\.(fc1|bn|fc2)\.(\w+)", key):
            b = int(m.group(1))
            new = (f"features.{STEM_INDEX_END + b}.out.{block_positions(b)['se']}."
                   f"{se_names[m.group(2)]}.{m.group(3)}")
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
    old = next((o for o in table if key.endswith(o)), None)
    return key[:-len(old)] + table[old] if old else key


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
        keys = list(state)
        raise NotReXNetError(
            f"{source} is not a ReXNet checkpoint: it has none of the keys of ReXNet's "
            f"layouts (Paddle/official 'features.0.weight' with BN statistics, timm "
            f"'stem.conv.weight'). Its first keys: {', '.join(keys[:6])}"
            f"{' ...' if len(keys) > 6 else ''}. Pass a ReXNet checkpoint.")
    canonical = to_canonical(state)
    stem = canonical.get("features.0.weight")
    if np.ndim(stem) != 4 or tuple(np.shape(stem)[1:]) != (3, 3, 3) \
            or f"features.{STEM_INDEX_END}.out.0.weight" not in canonical:
        raise NotReXNetError(
            f"{source} has ReXNet-like key names but not ReXNet's structure (stem conv "
            f"{list(np.shape(stem))}, expected [C, 3, 3, 3] followed by bottlenecks at "
            f"features.{STEM_INDEX_END}); it is not a ReXNet checkpoint.")
    return canonical, layout

