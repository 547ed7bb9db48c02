"""ReXNet in PaddleClas, with no fork: ``Arch.name: ReXNet_1_5`` just works.

``register(arch_module)`` is the ``paddleclas.plugins`` entry point; the
autoload hook calls it once ``ppcls.arch`` (a source checkout) or
``paddleclas.ppcls.arch`` (the pip wheel) has been imported. It sets one
factory per variant of ``zoo.VARIANTS`` on the places PaddleClas looks
names up:

* ``build_model`` does ``getattr(ppcls.arch, Arch.name)``;
* ``RecModel`` and ``DistillationModel`` do ``eval(name)`` in the globals of
  ``ppcls.arch``, that is, in the same module dict;
* ``ppcls.arch.backbone`` and its ``__all__`` (``from ppcls.arch.backbone
  import *``, and the wheel's ``paddleclas.ReXNet_1_0``).

The models are TheseusLayers of *that* PaddleClas tree (a checkout's
``ppcls`` and the wheel's ``paddleclas.ppcls`` are distinct module trees),
so ``return_patterns``, ``return_stages``, ``stop_after``, ``freeze_befor``
and build_model's pruning/quantisation switch work. The state-dict layout
is the official one, which PaddleClas's built-in ``ReXNet_*`` also use: their
.pdparams load unchanged.
"""

from __future__ import annotations

import difflib
import logging
import re
import sys
import warnings

import paddle.nn as nn

from ..model import ReXNet
from ..weights import check_state_dict, load_pretrained, should_skip_head
from ..weights.errors import WeightsError, WrongVariantError
from ..zoo import VARIANTS

_log = logging.getLogger(__name__)

# init_net options of TheseusLayer, passed on from the Arch config.
THESEUS_OPTIONS = ("return_patterns", "return_stages", "freeze_befor", "stop_after")

_model_classes: dict[type, type] = {}  # a tree's TheseusLayer -> our subclass of it
_replaced_builtins: dict[str, list[str]] = {}  # arch module name -> names it had
_announced: set[str] = set()  # arch module names whose replacement was logged


def _stop_gradient_hook(layer, inputs, output):
    output.stop_gradient = True
    return output


