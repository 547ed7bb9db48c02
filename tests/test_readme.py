"""Every shell, Python and YAML block of the README runs as written, in order,
in one folder, so an example that drifts fails. The install and main-job
blocks are .ci/run's first stage (from a fresh venv, full defaults); the
test command is this suite; a block marked ``<!-- not-run: reason -->`` says
why it cannot run offline; ``<!-- needs: module -->`` skips when the module
is missing.

What the blocks expect to find is made here: the demo's folder (a reduced
run), ``my_weights.pdparams``, ``photo.jpg``, ``photos/`` and
``data/train_list.txt``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CI_STAGE = {"install-command", "main-job", "test-command"}  # run by .ci/run itself
TIMEOUT = 600


def readme_blocks() -> list[dict]:
    """The README's fenced blocks, each with its language, text and the marker
    comment just above it (if any)."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for match in re.finditer(r"(?:<!-- ([\w-]+)(?::\s*(.*?))? -->\n)?```(\w*)\n(.*?)\n```",
                             text, re.S):
        marker, note, lang, body = match.groups()
        if marker and marker.startswith(("begin", "end")):
            marker = None
        blocks.append({"marker": marker, "note": (note or "").strip(), "lang": lang or "sh",
                       "body": body, "line": text[:match.start()].count("\n") + 1})
    return blocks


def test_every_block_is_run_or_says_why_not():
    blocks = readme_blocks()
    assert blocks and {b["marker"] for b in blocks} >= CI_STAGE
    for block in blocks:
        if block["marker"] == "not-run":
            assert len(block["note"]) > 10, f"README line {block['line']}: say why"
        assert block["marker"] in (None, "not-run", "needs", *CI_STAGE), block
        assert block["lang"] in ("sh", "python", "yaml"), block


def test_ci_runs_the_readme_install_and_main_job_lines():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_block install-command" in ci and "readme_block main-job" in ci
    assert "readme_block test-command" in ci


def _shell_commands(body: str) -> list[tuple[str, str | None]]:
    """(command, expected output or None): a '$ ' line is a command followed by
    its output; otherwise every line is a command (backslash continuations joined)."""
    body = body.replace("\\\n", " ")
    lines = body.splitlines()
    if not any(line.startswith("$ ") for line in lines):
        return [(line, None) for line in lines if line.strip()]
    commands = []
    for line in lines:
        if line.startswith("$ "):
            commands.append([line[2:], []])
        elif commands:
            commands[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in commands]


def _same_shape(expected: str, got: str) -> None:
    """An example's output and the real one: the same JSON keys and types line
    by line (the numbers come from the README author's run)."""
    expected_lines, got_lines = expected.splitlines(), got.strip().splitlines()
    assert len(got_lines) == len(expected_lines), got
    for e, g in zip(expected_lines, got_lines):
        e, g = json.loads(e), json.loads(g)
        assert list(e) == list(g) and all(type(e[k]) is type(g[k]) for k in e), (e, g)
        assert e["image"] == g["image"]
        assert len(e["topk"]) == len(g["topk"])


def _prepare(folder: Path, env: dict) -> None:
    """The files the README's examples name."""
    from PIL import Image
    subprocess.run([sys.executable, "-m", "rexnet_plugin.cli", "demo", "--epochs", "1",
                    "--train-images", "64", "--out", "rexnet_demo"], cwd=folder, env=env,
                   check=True, capture_output=True, timeout=TIMEOUT)
    os.symlink("rexnet_demo/data", folder / "data")  # data/train_list.txt: 64+ images
    subprocess.run([sys.executable, "-c", "import paddle; from rexnet_plugin import "
                    "create_model; paddle.save(create_model('ReXNet_1_0').state_dict(), "
                    "'my_weights.pdparams')"], cwd=folder, env=env, check=True, timeout=TIMEOUT)
    rng = np.random.default_rng(0)
    (folder / "photos").mkdir()
    for name in ("photo.jpg", "photos/a.jpg", "photos/b.png"):
        pixels = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)


@pytest.mark.slow
def test_the_readme_examples_run_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PADDLECLAS_ROOT", "PADDLEDET_ROOT")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if shutil.which("rexnet-plugin", path=env["PATH"]) is None:
        pytest.skip("the rexnet-plugin command is not installed (pip install the package)")
    _prepare(tmp_path, env)
    ran, skipped = 0, []
    for block in readme_blocks():
        where = f"README line {block['line']}"
        if block["marker"] in CI_STAGE or block["marker"] == "not-run":
            continue
        if block["marker"] == "needs" and importlib.util.find_spec(block["note"]) is None:
            skipped.append(f"{where}: needs {block['note']}")
            continue
        if block["lang"] == "yaml":
            _check_yaml(block["body"], where)
        elif block["lang"] == "python":
            proc = subprocess.run([sys.executable, "-c", block["body"]], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT)
            assert proc.returncode == 0, f"{where}:\n{proc.stderr[-3000:]}"
        else:
            for command, expected in _shell_commands(block["body"]):
                proc = subprocess.run(shlex.split(command), cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=TIMEOUT)
                assert proc.returncode == 0, f"{where}: {command}\n{proc.stderr[-3000:]}"
                if expected:
                    _same_shape(expected, proc.stdout)
        ran += 1
    assert ran >= 5
    if skipped:
        pytest.skip("; ".join(skipped))


def _check_yaml(body: str, where: str) -> None:
    """A config fragment: it parses, and its ReXNet section builds the backbone."""
    from rexnet_plugin.integrations.paddledet import ReXNet
    config = yaml.safe_load(body)
    assert isinstance(config, dict), where
    if "ReXNet" in config:
        backbone = ReXNet(**config["ReXNet"])  # ValueError for a key or value it refuses
        assert backbone.variant == config["ReXNet"]["variant"], where
