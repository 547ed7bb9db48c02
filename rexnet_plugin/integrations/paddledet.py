"""ReXNet as a PaddleDetection backbone: ``backbone: ReXNet`` in a detector config.

The class below is a plain ``paddle.nn.Layer``; importing this module does
not import ppdet. :func:`register` (the ``ppdet.plugins`` entry point, called
by the autoload hook as soon as ``ppdet`` is imported) hands it to ppdet's
``workspace.register`` and ``serializable``, which must happen before
``load_config`` reads a YAML with a ``ReXNet:`` section.

The arguments follow ppdet's own backbones (ResNet, CSPResNet, MobileNetV3):
``return_idx`` indexes the stages at strides 4, 8, 16 and 32, ``freeze_at``
freezes the stem and the stages up to that index, ``freeze_norm`` and
``norm_decay`` treat BatchNorm as ppdet's ``ConvNormLayer`` does. Frozen
norms become ``FrozenBatchNorm2D`` layers (as in detectron2), which ppdet's
sync_bn conversion leaves frozen.
"""

import importlib
import logging
import os
import sys
from numbers import Integral

import paddle.nn as nn
import paddle.nn.functional as F
from paddle.regularizer import L2Decay

from ..model import ReXNet as _ReXNetNet
from ..plan import STEM_INDEX_END
from ..zoo import VARIANTS, get_variant

logger = logging.getLogger(__name__)

# Output stride of each stage return_idx can pick; index i -> STRIDES[i].
STRIDES = (4, 8, 16, 32)
NORM_TYPES = ("bn", "sync_bn")
DEFAULT_VARIANT = "ReXNet_1_0"