class PaddleClasReXNet:
    """What ReXNet gains as a PaddleClas TheseusLayer (mixed in per tree)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)  # ReXNet; its super() reaches TheseusLayer
        self.variant_name = None
        self.skip_head = False
        # Registered last on purpose: TheseusLayer.stop_after replaces every
        # sublayer registered after the named one with an Identity, so
        # "stop_after: features[k]" then returns that feature map.
        self.flatten = nn.Flatten()

    @property
    def stages_pattern(self) -> list[str]:
        """TheseusLayer patterns of the stride 4, 8, 16 and 32 outputs."""
        return [re.sub(r"\.(\d+)", r"[\1]", info["module"]) for info in self.stage_info]

    def forward_head(self, x, pre_logits: bool = False):
        # Same numbers as ReXNet.forward_head, built from layers only (see flatten).
        x = self.avg_pool(x)
        if not pre_logits and self.output is not None:
            x = self.output(x)
        return self.flatten(x)

    def freeze_befor(self, layer_name: str) -> bool:
        """Stop the gradient at the output of ``layer_name``.

        TheseusLayer's version wraps the layer in a new one, which renames its
        parameters (``features.5.layer.out...``) so that checkpoints no
        longer load; a forward hook does the same without renaming.
        """
        found = self._parse_pattern(layer_name, self)
        if not found:
            _log.warning("freeze_befor: no layer named %r in %s; nothing was frozen. "
                         "Stage names: %s", layer_name, self.variant_name, self.stages_pattern)
            return False
        found[-1]["layer"].register_forward_post_hook(_stop_gradient_hook)
        return True

    def set_state_dict(self, state_dict, use_structured_name: bool = True):
        """Load after a full check: PaddleClas's ``load_dygraph_pretrain``
        calls ``set_dict``, which in plain Paddle only warns and skips
        tensors whose shape differs (a class_num mismatch would go unseen)."""
        if not use_structured_name:
            return super().set_state_dict(state_dict, use_structured_name)
        state_dict = self._checked_state(state_dict)
        kept_head = [k for k in self.state_dict() if k not in state_dict]  # skip_head
        with warnings.catch_warnings():
            if kept_head:
                _log.info("%s: classifier not loaded (skip_head), kept new: %s",
                          self.variant_name, ", ".join(kept_head))
                warnings.filterwarnings("ignore", message=r"Skip loading for output\.")
            return super().set_state_dict(state_dict, use_structured_name)

    set_dict = set_state_dict
    load_dict = set_state_dict

    def _checked_state(self, state: dict) -> dict:
        own = self.state_dict()
        extra = [k for k in state if k not in own]
        if extra and all(k in state for k in own):
            # A complete checkpoint plus tensors this model lacks: a loss's
            # parameters saved by PaddleClas, or layers cut by stop_after.
            _log.info("%s: ignoring %d checkpoint tensors it has no place for (%s%s)",
                      self.variant_name, len(extra), ", ".join(extra[:3]),
                      " ..." if len(extra) > 3 else "")
            state = {k: v for k, v in state.items() if k in own}
        source = ("the state dict passed to set_state_dict (in PaddleClas: "
                  "Global.pretrained_model or Global.checkpoints)")
        try:
            return check_state_dict(self, state, source, skip_head=self.skip_head)
        except WeightsError as error:
            _raise_with_hint(error, self, state)

    def _head_hint(self, state: dict | None = None) -> str:
        """How to fix a classifier mismatch in a PaddleClas config."""
        class_num = "to the checkpoint's class count"
        weights = [k for k in self.state_dict() if k.startswith("output.") and k.endswith(".weight")]
        if state is not None and weights and weights[-1] in state:
            class_num = f": {list(getattr(state[weights[-1]], 'shape', ['?']))[0]}"
        return (f"\n  In PaddleClas: set Arch.class_num{class_num} to use the "
                f"checkpoint's classifier, or add Arch.skip_head: True (-o "
                f"Arch.skip_head=True) to fine-tune a new {self.class_num}-class head "
                f"from it.")


def _raise_with_hint(error: WeightsError, model, state: dict | None = None):
    """Re-raise ``error``, with the PaddleClas fix added when only the
    classifier differs (not for a checkpoint of another variant)."""
    message = str(error)
    if (isinstance(error, WrongVariantError) or "In PaddleClas:" in message
            or "output." not in message):
        raise error
    raise type(error)(message + model._head_hint(state)) from None


def model_class(theseus_layer: type) -> type:
    """Our ReXNet as a subclass of ``theseus_layer`` (one class per tree)."""
    cls = _model_classes.get(theseus_layer)
    if cls is None:
        parse_pattern = sys.modules[theseus_layer.__module__].parse_pattern_str
        cls = type("ReXNet", (PaddleClasReXNet, ReXNet, theseus_layer), {
            "__module__": __name__,
            "__doc__": f"ReXNet as a TheseusLayer of {theseus_layer.__module__}.",
            "_parse_pattern": staticmethod(parse_pattern),
        })
        _model_classes[theseus_layer] = cls
    return cls


def make_factory(name: str, arch_module):
    """``ReXNet_1_0(pretrained=False, use_ssld=False, **kwargs)`` for one tree.

    kwargs: ReXNet's (class_num, dropout_ratio, drop_path_rate ...), the
    TheseusLayer options (return_patterns, return_stages, freeze_befor,
    stop_after) and ``skip_head``: load a checkpoint whose classifier has
    another class count, keeping this model's new head (fine-tuning).
    ``pretrained``: False, True (the variant's default weights), a source
    name, a local path or a URL (see rexnet_plugin.weights.load_pretrained).
    """
    variant = VARIANTS[name]
    cls = model_class(arch_module.TheseusLayer)

    def factory(pretrained=False, use_ssld=False, skip_head=False, **kwargs):
        if use_ssld:
            raise WeightsError(
                f"{name}: use_ssld=True asks for PaddleClas SSLD weights; none exist "
                f"for ReXNet. Remove Arch.use_ssld from the config.")
        theseus = {k: kwargs.pop(k) for k in THESEUS_OPTIONS if k in kwargs}
        model = cls(**variant.arch, **kwargs)
        model.variant_name = name
        # Kept for set_state_dict (Global.pretrained_model) as well.
        model.skip_head = bool(skip_head) or not model.class_num
        if pretrained is not False and pretrained is not None:
            try:  # before init_net: its options may cut layers away
                load_pretrained(model, pretrained, variant=name, skip_head=should_skip_head(
                    model.class_num, pretrained, model.skip_head))
            except WeightsError as error:
                _raise_with_hint(error, model)
        model.init_net(stages_pattern=model.stages_pattern, **theseus)
        _announce_replacement(arch_module)
        return model

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = (f"{variant.kind_title} x{variant.width_mult} "
                       f"from rexnet-plugin, as a {arch_module.__name__} TheseusLayer.\n\n"
                       + make_factory.__doc__.split("\n\n", 1)[1])
    factory.rexnet_plugin = True
    return factory


def register(arch_module) -> None:
    """Entry point of group ``paddleclas.plugins``: put every variant in
    ``arch_module`` (``ppcls.arch`` or ``paddleclas.ppcls.arch``)."""
    backbone = arch_module.backbone
    if arch_module.__name__ not in _replaced_builtins:
        _replaced_builtins[arch_module.__name__] = [
            n for n in VARIANTS
            if n in vars(arch_module) and not getattr(vars(arch_module)[n], "rexnet_plugin", False)]
    for name in VARIANTS:
        factory = make_factory(name, arch_module)
        setattr(arch_module, name, factory)
        setattr(backbone, name, factory)
    exported = getattr(backbone, "__all__", None)
    if isinstance(exported, list):
        exported.extend(n for n in VARIANTS if n not in exported)
    _install_name_check(arch_module)
    _log.debug("registered %d ReXNet variants in %s", len(VARIANTS), arch_module.__name__)


def _announce_replacement(arch_module) -> None:
    """Log once per tree, at the first build, that the built-ins are replaced."""
    module_name = arch_module.__name__
    replaced = _replaced_builtins.get(module_name)
    if not replaced or module_name in _announced:
        return
    _announced.add(module_name)
    message = (f"rexnet-plugin: {', '.join(replaced)} in {module_name} are rexnet-plugin's "
               f"(same weight layout as PaddleClas's built-in ones, which they replace). "
               f"Set REXNET_PLUGIN_AUTOLOAD=0 to use the built-in ones.")
    host_logger = sys.modules.get(module_name.rsplit(".", 1)[0] + ".utils.logger")
    if host_logger is not None and getattr(host_logger, "_logger", None) is not None:
        host_logger.info(message)  # PaddleClas's log: rank 0 only, and into its log file
    else:
        _log.info(message)


def _install_name_check(arch_module) -> None:
    """Make ``getattr(arch, "ReXNet_1_4")`` (build_model) list the valid names.

    A module-level ``__getattr__`` (PEP 562) runs only for names the module
    lacks, so every other lookup is untouched.
    """
    previous = vars(arch_module).get("__getattr__")
    if getattr(previous, "rexnet_plugin", False):
        return

    def __getattr__(name: str):
        if "rexnet" in name.lower() and not name.startswith("__"):
            close = difflib.get_close_matches(name, VARIANTS, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise AttributeError(
                f"Unknown model {name!r} (Arch.name) in {arch_module.__name__}.{hint} "
                f"The ReXNet variants registered by rexnet-plugin are: {', '.join(VARIANTS)}.")
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {arch_module.__name__!r} has no attribute {name!r}")

    __getattr__.rexnet_plugin = True
    arch_module.__getattr__ = __getattr__
