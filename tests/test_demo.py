"""`rexnet-plugin demo` end to end, on the real digits, with reduced settings.

The reduced run's threshold is calibrated, not guessed: README "Run the
demo" gives the spread over seeds and the command that measured it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rexnet_plugin.cli import main
from rexnet_plugin.demo import DemoInterrupted, DemoSettings, run_demo
from rexnet_plugin.demo import data as demo_data
from rexnet_plugin.demo import train_paddle

# CI's reduced run: 2 epochs instead of 6, batch 32 (more steps per epoch), all
# 1,437 training and 360 held-out images. Over seeds 0-9 it scored 76.9% to
# 93.9% (median 88.1%; python scripts/calibrate_demo.py --reduced --seeds 0 1 2
# 3 4 5 6 7 8 9); the threshold sits well below the worst seed, far above
# chance (10%).
REDUCED = dict(epochs=2, batch_size=32, image_size=32)
REDUCED_TOP1_THRESHOLD = 0.65
# int8 (model/ quantized on 256 training images) against fp32 in that run, over
# seeds 0-2: from 0.83 points above to 0.28 below fp32, 97.2% to 98.6% the same
# class (python scripts/calibrate_demo.py --reduced --seeds 0 1 2).
INT8_MAX_TOP1_DROP = 0.02
INT8_MIN_AGREEMENT = 0.95

REPORT_FILES = ("metrics.json", "report.png", "training_curves.png", "confusion_matrix.png",
                "config.yaml", "model/inference.json", "model/inference.pdiparams",
                "model/label_list.txt", "model/inference.yml", "model_int8/inference.onnx",
                "model_int8/inference.yml", "model_int8/quantization.json")


def _no_temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if re.search(r"[.-](tmp|old)-\d|\.tmp$", p.name)]


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    metrics = run_demo(DemoSettings(out=out, engine="paddle", progress=False, seed=0,
                                    **REDUCED))
    return out, metrics


def test_reduced_run_reaches_calibrated_top1(reduced_run):
    out, metrics = reduced_run
    assert metrics["top1"] >= REDUCED_TOP1_THRESHOLD, metrics["history"]
    assert metrics["epochs_completed"] == REDUCED["epochs"] and not metrics["interrupted"]
    assert metrics["data"]["train_images"] == 1437
    assert metrics["data"]["val_images"] == 360
    # paddle.Model's own evaluation after the last epoch saw the same weights and images.
    assert metrics["engine_last_val_top1"] == pytest.approx(metrics["top1"], abs=1e-6)
    per_class = metrics["per_class_accuracy"]
    assert list(per_class) == [str(d) for d in range(10)]
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 360 and np.trace(matrix) / 360 == pytest.approx(metrics["top1"])


def test_report_files_are_written_whole(reduced_run):
    import matplotlib.image
    out, metrics = reduced_run
    for name in REPORT_FILES:
        if name.startswith("model_int8/") and "skipped" in metrics["int8"]:
            continue  # test_int8_model_is_reported_and_close_to_fp32 says why
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("report.png", "training_curves.png", "confusion_matrix.png"):
        height, width = matplotlib.image.imread(out / name).shape[:2]
        assert height > 100 and width > 100, name
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, REDUCED["epochs"] + 1))
    assert all({"train_loss", "train_top1", "val_loss", "val_top1"} <= set(h)
               for h in metrics["history"])
    assert set(metrics["timings_s"]) >= {"data_s", "train_s", "export_s", "total_s"}
    assert metrics["versions"]["paddlepaddle"]
    assert not _no_temp_files(out)


def test_predictor_agrees_with_dygraph(reduced_run):
    out, metrics = reduced_run
    assert metrics["predictor"]["agreement_with_dygraph"] == 1.0
    assert metrics["predictor"]["max_abs_logit_diff"] < 1e-3
    assert metrics["dygraph_top1"] == metrics["top1"]


def test_exported_model_alone_reproduces_the_reported_top1(reduced_run):
    """Reload model/ as a user would; its held-out top-1 is the one reported."""
    from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
    import yaml
    out, metrics = reduced_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    transform = demo_data.build_transforms(
        config["DataLoader"]["Eval"]["dataset"]["transform_ops"])
    folder = demo_data.read_image_folder(out / "data")
    images = np.stack([transform(demo_data.read_image(folder.root / rel), random.Random(0))
                       for rel, _ in folder.val])
    labels = np.array([label for _, label in folder.val])
    logits = run_predictor(create_predictor(out / "model"), images)
    assert float((logits.argmax(1) == labels).mean()) == pytest.approx(metrics["top1"])


def test_predict_on_the_model_folder_reproduces_the_reported_top1(reduced_run, capsys):
    """`rexnet-plugin predict model/ data/val_list.txt`: model/'s inference.yml
    carries the recipe's eval transform, so predict gets the same classes."""
    out, metrics = reduced_run
    code = main(["predict", str(out / "model"), str(out / "data" / "val_list.txt"), "--json",
                 "--batch-size", "64"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 360
    folder = demo_data.read_image_folder(out / "data")
    records = [json.loads(line) for line in lines]
    assert [r["image"] for r in records] == [str(folder.root / rel) for rel, _ in folder.val]
    hits = [r["class_id"] == label for r, (_, label) in zip(records, folder.val)]
    assert sum(hits) / 360 == pytest.approx(metrics["top1"])
    # model/ outputs logits; predict's scores are their softmax (max of ten at least 1/10).
    assert all(0 < s <= 1 for r in records for _, s in r["topk"])
    assert all(r["score"] >= 0.1 for r in records)
    # In text mode, the list's labels give a top-1 line: the reported one.
    assert main(["predict", str(out / "model"), str(out / "data" / "val_list.txt")]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"top-1: {100 * metrics['top1']:.2f}% ({sum(hits)}/360 labelled")


def test_int8_model_is_reported_and_close_to_fp32(reduced_run, capsys):
    """The int8 step: model/ quantized on training images; its held-out top-1 and
    its agreement with the fp32 predictor are in metrics.json, and model_int8/
    alone, run by `rexnet-plugin predict`, reproduces them."""
    out, metrics = reduced_run
    int8 = metrics["int8"]
    if "skipped" in int8:  # paddle2onnx has no wheel for this Python
        assert "no wheel for Python" in int8["skipped"]
        pytest.skip(int8["skipped"])
    assert int8["model_dir"] == str(out / "model_int8")
    assert int8["calibration"]["images"] >= 32
    size = REDUCED["image_size"]
    assert int8["calibration"]["input_shape"] == [3, size, size]
    assert INT8_MAX_TOP1_DROP >= metrics["top1"] - int8["top1"]
    assert int8["agreement_with_fp32"] >= INT8_MIN_AGREEMENT
    assert "quantize_s" in metrics["timings_s"]
    code = main(["predict", str(out / "model_int8"), str(out / "data" / "val_list.txt"),
                 "--json", "--batch-size", "64"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(records) == 360
    folder = demo_data.read_image_folder(out / "data")
    int8_top1 = np.mean([r["class_id"] == label for r, (_, label) in zip(records, folder.val)])
    assert int8_top1 == pytest.approx(int8["top1"])


def test_checkpoint_loads_into_a_fresh_model(reduced_run):
    import paddle
    from rexnet_plugin import create_model
    from rexnet_plugin.weights import load_pretrained
    out, metrics = reduced_run
    checkpoint = Path(metrics["checkpoint"])
    assert checkpoint.name == f"epoch_{REDUCED['epochs']}.pdparams"
    model = load_pretrained(create_model("ReXNet_1_0", class_num=10), checkpoint)
    model.eval()
    x = paddle.zeros([1, 3, 32, 32])
    assert model(x).shape == [1, 10]


# ------------------------------------------------------------------ Ctrl-C

def test_ctrl_c_after_epoch_1_evaluates_and_exports_that_epoch(tmp_path):
    import paddle
    from rexnet_plugin import create_model
    from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
    from rexnet_plugin.weights import load_pretrained

    def interrupt(epoch):
        if epoch == 1:
            raise KeyboardInterrupt

    out = tmp_path / "report"
    metrics = run_demo(DemoSettings(out=out, epochs=3, train_images=64, engine="paddle",
                                    progress=False), on_epoch_end=interrupt)
    assert metrics["interrupted"] and metrics["epochs_completed"] == 1
    assert [h["epoch"] for h in metrics["history"]] == [1]
    checkpoint = Path(metrics["checkpoint"])
    assert checkpoint == out / "checkpoints" / "epoch_1.pdparams"
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["epoch"] == 1
    # The exported model is that checkpoint.
    model = load_pretrained(create_model("ReXNet_1_0", class_num=10), checkpoint)
    model.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype("float32")
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x)).numpy()
    got = run_predictor(create_predictor(out / "model"), x)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    for name in REPORT_FILES:
        if name.startswith("model_int8/") and "skipped" in metrics["int8"]:
            continue  # test_int8_model_is_reported_and_close_to_fp32 says why
        assert (out / name).is_file(), name
    assert not _no_temp_files(out)

    # Rerunning into the same folder (written by the demo: no --force needed)
    # starts afresh: nothing of the interrupted run is taken for this one's.
    # With 16 training images, fewer than quantize calibrates on, the int8 step
    # is skipped and says why; the previous run's model_int8/ is not left behind.
    assert (out / "model_int8" / "inference.onnx").is_file()
    metrics = run_demo(DemoSettings(out=out, epochs=1, train_images=16, engine="paddle",
                                    progress=False))
    assert not metrics["interrupted"] and metrics["data"]["train_images"] == 16
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch_*")) == [
        "epoch_1.pdopt", "epoch_1.pdparams"]
    assert "at least 32 images" in metrics["int8"]["skipped"]
    assert not (out / "model_int8").exists()


def test_a_failed_run_leaves_a_folder_marked_incomplete_and_a_rerun_starts_afresh(
        tmp_path, monkeypatch, capsys):
    """A crash after training (here: in the export) leaves INCOMPLETE.txt, no
    metrics.json and no result of an earlier run; the rerun completes. Without
    paddle2onnx (Python 3.13 has no wheel) the int8 step is announced as skipped
    before training, and the run still ends with its report."""
    import rexnet_plugin.deploy.export as export_mod
    out = tmp_path / "report"
    out.mkdir()
    (out / ".rexnet-demo").write_text("")
    (out / "metrics.json").write_text('{"top1": 1.0}')  # an earlier run's
    (out / "model").mkdir()

    def crash(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(export_mod, "export_inference", crash)
    argv = ["demo", "--out", str(out), "--epochs", "1", "--train-images", "64",
            "--engine", "paddle"]
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(argv)
    assert "is incomplete" in capsys.readouterr().err
    assert (out / "INCOMPLETE.txt").is_file()
    assert not (out / "metrics.json").exists() and not (out / "model").exists()

    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)  # find_spec: not installed
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.index("int8 step will be skipped") < printed.index("training")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "paddle2onnx" in metrics["int8"]["skipped"]
    assert not (out / "INCOMPLETE.txt").exists() and (out / "model" / "inference.json").is_file()


def test_ctrl_c_before_any_epoch_says_what_to_rerun(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_paddle, "train_with_paddle", interrupted)
    with pytest.raises(DemoInterrupted, match="Rerun: rexnet-plugin demo"):
        run_demo(DemoSettings(out=tmp_path / "a", epochs=2, engine="paddle", progress=False))
    code = main(["demo", "--out", str(tmp_path / "b"), "--epochs", "2", "--engine", "paddle"])
    assert code == 130
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "is incomplete" in err
    assert not (tmp_path / "b" / "metrics.json").exists()
    assert (tmp_path / "b" / "INCOMPLETE.txt").is_file()


def test_real_sigint_stops_cleanly(tmp_path):
    """A real SIGINT, as Ctrl-C sends, while the CLI trains."""
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PADDLECLAS_ROOT", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "rexnet_plugin.cli", "demo", "--out", str(out), "--epochs", "20",
         "--train-images", "64"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
        # A shell that starts pytest in the background makes it ignore SIGINT, and
        # children inherit that; a terminal's Ctrl-C always arrives.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pointer = out / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 300
    while not pointer.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pointer.exists(), child.communicate()[0] if child.poll() is not None else "timeout"
    child.send_signal(signal.SIGINT)
    output, _ = child.communicate(timeout=300)
    assert child.returncode == 130, output
    assert "Interrupted" in output and "rerun: rexnet-plugin demo" in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] and 1 <= metrics["epochs_completed"] < 20
    assert (out / "model" / "inference.pdiparams").is_file()
    assert "Traceback" not in output
    assert not _no_temp_files(out)


