"""ReXNet V1, lite and R in pure Paddle: the official layout and numerics, timm's features API."""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .plan import PYRAMID_STRIDES, STEM_INDEX_END, BlockSpec, channel_plan
from .zoo import IMAGENET_MEAN, IMAGENET_STD

MIN_INPUT_SIZE = 32  # five stride-2 stages
_LITE_CLASSIFIER_CHANNELS = 1024
WEIGHT_INITS = ("paddle", "official")  # Paddle's initialisers, or PyTorch's (the official code's)
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
    return [nn.Conv2D(cin, cout, kernel, stride, kernel // 2, groups=groups, bias_attr=False),
            nn.BatchNorm2D(cout)]


class Silu(nn.Silu):
    """Exported graphs get the equal ``swish``, which oneDNN fuses into the conv."""

    def forward(self, x):
        return F.silu(x) if paddle.in_dynamic_mode() else F.swish(x)


class SqueezeExcite(nn.Layer):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Sequential(nn.Conv2D(channels, reduced, 1), nn.BatchNorm2D(reduced),
                                nn.ReLU(), nn.Conv2D(reduced, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(self.avg_pool(x))


class DropPath(nn.Layer):
    """Stochastic depth: drop the residual branch per sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        keep = 1.0 - self.drop_prob
        if not self.training or keep == 1.0:
            return x
        return x * paddle.bernoulli(paddle.full([x.shape[0], 1, 1, 1], keep, x.dtype)) / keep


class LinearBottleneck(nn.Layer):
    """Inverted residual with a partial shortcut; ``out`` keeps the official parameter names."""

    def __init__(self, spec: BlockSpec, lite: bool, drop_path: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels = spec.in_channels, spec.out_channels
        self.use_shortcut = spec.use_shortcut
        hidden = spec.expanded_channels
        layers = []
        if spec.expand_ratio != 1:
            layers += [*_conv_bn(spec.in_channels, hidden), nn.ReLU6() if lite else Silu()]
        layers += _conv_bn(hidden, hidden, 3, spec.stride, groups=hidden)
        if spec.use_se:
            layers.append(SqueezeExcite(hidden, spec.se_channels))
        layers += [nn.ReLU6(), *_conv_bn(hidden, spec.out_channels)]
        self.out = nn.Sequential(*layers)
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.use_shortcut else None

    def forward(self, x):
        out = self.out(x)
        if not self.use_shortcut:
            return out
        out = out if self.drop_path is None else self.drop_path(out)
        # The official in-place ``out[:, :c] += x`` without set_value: split, add,
        # concat are oneDNN ops in exported graphs (F.pad over channels crashes it).
        c = self.in_channels
        if c == self.out_channels:
            return out + x
        head, tail = paddle.split(out, [c, self.out_channels - c], axis=1)
        return paddle.concat([head + x, tail], axis=1)


class ReXNet(nn.Layer):
    """ReXNet V1, lite (``lite``) or R (``ch_div`` 8 or 16); ``class_num`` 0/None: headless.
    Arguments: docs/model.md; float inputs of another dtype are cast to the model's."""

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0,
                 lite: bool = False, class_num: int | None = 1000,
                 dropout_ratio: float = 0.2, drop_path_rate: float = 0.0,
                 use_se: bool = True, se_ratio: int = 12, ch_div: int | None = None,
                 input_ch: float = 16, final_ch: float | None = None,
                 weight_init: str = "paddle"):
        super().__init__()
        class_num = _check_class_num(class_num, "class_num")
        for name, value, official in (("dropout_ratio", dropout_ratio, 0.2),
                                      ("drop_path_rate", drop_path_rate, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 <= value < 1.0:  # NaN fails too
                raise ValueError(f"{name}={value!r}: expected a number with 0 <= {name} < 1 "
                                 f"(official: {official}).")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init={weight_init!r}: expected one of {WEIGHT_INITS}.")
        self.plan = channel_plan(width_mult, depth_mult, lite, use_se, se_ratio, ch_div,
                                 input_ch, final_ch)
        self.width_mult, self.lite, self.ch_div = width_mult, lite, ch_div
        self.dropout_ratio = float(dropout_ratio)
        act = nn.ReLU6 if lite else Silu
        blocks = self.plan.blocks
        rates = [drop_path_rate * i / max(len(blocks) - 1, 1) for i in range(len(blocks))]
        self.features = nn.Sequential(
            *_conv_bn(3, self.plan.stem_channels, 3, 2), act(),
            *(LinearBottleneck(spec, lite, rate) for spec, rate in zip(blocks, rates)),
            *_conv_bn(blocks[-1].out_channels, self.plan.head_channels), act())
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.class_num, self.output = class_num, self._classifier(class_num)
        if weight_init == "official":
            _init_like_pytorch(self)

    def _classifier(self, class_num: int) -> nn.Sequential | None:
        if not class_num:
            return None
        head, lite = self.plan.head_channels, _LITE_CLASSIFIER_CHANNELS
        if self.lite:
            return nn.Sequential(nn.Conv2D(head, lite, 1), nn.BatchNorm2D(lite), nn.ReLU6(),
                                 nn.Dropout(self.dropout_ratio), nn.Conv2D(lite, class_num, 1))
        return nn.Sequential(nn.Dropout(self.dropout_ratio), nn.Conv2D(head, class_num, 1))

    kind = property(lambda self: self.plan.kind)  # a key of zoo.KINDS
    num_features = property(lambda self: self.plan.head_channels)  # pooled features

    @property
    def feature_info(self) -> list[dict]:
        """timm's feature_info, strides 2 to 32 (timm's ``features.{i}`` is ``features.{i+3}``)."""
        return [{"num_chs": self.plan.blocks[idx - STEM_INDEX_END].out_channels,
                 "reduction": stride, "module": f"features.{idx}"}
                for stride, idx in self.plan.stage_indices.items()]

    @property
    def stage_info(self) -> list[dict]:
        """feature_info of the pyramid stages: what forward_stages returns."""
        return [info for info in self.feature_info if info["reduction"] in PYRAMID_STRIDES]

    def forward_features(self, x):
        return self.features(_check_input(x, self.features[0].weight.dtype))

    def forward_intermediates(self, x, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's features API over ``feature_info`` (``norm``: ReXNet has no final norm)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: ReXNet's feature maps are NCHW; "
                             f"only 'NCHW' is supported.")
        stage_ends = list(self.plan.stage_indices.values())
        take, last = feature_take_indices(len(stage_ends), indices)
        if stage_ends[last] >= len(self.features):
            raise ValueError(
                f"indices={indices!r} asks for features.{stage_ends[last]}, which "
                f"prune_intermediate_layers removed (features has {len(self.features)} "
                f"layers now).")
        wanted = {stage_ends[i] for i in take}
        stop = stage_ends[last] if stop_early else len(self.features) - 1
        x = _check_input(x, self.features[0].weight.dtype)
        intermediates = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                intermediates.append(x)
            if i == stop:
                break
        return intermediates if intermediates_only else (x, intermediates)

    def forward_stages(self, x):
        """The stage outputs at strides 4, 8, 16 and 32."""
        positions = [i for i, info in enumerate(self.feature_info)
                     if info["reduction"] in PYRAMID_STRIDES]
        return self.forward_intermediates(x, positions, stop_early=True, intermediates_only=True)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.avg_pool(x)
        return (x if pre_logits or self.output is None else self.output(x)).flatten(1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A new class layer (0: headless); as timm's, lite's 1024-channel layer is kept."""
        num_classes = _check_class_num(num_classes, "num_classes")
        if num_classes and self.lite and self.output is not None:
            last = list(self.output.named_children())[-1][0]
            self.output.add_sublayer(last, nn.Conv2D(_LITE_CLASSIFIER_CHANNELS, num_classes, 1))
        else:
            self.output = self._classifier(num_classes)
        self.class_num = num_classes

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the layers after the deepest of ``indices`` (and the head); timm's API."""
        stage_ends = list(self.plan.stage_indices.values())
        take, last = feature_take_indices(len(stage_ends), indices)
        self.features = self.features[:stage_ends[last] + 1]
        if prune_head:
            self.reset_classifier(0)
        return take


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def feature_take_indices(num_features: int, indices=None) -> tuple[list[int], int]:
    """timm's rule (None: all, n: the last n, a list: those); returns (positions, the deepest)."""
    indices = num_features if indices is None else indices
    if _is_int(indices):
        if not 0 < indices <= num_features:
            raise ValueError(f"indices={indices}: the last n must have 1 <= n <= "
                             f"{num_features} (the entries of feature_info).")
        take = list(range(num_features - indices, num_features))
    elif isinstance(indices, (list, tuple)) and indices and all(map(_is_int, indices)):
        take = [num_features + i if i < 0 else int(i) for i in indices]
        bad = [i for i, t in zip(indices, take) if not 0 <= t < num_features]
        if bad:
            raise ValueError(f"indices={list(indices)}: {bad} out of range; positions in "
                             f"feature_info are 0 ... {num_features - 1} (or negative).")
    else:
        raise ValueError(f"indices={indices!r}: expected None (all), an int n (the last n) "
                         f"or a non-empty list of positions in feature_info.")
    return take, max(take)


def _check_class_num(class_num, name: str) -> int:
    if class_num is None:
        return 0
    if not _is_int(class_num) or class_num < 0:
        raise ValueError(f"{name}={class_num!r}: expected a positive integer (the number "
                         f"of classes), or 0/None for a headless feature extractor.")
    return int(class_num)


def _init_like_pytorch(model: nn.Layer) -> None:
    """PyTorch's default conv init, uniform in +-1/sqrt(fan_in); BN already agrees."""
    for layer in model.sublayers():
        if isinstance(layer, nn.Conv2D):
            bound = 1.0 / math.sqrt(math.prod(layer.weight.shape[1:]))  # fan_in
            init = nn.initializer.Uniform(-bound, bound)
            init(layer.weight)
            if layer.bias is not None:
                init(layer.bias)


@paddle.jit.not_to_static  # plain Python on static shapes (-1 = dynamic)
def _check_input(x, model_dtype):
    """Fail early and clearly instead of deep inside a conv; cast float dtypes."""
    if isinstance(x, np.ndarray) or not hasattr(x, "shape") or not hasattr(x, "dtype"):
        what = "numpy array" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"ReXNet input x is a {what}; expected a paddle.Tensor of shape "
                        f"[N, 3, H, W]: convert it with paddle.to_tensor(x, dtype='float32').")
    shape = list(x.shape)
    if len(shape) != 4 or shape[1] not in (3, -1):
        raise ValueError(f"ReXNet input x must have shape [N, 3, H, W] (NCHW, RGB); got shape "
                         f"{shape}. Convert grayscale or RGBA images to RGB, and HWC arrays "
                         f"to CHW (transpose(2, 0, 1)).")
    h, w = shape[2:]
    if 0 <= h < MIN_INPUT_SIZE or 0 <= w < MIN_INPUT_SIZE:
        raise ValueError(f"ReXNet input x is {h}x{w} (HxW); the network downsamples by 32, so "
                         f"both sides must be at least {MIN_INPUT_SIZE} pixels. Resize the "
                         f"images (224x224 is the training size).")
    if not paddle.in_dynamic_mode():
        return x  # export: the InputSpec fixes the dtype
    dtype = str(x.dtype).replace("paddle.", "")
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"ReXNet input x has dtype {dtype}; the model takes floating-point "
                        f"images, normalised as in training (ImageNet: x / 255, minus mean "
                        f"{list(IMAGENET_MEAN)}, over std {list(IMAGENET_STD)}). Convert uint8 "
                        f"images with x.astype('float32') / 255 and normalise them.")
    return x if x.dtype == model_dtype else x.astype(model_dtype)
