"""PaddleClas's deploy tools on Paddle 3.x: a narrow fix for PIR models.

PaddleClas's Python predictor (``paddleclas.deploy.utils.predictor``, used
by ``deploy/python/predict_cls.py``, ``predict_rec.py``, ``predict_system.py``,
the ``paddleclas`` command and TIPC's inference step) calls
``config.enable_memory_optim()`` for every model. On Paddle 3.x every model
exported as PIR (``inference.json``; ``paddle.jit.save`` writes nothing else
there) then fails in ``create_predictor``::

    ValueError: (InvalidArgument) Not find predictor_id 0 and pass_name memory_optimize_pass

The predictor only learns that the program is PIR after its constructor has
kept memory optimisation on; it then runs the PIR pass pipeline, in which
the legacy ``memory_optimize_pass`` never runs, and still asks for that
pass's reuse table (paddle/fluid/inference/api/analysis_predictor.cc). The
same happens to PaddleClas's own models. The PIR executor frees
intermediate tensors itself, so turning the option off loses nothing.

``register(module)``, the entry point of group ``paddleclas.deploy.plugins``,
runs once that module has been imported (``integrations/autoload.py``). It
wraps the module's ``create_predictor`` name, which the predictor looks up
at call time, so that for a PIR program on Paddle 3.x memory optimisation is
switched off just before the predictor is made; it logs that once. Any other
model, and Paddle 2.x, pass through untouched. Nothing else in the process
changes. ``REXNET_PLUGIN_DEPLOY_FIX=0`` leaves PaddleClas as it is.

PaddleClas's C++ deploy (``deploy/cpp``, ``deploy/cpp_shitu``) and
``deploy/slim/act/test_ppclas.py`` make their own Config and are out of its
reach; they need Paddle's own fix.
"""

from __future__ import annotations

import logging
import os
import sys

ENV_SWITCH = "REXNET_PLUGIN_DEPLOY_FIX"
_MARK = "rexnet_plugin_pir_memory_optim_fix"

_log = logging.getLogger(__name__)
_announced = False


def enabled() -> bool:
    """False when REXNET_PLUGIN_DEPLOY_FIX=0."""
    return os.environ.get(ENV_SWITCH) != "0"


def _paddle_major() -> int | None:
    version = getattr(sys.modules.get("paddle"), "__version__", "")
    head = version.split(".")[0]
    return int(head) if head.isdigit() else None


def is_pir_program(config) -> bool:
    """The Config loads a PIR program (``*.json``): Paddle chose it from the
    model prefix, or it was named."""
    try:
        return str(config.prog_file()).endswith(".json")
    except Exception:
        return False


def _announce(module) -> None:
    global _announced
    if _announced:
        return
    _announced = True
    paddle = sys.modules.get("paddle")
    message = (f"rexnet-plugin: PaddleClas's predictor ({module.__name__}) loads a PIR model "
               f"(inference.json) on Paddle {getattr(paddle, '__version__', '?')}, which "
               f"cannot run it with enable_memory_optim(): turned off for it (the PIR executor "
               f"frees intermediate tensors itself). {ENV_SWITCH}=0 leaves PaddleClas's "
               f"settings as they are.")
    host_logger = sys.modules.get(module.__name__.rsplit(".", 2)[0] + ".utils.logger")
    if host_logger is not None and hasattr(host_logger, "info"):
        host_logger.info(message)  # PaddleClas's deploy log
    else:
        _log.info(message)


def register(module) -> None:
    """Entry point of group ``paddleclas.deploy.plugins``: wrap
    ``module.create_predictor`` (once) where Paddle is 3.x."""
    if not enabled():
        return
    major = _paddle_major()
    if major is not None and 0 < major < 3:  # 0: a develop build, as new as it gets
        return
    original = getattr(module, "create_predictor", None)
    if original is None or getattr(original, _MARK, False):
        return

    def create_predictor(config):
        if is_pir_program(config):
            config.enable_memory_optim(False)
            _announce(module)
        return original(config)

    create_predictor.__wrapped__ = original
    create_predictor.__doc__ = original.__doc__
    setattr(create_predictor, _MARK, True)
    module.create_predictor = create_predictor
