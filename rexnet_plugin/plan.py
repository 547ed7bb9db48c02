"""ReXNet's channel plan, as a pure function: no paddle, no framework.

The official design (NAVER's ``rexnetv1.py`` and ``rexnetv1_lite.py``): six
stages of inverted-residual blocks whose output channels grow linearly with
the block index (the paper's point). ``channel_plan()`` computes every
block's channels, strides and SE width; ``model.py`` builds the network
from it, and the weight checks compare checkpoints with it.

Three kinds share the design and differ only in how channels are rounded:

* ReXNet V1 (official): to the nearest integer.
* ReXNet-lite (official): to multiples of 8, with its own stem and head rules.
* ReXNet-R (timm's ``rexnetr_*``): V1 with every channel count (stem, blocks,
  expansion, SE, head) rounded to a multiple of ``ch_div``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

# Narrower than this and the channel plan degenerates (SE layers of 1-2
# channels); the official code never goes there either.
MIN_WIDTH_MULT = 0.5
# Twice the widest published model (3.0): about 4x its parameters (~140 M)
# and conv cost. Wider is no design anyone has trained, and a value like 100
# (timm's names say rexnet_100 for width 1.0) would try to allocate ~100 GB.
MAX_WIDTH_MULT = 6.0
# Four times the official depth: 64 blocks instead of 16.
MAX_DEPTH_MULT = 4.0
# The divisors of timm's ReXNet-R: 8 (rexnetr_100 ... rexnetr_200), 16 (rexnetr_300).
R_CH_DIVS = (8, 16)

# Per stage of the official design: blocks, first stride, SE on (V1 only).
_STAGE_BLOCKS = (1, 2, 2, 3, 3, 5)
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2)
_STAGE_USE_SE = (False, False, True, True, True, True)
_STEM_CHANNELS = 32
_FIRST_BLOCK_CHANNELS = 16  # official ``input_ch``
_HEAD_CHANNELS = 1280
_LITE_DIVISOR = 8
# The official ``final_ch``: how much the block channels grow in total.
_V1_CHANNEL_GROWTH = 180
_LITE_CHANNEL_GROWTH = 164
STEM_INDEX_END = 3  # features[0:3] = stem conv, BN, activation
# The output strides of the stages a feature pyramid takes (timm's
# feature_info adds the stride-2 output of the first block).
PYRAMID_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual bottleneck of the channel plan."""

    in_channels: int
    out_channels: int
    expand_ratio: int
    stride: int
    use_se: bool
    output_stride: int  # cumulative stride of the block's output
    expanded_channels: int  # of the depthwise conv
    se_channels: int = 0  # of the SE bottleneck; 0 without SE

    @property
    def use_shortcut(self) -> bool:
        # Official rule: the input is added to the first in_channels outputs.
        return self.stride == 1 and self.in_channels <= self.out_channels


@dataclass(frozen=True)
class ChannelPlan:
    """Everything the network's shape depends on, computed by channel_plan()."""

    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int
    lite: bool
    ch_div: int | None = None  # ReXNet-R's channel divisor; None for V1 and lite

    @property
    def kind(self) -> str:
        """"v1", "lite" or "r"."""
        return "lite" if self.lite else "r" if self.ch_div else "v1"

    @property
    def stage_indices(self) -> dict[int, int]:
        """Output stride -> index in ``features`` of the last block at it (2 ... 32)."""
        last = {}
        for i, block in enumerate(self.blocks):
            last[block.output_stride] = STEM_INDEX_END + i
        return dict(sorted(last.items()))


