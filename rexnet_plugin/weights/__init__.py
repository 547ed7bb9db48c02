"""ReXNet weights: formats, layouts, checks, downloads and ``pretrained=`` (docs/weights.md)."""

from .checks import CheckpointInfo, check_state_dict, inspect_state
from .errors import WeightsError
from .layouts import canonical_state, detect_layout, timm_to_official, to_canonical, to_official
from .loading import (SOURCE_NAMES, fetch_pretrained, forget, inspect_checkpoint,
                      load_pretrained, load_state_dict, model_from_checkpoint, should_skip_head,
                      sources_table)

