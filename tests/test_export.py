"""rexnet-plugin export: Paddle Inference and ONNX, bf16 opt-in, the environment left alone."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from rexnet_plugin.extras import missing
import yaml

from conftest import BILLION_LAUGHS_YAML, ROOT, load_reference_npz
from rexnet_plugin import create_model
from rexnet_plugin.cli import main
from rexnet_plugin.deploy import runtime
from ppcls_support import sample_photos
from rexnet_plugin.deploy.export import (ONNX_RTOL, export_inference, export_model, export_onnx,
                                         read_export_source)
from rexnet_plugin.deploy.infer_config import read_infer_config
from rexnet_plugin.deploy.runtime import (UnsupportedCPUError, create_onnx_session,
                                          create_predictor, run_onnx, run_predictor)
from rexnet_plugin.weights import to_canonical
from rexnet_plugin.zoo import VARIANTS

pytest.importorskip("paddle2onnx", reason=missing("paddle2onnx"))
pytest.importorskip("onnxruntime", reason=missing("onnxruntime"))


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    """ReXNet_1_0 with the official test-vector weights, exported with dynamic H and W
    (conftest's reference_export has a fixed size)."""
    state, cases = load_reference_npz("ReXNet_1_0")
    model = create_model("ReXNet_1_0")
    model.set_state_dict(to_canonical(state))
    out = export_inference(model, tmp_path_factory.mktemp("ref") / "model")
    return out, cases


def test_onnx_runtime_matches_paddle_inference(dynamic_export):
    model_dir, cases = dynamic_export
    onnx_path = export_onnx(model_dir)
    assert onnx_path == model_dir / "inference.onnx"
    predictor, session = create_predictor(model_dir), create_onnx_session(onnx_path)
    for case in cases.values():  # 2x224x224 and the odd 1x161x97
        paddle_out = run_predictor(predictor, case["input"])
        onnx_out = run_onnx(session, case["input"])
        assert onnx_out.shape == paddle_out.shape == case["logits"].shape
        assert np.abs(onnx_out - paddle_out).max() <= 1e-4
        assert np.abs(onnx_out - case["logits"]).max() <= 1e-4  # and the official ones


def _pip_freeze() -> str:
    return subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.slow  # pip freeze twice
def test_export_cli_writes_onnx_and_leaves_the_environment_unchanged(tmp_path, capsys,
                                                                     monkeypatch):
    weights = tmp_path / "w.pdparams"
    paddle.seed(1)
    paddle.save(create_model("ReXNet_1_0").state_dict(), str(weights))
    out = tmp_path / "inference"
    monkeypatch.chdir(tmp_path)
    before = _pip_freeze()
    assert main(["export", "ReXNet_1_0", "--weights", str(weights), "-o", str(out),
                 "--onnx"]) == 0
    assert _pip_freeze() == before  # paddle2onnx's polygraphy pip-installs when let
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["inference.json", "inference.onnx",
                                                     "inference.pdiparams", "inference.yml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inference", "w.pdparams"]
    assert "x: float32 [N, 3, 224, 224]" in stdout
    assert "[N, 1000] probabilities (softmax" in stdout
    for name in ("inference.json", "inference.pdiparams", "inference.onnx", "inference.yml"):
        assert str(out / name) in stdout
    config = read_infer_config(out)
    assert (config.model_name, config.softmax, config.topk) == ("ReXNet_1_0", True, 5)
    assert config.label_list[0] == "tench, Tinca tinca" and len(config.label_list) == 1000
    assert "labels: 1000 names from " in stdout


def test_export_from_a_paddleclas_config(tmp_path):
    paddle.seed(2)
    weights = tmp_path / "finetuned.pdparams"
    model = create_model("ReXNetLite_1_0", class_num=10)
    paddle.save(model.state_dict(), str(weights))
    (tmp_path / "labels.txt").write_text("".join(f"{i} class {i}\n" for i in range(10)))
    config = tmp_path / "ReXNetLite_1_0.yaml"
    config.write_text(yaml.safe_dump({
        "Global": {"image_shape": [3, 96, 96], "pretrained_model": str(weights),
                   "save_inference_dir": str(tmp_path / "out")},
        "Arch": {"name": "ReXNetLite_1_0", "class_num": 10, "dropout_ratio": 0.2},
        # relative to the config's folder (or to the working folder, as PaddleClas reads it)
        "Infer": {"PostProcess": {"name": "Topk", "topk": 5, "class_id_map_file": "labels.txt"}}}))
    result = export_model(str(config), None)
    assert (result.variant, result.class_num, result.input_shape) == ("ReXNetLite_1_0", 10, [None, 3, 96, 96])
    assert result.model_dir == tmp_path / "out"
    x = np.random.default_rng(0).standard_normal((3, 3, 96, 96)).astype("float32")
    got = run_predictor(create_predictor(result.model_dir), x)
    model.eval()
    expected = paddle.nn.functional.softmax(model(paddle.to_tensor(x))).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # softmax, as PaddleClas's
    # inference.yml: the input size with the variant's crop ratio (96 / 0.875 = 109.7)
    infer = read_infer_config(result.model_dir)
    assert infer.transform_ops[:2] == [
        {"ResizeImage": {"resize_short": 109, "interpolation": "bicubic", "backend": "pil"}},
        {"CropImage": {"size": 96}}]
    assert infer.label_list == [f"class {i}" for i in range(10)]
    assert (infer.model_name, infer.softmax) == ("ReXNetLite_1_0", True)


@pytest.mark.slow  # three exports
def test_a_configs_infer_transforms_are_used_as_paddleclas_export_uses_them(tmp_path):
    """Deploy operators that fit the input: inference.yml takes them, as
    PaddleClas's dump_infer_config would; ones that do not fit are not taken."""
    infer = [{"DecodeImage": {"to_rgb": True, "channel_first": False}},
             {"ResizeImage": {"size": 32}},
             {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5],
                                 "std": [0.5, 0.5, 0.5], "order": ""}},
             {"ToCHWImage": None}]
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump({
        "Global": {"image_shape": [3, 32, 32]}, "Arch": {"name": "ReXNetLite_1_0", "class_num": 10},
        "Infer": {"transforms": infer}}))
    result = export_model(str(config), None, tmp_path / "a", untrained=True)
    assert read_infer_config(result.model_dir).transform_ops == [
        {"ResizeImage": {"size": 32}},
        {"NormalizeImage": {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                            "order": "", "channel_num": 3}},
        {"ToCHWImage": None}]
    assert "the config's Infer.transforms: ResizeImage(size=32), NormalizeImage" in result.describe()

    # the same config exported at 48 px: its transforms no longer fit
    result = export_model(str(config), None, tmp_path / "b", untrained=True, image_size=48)
    ops = read_infer_config(result.model_dir).transform_ops
    assert ops[1] == {"CropImage": {"size": 48}}  # the variant's transform, fitted
    assert "not the config's Infer.transforms: they give 32x32, the model takes 48x48" in (
        result.describe())


