"""ReXNet in PaddleX 3: the extra's environment (one cv2), automatic
registration (and its guard), create_model / create_pipeline / the paddlex
CLI on real photos against our own Paddle Inference predictor, PaddleClas's
export_for_fd export, and the bad-input errors."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, load_reference_npz
from ppcls_support import (NUM_CLASSES, make_dataset, paddleclas_root, run_tool,
                           sample_photos, subprocess_env)
from rexnet_plugin.integrations import paddlex as pdx
from rexnet_plugin.zoo import VARIANTS

HAS_PADDLEX = importlib.util.find_spec("paddlex") is not None
needs_paddlex = pytest.mark.skipif(
    not HAS_PADDLEX, reason="PaddleX is not installed: pip install \"rexnet-plugin[paddlex]\" "
                            "(.ci/run installs it)")
VARIANT = "ReXNet_1_0"  # the variant with real (reference-vector) weights offline
TOPK = 5


def run_python(code: str, env: dict | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env or subprocess_env())


# -- fixtures: one export, the photos, our reference predictions -------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return sample_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def export_dir(reference_export):
    """ReXNet_1_0 with the official test-vector weights: `rexnet-plugin export --onnx`."""
    return reference_export[0]


def our_top5(model_dir: Path, photos, engine: str = "paddle_static"):
    """Top-5 (ids, probabilities) per photo from this package's own runtime:
    inference.yml's preprocessing, then Paddle Inference (or ONNX Runtime)."""
    from rexnet_plugin.deploy.infer_config import read_infer_config
    from rexnet_plugin.deploy import runtime
    config = read_infer_config(model_dir)
    x = np.stack([config.preprocess(p) for p in photos])
    if engine == "onnxruntime":
        probs = runtime.run_onnx(runtime.create_onnx_session(model_dir / "inference.onnx"), x)
    else:
        probs = runtime.run_predictor(runtime.create_predictor(model_dir), x)
    ids = np.argsort(-probs, axis=1)[:, :TOPK]
    return [(list(map(int, i)), p[i]) for i, p in zip(ids, probs)]


@pytest.fixture(scope="module")
def expected(export_dir, photos):
    top = our_top5(export_dir, photos)
    # Real weights on real photos: distinct scores, and the photo matters.
    assert all(len(set(np.round(p, 6))) == TOPK for _, p in top)
    assert len({tuple(ids) for ids, _ in top}) == len(photos)
    return top


@pytest.fixture(scope="module")
def paddlex_module():
    if not HAS_PADDLEX:
        pytest.skip("PaddleX is not installed: pip install \"rexnet-plugin[paddlex]\"")
    import paddlex
    return paddlex


def assert_same_top5(results, expected, label: str):
    assert len(results) == len(expected)
    for (ids, scores), (want_ids, want_scores) in zip(results, expected):
        assert list(map(int, ids)) == want_ids, label
        # PaddleX rounds scores to 5 decimals.
        np.testing.assert_allclose(np.asarray(scores, dtype=np.float64), want_scores,
                                   rtol=0, atol=1e-5, err_msg=label)


def paddlex_top5(results):
    out = []
    for r in results:
        out.append((np.asarray(r["class_ids"]).ravel(), np.asarray(r["scores"]).ravel()))
    return out


# -- the extra and its environment ---------------------------------------------------

def test_extra_pins_the_tested_paddlex_and_one_opencv_release():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = extras["optional-dependencies"]["paddlex"]
    assert f"paddlex=={pdx.TESTED_PADDLEX}" in extra
    pins = {r.split("==")[0]: r.split("==")[1] for r in extra if r.startswith("opencv")}
    assert set(pins) == {"opencv-python", "opencv-contrib-python"}
    assert len(set(pins.values())) == 1  # both owners of cv2 at the same release
    group = extras["entry-points"]["paddlex.plugins"]
    assert group == {"rexnet": "rexnet_plugin.integrations.paddlex:register"}