# ------------------------------------------------------------------ --data

@pytest.fixture
def user_folder(tmp_path):
    """A user's two-class folder: digits 0 and 1 as 40x48 JPEGs named cat and dog."""
    import cv2
    from sklearn.datasets import load_digits
    digits = load_digits()
    root = tmp_path / "mine"
    lines = {"train": [], "val": []}
    for i in np.flatnonzero(digits.target < 2)[:60]:
        img = cv2.resize((digits.images[i] * 15).astype(np.uint8), (40, 48))
        rel = f"{'cats' if digits.target[i] == 0 else 'dogs'}/{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), cv2.merge([img, img, img]))
        lines["val" if len(lines["train"]) >= 40 else "train"].append(f"{rel} {digits.target[i]}")
    for split, rows in lines.items():
        (root / f"{split}_list.txt").write_text("\n".join(rows) + "\n")
    (root / "label_list.txt").write_text("0 cat\n1 dog\n")
    return root


def test_user_folder_trains_and_keeps_its_class_names(user_folder, tmp_path):
    out = tmp_path / "report"
    metrics = run_demo(DemoSettings(out=out, data=user_folder, epochs=1, image_size=32,
                                    engine="paddle", progress=False))
    assert metrics["data"]["classes"] == 2 and metrics["data"]["val_images"] == 20
    assert list(metrics["per_class_accuracy"]) == ["cat", "dog"]
    assert (out / "model" / "label_list.txt").read_text() == "0 cat\n1 dog\n"
    assert metrics["predictor"]["agreement_with_dygraph"] == 1.0
    assert not (out / "data").exists(), "a user's folder is read in place"


