"""OpenVINO as a runtime: its outputs against Paddle Inference's, the
precision it is asked for, and the runtime a folder gets by default.

Needs ``pip install 'rexnet-plugin[openvino]'``; skipped otherwise (but for
the error a missing OpenVINO gives). Speed is measured by
``benchmarks/run.py``, never here.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import load_reference_npz
from rexnet_plugin.cli import main
from rexnet_plugin.deploy import predict as predict_mod
from rexnet_plugin.deploy import runtime
from rexnet_plugin.deploy.artifacts import ONNX_FILENAME
from rexnet_plugin.extras import missing

needs_openvino = pytest.mark.skipif(not runtime.openvino_available(),
                                    reason=missing("openvino") or "")


@pytest.fixture(scope="module")
def exported(reference_export):
    """ReXNet_1_0 with the test-vector weights, exported with ONNX (softmax output)."""
    return reference_export[0]


@pytest.fixture(scope="module")
def inputs():
    """The official test vectors' two 224x224 inputs, and four of them perturbed."""
    x = load_reference_npz("ReXNet_1_0")[1]["a"]["input"].astype("float32")
    noise = np.random.default_rng(0).standard_normal((4, *x.shape[1:])).astype("float32")
    return np.concatenate([x, x[[0, 1, 0, 1]] + 0.5 * noise])


@pytest.fixture(scope="module")
def paddle_probs(exported, inputs):
    predictor = runtime.create_predictor(exported, threads=2)
    return runtime.run_predictor(predictor, inputs)


@needs_openvino
def test_fp32_means_fp32_and_matches_paddle_inference(exported, inputs, paddle_probs):
    session = runtime.create_openvino_session(exported / ONNX_FILENAME, threads=2,
                                              precision="fp32")
    assert session.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    probs = runtime.run_openvino(session, inputs)
    assert probs.shape == paddle_probs.shape
    assert float(np.abs(probs - paddle_probs).max()) <= 1e-5
    one = runtime.run_openvino(session, inputs[1:2])  # each image its own answer
    assert float(np.abs(one - paddle_probs[1:2]).max()) <= 1e-5


@needs_openvino
def test_bf16_where_the_cpu_has_it(exported, inputs, paddle_probs):
    if not runtime.bf16_supported():
        with pytest.raises(runtime.UnsupportedCPUError, match="AVX512-BF16"):
            runtime.create_openvino_session(exported / ONNX_FILENAME, precision="bf16")
        return
    session = runtime.create_openvino_session(exported / ONNX_FILENAME, threads=2,
                                              precision="bf16")
    assert session.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    probs = runtime.run_openvino(session, inputs)
    diff = float(np.abs(probs - paddle_probs).max())
    # bfloat16 (8 bits of mantissa) moves the probabilities, not far.
    assert 1e-5 < diff < 2e-2, diff


@needs_openvino
def test_load_model_and_predict_run_openvino(exported, inputs, paddle_probs, capsys, tmp_path):
    loaded = predict_mod.load_model(exported, runtime="openvino")
    assert (loaded.runtime, loaded.precision) == ("openvino", "fp32")
    assert "OpenVINO" in loaded.describe()
    assert float(np.abs(loaded.run(inputs) - paddle_probs).max()) <= 1e-5
    from PIL import Image
    photo = tmp_path / "photo.png"
    Image.fromarray((inputs[0].transpose(1, 2, 0) * 40 + 120).clip(0, 255).astype("uint8")).save(photo)
    results = {}
    for name in ("paddle", "openvino"):
        assert main(["predict", str(exported), str(photo), "--json", "--runtime", name]) == 0
        out = capsys.readouterr()
        results[name] = json.loads(out.out)
        assert predict_mod.RUNTIME_NAMES[name] in out.err  # says which runtime ran
    assert results["openvino"]["class_id"] == results["paddle"]["class_id"]
    assert results["openvino"]["score"] == pytest.approx(results["paddle"]["score"], abs=1e-5)


def test_without_openvino_bf16_is_paddle_and_asking_for_it_says_how(exported, monkeypatch):
    monkeypatch.setattr(runtime, "openvino_available", lambda: False)
    if runtime.bf16_supported():
        assert predict_mod.load_model(exported, precision="bf16").runtime == "paddle"
    from rexnet_plugin.extras import install_command
    with pytest.raises(predict_mod.ModelFolderError,
                       match=re.escape(install_command("openvino"))):
        predict_mod.load_model(exported, runtime="openvino")
