"""ReXNet-R (timm's rexnetr_*) equals timm's: parameters, feature_info, state-dict
layout, numerics; its published weights; files of the wrong family are refused.

Reference: shared/reference/timm_rexnetr.json (timm 1.0.31's figures for all
five) and timm_rexnetr_100.npz (timm's own rexnetr_100 run on two inputs).
"""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from safetensors.numpy import save_file

from conftest import load_reference_npz, reference_path
from rexnet_plugin import create_model
from rexnet_plugin.complexity import count_params
from rexnet_plugin.weights import (detect_layout, inspect_state, load_pretrained, to_canonical)
from rexnet_plugin.weights.errors import WeightsError, WrongVariantError
from rexnet_plugin.zoo import PUBLISHERS, VARIANTS
from weights_helpers import _server, cache, local_only, official_to_timm, server  # noqa: F401

R_VARIANTS = [n for n, v in VARIANTS.items() if v.kind == "r"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def timm_json() -> dict:
    return json.loads(reference_path("timm_rexnetr.json").read_text())


def _timm_state(entry: dict, seed: int = 0, dtype="float16") -> dict:
    """Random tensors with the shapes of a timm state dict (running_var positive)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in entry["state"].items():
        value = rng.standard_normal(shape).astype(dtype) * 0.1
        state[key] = np.abs(value) + 0.5 if key.endswith("running_var") else value
    return state


def test_the_table_has_timms_five(timm_json):
    assert sorted(VARIANTS[n].timm_name for n in R_VARIANTS) == sorted(
        k for k in timm_json if not k.startswith("_"))


@pytest.mark.parametrize("name", R_VARIANTS)
def test_trainable_params_equal_timms(name, timm_json):
    assert count_params(create_model(name)) == timm_json[VARIANTS[name].timm_name]["params"]


@pytest.mark.parametrize("name", R_VARIANTS)
def test_feature_info_is_timms(name, timm_json):
    """The same entries; module names shift by the 3 stem layers (timm's
    features.i is our features.i+3, the official numbering)."""
    ours = create_model(name).feature_info
    timm = timm_json[VARIANTS[name].timm_name]["feature_info"]
    assert [(i["num_chs"], i["reduction"]) for i in ours] == \
        [(i["num_chs"], i["reduction"]) for i in timm]
    assert [int(i["module"].split(".")[1]) for i in ours] == \
        [int(i["module"].split(".")[1]) + 3 for i in timm]


@pytest.mark.parametrize("name", R_VARIANTS)
def test_timms_keys_and_shapes_map_onto_the_model(name, timm_json):
    """Every timm key of the JSON renames by rule to one of ours, same shape, none left over."""
    entry = timm_json[VARIANTS[name].timm_name]
    timm = {k: np.zeros(s, np.float16) for k, s in entry["state"].items()}
    assert detect_layout(timm) == "timm"
    canonical = to_canonical(timm)
    ours = {k: list(v.shape) for k, v in create_model(name).state_dict().items()}
    assert {k: list(v.shape) for k, v in canonical.items()} == ours
    info = inspect_state(canonical)
    assert (info.variant, info.kind, info.class_num) == (name, "r", 1000)


# -- numerics against timm's own rexnetr_100 --------------------------------------

@pytest.fixture(scope="module")
def timm_vectors(tmp_path_factory):
    data = np.load(reference_path("timm_rexnetr_100.npz"))
    state = {k[len("state."):]: data[k] for k in data.files if k.startswith("state.")}
    path = tmp_path_factory.mktemp("timm") / "rexnetr_100.safetensors"
    save_file(state, str(path))  # the form timm's hub serves
    cases = {c: {"input": data[f"{c}.input"], "logits": data[f"{c}.logits"],
                 "stages": [data[f"{c}.stage.{i}"] for i in range(5)]} for c in "ab"}
    return path, cases


@pytest.fixture(scope="module")
def timm_runs(timm_vectors):
    """(float32 run, float64 run) per case: logits and forward_intermediates."""
    path, cases = timm_vectors
    runs = {}
    models = {}
    for dtype in ("float32", "float64"):
        model = create_model("ReXNetR_1_0", pretrained=str(path))
        if dtype == "float64":
            model.to(dtype="float64")
        model.eval()
        models[dtype] = model
    with paddle.no_grad():
        for case, data in cases.items():
            runs[case] = {}
            for dtype, model in models.items():
                x = paddle.to_tensor(data["input"].astype(dtype))
                final, stages = model.forward_intermediates(x)
                runs[case][dtype] = (model.forward_head(final).numpy(),
                                     [s.numpy() for s in stages])
    return runs, cases


@pytest.mark.parametrize("case", ["a", "b"])
def test_logits_equal_timms(timm_runs, case):
    runs, cases = timm_runs
    logits = runs[case]["float32"][0]
    assert logits.shape == cases[case]["logits"].shape
    assert np.abs(logits - cases[case]["logits"]).max() <= ATOL


@pytest.mark.parametrize("case", ["a", "b"])
def test_intermediates_equal_timms_forward_intermediates(timm_runs, case):
    """Strides 2 to 32, within 1e-4 plus float32 rounding (measured against a
    float64 run of the same weights, as tests/test_reference.py does)."""
    runs, cases = timm_runs
    ours32, ours64 = runs[case]["float32"][1], runs[case]["float64"][1]
    assert len(ours32) == len(cases[case]["stages"]) == 5
    for i, (got, got64, want) in enumerate(zip(ours32, ours64, cases[case]["stages"])):
        assert got.shape == want.shape, f"stage {i}"
        rounding = np.abs(got - got64).max()
        assert rounding < 2e-3, f"stage {i}: float32 rounding {rounding:.1e} is implausibly large"
        assert np.abs(got - want).max() <= ATOL + 2 * rounding, f"stage {i}"


# -- wrong family -------------------------------------------------------------------

def test_a_timm_v1_file_in_rexnetr_names_both_families(tmp_path):
    state, _ = load_reference_npz("ReXNet_1_0")  # official weights, as timm's rexnet_100
    path = tmp_path / "rexnet_100.safetensors"
    save_file(official_to_timm(state), str(path))
    with pytest.raises(WrongVariantError) as err:
        create_model("ReXNetR_1_0", pretrained=str(path))
    msg = str(err.value)
    assert "ReXNet_1_0 (ReXNet V1, timm's rexnet_100" in msg
    assert "ReXNetR_1_0 (ReXNet-R, timm's rexnetr_100" in msg
    assert "create_model('ReXNet_1_0')" in msg


def test_a_timm_rexnetr_file_in_v1_names_both_families(timm_vectors, timm_json, tmp_path):
    path, _ = timm_vectors
    with pytest.raises(WrongVariantError) as err:
        create_model("ReXNet_1_0", pretrained=str(path))
    msg = str(err.value)
    assert "ReXNetR_1_0 (ReXNet-R, timm's rexnetr_100" in msg and "ReXNet V1" in msg
    assert "create_model('ReXNetR_1_0')" in msg
    # the wider ones too: a rexnetr_200 file in ReXNet_2_0
    wide = tmp_path / "rexnetr_200.safetensors"
    save_file({k: np.zeros(s, np.float16) for k, s in timm_json["rexnetr_200"]["state"].items()},
              str(wide))
    with pytest.raises(WrongVariantError, match=r"create_model\('ReXNetR_2_0'\)"):
        create_model("ReXNet_2_0", pretrained=str(wide))


# -- published weights ---------------------------------------------------------------

def test_published_files_are_timms_configs(timm_json):
    """URL, class count, licence and eval transform: one row per published tag."""
    published = timm_json["_published"]
    seen = set()
    for name in R_VARIANTS:
        v = VARIANTS[name]
        for source in v.weights.values():
            tag = source.filename[: -len(".safetensors")]
            cfg = published[tag]
            seen.add(tag)
            assert source.url == f"https://huggingface.co/{cfg['hf_hub_id']}/resolve/main/model.safetensors"
            assert source.class_num == cfg["num_classes"] and source.layout == "timm"
            assert PUBLISHERS[source.publisher].license.lower() == cfg["license"]
            t = v.eval_transform  # the configs' transform: timm's test size and crop
            assert (t.crop_size, t.crop_pct, t.interpolation) == (
                cfg["test_input_size"][1], cfg["test_crop_pct"], cfg["interpolation"])
            assert (list(t.mean), list(t.std)) == (cfg["mean"], cfg["std"])
            for acc in source.accuracy:
                assert (acc.image_size, acc.crop_pct) in {
                    (cfg["test_input_size"][1], cfg["test_crop_pct"]),
                    (cfg["input_size"][1], cfg["crop_pct"])}
    assert seen == set(published)
    # the in1k files are what pretrained=True / "timm" load; in12k is a named source
    assert [list(VARIANTS[n].weights) for n in ("ReXNetR_2_0", "ReXNetR_3_0")] == \
        [["timm", "timm_in12k"]] * 2


def _serve(server, timm_json, monkeypatch, tmp_path, tag: str) -> dict:
    """Serve a random file with the shapes of timm's ``tag`` on a local mirror."""
    state = _timm_state(timm_json[tag.split(".")[0]], seed=3)
    if tag.endswith("sw_in12k"):
        classes = timm_json["_published"][tag]["num_classes"]
        state["head.fc.weight"] = np.random.default_rng(4).standard_normal(
            (classes, state["head.fc.weight"].shape[1])).astype("float16")
        state["head.fc.bias"] = np.arange(classes).astype("float16")
    path = tmp_path / "served.safetensors"
    save_file(state, str(path))
    server.add(f"/mirror/{tag}.safetensors", path)
    path.unlink()
    monkeypatch.setenv("REXNET_PLUGIN_MIRROR", server.base + "/mirror")
    return state


def test_pretrained_timm_downloads_the_in1k_file(server, cache, timm_json, monkeypatch, tmp_path):
    state = _serve(server, timm_json, monkeypatch, tmp_path, "rexnetr_200.sw_in12k_ft_in1k")
    model = create_model("ReXNetR_2_0", pretrained=True)
    assert server.hits == {"/mirror/rexnetr_200.sw_in12k_ft_in1k.safetensors": 1}
    np.testing.assert_array_equal(model.state_dict()["features.0.weight"].numpy(),
                                  state["stem.conv.weight"].astype("float32"))
    np.testing.assert_array_equal(model.state_dict()["output.1.weight"].numpy()[:, :, 0, 0],
                                  state["head.fc.weight"].astype("float32"))
    create_model("ReXNetR_2_0", pretrained="timm")  # the same file, from the cache
    assert sum(server.hits.values()) == 1


@pytest.mark.slow  # an 11,821-class model
def test_in12k_weights_fine_tune_or_keep_their_11821_classes(server, cache, timm_json,
                                                             monkeypatch, tmp_path):
    state = _serve(server, timm_json, monkeypatch, tmp_path, "rexnetr_200.sw_in12k")
    tuned = create_model("ReXNetR_2_0", pretrained="timm_in12k", class_num=37)
    assert tuned.output[-1].weight.shape[0] == 37  # a new head; the body is loaded
    np.testing.assert_array_equal(tuned.state_dict()["features.0.weight"].numpy(),
                                  state["stem.conv.weight"].astype("float32"))
    full = create_model("ReXNetR_2_0", pretrained="timm_in12k", class_num=11821)
    np.testing.assert_array_equal(full.state_dict()["output.1.bias"].numpy(),
                                  state["head.fc.bias"].astype("float32"))
    # an own model and an explicit call: the class counts must fit unless skip_head
    model = create_model("ReXNetR_2_0")
    with pytest.raises(WeightsError, match="11821 classes"):
        load_pretrained(model, "timm_in12k")


def test_rexnetr_without_published_weights_says_so():
    with pytest.raises(WeightsError, match="no published ImageNet weights"):
        create_model("ReXNetR_1_0", pretrained=True)
    with pytest.raises(WeightsError, match="has no 'timm' weights"):
        create_model("ReXNetR_1_5", pretrained="timm")
