"""``rexnet-plugin predict`` on real photos with the official test-vector weights.

The weights are random (test vectors), so class names mean nothing; what
matters is that predict's top-5 is our dygraph model's, through every
runtime, with the folder's own preprocessing.
"""

from __future__ import annotations

import io
import os
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

from ppcls_support import (CONFIG_DIR, paddleclas_root, sample_photos, seed_transform,
                           subprocess_env)
from rexnet_plugin.cli import main
from rexnet_plugin.deploy import predict as predict_mod
from rexnet_plugin.deploy import runtime
from rexnet_plugin.deploy.artifacts import (INFER_CONFIG_FILENAME, LEGACY_MODEL_FILENAME,
                                            MODEL_FILENAME,
                                            ONNX_FILENAME, PARAMS_FILENAME,
                                            QUANTIZATION_FILENAME)
from rexnet_plugin.deploy.images import ImageInputError, collect_images
from rexnet_plugin.deploy.infer_config import read_infer_config, write_infer_config
from rexnet_plugin.zoo import EVAL_TRANSFORM

JSON_KEYS = ["image", "class_id", "score", "topk"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The sample photos (two 640x427 JPEGs, a 287x427 portrait), and a 256x256
    square crop, on which inference.yml's ResizeImage/CropImage and the seed's
    Resize/CenterCrop agree exactly."""
    folder = tmp_path_factory.mktemp("photos")
    paths = sample_photos(folder)
    square = folder / "square.png"
    Image.open(paths[1]).convert("RGB").crop((200, 100, 456, 356)).save(square)
    return [*paths, square]


@pytest.fixture
def exported(reference_export):
    """conftest's one export (read-only): ReXNet_1_0 with the test-vector weights, ONNX."""
    return reference_export


def dygraph_probs(model, inputs: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return paddle.nn.functional.softmax(model(paddle.to_tensor(inputs)), -1).numpy()


def top5(probs) -> list[int]:
    return [int(i) for i in np.argsort(-probs, kind="stable")[:5]]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def partial_copy(src, dst, names):
    dst.mkdir()
    for name in names:
        shutil.copy(src / name, dst / name)
    return dst


# -- predictions equal our dygraph model's ------------------------------------------------

@pytest.mark.parametrize("runtime_name", ["paddle", "onnx"])
def test_top5_equals_our_dygraph_model_on_the_same_photos(exported, photos, runtime_name):
    model_dir, model = exported
    config = read_infer_config(model_dir)
    expected = dygraph_probs(model, np.stack([config.preprocess(p) for p in photos]))
    predictions = predict_mod.predict(model_dir, photos, runtime=runtime_name, batch_size=3)
    assert [p.image for p in predictions] == [str(p) for p in photos]
    assert len({p.class_id for p in predictions}) > 1  # the inputs matter
    for prediction, probs in zip(predictions, expected):
        assert [c for c, _ in prediction.topk] == top5(probs), prediction.image
        assert np.allclose([s for _, s in prediction.topk], probs[top5(probs)], atol=1e-4)


def test_where_the_transforms_agree_predict_equals_the_seed_eval_transform(exported, photos):
    """On a 256x256 image, inference.yml's preprocessing is the seed's eval transform
    exactly (elsewhere they differ by a pixel of crop, docs/deployment.md)."""
    model_dir, model = exported
    square = photos[-1]
    ours = read_infer_config(model_dir).preprocess(square)
    seed = seed_transform(square)
    assert float(np.abs(ours - seed).max()) <= 1e-5
    expected = dygraph_probs(model, seed[None])[0]
    prediction, = predict_mod.predict(model_dir, [square])
    assert [c for c, _ in prediction.topk] == top5(expected)
    assert prediction.score == pytest.approx(float(expected.max()), abs=1e-4)


def test_bf16_where_the_cpu_has_it(exported, photos):
    if not runtime.bf16_supported():
        pytest.skip("this CPU has no AVX512-BF16/AMX-BF16: bf16 is refused (tested below)")
    model_dir, model = exported
    config = read_infer_config(model_dir)
    expected = dygraph_probs(model, np.stack([config.preprocess(p) for p in photos]))
    predictions = predict_mod.predict(model_dir, photos, precision="bf16")
    # bfloat16 keeps 8 bits of mantissa: the best class of these random weights stays.
    assert [p.class_id for p in predictions] == [int(e.argmax()) for e in expected]


# -- the command: --json, text, inputs ---------------------------------------------------

def test_json_prints_exactly_the_documented_object_per_image(exported, photos, capsys):
    model_dir, _ = exported
    code, out, err = run_cli(capsys, model_dir, *photos, "--json", "--topk", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(photos)
    for line, photo in zip(lines, photos):
        record = json.loads(line)
        assert list(record) == JSON_KEYS
        assert record["image"] == str(photo)
        assert isinstance(record["class_id"], int) and isinstance(record["score"], float)
        assert len(record["topk"]) == 3
        assert all(isinstance(c, int) and isinstance(s, float) for c, s in record["topk"])
        assert record["topk"][0] == [record["class_id"], record["score"]]
        scores = [s for _, s in record["topk"]]
        assert scores == sorted(scores, reverse=True)
    assert "it/s" not in err and "img/s" not in err  # no progress bar: stderr is no terminal


def test_text_output_names_the_classes_of_the_label_list(exported, photos, capsys):
    model_dir, _ = exported
    names = read_infer_config(model_dir).label_list
    code, out, err = run_cli(capsys, model_dir, photos[0])
    assert code == 0, err
    prediction, = predict_mod.predict(model_dir, [photos[0]])
    assert out.startswith(f'{photos[0]}: {prediction.class_id} "{names[prediction.class_id]}" ')
    assert "top-5:" in out  # inference.yml's Topk.topk


def test_list_files_and_folders(exported, photos, tmp_path, capsys):
    """A list file's paths are relative to its folder; a folder is searched
    recursively, in sorted order, for image files only."""
    model_dir, _ = exported
    data = tmp_path / "data"
    (data / "a" / "b").mkdir(parents=True)
    copies = [data / "a" / "b" / "z.png", data / "a" / "y.jpg", data / "x.png"]
    for source, target in zip(photos, copies):
        Image.open(source).convert("RGB").save(target)
    (data / "notes.md").write_text("not an image")
    (data / "list.txt").write_text("a/y.jpg 3\n\nx.png 1\n")
    code, out, err = run_cli(capsys, model_dir, data / "list.txt", "--json")
    assert code == 0, err
    assert [json.loads(line)["image"] for line in out.splitlines()] == \
        [str(data / "a" / "y.jpg"), str(data / "x.png")]
    records = [json.loads(line) for line in out.splitlines()]
    correct = sum(r["class_id"] == label for r, label in zip(records, (3, 1)))
    assert f"top-1: {50 * correct:.2f}% ({correct}/2 labelled images" in err  # stderr: --json
    assert [i.label for i in collect_images([data / "list.txt"])] == [3, 1]
    code, out, err = run_cli(capsys, model_dir, data, "--json")
    assert code == 0, err
    images = [json.loads(line)["image"] for line in out.splitlines()]
    assert images == sorted(str(p) for p in copies)
    # Same image, same answer, whichever way it was given.
    by_image = {json.loads(line)["image"]: json.loads(line) for line in out.splitlines()}
    direct, = predict_mod.predict(model_dir, [copies[2]])
    # (a batch of 3 and a batch of 1 may round differently in the last float bits)
    got, want = by_image[str(copies[2])]["topk"], direct.as_json()["topk"]
    assert [c for c, _ in got] == [c for c, _ in want]
    assert np.allclose([p for _, p in got], [p for _, p in want], rtol=0, atol=1e-6)


def test_progress_bar_on_a_terminal_for_long_runs_only(exported, photos, monkeypatch):
    model_dir, _ = exported
    model = predict_mod.load_model(model_dir)
    items = collect_images(photos)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for count, shown in ((len(items), True), (len(items) + 1, False)):
        monkeypatch.setattr(predict_mod, "PROGRESS_MIN_IMAGES", count)
        monkeypatch.setattr(sys, "stderr", Terminal())
        list(predict_mod.predict_items(model, items, batch_size=2))
        assert (f"0/{len(items)} [" in sys.stderr.getvalue()) == shown


def test_logits_models_give_probabilities(tmp_path):
    """A model exported with --logits (infer_add_softmax: false): scores are softmax."""
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM,
                       softmax=False)
    logits = np.array([[2.0, 1.0, -1.0]], dtype=np.float32)
    loaded = predict_mod.LoadedModel(tmp_path, "onnx", "fp32", read_infer_config(tmp_path), None)
    expected = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(loaded.scores(logits), expected)
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM, softmax=True)
    loaded.config = read_infer_config(tmp_path)
    assert np.array_equal(loaded.scores(logits), logits)  # already probabilities: as PaddleClas


# -- the runtime each folder gets ---------------------------------------------------------

def test_runtime_follows_the_folder(exported, tmp_path):
    model_dir, _ = exported
    # The fastest measured (docs/speed.md): ONNX Runtime for fp32; bf16 in OpenVINO if installed.
    assert predict_mod.load_model(model_dir).runtime == "onnx"
    if runtime.bf16_supported():
        expected = "openvino" if runtime.openvino_available() else "paddle"
        assert predict_mod.load_model(model_dir, precision="bf16").runtime == expected
    assert predict_mod.load_model(model_dir, runtime="onnx").runtime == "onnx"
    # An int8 folder of rexnet-plugin quantize: inference.onnx + inference.yml + quantization.json
    # (here with the fp32 ONNX file: only the selection is tested).
    int8 = partial_copy(model_dir, tmp_path / "int8", [ONNX_FILENAME, INFER_CONFIG_FILENAME])
    (int8 / QUANTIZATION_FILENAME).write_text("{}")
    loaded = predict_mod.load_model(int8)
    assert (loaded.runtime, loaded.precision) == ("onnx", "int8")
    with pytest.raises(predict_mod.ModelFolderError, match="int8 model"):
        predict_mod.load_model(int8, precision="bf16")
    with pytest.raises(predict_mod.ModelFolderError, match="--runtime paddle"):
        predict_mod.load_model(int8, runtime="paddle")


# -- errors: each names the path and the fix, exit code 2 ---------------------------------

@pytest.fixture
def bad_inputs(exported, tmp_path):
    model_dir, _ = exported
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is text, not a JPEG")
    no_yml = partial_copy(model_dir, tmp_path / "no_yml", [MODEL_FILENAME, PARAMS_FILENAME])
    no_onnx = partial_copy(model_dir, tmp_path / "no_onnx",
                           [MODEL_FILENAME, PARAMS_FILENAME, INFER_CONFIG_FILENAME])
    not_model = tmp_path / "photos_only"
    not_model.mkdir()
    return model_dir, not_image, no_yml, no_onnx, not_model


@pytest.mark.parametrize("case", ["missing image", "not an image", "empty list",
                                  "list of missing files", "no inference.yml",
                                  "not a model", "old-IR model", "missing model folder",
                                  "no onnx",
                                  "bf16 on int8"])
def test_errors_name_the_path_and_the_fix(case, bad_inputs, photos, tmp_path, capsys):
    model_dir, not_image, no_yml, no_onnx, not_model = bad_inputs
    photo = photos[0]
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "missing.txt").write_text("nowhere/a.jpg 0\n")
    int8 = partial_copy(model_dir, tmp_path / "int8", [ONNX_FILENAME, INFER_CONFIG_FILENAME])
    (int8 / QUANTIZATION_FILENAME).write_text("{}")
    old_ir = tmp_path / "old_ir"
    old_ir.mkdir()
    (old_ir / LEGACY_MODEL_FILENAME).write_bytes(b"\0")
    argv, expected = {
        "missing image": ([model_dir, tmp_path / "nope.jpg"],
                          [f"image {tmp_path / 'nope.jpg'} not found", "check the path"]),
        "not an image": ([model_dir, photo, not_image],
                         [f"{not_image} is not an image", "convert it to PNG/JPEG"]),
        "empty list": ([model_dir, tmp_path / "empty.txt"],
                       [str(tmp_path / "empty.txt"), "lists no images"]),
        "list of missing files": ([model_dir, tmp_path / "missing.txt"],
                                  [str(tmp_path / "nowhere" / "a.jpg"),
                                   "relative to the list's folder"]),
        "no inference.yml": ([no_yml, photo],
                             [f"{no_yml} has no inference.yml", "rexnet-plugin export",
                              "Global.export_for_fd=True"]),
        "not a model": ([not_model, photo],
                        [f"{not_model} is not a model folder", "rexnet-plugin export"]),
        "old-IR model": ([old_ir, photo], [f"{old_ir} holds an old-IR model",
                                           "re-export it on Paddle 3"]),
        "missing model folder": ([tmp_path / "nowhere", photo],
                                 [f"{tmp_path / 'nowhere'} not found"]),
        "no onnx": ([no_onnx, photo, "--runtime", "onnx"],
                    [f"{no_onnx} has no inference.onnx", "--onnx", "--runtime paddle"]),
        "bf16 on int8": ([int8, photo, "--precision", "bf16"],
                         ["int8 model", "Drop --precision bf16"]),
    }[case]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("rexnet-plugin predict: error: ")
    for text in expected:
        assert text in err, err


