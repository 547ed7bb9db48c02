"""The PaddleDetection backbone: shapes, freezing, norms, pretrained weights, errors.

The class itself needs only paddle; the tests that use ppdet's own pieces
(ShapeSpec, OptimizerBuilder, checkpoint matching, the workspace) skip when
paddledet is not installed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from rexnet_plugin import create_model  # noqa: E402
from rexnet_plugin.integrations.paddledet import FrozenBatchNorm2D, ReXNet  # noqa: E402
from rexnet_plugin.plan import PYRAMID_STRIDES as STRIDES  # noqa: E402
from rexnet_plugin.weights import WeightsError  # noqa: E402
from weights_helpers import _server, cache, local_only, server  # noqa: E402,F401


def _needs_ppdet():
    return pytest.importorskip("ppdet", reason="paddledet is not installed: "
                               "pip install 'rexnet-plugin[detection]'")


def _image(size=64, batch=2):
    paddle.seed(0)
    return {"image": paddle.randn([batch, 3, size, size])}


def _stage_of(backbone, index: int) -> int:
    """The position in STRIDES of the stage that features[index] belongs to (-1: stem)."""
    ends = backbone.body.plan.stage_indices
    for position, stride in enumerate(STRIDES):
        if index <= ends[stride]:
            return position
    raise AssertionError(index)


@pytest.mark.parametrize("variant", ["ReXNet_3_0", "ReXNetLite_1_5", "ReXNetR_2_0"])
def test_out_shape_is_feature_info_of_each_kind(variant):
    _needs_ppdet()
    backbone = ReXNet(variant=variant, return_idx=[0, 1, 2, 3])
    info = create_model(variant, class_num=0).stage_info
    assert [(s.channels, s.stride) for s in backbone.out_shape] == \
        [(i["num_chs"], i["reduction"]) for i in info]


@pytest.mark.parametrize("variant", ["ReXNet_1_0", "ReXNetLite_1_5", "ReXNetR_1_0"])
@pytest.mark.parametrize("return_idx", [[0, 1, 2, 3], [1, 2, 3], [2]])
def test_forward_returns_the_levels_out_shape_announces(variant, return_idx):
    _needs_ppdet()
    backbone = ReXNet(variant=variant, return_idx=return_idx)
    backbone.eval()
    feats = backbone(_image(size=80))
    assert len(feats) == len(backbone.out_shape) == len(return_idx)
    for feat, spec in zip(feats, backbone.out_shape):
        assert list(feat.shape) == [2, spec.channels, math.ceil(80 / spec.stride),
                                    math.ceil(80 / spec.stride)]


def test_features_equal_the_classification_models_stages():
    """The backbone is the plugin's model: same weights give the same stage outputs."""
    net = create_model("ReXNet_1_3", class_num=0)
    net.eval()
    backbone = ReXNet(variant="ReXNet_1_3", return_idx=[0, 1, 2, 3])
    backbone.set_state_dict({f"body.{k}": v for k, v in net.state_dict().items()
                             if f"body.{k}" in backbone.state_dict()})
    backbone.eval()
    image = _image()
    for ours, theirs in zip(backbone(image), net.forward_stages(image["image"])):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_layers_past_the_deepest_returned_stage_are_dropped():
    """No parameters without gradients (DataParallel rejects them), no head conv."""
    full = ReXNet(variant="ReXNet_1_0", return_idx=[0, 1, 2, 3])
    shallow = ReXNet(variant="ReXNet_1_0", return_idx=[0, 1])
    plan = full.body.plan
    assert len(full.body.features) == plan.stage_indices[32] + 1
    assert len(shallow.body.features) == plan.stage_indices[8] + 1
    feats = shallow(_image())
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is not None for p in shallow.parameters() if not p.stop_gradient)


@pytest.mark.parametrize("freeze_at", [-1, 0, 1, 2, 3])
def test_freeze_at_stops_gradients_and_statistics_up_to_that_stage(freeze_at):
    backbone = ReXNet(variant="ReXNet_1_0", return_idx=[0, 1, 2, 3], freeze_at=freeze_at)
    backbone.train()
    before = {k: v.numpy().copy() for k, v in backbone.state_dict().items()}
    feats = backbone(_image())
    sum(f.mean() for f in feats).backward()
    state = backbone.state_dict()
    for name, param in backbone.named_parameters():
        if name.endswith(("_mean", "_variance")):  # statistics, checked below
            continue
        index = int(name.split(".")[2])  # body.features.<i>....
        frozen = _stage_of(backbone, index) <= freeze_at
        assert param.stop_gradient == frozen, name
        assert (param.grad is None) == frozen, name
    for name, value in state.items():
        if name.endswith("_mean"):
            frozen = _stage_of(backbone, int(name.split(".")[2])) <= freeze_at
            unchanged = np.array_equal(value.numpy(), before[name])
            assert unchanged == frozen, f"{name}: statistics {'moved' if frozen else 'stuck'}"