class ReXNet(nn.Layer):
    """ReXNet backbone for PaddleDetection (Han et al., CVPR 2021).

    Args:
        variant (str): a variant of the plugin's table, e.g. ReXNet_1_0,
            ReXNetLite_1_5 or ReXNetR_2_0. Leave unset to give width_mult,
            lite and ch_div instead.
        width_mult (float): channel width multiplier, for widths outside the
            table (0.5 to 6.0). Default 1.0.
        lite (bool): ReXNet-lite (no SE, ReLU6) instead of ReXNet V1.
        ch_div (int): ReXNet-R (timm's rexnetr_*): channels rounded to a
            multiple of 8 or 16.
        return_idx (list): stages whose feature maps are returned:
            0, 1, 2, 3 for strides 4, 8, 16, 32.
        freeze_at (int): freeze the stem and the stages up to this index
            (-1: freeze nothing), BatchNorm statistics included.
        freeze_norm (bool): freeze every BatchNorm: running statistics are
            used in training and the scale and shift are not trained.
        norm_type (str): 'bn' or 'sync_bn' (the trainer converts the model;
            frozen norms stay frozen).
        norm_decay (float): L2 weight decay on BatchNorm scale and shift;
            0 means none, None leaves the optimizer's decay.
        drop_path_rate (float): stochastic depth at the last block.
        pretrained (bool|str): ImageNet classification weights for the
            backbone: True (the variant's default source), a source name,
            a local path or a URL; the classifier is skipped. A local file
            loads here; a download waits for the first training step, as
            PaddleDetection's own pretrain_weights wait for the trainer, so
            building the model (eval, export, infer) never needs the network.
    """

    __shared__ = ["norm_type"]

    def __init__(self,
                 variant=None,
                 width_mult=None,
                 lite=None,
                 ch_div=None,
                 return_idx=[1, 2, 3],
                 freeze_at=-1,
                 freeze_norm=False,
                 norm_type="bn",
                 norm_decay=0.,
                 drop_path_rate=0.,
                 pretrained=None):
        super().__init__()
        self.variant, arch = _resolve_arch(variant, width_mult, lite, ch_div)
        self.return_idx = _check_return_idx(return_idx)
        self.freeze_at = _check_freeze_at(freeze_at)
        if norm_type not in NORM_TYPES:
            raise ValueError(f"ReXNet.norm_type={norm_type!r}: expected one of "
                             f"{', '.join(NORM_TYPES)}.")
        if norm_decay is not None and (not isinstance(norm_decay, (int, float))
                                       or norm_decay < 0):
            raise ValueError(f"ReXNet.norm_decay={norm_decay!r}: expected a number "
                             f">= 0 (0: no decay on norms), or None for the "
                             f"optimizer's decay.")
        self.norm_type = norm_type

        body = _ReXNetNet(**arch, class_num=0, drop_path_rate=drop_path_rate)
        self._arch, self._pending_pretrained = arch, None
        if pretrained and isinstance(pretrained, str) and os.path.isfile(pretrained):
            from ..weights import load_pretrained
            load_pretrained(body, pretrained, variant=self.variant, skip_head=True)
        elif pretrained:
            self._pending_pretrained = pretrained
        stage_end = body.plan.stage_indices  # stride -> index in body.features
        self._out_channels = [body.plan.blocks[stage_end[s] - STEM_INDEX_END].out_channels
                              for s in STRIDES]
        # Positions in the body's feature_info (timm's; it starts at stride 2).
        reductions = [info["reduction"] for info in body.feature_info]
        self._positions = [reductions.index(STRIDES[i]) for i in self.return_idx]
        # Keep the layers up to the deepest returned stage: the 1x1 head conv
        # (and any deeper stage) would be parameters without gradients.
        body.features = body.features[:stage_end[STRIDES[max(self.return_idx)]] + 1]
        self.body = body

        if norm_decay is not None:
            for bn in body.sublayers():
                if isinstance(bn, nn.BatchNorm2D):
                    for p in (bn.weight, bn.bias):
                        p.regularizer = L2Decay(norm_decay)
        if self.freeze_at >= 0:
            frozen = range(stage_end[STRIDES[self.freeze_at]] + 1)  # stem + stages
            for i in frozen:
                for p in body.features[i].parameters():
                    p.stop_gradient = True
            _freeze_norms(body.features, {str(i) for i in frozen})
        if freeze_norm:
            _freeze_norms(body)

    @property
    def out_shape(self):
        from ppdet.modeling.shape_spec import ShapeSpec
        return [ShapeSpec(channels=self._out_channels[i], stride=STRIDES[i])
                for i in self.return_idx]

    def forward(self, inputs):
        if self._pending_pretrained and self.training:
            from ..weights import load_pretrained
            # The layers cut off below the deepest returned stage are not in
            # self.body any more: load into a whole network, then copy across.
            full = _ReXNetNet(**self._arch, class_num=0)
            load_pretrained(full, self._pending_pretrained, variant=self.variant,
                            skip_head=True)
            mine = self.body.state_dict()
            self.body.set_state_dict({k: v for k, v in full.state_dict().items() if k in mine})
            self._pending_pretrained = None
        return self.body.forward_intermediates(inputs["image"], self._positions,
                                               stop_early=True, intermediates_only=True)


class FrozenBatchNorm2D(nn.Layer):
    """BatchNorm with fixed statistics, scale and shift, in training too.

    Not a BatchNorm subclass, so ppdet's sync_bn conversion leaves it frozen;
    it keeps the BatchNorm's tensors and their names (weight, bias, _mean,
    _variance), so checkpoints load unchanged.
    """

    def __init__(self, bn: nn.BatchNorm2D):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self._mean, self._variance = bn._mean, bn._variance
        self._epsilon = bn._epsilon
        for p in (self.weight, self.bias):
            p.stop_gradient = True

    def forward(self, x):
        return F.batch_norm(x, self._mean, self._variance, self.weight, self.bias,
                            training=False, epsilon=self._epsilon)