def test_bf16_on_a_cpu_without_it_is_refused(exported, photos, capsys, monkeypatch):
    monkeypatch.setattr(runtime, "bf16_supported", lambda: False)
    code, out, err = run_cli(capsys, exported[0], photos[0], "--precision", "bf16")
    assert code == 2 and out == ""
    assert "AVX512-BF16" in err and "Use precision='fp32'" in err


@pytest.mark.parametrize("argv, message", [(["--topk", "0"], "--topk 0"),
                                           (["--batch-size", "0"], "--batch-size 0")])
def test_bad_numbers_are_refused(exported, photos, argv, message, capsys):
    code, _, err = run_cli(capsys, exported[0], photos[0], *argv)
    assert code == 2 and message in err


def test_a_bad_file_among_many_is_reported_before_any_output(exported, photos, tmp_path,
                                                             capsys):
    bad = tmp_path / "z_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photos[0], folder / "a.jpg")
    shutil.move(bad, folder / bad.name)
    code, out, err = run_cli(capsys, exported[0], folder)
    assert code == 2 and out == "" and str(folder / bad.name) in err


def test_image_inputs_raise_one_error_type(tmp_path):
    with pytest.raises(ImageInputError, match="holds no images"):
        collect_images([tmp_path])
    (tmp_path / "list.txt").write_text("a.jpg cat\n")
    with pytest.raises(ImageInputError, match="line 1"):
        collect_images([tmp_path / "list.txt"])


