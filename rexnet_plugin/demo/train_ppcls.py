"""Training with PaddleClas's own engine: its unmodified ``tools/train.py``.

Runs in a child process on the checkout given by ``PADDLECLAS_ROOT`` with
the shipped config plus the recipe's ``-o`` overrides, and shows PaddleClas's
own log (with its ETA). Afterwards the per-epoch averages are read back from
its ``train.log`` and the newest checkpoint that loads is used.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

from .errors import TrainingError

ENV_ROOT = "PADDLECLAS_ROOT"


def paddleclas_root(required: bool = False) -> Path | None:
    """The checkout in ``PADDLECLAS_ROOT``, checked; None when unset."""
    value = os.environ.get(ENV_ROOT)
    if not value:
        if required:
            raise TrainingError(
                f"--engine paddleclas needs a PaddleClas source checkout: set {ENV_ROOT} "
                f"to it (git clone https://github.com/PaddlePaddle/PaddleClas).")
        return None
    root = Path(value).expanduser().resolve()
    if not (root / "tools" / "train.py").is_file() or not (root / "ppcls").is_dir():
        raise TrainingError(
            f"{ENV_ROOT}={value}: no tools/train.py and ppcls/ there. Point it at the "
            f"root of a PaddleClas source checkout, or unset it to train with Paddle's "
            f"own API.")
    return root


def train_with_paddleclas(argv: list[str], root: Path, output_dir: Path) -> None:
    """Run PaddleClas's training; KeyboardInterrupt stops it and propagates."""
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # never write into the checkout
    env["PYTHONUNBUFFERED"] = "1"
    child = subprocess.Popen(argv, cwd=root, env=env)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the child too; say it again in case it came
        # from elsewhere, and give the child time to exit.
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise
    if code != 0:
        raise TrainingError(
            f"PaddleClas's tools/train.py exited with code {code}; its log is "
            f"{output_dir / 'train.log'}. To rerun it alone:\n  " + shlex.join(argv))


_AVG = re.compile(r"\[(Train|Eval)\]\[Epoch (\d+)(?:/\d+)?\]\[Avg\](.*)")
_METRIC = re.compile(r"(\w+): ([-+0-9.eE]+|nan|inf)")


def read_history(output_dir: Path) -> list[dict]:
    """Per-epoch averages from PaddleClas's ``train.log`` (its [Avg] lines)."""
    log = output_dir / "train.log"
    epochs: dict[int, dict] = {}
    if not log.is_file():
        return []
    for line in log.read_text(errors="replace").splitlines():
        match = _AVG.search(line)
        if not match:
            continue
        phase, epoch, rest = match.group(1), int(match.group(2)), match.group(3)
        values = {k: float(v) for k, v in _METRIC.findall(rest)}
        prefix = "train" if phase == "Train" else "val"
        entry = epochs.setdefault(epoch, {"epoch": epoch})
        if "loss" in values:
            entry[f"{prefix}_loss"] = values["loss"]
        if "top1" in values:
            entry[f"{prefix}_top1"] = values["top1"]
    return [epochs[e] for e in sorted(epochs) if "train_loss" in epochs[e]]


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """PaddleClas's per-epoch checkpoints, newest first."""
    found = []
    for path in output_dir.rglob("epoch_*.pdparams"):
        match = re.fullmatch(r"epoch_(\d+)", path.stem)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def prune_checkpoints(output_dir: Path, keep: Path) -> None:
    """Delete the per-epoch checkpoints except ``keep`` (PaddleClas keeps them all:
    14 MB of weights and 14 MB of optimizer state per epoch for ReXNet_1_0).
    Its ``latest`` and ``best_model`` stay."""
    for _, path in checkpoints(output_dir):
        if path != keep:
            for companion in path.parent.glob(f"{path.stem}.*"):
                companion.unlink()
