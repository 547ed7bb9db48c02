"""The architecture equals the official one: counts, shapes and key layout."""

import paddle
import pytest

from rexnet_plugin import create_model
from rexnet_plugin.complexity import count_conv_macs, count_params
from rexnet_plugin.zoo import PADDLECLAS_BUILTIN_NAMES, PPIM_VARIANTS, VARIANTS

# The official kinds; ReXNet-R (timm's) is checked in tests/test_rexnetr.py.
OFFICIAL = [n for n, v in VARIANTS.items() if v.official_name]

# official torch layer type -> ours
TYPE_NAMES = {"Conv2d": "Conv2D", "BatchNorm2d": "BatchNorm2D", "SiLU": "Silu",
              "ReLU6": "ReLU6", "LinearBottleneck": "LinearBottleneck"}


def test_every_official_variant_is_in_the_table(official_shapes):
    covered = {VARIANTS[n].official_name for n in OFFICIAL}
    assert {v.kind for n, v in VARIANTS.items() if n not in OFFICIAL} == {"r"}
    assert set(official_shapes) - {"_notes"} == covered


@pytest.mark.parametrize("name", OFFICIAL)
def test_params_and_conv_macs_equal_official(name, official_shapes):
    ref = official_shapes[VARIANTS[name].official_name]
    model = create_model(name)
    assert count_params(model) == ref["params"]
    assert count_conv_macs(model, 224) == ref["conv_macs"]


@pytest.mark.parametrize("name", OFFICIAL)
def test_blocks_and_feature_maps_equal_official(name, official_shapes):
    ref = official_shapes[VARIANTS[name].official_name]
    model = create_model(name)
    blocks = [{"in": b.in_channels, "out": b.out_channels, "use_shortcut": b.use_shortcut}
              for b in model.plan.blocks]
    assert blocks == ref["blocks"]

    # Our `features` stops at the head activation; the official V1 also puts
    # the global pool there (element 22), which we run in forward_head.
    shapes = []
    x = paddle.zeros([1, 3, 224, 224])
    model.eval()
    for layer in model.features:
        x = layer(x)
        shapes.append({"type": type(layer).__name__, "channels": x.shape[1],
                       "out_hw": x.shape[2:], "stride": 224 // x.shape[2]})
    expected = [{"type": TYPE_NAMES[f["type"]], "channels": f["channels"],
                 "out_hw": f["out_hw"], "stride": f["stride"]}
                for f in ref["features"] if f["type"] != "AdaptiveAvgPool2d"]
    assert shapes == expected


@pytest.mark.parametrize("name", OFFICIAL)
def test_state_dict_matches_official_key_layout(name, official_shapes):
    """Official torch keys, with Paddle's BN names, in the same order."""
    ref = official_shapes[VARIANTS[name].official_name]["state_dict"]
    expected = {k.replace("running_mean", "_mean").replace("running_var", "_variance"): shape
                for k, shape in ref.items() if not k.endswith("num_batches_tracked")}
    ours = {k: list(v.shape) for k, v in create_model(name).state_dict().items()}
    assert list(ours) == list(expected)
    assert ours == expected


@pytest.mark.parametrize("name", PPIM_VARIANTS)
def test_state_dict_equals_paddleclas(name, paddleclas_state_dicts):
    ref = paddleclas_state_dicts[name]
    model = create_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == ref["state_dict"]
    assert len(ours) == ref["num_tensors"]
    assert count_params(model) == ref["trainable_params"]


def test_ppim_and_paddleclas_publish_the_same_variants(paddleclas_state_dicts):
    assert PPIM_VARIANTS == PADDLECLAS_BUILTIN_NAMES == tuple(paddleclas_state_dicts)