# -- a PaddleClas export ------------------------------------------------------------------

def test_a_paddleclas_export_model_folder(exported, photos, tmp_path):
    """tools/export_model.py -o Global.export_for_fd=True on a shipped config: predict
    runs the folder with its inference.yml, and agrees with our export."""
    root = paddleclas_root()
    model_dir, _ = exported
    out = tmp_path / "ppcls_export"
    cmd = [sys.executable, "tools/export_model.py", "-c", str(CONFIG_DIR / "ReXNet_1_0.yaml"),
           "-o", "Global.device=cpu", "-o", "Global.export_for_fd=True",
           "-o", f"Global.pretrained_model={model_dir.parent / 'weights'}",
           "-o", f"Global.save_inference_dir={out}"]
    result = subprocess.run(cmd, cwd=root, env=subprocess_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / INFER_CONFIG_FILENAME).is_file()
    theirs = predict_mod.predict(out, photos)
    ours = predict_mod.predict(model_dir, photos)
    assert [p.topk[0][0] for p in theirs] == [p.topk[0][0] for p in ours]
    assert [[c for c, _ in p.topk] for p in theirs] == [[c for c, _ in p.topk] for p in ours]


# -- PaddleClas's predict_cls.py with the same inference.yml -------------------------------

PPCLS_LINE = re.compile(r"^(?P<name>\S+):\s+class id\(s\): \[(?P<ids>[\d, ]+)\], score\(s\): "
                        r"\[(?P<scores>[\d., ]+)\]", re.M)


