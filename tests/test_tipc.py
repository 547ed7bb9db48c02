"""The TIPC configs: generated from one template, shipped, copied out by
``rexnet-plugin configs --toolkit tipc``, and PaddleClas's own chain
(test_tipc/test_train_inference_python.sh ... lite_train_lite_infer) running
every step successfully on this machine's CPU (PADDLECLAS_ROOT checkout)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from ppcls_support import paddleclas_root, subprocess_env
from rexnet_plugin.cli import main
from rexnet_plugin.zoo import VARIANTS

sys.path.insert(0, str(ROOT / "scripts"))
from update_tipc_configs import expected_configs, filename  # noqa: E402

TIPC_DIR = ROOT / "tipc_configs"
NAME = "ReXNet_1_0"
# The lines test_train_inference_python.sh reads by index (0-based), and what
# each must hold for a ReXNet variant.
LINES = {1: "model_name:", 2: "python:python", 12: "-o Global.output_dir:${save_log}/${model_name}",
         14: "trainer:norm_train", 15: "norm_train:tools/train.py -c ppcls_configs/",
         23: "eval:tools/eval.py -c ppcls_configs/", 29: "norm_export:tools/export_model.py -c ppcls_configs/",
         39: "inference:python/predict_cls.py -c configs/inference_cls.yaml",
         46: "-o Global.inference_model_dir:", 47: "-o Global.infer_imgs:"}


def test_one_current_pair_per_variant():
    expected = expected_configs()
    assert sorted(p.name for p in TIPC_DIR.glob("*.txt")) == sorted(p.name for p in expected)
    stale = [p.name for p, text in expected.items() if p.read_text() != text]
    assert not stale, f"run: python scripts/update_tipc_configs.py ({', '.join(stale)})"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_file_has_the_chains_layout(name):
    cpu = (TIPC_DIR / filename(name, "cpu")).read_text().splitlines()
    gpu = (TIPC_DIR / filename(name, "gpu")).read_text().splitlines()
    assert len(cpu) == len(gpu) == 62  # the layout of PaddleClas's own files
    for lines in (cpu, gpu):
        for index, start in LINES.items():
            assert lines[index].startswith(start), (name, index, lines[index])
        assert lines[1] == f"model_name:{name}"
        assert f"-c ppcls_configs/{name}.yaml" in lines[15]
        t = VARIANTS[name].eval_transform
        assert (f"ResizeImage.resize_short={t.resize_short} " in lines[39]
                and f"ResizeImage.interpolation={t.interpolation} " in lines[39]
                and "ResizeImage.backend=pil" in lines[39] and lines[39].endswith(
                    f"CropImage.size={t.crop_size}"))
    # CPU: no GPU anywhere, the export told so, oneDNN on and off
    assert cpu[3:5] == ["gpu_list:-1", "-o Global.device:cpu"]
    assert cpu[29].endswith("-o Global.device=cpu")
    assert cpu[40:42] == ["-o Global.use_gpu:False", "-o Global.enable_mkldnn:True|False"]
    # GPU: one GPU then two, as PaddleClas's own files; inference on GPU and CPU
    assert gpu[3:5] == ["gpu_list:0|0,1", "-o Global.device:gpu"]
    assert gpu[40] == "-o Global.use_gpu:True|False"
    differ = [i for i, (a, b) in enumerate(zip(cpu, gpu)) if a != b]
    assert differ == [3, 4, 29, 40, 41]


def test_configs_command_copies_them_and_says_what_they_need(tmp_path, capsys):
    checkout = tmp_path / "PaddleClas"
    (checkout / "test_tipc").mkdir(parents=True)
    (checkout / "test_tipc" / "test_train_inference_python.sh").write_text("")
    dest = checkout / "test_tipc" / "configs" / "rexnet_plugin"
    assert main(["configs", "--toolkit", "tipc", "--dest", str(dest), "--names", NAME]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == [filename(NAME, "gpu"), filename(NAME, "cpu")]
    assert (dest / filename(NAME, "cpu")).read_text() == (TIPC_DIR / filename(NAME, "cpu")).read_text()
    assert "warning" in out and f"rexnet-plugin configs --dest {checkout / 'ppcls_configs'}" in out

    assert main(["configs", "--dest", str(checkout / "ppcls_configs"), "--names", NAME]) == 0
    capsys.readouterr()
    assert main(["configs", "--toolkit", "tipc", "--dest", str(dest), "--names", NAME]) == 0
    assert "warning" not in capsys.readouterr().out  # everything in place now

    assert main(["configs", "--toolkit", "tipc", "--dest", str(tmp_path / "elsewhere")]) == 0
    out = capsys.readouterr().out
    assert "is not inside a PaddleClas checkout's test_tipc/configs/" in out
    assert len(list((tmp_path / "elsewhere").iterdir())) == 2 * len(VARIANTS)


# -- PaddleClas's chain, on a copy of the checkout -------------------------------------

def test_same_keys_as_paddleclas_own_file():
    """Line for line, the keys of PaddleClas's own ReXNet_1_0 file, but line 13
    (its unused extra train parameter), which points Global.output_dir where
    the chain looks for the checkpoint."""
    stock = (paddleclas_root() / "test_tipc" / "configs" / "ReXNet" /
             "ReXNet_1_0_train_infer_python.txt").read_text().splitlines()
    ours = (TIPC_DIR / filename(NAME, "gpu")).read_text().splitlines()
    assert len(ours) == len(stock)
    keys = lambda lines: [line.split(":")[0].strip() for line in lines]  # noqa: E731
    differ = [i for i, (a, b) in enumerate(zip(keys(stock), keys(ours))) if a != b]
    assert differ == [12] and stock[12] == "null:null"


def fabricate_lite_dataset(root: Path) -> None:
    """What test_tipc/prepare.sh makes for lite_train_lite_infer, without its
    download: whole_chain_little_train/ linked as dataset/ILSVRC2012, lists
    renamed, train images copied into val/ (val holds the inference image)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    data = root / "dataset" / "whole_chain_little_train"
    lines = {"train": [], "val": []}
    for split, count in (("train", 16), ("val", 8)):
        (data / split).mkdir(parents=True)
        for i in range(count):
            label = i % 4
            name = (f"n0000000{label}_{i}.JPEG" if split == "train"
                    else f"ILSVRC2012_val_{i + 1:08d}.JPEG")
            pixels = rng.integers(0, 80, (260 + 4 * i, 300, 3))
            pixels[..., label % 3] += 150
            Image.fromarray(pixels.astype(np.uint8)).save(data / split / name, quality=90)
            lines[split].append(f"{split}/{name} {label}")
    for split in lines:  # prepare.sh: mv train.txt train_list.txt; mv val.txt val_list.txt
        (data / f"{split}.txt").write_text("\n".join(lines[split]) + "\n")
        (data / f"{split}.txt").rename(data / f"{split}_list.txt")
    os.symlink("whole_chain_little_train", root / "dataset" / "ILSVRC2012")
    for path in (data / "train").iterdir():  # cp -r train/* val/
        shutil.copy(path, data / "val" / path.name)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The chain for ReXNet_1_0 on the CPU; returns (results log, copy root)."""
    checkout = paddleclas_root()
    root = tmp_path_factory.mktemp("tipc") / "PaddleClas"
    shutil.copytree(checkout / "tools", root / "tools")
    shutil.copytree(checkout / "ppcls", root / "ppcls")
    shutil.copytree(checkout / "test_tipc", root / "test_tipc",
                    ignore=shutil.ignore_patterns("docs", "static"))
    for part in ("python", "utils", "configs"):
        shutil.copytree(checkout / "deploy" / part, root / "deploy" / part)
    fabricate_lite_dataset(root)
    assert main(["configs", "--dest", str(root / "ppcls_configs"), "--names", NAME]) == 0
    config_dir = root / "test_tipc" / "configs" / "rexnet_plugin"
    assert main(["configs", "--toolkit", "tipc", "--dest", str(config_dir), "--names", NAME]) == 0
    env = subprocess_env(PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                               os.environ.get("PATH", "")]))
    config = f"test_tipc/configs/rexnet_plugin/{filename(NAME, 'cpu')}"
    run = subprocess.run(["bash", "test_tipc/test_train_inference_python.sh", config,
                          "lite_train_lite_infer"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=1200)
    results = root / "test_tipc" / "output" / NAME / "lite_train_lite_infer" / "results_python.log"
    assert results.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    return results.read_text(), root, run


def test_every_step_of_the_chain_runs_successfully(chain):
    results, root, run = chain
    plain = re.sub(r"\x1b\[[0-9;]*m", "", results)  # status_check colours its lines
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    assert lines, run.stdout[-3000:]
    failed = [line for line in lines if "Run failed" in line]
    assert not failed, "\n".join(failed)
    steps = ["tools/train.py -c ppcls_configs/ReXNet_1_0.yaml",
             "tools/eval.py -c ppcls_configs/ReXNet_1_0.yaml",
             "tools/export_model.py -c ppcls_configs/ReXNet_1_0.yaml",
             "python/predict_cls.py -c configs/inference_cls.yaml", "Global.enable_mkldnn=True",
             "Global.enable_mkldnn=False"]
    assert len(lines) == 5 and all(line.startswith("Run successfully") for line in lines)
    for step in steps:
        assert any(step in line for line in lines), step


def test_the_chain_trained_our_model_and_predicted_with_the_variants_preprocessing(chain):
    _, root, _ = chain
    output = root / "test_tipc" / "output" / NAME / "lite_train_lite_infer"
    train_log = (output / "norm_train_gpus_-1_autocast_null_nodes_1.log").read_text()
    assert "rexnet-plugin: ReXNet_1_0" in train_log  # the plugin's model, not the built-in
    assert "[Train][Epoch 2/2][Avg]" in train_log  # and it trained (not just a log file)
    # At the configs' own learning rate (0.25, for 256 images a step) TIPC's batch
    # of 8 diverged (8.45 -> 25.5); the scaled rate must not.
    losses = [float(v) for v in re.findall(r"\[Train\]\[Epoch \d/2\]\[Avg\].*?loss: ([\d.]+)",
                                           train_log)]
    assert len(losses) == 2 and losses[1] < losses[0] + 0.5, losses
    for mkldnn in (True, False):
        log = (output / f"python_infer_cpu_gpus_-1_usemkldnn_{mkldnn}_threads_1_precision_False"
                        f"_batchsize_1.log").read_text()
        assert "ILSVRC2012_val_00000001.JPEG:\tclass id(s): [" in log
        assert "rexnet-plugin: enable_memory_optim() turned off" in log  # the deploy fix ran
        assert "interpolation : bicubic" in log and "backend : pil" in log
