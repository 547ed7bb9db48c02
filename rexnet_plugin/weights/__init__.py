"""ReXNet weights: file formats, key layouts, download and cache, checks, loading.

The public entry points are re-exported here::

    from rexnet_plugin.weights import load_pretrained, model_from_checkpoint

Modules, by job: ``formats`` (read/write .pdparams, .safetensors, .pth),
``layouts`` (Paddle, official and timm key names), ``checks`` (what a
checkpoint is, and whether it fits a model), ``download`` (cache, mirror,
checked downloads), ``loading`` (``pretrained=``), ``convert``
(``rexnet-plugin convert``), ``errors``.
"""

from .checks import CheckpointInfo, check_state_dict, inspect_state
from .errors import WeightsError
from .layouts import canonical_state, detect_layout, timm_to_official, to_canonical, to_official
from .loading import (SOURCE_NAMES, fetch_pretrained, forget, inspect_checkpoint,
                      load_pretrained, load_state_dict, model_from_checkpoint, should_skip_head,
                      sources_table)

__all__ = [
    "CheckpointInfo", "SOURCE_NAMES", "WeightsError", "canonical_state", "check_state_dict",
    "detect_layout", "fetch_pretrained", "forget", "timm_to_official", "inspect_checkpoint",
    "inspect_state",
    "load_pretrained", "load_state_dict", "model_from_checkpoint", "should_skip_head",
    "sources_table",
    "to_canonical", "to_official",
]
