"""PaddleClas's own, unmodified tools on ReXNet, end to end.

Needs a PaddleClas source checkout in PADDLECLAS_ROOT (skipped otherwise).
Each tool runs in its own subprocess on the CPU, on a tiny dataset made
here, with the shipped config changed only by -o overrides.
"""

from __future__ import annotations

import json
import re

import numpy as np
import paddle
import pytest

from ppcls_support import (BATCH, CONFIG_DIR, CROP, NUM_CLASSES, RESIZE, TRAIN_PER_CLASS,
                           data_overrides, make_dataset, paddleclas_root, run_tool,
                           seed_transform)
from rexnet_plugin.deploy.infer_config import read_infer_config, write_infer_config
from rexnet_plugin.deploy.runtime import create_predictor, run_predictor
from rexnet_plugin.factories import create_model
from rexnet_plugin.zoo import EvalTransform

NAME = "ReXNet_1_0"
CONFIG = CONFIG_DIR / f"{NAME}.yaml"
# The one training change: a learning rate that a 24-image dataset survives.
STABLE_LR = "Optimizer.lr.learning_rate=0.02"


@pytest.fixture(scope="module")
def root():
    return paddleclas_root()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("ppcls_tools")
    make_dataset(work / "data")
    return work


@pytest.fixture(scope="module")
def trained(root, work):
    """tools/train.py, 2 epochs; returns the checkpoint prefix and the log."""
    out = work / "output"
    result = run_tool(root, "train", CONFIG, cwd=work, overrides=[
        *data_overrides(work / "data"), STABLE_LR, "Global.epochs=2", "Global.seed=0",
        f"Global.output_dir={out}", "Global.print_batch_step=1"])
    return out / "latest", result.stdout + result.stderr


def trained_model(checkpoint) -> paddle.nn.Layer:
    """The trained weights, in the plain dygraph model."""
    model = create_model(NAME, class_num=NUM_CLASSES)
    model.set_state_dict(paddle.load(f"{checkpoint}.pdparams"))
    model.eval()
    return model


def val_images(work):
    return sorted((work / "data" / "val").glob("*/*.jpg"))


def test_train(trained):
    checkpoint, log = trained
    assert "[Train][Epoch 2/2]" in log and "[Eval][Epoch 2][Avg]" in log
    assert re.search(r"rexnet-plugin: ReXNet_1_0, .* build rexnet-plugin's ReXNet", log)
    state = paddle.load(f"{checkpoint}.pdparams")
    assert list(state) == list(create_model(NAME, class_num=NUM_CLASSES).state_dict())


def test_resume_from_global_checkpoints(root, work, trained):
    """Global.checkpoints goes through the model's checked set_state_dict too."""
    checkpoint, _ = trained
    out = work / "resumed"
    result = run_tool(root, "train", CONFIG, cwd=work, overrides=[
        *data_overrides(work / "data", evaluate=False), STABLE_LR, "Global.epochs=2",
        "Global.eval_during_train=False", f"Global.output_dir={out}",
        f"Global.checkpoints={checkpoint.parent / 'epoch_1'}"])
    log = result.stdout + result.stderr
    assert "Finish load checkpoints from" in log
    assert "[Train][Epoch 2/2]" in log and "[Train][Epoch 1/2]" not in log
    assert (out / "epoch_2.pdparams").exists()


def test_eval(root, work, trained):
    checkpoint, _ = trained
    result = run_tool(root, "eval", CONFIG, cwd=work, overrides=[
        *data_overrides(work / "data", train=False), f"Global.pretrained_model={checkpoint}"])
    log = result.stdout + result.stderr
    assert f"Finish load pretrained model from {checkpoint}.pdparams" in log
    top1 = float(re.search(r"\[Eval\]\[Epoch 0\]\[Avg\].*top1: ([\d.]+)", log).group(1))

    # The same accuracy in plain dygraph, with the seed's transform written out.
    model = trained_model(checkpoint)
    images = val_images(work)
    x = np.stack([seed_transform(p, RESIZE, CROP) for p in images])
    predicted = model(paddle.to_tensor(x)).numpy().argmax(1)
    labels = np.array([int(p.parent.name) for p in images])
    assert top1 == pytest.approx((predicted == labels).mean(), abs=1e-4)


@pytest.fixture(scope="module")
def exported(root, work, trained):
    checkpoint, _ = trained
    out = work / "inference"
    run_tool(root, "export_model", CONFIG, cwd=work, overrides=[
        *data_overrides(work / "data", train=False, evaluate=False),
        f"Global.pretrained_model={checkpoint}", f"Global.save_inference_dir={out}"])
    return out


