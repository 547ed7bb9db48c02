"""ReXNet (Han et al., CVPR 2021) in pure Paddle.

A faithful port of NAVER's official ``rexnetv1.py`` (ReXNet V1, with SE and
SiLU) and ``rexnetv1_lite.py`` (ReXNet-lite: no SE, ReLU6, channels divisible
by 8). Two rules shape this file:

* The state-dict layout is the official one (``features.<i>...``,
  ``output.<j>...``), so official PyTorch checkpoints, PaddleClas's and the
  seed's ``.pdparams`` load without renaming.
* Numerics are the official ones; ``tests/test_reference.py`` checks them
  against the vectors in ``shared/reference``.

This module imports paddle only: no PaddleClas, no PaddleDetection.
"""

from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .plan import BlockSpec, channel_plan

# Five stride-2 stages: anything smaller collapses to less than one pixel.
MIN_INPUT_SIZE = 32
_LITE_CLASSIFIER_CHANNELS = 1024
# "paddle": Paddle's default initialisers (what PaddleClas's built-in ReXNet
# gets, so the same seed gives the same start). "official": PyTorch's
# defaults, which the official code trains from.
WEIGHT_INITS = ("paddle", "official")


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1,
             groups: int = 1) -> list[nn.Layer]:
    return [nn.Conv2D(cin, cout, kernel, stride, kernel // 2, groups=groups,
                      bias_attr=False),
            nn.BatchNorm2D(cout)]


class Silu(nn.Silu):
    """SiLU, x * sigmoid(x), computed by the op that is fastest where it runs.

    Exported graphs get ``swish`` (beta 1, the same function): Paddle
    Inference's oneDNN passes fuse swish into the preceding conv but leave
    silu as a separate op (Paddle 3.3). Dygraph keeps ``silu``, whose CPU
    backward is faster than swish's. benchmarks/README.md has the numbers.
    """

    def forward(self, x):
        if paddle.in_dynamic_mode():
            return F.silu(x)
        return F.swish(x)


class SqueezeExcite(nn.Layer):
    """The official SE: pool, 1x1 conv, BN, ReLU, 1x1 conv, sigmoid, scale."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Sequential(
            nn.Conv2D(channels, reduced, 1),
            nn.BatchNorm2D(reduced),
            nn.ReLU(),
            nn.Conv2D(reduced, channels, 1),
            nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(self.avg_pool(x))


class DropPath(nn.Layer):
    """Stochastic depth: drop the residual branch per sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = paddle.bernoulli(paddle.full([x.shape[0], 1, 1, 1], keep, x.dtype))
        return x * mask / keep


