"""Bad input fails early, naming the argument and the accepted values."""

import paddle
import pytest

from rexnet_plugin import ReXNet, create_model, get_variant


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_model("ReXNet_1_4")
    msg = str(err.value)
    assert "'ReXNet_1_4'" in msg and "ReXNet_1_3" in msg and "ReXNetLite_2_0" in msg
    with pytest.raises(ValueError, match="Valid names"):
        get_variant("resnet50")


@pytest.mark.parametrize("width", [0.3, 0.49, -1])
def test_width_below_supported_range(width):
    with pytest.raises(ValueError, match=r"width_mult=.*0.5 <= width_mult"):
        ReXNet(width_mult=width)


def test_bad_depth_and_class_num():
    with pytest.raises(ValueError, match="depth_mult"):
        ReXNet(depth_mult=0)
    with pytest.raises(ValueError, match="class_num"):
        ReXNet(class_num=-3)
    with pytest.raises(ValueError, match="drop_path_rate"):
        ReXNet(drop_path_rate=1.5)


@pytest.mark.parametrize("shape", [[1, 1, 64, 64], [1, 4, 64, 64], [2, 64, 64, 3], [3, 64, 64]])
def test_wrong_channels_or_rank(shape):
    model = create_model("ReXNetLite_1_0")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model(paddle.zeros(shape))


@pytest.mark.parametrize("hw", [(31, 64), (64, 16), (8, 8)])
def test_input_smaller_than_32(hw):
    model = create_model("ReXNet_1_0")
    with pytest.raises(ValueError, match="at least 32 pixels"):
        model(paddle.zeros([1, 3, *hw]))
    with pytest.raises(ValueError, match="at least 32 pixels"):
        model.forward_stages(paddle.zeros([1, 3, *hw]))
