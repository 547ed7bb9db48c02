"""Bad model arguments and inputs get clear errors or a documented conversion."""

from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from rexnet_plugin import ReXNet, create_model
from rexnet_plugin.plan import MAX_WIDTH_MULT, R_CH_DIVS, channel_plan


@pytest.mark.parametrize("width_mult,match", [
    (math.nan, "width_mult=nan"),
    (math.inf, "width_mult=inf"),
    (True, "width_mult=True"),
    ("1.0", "width_mult='1.0'"),
    (0.3, "0.5 <= width_mult <= 6.0"),
    (6.5, "0.5 <= width_mult <= 6.0"),
    (100, "did you mean width_mult=1"),
])
def test_width_mult_outside_what_can_be_built(width_mult, match):
    with pytest.raises(ValueError, match=match):
        ReXNet(width_mult=width_mult)


def test_the_widest_width_still_builds_its_plan():
    plan = channel_plan(MAX_WIDTH_MULT)  # the plan only: the model would be ~140 M params
    assert plan.head_channels == int(1280 * MAX_WIDTH_MULT)
    with pytest.raises(ValueError):
        channel_plan(MAX_WIDTH_MULT + 0.1)


@pytest.mark.parametrize("kwargs,match", [
    ({"depth_mult": math.nan}, "depth_mult=nan"),
    ({"depth_mult": 0}, "0 < depth_mult"),
    ({"depth_mult": 5}, "depth_mult <= 4.0"),
    ({"class_num": True}, "class_num=True"),
    ({"class_num": -1}, "class_num=-1"),
    ({"class_num": 10.0}, "class_num=10.0"),
    ({"se_ratio": 0}, "se_ratio=0"),
    ({"se_ratio": True}, "se_ratio=True"),
    ({"se_ratio": 1 / 12}, "timm writes the SE width as a fraction"),
    ({"se_ratio": 10_000}, "leaves a squeeze-excite layer"),
    ({"dropout_ratio": -0.1}, "0 <= dropout_ratio < 1"),
    ({"dropout_ratio": 1.0}, "0 <= dropout_ratio < 1"),
    ({"dropout_ratio": math.nan}, "dropout_ratio=nan"),
    ({"dropout_ratio": True}, "dropout_ratio=True"),
    ({"drop_path_rate": math.nan}, "drop_path_rate=nan"),
    ({"lite": "yes"}, "lite='yes'"),
    ({"use_se": 1}, "use_se=1"),
    ({"ch_div": 12}, "accepted values are 8, 16"),
    ({"ch_div": True}, "accepted values are 8, 16"),
    ({"ch_div": 8, "lite": True}, "ReXNet-lite has its own rounding"),
])
def test_bad_arguments_are_named_with_the_accepted_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReXNet(**kwargs)


def test_every_accepted_ch_div_builds():
    for ch_div in R_CH_DIVS:
        plan = channel_plan(1.7, ch_div=ch_div)  # a width timm has no model for
        assert all(b.out_channels % ch_div == 0 for b in plan.blocks)
        assert plan.kind == "r"


# -- inputs -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    paddle.seed(0)
    net = create_model("ReXNet_1_0", class_num=4)
    net.eval()
    return net


def _x(dtype="float32"):
    return np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(dtype)


def test_numpy_arrays_are_refused_with_the_fix(model):
    with pytest.raises(TypeError, match=r"numpy array.*paddle\.to_tensor"):
        model(_x())
    with pytest.raises(TypeError, match="numpy array"):
        model.forward_intermediates(_x())
    with pytest.raises(TypeError, match="expected a paddle.Tensor"):
        model([[1.0]])


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
def test_integer_images_are_refused_with_the_fix(model, dtype):
    with pytest.raises(TypeError, match=rf"dtype {dtype}.*astype\('float32'\) / 255"):
        model(paddle.to_tensor(_x() > 0).astype(dtype))


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_other_float_dtypes_are_cast_to_the_models(model, dtype):
    x = _x(dtype)
    with paddle.no_grad():
        got = model(paddle.to_tensor(x))
        expected = model(paddle.to_tensor(x.astype("float32")))
    assert got.dtype == paddle.float32
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_a_float64_model_takes_float32_images():
    paddle.seed(0)
    net = create_model("ReXNetLite_1_0", class_num=3)
    net.to(dtype="float64")
    net.eval()
    with paddle.no_grad():
        out = net(paddle.to_tensor(_x()))
    assert out.dtype == paddle.float64 and out.shape == [1, 3]


def test_mixed_precision_still_runs(model):
    with paddle.no_grad(), paddle.amp.auto_cast(level="O1"):
        out = model(paddle.to_tensor(_x()))
    assert out.shape == [1, 4] and np.isfinite(out.astype("float32").numpy()).all()