@pytest.mark.parametrize("mkldnn", [False, True])
def test_exported_model_matches_the_trained_weights(work, trained, exported, mkldnn):
    model = trained_model(trained[0])
    x = np.stack([seed_transform(p, RESIZE, CROP) for p in val_images(work)])
    # PaddleClas's ExportModel appends a softmax.
    expected = paddle.nn.functional.softmax(model(paddle.to_tensor(x))).numpy()
    got = run_predictor(create_predictor(exported, mkldnn=mkldnn), x)
    assert got.shape == (len(x), NUM_CLASSES)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 if not mkldnn else 1e-4)


def test_infer(root, work, trained):
    """tools/infer.py runs the Infer section: the deploy operators of inference.yml."""
    checkpoint, _ = trained
    saved = work / "infer_result.json"
    run_tool(root, "infer", CONFIG, cwd=work, overrides=[
        "Global.device=cpu", f"Arch.class_num={NUM_CLASSES}",
        f"Global.pretrained_model={checkpoint}",
        f"Infer.infer_imgs={work / 'data' / 'val'}", f"Infer.save_dir={saved}",
        f"Infer.transforms.1.ResizeImage.resize_short={RESIZE}",
        f"Infer.transforms.2.CropImage.size={CROP}",
        "Infer.PostProcess.topk=2", "Infer.PostProcess.class_id_map_file=None"])
    results = {r["file_name"]: r for r in json.loads(saved.read_text())}
    images = val_images(work)
    assert sorted(results) == sorted(str(p) for p in images)
    model = trained_model(checkpoint)
    write_infer_config(work / "deploy", model_name=NAME,
                       transform=EvalTransform(resize_short=RESIZE, crop_size=CROP))
    preprocessing = read_infer_config(work / "deploy")
    x = np.stack([preprocessing.preprocess(p) for p in images])
    probs = paddle.nn.functional.softmax(model(paddle.to_tensor(x))).numpy()
    for path, p in zip(images, probs):
        r = results[str(path)]
        assert r["class_ids"][0] == int(p.argmax())
        assert r["scores"][0] == pytest.approx(float(p.max()), abs=1e-4)


def test_fine_tune_a_new_head_from_arch_pretrained(root, work, trained):
    checkpoint, _ = trained
    out = work / "finetune"
    run_tool(root, "train", CONFIG, cwd=work, overrides=[
        *data_overrides(work / "data", evaluate=False), STABLE_LR, "Arch.class_num=5",
        f"Arch.pretrained={checkpoint}.pdparams", "Arch.skip_head=True",
        "Global.eval_during_train=False", "Global.epochs=1", f"Global.output_dir={out}"])
    state = paddle.load(str(out / "latest.pdparams"))
    assert list(state["output.1.weight"].shape) == [5, 1280, 1, 1]


def test_two_processes_under_paddle_distributed_launch(root, work):
    """The same config under paddle.distributed.launch, 2 CPU processes.

    Global.eval_during_train=False: PaddleClas's distributed evaluation calls
    paddle.distributed.ParallelEnv().device_id, which a CPU build of Paddle
    3.3.1 lacks (AttributeError '_device_id'); training itself runs.
    """
    out = work / "distributed"
    batch = BATCH // 2
    result = run_tool(root, "train", CONFIG, cwd=work, overrides=[
        *data_overrides(work / "data", evaluate=False), STABLE_LR,
        f"DataLoader.Train.sampler.batch_size={batch}", "Global.epochs=1",
        "Global.eval_during_train=False", f"Global.output_dir={out}",
        "Global.print_batch_step=1", "Global.seed=0"],
        launcher=["-m", "paddle.distributed.launch", "--nproc_per_node", "2",
                  "--log_dir", str(work / "launch_log")])
    log = (work / "launch_log" / "workerlog.0").read_text()
    assert (work / "launch_log" / "workerlog.1").exists()
    assert "Set random seed to (0 + $PADDLE_TRAINER_ID)" in log  # the distributed branch
    # each of the 2 processes gets half the images: 24 / (4 * 2) = 3 steps per epoch
    steps = NUM_CLASSES * TRAIN_PER_CLASS // (batch * 2)
    assert f"[Train][Epoch 1/1][Iter: {steps - 1}/{steps}]" in log, result.stdout[-3000:]
    assert (out / "latest.pdparams").exists()
