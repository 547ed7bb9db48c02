"""Train, eval, headless and multi-scale use, and export to Paddle Inference."""

import numpy as np
import paddle
import pytest

from rexnet_plugin import ReXNet, create_model
from rexnet_plugin.deploy.export import export_inference
from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
from rexnet_plugin.model import DropPath


def test_train_step_reaches_every_parameter_and_updates_bn(official_shapes):
    paddle.seed(0)
    model = create_model("ReXNet_1_0", class_num=10)
    model.train()
    bn_means = {k: v.numpy().copy() for k, v in model.state_dict().items() if k.endswith("_mean")}
    x = paddle.randn([4, 3, 64, 64])
    loss = paddle.nn.functional.cross_entropy(model(x), paddle.to_tensor([0, 1, 2, 3]))
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if not p.stop_gradient]
    official = official_shapes["rexnetv1_1.0"]["state_dict"]
    assert len(trainable) == sum(k.endswith(("weight", "bias")) for k in official)
    no_grad = [n for n, p in trainable if p.grad is None or not np.any(p.grad.numpy())]
    assert no_grad == []
    stale = [k for k, v in model.state_dict().items()
             if k in bn_means and np.array_equal(v.numpy(), bn_means[k])]
    assert stale == []


def test_eval_is_deterministic_and_train_dropout_is_not():
    paddle.seed(0)
    model = create_model("ReXNetLite_1_0", class_num=5, dropout_ratio=0.5)
    x = paddle.randn([2, 3, 64, 64])
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    model.train()
    assert not np.array_equal(model(x).numpy(), model(x).numpy())


def test_drop_path_rises_linearly_and_is_off_by_default():
    model = create_model("ReXNet_1_0", drop_path_rate=0.2)
    blocks = list(model.features)[3:19]
    rates = [b.drop_path.drop_prob if b.drop_path else 0.0 for b in blocks]
    expected = [0.2 * i / 15 if b.use_shortcut else 0.0 for i, b in enumerate(blocks)]
    assert rates == pytest.approx(expected)
    assert max(rates) == pytest.approx(0.2)  # the last block has a shortcut
    assert all(b.drop_path is None for b in list(create_model("ReXNet_1_0").features)[3:19])


def test_drop_path_drops_whole_samples_in_training_only():
    paddle.seed(1)
    layer = DropPath(0.5)
    x = paddle.ones([64, 2, 3, 3])
    layer.train()
    y = layer(x).numpy()
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}  # kept samples scaled by 1/keep
    assert all(len(set(row)) == 1 for row in per_sample)
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


@pytest.mark.parametrize("class_num", [0, None])
def test_headless_model_returns_pooled_features(class_num):
    for name in ("ReXNet_1_3", "ReXNetLite_1_3"):
        model = create_model(name, class_num=class_num)
        model.eval()
        assert model.output is None
        assert not any(k.startswith("output.") for k in model.state_dict())
        out = model(paddle.randn([2, 3, 64, 96]))
        assert out.shape == [2, model.num_features] == [2, 1664]


@pytest.mark.parametrize("name", ["ReXNet_1_5", "ReXNetLite_2_0"])
def test_forward_stages_match_feature_info(name):
    model = create_model(name)
    model.eval()
    stages = model.forward_stages(paddle.randn([1, 3, 128, 96]))
    assert [s.shape for s in stages] == [
        [1, info["num_chs"], 128 // info["reduction"], 96 // info["reduction"]]
        for info in model.stage_info]
    assert [i["reduction"] for i in model.stage_info] == [4, 8, 16, 32]
    assert model.stage_info == model.feature_info[1:]  # timm's list starts at stride 2


def test_depth_multiplier_adds_blocks_and_keeps_strides():
    model = ReXNet(width_mult=1.0, depth_mult=1.5)
    assert len(model.plan.blocks) == 2 + 3 + 3 + 5 + 5 + 8
    assert [b.output_stride for b in model.plan.blocks][-1] == 32
    model.eval()
    stages = model.forward_stages(paddle.randn([1, 3, 64, 64]))
    assert [s.shape[2] for s in stages] == [16, 8, 4, 2]
    assert model(paddle.randn([1, 3, 64, 64])).shape == [1, 1000]


def test_narrow_width_builds_and_runs():
    model = ReXNet(width_mult=0.5, class_num=3)
    model.eval()
    assert model(paddle.randn([1, 3, 32, 32])).shape == [1, 3]


@pytest.mark.slow  # exports twice
@pytest.mark.parametrize("name", ["ReXNet_1_0", "ReXNetLite_1_0"])
def test_exported_model_matches_dygraph_with_dynamic_batch(name, tmp_path):
    paddle.seed(0)
    model = create_model(name)
    model.eval()
    export_dir = export_inference(model, tmp_path / "export")
    assert sorted(p.name for p in export_dir.iterdir()) == ["inference.json", "inference.pdiparams"]
    predictor = create_predictor(export_dir, mkldnn=True)
    rng = np.random.RandomState(0)
    for shape in [(1, 3, 224, 224), (3, 3, 161, 97)]:
        x = rng.randn(*shape).astype("float32")
        expected = model(paddle.to_tensor(x)).numpy()
        got = run_predictor(predictor, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
