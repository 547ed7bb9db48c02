"""The shipped PaddleClas configs: one per variant, current, the official
recipe, the seed's eval transform, and ``rexnet-plugin configs``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from ppcls_support import (CONFIG_DIR, paddleclas_root, sample_photos, seed_transform,
                           subprocess_env)
from rexnet_plugin import cli
from rexnet_plugin.zoo import VARIANTS

sys.path.insert(0, str(ROOT / "scripts"))
from update_configs import expected_configs  # noqa: E402  (the development tool that stamps them)
from ppcls_support import needs_paddleclas_wheel

EXPECTED = {path.stem: text for path, text in expected_configs().items()}


def render(name: str) -> str:
    return EXPECTED[name]


def load(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())


def test_one_current_config_per_variant():
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(VARIANTS)
    stale = [n for n in VARIANTS if (CONFIG_DIR / f"{n}.yaml").read_text() != render(n)]
    assert not stale, f"run: python scripts/update_configs.py ({', '.join(stale)} out of date)"
    for name in VARIANTS:
        config = load(name)
        assert config["Arch"]["name"] == name
        t = VARIANTS[name].eval_transform
        ops = config["DataLoader"]["Eval"]["dataset"]["transform_ops"]
        sizes = [op[k] for op in ops for k in op if k in ("Resize", "CenterCrop")]
        assert [s["size"] for s in sizes] == [t.resize_short, t.crop_size]
        infer = {k: v for op in config["Infer"]["transforms"] for k, v in op.items()}
        assert infer["ResizeImage"] == {"resize_short": t.resize_short,
                                        "interpolation": t.interpolation, "backend": "pil"}
        assert infer["CropImage"] == {"size": t.crop_size}
        assert config["Global"]["pdx_model_name"] == name  # inference.yml's Global.model_name
        assert config["Global"]["image_shape"] == [3, t.crop_size, t.crop_size]  # export input


def test_rexnetr_weights_are_evaluated_as_timm_tests_them():
    """timm's test size and crop for its ReXNet-R weights; the seed's elsewhere."""
    timm_test = {n for n, v in VARIANTS.items() if v.kind == "r" and v.weights}
    assert timm_test == {"ReXNetR_2_0", "ReXNetR_3_0"}
    for name, v in VARIANTS.items():
        t = v.eval_transform
        expected = (288, 288, "bicubic") if name in timm_test else (256, 224, "bicubic")
        assert (t.resize_short, t.crop_size, t.interpolation) == expected, name


def test_configs_differ_only_in_the_marked_lines():
    template = (CONFIG_DIR / "ReXNet_1_0.yaml").read_text().splitlines()
    for name in VARIANTS:
        lines = (CONFIG_DIR / f"{name}.yaml").read_text().splitlines()
        assert len(lines) == len(template)
        differ = [b for a, b in zip(template[1:], lines[1:]) if a != b]
        assert all("# per variant:" in line for line in differ), differ


@needs_paddleclas_wheel
@pytest.mark.parametrize("name", list(VARIANTS))
def test_parsed_by_paddleclas_config_parser(name):
    get_config = importlib.import_module("paddleclas.ppcls.utils.config").get_config
    config = get_config(str(CONFIG_DIR / f"{name}.yaml"), overrides=["Global.epochs=2"], show=False)
    assert config.Arch.name == name and config.Global.epochs == 2
    assert set(config) >= {"Global", "Arch", "Loss", "Optimizer", "DataLoader", "Infer", "Metric"}


def test_train_section_is_the_official_recipe():
    """Values from the official README's command and timm's train.py defaults
    of June 2020, typed here independently of the template."""
    official_lr, official_batch, gpus = 0.5, 128 * 4, 4
    for name in VARIANTS:
        c = load(name)
        opt = c["Optimizer"]
        batch = c["DataLoader"]["Train"]["sampler"]["batch_size"]
        assert opt["name"] == "Momentum" and opt["momentum"] == 0.9 and opt["use_nesterov"] is True
        assert opt["lr"]["name"] == "Cosine" and c["Global"]["epochs"] == 400
        scale = batch * gpus / official_batch
        assert opt["lr"]["learning_rate"] == pytest.approx(official_lr * scale)
        assert opt["lr"]["warmup_epoch"] == 3
        assert opt["lr"]["warmup_start_lr"] == pytest.approx(1e-4 * scale)
        assert opt["lr"]["eta_min"] == pytest.approx(1e-5 * scale)
        assert opt["regularizer"] == {"name": "L2", "coeff": 1e-5}
        assert c["Loss"]["Train"][0]["CELoss"]["epsilon"] == 0.1
        assert c["Arch"]["dropout_ratio"] == 0.2
        ops = {next(iter(op)): op[next(iter(op))] for op in c["DataLoader"]["Train"]["dataset"]["transform_ops"]}
        assert ops["TimmAutoAugment"]["config_str"] == "rand-m9-mstd0.5"
        assert ops["RandomErasing"]["EPSILON"] == 0.2 and ops["RandomErasing"]["mode"] == "pixel"
        assert ops["RandCropImage"]["interpolation"] == "random"
        assert ops["RandFlipImage"]["flip_code"] == 1


# -- the eval transform, with PaddleClas's own operators ------------------------

@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    return sample_photos(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def ppcls():
    """The ``ppcls`` package of the checkout in PADDLECLAS_ROOT, imported here."""
    root = paddleclas_root()
    dont_write = sys.dont_write_bytecode
    sys.path.insert(0, str(root))
    sys.dont_write_bytecode = True  # never write into the checkout
    try:
        package = importlib.import_module("ppcls")
        for module in ("ppcls.data", "ppcls.optimizer", "ppcls.arch", "ppcls.utils.config"):
            importlib.import_module(module)
        importlib.import_module("ppcls.utils.logger").init_logger()  # as the Engine does
        return package
    finally:
        sys.path.remove(str(root))
        sys.dont_write_bytecode = dont_write


@pytest.fixture(scope="module")
def create_operators(ppcls):
    return ppcls.data.create_operators


def build_optimizer(ppcls, overrides=()):
    config = ppcls.utils.config.get_config(str(CONFIG_DIR / "ReXNet_1_0.yaml"),
                                           overrides=list(overrides), show=False)
    model = ppcls.arch.build_model(config)
    optimizers, _ = ppcls.optimizer.build_optimizer(config["Optimizer"], 400, 10, [model])
    return optimizers[0], model


def test_optimizer_in_paddleclas_is_the_recipes(ppcls):
    optimizer, _ = build_optimizer(ppcls)
    assert optimizer._use_nesterov is True
    assert optimizer._momentum == 0.9
    assert (optimizer._regularization_method, optimizer._regularization_coeff) == ("l2_decay", 1e-5)


def test_no_weight_decay_name_would_drop_all_weight_decay(ppcls):
    """Why the configs decay BN and biases too: PaddleClas's parameter groups
    lose their weight decay with Paddle 3.x. If this ever fails, the configs
    can exempt biases and BN as timm does."""
    optimizer, _ = build_optimizer(ppcls, ["Optimizer.no_weight_decay_name=bias",
                                           "Optimizer.one_dim_param_no_weight_decay=True"])
    assert [g["regularization_coeff"] for g in optimizer._param_groups] == [0.0, 0.0]


# Infer's ResizeImage/CropImage against the seed's transform: max |diff| per
# photo (normalised units), measured with scripts/infer_transform_deviation.py
# (docs/deployment.md). Pinned both ways: they must not grow, and if they
# shrink, the docs' figures are out of date.
INFER_DEVIATION = {
    (256, 224): {"china.jpg": 1.9082632, "flower.jpg": 1.9522221, "portrait.png": 2.2233891},
    (288, 288): {"china.jpg": 1.8997824, "flower.jpg": 1.8665985, "portrait.png": 0.0000007},
}


def run_ops(create_operators, op_config, path) -> np.ndarray:
    x = path.read_bytes()
    for op in create_operators(op_config):
        x = op(x)
    return x


@pytest.mark.parametrize("name", list(VARIANTS))
def test_eval_is_the_seeds_transform_and_infer_the_deploy_one(create_operators, sample_images,
                                                              name, tmp_path):
    """Eval (tools/eval.py) reproduces the seed's transform exactly. Infer
    (tools/infer.py, and the inference.yml PaddleClas's export writes) is
    what PaddleClas's deploy tools run: our inference.yml's preprocessing,
    within the measured distance of the seed's."""
    from rexnet_plugin.deploy.infer_config import read_infer_config, write_infer_config
    config = load(name)
    t = VARIANTS[name].eval_transform  # the seed's; timm's 288 for ReXNet-R weights
    write_infer_config(tmp_path, model_name=name, transform=t)
    deploy = read_infer_config(tmp_path)
    deviation = INFER_DEVIATION[(t.resize_short, t.crop_size)]
    for path in sample_images:
        expected = seed_transform(path, t.resize_short, t.crop_size)
        evaluated = run_ops(create_operators, config["DataLoader"]["Eval"]["dataset"]["transform_ops"],
                            path).transpose(2, 0, 1)  # what ImageNetDataset does after the ops
        inferred = run_ops(create_operators, config["Infer"]["transforms"], path)
        for x in (evaluated, inferred):
            assert x.shape == expected.shape == (3, t.crop_size, t.crop_size), path
            assert x.dtype == np.float32
        diff = float(np.abs(evaluated - expected).max())
        assert diff <= 1e-5, f"{name} Eval {path.name}: max abs diff {diff}"
        assert float(np.abs(inferred - deploy.preprocess(path)).max()) <= 1e-5
        diff = float(np.abs(inferred - expected).max())
        assert diff == pytest.approx(deviation[path.name], abs=1e-5), f"{name} Infer {path.name}"


# -- rexnet-plugin configs ------------------------------------------------------

def test_configs_command_writes_and_keeps_edited_files(tmp_path, capsys):
    dest = tmp_path / "ppcls_configs"
    assert cli.main(["configs", "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.yaml" for n in VARIANTS)
    assert all((dest / f"{n}.yaml").read_text() == render(n) for n in VARIANTS)

    edited = dest / "ReXNet_1_5.yaml"
    edited.write_text(edited.read_text().replace("epochs: 400", "epochs: 10"))
    capsys.readouterr()
    assert cli.main(["configs", "--dest", str(dest)]) == 1
    out = capsys.readouterr().out
    assert "epochs: 10" in edited.read_text()
    assert f"KEPT      {edited}" in out and "--force" in out
    assert not list(dest.glob(".*.tmp"))

    assert cli.main(["configs", "--dest", str(dest), "--force"]) == 0
    assert edited.read_text() == render("ReXNet_1_5")

    assert cli.main(["configs", "--dest", str(dest), "--names", "ReXNet_1_4"]) == 2
    assert "Valid names" in capsys.readouterr().err


def test_configs_console_script(tmp_path):
    script = Path(sys.executable).parent / "rexnet-plugin"
    result = subprocess.run([str(script), "configs", "--dest", str(tmp_path),
                             "--names", "ReXNetLite_1_0"], capture_output=True, text=True,
                            env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ReXNetLite_1_0.yaml").read_text() == render("ReXNetLite_1_0")


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v.kind == "r"])
def test_rexnetr_configs_build_in_the_checkouts_ppcls(ppcls, name):
    """The checkout's ppcls (not the wheel's) gets ReXNet-R too, as its TheseusLayer."""
    import paddle
    config = ppcls.utils.config.get_config(str(CONFIG_DIR / f"{name}.yaml"),
                                           overrides=["Arch.class_num=5"], show=False)
    model = ppcls.arch.build_model(config)
    theseus = importlib.import_module("ppcls.arch.backbone.base.theseus_layer").TheseusLayer
    assert isinstance(model, theseus) and model.kind == "r"
    assert model.ch_div == VARIANTS[name].ch_div
    model.eval()
    assert model(paddle.randn([1, 3, 64, 64])).shape == [1, 5]