@needs_paddlex
def test_extra_has_paddlexs_serving_packages_with_its_pins():
    """Every package of PaddleX's own `serving` extra, same pins, but for its
    opencv-contrib-python 4.10 (the extra pins one cv2 release instead)."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    from packaging.requirements import Requirement
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ours = {Requirement(r).name: str(Requirement(r).specifier)
            for r in extra["optional-dependencies"]["paddlex"]}
    serving = [Requirement(r) for r in importlib.metadata.requires("paddlex")
               if 'extra == "serving"' in r]
    assert len(serving) > 5
    for req in serving:
        if req.name != "opencv-contrib-python":
            assert ours.get(req.name) == str(req.specifier), req


@needs_paddlex
def test_one_working_cv2_for_paddleclas_and_paddlex(tmp_path, photos):
    """Both distributions that own cv2 are installed at one release, every file
    they list exists, pip check is clean, and both toolkits' cv2 code runs."""
    versions = {d: importlib.metadata.version(d) for d in ("opencv-python",
                                                           "opencv-contrib-python")}
    assert len(set(versions.values())) == 1, versions
    for dist in versions:
        files = [f for f in importlib.metadata.files(dist) if f.parts[0] == "cv2"]
        missing = [str(f) for f in files if not Path(f.locate()).exists()]
        assert not missing, f"{dist}: {missing[:5]}"
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    import cv2
    import paddlex  # noqa: F401
    from paddleclas.deploy.python.preprocess import create_operators
    from paddlex.inference.models.common.vision.processors import ResizeByShort
    from paddlex.utils.deps import is_extra_available
    img = cv2.imread(str(photos[0]))[:, :, ::-1]
    for op in create_operators([{"ResizeImage": {"resize_short": 256}},
                                {"CropImage": {"size": 224}}]):
        img = op(img)
    small = ResizeByShort(target_short_edge=64)([img])[0]
    assert versions["opencv-python"].startswith(cv2.__version__)
    assert (img.shape, small.shape, is_extra_available("cv")) == ((224, 224, 3), (64, 64, 3),
                                                                   True)


# -- registration --------------------------------------------------------------------