def _freeze_norms(layer: nn.Layer, children=None) -> None:
    """Replace every BatchNorm2D under ``layer`` (under the named children only,
    if given) by a FrozenBatchNorm2D, in place."""
    for name, child in list(layer.named_children()):
        if children is not None and name not in children:
            continue
        if isinstance(child, nn.BatchNorm2D):
            layer.add_sublayer(name, FrozenBatchNorm2D(child))
        else:
            _freeze_norms(child)


def _resolve_arch(variant, width_mult, lite, ch_div):
    """-> (variant name or None, ReXNet's arch kwargs), with one clear error on conflict."""
    if variant is not None:
        v = get_variant(variant)
        if ((width_mult is not None and width_mult != v.width_mult)
                or (lite is not None and lite != (v.kind == "lite"))
                or (ch_div is not None and ch_div != v.ch_div)):
            raise ValueError(
                f"ReXNet: variant {variant} has width_mult {v.width_mult}, lite "
                f"{v.kind == 'lite'} and ch_div {v.ch_div}, but the config also sets "
                f"width_mult={width_mult!r}, lite={lite!r}, ch_div={ch_div!r}. Set "
                f"either the variant or width_mult/lite/ch_div.")
        return variant, v.arch
    if width_mult is None and lite is None and ch_div is None:
        return DEFAULT_VARIANT, VARIANTS[DEFAULT_VARIANT].arch
    width_mult = 1.0 if width_mult is None else width_mult
    lite = bool(lite)
    if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool):
        raise ValueError(f"ReXNet.width_mult={width_mult!r}: expected a number, "
                         f"e.g. 1.0 or 1.5.")
    arch = {"width_mult": float(width_mult), "lite": lite, "ch_div": ch_div}
    # A width from the table still gets its name, so pretrained=True works.
    name = next((n for n, v in VARIANTS.items() if v.arch == arch), None)
    return name, arch


def _check_return_idx(return_idx):
    if isinstance(return_idx, Integral):
        return_idx = [return_idx]
    valid = ", ".join(f"{i} (stride {s})" for i, s in enumerate(STRIDES))
    if (not isinstance(return_idx, (list, tuple)) or not return_idx
            or any(not isinstance(i, Integral) or not 0 <= i < len(STRIDES)
                   for i in return_idx)
            or list(return_idx) != sorted(set(return_idx))):
        raise ValueError(f"ReXNet.return_idx={return_idx!r}: expected increasing "
                         f"stage indices among {valid}, e.g. [1, 2, 3].")
    return list(return_idx)


def _check_freeze_at(freeze_at):
    if (not isinstance(freeze_at, Integral) or isinstance(freeze_at, bool)
            or not -1 <= freeze_at < len(STRIDES)):
        raise ValueError(f"ReXNet.freeze_at={freeze_at!r}: expected -1 (nothing "
                         f"frozen) or a stage index 0-3: 0 freezes the stem and "
                         f"the stride-4 stage, 3 the whole backbone.")
    return freeze_at


def register(module=None):
    """Register ReXNet with ppdet's workspace (the ``ppdet.plugins`` entry point).

    ``module`` is the ``ppdet`` package whose import triggered the call
    (default: import ``ppdet``). Calling it again is harmless. If a config
    with a ``ReXNet:`` section was loaded before registration, its values
    are kept.
    """
    package = module.__name__ if module is not None else "ppdet"
    workspace = importlib.import_module(f"{package}.core.workspace")
    schema_dict = importlib.import_module(f"{package}.core.config.schema").SchemaDict
    name = ReXNet.__name__
    existing = workspace.global_config.get(name)
    if isinstance(existing, schema_dict):
        if existing.pymodule is sys.modules[__name__]:
            return ReXNet
        logger.warning("ppdet already has a %s from %s; rexnet-plugin replaces it",
                       name, existing.pymodule.__name__)
        del workspace.global_config[name]
        existing = None
    elif existing is not None:
        # A config was merged before registration: keep what it set.
        del workspace.global_config[name]
    workspace.register(workspace.serializable(ReXNet))
    if existing:
        workspace.global_config[name].update(existing)
    return ReXNet
