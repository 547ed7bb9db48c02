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

PaddleClas 2.3+ ships ``ReXNet_1_0`` ... ``ReXNet_3_0`` itself. Under those
names the replacement behaves as the built-in did, so an existing config
runs as before: every keyword argument of the built-in is accepted with the
same meaning, ``pretrained: True`` loads PaddleClas's own file, the same
weights give the same outputs, and the same seed gives the same initial
weights. ``REXNET_PLUGIN_KEEP_BUILTIN`` keeps PaddleClas's own model, for
some names or all. Registration is all or nothing: if it fails partway,
PaddleClas's own models are put back.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import warnings

import paddle.nn as nn

from ..model import ReXNet
from ..weights import check_state_dict, load_pretrained, should_skip_head
from ..weights.errors import NotReXNetError, WeightsError, WrongVariantError
from ..weights.layouts import canonical_state
from ..zoo import KINDS, PADDLECLAS_BUILTIN_NAMES, VARIANTS

_log = logging.getLogger(__name__)

# init_net options of TheseusLayer, passed on from the Arch config.
THESEUS_OPTIONS = ("return_patterns", "return_stages", "freeze_befor", "stop_after")

# "all", or comma-separated names whose PaddleClas built-in is kept.
KEEP_BUILTIN_ENV = "REXNET_PLUGIN_KEEP_BUILTIN"
# The built-in's BatchNorm momentum argument, which it (like the official
# code) accepts and never uses.
_BUILTIN_BN_MOMENTUM = 0.9

_model_classes: dict[type, type] = {}  # a tree's TheseusLayer -> our subclass of it
_replaced_builtins: dict[str, list[str]] = {}  # arch module name -> names it had
_announced: set[str] = set()  # arch module names whose replacement was logged
_MISSING = object()


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
        source = ("the checkpoint PaddleClas passed to set_state_dict (Global.pretrained_model "
                  "or Global.checkpoints, read by PaddleClas's own paddle.load)")
        try:  # official or timm names too; an error if it is not ReXNet at all
            state = canonical_state(state, source)[0]
        except NotReXNetError as error:
            raise NotReXNetError(f"{error}\n  In PaddleClas: point Global.pretrained_model at a "
                                 f"{self.variant_name} checkpoint, or use Arch.pretrained, which "
                                 f"reads files without unpickling code.") from None
        own = self.state_dict()
        extra = [k for k in state if k not in own]
        if extra and all(k in state for k in own):
            # A complete checkpoint plus tensors this model lacks: a loss's
            # parameters saved by PaddleClas, or layers cut by stop_after.
            _log.info("%s: ignoring %d checkpoint tensors it has no place for (%s%s)",
                      self.variant_name, len(extra), ", ".join(extra[:3]),
                      " ..." if len(extra) > 3 else "")
            state = {k: v for k, v in state.items() if k in own}
        try:
            return check_state_dict(self, state, source, skip_head=self.skip_head)
        except WeightsError as error:
            _raise_with_hint(error, self, state)

    def _head_hint(self, state: dict | None = None) -> str:
        """How to fix a classifier mismatch in a PaddleClas config."""
        weights = [k for k in self.state_dict() if k.startswith("output.") and k.endswith(".weight")]
        classes = None
        if state is not None and weights and weights[-1] in state:
            shape = list(getattr(state[weights[-1]], "shape", []))
            classes = shape[0] if shape else None
        use_it = (f"set Arch.class_num: {classes} to use the checkpoint's classifier, or "
                  if classes else "set Arch.class_num to the checkpoint's class count to use "
                                  "its classifier, or ")
        return (f"\n  In PaddleClas: {use_it}add Arch.skip_head: True (-o Arch.skip_head=True) "
                f"to train a new {self.class_num}-class head on top of the checkpoint's backbone.")


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


def kept_builtins() -> set[str]:
    """Names whose PaddleClas built-in the user keeps (REXNET_PLUGIN_KEEP_BUILTIN)."""
    value = os.environ.get(KEEP_BUILTIN_ENV, "").strip()
    if value.lower() == "all":
        return set(PADDLECLAS_BUILTIN_NAMES)
    names = {n.strip() for n in value.split(",") if n.strip()}
    unknown = names - set(PADDLECLAS_BUILTIN_NAMES)
    if unknown:
        _log.warning("%s=%s: %s %s no PaddleClas built-in; the names with one are %s "
                     "(or 'all').", KEEP_BUILTIN_ENV, value, ", ".join(sorted(unknown)),
                     "is" if len(unknown) == 1 else "are", ", ".join(PADDLECLAS_BUILTIN_NAMES))
    return names & set(PADDLECLAS_BUILTIN_NAMES)


_FACTORY_ARGUMENTS = """\
kwargs: ReXNet's (class_num, dropout_ratio, drop_path_rate, depth_mult,
    use_se, se_ratio, input_ch, final_ch, weight_init ...), ``bn_momentum``
    (accepted and unused, as by PaddleClas's built-in and the official code),
    the TheseusLayer options (return_patterns, return_stages, freeze_befor,
    stop_after) and ``skip_head``: load a checkpoint whose classifier has
    another class count, keeping this model's new head (fine-tuning).
    ``pretrained``: False, True (the variant's default weights; PaddleClas's
    own file under PaddleClas's names), a source name, a local path or a
    URL (see rexnet_plugin.weights.load_pretrained).
"""


