"""ReXNet for PaddlePaddle, PaddleClas, PaddleDetection and PaddleX; attributes load lazily,
so the start-up hook (integrations.autoload) never imports paddle."""

TYPE_CHECKING = False  # not typing's: importing typing would slow every Python start-up

__version__ = "0.2.0"

_LAZY = {  # public name -> module that defines it
    "ReXNet": "model", "channel_plan": "plan", "ChannelPlan": "plan", "BlockSpec": "plan",
    "VARIANTS": "zoo", "Variant": "zoo", "get_variant": "zoo", "create_model": "factories",
    "load_pretrained": "weights", "WeightsError": "weights.errors",
}

if TYPE_CHECKING:
    from .factories import *  # noqa: F401,F403
    from .model import ReXNet  # noqa: F401


def __getattr__(name: str):
    import importlib  # here, not at start-up: it imports warnings
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in importlib.import_module(".zoo", __name__).VARIANTS:
        return getattr(importlib.import_module(".factories", __name__), name)
    raise AttributeError(f"module 'rexnet_plugin' has no attribute {name!r}")


def __dir__():
    import importlib
    return sorted([*globals(), *_LAZY, *importlib.import_module(".zoo", __name__).VARIANTS])
