"""ReXNet for PaddlePaddle, PaddleClas, PaddleDetection and PaddleX.

``from rexnet_plugin import ReXNet_1_0`` builds a ``paddle.nn.Layer``.
Attributes load lazily, so that the start-up hook (which imports
``rexnet_plugin.integrations.autoload``) never imports paddle.
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing (re, enum) would cost every Python
# start-up ~8 ms through the autoload hook (docs/paddleclas.md). Type checkers
# treat this name alike.
TYPE_CHECKING = False

__version__ = "0.2.0"

# public name -> module that defines it
_LAZY = {
    "ReXNet": "model", "channel_plan": "plan", "ChannelPlan": "plan", "BlockSpec": "plan",
    "VARIANTS": "zoo", "Variant": "zoo", "get_variant": "zoo",
    "create_model": "factories",
    "load_pretrained": "weights", "WeightsError": "weights.errors",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads them
    from .factories import *  # noqa: F401,F403
    from .model import ReXNet  # noqa: F401


def __getattr__(name: str):
    import importlib  # here, not at start-up: it imports warnings
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    zoo = importlib.import_module(".zoo", __name__)
    if name in zoo.VARIANTS:
        return getattr(importlib.import_module(".factories", __name__), name)
    raise AttributeError(f"module 'rexnet_plugin' has no attribute {name!r}")


def __dir__():
    import importlib
    zoo = importlib.import_module(".zoo", __name__)
    return sorted([*globals(), *_LAZY, *zoo.VARIANTS])
