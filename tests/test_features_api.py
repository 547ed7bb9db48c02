"""timm's features API on every kind: forward_intermediates, prune_intermediate_layers,
forward_head, reset_classifier and feature_info (num_chs, reduction, module)."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from rexnet_plugin import ReXNet, create_model

KINDS = ["ReXNet_1_0", "ReXNetLite_1_0", "ReXNetR_1_3"]


def _image(shape=(2, 3, 64, 96), seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    paddle.seed(0)
    net = create_model(request.param, class_num=5)
    net.eval()
    return net


def _by_layer(net, x):
    """The output of every element of ``features``, run one by one."""
    outs = []
    for layer in net.features:
        x = layer(x)
        outs.append(x)
    return outs


def test_feature_info_has_timms_keys_and_describes_the_outputs(model):
    info = model.feature_info
    assert [set(i) for i in info] == [{"num_chs", "reduction", "module"}] * 5
    assert [i["reduction"] for i in info] == [2, 4, 8, 16, 32]
    x = _image()
    with paddle.no_grad():
        layers = _by_layer(model, x)
    for entry in info:
        out = layers[int(entry["module"].split(".")[1])]
        assert out.shape == [2, entry["num_chs"], 64 // entry["reduction"], 96 // entry["reduction"]]
        # the last output at that stride: the next layer changes stride or is the head conv
        nxt = layers[int(entry["module"].split(".")[1]) + 1]
        assert nxt.shape[2] < out.shape[2] or nxt.shape[1] == model.num_features


def test_forward_intermediates_indices_as_timm(model):
    x = _image()
    with paddle.no_grad():
        layers = _by_layer(model, x)
        ends = [int(i["module"].split(".")[1]) for i in model.feature_info]
        final, every = model.forward_intermediates(x)
        assert len(every) == 5
        assert len(ends) == len(every)
        for got, end in zip(every, ends):
            np.testing.assert_array_equal(got.numpy(), layers[end].numpy())
        np.testing.assert_array_equal(final.numpy(), model.forward_features(x).numpy())
        # int n: the last n; a list: those positions, negative from the end
        last_two = model.forward_intermediates(x, 2, intermediates_only=True)
        assert [t.shape for t in last_two] == [t.shape for t in every[3:]]
        picked = model.forward_intermediates(x, [0, -1], intermediates_only=True)
        assert [t.shape for t in picked] == [every[0].shape, every[4].shape]
        # stop_early: the final output is the deepest intermediate taken
        final, early = model.forward_intermediates(x, [1, 2], stop_early=True)
        np.testing.assert_array_equal(final.numpy(), early[-1].numpy())
        np.testing.assert_array_equal(early[0].numpy(), every[1].numpy())
        # norm: nothing to apply, the same outputs
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(normed, every))
        # forward_stages is strides 4 ... 32 of the same loop
        stages = model.forward_stages(x)
        assert len(stages) == len(every) - 1
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(stages, every[1:]))


@pytest.mark.parametrize("kwargs,match", [
    ({"indices": 6}, "1 <= n <= 5"),
    ({"indices": 0}, "1 <= n <= 5"),
    ({"indices": [0, 5]}, r"\[5\] out of range"),
    ({"indices": [-6]}, "out of range"),
    ({"indices": "all"}, "expected None"),
    ({"indices": []}, "expected None"),
    ({"output_fmt": "NHWC"}, "only 'NCHW'"),
])
def test_forward_intermediates_bad_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.forward_intermediates(_image(), **kwargs)


def test_forward_head_and_pre_logits(model):
    x = _image()
    with paddle.no_grad():
        feats = model.forward_features(x)
        assert model.forward_head(feats).shape == [2, 5]
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == [2, model.num_features]
        np.testing.assert_allclose(pooled.numpy(), feats.mean(axis=[2, 3]).numpy(), atol=1e-5)
        np.testing.assert_array_equal(model(x).numpy(), model.forward_head(feats).numpy())


@pytest.mark.parametrize("name", KINDS)
def test_reset_classifier_gives_the_layout_of_that_class_count(name):
    paddle.seed(0)
    model = create_model(name)
    hidden = {k: v.numpy() for k, v in model.state_dict().items()
              if k.startswith("output.") and not k.startswith(f"output.{len(model.output) - 1}.")}
    model.reset_classifier(10)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in create_model(name, class_num=10).state_dict().items()}
    assert model.class_num == 10
    # lite's 1024-channel layer before the class layer is kept, weights and all
    for key, value in hidden.items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value)
    model.eval()
    assert model(_image()).shape == [2, 10]

    model.reset_classifier(0)
    assert model.output is None and model.class_num == 0
    assert not any(k.startswith("output.") for k in model.state_dict())
    assert model(_image()).shape == [2, model.num_features]
    model.reset_classifier(3)  # from headless: a whole new classifier
    assert shapes.keys() == model.state_dict().keys() and model(_image()).shape == [2, 3]

    for bad in (True, -1, 2.5, "10"):
        with pytest.raises(ValueError, match="num_classes"):
            model.reset_classifier(bad)


def test_prune_intermediate_layers_keeps_what_is_asked():
    paddle.seed(0)
    model = create_model("ReXNetR_1_0")
    model.eval()
    x = _image()
    with paddle.no_grad():
        wanted = model.forward_intermediates(x, [1, 2], intermediates_only=True)
    assert model.prune_intermediate_layers([1, 2]) == [1, 2]
    assert len(model.features) == int(model.feature_info[2]["module"].split(".")[1]) + 1
    assert model.output is None and not any(k.startswith("output.") for k in model.state_dict())
    with paddle.no_grad():
        got = model.forward_intermediates(x, [1, 2], intermediates_only=True)
        assert len(got) == len(wanted)
        for a, b in zip(got, wanted):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        with pytest.raises(ValueError, match="prune_intermediate_layers removed"):
            model.forward_intermediates(x, [3])

    kept_head = create_model("ReXNet_1_0", class_num=4)
    assert kept_head.prune_intermediate_layers(2, prune_head=False) == [3, 4]
    assert kept_head.output is not None and kept_head.class_num == 4


def test_feature_info_of_a_custom_depth():
    model = ReXNet(width_mult=1.0, depth_mult=2.0, class_num=0)
    info = model.feature_info
    assert [i["reduction"] for i in info] == [2, 4, 8, 16, 32]
    # two stride-1 blocks at stride 2 now: the second one ends that stride
    assert info[0]["module"] == "features.4"
    model.eval()
    outs = model.forward_intermediates(_image((1, 3, 64, 64)), intermediates_only=True)
    assert [o.shape[1] for o in outs] == [i["num_chs"] for i in info]