@pytest.mark.slow  # a fresh interpreter importing PaddleX
@needs_paddlex
def test_import_paddlex_binds_every_variant_without_importing_paddle():
    result = run_python("""
        import sys
        import paddlex
        from paddlex.inference.models import bindings
        print('paddle' in sys.modules)
        from rexnet_plugin.zoo import VARIANTS
        print(sorted({bindings.try_get_supported_engines(n) for n in VARIANTS}))
        print(bindings.try_get_supported_engines('ResNet50'))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    paddle_loaded, engines, builtin = result.stdout.splitlines()[-3:]
    assert paddle_loaded == "False"  # paddlex asserts its import loads no paddle
    assert engines == str([pdx.ENGINES])
    assert "paddle_static" in builtin  # PaddleX's own models are untouched
    assert "rexnet" not in result.stderr.lower()


def fake_paddlex(monkeypatch, bindings=None, classifier=True, version="9.9.9"):
    """A stand-in paddlex.inference.models package under fake names."""
    root = types.ModuleType("fakepdx")
    root.__version__ = version
    models = types.ModuleType("fakepdx.inference.models")
    monkeypatch.setitem(sys.modules, "paddlex", root)
    for name, module in (("fakepdx", root), ("fakepdx.inference.models", models)):
        monkeypatch.setitem(sys.modules, name, module)
    if bindings is not None:
        bindings.create_binding_registration = (
            lambda names, runner_builder=None: types.SimpleNamespace(
                model_names=tuple(names), runner_builder=runner_builder))
        monkeypatch.setitem(sys.modules, "fakepdx.inference.models.bindings", bindings)
    if classifier:
        clas = types.ModuleType("fakepdx.inference.models.image_classification")
        clas.ClasRunnerPredictor = type("ClasRunnerPredictor", (), {})
        monkeypatch.setitem(sys.modules, clas.__name__, clas)
    monkeypatch.setattr(pdx, "_warned", set())
    return models


def test_guard_missing_bindings_api_warns_once(monkeypatch, caplog):
    models = fake_paddlex(monkeypatch, bindings=None)
    with caplog.at_level(logging.WARNING, logger=pdx.__name__):
        assert pdx.register(models) == []
        assert pdx.register(models) == []  # a second trigger: no second warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "PaddleX 9.9.9" in warnings[0] and f"tested with PaddleX {pdx.TESTED_PADDLEX}" in warnings[0]
    assert "ModuleNotFoundError" in warnings[0] and "runs as usual" in warnings[0]


def test_guard_changed_bindings_api_never_raises(monkeypatch, caplog):
    bindings = types.ModuleType("fakepdx.inference.models.bindings")
    bindings.try_get_binding = lambda name, engine: None

    def changed(predictor_cls, bindings_map, extra_required_argument):
        raise AssertionError("not reached")
    bindings.register_predictor_binding_map = changed
    models = fake_paddlex(monkeypatch, bindings)
    with caplog.at_level(logging.WARNING, logger=pdx.__name__):
        assert pdx.register(models) == []
    (message,) = [r.getMessage() for r in caplog.records]
    assert "TypeError" in message and "PaddleX 9.9.9" in message


def test_registration_binds_every_variant_and_keeps_a_hosts_own(monkeypatch, caplog):
    table = {}
    bindings = types.ModuleType("fakepdx.inference.models.bindings")
    bindings.try_get_binding = lambda name, engine: table.get((name, engine))

    def register_map(predictor_cls, bindings_map):
        for engine, entries in bindings_map.items():
            for entry in entries:  # a name, or a registration with a runner builder
                for name in getattr(entry, "model_names", [entry]):
                    table[(name, engine)] = types.SimpleNamespace(predictor=predictor_cls)
    bindings.register_predictor_binding_map = register_map
    models = fake_paddlex(monkeypatch, bindings)
    hosts_own = object()
    table[("ReXNet_3_0", "onnxruntime")] = types.SimpleNamespace(predictor=hosts_own)
    with caplog.at_level(logging.WARNING, logger=pdx.__name__):
        assert pdx.register(models) == list(VARIANTS)
        assert pdx.register(models) == []  # idempotent
    assert {k for k in table} == {(n, e) for n in VARIANTS for e in pdx.ENGINES}
    assert table[("ReXNet_3_0", "onnxruntime")].predictor is hosts_own
    assert not caplog.records


@pytest.mark.slow  # a fresh interpreter importing PaddleX
@needs_paddlex
def test_changed_api_in_real_paddlex_warns_and_paddlex_runs(export_dir):
    """Real PaddleX whose bindings function is gone: one warning naming the
    version; PaddleX and the process carry on."""
    result = run_python(f"""
        import os
        import paddlex
        from paddlex.inference.models import bindings
        del bindings.register_predictor_binding_map
        os.environ['REXNET_PLUGIN_AUTOLOAD'] = '1'
        from rexnet_plugin.integrations import autoload
        autoload.install()  # runs the plugins of the already-imported trigger
        try:
            paddlex.create_model('{VARIANT}', model_dir=r'{export_dir}')
        except ValueError as err:
            print('paddlex says:', err)
        print('alive')
    """, env=subprocess_env(REXNET_PLUGIN_AUTOLOAD="0"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "alive"
    assert f"No engine bindings registered for model '{VARIANT}'" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "rexnet-plugin" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert f"PaddleX {pdx.TESTED_PADDLEX}" in warnings[0]
    assert "register_predictor_binding_map" in warnings[0]


# -- what works, on real photos ---------------------------------------------------------

@needs_paddlex
@pytest.mark.parametrize("engine", ["paddle_static", "onnxruntime"])
def test_create_model_matches_our_predictor(paddlex_module, export_dir, photos, expected,
                                            engine):
    model = paddlex_module.create_model(VARIANT, model_dir=str(export_dir), device="cpu",
                                        engine=engine)
    results = paddlex_top5(model.predict([str(p) for p in photos]))
    want = expected if engine == "paddle_static" else our_top5(export_dir, photos, engine)
    assert_same_top5(results, want, engine)


@pytest.mark.slow
@needs_paddlex
def test_pipeline_yaml_in_python_and_in_the_paddlex_cli(paddlex_module, export_dir, photos,
                                                        expected, tmp_path):
    yaml_path = pdx.write_pipeline_config(tmp_path / "pipeline.yaml", export_dir)
    pipeline = paddlex_module.create_pipeline(str(yaml_path), device="cpu")
    assert_same_top5(paddlex_top5(pipeline.predict([str(p) for p in photos])), expected,
                     "create_pipeline")

    # The unmodified paddlex command, in a fresh process.
    script = Path(sys.executable).with_name("paddlex")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "paddlex"]
    out = tmp_path / "cli"
    # --save_path also draws the result image, with a font PaddleX downloads
    # unless given one (offline here): any TTF will do.
    import matplotlib
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    result = subprocess.run([*command, "--pipeline", str(yaml_path), "--input", str(photos[0]),
                             "--device", "cpu", "--save_path", str(out)],
                            capture_output=True, text=True, timeout=300,
                            env=subprocess_env(PADDLE_PDX_LOCAL_FONT_FILE_PATH=str(font)))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(next(out.glob("*.json")).read_text())
    assert_same_top5([(saved["class_ids"], saved["scores"])], expected[:1], "paddlex CLI")
    from rexnet_plugin.deploy.infer_config import read_infer_config
    names = read_infer_config(export_dir).label_list
    assert saved["label_names"] == [names[i] for i in expected[0][0]]


@needs_paddlex
def test_paddleclas_export_for_fd_runs_in_paddlex(paddlex_module, photos, tmp_path):
    """PaddleClas's own tools/export_model.py with Global.export_for_fd=True on
    the shipped config writes an inference.yml that PaddleX's classifier runs."""
    import paddle
    from rexnet_plugin.weights import to_canonical
    root = paddleclas_root()
    state, _ = load_reference_npz(VARIANT)
    paddle.save(to_canonical(state), str(tmp_path / "reference.pdparams"))
    out = tmp_path / "fd"
    run_tool(root, "export_model", ROOT / "ppcls_configs" / f"{VARIANT}.yaml", cwd=tmp_path,
             overrides=["Global.device=cpu", "Global.export_for_fd=True",
                        f"Global.pretrained_model={tmp_path / 'reference'}",
                        f"Global.save_inference_dir={out}",
                        "Infer.PostProcess.class_id_map_file="
                        f"{root / 'ppcls/utils/imagenet1k_label_list.txt'}"])
    assert pdx.folder_model_name(out) == VARIANT  # from the config's Global.pdx_model_name
    model = paddlex_module.create_model(VARIANT, model_dir=str(out), device="cpu")
    results = paddlex_top5(model.predict([str(p) for p in photos]))
    assert_same_top5(results, our_top5(out, photos), "export_for_fd")


@needs_paddlex
def test_training_through_paddlex_build_trainer(photos, tmp_path):
    """PaddleX's own trainer (its PaddleClas runner, PaddleClas's tools/train.py
    in PADDLE_PDX_PADDLECLAS_PATH) trains ReXNet one epoch and exports a folder
    PaddleX predicts with; without a PaddleClas tree the names stay unregistered."""
    import shutil
    root = paddleclas_root()
    data = make_dataset(tmp_path / "data")  # ImageNet layout -> PaddleX's ClsDataset names
    shutil.copy(data / "train_list.txt", data / "train.txt")
    shutil.copy(data / "val_list.txt", data / "val.txt")
    (data / "label.txt").write_text("".join(f"{i} class{i}\n" for i in range(NUM_CLASSES)))
    code = f"""
        import paddlex, yaml
        from paddlex.utils.config import AttrDict
        from paddlex.repo_apis.base.register import get_registered_model_info
        try:
            get_registered_model_info('{VARIANT}')
        except KeyError:
            print('not registered'); raise SystemExit
        base = paddlex.__path__[0] + '/configs/modules/image_classification/ResNet50.yaml'
        cfg = yaml.safe_load(open(base))
        cfg['Global'].update(model='{VARIANT}', mode='train', dataset_dir=r'{data}',
                             device='cpu', output=r'{tmp_path / "out"}')
        cfg['Train'].update(num_classes={NUM_CLASSES}, epochs_iters=1, batch_size=8,
                            pretrain_weight_path='', warmup_steps=0, learning_rate=0.01)
        to_attr = lambda d: AttrDict({{k: to_attr(v) if isinstance(v, dict) else v
                                       for k, v in d.items()}})
        paddlex.build_trainer(to_attr(cfg)).train()
        model = paddlex.create_model('{VARIANT}', device='cpu',
                                     model_dir=r'{tmp_path / "out/best_model/inference"}')
        print('predicted', next(model.predict(r'{photos[0]}'))['label_names'])
    """
    without = run_python(code)
    assert without.returncode == 0, without.stderr[-3000:]
    assert without.stdout.splitlines()[-1] == "not registered"
    result = run_python(code, env=subprocess_env(PADDLE_PDX_PADDLECLAS_PATH=str(root)),
                        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch 1/1" in result.stdout + result.stderr
    last = result.stdout.splitlines()[-1]
    assert last.startswith("predicted [") and "class" in last
    assert pdx.folder_model_name(tmp_path / "out/best_model/inference") == VARIANT


# -- bad input ---------------------------------------------------------------------

@needs_paddlex
def test_export_without_inference_yml(paddlex_module, export_dir, tmp_path):
    folder = tmp_path / "no_yml"
    folder.mkdir()
    for name in ("inference.json", "inference.pdiparams"):
        (folder / name).write_bytes((export_dir / name).read_bytes())
    with pytest.raises(pdx.MissingInferConfigError) as err:
        paddlex_module.create_model(VARIANT, model_dir=str(folder), device="cpu")
    message = str(err.value)
    assert str(folder) in message and "inference.yml" in message
    assert "rexnet-plugin export" in message and "Global.export_for_fd=True" in message
    assert isinstance(err.value, FileNotFoundError)  # what PaddleX itself raised


@needs_paddlex
def test_model_name_that_does_not_match_the_folder(paddlex_module, export_dir):
    with pytest.raises(pdx.ModelDirError) as err:
        paddlex_module.create_model("ReXNet_1_5", model_dir=str(export_dir), device="cpu")
    message = str(err.value)
    assert "'ReXNet_1_5' does not match Global.model_name 'ReXNet_1_0'" in message
    assert str(export_dir / "inference.yml") in message
    assert "model_name='ReXNet_1_0'" in message  # the fix


def test_folder_without_model_name(tmp_path):
    (tmp_path / "inference.yml").write_text("PreProcess: {transform_ops: []}\n")
    with pytest.raises(pdx.ModelDirError, match="no Global.model_name.*pdx_model_name=ReXNet_1_5"):
        pdx.check_model_dir(tmp_path, "ReXNet_1_5")


def test_other_models_keep_paddlexs_own_checks(tmp_path):
    (tmp_path / "inference.yml").write_text("Global: {model_name: ResNet50}\n")
    assert pdx.check_model_dir(tmp_path, "PP-LCNet_x1_0", only_rexnet=True) == "PP-LCNet_x1_0"
    assert pdx.check_model_dir(tmp_path / "absent", "ResNet50", only_rexnet=True) == "ResNet50"


def test_pipeline_command_without_paddlex(tmp_path):
    """PaddleX hidden from the interpreter: exit 2, the install command, nothing written."""
    from rexnet_plugin.deploy.infer_config import write_infer_config
    from rexnet_plugin.zoo import EVAL_TRANSFORM
    write_infer_config(tmp_path, model_name=VARIANT, transform=EVAL_TRANSFORM)
    hide = tmp_path / "hide"
    (hide / "paddlex").mkdir(parents=True)
    (hide / "paddlex" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'paddlex'\")\n")
    result = subprocess.run([sys.executable, "-m", "rexnet_plugin.cli", "paddlex-pipeline",
                             str(tmp_path), "-o", str(tmp_path / "p.yaml")],
                            capture_output=True, text=True, timeout=300,
                            env=subprocess_env(PYTHONPATH=str(hide)))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "PaddleX is not installed" in result.stderr
    from rexnet_plugin.extras import install_command
    assert install_command("paddlex") in result.stderr  # from where this package came from
    assert not (tmp_path / "p.yaml").exists()


@needs_paddlex
def test_pipeline_command_writes_a_yaml_paddlex_reads(paddlex_module, export_dir, tmp_path,
                                                      capsys):
    from rexnet_plugin.cli import main
    assert main(["paddlex-pipeline", str(export_dir), "-o", str(tmp_path / "p.yaml"),
                 "--topk", "3"]) == 0
    import yaml
    config = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert config["pipeline_name"] == "image_classification"
    assert config["SubModules"]["ImageClassification"] == {
        "module_name": "image_classification", "model_name": VARIANT,
        "model_dir": str(export_dir.resolve()), "batch_size": 1, "topk": 3}
    assert config["Serving"] == {"visualize": False}  # paddlex --serve offline: no font
    assert "engines: paddle_static, onnxruntime, hpi" in capsys.readouterr().out
    assert main(["paddlex-pipeline", str(export_dir), "--model-name", "ReXNet_2_0",
                 "-o", str(tmp_path / "q.yaml")]) == 2
    assert "does not match Global.model_name" in capsys.readouterr().err
    assert not (tmp_path / "q.yaml").exists()
