"""What a canonical state dict is (variant, class count), and whether it fits a model."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

import numpy as np

from ..plan import STEM_INDEX_END, channel_plan
from ..zoo import KINDS, VARIANTS
from .errors import WeightsError, WrongVariantError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signature:
    """The shape facts that tell ReXNet variants apart."""
    stem_channels: int
    block_channels: tuple[int, ...]
    head_channels: int
    has_se: bool


def plan_signature(plan) -> Signature:
    return Signature(plan.stem_channels, tuple(b.out_channels for b in plan.blocks),
                     plan.head_channels, any(b.use_se for b in plan.blocks))


@functools.lru_cache(maxsize=None)
def _variant_of(sig: Signature) -> str | None:
    """The named variant with this signature, if any."""
    return next((n for n, v in VARIANTS.items() if plan_signature(channel_plan(**v.arch)) == sig),
                None)


def variant_of_plan(plan) -> str | None:
    return _variant_of(plan_signature(plan))


@dataclass(frozen=True)
class CheckpointInfo:
    """What the shapes of a canonical state dict say it is."""
    signature: Signature
    class_num: int  # 0 for a headless checkpoint
    variant: str | None  # the named variant whose channel plan matches

    @property
    def kind(self) -> str | None:  # "v1", "lite" or "r"
        return VARIANTS[self.variant].kind if self.variant else None

    def describe(self) -> str:
        s = self.signature
        return _describe(self.variant, self.class_num, f"a ReXNet of none of the named variants "
                         f"(stem {s.stem_channels}, {len(s.block_channels)} blocks, head "
                         f"{s.head_channels}, {'with' if s.has_se else 'without'} SE")


def _describe(variant: str | None, class_num: int, otherwise: str) -> str:
    """"ReXNetR_2_0 (ReXNet-R, timm's rexnetr_200, width 2.0, 1000 classes)"."""
    classes = f"{class_num} classes" if class_num else "no classifier"
    if variant is None:
        return f"{otherwise}, {classes})"
    v = VARIANTS[variant]
    timm = f", timm's {v.timm_name}" if v.timm_name else ""
    return f"{variant} ({KINDS[v.kind]}{timm}, width {v.width_mult}, {classes})"


def inspect_state(state: dict) -> CheckpointInfo:
    """Infer width, kind (V1, lite, R) and class count of a canonical state dict."""
    shape, blocks, b = {k: np.shape(v) for k, v in state.items()}, [], STEM_INDEX_END
    while f"features.{b}.out.0.weight" in shape:
        bn_means = [int(m.group(1)) for k in shape
                    if (m := re.fullmatch(rf"features\.{b}\.out\.(\d+)\._mean", k))]
        blocks.append(shape[f"features.{b}.out.{max(bn_means)}._mean"][0] if bn_means else 0)
        b += 1
    head = shape.get(f"features.{b}.weight", (0,))[0]
    has_se = any(re.fullmatch(r"features\.\d+\.out\.\d+\.fc\.0\.weight", k) for k in shape)
    sig = Signature(shape["features.0.weight"][0], tuple(blocks), head, has_se)
    return CheckpointInfo(sig, _class_num(shape), _variant_of(sig))


def _class_num(shapes: dict) -> int:
    """The classifier's class count (its last 4-d ``output.N.weight``); 0 without one."""
    heads = [int(m.group(1)) for k in shapes
             if (m := re.fullmatch(r"output\.(\d+)\.weight", k)) and len(shapes[k]) == 4]
    return shapes[f"output.{max(heads)}.weight"][0] if heads else 0


def describe_model(model) -> str:
    return _describe(variant_of_plan(model.plan), model.class_num,
                     f"a model ({KINDS[model.plan.kind]}, width {model.width_mult}")