class LinearBottleneck(nn.Layer):
    """Inverted residual with a partial shortcut, in the official layout.

    ``self.out`` keeps the official Sequential so that parameter names match
    (``out.0`` expand conv ... ``out.7``/``out.8`` projection BN).
    """

    def __init__(self, spec: BlockSpec, lite: bool, se_ratio: int = 12,
                 drop_path: float = 0.0):
        super().__init__()
        self.in_channels = spec.in_channels
        self.out_channels = spec.out_channels
        self.use_shortcut = spec.use_shortcut
        hidden = spec.expanded_channels

        layers: list[nn.Layer] = []
        if spec.expand_ratio != 1:
            layers += _conv_bn(spec.in_channels, hidden)
            layers.append(nn.ReLU6() if lite else Silu())
        layers += _conv_bn(hidden, hidden, 3, spec.stride, groups=hidden)
        if spec.use_se:
            layers.append(SqueezeExcite(hidden, hidden // se_ratio))
        layers.append(nn.ReLU6())
        layers += _conv_bn(hidden, spec.out_channels)
        self.out = nn.Sequential(*layers)
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.use_shortcut else None

    def forward(self, x):
        out = self.out(x)
        if not self.use_shortcut:
            return out
        if self.drop_path is not None:
            out = self.drop_path(out)
        # The official in-place ``out[:, :c] += x`` with the same numbers,
        # but no set_value: one split, one add and one concat, all oneDNN
        # ops in exported graphs (two slices cost more layout reorders;
        # F.pad over channels crashes oneDNN on Paddle 3.3.1).
        c = self.in_channels
        if c == self.out_channels:
            return out + x
        head, tail = paddle.split(out, [c, self.out_channels - c], axis=1)
        return paddle.concat([head + x, tail], axis=1)


class ReXNet(nn.Layer):
    """ReXNet V1 or ReXNet-lite.

    Args:
        width_mult: channel width multiplier (>= 0.5). Official: 0.9 ... 3.0.
        depth_mult: block-count multiplier per stage (official: 1.0).
        lite: build ReXNet-lite (no SE, ReLU6, channels divisible by 8).
        class_num: classes of the classifier; 0 or None gives a headless
            feature extractor whose forward returns pooled features.
        dropout_ratio: dropout before the classifier (official: 0.2).
        drop_path_rate: stochastic depth at the last block; it rises
            linearly from 0 at the first. 0 keeps the official numerics.
        use_se, se_ratio: the V1 squeeze-excite switch and reduction.
        input_ch, final_ch: the official arguments of the channel plan:
            channels of the first block (16) and their total growth (None:
            180 for V1, 164 for lite).
        weight_init: "paddle" (Paddle's default initialisers, which
            PaddleClas's built-in ReXNet gets too) or "official" (PyTorch's
            defaults, which the official code trains from).
    """

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0,
                 lite: bool = False, class_num: int | None = 1000,
                 dropout_ratio: float = 0.2, drop_path_rate: float = 0.0,
                 use_se: bool = True, se_ratio: int = 12, input_ch: float = 16,
                 final_ch: float | None = None, weight_init: str = "paddle"):
        super().__init__()
        if class_num is not None and (not isinstance(class_num, int) or class_num < 0):
            raise ValueError(f"class_num={class_num!r}: expected a positive integer, "
                             f"or 0/None for a headless feature extractor.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate!r}: expected 0 <= rate < 1.")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init={weight_init!r}: expected one of "
                             f"{', '.join(map(repr, WEIGHT_INITS))}.")
        self.plan = channel_plan(width_mult, depth_mult, lite, use_se, input_ch, final_ch)
        self.width_mult, self.lite = width_mult, lite
        self.class_num = class_num or 0
        act = nn.ReLU6 if lite else Silu

        n = len(self.plan.blocks)
        features: list[nn.Layer] = _conv_bn(3, self.plan.stem_channels, 3, 2)
        features.append(act())
        for i, spec in enumerate(self.plan.blocks):
            rate = drop_path_rate * i / max(n - 1, 1)
            features.append(LinearBottleneck(spec, lite, se_ratio, rate))
        features += _conv_bn(self.plan.blocks[-1].out_channels, self.plan.head_channels)
        features.append(act())
        self.features = nn.Sequential(*features)

        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        head = self.plan.head_channels
        if not self.class_num:
            self.output = None
        elif lite:
            self.output = nn.Sequential(
                nn.Conv2D(head, _LITE_CLASSIFIER_CHANNELS, 1),
                nn.BatchNorm2D(_LITE_CLASSIFIER_CHANNELS),
                nn.ReLU6(),
                nn.Dropout(dropout_ratio),
                nn.Conv2D(_LITE_CLASSIFIER_CHANNELS, self.class_num, 1))
        else:
            self.output = nn.Sequential(
                nn.Dropout(dropout_ratio),
                nn.Conv2D(head, self.class_num, 1))
        if weight_init == "official":
            _init_like_pytorch(self)

    # -- description a detector neck or a host toolkit can read -------------
    @property
    def feature_info(self) -> list[dict]:
        """The stage outputs at strides 4, 8, 16 and 32."""
        return [{"module": f"features.{idx}", "reduction": stride,
                 "channels": self.features[idx].out_channels}
                for stride, idx in self.plan.stage_indices.items()]

    @property
    def num_features(self) -> int:
        """Channels of the pooled feature vector (the head conv's width)."""
        return self.plan.head_channels

    # -- forward passes ------------------------------------------------------
    def forward_features(self, x):
        """Image batch [N, 3, H, W] -> last feature map [N, head, H/32, W/32]."""
        _check_input(x)
        return self.features(x)

    def forward_stages(self, x):
        """Image batch -> the stage outputs at strides 4, 8, 16 and 32."""
        _check_input(x)
        wanted = set(self.plan.stage_indices.values())
        last = max(wanted)
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                outs.append(x)
            if i == last:
                break
        return outs

    def forward_head(self, x, pre_logits: bool = False):
        x = self.avg_pool(x)
        if pre_logits or self.output is None:
            return x.flatten(1)
        return self.output(x).flatten(1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _init_like_pytorch(model: nn.Layer) -> None:
    """PyTorch's default initialisation: conv weights and biases uniform in
    +-1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5)); BN already starts at
    weight 1, bias 0 in both frameworks."""
    for layer in model.sublayers():
        if isinstance(layer, nn.Conv2D):
            kh, kw = layer.weight.shape[2:]
            bound = 1.0 / math.sqrt(layer._in_channels // layer._groups * kh * kw)
            init = nn.initializer.Uniform(-bound, bound)
            init(layer.weight)
            if layer.bias is not None:
                init(layer.bias)


@paddle.jit.not_to_static  # plain Python on static shapes (-1 = dynamic)
def _check_input(x) -> None:
    """Fail early and clearly instead of deep inside a conv."""
    shape = list(x.shape)
    if len(shape) != 4 or shape[1] not in (3, -1):
        raise ValueError(
            f"ReXNet input x must have shape [N, 3, H, W] (NCHW, RGB); got "
            f"shape {shape}. Convert grayscale or RGBA images to RGB, and "
            f"HWC arrays to CHW (transpose(2, 0, 1)).")
    h, w = shape[2], shape[3]
    if 0 <= h < MIN_INPUT_SIZE or 0 <= w < MIN_INPUT_SIZE:
        raise ValueError(
            f"ReXNet input x is {h}x{w} (HxW); the network downsamples by 32, "
            f"so both sides must be at least {MIN_INPUT_SIZE} pixels. Resize "
            f"the images (224x224 is the training size).")
