"""Helpers for the PaddleDetection tests: subprocesses, config trees, tiny overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "ppdet_configs"
CHECKOUT_CONFIGS = CONFIGS / "rexnet"        # _BASE_ on <checkout>/configs/...
STANDALONE_CONFIGS = CONFIGS / "standalone"  # self-contained, for the pip wheel
FLOW = Path(__file__).with_name("ppdet_flow.py")
TIMEOUT = 600


def shipped(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yml"))


def detector_kind(config: Path) -> str:
    """'picodet', 'ppyoloe' or 'faster_rcnn', from the file name; a new kind needs test overrides."""
    for kind in TINY_READERS:
        if config.name.startswith(kind + "_"):
            return kind
    raise AssertionError(f"{config}: no test overrides for this detector; add its kind "
                         f"to TINY_READERS in {__file__}")


def paddledet_root() -> Path:
    """The PaddleDetection checkout in PADDLEDET_ROOT, or skip the test."""
    value = os.environ.get("PADDLEDET_ROOT")
    if not value:
        pytest.skip("PADDLEDET_ROOT is not set: these tests run PaddleDetection's "
                    "tools/train.py and tools/export_model.py from a source checkout")
    root = Path(value)
    if not (root / "tools" / "train.py").is_file() or not (root / "configs").is_dir():
        pytest.fail(f"PADDLEDET_ROOT={value} is not a PaddleDetection checkout "
                    f"(no tools/train.py or configs/)")
    return root


@pytest.fixture(scope="session")
def ppdet_env(tmp_path_factory) -> dict:
    """Environment of the ppdet subprocesses."""
    env = dict(os.environ)
    env.pop("REXNET_PLUGIN_AUTOLOAD", None)  # the flows rely on the autoload hook
    # .pyc files go to one folder for the session: never into the (read-only)
    # checkout, and compiled once rather than by every subprocess.
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    return env


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    """Run a command; fail the test with the end of its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n"
                    f"{proc.stdout[-6000:]}")
    return proc.stdout


