"""ReXNet's channel plan, as a pure function: no paddle, no framework.

The official design (NAVER's ``rexnetv1.py`` and ``rexnetv1_lite.py``): six
stages of inverted-residual blocks whose output channels grow linearly with
the block index (the paper's point). ``channel_plan()`` computes every
block's channels, strides and SE switch; ``model.py`` builds the network
from it, and the weight checks compare checkpoints with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Narrower than this and the channel plan degenerates (SE layers of 1-2
# channels); the official code never goes there either.
MIN_WIDTH_MULT = 0.5

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


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual bottleneck of the channel plan."""

    in_channels: int
    out_channels: int
    expand_ratio: int
    stride: int
    use_se: bool
    output_stride: int  # cumulative stride of the block's output

    @property
    def expanded_channels(self) -> int:
        return self.in_channels * self.expand_ratio

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

    @property
    def stage_indices(self) -> dict[int, int]:
        """Output stride -> index in ``features`` of the last block at it."""
        last = {}
        for i, block in enumerate(self.blocks):
            last[block.output_stride] = STEM_INDEX_END + i
        return {s: last[s] for s in (4, 8, 16, 32)}


def make_divisible(value: float, divisor: int = _LITE_DIVISOR) -> int:
    """Round to a multiple of ``divisor`` without losing more than 10%.

    The rule of the official ReXNet-lite (and of MobileNet before it).
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def channel_plan(width_mult: float = 1.0, depth_mult: float = 1.0,
                 lite: bool = False, use_se: bool = True,
                 input_ch: float = _FIRST_BLOCK_CHANNELS,
                 final_ch: float | None = None) -> ChannelPlan:
    """The official channel configuration, as a pure function.

    Block channels grow linearly with the block index (the paper's point),
    from ``input_ch`` by ``final_ch`` in total (the official arguments; V1
    grows by 180, lite by 164). V1 rounds them to integers; lite rounds them
    to multiples of 8.
    """
    if not isinstance(width_mult, (int, float)) or width_mult < MIN_WIDTH_MULT:
        raise ValueError(
            f"width_mult={width_mult!r} is not supported: ReXNet needs "
            f"width_mult >= {MIN_WIDTH_MULT} (official widths: 0.9, 1.0, 1.3, "
            f"1.5, 2.0, 2.2, 3.0). Pass a larger width_mult.")
    if not isinstance(depth_mult, (int, float)) or depth_mult <= 0:
        raise ValueError(
            f"depth_mult={depth_mult!r} is not supported: it must be a "
            f"positive number (1.0 is the official depth).")

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
        blocks.append(BlockSpec(cin, cout, t, s, se, output_stride))

    if lite:
        head = int(_HEAD_CHANNELS * width_mult) if width_mult > 1 else _HEAD_CHANNELS
    else:
        head = int(_HEAD_CHANNELS * width_mult)
    return ChannelPlan(stem_channels, tuple(blocks), head, lite)
