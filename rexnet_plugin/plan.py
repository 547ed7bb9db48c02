"""ReXNet's channel plan as a pure function (no paddle): channels grow linearly per block;
V1 rounds to integers, lite to multiples of 8, ReXNet-R (timm's) to multiples of ``ch_div``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

# Narrower plans degenerate; 6.0 (twice the widest published) stops timm-style 100 (= 1.0).
MIN_WIDTH_MULT, MAX_WIDTH_MULT = 0.5, 6.0
MAX_DEPTH_MULT = 4.0
R_CH_DIVS = (8, 16)  # timm: rexnetr_100 ... rexnetr_200 use 8, rexnetr_300 16

# Per stage of the official design: blocks, first stride, SE (V1 only).
_STAGE_BLOCKS = (1, 2, 2, 3, 3, 5)
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2)
_STAGE_USE_SE = (False, False, True, True, True, True)
_STEM_CHANNELS, _FIRST_BLOCK_CHANNELS, _HEAD_CHANNELS = 32, 16, 1280
_V1_CHANNEL_GROWTH, _LITE_CHANNEL_GROWTH = 180, 164  # the official final_ch
STEM_INDEX_END = 3  # features[0:3] = stem conv, BN, activation
# Output strides of the stages a feature pyramid takes (timm's feature_info adds 2).
PYRAMID_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class BlockSpec:
    in_channels: int
    out_channels: int
    expand_ratio: int
    stride: int
    use_se: bool
    output_stride: int  # cumulative
    expanded_channels: int
    se_channels: int = 0

    @property
    def use_shortcut(self) -> bool:  # the official rule: x is added to the first channels
        return self.stride == 1 and self.in_channels <= self.out_channels


@dataclass(frozen=True)
class ChannelPlan:
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int
    lite: bool
    ch_div: int | None = None

    @property
    def kind(self) -> str:  # a key of zoo.KINDS
        return "lite" if self.lite else "r" if self.ch_div else "v1"

    @property
    def stage_indices(self) -> dict[int, int]:  # stride -> index in features of its last block
        return {b.output_stride: STEM_INDEX_END + i for i, b in enumerate(self.blocks)}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor``, losing at most 10% (lite's and timm's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_arguments(width_mult, depth_mult, lite, use_se, se_ratio, ch_div) -> None:
    """One clear ValueError for any argument channel_plan cannot build."""
    if not _is_number(width_mult) or not MIN_WIDTH_MULT <= width_mult <= MAX_WIDTH_MULT:
        hint = (f" timm's names give the width in hundredths (rexnet_100 is width 1.0): "
                f"did you mean width_mult={width_mult / 100:g}?"
                if _is_number(width_mult) and width_mult >= 50 else "")
        raise ValueError(f"width_mult={width_mult!r} is not supported: ReXNet needs a number "
                         f"with {MIN_WIDTH_MULT} <= width_mult <= {MAX_WIDTH_MULT} (published: "
                         f"0.9 to 3.0; 6.0 is already ~140 M parameters).{hint}")
    if not _is_number(depth_mult) or not 0 < depth_mult <= MAX_DEPTH_MULT:
        raise ValueError(f"depth_mult={depth_mult!r} is not supported: it must be a number "
                         f"with 0 < depth_mult <= {MAX_DEPTH_MULT} (1.0 is the official depth).")
    for name, value in (("lite", lite), ("use_se", use_se)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: expected True or False.")
    if not isinstance(se_ratio, Integral) or isinstance(se_ratio, bool) or se_ratio < 1:
        hint = (" (timm writes the SE width as a fraction, se_ratio=1/12; here it is "
                "the reduction, 12)" if _is_number(se_ratio) and 0 < se_ratio < 1 else "")
        raise ValueError(f"se_ratio={se_ratio!r}: expected a positive integer, the reduction "
                         f"of the squeeze-excite bottleneck (official: 12){hint}.")
    if ch_div is not None and lite:
        raise ValueError(f"ch_div={ch_div!r} with lite=True: ch_div makes ReXNet-R (timm's "
                         f"rounded V1); ReXNet-lite has its own rounding. Pass one of them.")
    if ch_div is not None and (isinstance(ch_div, bool) or ch_div not in R_CH_DIVS):
        raise ValueError(f"ch_div={ch_div!r} is not a ReXNet-R divisor: accepted values are "
                         f"{', '.join(map(str, R_CH_DIVS))} (timm's), or None for ReXNet V1.")


def channel_plan(width_mult: float = 1.0, depth_mult: float = 1.0,
                 lite: bool = False, use_se: bool = True, se_ratio: int = 12,
                 ch_div: int | None = None, input_ch: float = _FIRST_BLOCK_CHANNELS,
                 final_ch: float | None = None) -> ChannelPlan:
    """Every block's channels, strides and SE width; channels grow by ``final_ch`` in total."""
    check_arguments(width_mult, depth_mult, lite, use_se, se_ratio, ch_div)
    stage_blocks = [math.ceil(n * depth_mult) for n in _STAGE_BLOCKS]
    num_blocks = sum(stage_blocks)
    strides, ses, ratios = [], [], []
    for stage, n in enumerate(stage_blocks):
        strides += [_STAGE_STRIDES[stage]] + [1] * (n - 1)
        ses += [_STAGE_USE_SE[stage] and use_se and not lite] * n
        ratios += [1 if stage == 0 else 6] * n

    # Below width 1 the official code divides the base channels by the width,
    # so the stem and first block keep their unscaled size.
    narrow = width_mult < 1.0
    stem = _STEM_CHANNELS / width_mult if narrow else _STEM_CHANNELS
    planes = input_ch / width_mult if narrow else input_ch
    if lite:
        def scale(c):
            return make_divisible(int(round(c * width_mult)))
        growth = (final_ch or _LITE_CHANNEL_GROWTH) / (num_blocks - 1)
    else:
        def scale(c):
            c = round(c * width_mult)
            return make_divisible(c, ch_div) if ch_div else int(c)
        growth = (final_ch or _V1_CHANNEL_GROWTH) / num_blocks

    stem_channels = scale(stem)
    in_channels, out_channels = [stem_channels], [scale(planes)]
    for _ in range(1, num_blocks):
        in_channels.append(scale(planes))
        planes += growth
        out_channels.append(scale(planes))

    blocks, output_stride = [], 2
    for cin, cout, t, s, se in zip(in_channels, out_channels, ratios, strides, ses):
        output_stride *= s
        hidden = make_divisible(round(cin * t), ch_div) if ch_div and t != 1 else cin * t
        # timm's R: the SE width as a fraction of the block's, then rounded
        se_channels = (0 if not se else hidden // se_ratio if not ch_div
                       else make_divisible(int(hidden * (1 / se_ratio)), ch_div))
        if se and se_channels < 1:
            raise ValueError(f"se_ratio={se_ratio} leaves a squeeze-excite layer of {hidden} "
                             f"channels with none; use se_ratio <= {hidden} (official: 12) or "
                             f"use_se=False.")
        blocks.append(BlockSpec(cin, cout, t, s, se, output_stride, hidden, se_channels))

    if lite:
        head = int(_HEAD_CHANNELS * width_mult) if width_mult > 1 else _HEAD_CHANNELS
    elif ch_div:
        head = make_divisible(_HEAD_CHANNELS * width_mult, ch_div)
    else:
        head = int(_HEAD_CHANNELS * width_mult)
    return ChannelPlan(stem_channels, tuple(blocks), head, lite, ch_div)