def test_non_square_and_dynamic_sizes_get_a_preprocessing_that_fits(tmp_path):
    result = export_model("ReXNetLite_1_0", None, tmp_path / "hw", image_size=(128, 96),
                          untrained=True, class_num=4)
    ops = read_infer_config(result.model_dir).transform_ops
    # the short side covers the crop's longer side: floor(128 / 0.875)
    assert ops[:2] == [{"ResizeImage": {"resize_short": 146, "interpolation": "bicubic",
                                        "backend": "pil"}}, {"CropImage": {"size": [96, 128]}}]
    assert "labels: none (pass --label-list FILE)" in result.describe()  # not 1000 classes
    photo = sample_photos(tmp_path)[0]
    x = read_infer_config(result.model_dir).preprocess(photo)
    assert x.shape == (3, 128, 96)
    assert run_predictor(create_predictor(result.model_dir), x[None]).shape == (1, 4)


@pytest.mark.parametrize("path", sorted((ROOT / "ppcls_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_name_their_variant(path):
    source = read_export_source(str(path))
    assert source.variant == path.stem and source.variant in VARIANTS
    assert source.class_num == 1000


@pytest.mark.parametrize("argv, message", [
    (["export", "ReXNet_9_9", "--untrained"], "Valid names"),
    (["export", "ReXNet_1_0"], "--weights"),
    (["export", "missing.yaml", "--untrained"], "not found"),
    (["export", "ReXNet_1_0", "--untrained", "--weights", "w.pdparams"], "contradict"),
    (["export", "ReXNet_1_0", "--untrained", "--image-size", "16"], "at least 32 px"),
    (["export", "ReXNet_1_0", "--untrained", "--image-size", "224x20"], "at least 32 px"),
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
def test_bf16_is_opt_in_and_close_to_fp32(dynamic_export):
    model_dir, cases = dynamic_export
    x = cases["a"]["input"]
    fp32 = run_predictor(create_predictor(model_dir), x)
    bf16 = run_predictor(create_predictor(model_dir, precision="bf16"), x)
    diff = np.abs(bf16 - fp32).max()
    assert 0 < diff < 0.1 * (fp32.max() - fp32.min())  # really bf16, and still close


# -- the export folder: whole sets, no orphans, no stale temp folders -------------------

def _weights(tmp_path, name, class_num, seed):
    paddle.seed(seed)
    path = tmp_path / f"{name}_{class_num}.pdparams"
    paddle.save(create_model(name, class_num=class_num).state_dict(), str(path))
    return path


def test_a_re_export_replaces_the_whole_set(tmp_path):
    """A 10-class model with ONNX, then a 5-class one without, into one folder:
    no inference.onnx of the 10-class model may stay beside the new model."""
    out = tmp_path / "model"
    ten = _weights(tmp_path, "ReXNetLite_1_0", 10, 0)
    export_model("ReXNetLite_1_0", str(ten), out, onnx=True, image_size=64, class_num=10)
    (out / "README.txt").write_text("the user's own notes")
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("more notes")
    (out / "inference.pdmodel").write_text("an old-IR program of some earlier export")
    assert run_onnx(create_onnx_session(out / "inference.onnx"),
                    np.zeros((1, 3, 64, 64), "float32")).shape == (1, 10)

    five = _weights(tmp_path, "ReXNetLite_1_0", 5, 1)
    result = export_model("ReXNetLite_1_0", str(five), out, image_size=64, class_num=5,
                          softmax=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.txt", "inference.json", "inference.pdiparams", "inference.yml", "notes"]
    assert (out / "README.txt").read_text() == "the user's own notes"  # not ours: kept
    assert (out / "notes" / "a.txt").read_text() == "more notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no temp folder left
        "ReXNetLite_1_0_10.pdparams", "ReXNetLite_1_0_5.pdparams", "model"]
    assert run_predictor(create_predictor(out), np.zeros((1, 3, 64, 64), "float32")).shape == (1, 5)
    config = read_infer_config(out)
    assert config.softmax is False and config.label_list is None
    assert "logits (no softmax)" in result.describe()


def _large_logit_weights(tmp_path):
    """A trained model's scale: the classifier scaled to logits near 600."""
    paddle.seed(0)
    model = create_model("ReXNetLite_1_0", class_num=10)
    model.eval()
    probe = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 64, 64)),
                             dtype="float32")
    factor = 600 / float(paddle.abs(model(probe)).max())
    state = model.state_dict()
    for key in [k for k in state if k.startswith("output.")][-2:]:  # the classifier
        state[key] = state[key] * factor
    model.set_state_dict(state)
    path = tmp_path / "large.pdparams"
    paddle.save(model.state_dict(), str(path))
    return path, float(paddle.abs(model(probe)).max())


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_the_onnx_check_accepts_a_healthy_model_with_large_logits(tmp_path, softmax):
    weights, largest = _large_logit_weights(tmp_path)
    assert largest > 100  # the case an absolute 1e-4 refused
    result = export_model("ReXNetLite_1_0", str(weights), tmp_path / "m", onnx=True,
                          image_size=64, class_num=10, softmax=softmax)
    assert result.onnx_rel_diff <= ONNX_RTOL


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_the_onnx_check_refuses_outputs_that_differ(tmp_path, monkeypatch, softmax):
    """A wrong conversion is refused: a logit moved by 2e-3 of the logit range,
    or a saturated probability moved by 0.05."""
    import rexnet_plugin.deploy.export as export_mod
    weights, _ = _large_logit_weights(tmp_path)
    real = export_mod.run_onnx

    def off(session, images):
        out = real(session, images).copy()
        out[0, 0] += 0.05 if softmax else 2e-3 * np.ptp(out[0])
        return out
    monkeypatch.setattr(export_mod, "run_onnx", off)
    with pytest.raises(RuntimeError, match="differs from Paddle Inference"):
        export_model("ReXNetLite_1_0", str(weights), tmp_path / "m", onnx=True,
                     image_size=64, class_num=10, softmax=softmax)
    assert not (tmp_path / "m" / "inference.json").exists()


def test_a_failed_re_export_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "model"
    export_model("ReXNetLite_1_0", None, out, image_size=64, class_num=3, untrained=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    wrong = _weights(tmp_path, "ReXNetLite_1_0", 7, 0)  # 7 classes for a 3-class export
    with pytest.raises(Exception, match="class"):
        export_model("ReXNetLite_1_0", str(wrong), out, image_size=64, class_num=3)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".*")) and not list(out.glob(".*"))
    with pytest.raises(ValueError):  # and no new, empty folder from a failed first export
        export_model("ReXNetLite_1_0", str(wrong), tmp_path / "new", class_num=3)
    assert not (tmp_path / "new").exists()


def test_stale_temp_folders_are_swept_and_live_ones_kept(tmp_path):
    """files.sweep_stale at work: a killed export's temp folder goes, a live one's stays."""
    import os
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    killed = tmp_path / f".out.rexnet-tmp-{int(dead.stdout)}-0badc0de"  # what SIGKILL leaves
    killed.mkdir()
    (killed / "inference.pdiparams").write_bytes(b"half")
    live = tmp_path / f".out.rexnet-tmp-{os.getpid()}-00c0ffee"  # an export running now
    live.mkdir()
    users = tmp_path / ".export-notes"  # not an export's: never touched
    users.mkdir()
    (users / "mine.txt").write_text("keep")
    export_inference(create_model("ReXNetLite_1_0", class_num=2), tmp_path / "out", 64)
    assert not killed.exists()
    assert live.is_dir() and (users / "mine.txt").read_text() == "keep"


def test_a_killed_export_is_swept_by_the_next_one(tmp_path):
    """SIGKILL in the middle of rexnet-plugin export, then export again."""
    import signal
    import time
    cmd = [sys.executable, "-m", "rexnet_plugin.cli", "export", "ReXNetLite_1_0", "--untrained",
           "--class-num", "2", "--image-size", "64", "-o", str(tmp_path / "a")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".a.rexnet-tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".a.rexnet-tmp-*")), "the export never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(tmp_path.glob(".a.rexnet-tmp-*"))  # left behind
    export_model("ReXNetLite_1_0", None, tmp_path / "b", image_size=64, class_num=2,
                 untrained=True)
    assert not list(tmp_path.glob(".*"))
    assert not (tmp_path / "a").exists()


def test_export_onnx_writes_atomically_under_a_fresh_name(dynamic_export, monkeypatch):
    """No fixed temp name (two runs would share it), nothing left on failure."""
    model_dir, _ = dynamic_export
    target = model_dir / "failing.onnx"
    target.write_bytes(b"the previous file")
    real_write_bytes = Path.write_bytes
    used = []

    def write_half_then_fail(self, data):
        used.append(self)
        real_write_bytes(self, data[:1000])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        export_onnx(model_dir, target)
    monkeypatch.undo()
    assert target.read_bytes() == b"the previous file"
    assert used and used[0].parent == model_dir and used[0].name != ".failing.onnx.tmp"
    assert not used[0].exists()
    leftovers = [p.name for p in model_dir.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


def test_a_folder_holding_an_int8_model_is_refused(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "inference_int8.pdiparams").write_bytes(b"x")
    assert main(["export", "ReXNetLite_1_0", "--untrained", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "inference_int8.pdiparams" in err and "another folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["inference_int8.pdiparams"]


def test_an_output_under_a_file_names_the_folder(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "model"
    assert main(["export", "ReXNetLite_1_0", "--untrained", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "a file is in the way" in err and "Traceback" not in err


def test_a_read_only_output_folder_names_the_folder_and_the_fix(tmp_path, capsys, monkeypatch):
    """Exit code 2, the folder and the fix, no traceback. Root writes into
    read-only folders, so as root the refusal is simulated where the check
    writes its probe file (the same EACCES a normal user gets)."""
    import errno
    import os
    import tempfile
    out = tmp_path / "read-only"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:
        real_mkstemp = tempfile.mkstemp

        def refuse_in_out(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == out:
                raise PermissionError(errno.EACCES, "Permission denied", str(out))
            return real_mkstemp(*args, dir=dir, **kwargs)
        monkeypatch.setattr(tempfile, "mkstemp", refuse_in_out)
    try:
        code = main(["export", "ReXNetLite_1_0", "--untrained", "-o", str(out)])
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write to the output folder {out}: Permission denied" in err
    assert "chmod u+w" in err and "Traceback" not in err
    assert not list(out.iterdir())


def test_label_list_option(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nfish\n")
    out = tmp_path / "model"
    assert main(["export", "ReXNetLite_1_0", "--untrained", "--class-num", "3",
                 "--image-size", "64", "--label-list", str(labels), "-o", str(out)]) == 0
    assert read_infer_config(out).label_list == ["cat", "dog", "fish"]
    assert main(["export", "ReXNetLite_1_0", "--untrained", "--class-num", "4",
                 "--label-list", str(labels), "-o", str(tmp_path / "other")]) == 2
    assert "has 3 names; the model has 4 classes" in capsys.readouterr().err


# -- one unit; nothing from outside ---------------------------------------------

def test_a_crash_midway_through_the_swap_leaves_no_runnable_mix(tmp_path, monkeypatch):
    """Killed between the two renames of the swap: the folder must not run a new
    graph with old parameters (or the reverse); a folder that is gone runs nothing."""
    from rexnet_plugin.deploy.predict import load_model
    out = tmp_path / "model"
    export_model("ReXNetLite_1_0", None, out, image_size=64, class_num=3, untrained=True)
    real_rename, calls = Path.rename, []

    def crash_after_the_first(self, target):
        if calls:
            raise KeyboardInterrupt  # stands in for SIGKILL: nothing after it runs
        calls.append(target)
        return real_rename(self, target)
    monkeypatch.setattr(Path, "rename", crash_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        export_model("ReXNetLite_1_0", None, out, image_size=64, class_num=5, untrained=True)
    monkeypatch.undo()
    assert calls, "the swap did not start"
    with pytest.raises(ValueError):  # ModelFolderError
        load_model(out)


@pytest.mark.slow  # three exports
def test_a_configs_class_id_map_file_outside_its_folder_is_not_copied(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("".join(f"{i} secret {i}\n" for i in range(3)))
    home = tmp_path / "project"
    home.mkdir()
    monkeypatch.chdir(home)
    (home / "link.txt").symlink_to(secret)
    for label_file in (str(secret), "../secret.txt", "link.txt"):
        config = home / "ReXNetLite_1_0.yaml"
        config.write_text(yaml.safe_dump({
            "Global": {"image_shape": [3, 64, 64]}, "Arch": {"name": "ReXNetLite_1_0",
                                                              "class_num": 3},
            "Infer": {"PostProcess": {"name": "Topk", "class_id_map_file": label_file}}}))
        result = export_model(str(config), None, home / "out", untrained=True)
        assert "secret" not in (home / "out" / "inference.yml").read_text(), label_file
        assert "none" in result.labels


def test_deeply_nested_or_aliased_configs_are_clear_errors(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("Arch: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ValueError, match="nests too deeply|Arch"):
        read_export_source(str(deep))
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS_YAML + "Arch: {name: *e}\n")
    with pytest.raises(ValueError) as err:
        read_export_source(str(bomb))
    assert len(str(err.value)) < 2000