def run_flow(stage: str, config: Path, cwd: Path, env: dict, **args) -> dict:
    """tests/ppdet_flow.py in a fresh process; returns its RESULT."""
    payload = {"stage": stage, "config": str(config), **args}
    out = run([sys.executable, str(FLOW), json.dumps(payload)], cwd, env)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not lines:
        pytest.fail(f"ppdet_flow.py {stage} printed no RESULT:\n{out[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def checkout_config_tree(dest: Path, root: Path) -> Path:
    """``dest/configs`` = the checkout's config folders (links) + our ``rexnet/``.

    The shipped configs are meant for ``<checkout>/configs/rexnet/``; this puts
    them there without writing into the checkout. ``rexnet`` must be a real
    folder: '..' in a _BASE_ path is resolved from the physical location.
    """
    configs = dest / "configs"
    configs.mkdir(parents=True)
    for entry in (root / "configs").iterdir():
        (configs / entry.name).symlink_to(entry)
    (configs / "rexnet").mkdir()
    for config in shipped(CHECKOUT_CONFIGS):
        (configs / "rexnet" / config.name).write_bytes(config.read_bytes())
    return configs


def write_overlay(path: Path, base: Path, overrides: dict) -> Path:
    """A config that takes ``base`` unchanged (``_BASE_``) and adds test settings."""
    text = yaml.safe_dump({"_BASE_": [os.path.relpath(base, path.parent)], **overrides},
                          sort_keys=False)
    path.write_text(text)
    return path


_NORMALIZE = {"NormalizeImage": {"is_scale": True, "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225]}}

# Readers at 224-320 px instead of 416-1333: the same transforms, small sizes.
# PicoDet's ATSS assigner takes the 9 closest anchors per level, so the
# stride-64 level needs at least 3x3 cells: 224 px and up.
TINY_READERS = {
    "picodet": {
        "eval_size": [256, 256],  # PicoHeadV2 precomputes its eval anchors for it
        # Keep every box: an untrained head scores below the COCO threshold,
        # and an empty result has no COCO metric.
        "PicoHeadV2": {"nms": {"score_threshold": 0.0}},
        "TrainReader": {
            "sample_transforms": [{"Decode": {}}, {"RandomFlip": {"prob": 0.5}}],
            "batch_transforms": [
                {"BatchRandomResize": {"target_size": [224, 256], "random_size": True,
                                       "random_interp": True, "keep_ratio": False}},
                _NORMALIZE, {"Permute": {}}, {"PadGT": {}}],
            "batch_size": 2, "shuffle": True, "drop_last": True},
        "EvalReader": {
            "sample_transforms": [{"Decode": {}},
                                  {"Resize": {"interp": 2, "target_size": [256, 256],
                                              "keep_ratio": False}},
                                  _NORMALIZE, {"Permute": {}}],
            "batch_transforms": [{"PadBatch": {"pad_to_stride": 32}}],
            "batch_size": 2, "shuffle": False},
        "TestReader": {
            "inputs_def": {"image_shape": [1, 3, 256, 256]},
            "sample_transforms": [{"Decode": {}},
                                  {"Resize": {"interp": 2, "target_size": [256, 256],
                                              "keep_ratio": False}},
                                  _NORMALIZE, {"Permute": {}}],
            "batch_size": 1},
    },
    "ppyoloe": {
        "eval_size": [256, 256],  # PPYOLOEHead precomputes its eval anchors for it
        "PPYOLOEHead": {"nms": {"score_threshold": 0.0}},  # see picodet
        "TrainReader": {
            "sample_transforms": [{"Decode": {}}, {"RandomFlip": {}}],
            "batch_transforms": [
                {"BatchRandomResize": {"target_size": [224, 256], "random_size": True,
                                       "random_interp": True, "keep_ratio": False}},
                _NORMALIZE, {"Permute": {}}, {"PadGT": {}}],
            "batch_size": 2, "shuffle": True, "drop_last": True, "use_shared_memory": False},
        "EvalReader": {
            "sample_transforms": [{"Decode": {}},
                                  {"Resize": {"interp": 2, "target_size": [256, 256],
                                              "keep_ratio": False}},
                                  _NORMALIZE, {"Permute": {}}],
            "batch_size": 2},
        "TestReader": {
            "inputs_def": {"image_shape": [3, 256, 256]},
            "sample_transforms": [{"Decode": {}},
                                  {"Resize": {"interp": 2, "target_size": [256, 256],
                                              "keep_ratio": False}},
                                  _NORMALIZE, {"Permute": {}}],
            "batch_size": 1},
    },
    "faster_rcnn": {
        "TrainReader": {
            "sample_transforms": [{"Decode": {}},
                                  {"RandomResize": {"target_size": [[224, 320], [256, 320]],
                                                    "interp": 2, "keep_ratio": True}},
                                  {"RandomFlip": {"prob": 0.5}}, _NORMALIZE, {"Permute": {}}],
            "batch_transforms": [{"PadBatch": {"pad_to_stride": 32}}],
            "batch_size": 2, "shuffle": True, "drop_last": True, "collate_batch": False},
        "EvalReader": {
            "sample_transforms": [{"Decode": {}},
                                  {"Resize": {"interp": 2, "target_size": [256, 320],
                                              "keep_ratio": True}},
                                  _NORMALIZE, {"Permute": {}}],
            "batch_transforms": [{"PadBatch": {"pad_to_stride": 32}}],
            "batch_size": 1, "shuffle": False, "drop_last": False},
        "TestReader": {
            "sample_transforms": [{"Decode": {}},
                                  {"Resize": {"interp": 2, "target_size": [256, 320],
                                              "keep_ratio": True}},
                                  _NORMALIZE, {"Permute": {}}],
            "batch_transforms": [{"PadBatch": {"pad_to_stride": 32}}],
            "batch_size": 1, "shuffle": False, "drop_last": False},
        # Fewer proposals and RoIs per image than COCO needs: the two-FC RoI
        # head on 512 RoIs would take most of the test's time.
        "RPNHead": {"train_proposal": {"pre_nms_top_n": 512, "post_nms_top_n": 256},
                    "test_proposal": {"pre_nms_top_n": 256, "post_nms_top_n": 100}},
        "BBoxAssigner": {"batch_size_per_im": 64},
    },
}


def tiny_overrides(kind: str, dataset: dict, save_dir: Path,
                   pretrain_weights: str | None = None) -> dict:
    """Test settings: CPU, one epoch of a few images, small inputs, local weights only."""
    return {
        **dataset,
        **TINY_READERS[kind],
        "use_gpu": False,
        "worker_num": 0,
        "epoch": 1,
        "log_iter": 1,
        "snapshot_epoch": 1,
        "save_dir": str(save_dir),
        # No internet in tests: a local checkpoint, or none.
        "pretrain_weights": pretrain_weights,
    }
