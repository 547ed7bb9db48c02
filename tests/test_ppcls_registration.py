"""ReXNet inside PaddleClas (the pip wheel's ``paddleclas.ppcls``): build_model,
RecModel, DistillationModel, TheseusLayer features, export, weights, errors."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import paddle
import pytest

from ppcls_support import CONFIG_DIR, needs_paddleclas_wheel
from rexnet_plugin.deploy.export import export_inference
from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
from rexnet_plugin.factories import create_model
from rexnet_plugin.integrations import paddleclas as integration
from rexnet_plugin.weights import WeightsError
from rexnet_plugin.zoo import VARIANTS

pytestmark = needs_paddleclas_wheel

SMALL = [1, 3, 64, 64]


@pytest.fixture(scope="module")
def arch():
    module = importlib.import_module("paddleclas.ppcls.arch")
    integration.register(module)  # the autoload did it already, unless switched off
    return module


@pytest.fixture(scope="module")
def theseus(arch):
    return importlib.import_module(
        "paddleclas.ppcls.arch.backbone.base.theseus_layer").TheseusLayer


@pytest.fixture(scope="module")
def get_config():
    return importlib.import_module("paddleclas.ppcls.utils.config").get_config


def image(shape=SMALL, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


def build(arch, **arch_config):
    return arch.build_model({"Arch": arch_config})


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_shipped_config_builds_a_theseus_layer(arch, theseus, get_config, name):
    config = get_config(str(CONFIG_DIR / f"{name}.yaml"), overrides=["Arch.class_num=7"])
    model = arch.build_model(config)
    assert isinstance(model, theseus)
    assert type(model).__module__ == integration.__name__
    assert (model.width_mult, model.lite, model.ch_div) == (
        VARIANTS[name].width_mult, VARIANTS[name].kind == "lite", VARIANTS[name].ch_div)
    model.eval()
    assert model(image()).shape == [1, 7]


def test_same_numbers_as_the_plain_model(arch):
    registered = build(arch, name="ReXNetLite_1_3", class_num=5)
    plain = create_model("ReXNetLite_1_3", class_num=5)
    plain.set_state_dict(registered.state_dict())
    assert list(registered.state_dict()) == list(plain.state_dict())
    registered.eval(), plain.eval()
    x = image([2, 3, 96, 80])
    np.testing.assert_allclose(registered(x).numpy(), plain(x).numpy(), rtol=0, atol=1e-6)


def test_one_model_class_per_paddleclas_tree(arch, theseus):
    a = build(arch, name="ReXNet_1_0", class_num=2)
    b = build(arch, name="ReXNet_2_0", class_num=2)
    assert type(a) is type(b) is integration.model_class(theseus)


def test_rec_model_backbone(arch, theseus):
    model = arch.build_model({"Arch": {
        "name": "RecModel",
        "Backbone": {"name": "ReXNet_1_0", "class_num": 0},
        "Neck": {"name": "FC", "embedding_size": 1280, "class_num": 128},
        "Head": {"name": "FC", "embedding_size": 128, "class_num": 10},
    }})
    assert isinstance(model.backbone, theseus)
    model.eval()
    out = model(image([2, 3, 64, 64]))
    assert out["backbone"].shape == [2, 1280]  # headless: pooled features
    assert out["features"].shape == [2, 128]
    assert out["logits"].shape == [2, 10]


def test_rec_model_backbone_stop_layer(arch):
    model = arch.build_model({"Arch": {
        "name": "RecModel",
        "Backbone": {"name": "ReXNet_1_0"},
        "BackboneStopLayer": {"name": "features[13]"},
    }})
    model.eval()
    # features[13] is the last stride-16 block of ReXNet 1.0 (128 channels)
    assert model(image([1, 3, 64, 64]))["backbone"].shape == [1, 128, 4, 4]


def test_distillation_model(arch, theseus):
    model = arch.build_model({"Arch": {
        "name": "DistillationModel",
        "models": [{"Teacher": {"name": "ReXNet_1_3", "class_num": 6}},
                   {"Student": {"name": "ReXNetLite_1_0", "class_num": 6}}],
        "freeze_params_list": [True, False],
    }})
    assert all(isinstance(m, theseus) for m in model.model_list)
    assert all(p.trainable is False for p in model.Teacher.parameters())
    model.eval()
    out = model(image())
    assert set(out) == {"Teacher", "Student"}
    assert out["Teacher"].shape == out["Student"].shape == [1, 6]


def test_return_patterns(arch):
    model = build(arch, name="ReXNet_1_0", class_num=4,
                  return_patterns=["features[5]", "features[13]"])
    model.eval()
    out = model(image())
    assert set(out) == {"logits", "features[5]", "features[13]"}
    assert out["logits"].shape == [1, 4]
    assert out["features[5]"].shape == [1, 38, 16, 16]   # stride 4
    assert out["features[13]"].shape == [1, 128, 4, 4]   # stride 16


@pytest.mark.parametrize("name", ["ReXNet_1_5", "ReXNetR_2_0"])
def test_return_stages_come_from_the_feature_info(arch, name):
    model = build(arch, name=name, class_num=4, return_stages=True)
    # PaddleClas's stages are the pyramid ones (strides 4 ... 32) of timm's
    # feature_info, which also lists stride 2.
    assert model.stages_pattern == [
        f"features[{i['module'].split('.')[1]}]" for i in model.feature_info[1:]]
    model.eval()
    x = image([1, 3, 64, 64])
    out = model(x)
    stages = [out[p] for p in model.stages_pattern]
    assert [s.shape[1] for s in stages] == [i["num_chs"] for i in model.stage_info]
    assert [64 // s.shape[2] for s in stages] == [4, 8, 16, 32]
    # The same tensors as the plain model's forward_stages / forward_intermediates.
    with paddle.no_grad():
        for hooked, direct in zip(stages, model.forward_intermediates(x, [1, 2, 3, 4],
                                                                      intermediates_only=True)):
            np.testing.assert_array_equal(hooked.numpy(), direct.numpy())

    model = build(arch, name="ReXNet_1_5", class_num=4, return_stages=[1, 3])
    model.eval()
    assert set(model(image())) == {"logits", model.stages_pattern[1], model.stages_pattern[3]}


def test_stop_after_returns_the_feature_map(arch):
    model = build(arch, name="ReXNetLite_1_0", stop_after="features[7]")
    model.eval()
    reference = create_model("ReXNetLite_1_0")
    with warnings.catch_warnings():  # the cut-off layers have nothing to load
        warnings.simplefilter("ignore")
        reference.set_state_dict(model.state_dict())
    reference.eval()
    x = image()
    expected = reference.features[:8](x)
    out = model(x)
    assert out.shape == expected.shape and out.shape[2:] == [8, 8]  # stride 8
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)


def test_freeze_befor_stops_gradients_and_keeps_the_keys(arch):
    model = build(arch, name="ReXNet_1_0", class_num=3, freeze_befor="features[5]")
    assert list(model.state_dict()) == list(create_model("ReXNet_1_0", class_num=3).state_dict())
    model.train()
    model(image([2, 3, 64, 64])).sum().backward()
    grads = {name: p.grad is not None for name, p in model.named_parameters()
             if not p.stop_gradient}  # BN statistics are parameters in Paddle
    assert not any(g for n, g in grads.items() if int(n.split(".")[1]) <= 5 and n.startswith("features."))
    assert all(g for n, g in grads.items() if n.startswith("features.6."))
    assert grads["output.1.weight"]


def test_build_model_prunes_and_quantises_theseus_layers(arch, monkeypatch):
    calls = []
    monkeypatch.setattr(arch, "prune_model", lambda config, model: calls.append(("prune", model)))
    monkeypatch.setattr(arch, "quantize_model",
                        lambda config, model, mode: calls.append(("quant", model)))
    model = build(arch, name="ReXNet_1_0", class_num=2)
    assert [c[0] for c in calls] == ["prune", "quant"]
    assert all(c[1] is model for c in calls)


def test_exported_registered_model_runs_in_paddle_inference(arch, tmp_path):
    model = build(arch, name="ReXNetLite_1_0", class_num=5)
    model.eval()
    x = image([2, 3, 96, 96], seed=3)
    expected = model(x).numpy()
    export_inference(model, tmp_path / "exported", image_size=96)
    got = run_predictor(create_predictor(tmp_path / "exported", mkldnn=False), x.numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_misspelled_arch_name_lists_the_variants(arch):
    with pytest.raises(AttributeError) as error:
        build(arch, name="ReXNet_1_4")
    message = str(error.value)
    assert "'ReXNet_1_4'" in message and "Did you mean" in message
    assert all(name in message for name in VARIANTS)
    # other unknown names keep PaddleClas's own behaviour
    assert not hasattr(arch, "NoSuchNet")
    with pytest.raises(AttributeError, match="NoSuchNet"):
        build(arch, name="NoSuchNet")


# -- weights through PaddleClas ------------------------------------------------

@pytest.fixture(scope="module")
def builtin_checkpoint(arch, tmp_path_factory):
    """A .pdparams saved from PaddleClas's built-in ReXNet_1_0, and its output."""
    builtin = importlib.import_module("paddleclas.ppcls.arch.backbone.model_zoo.rexnet")
    paddle.seed(1)
    model = builtin.ReXNet_1_0(class_num=10)
    # Random BN statistics, so that a BN tensor that failed to load would show.
    for name, tensor in model.state_dict().items():
        if name.endswith(("_mean", "_variance")):
            values = np.random.default_rng(len(name)).uniform(0.5, 1.5, tensor.shape)
            tensor.set_value(values.astype("float32"))
    model.eval()
    x = image([2, 3, 64, 64], seed=5)
    path = tmp_path_factory.mktemp("builtin") / "ReXNet_1_0_builtin.pdparams"
    paddle.save(model.state_dict(), str(path))
    return path, x, model(x).numpy()