def make_divisible(value: float, divisor: int = _LITE_DIVISOR) -> int:
    """Round to a multiple of ``divisor`` without losing more than 10%.

    The rule of the official ReXNet-lite, of timm's ReXNet-R (and of
    MobileNet before them).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def check_arguments(width_mult, depth_mult, lite, use_se, se_ratio, ch_div) -> None:
    """One clear ValueError for any argument channel_plan cannot build."""
    if not _is_number(width_mult) or not MIN_WIDTH_MULT <= width_mult <= MAX_WIDTH_MULT:
        hint = ""
        if _is_number(width_mult) and width_mult >= 50:
            hint = (f" timm's names give the width in hundredths (rexnet_100 is "
                    f"width 1.0): did you mean width_mult={width_mult / 100:g}?")
        raise ValueError(
            f"width_mult={width_mult!r} is not supported: ReXNet needs a number with "
            f"{MIN_WIDTH_MULT} <= width_mult <= {MAX_WIDTH_MULT} (published widths: 0.9, "
            f"1.0, 1.3, 1.5, 2.0, 2.2, 3.0). Narrower plans degenerate; wider ones were "
            f"never trained and grow as width squared (6.0 is already ~140 M "
            f"parameters).{hint}")
    if not _is_number(depth_mult) or not 0 < depth_mult <= MAX_DEPTH_MULT:
        raise ValueError(
            f"depth_mult={depth_mult!r} is not supported: it must be a number with "
            f"0 < depth_mult <= {MAX_DEPTH_MULT} (1.0 is the official depth).")
    for name, value in (("lite", lite), ("use_se", use_se)):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: expected True or False.")
    if not isinstance(se_ratio, Integral) or isinstance(se_ratio, bool) or se_ratio < 1:
        hint = (" (timm writes the SE width as a fraction, se_ratio=1/12; here it is "
                "the reduction, 12)" if _is_number(se_ratio) and 0 < se_ratio < 1 else "")
        raise ValueError(
            f"se_ratio={se_ratio!r}: expected a positive integer, the reduction of the "
            f"squeeze-excite bottleneck (official: 12){hint}.")
    if ch_div is not None:
        if lite:
            raise ValueError(
                f"ch_div={ch_div!r} with lite=True: ch_div makes ReXNet-R (timm's "
                f"rounded V1); ReXNet-lite has its own rounding. Pass one of them.")
        if isinstance(ch_div, bool) or ch_div not in R_CH_DIVS:
            raise ValueError(
                f"ch_div={ch_div!r} is not a ReXNet-R divisor: accepted values are "
                f"{', '.join(map(str, R_CH_DIVS))} (timm's rexnetr_100 ... rexnetr_200 use "
                f"8, rexnetr_300 uses 16), or None for ReXNet V1.")


def channel_plan(width_mult: float = 1.0, depth_mult: float = 1.0,
                 lite: bool = False, use_se: bool = True, se_ratio: int = 12,
                 ch_div: int | None = None, input_ch: float = _FIRST_BLOCK_CHANNELS,
                 final_ch: float | None = None) -> ChannelPlan:
    """The channel configuration, as a pure function.

    Block channels grow linearly with the block index (the paper's point),
    from ``input_ch`` by ``final_ch`` in total (the official arguments; V1
    grows by 180, lite by 164). V1 rounds them to integers; lite to multiples
    of 8; ReXNet-R (``ch_div`` set) to multiples of ``ch_div``, as timm's
    ``rexnetr_*`` do. ``se_ratio`` is the SE reduction (official 12).
    """
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
    elif ch_div:
        def scale(c):
            return make_divisible(round(c * width_mult), ch_div)
        growth = (final_ch or _V1_CHANNEL_GROWTH) / num_blocks
    else:
        def scale(c):
            return int(round(c * width_mult))
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
        hidden = cin * t
        if ch_div and t != 1:
            hidden = make_divisible(round(cin * t), ch_div)
        if not se:
            se_channels = 0
        elif ch_div:  # timm: the SE width as a fraction of the block's, then rounded
            se_channels = make_divisible(int(hidden * (1 / se_ratio)), ch_div)
        else:
            se_channels = hidden // se_ratio
        if se and se_channels < 1:
            raise ValueError(
                f"se_ratio={se_ratio} leaves a squeeze-excite layer of {hidden} channels "
                f"with none; use se_ratio <= {hidden} (official: 12) or use_se=False.")
        blocks.append(BlockSpec(cin, cout, t, s, se, output_stride, hidden, se_channels))

    if lite:
        head = int(_HEAD_CHANNELS * width_mult) if width_mult > 1 else _HEAD_CHANNELS
    elif ch_div:
        head = make_divisible(_HEAD_CHANNELS * width_mult, ch_div)
    else:
        head = int(_HEAD_CHANNELS * width_mult)
    return ChannelPlan(stem_channels, tuple(blocks), head, lite, ch_div)
