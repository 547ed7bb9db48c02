"""The demo's data: the bundled digits folder, --data validation, the recipe's config."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from rexnet_plugin.cli import main
from rexnet_plugin.demo import data, recipe
from rexnet_plugin.demo import DataError, RecipeError
from rexnet_plugin.demo.data import read_image_folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return data.write_digits(tmp_path_factory.mktemp("digits") / "data")


def test_digits_folder_is_complete_and_split_is_fixed(digits, tmp_path):
    assert len(digits.train) + len(digits.val) == 1797
    assert len(digits.val) == 360
    assert digits.class_names == [str(d) for d in range(10)]
    # Stratified: every class in both splits.
    assert {label for _, label in digits.val} == set(range(10))
    # No image in both splits.
    assert not {rel for rel, _ in digits.train} & {rel for rel, _ in digits.val}
    # Written again elsewhere: the same split, line for line.
    again = data.write_digits(tmp_path / "again")
    assert again.val == digits.val and again.train == digits.train
    assert not list(tmp_path.glob(".*tmp*")), "temporary folder left behind"


def test_digits_images_are_rgb_pngs_of_the_scans(digits):
    import cv2
    from sklearn.datasets import load_digits
    rel, label = digits.val[0]
    img = cv2.imread(str(digits.root / rel), cv2.IMREAD_UNCHANGED)
    assert img.shape == (data.DIGITS_IMAGE_SIZE, data.DIGITS_IMAGE_SIZE, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    index = int(Path(rel).stem)
    scans = load_digits()
    assert scans.target[index] == label
    # Downscaled back to 8x8, the PNG is the scan (0-16 scaled to 0-255).
    small = cv2.resize(img[..., 0], (8, 8), interpolation=cv2.INTER_AREA).astype(float)
    corr = np.corrcoef(small.ravel(), scans.images[index].ravel())[0, 1]
    assert corr > 0.9


def _folder(tmp_path, train="a.png 0\nb.png 1\n", val="a.png 0\n", labels=None):
    import cv2
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((40, 40, 3), np.uint8))
    if train is not None:
        (tmp_path / "train_list.txt").write_text(train)
    if val is not None:
        (tmp_path / "val_list.txt").write_text(val)
    if labels is not None:
        (tmp_path / "label_list.txt").write_text(labels)
    return tmp_path


def test_valid_user_folder(tmp_path):
    folder = read_image_folder(_folder(tmp_path, labels="0 cat\n1 dog\n"))
    assert folder.class_names == ["cat", "dog"]
    assert folder.train == [("a.png", 0), ("b.png", 1)]
    # Without label_list.txt the names are the indices.
    (tmp_path / "label_list.txt").unlink()
    assert read_image_folder(tmp_path).class_names == ["0", "1"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(train=None), "train_list.txt not found"),
    (dict(val=None), "val_list.txt not found"),
    (dict(train="a.png 0\nb.png\n"), "train_list.txt:2: expected 'relative/path label'"),
    (dict(train="a.png 0\nmy b.png 1\n"), "train_list.txt:2: expected"),
    (dict(train="a.png zero\n"), "train_list.txt:1: label 'zero' is not an integer"),
    (dict(train="a.png -1\n"), "train_list.txt:1: label -1 is negative"),
    (dict(val="missing.png 0\n"), "val_list.txt:1: image"),
    (dict(train="a.png 0\nb.png 0\n"), "at least two classes"),
    (dict(train=""), "train_list.txt lists no images"),
    (dict(labels="0 cat\n2 dog\n"), "label_list.txt: labels must be 0..1"),
    (dict(labels="0 cat\n"), "label_list.txt names 1 classes, but the lists use label 1"),
    (dict(labels="x cat\n"), "label_list.txt:1: expected 'label name'"),
])
def test_bad_user_folder_names_file_and_line(tmp_path, kwargs, message):
    root = _folder(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message.replace(".", r"\.").replace("(", r"\(")):
        read_image_folder(root)


def test_absolute_path_in_list_is_refused(tmp_path):
    root = _folder(tmp_path, train=f"{tmp_path / 'a.png'} 0\nb.png 1\n")
    with pytest.raises(DataError, match="absolute path"):
        read_image_folder(root)


def test_cli_reports_bad_data_and_exits_2(tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    _folder(root, train="a.png 0\nb.png one\n")
    code = main(["demo", "--data", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{root / 'train_list.txt'}:2: label 'one' is not an integer" in err
    assert "Traceback" not in err
    code = main(["demo", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert code == 2 and "not a directory" in capsys.readouterr().err


def test_cli_refuses_to_clobber_an_unrelated_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["demo", "--out", str(tmp_path), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--force" in err and "not empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "16"], "--image-size 16: ReXNet needs at least 32"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
])
def test_cli_rejects_bad_settings(tmp_path, capsys, argv, message):
    assert main(["demo", "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_rejects_unknown_variant(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--variant", "ReXNet_9_9"])
    assert "ReXNet_1_0" in capsys.readouterr().err


# ------------------------------------------------------------------ recipe

def _recipe(**kw):
    base = dict(variant="ReXNet_1_0", epochs=3, image_size=32, batch_size=64,
                learning_rate=0.1, warmup_epochs=1, seed=0, digits=True)
    return recipe.Recipe(**{**base, **kw})


def test_overrides_reach_the_effective_config(digits, tmp_path):
    options = recipe.overrides(_recipe(), digits, tmp_path / "out")
    config = recipe.effective_config(recipe.shipped_config("ReXNet_1_0"), options)
    assert config["Global"]["epochs"] == 3 and config["Global"]["device"] == "cpu"
    assert config["Arch"] == {**config["Arch"], "name": "ReXNet_1_0", "class_num": 10}
    train = config["DataLoader"]["Train"]
    assert train["dataset"]["cls_label_path"] == str(digits.train_list)
    assert train["sampler"]["batch_size"] == 64
    assert config["Optimizer"]["lr"]["name"] == "Cosine"
    # No flips for digits, and every op has the demo's size.
    names = [next(iter(op)) for op in train["dataset"]["transform_ops"]]
    assert "RandFlipImage" not in names
    assert train["dataset"]["transform_ops"][1]["RandCropImage"]["size"] == 32


def test_user_data_gets_imagenet_transforms(digits, tmp_path):
    ops = recipe.transform_ops(_recipe(digits=False, image_size=64), train=True)
    assert [next(iter(op)) for op in ops] == [
        "DecodeImage", "RandCropImage", "RandFlipImage", "NormalizeImage"]
    ops = recipe.transform_ops(_recipe(digits=False, image_size=224), train=False)
    assert ops[1] == {"ResizeImage": {"resize_short": 256}}
    assert ops[2] == {"CropImage": {"size": 224}}


def test_override_with_equals_sign_is_refused(digits, tmp_path):
    with pytest.raises(RecipeError, match="'='"):
        recipe.overrides(_recipe(), digits, tmp_path / "a=b")


def test_eval_transforms_give_normalised_chw(digits):
    ops = recipe.transform_ops(_recipe(image_size=48), train=False)
    transform = data.build_transforms(ops)
    img = transform(data.read_image(digits.root / digits.val[0][0]), random.Random(0))
    assert img.shape == (3, 48, 48) and img.dtype == np.float32
    # The background (0) normalises to -mean/std per channel.
    expected = -np.array(recipe.MEAN) / np.array(recipe.STD)
    np.testing.assert_allclose(img[:, 0, 0], expected, rtol=1e-5)


def test_unsupported_op_names_the_fix():
    with pytest.raises(RecipeError, match="PADDLECLAS_ROOT"):
        data.build_transforms([{"AutoAugment": None}])


# ------------------------------------- against PaddleClas itself, when available

def _import_paddleclas(monkeypatch) -> Path:
    """Put the checkout in PADDLECLAS_ROOT on sys.path, without writing into it."""
    root = os.environ.get("PADDLECLAS_ROOT")
    if not root:
        pytest.skip("PADDLECLAS_ROOT is not set: no PaddleClas checkout to compare with")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(root)
    return Path(root)


def test_effective_config_equals_paddleclas_own(digits, tmp_path, monkeypatch):
    """Our reading of shipped config + -o equals PaddleClas's own get_config."""
    _import_paddleclas(monkeypatch)
    from ppcls.utils.config import get_config
    path = recipe.shipped_config("ReXNet_1_0")
    options = recipe.overrides(_recipe(), digits, tmp_path / "out", pretrained="/w/x.pdparams")
    theirs = get_config(str(path), overrides=list(options), show=False)

    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list):
            return [plain(v) for v in x]
        return x
    assert plain(theirs) == recipe.effective_config(path, options)


