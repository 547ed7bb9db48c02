"""Parameter and multiply-accumulate counts, measured on a built model."""

from __future__ import annotations

import math

import paddle
import paddle.nn as nn


def count_params(model: nn.Layer) -> int:
    """Trainable parameters; BN running statistics are not counted."""
    return sum(int(p.numel()) for p in model.parameters() if not p.stop_gradient)


def count_conv_macs(model: nn.Layer, image_size: int = 224) -> dict[str, int]:
    """Conv multiply-accumulates of one image: body ("features"), classifier ("head"), total."""
    output = getattr(model, "output", None)
    head = {id(layer) for layer in output.sublayers()} if output else set()
    macs = {"features": 0, "head": 0}

    def hook(layer, inputs, out):
        macs["head" if id(layer) in head else "features"] += int(
            math.prod(out.shape[1:]) * math.prod(layer.weight.shape[1:]))

    handles = [layer.register_forward_post_hook(hook)
               for layer in model.sublayers() if isinstance(layer, nn.Conv2D)]
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, 3, image_size, image_size]))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    macs["total"] = macs["features"] + macs["head"]
    return macs
