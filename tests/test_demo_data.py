"""The demo's data (the bundled digits, --data validation) and its refusals of bad settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rexnet_plugin.cli import main
from rexnet_plugin.demo import DataError
from rexnet_plugin.demo import data
from rexnet_plugin.demo.data import read_image_folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return data.write_digits(tmp_path_factory.mktemp("digits") / "data")


def test_digits_folder_is_complete_and_split_is_fixed(digits, tmp_path):
    assert len(digits.train) + len(digits.val) == 1797
    assert len(digits.val) == 360
    assert digits.class_names == [str(d) for d in range(10)]
    assert {label for _, label in digits.val} == set(range(10))  # stratified
    assert not {rel for rel, _ in digits.train} & {rel for rel, _ in digits.val}
    again = data.write_digits(tmp_path / "again")  # written again: the same split
    assert again.val == digits.val and again.train == digits.train
    assert [p.name for p in tmp_path.iterdir()] == ["again"], "temporary folder left behind"


def test_digits_images_are_rgb_pngs_of_the_scans(digits):
    from PIL import Image
    from sklearn.datasets import load_digits
    rel, label = digits.val[0]
    with Image.open(digits.root / rel) as image:
        assert image.mode == "RGB" and image.format == "PNG"
        img = np.asarray(image)
    assert img.shape == (data.DIGITS_IMAGE_SIZE, data.DIGITS_IMAGE_SIZE, 3)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
    scans = load_digits()
    index = int(Path(rel).stem)
    assert scans.target[index] == label
    # Downscaled back to 8x8, the PNG is the scan (0-16 scaled to 0-255).
    small = np.asarray(Image.fromarray(img[..., 0]).resize((8, 8), Image.BOX), float)
    assert np.corrcoef(small.ravel(), scans.images[index].ravel())[0, 1] > 0.9


def _folder(tmp_path, train="a.png 0\nb.png 1\n", val="a.png 0\n", labels=None):
    from PIL import Image
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 40)).save(tmp_path / name)
    for name, text in (("train_list.txt", train), ("val_list.txt", val),
                       ("label_list.txt", labels)):
        if text is not None:
            (tmp_path / name).write_text(text)
    return tmp_path


def test_valid_user_folder(tmp_path):
    folder = read_image_folder(_folder(tmp_path, labels="0 cat\n1 dog\n"))
    assert folder.class_names == ["cat", "dog"]
    assert folder.train == [("a.png", 0), ("b.png", 1)]
    (tmp_path / "label_list.txt").unlink()  # without it, the names are the indices
    assert read_image_folder(tmp_path).class_names == ["0", "1"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(train=None), "train_list.txt not found"),
    (dict(val=None), "val_list.txt not found"),
    (dict(train="a.png 0\nb.png\n"), "train_list.txt:2: expected 'relative/path label'"),
    (dict(train="a.png 0\nmy b.png 1\n"), "train_list.txt:2: expected"),
    (dict(train="a.png zero\n"), "train_list.txt:1: expected 'relative/path label'"),
    (dict(train="a.png -1\n"), "train_list.txt:1: expected 'relative/path label'"),
    (dict(val="missing.png 0\n"), "val_list.txt:1: image"),
    (dict(train="a.png 0\nb.png 0\n"), "at least two classes"),
    (dict(train=""), "train_list.txt lists no images"),
    (dict(labels="0 cat\n2 dog\n"), "label_list.txt: the ids are not 0..1, each once"),
    (dict(labels="0 cat\n"), "label_list.txt names 1 classes, but the lists use the labels 0..1"),
    (dict(labels="0 cat\n0 dog\n1 x\n"), "each once"),
    (dict(labels="x cat\n"), "names 1 classes"),  # one name per line: 'x cat'
])
def test_bad_user_folder_names_file_and_line(tmp_path, kwargs, message):
    with pytest.raises(DataError) as error:
        read_image_folder(_folder(tmp_path, **kwargs))
    assert message in str(error.value) and str(tmp_path) in str(error.value)


def test_absolute_path_in_list_is_refused(tmp_path):
    with pytest.raises(DataError, match="absolute path"):
        read_image_folder(_folder(tmp_path, train=f"{tmp_path / 'a.png'} 0\nb.png 1\n"))


def test_cli_reports_bad_data_and_exits_2(tmp_path, capsys):
    root = tmp_path / "d"
    root.mkdir()
    _folder(root, train="a.png 0\nb.png one\n")
    assert main(["demo", "--data", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'train_list.txt'}:2: expected 'relative/path label'" in err
    assert "'b.png one'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert main(["demo", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_refuses_to_clobber_an_unrelated_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and "not empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "16"], "--image-size 16: ReXNet needs at least 32"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--train-images", "0"], "--train-images 0: must be at least 1"),
    (["--lr", "0"], "--lr 0.0: must be above 0"),
    (["--lr", "-0.1"], "--lr -0.1: must be above 0"),
    (["--engine", "paddleclas"], "PaddleClas's tools/train.py, not found in PADDLECLAS_ROOT"),
])
def test_cli_rejects_bad_settings(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.delenv("PADDLECLAS_ROOT", raising=False)
    assert main(["demo", "--out", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_rejects_unknown_variant(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--variant", "ReXNet_9_9"])
    assert "ReXNet_1_0" in capsys.readouterr().err
