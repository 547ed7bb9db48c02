"""PaddleClas's Python predictor on Paddle 3: enable_memory_optim off for PIR models, with
which every ``inference.json`` fails ("Not find predictor_id ... memory_optimize_pass"); the
PIR executor frees intermediate tensors itself, so nothing is lost (docs/deployment.md)."""

from __future__ import annotations

import logging
import sys

_log = logging.getLogger(__name__)


def register(module) -> None:
    """Entry point of group ``paddleclas.deploy.plugins`` (``module``:
    ``paddleclas.deploy.utils.predictor``): wrap its ``create_predictor``."""
    original = module.create_predictor
    if hasattr(original, "__wrapped__"):
        return

    def create_predictor(config):
        if config.prog_file().endswith(".json"):  # a PIR program
            config.enable_memory_optim(False)
            # PaddleClas's deploy log: rank 0 only, and into its log file.
            host_log = sys.modules.get(module.__name__.rsplit(".", 2)[0] + ".utils.logger")
            (host_log or _log).info("rexnet-plugin: enable_memory_optim() turned off for %s: "
                                    "Paddle 3 cannot run a PIR model with it", config.prog_file())
        return original(config)

    create_predictor.__wrapped__ = original
    module.create_predictor = create_predictor