def test_predict_cls_with_the_same_inference_yml_gives_the_same_top5(exported, photos,
                                                                     tmp_path):
    """PaddleClas's unmodified deploy/python/predict_cls.py, -c the export's
    inference.yml (docs/deployment.md): the same five classes, the same scores to the
    two decimals it prints."""
    root = paddleclas_root()
    model_dir, _ = exported
    images = tmp_path / "images"
    images.mkdir()
    for photo in photos:  # JPEGs stay JPEGs: cv2 and PIL decode these identically
        shutil.copy(photo, images / photo.name)
    cmd = [sys.executable, str(root / "deploy" / "python" / "predict_cls.py"),
           "-c", str(model_dir / INFER_CONFIG_FILENAME),
           "-o", f"Global.inference_model_dir={model_dir}", "-o", f"Global.infer_imgs={images}",
           "-o", "Global.batch_size=2", "-o", "Global.use_gpu=False",
           "-o", "Global.enable_mkldnn=True", "-o", "Global.cpu_num_threads=2",
           "-o", "Global.use_fp16=False", "-o", "Global.use_tensorrt=False",
           "-o", "Global.enable_profile=False", "-o", "Global.ir_optim=True",
           "-o", "PostProcess.main_indicator=Topk"]
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=subprocess_env())
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = {m["name"]: ([int(i) for i in m["ids"].split(",")],
                          [float(s) for s in m["scores"].split(",")])
              for m in PPCLS_LINE.finditer(run.stdout)}
    assert sorted(theirs) == sorted(p.name for p in photos)
    for prediction in predict_mod.predict(model_dir, sorted(images.iterdir())):
        ids, scores = theirs[Path(prediction.image).name]
        assert ids == [c for c, _ in prediction.topk], prediction.image
        assert np.allclose(scores, [s for _, s in prediction.topk], atol=0.005)  # it prints 0.12