def test_builtin_layouts_are_ours(arch):
    """Every built-in ReXNet of PaddleClas has our keys and shapes."""
    builtin = importlib.import_module("paddleclas.ppcls.arch.backbone.model_zoo.rexnet")
    assert builtin.__all__ == [n for n in VARIANTS if n in builtin.__all__]
    for name in builtin.__all__:
        theirs = {k: v.shape for k, v in getattr(builtin, name)(class_num=10).state_dict().items()}
        ours = {k: v.shape for k, v in build(arch, name=name, class_num=10).state_dict().items()}
        assert theirs == ours, name


def _no_skipped_tensors(caught):
    return not [w for w in caught if "Skip loading" in str(w.message)]


def test_builtin_checkpoint_through_arch_pretrained(arch, builtin_checkpoint):
    path, x, expected = builtin_checkpoint
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build(arch, name="ReXNet_1_0", class_num=10, pretrained=str(path))
    assert _no_skipped_tensors(caught)
    model.eval()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=0, atol=1e-5)


def test_builtin_checkpoint_through_global_pretrained_model(arch, builtin_checkpoint):
    load_dygraph_pretrain = importlib.import_module(
        "paddleclas.ppcls.utils.save_load").load_dygraph_pretrain
    path, x, expected = builtin_checkpoint
    model = build(arch, name="ReXNet_1_0", class_num=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dygraph_pretrain(model, str(path)[:-len(".pdparams")])  # as PaddleClas passes it
    assert _no_skipped_tensors(caught)
    model.eval()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("route", ["Arch.pretrained", "Global.pretrained_model"])
def test_class_num_mismatch_names_the_key_and_both_shapes(arch, builtin_checkpoint, route):
    path = str(builtin_checkpoint[0])
    with pytest.raises(WeightsError) as error:
        if route == "Arch.pretrained":
            build(arch, name="ReXNet_1_0", class_num=3, pretrained=path)
        else:
            model = build(arch, name="ReXNet_1_0", class_num=3)
            importlib.import_module("paddleclas.ppcls.utils.save_load").load_dygraph_pretrain(
                model, path)
    message = str(error.value)
    assert "output.1.weight" in message
    assert "[10, 1280, 1, 1]" in message and "[3, 1280, 1, 1]" in message
    assert "Arch.class_num" in message and "Arch.skip_head: True" in message


@pytest.mark.parametrize("route", ["Arch.pretrained", "Global.pretrained_model"])
def test_skip_head_fine_tunes_from_another_class_count(arch, builtin_checkpoint, route):
    path = str(builtin_checkpoint[0])
    checkpoint = paddle.load(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if route == "Arch.pretrained":
            model = build(arch, name="ReXNet_1_0", class_num=3, skip_head=True, pretrained=path)
        else:
            model = build(arch, name="ReXNet_1_0", class_num=3, skip_head=True)
            importlib.import_module("paddleclas.ppcls.utils.save_load").load_dygraph_pretrain(
                model, path)
    state = model.state_dict()
    assert state["output.1.weight"].shape == [3, 1280, 1, 1]
    assert _no_skipped_tensors(caught)  # the kept head is not reported as a failure
    for key in ("features.0.weight", "features.1._mean", "features.19.weight"):
        np.testing.assert_array_equal(state[key].numpy(), np.asarray(checkpoint[key]))


def test_headless_backbone_loads_a_full_checkpoint(arch, builtin_checkpoint):
    model = build(arch, name="ReXNet_1_0", class_num=0, pretrained=str(builtin_checkpoint[0]))
    assert not any(k.startswith("output.") for k in model.state_dict())


@pytest.mark.parametrize("route", ["Arch.pretrained", "Global.pretrained_model"])
def test_checkpoint_of_another_architecture_is_refused(arch, tmp_path, route):
    path = tmp_path / "other.pdparams"
    paddle.save({"conv1.weight": np.zeros([8, 3, 3, 3], "float32")}, str(path))
    with pytest.raises(WeightsError, match="conv1.weight") as error:
        if route == "Arch.pretrained":
            build(arch, name="ReXNet_1_0", pretrained=str(path))
        else:
            importlib.import_module("paddleclas.ppcls.utils.save_load").load_dygraph_pretrain(
                build(arch, name="ReXNet_1_0"), str(path))
    message = str(error.value)
    assert "not a ReXNet checkpoint" in message
    assert "class_num" not in message  # no classifier advice for this one
    if route == "Global.pretrained_model":  # says who read it, and the safe route
        assert "paddle.load" in message and "Arch.pretrained" in message


def test_published_weights_with_another_class_count_fine_tune(arch, monkeypatch):
    """pretrained: True with class_num != 1000 keeps the new head, like every
    PaddleClas model (the download itself is replaced here: no network)."""
    calls = []
    monkeypatch.setattr(integration, "load_pretrained",
                        lambda model, pretrained, variant, skip_head: calls.append(skip_head))
    build(arch, name="ReXNet_1_0", class_num=102, pretrained=True)
    build(arch, name="ReXNet_1_0", class_num=102, pretrained="ppim")
    build(arch, name="ReXNet_1_0", class_num=1000, pretrained=True)
    build(arch, name="ReXNet_1_0", class_num=102, pretrained="/some/file.pdparams")
    assert calls == [True, True, False, False]


def test_use_ssld_is_refused_clearly(arch):
    with pytest.raises(WeightsError, match="SSLD"):
        build(arch, name="ReXNet_1_0", pretrained=True, use_ssld=True)