def test_freeze_norm_uses_running_statistics_and_trains_no_norm_parameter():
    backbone = ReXNet(variant="ReXNetLite_1_0", return_idx=[1, 2, 3], freeze_norm=True)
    image = _image()
    backbone.eval()
    expected = [f.numpy() for f in backbone(image)]
    backbone.train()
    got = backbone(image)  # training mode, but every norm uses its running stats
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-5, atol=1e-5)
    sum(f.mean() for f in got).backward()
    assert not [m for m in backbone.sublayers() if isinstance(m, paddle.nn.BatchNorm2D)]
    norms = [m for m in backbone.sublayers() if isinstance(m, FrozenBatchNorm2D)]
    assert norms and all(m.weight.grad is None and m.bias.grad is None for m in norms)
    convs = [m for m in backbone.sublayers() if isinstance(m, paddle.nn.Conv2D)]
    assert all(m.weight.grad is not None for m in convs)


def test_frozen_norms_survive_the_sync_bn_conversion_and_keep_their_names():
    """ppdet's trainer converts the model for norm_type: sync_bn; frozen stays frozen."""
    plain = ReXNet(variant="ReXNet_1_0", return_idx=[0, 1, 2, 3])
    frozen = ReXNet(variant="ReXNet_1_0", return_idx=[0, 1, 2, 3], freeze_at=1,
                    norm_type="sync_bn")
    assert list(frozen.state_dict()) == list(plain.state_dict())  # checkpoints still fit
    converted = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(frozen)
    for name, layer in converted.named_sublayers():
        if isinstance(layer, (FrozenBatchNorm2D, paddle.nn.SyncBatchNorm)):
            in_frozen_part = _stage_of(frozen, int(name.split(".")[2])) <= 1
            assert isinstance(layer, FrozenBatchNorm2D) == in_frozen_part, name
    assert any(isinstance(m, paddle.nn.SyncBatchNorm) for m in converted.sublayers())


@pytest.mark.parametrize("norm_decay", [0.0, None])
def test_norm_decay_with_ppdets_optimizer_builder(norm_decay):
    """norm_decay 0: ppdet's L2 regularizer leaves BN alone; None: it decays BN too."""
    _needs_ppdet()
    from ppdet.optimizer import OptimizerBuilder
    backbone = ReXNet(variant="ReXNet_1_0", return_idx=[0], norm_decay=norm_decay)
    optimizer = OptimizerBuilder(regularizer={"type": "L2", "factor": 0.5},
                                 optimizer={"type": "Momentum", "momentum": 0.9})(0.1, backbone)
    conv, bn = backbone.body.features[0], backbone.body.features[1]
    conv_before, bn_before = conv.weight.numpy().copy(), bn.weight.numpy().copy()
    (backbone(_image())[0].sum() * 0).backward()  # zero gradients: only decay moves weights
    optimizer.step()
    assert not np.array_equal(conv.weight.numpy(), conv_before)
    assert np.array_equal(bn.weight.numpy(), bn_before) == (norm_decay == 0.0)


def _classification_checkpoint(variant, path):
    paddle.seed(3)
    state = {k: v.numpy() for k, v in create_model(variant).state_dict().items()}
    paddle.save(state, str(path))
    return state


@pytest.mark.parametrize("variant", ["ReXNet_1_0", "ReXNetLite_1_0"])
def test_pretrained_classification_weights_load_with_the_classifier_skipped(variant, tmp_path):
    path = tmp_path / f"{variant}.pdparams"
    imagenet = _classification_checkpoint(variant, path)
    backbone = ReXNet(variant=variant, return_idx=[0, 1, 2, 3], pretrained=str(path))
    state = backbone.state_dict()
    assert state, "empty backbone"
    for key, value in state.items():
        np.testing.assert_array_equal(value.numpy(), imagenet[key[len("body."):]], err_msg=key)
    assert not any(k.startswith("body.output") for k in state)


def test_downloaded_weights_wait_for_the_first_training_step(server, cache, tmp_path):
    """Building the detector (eval, export, infer) never needs the network: a URL
    is fetched at the first forward in training mode, as ppdet's trainer loads
    its pretrain_weights; then every backbone tensor holds the checkpoint's."""
    imagenet = _classification_checkpoint("ReXNet_1_0", tmp_path / "w.pdparams")
    url = server.add("/w.pdparams", tmp_path / "w.pdparams")
    backbone = ReXNet(variant="ReXNet_1_0", return_idx=[0, 1], pretrained=url)
    backbone.eval()
    backbone(_image())
    assert server.hits.get("/w.pdparams", 0) == 0
    backbone.train()
    backbone(_image())
    assert server.hits["/w.pdparams"] == 1
    for key, value in backbone.state_dict().items():
        if key.endswith(("_mean", "_variance")):
            continue  # BN statistics moved with the training step
        np.testing.assert_array_equal(value.numpy(), imagenet[key[len("body."):]], err_msg=key)
    backbone(_image())
    assert server.hits["/w.pdparams"] == 1  # once


def test_pretrained_from_another_variant_is_refused(tmp_path):
    path = tmp_path / "ReXNet_1_3.pdparams"
    _classification_checkpoint("ReXNet_1_3", path)
    with pytest.raises(WeightsError, match="shape conflict"):
        ReXNet(variant="ReXNet_1_0", pretrained=str(path))


