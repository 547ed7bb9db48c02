"""ReXNet (Han et al., CVPR 2021) in pure Paddle.

A faithful port of NAVER's official ``rexnetv1.py`` (ReXNet V1, with SE and
SiLU) and ``rexnetv1_lite.py`` (ReXNet-lite: no SE, ReLU6, channels divisible
by 8), and of timm's ReXNet-R (``rexnetr_*``: V1 with channels rounded to a
multiple of ``ch_div``). Two rules shape this file:

* The state-dict layout is the official one (``features.<i>...``,
  ``output.<j>...``), so official PyTorch checkpoints, PaddleClas's and the
  seed's ``.pdparams`` load without renaming.
* Numerics are the official ones (timm's for ReXNet-R);
  ``tests/test_reference.py`` checks them against the vectors in
  ``shared/reference``.

The model speaks timm's features API too (``forward_intermediates``,
``prune_intermediate_layers``, ``forward_head``, ``reset_classifier``,
``feature_info`` with ``num_chs``/``reduction``/``module``); one loop over
``features`` serves it, ``forward_stages`` and PaddleClas's stage hooks.

This module imports paddle only: no PaddleClas, no PaddleDetection.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .plan import PYRAMID_STRIDES, STEM_INDEX_END, BlockSpec, channel_plan

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

    def __init__(self, spec: BlockSpec, lite: bool, drop_path: float = 0.0):
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
            layers.append(SqueezeExcite(hidden, spec.se_channels))
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
    """ReXNet V1, ReXNet-lite or ReXNet-R.

    Args:
        width_mult: channel width multiplier, 0.5 to 6.0. Published: 0.9 ... 3.0.
        depth_mult: block-count multiplier per stage (official: 1.0).
        lite: build ReXNet-lite (no SE, ReLU6, channels divisible by 8).
        class_num: classes of the classifier; 0 or None gives a headless
            feature extractor whose forward returns pooled features.
        dropout_ratio: dropout before the classifier, 0 <= ratio < 1
            (official: 0.2).
        drop_path_rate: stochastic depth at the last block; it rises
            linearly from 0 at the first. 0 keeps the official numerics.
        use_se, se_ratio: the squeeze-excite switch and reduction (12).
        ch_div: build ReXNet-R, timm's V1 with every channel count rounded
            to a multiple of ``ch_div`` (8, or 16 as timm's rexnetr_300).
        input_ch, final_ch: the official arguments of the channel plan:
            channels of the first block (16) and their total growth (None:
            180 for V1 and R, 164 for lite).
        weight_init: "paddle" (Paddle's default initialisers, which
            PaddleClas's built-in ReXNet gets too) or "official" (PyTorch's
            defaults, which the official code trains from).

    Inputs are NCHW float images. Floating-point tensors of another dtype
    than the model's (float64, float16 ...) are cast to it; integer
    tensors and numpy arrays are refused with the fix.
    """

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0,
                 lite: bool = False, class_num: int | None = 1000,
                 dropout_ratio: float = 0.2, drop_path_rate: float = 0.0,
                 use_se: bool = True, se_ratio: int = 12, ch_div: int | None = None,
                 input_ch: float = 16, final_ch: float | None = None,
                 weight_init: str = "paddle"):
        super().__init__()
        class_num = _check_class_num(class_num, "class_num")
        for name, value in (("dropout_ratio", dropout_ratio), ("drop_path_rate", drop_path_rate)):
            if not _is_rate(value):
                raise ValueError(f"{name}={value!r}: expected a number with 0 <= {name} < 1 "
                                 f"(official: {0.2 if name == 'dropout_ratio' else 0.0}).")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init={weight_init!r}: expected one of "
                             f"{', '.join(map(repr, WEIGHT_INITS))}.")
        self.plan = channel_plan(width_mult, depth_mult, lite, use_se, se_ratio, ch_div,
                                 input_ch, final_ch)
        self.width_mult, self.lite, self.ch_div = width_mult, lite, ch_div
        self.dropout_ratio = float(dropout_ratio)
        act = nn.ReLU6 if lite else Silu

        n = len(self.plan.blocks)
        features: list[nn.Layer] = _conv_bn(3, self.plan.stem_channels, 3, 2)
        features.append(act())
        for i, spec in enumerate(self.plan.blocks):
            rate = drop_path_rate * i / max(n - 1, 1)
            features.append(LinearBottleneck(spec, lite, rate))
        features += _conv_bn(self.plan.blocks[-1].out_channels, self.plan.head_channels)
        features.append(act())
        self.features = nn.Sequential(*features)

        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.class_num = class_num
        self.output = self._classifier(class_num)
        if weight_init == "official":
            _init_like_pytorch(self)

    def _classifier(self, class_num: int) -> nn.Sequential | None:
        """A new classifier on the pooled head features (None for 0 classes)."""
        if not class_num:
            return None
        head = self.plan.head_channels
        if self.lite:
            return nn.Sequential(
                nn.Conv2D(head, _LITE_CLASSIFIER_CHANNELS, 1),
                nn.BatchNorm2D(_LITE_CLASSIFIER_CHANNELS),
                nn.ReLU6(),
                nn.Dropout(self.dropout_ratio),
                nn.Conv2D(_LITE_CLASSIFIER_CHANNELS, class_num, 1))
        return nn.Sequential(nn.Dropout(self.dropout_ratio), nn.Conv2D(head, class_num, 1))

    @property
    def kind(self) -> str:
        """"v1", "lite" or "r" (ReXNet-R)."""
        return self.plan.kind

    # -- description a detector neck or a host toolkit can read -------------
    @property
    def feature_info(self) -> list[dict]:
        """timm's feature_info: the last output at each stride, 2 to 32.

        ``num_chs`` channels, ``reduction`` stride, ``module`` the layer in
        ``features`` (official numbering: the stem is features.0-2, so
        timm's ``features.{i}`` is ``features.{i + 3}`` here).
        """
        return [{"num_chs": self.plan.blocks[idx - STEM_INDEX_END].out_channels,
                 "reduction": stride, "module": f"features.{idx}"}
                for stride, idx in self.plan.stage_indices.items()]

    @property
    def stage_info(self) -> list[dict]:
        """The feature_info entries of the pyramid stages, strides 4 to 32:
        what forward_stages returns and PaddleClas's return_stages index."""
        return [info for info in self.feature_info if info["reduction"] in PYRAMID_STRIDES]

    @property
    def num_features(self) -> int:
        """Channels of the pooled feature vector (the head conv's width)."""
        return self.plan.head_channels

    # -- forward passes ------------------------------------------------------
    def forward_features(self, x):
        """Image batch [N, 3, H, W] -> last feature map [N, head, H/32, W/32]."""
        return self.features(_check_input(x, self._weights_dtype()))

    def forward_intermediates(self, x, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's features API: the outputs listed in ``feature_info``.

        ``indices``: None for all (strides 2, 4, 8, 16, 32), an int n for
        the last n, or a list of positions in ``feature_info`` (negative
        counts from the end). ``norm`` has no effect (ReXNet has no final
        norm); ``output_fmt`` must be "NCHW". ``stop_early`` stops after
        the deepest one taken. Returns the intermediates, or (final
        features, intermediates) unless ``intermediates_only``.
        """
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
        x = _check_input(x, self._weights_dtype())
        intermediates = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                intermediates.append(x)
            if i == stop:
                break
        return intermediates if intermediates_only else (x, intermediates)

    def forward_stages(self, x):
        """Image batch -> the stage outputs at strides 4, 8, 16 and 32."""
        positions = [i for i, info in enumerate(self.feature_info)
                     if info["reduction"] in PYRAMID_STRIDES]
        return self.forward_intermediates(x, positions, stop_early=True,
                                          intermediates_only=True)

    def forward_head(self, x, pre_logits: bool = False):
        """Feature map -> logits, or the pooled features with ``pre_logits``."""
        x = self.avg_pool(x)
        if pre_logits or self.output is None:
            return x.flatten(1)
        return self.output(x).flatten(1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    # -- changing the model ---------------------------------------------------
    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` (0: headless, pooled features).

        As timm's: only the class layer is new. ReXNet-lite's 1024-channel
        layer before it is kept when there is one (it holds pretrained weights);
        the result has the state-dict keys of a model built with that class_num.
        """
        num_classes = _check_class_num(num_classes, "num_classes")
        if num_classes and self.lite and self.output is not None:
            last = list(self.output.named_children())[-1][0]
            self.output.add_sublayer(last, nn.Conv2D(_LITE_CLASSIFIER_CHANNELS, num_classes, 1))
        else:
            self.output = self._classifier(num_classes)
        self.class_num = num_classes

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the layers after the deepest of ``indices`` (as in
        forward_intermediates), and the classifier unless ``prune_head`` is
        False. Returns the positions kept. ``prune_norm``: ReXNet has no final norm."""
        stage_ends = list(self.plan.stage_indices.values())
        take, last = feature_take_indices(len(stage_ends), indices)
        self.features = self.features[:stage_ends[last] + 1]
        if prune_head:
            self.reset_classifier(0)
        return take

    def _weights_dtype(self):
        return self.features[0].weight.dtype


def feature_take_indices(num_features: int, indices=None) -> tuple[list[int], int]:
    """timm's rule: None -> all; int n -> the last n; a list -> those positions
    (negative from the end). Returns (positions, the deepest)."""
    if indices is None:
        indices = num_features
    if isinstance(indices, Integral) and not isinstance(indices, bool):
        if not 0 < indices <= num_features:
            raise ValueError(f"indices={indices}: the last n must have 1 <= n <= "
                             f"{num_features} (the entries of feature_info).")
        take = list(range(num_features - indices, num_features))
    elif isinstance(indices, (list, tuple)) and indices and all(
            isinstance(i, Integral) and not isinstance(i, bool) for i in indices):
        take = [num_features + i if i < 0 else int(i) for i in indices]
        bad = [i for i, t in zip(indices, take) if not 0 <= t < num_features]
        if bad:
            raise ValueError(f"indices={list(indices)}: {bad} out of range; positions in "
                             f"feature_info are 0 ... {num_features - 1} (or -{num_features} "
                             f"... -1).")
    else:
        raise ValueError(f"indices={indices!r}: expected None (all), an int n (the last n) "
                         f"or a non-empty list of positions in feature_info.")
    return take, max(take)


def _is_rate(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0.0 <= value < 1.0)  # False for NaN too


def _check_class_num(class_num, name: str) -> int:
    if class_num is None:
        return 0
    if not isinstance(class_num, Integral) or isinstance(class_num, bool) or class_num < 0:
        raise ValueError(f"{name}={class_num!r}: expected a positive integer (the number "
                         f"of classes), or 0/None for a headless feature extractor.")
    return int(class_num)


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


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
def _check_input(x, model_dtype):
    """Fail early and clearly instead of deep inside a conv; cast float dtypes.

    A floating-point tensor of another dtype than the model's is cast to it
    (float64 from numpy, float16 into a float32 model): the documented
    conversion. Integer images and numpy arrays are refused with the fix.
    """
    if isinstance(x, np.ndarray):
        raise TypeError(
            f"ReXNet input x is a numpy array ({x.dtype}, shape {list(x.shape)}); the model "
            f"takes a paddle.Tensor. Convert it with paddle.to_tensor(x, dtype='float32').")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"ReXNet input x is a {type(x).__name__}; expected a paddle.Tensor "
                        f"of shape [N, 3, H, W].")
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
    if not paddle.in_dynamic_mode():
        return x  # export: the InputSpec fixes the dtype
    dtype = str(x.dtype).replace("paddle.", "")
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"ReXNet input x has dtype {dtype}; the model takes floating-point images, "
            f"normalised as in training (ImageNet: x / 255, minus mean [0.485, 0.456, "
            f"0.406], over std [0.229, 0.224, 0.225]). Convert uint8 images with "
            f"x.astype('float32') / 255 and normalise them.")
    return x if x.dtype == model_dtype else x.astype(model_dtype)