def make_factory(name: str, arch_module):
    """``ReXNet_1_0(pretrained=False, use_ssld=False, **kwargs)`` for one tree."""
    variant = VARIANTS[name]
    cls = model_class(arch_module.TheseusLayer)
    builtin_name = name in PADDLECLAS_BUILTIN_NAMES

    def factory(pretrained=False, use_ssld=False, skip_head=False,
                bn_momentum=_BUILTIN_BN_MOMENTUM, **kwargs):
        if use_ssld and pretrained is True:
            raise WeightsError(
                f"{name}: pretrained=True with use_ssld=True asks for PaddleClas SSLD weights; "
                f"none exist for ReXNet (PaddleClas's built-in {name} fails the same way, with "
                f"a download error). Remove Arch.use_ssld, or set it to False.")
        if bn_momentum != _BUILTIN_BN_MOMENTUM:
            _log.warning("%s: bn_momentum=%s has no effect: PaddleClas's built-in ReXNet and the "
                         "official code accept it and never use it; BatchNorm keeps momentum 0.9.",
                         name, bn_momentum)
        if pretrained is True and builtin_name:
            pretrained = "paddleclas"  # what the built-in's pretrained=True loads
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
    factory.__doc__ = (f"{KINDS[variant.kind]} x{variant.width_mult} from rexnet-plugin, as a "
                       f"{arch_module.__name__} TheseusLayer.\n\n" + _FACTORY_ARGUMENTS)
    factory.rexnet_plugin = True
    return factory


def register(arch_module) -> None:
    """Entry point of group ``paddleclas.plugins``: put every variant in
    ``arch_module`` (``ppcls.arch`` or ``paddleclas.ppcls.arch``).

    All or nothing: if anything fails, every name gets back what it had
    (PaddleClas's built-in, or nothing), the error is raised, and the
    autoload hook logs it once.
    """
    backbone = arch_module.backbone
    keep = kept_builtins()
    names = [n for n in VARIANTS if n not in keep]
    exported = getattr(backbone, "__all__", None)
    saved = {(target, n): vars(target).get(n, _MISSING)
             for target in (arch_module, backbone) for n in names}
    saved_all = list(exported) if isinstance(exported, list) else None
    saved_getattr = vars(arch_module).get("__getattr__", _MISSING)
    try:
        replaced = [n for n in names if saved[(arch_module, n)] is not _MISSING
                    and not getattr(saved[(arch_module, n)], "rexnet_plugin", False)]
        for name in names:
            factory = make_factory(name, arch_module)
            setattr(arch_module, name, factory)
            setattr(backbone, name, factory)
        if saved_all is not None:
            exported.extend(n for n in names if n not in exported)
        _install_name_check(arch_module)
    except BaseException:
        for (target, name), value in saved.items():
            if value is _MISSING:
                vars(target).pop(name, None)
            else:
                setattr(target, name, value)
        if saved_all is not None:
            exported[:] = saved_all
        if saved_getattr is _MISSING:
            vars(arch_module).pop("__getattr__", None)
        else:
            arch_module.__getattr__ = saved_getattr
        raise
    if arch_module.__name__ not in _replaced_builtins:
        _replaced_builtins[arch_module.__name__] = replaced
    _log.debug("registered %d ReXNet variants in %s", len(names), arch_module.__name__)


def _announce_replacement(arch_module) -> None:
    """Log once per tree, at the first build, what replaced what and how to keep it."""
    module_name = arch_module.__name__
    replaced = _replaced_builtins.get(module_name)
    if not replaced or module_name in _announced:
        return
    _announced.add(module_name)
    message = (f"rexnet-plugin: {', '.join(replaced)} in {module_name} build rexnet-plugin's "
               f"ReXNet instead of PaddleClas's built-in (same arguments, weights, outputs and "
               f"initialisation). To keep PaddleClas's own: {KEEP_BUILTIN_ENV}="
               f"{replaced[0]}[,...] for some names, {KEEP_BUILTIN_ENV}=all for every one.")
    host_logger = sys.modules.get(module_name.rsplit(".", 1)[0] + ".utils.logger")
    if host_logger is not None and getattr(host_logger, "_logger", None) is not None:
        host_logger.info(message)  # PaddleClas's log: rank 0 only, and into its log file
    else:
        _log.info(message)


class UnknownModelError(AttributeError):
    """``Arch.name`` names no model. Python would append its own "Did you
    mean" guess (from ``name`` and ``obj``), which can contradict ours."""

    name = property(lambda self: None, lambda self, value: None)
    obj = property(lambda self: None, lambda self, value: None)


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
            valid = [n for n in VARIANTS if hasattr(arch_module, n)]
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise UnknownModelError(
                f"Unknown model {name!r} (Arch.name) in {arch_module.__name__}.{hint} "
                f"The ReXNet models are: {', '.join(valid)}")
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {arch_module.__name__!r} has no attribute {name!r}")

    __getattr__.rexnet_plugin = True
    arch_module.__getattr__ = __getattr__