# -- hostile inputs are clear errors, with bounded work -------------------------------

def _fails_clearly(capsys, *argv, match):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err, err
    assert re.search(match, err), err
    return err


def test_an_extreme_aspect_ratio_is_refused_naming_the_file_and_limit(exported, tmp_path,
                                                                      capsys):
    Image.new("RGB", (1000, 1)).save(tmp_path / "line.png")  # 1x10000 took 6.5 GB
    _fails_clearly(capsys, exported[0], tmp_path / "line.png", match=r"line\.png.*100 times")
    Image.new("RGB", (2000, 40)).save(tmp_path / "wide.png")  # resized: 12800x256
    _fails_clearly(capsys, exported[0], tmp_path / "wide.png", match=r"wide\.png.*8192")


def test_a_decompression_bomb_is_refused(exported, tmp_path, capsys):
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 Mpixels, a few kB
    _fails_clearly(capsys, exported[0], tmp_path / "bomb.png", match=r"bomb\.png")


def test_a_fifo_among_the_images_does_not_hang(exported, photos, tmp_path, capsys, alarm):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photos[0], folder / "a.jpg")
    os.mkfifo(folder / "b.jpg")
    alarm(60)
    code, out, err = run_cli(capsys, exported[0], folder, "--json")
    assert code == 0 and [json.loads(line)["image"] for line in out.splitlines()] == [
        str(folder / "a.jpg")]
    _fails_clearly(capsys, exported[0], folder / "b.jpg", match="b.jpg")


@pytest.mark.parametrize("damage", ["garbage onnx", "truncated onnx", "unknown op",
                                    "truncated pdiparams"])
def test_damaged_model_files_are_clear_errors(damage, exported, photos, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(exported[0], model)
    if damage == "garbage onnx":
        (model / ONNX_FILENAME).write_bytes(os.urandom(5000))
    elif damage == "truncated onnx":
        data = (model / ONNX_FILENAME).read_bytes()
        (model / ONNX_FILENAME).write_bytes(data[: len(data) // 2])
    elif damage == "unknown op":
        import onnx
        graph = onnx.load(str(model / ONNX_FILENAME))
        graph.graph.node[0].op_type = "NoSuchOp"
        onnx.save(graph, str(model / ONNX_FILENAME))
    else:
        (model / PARAMS_FILENAME).write_bytes((model / PARAMS_FILENAME).read_bytes()[:1000000])
    runtime_flag = "paddle" if "pdiparams" in damage else "onnx"
    _fails_clearly(capsys, model, photos[0], "--runtime", runtime_flag,
                   match="cannot be loaded.*export the model again")


def test_model_files_outside_the_folder_are_refused(exported, photos, tmp_path, capsys):
    """ONNX external data through a symlink (weights.bin -> any file),
    and a model file that is itself a link out of the folder."""
    import onnx
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(exported[0] / INFER_CONFIG_FILENAME, model)
    graph = onnx.load(str(exported[0] / ONNX_FILENAME))
    onnx.save_model(graph, str(model / ONNX_FILENAME), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", convert_attribute=True)
    outside = tmp_path / "secret.bin"
    (model / "weights.bin").rename(outside)
    (model / "weights.bin").symlink_to(outside)
    _fails_clearly(capsys, model, photos[0], match=str(model))
    (model / ONNX_FILENAME).rename(tmp_path / "elsewhere.onnx")
    (model / ONNX_FILENAME).symlink_to(tmp_path / "elsewhere.onnx")
    _fails_clearly(capsys, model, photos[0], match="outside")


def test_images_of_mixed_sizes_without_a_crop_are_a_clear_error(exported, photos, tmp_path,
                                                                capsys):
    model = tmp_path / "model"
    shutil.copytree(exported[0], model)
    write_infer_config(model, model_name="ReXNet_1_0", transform_ops=[
        {"ResizeImage": {"resize_short": 224}}, {"NormalizeImage": {"order": ""}},
        {"ToCHWImage": None}])
    # a landscape and a portrait photo: resize_short gives two sizes, no crop
    _fails_clearly(capsys, model, photos[0], photos[2], "--runtime", "onnx",
                   match="different sizes.*CropImage")


def test_terminal_escape_codes_in_labels_are_not_printed(exported, photos, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(exported[0], model)
    names = ["\x1b]0;pwned\x07\x1b[2J label"] * 1000
    write_infer_config(model, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM,
                       label_list=names)
    code, out, err = run_cli(capsys, model, photos[0])
    assert code == 0 and "label" in out and "\x1b" not in out and "\x07" not in out