def test_pretrained_weights_are_the_starting_point(user_folder, tmp_path):
    """--pretrained: a 1000-class checkpoint starts a 2-class run (head replaced)."""
    import paddle
    from rexnet_plugin import create_model
    source = create_model("ReXNet_1_0")  # 1000 classes, random: stands in for ImageNet weights
    path = tmp_path / "imagenet.pdparams"
    paddle.save(source.state_dict(), str(path))
    out = tmp_path / "report"
    # A learning rate of ~0 keeps the weights where they started.
    metrics = run_demo(DemoSettings(out=out, data=user_folder, epochs=1, image_size=32,
                                    learning_rate=1e-12, pretrained=str(path),
                                    engine="paddle", progress=False))
    trained = paddle.load(metrics["checkpoint"])
    start = source.state_dict()
    np.testing.assert_allclose(trained["features.0.weight"].numpy(),
                               start["features.0.weight"].numpy(), atol=1e-6)
    assert list(trained["output.1.weight"].shape) == [2, 1280, 1, 1]


# ------------------------------------------------------ PaddleClas's engine

def test_paddleclas_engine_path(tmp_path):
    root = os.environ.get("PADDLECLAS_ROOT")
    if not root:
        pytest.skip("PADDLECLAS_ROOT is not set: the PaddleClas-engine path needs a checkout")
    out = tmp_path / "report"
    metrics = run_demo(DemoSettings(out=out, epochs=1, train_images=64, engine="paddleclas",
                                    progress=False))
    assert metrics["engine"] == "paddleclas"
    train_py = Path(root).resolve() / "tools" / "train.py"
    assert metrics["config"]["paddleclas_command"][1] == str(train_py)
    assert Path(metrics["checkpoint"]).name == "epoch_1.pdparams"
    assert (out / "ppcls_output" / "latest.pdparams").is_file()  # PaddleClas's own
    log = (out / "ppcls_output" / "train.log").read_text()
    assert "rexnet-plugin" in log, "the autoload hook should put this package's model in ppcls.arch"
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1] and "val_top1" in history[0]
    # PaddleClas's own evaluation and ours agree on the same checkpoint.
    assert metrics["engine_last_val_top1"] == pytest.approx(metrics["top1"], abs=1e-6)
    assert metrics["predictor"]["agreement_with_dygraph"] == 1.0
