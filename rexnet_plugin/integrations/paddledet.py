"""ReXNet as a PaddleDetection backbone: ``backbone: ReXNet`` in a detector config.

ppdet registers a class under its ``__name__``, so this one keeps the config name.
"""

import importlib
import logging
import os
import sys
from numbers import Integral

import paddle.nn as nn
import paddle.nn.functional as F
from paddle.regularizer import L2Decay

from .. import model as core
from ..plan import PYRAMID_STRIDES
from ..zoo import DEFAULT_VARIANT, VARIANTS, get_variant

logger = logging.getLogger(__name__)


class ReXNet(nn.Layer):
    """ReXNet backbone for PaddleDetection, arguments as ppdet's ResNet (docs/paddledetection.md).

    ``pretrained``: a local file loads now; a source name or URL waits for the first
    training step, as ppdet's pretrain_weights do, so eval and export need no network.
    """

    __shared__ = ["norm_type"]

    def __init__(self, variant=None, width_mult=None, lite=None, ch_div=None,
                 return_idx=[1, 2, 3], freeze_at=-1, freeze_norm=False, norm_type="bn",
                 norm_decay=0., drop_path_rate=0., pretrained=None):
        super().__init__()
        self.variant, arch = _resolve_arch(variant, width_mult, lite, ch_div)
        self.return_idx = _check_return_idx(return_idx)
        if (not isinstance(freeze_at, Integral) or isinstance(freeze_at, bool)
                or not -1 <= freeze_at < len(PYRAMID_STRIDES)):
            raise ValueError(f"ReXNet.freeze_at={freeze_at!r}: expected -1 (nothing frozen) "
                             f"or a stage index 0-3: 0 freezes the stem and the stride-4 "
                             f"stage, 3 the whole backbone.")
        if norm_type not in ("bn", "sync_bn"):
            raise ValueError(f"ReXNet.norm_type={norm_type!r}: expected 'bn' or 'sync_bn'.")
        if norm_decay is not None and not (isinstance(norm_decay, (int, float))
                                           and norm_decay >= 0):
            raise ValueError(f"ReXNet.norm_decay={norm_decay!r}: expected a number >= 0 "
                             f"(0: no decay on norms), or None for the optimizer's decay.")
        self.freeze_at, self.norm_type = freeze_at, norm_type

        body = core.ReXNet(**arch, class_num=0, drop_path_rate=drop_path_rate)
        self._arch, self._pending_pretrained = arch, None
        if pretrained and isinstance(pretrained, str) and os.path.isfile(pretrained):
            from ..weights import load_pretrained
            load_pretrained(body, pretrained, variant=self.variant, skip_head=True)
        elif pretrained:
            self._pending_pretrained = pretrained
        stages = body.stage_info  # strides 4 ... 32
        self._out_channels = [info["num_chs"] for info in stages]
        # Positions in timm's feature_info (it starts at stride 2); the layers
        # after the deepest one returned would be parameters without gradients.
        self._positions = [body.feature_info.index(stages[i]) for i in self.return_idx]
        body.prune_intermediate_layers(self._positions)
        self.body = body

        for bn in body.sublayers() if norm_decay is not None else ():
            if isinstance(bn, nn.BatchNorm2D):
                bn.weight.regularizer = bn.bias.regularizer = L2Decay(norm_decay)
        if freeze_at >= 0:
            end = int(stages[freeze_at]["module"].split(".")[1]) + 1  # stem + stages
            for p in body.features[:end].parameters():
                p.stop_gradient = True
            _freeze_norms(body.features, {str(i) for i in range(end)})
        if freeze_norm:
            _freeze_norms(body)

    @property
    def out_shape(self):
        from ppdet.modeling.shape_spec import ShapeSpec
        return [ShapeSpec(channels=self._out_channels[i], stride=PYRAMID_STRIDES[i])
                for i in self.return_idx]

    def forward(self, inputs):
        if self._pending_pretrained and self.training:
            from ..weights import load_pretrained
            # Load into a whole network (the body is pruned), then copy across.
            full = core.ReXNet(**self._arch, class_num=0)
            load_pretrained(full, self._pending_pretrained, variant=self.variant, skip_head=True)
            mine = self.body.state_dict()
            self.body.set_state_dict({k: v for k, v in full.state_dict().items() if k in mine})
            self._pending_pretrained = None
        return self.body.forward_intermediates(inputs["image"], self._positions,
                                               stop_early=True, intermediates_only=True)


