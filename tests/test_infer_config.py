"""inference.yml: PaddleClas's format exactly, read back with clear errors, and
preprocessing equal to PaddleClas's own deploy operators on real photos."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import BILLION_LAUGHS_YAML
from ppcls_support import CONFIG_DIR, sample_photos
from rexnet_plugin.deploy.artifacts import INFER_CONFIG_FILENAME
from rexnet_plugin.deploy.infer_config import (InferConfigError, eval_transform_ops,
                                               preprocess_ops, read_infer_config,
                                               read_label_list, write_infer_config)
from rexnet_plugin.zoo import EVAL_TRANSFORM, VARIANTS, EvalTransform

LABELS = ["cat", "dog", "fish"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return sample_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def ppcls_deploy_ops():
    """PaddleClas's deploy/python/preprocess.py create_operators (the pip wheel's)."""
    module = pytest.importorskip("paddleclas.deploy.python.preprocess")
    return module.create_operators


def run_ppcls(create_operators, ops_config, path) -> np.ndarray:
    """What predict_cls.py does to an RGB image (decoded by PIL here)."""
    x = np.asarray(Image.open(path).convert("RGB"))
    for op in create_operators(copy.deepcopy(ops_config)):
        x = op(x)
    return x


def write_yml(folder, data) -> None:
    (folder / INFER_CONFIG_FILENAME).write_text(yaml.safe_dump(data))


# -- writing: PaddleClas's format ------------------------------------------------------

def test_written_file_is_what_paddleclas_dump_infer_config_writes(tmp_path):
    """PaddleClas's own dump_infer_config (tools/export_model.py with
    Global.export_for_fd=True) on the shipped config, against ours."""
    config_module = pytest.importorskip("paddleclas.ppcls.utils.config")
    label_file = (__import__("importlib").util.find_spec("paddleclas").submodule_search_locations[0]
                  + "/ppcls/utils/imagenet1k_label_list.txt")
    config = config_module.get_config(str(CONFIG_DIR / "ReXNet_1_0.yaml"), show=False,
                                      overrides=[f"Infer.PostProcess.class_id_map_file={label_file}"])
    theirs_path = tmp_path / "theirs.yml"
    config_module.dump_infer_config(config, str(theirs_path))
    theirs = yaml.safe_load(theirs_path.read_text())

    path = write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM,
                              label_list=read_label_list(label_file), softmax=True)
    assert path == tmp_path / "inference.yml"
    ours = yaml.safe_load(path.read_text())
    assert ours["Global"].pop("infer_add_softmax") is True  # our one addition
    assert ours == theirs
    assert len(ours["PostProcess"]["Topk"]["label_list"]) == 1000


def test_layout_and_round_trip(tmp_path):
    t = EvalTransform(resize_short=320, crop_size=288, interpolation="bilinear")
    write_infer_config(tmp_path, model_name="ReXNetR_2_0", transform=t, topk=3,
                       label_list=LABELS)
    data = yaml.safe_load((tmp_path / "inference.yml").read_text())
    assert list(data) == ["Global", "PreProcess", "PostProcess"]
    assert data["Global"] == {"model_name": "ReXNetR_2_0"}  # softmax not given: not recorded
    assert data["PreProcess"]["transform_ops"] == [
        {"ResizeImage": {"resize_short": 320, "interpolation": "bilinear", "backend": "pil"}},
        {"CropImage": {"size": 288}},
        {"NormalizeImage": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                            "std": [0.229, 0.224, 0.225], "order": "", "channel_num": 3}},
        {"ToCHWImage": None}]
    assert data["PostProcess"] == {"Topk": {"topk": 3, "label_list": LABELS}}
    config = read_infer_config(tmp_path)
    assert (config.model_name, config.topk, config.label_list, config.softmax) == (
        "ReXNetR_2_0", 3, LABELS, None)
    assert config.transform_ops == data["PreProcess"]["transform_ops"]
    assert read_infer_config(tmp_path / "inference.yml") == config  # the file works too


def test_without_labels_and_with_a_non_square_crop(tmp_path):
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM,
                       softmax=False, crop=(192, 256))
    data = yaml.safe_load((tmp_path / "inference.yml").read_text())
    assert data["PostProcess"] == {"Topk": {"topk": 5}}
    assert data["PreProcess"]["transform_ops"][1] == {"CropImage": {"size": [192, 256]}}
    config = read_infer_config(tmp_path)
    assert config.label_list is None and config.softmax is False


def test_the_write_is_atomic(tmp_path, monkeypatch):
    (tmp_path / "inference.yml").write_text("old")
    real_write_text = Path.write_text

    def write_half_then_fail(self, text, *args, **kwargs):
        real_write_text(self, text[:100], *args, **kwargs)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Path, "write_text", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM)
    monkeypatch.undo()
    assert (tmp_path / "inference.yml").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["inference.yml"]  # no temp file left


@pytest.mark.parametrize("kwargs, message", [
    ({"model_name": ""}, "model_name"),
    ({"topk": 0}, "topk=0"),
    ({"topk": True}, "topk=True"),
    ({"label_list": [1, 2]}, "label_list"),
])
def test_write_refuses_bad_arguments(tmp_path, kwargs, message):
    arguments = {"model_name": "ReXNet_1_0", "transform": EVAL_TRANSFORM, **kwargs}
    with pytest.raises(ValueError, match=message):
        write_infer_config(tmp_path, **arguments)
    assert not list(tmp_path.iterdir())


# -- preprocessing: PaddleClas's deploy operators ------------------------------------------

@pytest.mark.parametrize("transform", sorted({v.eval_transform for v in VARIANTS.values()},
                                             key=lambda t: t.resize_short),
                         ids=lambda t: f"{t.resize_short}-{t.crop_size}-{t.interpolation}")
def test_preprocess_equals_paddleclas_deploy_operators(transform, tmp_path, photos,
                                                       ppcls_deploy_ops):
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=transform)
    config = read_infer_config(tmp_path)
    for path in photos:
        ours = config.preprocess(path)
        theirs = run_ppcls(ppcls_deploy_ops, config.transform_ops, path)
        assert ours.dtype == np.float32 and theirs.dtype == np.float32
        assert ours.shape == theirs.shape == (3, transform.crop_size, transform.crop_size)
        assert float(np.abs(ours - theirs).max()) <= 1e-5, path.name


@pytest.mark.parametrize("ops", [
    # PaddleClas's deploy/configs/inference_cls.yaml: cv2 backend, its default bilinear
    [{"ResizeImage": {"resize_short": 256}}, {"CropImage": {"size": 224}},
     {"NormalizeImage": {"scale": 0.00392157, "mean": [0.485, 0.456, 0.406],
                         "std": [0.229, 0.224, 0.225], "order": "", "channel_num": 3}},
     {"ToCHWImage": None}],
    # a fixed [w, h] resize, a [w, h] crop, "a/b" scale, cv2 area, HWC left as is by 'hwc'
    [{"ResizeImage": {"size": [240, 200], "interpolation": "area", "backend": "cv2"}},
     {"CropImage": {"size": [224, 160]}},
     {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                         "order": "hwc"}},
     {"ToCHWImage": None}],
    # PIL lanczos, and a 'chw' normalisation after the transpose
    [{"ResizeImage": {"resize_short": 230, "interpolation": "LANCZOS", "backend": "pil"}},
     {"CropImage": {"size": 200}}, {"ToCHWImage": None},
     {"NormalizeImage": {"scale": 0.00392156862745098, "order": "chw"}}],
], ids=["paddleclas-default-cv2", "fixed-size-area", "lanczos-chw"])
def test_other_paddleclas_pipelines_run_as_paddleclas_runs_them(ops, tmp_path, photos,
                                                                ppcls_deploy_ops):
    write_yml(tmp_path, {"PreProcess": {"transform_ops": ops}, "PostProcess": {"Topk": {"topk": 5}}})
    config = read_infer_config(tmp_path)
    assert config.model_name is None and config.label_list is None
    for path in photos:
        ours = config.preprocess(path)
        theirs = run_ppcls(ppcls_deploy_ops, ops, path)
        assert ours.shape == theirs.shape and ours.shape[0] == 3
        assert float(np.abs(ours - theirs).max()) <= 1e-5, path.name


def test_preprocess_takes_paths_and_pil_images_of_any_mode(tmp_path, photos):
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM)
    config = read_infer_config(tmp_path)
    expected = config.preprocess(photos[0])
    assert expected.flags["C_CONTIGUOUS"]
    assert np.array_equal(config.preprocess(str(photos[0])), expected)
    image = Image.open(photos[0])
    # preprocess_ops, the same operators without a file: RGB arrays too
    ops = preprocess_ops(eval_transform_ops(EVAL_TRANSFORM))
    assert np.array_equal(ops(np.asarray(image.convert("RGB"))), expected)
    assert np.array_equal(config.preprocess(image), expected)
    assert np.array_equal(config.preprocess(image.convert("RGBA")), expected)
    gray = config.preprocess(image.convert("L"))  # grey becomes three equal channels
    assert gray.shape == expected.shape
    assert np.allclose((gray[0] * 0.229 + 0.485), (gray[1] * 0.224 + 0.456), atol=1e-5)


def test_preprocess_errors_name_the_image(tmp_path):
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM)
    config = read_infer_config(tmp_path)
    with pytest.raises(ValueError, match="missing.jpg"):  # ImageInputError
        config.preprocess(tmp_path / "missing.jpg")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg is not an image"):
        config.preprocess(tmp_path / "notes.jpg")
    tiny = Image.new("RGB", (30, 20))
    write_yml(tmp_path, {"PreProcess": {"transform_ops": [
        {"ResizeImage": {"size": 100}}, {"CropImage": {"size": 200}}]},
        "PostProcess": {"Topk": {"topk": 1}}})
    with pytest.raises(InferConfigError, match=r"CropImage size 200x200 is larger than the "
                                               r"resized image \(100x100\)"):
        read_infer_config(tmp_path).preprocess(tiny)


def test_ops_that_do_not_end_in_chw_float32_are_refused(tmp_path, photos):
    write_yml(tmp_path, {"PreProcess": {"transform_ops": [{"ResizeImage": {"size": 64}}]},
                         "PostProcess": {"Topk": {"topk": 1}}})
    with pytest.raises(InferConfigError, match="end them with NormalizeImage and ToCHWImage"):
        read_infer_config(tmp_path).preprocess(photos[0])


# -- reading: clear errors ---------------------------------------------------------------

def test_a_folder_without_the_file_says_how_to_make_one(tmp_path):
    with pytest.raises(InferConfigError) as err:
        read_infer_config(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "inference.yml" in message
    assert "rexnet-plugin export" in message and "Global.export_for_fd=True" in message
    with pytest.raises(InferConfigError, match="is not a folder"):
        read_infer_config(tmp_path / "nowhere")


GOOD_OPS = eval_transform_ops(EVAL_TRANSFORM)


@pytest.mark.parametrize("data, message", [
    ("Global: [unclosed", "is not valid YAML"),
    ("- a list", "expected a mapping with PreProcess"),
    ({"PostProcess": {"Topk": {"topk": 5}}}, "no PreProcess.transform_ops"),
    ({"PreProcess": {"transform_ops": []}, "PostProcess": {"Topk": {}}}, "expected a list of operators"),
    ({"PreProcess": {"transform_ops": [{"DecodeImage": {"to_rgb": True}}, *GOOD_OPS]},
      "PostProcess": {"Topk": {}}},
     r"transform_ops\[0\] is 'DecodeImage'.*ResizeImage, CropImage, NormalizeImage, ToCHWImage"),
    ({"PreProcess": {"transform_ops": [{"ResizeImage": {"resize_short": 256, "interpolation": "random"}}]},
      "PostProcess": {"Topk": {}}}, r"interpolation is 'random'; expected with backend cv2: nearest"),
    ({"PreProcess": {"transform_ops": [{"ResizeImage": {"resize_short": 256, "backend": "skimage"}}]},
      "PostProcess": {"Topk": {}}}, "backend is 'skimage'; expected pil or cv2"),
    ({"PreProcess": {"transform_ops": [{"ResizeImage": {"resize_short": 256, "antialias": True}}]},
      "PostProcess": {"Topk": {}}}, r"ResizeImage has unknown parameter\(s\) antialias"),
    ({"PreProcess": {"transform_ops": [{"ResizeImage": None}]}, "PostProcess": {"Topk": {}}},
     "ResizeImage needs resize_short or size"),
    ({"PreProcess": {"transform_ops": [{"CropImage": {"size": -3}}]}, "PostProcess": {"Topk": {}}},
     r"CropImage.size is -3; expected a positive integer or \[width, height\]"),
    ({"PreProcess": {"transform_ops": [{"NormalizeImage": {"scale": "x/255"}}]},
      "PostProcess": {"Topk": {}}}, "NormalizeImage.scale is 'x/255'"),
    ({"PreProcess": {"transform_ops": [{"NormalizeImage": {"channel_num": 4}}]},
      "PostProcess": {"Topk": {}}}, "the model takes 3 channels"),
    ({"PreProcess": {"transform_ops": [{"NormalizeImage": {"mean": [0.5, 0.5]}}]},
      "PostProcess": {"Topk": {}}}, "NormalizeImage.mean is"),
    ({"PreProcess": {"transform_ops": GOOD_OPS}, "PostProcess": {"NormalizeFeatures": None}},
     "PostProcess is NormalizeFeatures, not Topk: this is not a classifier"),
    ({"PreProcess": {"transform_ops": GOOD_OPS}, "PostProcess": {"Topk": {"topk": "five"}}},
     "PostProcess.Topk.topk is 'five'"),
    ({"PreProcess": {"transform_ops": GOOD_OPS}, "PostProcess": {"Topk": {"label_list": "a b"}}},
     "label_list is not a list"),
    ({"Global": {"model_name": 3}, "PreProcess": {"transform_ops": GOOD_OPS},
      "PostProcess": {"Topk": {}}}, "Global.model_name is 3"),
    ({"Global": {"infer_add_softmax": "yes"}, "PreProcess": {"transform_ops": GOOD_OPS},
      "PostProcess": {"Topk": {}}}, "Global.infer_add_softmax is 'yes'"),
])
def test_bad_files_get_errors_naming_the_file_and_key(tmp_path, data, message):
    path = tmp_path / "inference.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    with pytest.raises(InferConfigError, match=message) as err:
        read_infer_config(tmp_path)
    assert str(path) in str(err.value)


# -- label lists ---------------------------------------------------------------------

def test_label_lists_in_both_formats(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("1 dog\n0 cat, tabby\n\n2 fish\n")
    assert read_label_list(ids) == ["cat, tabby", "dog", "fish"]
    names = tmp_path / "names.txt"
    names.write_text("cat\n7 up\ndog\n")  # not every line has an id: one name per line
    assert read_label_list(names) == ["cat", "7 up", "dog"]
    gaps = tmp_path / "gaps.txt"
    gaps.write_text("0 cat\n2 dog\n")
    with pytest.raises(ValueError, match="ids are not 0..1"):
        read_label_list(gaps)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_label_list(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="nope.txt"):
        read_label_list(tmp_path / "nope.txt")


def test_reading_and_preprocessing_import_no_paddle(tmp_path, photos):
    """PaddleX's start-up refuses a loaded paddle; preprocessing needs none."""
    import subprocess
    import sys
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM)
    code = ("import sys; from rexnet_plugin.deploy.infer_config import read_infer_config; "
            f"x = read_infer_config({str(tmp_path)!r}).preprocess({str(photos[0])!r}); "
            "print(x.shape, 'paddle' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "REXNET_PLUGIN_AUTOLOAD": "0"})
    assert run.stdout.strip() == "(3, 224, 224) False", run.stderr[-2000:]


# -- bounded work for any file and any image ---------------------------------

def _topk():
    return {"Topk": {"topk": 1}}


@pytest.mark.parametrize("op", [
    {"ResizeImage": {"size": [60000, 60000]}}, {"ResizeImage": {"resize_short": 100000}},
    {"CropImage": {"size": 100000}}])
def test_absurd_sizes_are_refused_when_read(op, tmp_path):
    write_yml(tmp_path, {"PreProcess": {"transform_ops": [op]}, "PostProcess": _topk()})
    with pytest.raises(InferConfigError, match="at most 8192"):
        read_infer_config(tmp_path)


def test_an_extreme_aspect_ratio_is_refused_before_resizing(tmp_path):
    """A 1x1000 PNG is refused from its header (images.check_image_size); a 2000x40 one
    by ResizeImage: resize_short 256 would make it 12800x256, over MAX_SIDE."""
    write_infer_config(tmp_path, model_name="ReXNet_1_0", transform=EVAL_TRANSFORM)
    Image.new("RGB", (1000, 1)).save(tmp_path / "line.png")
    with pytest.raises(ValueError, match=r"line\.png is 1000x1 pixels.*100 times"):
        read_infer_config(tmp_path).preprocess(tmp_path / "line.png")
    Image.new("RGB", (2000, 40)).save(tmp_path / "wide.png")
    with pytest.raises(InferConfigError, match=r"wide\.png.*12800x256.*8192"):
        read_infer_config(tmp_path).preprocess(tmp_path / "wide.png")




@pytest.mark.parametrize("where", [
    "PreProcess: {transform_ops: *e}", "PreProcess: {transform_ops: [*e]}",
    "PreProcess: {transform_ops: [{ResizeImage: {size: *e}}]}",
    "PreProcess: {transform_ops: [{ResizeImage: {resize_short: 8, backend: *e}}]}",
    "PreProcess: {transform_ops: [{ResizeImage: {resize_short: 8, interpolation: *e}}]}",
    "Global: {model_name: *e}\nPreProcess: {transform_ops: [{ToCHWImage: null}]}"])
def test_nested_aliases_give_a_short_message(where, tmp_path):
    """A few hundred bytes of YAML that expand to 9**5 strings: the message must
    not format the expanded value (506 bytes once took 29 s and 4 GB)."""
    (tmp_path / INFER_CONFIG_FILENAME).write_text(BILLION_LAUGHS_YAML + where + "\n")
    with pytest.raises(InferConfigError) as err:
        read_infer_config(tmp_path)
    assert len(str(err.value)) < 1500


def test_deeply_nested_yaml_is_a_clear_error(tmp_path):
    (tmp_path / INFER_CONFIG_FILENAME).write_text("PreProcess: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(InferConfigError, match="nests too deeply"):
        read_infer_config(tmp_path)
