"""The standalone configs with the pip wheel ``paddledet`` (no checkout needed).

Each step runs in a fresh process (tests/ppdet_flow.py) on a tiny synthetic
COCO dataset with small inputs. Evaluation must work. Training and export
fail inside paddledet <= 2.6.0 on Paddle 3 for every backbone; those two
tests are xfailed on exactly that upstream error (any other failure fails),
and pass as soon as a fixed paddledet is installed. The checkout tests
(test_ppdet_checkout.py) cover training and export with PaddleDetection's
current code.
"""

from __future__ import annotations

import math
from importlib import metadata

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains and exports detectors: CI runs these with -m slow

from ppdet_support import (STANDALONE_CONFIGS, detector_kind, ppdet_env, run_flow,  # noqa: F401
                           shipped, tiny_overrides, write_overlay)
from synthetic_coco import CATEGORIES, dataset_overrides, make_coco_dataset

# Upstream errors of paddledet <= 2.6.0 on Paddle 3: stage -> (message, explanation).
KNOWN_PIP_FAILURES = {
    "train": ("Type promotion only support calculations between floating-point numbers",
              "paddledet <= 2.6.0 on Paddle 3: its ATSS and task-aligned assigners add "
              "int64 and int32 tensors, which Paddle 3 rejects (fixed in PaddleDetection "
              "develop); the same for every backbone"),
    "export": ("Can't call main_program when full_graph=False",
               "paddledet <= 2.6.0 on Paddle 3: Trainer.export calls paddle.jit.to_static "
               "without full_graph=True (fixed in PaddleDetection develop)"),
}

CONFIGS = shipped(STANDALONE_CONFIGS)


@pytest.fixture(scope="module")
def pip_paddledet():
    try:
        return metadata.version("paddledet")
    except metadata.PackageNotFoundError:
        pytest.skip("paddledet is not installed: pip install 'rexnet-plugin[detection]'")


def _overlay(config, tmp_path):
    data = make_coco_dataset(tmp_path / "data")
    overrides = tiny_overrides(detector_kind(config), dataset_overrides(data),
                               tmp_path / "output")
    return write_overlay(tmp_path / f"test_{config.name}", config, overrides)


def _check(result: dict, stage: str) -> None:
    assert "site-packages" in result["ppdet"], f"not the pip ppdet: {result['ppdet']}"
    if result["ok"]:
        return
    message, explanation = KNOWN_PIP_FAILURES.get(stage, (None, None))
    if message and message in result["error"]:
        pytest.xfail(explanation)
    pytest.fail(result["traceback"])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_build_and_evaluate(config, tmp_path, pip_paddledet, ppdet_env):
    """Trainer.evaluate (COCO metric) runs, and the backbone feeds the neck what it announces."""
    result = run_flow("eval", _overlay(config, tmp_path), tmp_path, ppdet_env)
    _check(result, "eval")
    assert len(result["coco_stats"]) == 12  # pycocotools' AP/AR summary
    height, width = result["image_shape"][2:]
    assert len(result["feature_shapes"]) == len(result["out_shape"]) > 0
    for shape, (channels, stride) in zip(result["feature_shapes"], result["out_shape"]):
        assert shape[1:] == [channels, math.ceil(height / stride), math.ceil(width / stride)]
    bbox = np.array(result["bbox"])
    assert bbox.ndim == 2 and bbox.shape[1] == 6  # class, score, x1, y1, x2, y2
    assert sum(result["bbox_num"]) == len(bbox)
    assert set(bbox[:, 0].astype(int)) <= set(range(len(CATEGORIES)))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_train_a_few_steps(config, tmp_path, pip_paddledet, ppdet_env):
    result = run_flow("train", _overlay(config, tmp_path), tmp_path, ppdet_env)
    _check(result, "train")
    assert result["losses"] and all(np.isfinite(v) for v in result["losses"].values())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_export_and_run_in_paddle_inference(config, tmp_path, pip_paddledet, ppdet_env):
    overlay = _overlay(config, tmp_path)
    weights = tmp_path / "exported.pdparams"
    result = run_flow("export", overlay, tmp_path, ppdet_env,
                      out_dir=str(tmp_path / "inference"), save_weights=str(weights))
    _check(result, "export")
    # Reached only with a paddledet that exports on Paddle 3.
    compare = run_flow("compare", overlay, tmp_path, ppdet_env,
                       weights=str(weights), model_dir=str(tmp_path / "inference" / overlay.stem))
    _check(compare, "compare")
    assert compare["exported"][1] == compare["dygraph"][1]
    np.testing.assert_allclose(np.array(compare["exported"][0]),
                               np.array(compare["dygraph"][0]), rtol=1e-3, atol=1e-3)