def test_ppdet_pretrain_weights_matching_puts_every_tensor_in_its_place(tmp_path):
    """ppdet's own loader (``pretrain_weights:``) maps features.* onto the backbone."""
    _needs_ppdet()
    from ppdet.utils.checkpoint import match_state_dict
    imagenet = _classification_checkpoint("ReXNet_1_0", tmp_path / "w.pdparams")
    backbone = ReXNet(variant="ReXNet_1_0", return_idx=[0, 1, 2, 3])
    detector_state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    detector_state["neck.fpn_inner.0.weight"] = paddle.zeros([1])  # not from the checkpoint
    matched = match_state_dict(detector_state, imagenet)
    expected = {k for k in detector_state if k.startswith("backbone.")}
    assert set(matched) == expected
    for key in expected:
        np.testing.assert_array_equal(np.asarray(matched[key]),
                                      imagenet[key[len("backbone.body."):]])


def test_width_and_lite_instead_of_a_variant():
    from rexnet_plugin.model import ReXNet as Net
    custom = ReXNet(width_mult=1.2, lite=True, return_idx=[0, 1, 2, 3])
    assert custom.variant is None
    info = Net(1.2, lite=True, class_num=0).stage_info
    assert custom._out_channels == [i["num_chs"] for i in info]
    # A width that is in the table gets the variant's name (pretrained=True needs it).
    assert ReXNet(width_mult=1.5, return_idx=[3]).variant == "ReXNet_1_5"
    assert ReXNet(width_mult=2.0, ch_div=8, return_idx=[3]).variant == "ReXNetR_2_0"
    assert ReXNet(return_idx=[3]).variant == "ReXNet_1_0"
    rexnetr = ReXNet(width_mult=1.7, ch_div=8, return_idx=[0, 1, 2, 3])  # no table width
    assert rexnetr.variant is None
    assert rexnetr._out_channels == [i["num_chs"] for i in Net(1.7, ch_div=8).stage_info]


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "ReXNet_1_1"}, "Unknown ReXNet variant"),
    ({"variant": "ReXNet_1_0", "width_mult": 1.5}, "Set either the variant or width_mult"),
    ({"variant": "ReXNet_1_0", "lite": True}, "Set either the variant or width_mult"),
    ({"variant": "ReXNetR_1_0", "ch_div": 16}, "Set either the variant or width_mult"),
    ({"variant": "ReXNetR_2_2"}, "ReXNetR_2_0"),
    ({"width_mult": 1.0, "ch_div": 12}, "accepted values are 8, 16"),
    ({"return_idx": [3, 1]}, "ReXNet.return_idx"),
    ({"return_idx": [4]}, "ReXNet.return_idx"),
    ({"return_idx": []}, "ReXNet.return_idx"),
    ({"freeze_at": 4}, "ReXNet.freeze_at"),
    ({"norm_type": "gn"}, "ReXNet.norm_type"),
    ({"norm_decay": -1}, "ReXNet.norm_decay"),
    ({"width_mult": 0.3}, "width_mult"),
])
def test_bad_arguments_name_the_key_and_the_accepted_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReXNet(**kwargs)


_SCRIPT = textwrap.dedent("""
    import json, sys
    from ppdet.core import workspace  # no rexnet_plugin import
    workspace.load_config(sys.argv[1])
    result = {}
    try:
        backbone = workspace.create("ReXNet")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        import ppdet
        from rexnet_plugin.integrations.paddledet import register
        register(ppdet)  # by hand, after a config with a ReXNet section was merged
        register(ppdet)  # twice: harmless
        backbone = workspace.create("ReXNet")
    schema = workspace.global_config["ReXNet"]
    print("RESULT " + json.dumps({**result, "module": schema.pymodule.__name__,
        "shared": list(schema.shared), "variant": backbone.variant,
        "out_shape": [[s.channels, s.stride] for s in backbone.out_shape]}))
""")


@pytest.mark.parametrize("autoload", [True, False])
def test_registration_before_or_after_a_config_is_loaded(autoload, tmp_path):
    """Installing the package is the whole setup: `import ppdet` registers ReXNet.
    Without autoload, ppdet refuses the section; register() by hand keeps its values."""
    _needs_ppdet()
    config = tmp_path / "backbone.yml"
    config.write_text("ReXNet:\n  variant: ReXNetLite_1_3\n  return_idx: [2, 3]\n")
    env = {k: v for k, v in os.environ.items() if k != "REXNET_PLUGIN_AUTOLOAD"}
    if not autoload:
        env["REXNET_PLUGIN_AUTOLOAD"] = "0"
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(config)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    error = result.pop("error", "")
    assert ("ReXNet" in error and "not registered" in error) == (not autoload), error
    info = create_model("ReXNetLite_1_3", class_num=0).feature_info
    assert result == {"module": "rexnet_plugin.integrations.paddledet", "shared": ["norm_type"],
                      "variant": "ReXNetLite_1_3",
                      "out_shape": [[i["num_chs"], i["reduction"]] for i in info[3:]]}
