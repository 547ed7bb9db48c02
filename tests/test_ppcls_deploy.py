"""PaddleClas's own deploy tooling, unmodified, on our exports (Paddle 3.x).

PaddleClas's predictor calls enable_memory_optim(), which Paddle 3.x cannot
run on PIR models (inference.json); rexnet_plugin.integrations.paddleclas_deploy
switches it off for them. Tested on fake configs, on the paddleclas wheel's
Predictor with and without the fix, and with deploy/python/predict_cls.py of a
PaddleClas checkout (PADDLECLAS_ROOT), whose top-1 must equal our dygraph model's.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import types

import numpy as np
import paddle
import pytest
from PIL import Image

from ppcls_support import needs_paddleclas_wheel, paddleclas_root, sample_photos, subprocess_env
from rexnet_plugin.deploy.infer_config import read_infer_config
from rexnet_plugin.integrations import paddleclas_deploy

MEMORY_OPTIM_ERROR = r"Not find predictor_id \d+ and pass_name memory_optimize_pass"
FIX_LOG = "rexnet-plugin: enable_memory_optim() turned off"


class FakeConfig:
    def __init__(self, prog_file):
        self._prog_file = prog_file
        self.memory_optim = True

    def prog_file(self):
        return self._prog_file

    def enable_memory_optim(self, on=True):
        self.memory_optim = on


def test_the_fix_switches_memory_optim_off_for_pir_programs_only(caplog):
    seen = []
    module = types.ModuleType("fakehost.deploy.utils.predictor")
    module.create_predictor = lambda config: seen.append(config.memory_optim) or "predictor"
    paddleclas_deploy.register(module)
    paddleclas_deploy.register(module)  # idempotent: wrapped once
    assert module.create_predictor.__wrapped__.__name__ == "<lambda>"
    with caplog.at_level("INFO", logger=paddleclas_deploy.__name__):
        assert module.create_predictor(FakeConfig("/m/inference.pdmodel")) == "predictor"
        assert module.create_predictor(FakeConfig("")) == "predictor"  # model_dir form
        assert not caplog.records
        assert module.create_predictor(FakeConfig("/m/inference.json")) == "predictor"
    assert seen == [True, True, False]
    assert "/m/inference.json" in caplog.records[0].getMessage()


@needs_paddleclas_wheel
def test_paddleclas_wheel_predictor_with_and_without_the_fix(reference_export, monkeypatch):
    from paddleclas.deploy.utils.config import AttrDict
    predictor_module = importlib.import_module("paddleclas.deploy.utils.predictor")
    paddleclas_deploy.register(predictor_module)  # the autoload did it, unless switched off
    args = AttrDict(use_fp16=False, use_tensorrt=False, use_gpu=False, enable_mkldnn=True,
                    cpu_num_threads=1, enable_profile=False, ir_optim=True, gpu_mem=8000,
                    inference_model_dir=str(reference_export[0]))
    predictor = predictor_module.Predictor(args).predictor
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(np.zeros((1, 3, 224, 224), "float32"))
    predictor.run()
    assert predictor.get_output_handle(predictor.get_output_names()[0]).shape() == [1, 1000]
    # Without the fix, PaddleClas's own failure, unchanged:
    monkeypatch.setattr(predictor_module, "create_predictor",
                        predictor_module.create_predictor.__wrapped__)
    with pytest.raises(ValueError, match=MEMORY_OPTIM_ERROR):
        predictor_module.Predictor(args)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The sample photos as PNG (cv2 and PIL decode them identically), and more
    crops of other shapes: five images."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, source in enumerate(sample_photos(folder)):
        image = Image.open(source).convert("RGB")
        paths.append(folder / f"{i}_{source.stem}.png")
        image.save(paths[-1])
        if i < 2:
            w, h = image.size
            paths.append(folder / f"{i}_{source.stem}_crop.png")
            image.crop((w // 4, h // 5, w // 4 + 300, h // 5 + 250)).save(paths[-1])
    (folder / "portrait.png").unlink()
    return sorted(paths)


# -- deploy/python/predict_cls.py of a PaddleClas checkout -----------------------------

LINE = re.compile(r"^(?P<name>\S+):\s+class id\(s\): \[(?P<ids>[\d, ]+)\], score\(s\): "
                  r"\[(?P<scores>[\d., ]+)\]", re.M)


def predict_cls(root, model_dir, images, tmp_path, *overrides):
    """python <checkout>/deploy/python/predict_cls.py with PaddleClas's stock
    deploy config, run outside the checkout (it is read-only)."""
    cmd = [sys.executable, str(root / "deploy" / "python" / "predict_cls.py"),
           "-c", str(root / "deploy" / "configs" / "inference_cls.yaml"),
           "-o", f"Global.inference_model_dir={model_dir}", "-o", f"Global.infer_imgs={images}",
           "-o", "Global.use_gpu=False", "-o", "Global.cpu_num_threads=2",
           "-o", "Global.enable_benchmark=False",
           "-o", f"PostProcess.Topk.class_id_map_file={root}/ppcls/utils/imagenet1k_label_list.txt",
           "-o", f"PostProcess.SavePreLabel.save_dir={tmp_path / 'pre_label'}"]
    for item in overrides:
        cmd += ["-o", item]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())


# What inference.yml says, as overrides of PaddleClas's stock deploy config
# (docs/deployment.md): bicubic on the PIL backend instead of cv2 bilinear.
AS_INFERENCE_YML = ["PreProcess.transform_ops.0.ResizeImage.interpolation=bicubic",
                    "PreProcess.transform_ops.0.ResizeImage.backend=pil"]


@pytest.fixture(scope="module")
def root():
    return paddleclas_root()


@pytest.fixture(scope="module")
def dygraph_top5(reference_export, photos):
    """Our dygraph model on the preprocessing of the export's inference.yml."""
    model_dir, model = reference_export
    infer = read_infer_config(model_dir)
    assert infer.transform_ops[0]["ResizeImage"] == {"resize_short": 256,
                                                     "interpolation": "bicubic", "backend": "pil"}
    x = np.stack([infer.preprocess(p) for p in photos])
    with paddle.no_grad():
        probs = paddle.nn.functional.softmax(model(paddle.to_tensor(x))).numpy()
    return {p.name: list(np.argsort(-row)[:5]) for p, row in zip(photos, probs)}


@pytest.mark.parametrize("runtime", ["mkldnn=True", "mkldnn=False", "onnx"])
def test_predict_cls_top1_equals_our_dygraph_model(root, reference_export, photos,
                                                   dygraph_top5, tmp_path, runtime):
    model_dir, _ = reference_export
    setting = (["Global.use_onnx=True"] if runtime == "onnx"
               else [f"Global.enable_mkldnn={runtime.split('=')[1]}"])
    run = predict_cls(root, model_dir, photos[0].parent, tmp_path, *AS_INFERENCE_YML, *setting)
    assert run.returncode == 0, run.stderr[-3000:]
    found = {m["name"]: [int(i) for i in m["ids"].split(",")] for m in LINE.finditer(run.stdout)}
    assert sorted(found) == sorted(p.name for p in photos)
    for name, top5 in found.items():
        assert top5[0] == dygraph_top5[name][0], (name, top5, dygraph_top5[name])
    if runtime != "onnx":  # PaddleClas's ONNX path never makes a Paddle predictor
        assert (run.stdout + run.stderr).count(FIX_LOG) == 1

