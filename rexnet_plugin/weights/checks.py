"""What a canonical state dict is (variant, class count), and whether it fits a model:
one error naming the checkpoint's variant, or its missing/unexpected keys and conflicts."""

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

    def describe(self) -> str:
        return (f"stem {self.stem_channels}, {len(self.block_channels)} blocks ending at "
                f"{self.block_channels[-1] if self.block_channels else '?'} channels, head "
                f"{self.head_channels}, {'with' if self.has_se else 'without'} SE")


def plan_signature(plan) -> Signature:
    return Signature(plan.stem_channels, tuple(b.out_channels for b in plan.blocks),
                     plan.head_channels, any(b.use_se for b in plan.blocks))


@functools.lru_cache(maxsize=None)
def _variant_signatures() -> dict[str, Signature]:
    return {name: plan_signature(channel_plan(**v.arch)) for name, v in VARIANTS.items()}


def variant_of_plan(plan) -> str | None:
    """The named variant with this channel plan, if any."""
    sig = plan_signature(plan)
    return next((n for n, s in _variant_signatures().items() if s == sig), None)


@dataclass(frozen=True)
class CheckpointInfo:
    """What the shapes of a canonical state dict say it is."""
    signature: Signature
    class_num: int  # 0 for a headless checkpoint
    variant: str | None  # the named variant whose channel plan matches

    @property
    def lite(self) -> bool | None:
        return VARIANTS[self.variant].kind == "lite" if self.variant else None

    @property
    def kind(self) -> str | None:  # "v1", "lite" or "r"
        return VARIANTS[self.variant].kind if self.variant else None

    def describe(self) -> str:
        return _describe(self.variant, self.class_num, "a ReXNet that is none of the named "
                         f"variants ({self.signature.describe()}")


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
    shape = {k: np.shape(v) for k, v in state.items()}
    blocks = []
    b = STEM_INDEX_END
    while f"features.{b}.out.0.weight" in shape:
        bn_means = [int(m.group(1)) for k in shape
                    if (m := re.fullmatch(rf"features\.{b}\.out\.(\d+)\._mean", k))]
        blocks.append(shape[f"features.{b}.out.{max(bn_means)}._mean"][0] if bn_means else 0)
        b += 1
    head = shape.get(f"features.{b}.weight", (0,))[0]
    has_se = any(re.fullmatch(r"features\.\d+\.out\.\d+\.fc\.0\.weight", k) for k in shape)
    sig = Signature(shape["features.0.weight"][0], tuple(blocks), head, has_se)
    classifier = [int(m.group(1)) for k in shape
                  if (m := re.fullmatch(r"output\.(\d+)\.weight", k)) and len(shape[k]) == 4]
    class_num = shape[f"output.{max(classifier)}.weight"][0] if classifier else 0
    variant = next((n for n, s in _variant_signatures().items() if s == sig), None)
    return CheckpointInfo(sig, class_num, variant)


def describe_model(model) -> str:
    return _describe(variant_of_plan(model.plan), model.class_num,
                     f"a model ({KINDS[model.plan.kind]}, width {model.width_mult}")


