"""rexnet-plugin export: Paddle Inference and ONNX, bf16 opt-in, the environment left alone."""

import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from conftest import ROOT, load_reference_npz
from rexnet_plugin import create_model
from rexnet_plugin.cli import main
from rexnet_plugin.deploy import runtime
from rexnet_plugin.deploy.export import (ONNX_ATOL, export_inference, export_model, export_onnx,
                                         read_export_source)
from rexnet_plugin.deploy.runtime import (UnsupportedCPUError, create_onnx_session,
                                          create_predictor, run_onnx, run_predictor)
from rexnet_plugin.weights import to_canonical
from rexnet_plugin.zoo import VARIANTS

pytest.importorskip("paddle2onnx", reason="ONNX export needs the [onnx] extra")
pytest.importorskip("onnxruntime", reason="ONNX export needs the [onnx] extra")


@pytest.fixture(scope="module")
def reference_export(tmp_path_factory):
    """ReXNet_1_0 with the official test-vector weights, exported with dynamic H and W."""
    state, cases = load_reference_npz("ReXNet_1_0")
    model = create_model("ReXNet_1_0")
    model.set_state_dict(to_canonical(state))
    out = export_inference(model, tmp_path_factory.mktemp("ref") / "model")
    return out, cases


def test_onnx_runtime_matches_paddle_inference(reference_export):
    model_dir, cases = reference_export
    onnx_path = export_onnx(model_dir)
    assert onnx_path == model_dir / "inference.onnx"
    predictor, session = create_predictor(model_dir), create_onnx_session(onnx_path)
    for case in cases.values():  # 2x224x224 and the odd 1x161x97
        paddle_out = run_predictor(predictor, case["input"])
        onnx_out = run_onnx(session, case["input"])
        assert onnx_out.shape == paddle_out.shape == case["logits"].shape
        assert np.abs(onnx_out - paddle_out).max() <= ONNX_ATOL
        assert np.abs(onnx_out - case["logits"]).max() <= ONNX_ATOL  # and the official ones


def _pip_freeze() -> str:
    return subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], check=True,
                          capture_output=True, text=True).stdout


def test_export_cli_writes_onnx_and_leaves_the_environment_unchanged(tmp_path):
    weights = tmp_path / "w.pdparams"
    paddle.seed(1)
    paddle.save(create_model("ReXNet_1_0").state_dict(), str(weights))
    out = tmp_path / "inference"
    before = _pip_freeze()
    run = subprocess.run([sys.executable, "-m", "rexnet_plugin.cli", "export", "ReXNet_1_0",
                          "--weights", str(weights), "-o", str(out), "--onnx"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _pip_freeze() == before
    assert sorted(p.name for p in out.iterdir()) == ["inference.json", "inference.onnx",
                                                     "inference.pdiparams"]
    assert "x: float32 [N, 3, 224, 224]" in run.stdout
    assert "[N, 1000] logits" in run.stdout
    for name in ("inference.json", "inference.pdiparams", "inference.onnx"):
        assert str(out / name) in run.stdout


def test_export_from_a_paddleclas_config(tmp_path):
    paddle.seed(2)
    weights = tmp_path / "finetuned.pdparams"
    paddle.save(create_model("ReXNet_1_3", class_num=10).state_dict(), str(weights))
    config = tmp_path / "ReXNet_1_3.yaml"
    config.write_text(yaml.safe_dump({
        "Global": {"image_shape": [3, 192, 192], "pretrained_model": str(weights),
                   "save_inference_dir": str(tmp_path / "out")},
        "Arch": {"name": "ReXNet_1_3", "class_num": 10, "dropout_ratio": 0.2}}))
    result = export_model(str(config), None)
    assert (result.variant, result.class_num, result.input_shape) == ("ReXNet_1_3", 10, [None, 3, 192, 192])
    assert result.model_dir == tmp_path / "out"
    got = run_predictor(create_predictor(result.model_dir), np.zeros((3, 3, 192, 192), "float32"))
    assert got.shape == (3, 10)


@pytest.mark.parametrize("path", sorted((ROOT / "ppcls_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_name_their_variant(path):
    source = read_export_source(str(path))
    assert source.variant == path.stem and source.variant in VARIANTS
    assert source.class_num == 1000


@pytest.mark.parametrize("argv, message", [
    (["export", "ReXNet_9_9", "--untrained"], "Valid names"),
    (["export", "ReXNet_1_0"], "--weights"),
    (["export", "missing.yaml", "--untrained"], "not found"),
])
def test_export_cli_errors_say_what_to_do(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_config_with_another_architecture_is_refused(tmp_path):
    config = tmp_path / "resnet.yaml"
    config.write_text("Arch:\n  name: ResNet50\n  class_num: 1000\n")
    with pytest.raises(ValueError, match=r"Arch.name is 'ResNet50'.*ReXNet_1_0"):
        read_export_source(str(config))


def test_bf16_on_a_cpu_without_the_instructions_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512f"}))
    assert not runtime.bf16_supported()
    with pytest.raises(UnsupportedCPUError, match=r"AVX512-BF16.*Use precision='fp32'"):
        create_predictor(tmp_path, precision="bf16")
    with pytest.raises(ValueError, match="expected one of fp32, bf16"):
        create_predictor(tmp_path, precision="fp16")


@pytest.mark.skipif(not runtime.bf16_supported(), reason="this CPU has no AVX512-BF16/AMX-BF16")
def test_bf16_is_opt_in_and_close_to_fp32(reference_export):
    model_dir, cases = reference_export
    x = cases["a"]["input"]
    fp32 = run_predictor(create_predictor(model_dir), x)
    bf16 = run_predictor(create_predictor(model_dir, precision="bf16"), x)
    diff = np.abs(bf16 - fp32).max()
    assert 0 < diff < 0.1 * (fp32.max() - fp32.min())  # really bf16, and still close
