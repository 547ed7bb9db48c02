"""Numerics equal the official PyTorch implementation (shared/reference)."""

import numpy as np
import paddle
import pytest

from conftest import REFERENCE_FEATURES, REFERENCE_NPZ, load_reference_npz
from rexnet_plugin import create_model
from rexnet_plugin.weights import to_canonical

LOGITS_ATOL = 1e-4


def _run(model, x):
    """Logits and the output of every element of model.features."""
    feats, h = {}, paddle.to_tensor(x)
    for i, layer in enumerate(model.features):
        h = layer(h)
        feats[i] = h.numpy()
    return model.forward_head(h).numpy(), feats


def _load(variant, dtype):
    state, cases = load_reference_npz(variant)
    model = create_model(variant)
    if dtype == "float64":
        model.to(dtype="float64")
    model.set_state_dict({k: v.astype(dtype) for k, v in to_canonical(state).items()})
    model.eval()
    return model, cases


@pytest.fixture(scope="module", params=list(REFERENCE_NPZ))
def reference_run(request):
    variant = request.param
    model32, cases = _load(variant, "float32")
    model64, _ = _load(variant, "float64")
    runs = {}
    with paddle.no_grad():
        for case, data in cases.items():
            runs[case] = (_run(model32, data["input"]),
                          _run(model64, data["input"].astype("float64")), data)
    return variant, runs


@pytest.mark.parametrize("case", ["a", "b"])
def test_logits_match_official(reference_run, case):
    _, runs = reference_run
    (logits, _), _, data = runs[case]
    assert logits.shape == data["logits"].shape
    assert np.abs(logits - data["logits"]).max() <= LOGITS_ATOL


@pytest.mark.parametrize("case", ["a", "b"])
def test_stage_features_match_official(reference_run, case):
    """Every listed feature matches within 1e-4 plus float32 rounding.

    Deep features reach magnitudes of ~50, where float32 rounding alone
    moves them by a few 1e-4: PyTorch running the official code on this
    machine with 1 instead of 2 threads differs by 3e-4 at feature 21. So
    the bound per feature is 1e-4 plus twice our own measured rounding
    error there (float32 against float64 on the same weights). A real
    difference in the architecture shows up at 1e-2 and fails this.
    """
    _, runs = reference_run
    (_, feats32), (_, feats64), data = runs[case]
    for i in REFERENCE_FEATURES:
        expected = data["features"][i]
        assert feats32[i].shape == expected.shape, f"features.{i}"
        rounding = np.abs(feats32[i] - feats64[i]).max()
        assert rounding < 2e-3, f"features.{i}: float32 rounding {rounding:.1e} is implausibly large"
        diff = np.abs(feats32[i] - expected).max()
        assert diff <= LOGITS_ATOL + 2 * rounding, f"features.{i}: max abs diff {diff:.2e}"


@pytest.mark.parametrize("case", ["a", "b"])
def test_float64_model_matches_official_logits(reference_run, case):
    """In float64 (no rounding on our side) the logits still agree."""
    _, runs = reference_run
    _, (logits64, _), data = runs[case]
    assert np.abs(logits64 - data["logits"]).max() <= LOGITS_ATOL


def test_forward_stages_are_the_reference_features():
    state, cases = load_reference_npz("ReXNet_1_0")
    model = create_model("ReXNet_1_0")
    model.set_state_dict(to_canonical(state))
    model.eval()
    with paddle.no_grad():
        stages = model.forward_stages(paddle.to_tensor(cases["b"]["input"]))
    # timm's feature_info: strides 2 ... 32; forward_stages returns 4 ... 32.
    assert [info["module"] for info in model.feature_info] == [
        "features.3", "features.5", "features.7", "features.13", "features.18"]
    assert [info["reduction"] for info in model.feature_info] == [2, 4, 8, 16, 32]
    assert len(stages) == 4
    for stage, idx in zip(stages, (5, 7, 13, 18)):
        assert np.abs(stage.numpy() - cases["b"]["features"][idx]).max() < 1e-3