def _key_report(missing, unexpected, conflicts, shapes, own, limit=10) -> list[str]:
    lines = [f"  {what} keys ({len(keys)}): {', '.join(keys[:limit])}"
             + (" ..." if len(keys) > limit else "")
             for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    for k in conflicts[:limit]:
        lines.append(f"  shape conflict at {k}: checkpoint {shapes[k]}, model {own[k]}")
    if len(conflicts) > limit:
        lines.append(f"  ... and {len(conflicts) - limit} more shape conflicts")
    return lines


def _is_float(dtype) -> bool:
    name = str(dtype).replace("paddle.", "")  # a paddle or numpy dtype
    return name == "bfloat16" or np.issubdtype(np.dtype(name), np.floating)


def non_float_tensors(state: dict) -> list[str]:
    """Keys of non-float tensors: every ReXNet tensor is a float, so these mean a bad file."""
    return sorted(k for k, v in state.items() if not _is_float(np.asarray(v).dtype))


def check_state_dict(model, state: dict, source: str, skip_head: bool = False) -> dict:
    """The state to load, after comparing keys, shapes and float-ness with ``model``; one
    readable error otherwise. ``skip_head``: leave out classifier tensors that differ."""
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
                         if _is_float(own_tensors[k].dtype) != _is_float(np.asarray(state[k]).dtype))
    if not (missing or unexpected or conflicts or wrong_dtype):
        if skipped:
            logger.info("%s: classifier not loaded (%s); it keeps its initial weights",
                        source, ", ".join(skipped))
        return state
    dtype_lines = [f"  dtype conflict at {k}: checkpoint {np.asarray(state[k]).dtype}, model "
                   f"{str(own_tensors[k].dtype).replace('paddle.', '')}" for k in wrong_dtype[:10]]
    if dtype_lines:
        dtype_lines.append("  Weights must be floating point (float16, bfloat16, float32 and "
                           "float64 are cast to the model's dtype); integer or bool tensors mean "
                           "the file was written wrongly.")
    try:
        info = inspect_state(state)
    except (KeyError, IndexError, ValueError):  # too broken to say what it is
        info = None
    if info is not None and info.signature != plan_signature(model.plan):
        fix = (f"build {info.variant} instead (create_model('{info.variant}'))"
               if info.variant else "build a ReXNet with the checkpoint's width")
        raise WrongVariantError("\n".join(
            [f"{source} holds {info.describe()}, but the model is {describe_model(model)}. "
             f"Pass the checkpoint made for this variant, or {fix}. First differences:"]
            + _key_report(missing, unexpected, conflicts, shapes, own, limit=3)))
    lines = [f"{source} does not fit the model {describe_model(model)}:"] + _key_report(
        missing, unexpected, conflicts, shapes, own) + dtype_lines
    advice = _classifier_advice(model, own, shapes, missing + unexpected + conflicts)
    raise WeightsError("\n".join(lines + ([advice] if advice else [])))


def _classifier_advice(model, own: dict, shapes: dict, differing: list) -> str | None:
    if not any(k.startswith("output.") for k in differing):
        return None
    own_head = {k for k in own if k.startswith("output.")}
    ckpt_head = {k for k in shapes if k.startswith("output.")}
    skip = ("or load with skip_head=True to keep the model's new classifier and load "
            "everything else")
    if not ckpt_head:
        return (f"  The checkpoint has no classifier (a backbone): build the model with "
                f"class_num=0 for features only, {skip}.")
    if own_head and ckpt_head < own_head:
        return (f"  The checkpoint's classifier is incomplete: it lacks "
                f"{', '.join(sorted(own_head - ckpt_head))}. The file is damaged or was "
                f"saved from part of a model; use a complete checkpoint, {skip}.")
    weights = [k for k in ckpt_head if k.endswith(".weight") and len(shapes[k]) == 4]
    classes = shapes[max(weights)][0] if weights else "?"
    return (f"  The classifier differs (checkpoint: {classes} classes, model: "
            f"{model.class_num}): set class_num={classes} (--class-num {classes} on the "
            f"rexnet-plugin command line) to use its classifier, {skip}.")


def ready_to_set(model, state: dict) -> dict:
    """The full state for ``set_state_dict``: floats cast to the model's dtype, and the
    model's own tensors where the checkpoint has none (a skipped head)."""
    own = model.state_dict()
    out = {k: v for k, v in own.items() if k not in state}
    for key, value in state.items():
        target = np.dtype(str(own[key].dtype).replace("paddle.", ""))
        value = np.asarray(value)
        out[key] = value.astype(target) if value.dtype != target and \
            np.issubdtype(value.dtype, np.floating) else value
    return out