class FrozenBatchNorm2D(nn.Layer):
    """BatchNorm fixed in training too. Not a BatchNorm subclass, so ppdet's
    sync_bn conversion leaves it frozen; same tensor names, so checkpoints load."""

    def __init__(self, bn: nn.BatchNorm2D):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self._mean, self._variance, self._epsilon = bn._mean, bn._variance, bn._epsilon
        self.weight.stop_gradient = self.bias.stop_gradient = True

    def forward(self, x):
        return F.batch_norm(x, self._mean, self._variance, self.weight, self.bias,
                            training=False, epsilon=self._epsilon)


def _freeze_norms(layer: nn.Layer, children=None) -> None:
    """Replace every BatchNorm2D under ``layer`` (or its named ``children``) in place."""
    for name, child in list(layer.named_children()):
        if children is None or name in children:
            if isinstance(child, nn.BatchNorm2D):
                layer.add_sublayer(name, FrozenBatchNorm2D(child))
            else:
                _freeze_norms(child)


def _resolve_arch(variant, width_mult, lite, ch_div):
    """-> (variant name or None, ReXNet's arch kwargs), with one clear error on conflict."""
    if width_mult is None and lite is None and ch_div is None:
        variant = variant or DEFAULT_VARIANT
    if variant is not None:
        v = get_variant(variant)
        if any(given is not None and given != own for given, own in
               ((width_mult, v.width_mult), (lite, v.kind == "lite"), (ch_div, v.ch_div))):
            raise ValueError(
                f"ReXNet: variant {variant} has width_mult {v.width_mult}, lite {v.kind == 'lite'} and "
                f"ch_div {v.ch_div}, but the config also sets width_mult={width_mult!r}, "
                f"lite={lite!r}, ch_div={ch_div!r}. Set either the variant or "
                f"width_mult/lite/ch_div.")
        return variant, v.arch
    width_mult = 1.0 if width_mult is None else width_mult
    if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool):
        raise ValueError(f"ReXNet.width_mult={width_mult!r}: expected a number, e.g. 1.0 or 1.5.")
    arch = {"width_mult": float(width_mult), "lite": bool(lite), "ch_div": ch_div}
    # A width from the table still gets its name, so pretrained=True works.
    return next((n for n, v in VARIANTS.items() if v.arch == arch), None), arch


def _check_return_idx(return_idx):
    if isinstance(return_idx, Integral):
        return_idx = [return_idx]
    if (not isinstance(return_idx, (list, tuple)) or not return_idx
            or any(not isinstance(i, Integral) or not 0 <= i < len(PYRAMID_STRIDES)
                   for i in return_idx)
            or list(return_idx) != sorted(set(return_idx))):
        valid = ", ".join(f"{i} (stride {s})" for i, s in enumerate(PYRAMID_STRIDES))
        raise ValueError(f"ReXNet.return_idx={return_idx!r}: expected increasing stage "
                         f"indices among {valid}, e.g. [1, 2, 3].")
    return list(return_idx)


def register(module=None):
    """Register ReXNet with ppdet's workspace (``module``: the ``ppdet`` package,
    default: import it). Idempotent; values of a config merged earlier are kept."""
    workspace = importlib.import_module(f"{getattr(module, '__name__', 'ppdet')}.core.workspace")
    existing = workspace.global_config.pop(ReXNet.__name__, None)
    if getattr(existing, "pymodule", None) is sys.modules[__name__]:
        workspace.global_config[ReXNet.__name__] = existing  # registered already
        return ReXNet
    if hasattr(existing, "pymodule"):  # another package's class
        logger.warning("ppdet already has a ReXNet from %s; rexnet-plugin replaces it",
                       existing.pymodule.__name__)
    workspace.register(workspace.serializable(ReXNet))
    if existing and not hasattr(existing, "pymodule"):  # a config merged before registration
        workspace.global_config[ReXNet.__name__].update(existing)
    return ReXNet