def test_transforms_equal_paddleclas_ops(digits, monkeypatch):
    """The deterministic eval pipeline gives PaddleClas's numbers exactly."""
    _import_paddleclas(monkeypatch)
    from ppcls.data.preprocess import transform as ppcls_transform
    from ppcls.data.dataloader.common_dataset import create_operators
    for size, digits_recipe in ((32, True), (48, True), (64, False)):
        ops = recipe.transform_ops(_recipe(image_size=size, digits=digits_recipe), train=False)
        ours = data.build_transforms(ops)
        theirs = create_operators(ops)
        for rel, _ in digits.val[:5]:
            raw = (digits.root / rel).read_bytes()
            expected = ppcls_transform(raw, theirs).transpose(2, 0, 1)
            got = ours(data.read_image(digits.root / rel), random.Random(0))
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_random_train_transforms_equal_paddleclas_ops(digits, monkeypatch):
    """Same seed, same crops and flips: our RandCropImage/RandFlipImage draw like PaddleClas's."""
    _import_paddleclas(monkeypatch)
    from ppcls.data.preprocess import transform as ppcls_transform
    from ppcls.data.dataloader.common_dataset import create_operators
    for size, digits_recipe in ((32, True), (40, True), (64, False)):
        ops = recipe.transform_ops(_recipe(image_size=size, digits=digits_recipe), train=True)
        ours, theirs = data.build_transforms(ops), create_operators(ops)
        rng = random.Random(7)
        random.seed(7)
        for rel, _ in digits.train[:20]:
            raw = (digits.root / rel).read_bytes()
            expected = ppcls_transform(raw, theirs).transpose(2, 0, 1)
            got = ours(data.read_image(digits.root / rel), rng)
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_optimizer_and_schedule_equal_paddleclas(digits, tmp_path, monkeypatch):
    """The Paddle path's optimizer and per-step learning rates are PaddleClas's."""
    import copy
    _import_paddleclas(monkeypatch)
    from ppcls.optimizer import build_optimizer as ppcls_build_optimizer
    from ppcls.utils.logger import init_logger
    from rexnet_plugin import create_model
    init_logger()  # as PaddleClas's Engine does before building the optimizer
    epochs, steps = 4, 23
    options = recipe.overrides(_recipe(epochs=epochs), digits, tmp_path / "out")
    config = recipe.effective_config(recipe.shipped_config("ReXNet_1_0"), options)
    model = create_model("ReXNet_1_0", class_num=10)
    (theirs,), (their_lr,) = ppcls_build_optimizer(copy.deepcopy(config["Optimizer"]),
                                                  epochs, steps, [model])
    ours = recipe.build_optimizer(config["Optimizer"], model.parameters(), epochs, steps)
    assert type(ours) is type(theirs)
    assert (ours._momentum, ours._use_nesterov) == (theirs._momentum, theirs._use_nesterov)
    assert ((ours._regularization_method, ours._regularization_coeff)
            == (theirs._regularization_method, theirs._regularization_coeff))
    our_lr, values = ours._learning_rate, []
    for _ in range(epochs * steps):
        values.append((our_lr(), their_lr()))
        our_lr.step()
        their_lr.step()
    np.testing.assert_allclose(*zip(*values), rtol=1e-6)
    assert values[0][0] < values[steps][0]  # warm-up, then the cosine decay


