"""ReXNet for PaddlePaddle, PaddleClas, PaddleDetection and PaddleX; attributes load lazily,
so the start-up hook (integrations.autoload) never imports paddle."""

__version__ = "0.2.0"

_LAZY = {  # public name -> module that defines it
    "ReXNet": "model", "channel_plan": "plan", "ChannelPlan": "plan", "BlockSpec": "plan",
    "VARIANTS": "zoo", "Variant": "zoo", "get_variant": "zoo", "create_model": "factories",
    "load_pretrained": "weights", "WeightsError": "weights.errors",
}


def __getattr__(name: str):
    import importlib  # here, not at start-up: it imports warnings
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in importlib.import_module(".zoo", __name__).VARIANTS:
        return getattr(importlib.import_module(".factories", __name__), name)
    raise AttributeError(f"module 'rexnet_plugin' has no attribute {name!r}")