def _key_report(missing, unexpected, conflicts, shapes, own, limit=10) -> list[str]:
    lines = [f"  {what} keys ({len(keys)}): {', '.join(keys[:limit])}"
             + (" ..." if len(keys) > limit else "")
             for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    lines += [f"  shape conflict at {k}: checkpoint {shapes[k]}, model {own[k]}"
              for k in conflicts[:limit]]
    return lines + [f"  ... and {len(conflicts) - limit} more shape conflicts"] * (
        len(conflicts) > limit)


def _dtype(value) -> str:
    return str(value.dtype).replace("paddle.", "")  # a paddle or numpy dtype


def _is_float(value) -> bool:
    return _dtype(value) == "bfloat16" or np.issubdtype(np.dtype(_dtype(value)), np.floating)


def non_float_tensors(state: dict) -> list[str]:
    """Keys of non-float tensors: every ReXNet tensor is a float, so these mean a bad file."""
    return sorted(k for k, v in state.items() if not _is_float(np.asarray(v)))


def check_state_dict(model, state: dict, source: str, skip_head: bool = False) -> dict:
    """``state`` (without a differing classifier if ``skip_head``) if it fits ``model``, else
    one error naming what differs and the fix."""
    own_tensors = model.state_dict()
    own = {k: list(v.shape) for k, v in own_tensors.items()}
    shapes = {k: list(np.shape(v)) for k, v in state.items()}
    skipped = []
    if skip_head:
        skipped = [k for k in state if k.startswith("output.") and shapes[k] != own.get(k)]
        state = {k: v for k, v in state.items() if k not in skipped}
        shapes = {k: shapes[k] for k in state}
        own = {k: v for k, v in own.items() if not k.startswith("output.") or k in state}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    conflicts = sorted(k for k in set(own) & set(shapes) if own[k] != shapes[k])
    wrong_dtype = sorted(k for k in set(own) & set(shapes)
                         if _is_float(own_tensors[k]) != _is_float(np.asarray(state[k])))
    if not (missing or unexpected or conflicts or wrong_dtype):
        if skipped:
            logger.info("%s: classifier not loaded (%s); it keeps its initial weights",
                        source, ", ".join(skipped))
        return state
    try:
        info = inspect_state(state)
    except (KeyError, IndexError, ValueError):  # too broken to say what it is
        info = None
    if info is not None and info.signature != plan_signature(model.plan):
        fix = f"create_model('{info.variant}')" if info.variant else "its width"
        raise WrongVariantError("\n".join(
            [f"{source} holds {info.describe()}, but the model is {describe_model(model)}; pass "
             f"this variant's checkpoint, or build {fix}. First differences:"]
            + _key_report(missing, unexpected, conflicts, shapes, own, limit=3)))
    lines = [f"{source} does not fit the model {describe_model(model)}:"]
    lines += _key_report(missing, unexpected, conflicts, shapes, own)
    lines += [f"  dtype conflict at {k}: checkpoint {_dtype(np.asarray(state[k]))}, model "
              f"{_dtype(own_tensors[k])}" for k in wrong_dtype[:10]]
    if wrong_dtype:
        lines.append("  Weights must be floating point: the file was written wrongly.")
    if any(k.startswith("output.") for k in missing + unexpected + conflicts):
        lines.append(_classifier_advice(model, own, shapes))
    raise WeightsError("\n".join(lines))


def _classifier_advice(model, own: dict, shapes: dict) -> str:
    own_head = {k for k in own if k.startswith("output.")}
    ckpt_head = {k for k in shapes if k.startswith("output.")}
    skip = "or load with skip_head=True to keep the model's new classifier"
    if not ckpt_head:
        return f"  The checkpoint has no classifier: build the model with class_num=0, {skip}."
    if own_head and ckpt_head < own_head:
        return (f"  The checkpoint's classifier is incomplete (no "
                f"{', '.join(sorted(own_head - ckpt_head))}): use a complete checkpoint, {skip}.")
    classes = _class_num(shapes) or "?"
    return (f"  The classifier differs (checkpoint: {classes} classes, model: {model.class_num}):"
            f" set class_num={classes} (--class-num {classes} on the rexnet-plugin command line) "
            f"to use it, {skip}.")


def ready_to_set(model, state: dict) -> dict:
    """``state`` cast to the model's dtype, plus the model's tensors it lacks (a skipped head)."""
    own = model.state_dict()
    out = {k: v for k, v in own.items() if k not in state}
    for key, value in state.items():
        value = np.asarray(value)
        floating = np.issubdtype(value.dtype, np.floating)
        out[key] = value.astype(_dtype(own[key]), copy=False) if floating else value
    return out