def test_loss_equals_paddleclas(digits, tmp_path, monkeypatch):
    """Label-smoothed cross entropy: the Paddle path's loss is PaddleClas's CELoss."""
    import copy
    import paddle
    _import_paddleclas(monkeypatch)
    from ppcls.loss import build_loss as ppcls_build_loss
    from ppcls.utils.logger import init_logger
    init_logger()
    options = recipe.overrides(_recipe(), digits, tmp_path / "out")
    config = recipe.effective_config(recipe.shipped_config("ReXNet_1_0"), options)
    assert config["Loss"]["Train"][0]["CELoss"].get("epsilon")  # the shipped smoothing
    theirs = ppcls_build_loss(copy.deepcopy(config["Loss"]["Train"]))
    ours = recipe.build_loss(config["Loss"]["Train"])
    logits = paddle.to_tensor(np.random.default_rng(0).standard_normal((8, 10)).astype("float32"))
    labels = paddle.to_tensor(np.arange(8, dtype="int64"))
    expected = float(theirs(logits, labels.reshape([8, 1]))["loss"])
    assert float(ours(logits, labels)) == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------ PaddleClas's output folder

def test_history_is_read_from_paddleclas_log(tmp_path):
    """The [Avg] lines of PaddleClas's train.log (format of ppcls/engine, 2.6)."""
    from rexnet_plugin.demo.train_ppcls import read_history
    (tmp_path / "train.log").write_text(
        "[2026/11/26 12:21:20] ppcls INFO: [Train][Epoch 1/2][Iter: 0/23]lr(LinearWarmup): "
        "0.00500000, top1: 0.10938, CELoss: 2.30, loss: 2.30, eta: 0:01:23\n"
        "[2026/11/26 12:21:25] ppcls INFO: [Train][Epoch 1/2][Avg]top1: 0.30271, top5: "
        "0.70355, CELoss: 2.22817, loss: 2.22817\n"
        "[2026/11/26 12:21:27] ppcls INFO: [Eval][Epoch 1][Avg]CELoss: 5.44912, loss: "
        "5.44912, top1: 0.10000, top5: 0.50000\n"
        "[2026/11/26 12:21:59] ppcls INFO: [Train][Epoch 2/2][Avg]top1: 0.73347, top5: "
        "0.96312, CELoss: 1.35350, loss: 1.35350\n")
    assert read_history(tmp_path) == [
        {"epoch": 1, "train_loss": 2.22817, "train_top1": 0.30271, "val_loss": 5.44912,
         "val_top1": 0.1},
        {"epoch": 2, "train_loss": 1.3535, "train_top1": 0.73347}]


def test_pruning_keeps_the_chosen_epoch_and_paddleclas_own_files(tmp_path):
    from rexnet_plugin.demo.train_ppcls import checkpoints, prune_checkpoints
    names = [f"{stem}.{ext}" for stem in ("epoch_1", "epoch_2", "latest", "best_model")
             for ext in ("pdparams", "pdopt", "pdstates")]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert [e for e, _ in checkpoints(tmp_path)] == [2, 1]
    prune_checkpoints(tmp_path, keep=tmp_path / "epoch_2.pdparams")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for n in names if not n.startswith("epoch_1."))
