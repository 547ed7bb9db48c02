"""ReXNet in PaddleClas with no fork: ``Arch.name: ReXNet_1_5`` just works (docs/paddleclas.md).
One factory per variant in ``ppcls.arch`` and its backbone, building TheseusLayers of that tree."""

from __future__ import annotations

import difflib
import functools
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
from ..zoo import PADDLECLAS_BUILTIN_NAMES, VARIANTS

_log = logging.getLogger(__name__)

THESEUS_OPTIONS = ("return_patterns", "return_stages", "freeze_befor", "stop_after")
KEEP_BUILTIN_ENV = "REXNET_PLUGIN_KEEP_BUILTIN"  # "all", or names whose built-in is kept
_BUILTIN_BN_MOMENTUM = 0.9  # accepted and never used, by the built-in and the official code

_unannounced: dict[str, list[str]] = {}  # arch module -> built-ins replaced, logged at 1st build


class _TheseusMixin:
    """What ReXNet gains as a PaddleClas TheseusLayer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.variant_name, self.skip_head = None, False
        # Last on purpose: stop_after replaces every later sublayer with an
        # Identity, so "stop_after: features[k]" returns that feature map.
        self.flatten = nn.Flatten()

    @property
    def stages_pattern(self) -> list[str]:
        """TheseusLayer patterns of the stride 4, 8, 16 and 32 outputs."""
        return [re.sub(r"\.(\d+)", r"[\1]", info["module"]) for info in self.stage_info]

    def forward_head(self, x, pre_logits: bool = False):
        x = self.avg_pool(x)  # as ReXNet.forward_head, with layers only (see flatten)
        if not pre_logits and self.output is not None:
            x = self.output(x)
        return self.flatten(x)

    def freeze_befor(self, layer_name: str) -> bool:
        """A forward hook; TheseusLayer's wrapper would rename the parameters."""
        found = self._parse_pattern(layer_name, self)
        if not found:
            _log.warning("freeze_befor: no layer named %r in %s; nothing was frozen. Stage "
                         "names: %s", layer_name, self.variant_name, self.stages_pattern)
            return False
        found[-1]["layer"].register_forward_post_hook(
            lambda layer, inputs, output: setattr(output, "stop_gradient", True) or output)
        return True

    def set_state_dict(self, state_dict, use_structured_name: bool = True):
        """Check fully first: plain Paddle only warns about a shape mismatch."""
        if not use_structured_name:
            return super().set_state_dict(state_dict, use_structured_name)
        state_dict = self._checked_state(state_dict)
        with warnings.catch_warnings():  # skip_head: the new classifier is meant
            warnings.filterwarnings("ignore", message=r"Skip loading for output\.")
            return super().set_state_dict(state_dict, use_structured_name)

    set_dict = load_dict = set_state_dict

    def _checked_state(self, state: dict) -> dict:
        source = ("the checkpoint PaddleClas passed to set_state_dict (Global.pretrained_model "
                  "or Global.checkpoints, read by PaddleClas's own paddle.load)")
        try:
            state = canonical_state(state, source)[0]
        except NotReXNetError as error:
            raise NotReXNetError(f"{error}\n  In PaddleClas: point Global.pretrained_model at a "
                                 f"{self.variant_name} checkpoint, or use Arch.pretrained, which "
                                 f"reads files without unpickling code.") from None
        own = self.state_dict()
        if any(k not in own for k in state) and all(k in state for k in own):
            # Extra tensors (a loss's parameters, layers cut by stop_after): ignore.
            state = {k: v for k, v in state.items() if k in own}
        try:
            return check_state_dict(self, state, source, skip_head=self.skip_head)
        except WeightsError as error:
            _raise_with_hint(error, self, state)


def _raise_with_hint(error: WeightsError, model, state: dict | None = None):
    """Re-raise ``error`` with the PaddleClas fix when only the classifier differs."""
    if isinstance(error, WrongVariantError) or "output." not in str(error):
        raise error
    head = [k for k in model.state_dict() if re.fullmatch(r"output\.\d+\.weight", k)][-1:]
    classes = (state[head[0]].shape[0] if state and head and head[0] in state
               else "<the checkpoint's class count>")
    raise type(error)(f"{error}\n  In PaddleClas: set Arch.class_num: {classes} to use the "
                      f"checkpoint's classifier, or add Arch.skip_head: True (-o "
                      f"Arch.skip_head=True) to train a new {model.class_num}-class head on "
                      f"top of the checkpoint's backbone.") from None


@functools.lru_cache(maxsize=None)
def model_class(theseus_layer: type) -> type:
    """ReXNet as a subclass of ``theseus_layer``: one class per PaddleClas tree."""
    return type("ReXNetTheseusLayer", (_TheseusMixin, ReXNet, theseus_layer), {
        "__module__": __name__,
        "_parse_pattern": staticmethod(sys.modules[theseus_layer.__module__].parse_pattern_str)})


def kept_builtins() -> set[str]:
    value, builtins = os.environ.get(KEEP_BUILTIN_ENV, "").strip(), set(PADDLECLAS_BUILTIN_NAMES)
    names = builtins if value.lower() == "all" else {n.strip() for n in value.split(",")} - {""}
    if names - builtins:
        _log.warning("%s=%s: %s have no PaddleClas built-in; the names with one are %s "
                     "(or 'all').", KEEP_BUILTIN_ENV, value, ", ".join(sorted(names - builtins)),
                     ", ".join(PADDLECLAS_BUILTIN_NAMES))
    return names & builtins


def make_factory(name: str, arch_module):
    """``name(pretrained=False, use_ssld=False, skip_head=False, **kwargs)`` for one tree:
    ReXNet's and TheseusLayer's keyword arguments; ``pretrained`` as in load_pretrained."""
    cls = model_class(arch_module.TheseusLayer)

    def factory(pretrained=False, use_ssld=False, skip_head=False,
                bn_momentum=_BUILTIN_BN_MOMENTUM, **kwargs):
        if use_ssld and pretrained is True:
            raise WeightsError(
                f"{name}: pretrained=True with use_ssld=True asks for PaddleClas SSLD weights; "
                f"none exist for ReXNet (PaddleClas's built-in {name} fails the same way, with "
                f"a download error). Remove Arch.use_ssld, or set it to False.")
        if bn_momentum != _BUILTIN_BN_MOMENTUM:
            _log.warning("%s: bn_momentum=%s has no effect (as in PaddleClas's built-in and "
                         "the official code); BatchNorm keeps momentum 0.9.", name, bn_momentum)
        if pretrained is True and name in PADDLECLAS_BUILTIN_NAMES:
            pretrained = "paddleclas"  # what the built-in's pretrained=True loads
        theseus = {k: kwargs.pop(k) for k in THESEUS_OPTIONS if k in kwargs}
        model = cls(**VARIANTS[name].arch, **kwargs)
        model.variant_name = name
        model.skip_head = bool(skip_head) or not model.class_num  # for set_state_dict too
        if pretrained not in (False, None):
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
    factory.__doc__ = f"{name} from rexnet-plugin, a {arch_module.__name__} TheseusLayer."
    factory.rexnet_plugin = True
    return factory


def register(arch_module) -> None:
    """Entry point of ``paddleclas.plugins``. All or nothing: every factory is made
    before any name changes."""
    factories = {n: make_factory(n, arch_module) for n in VARIANTS if n not in kept_builtins()}
    previous = {n: vars(arch_module).get(n) for n in factories}  # built-in, ours or None
    replaced = [n for n, f in previous.items() if f and not getattr(f, "rexnet_plugin", False)]
    for name, factory in factories.items():
        setattr(arch_module, name, factory)
        setattr(arch_module.backbone, name, factory)
    arch_module.backbone.__all__.extend(n for n in factories
                                        if n not in arch_module.backbone.__all__)
    _install_name_check(arch_module)
    if replaced:
        _unannounced[arch_module.__name__] = replaced


def _announce_replacement(arch_module) -> None:
    """Log once per tree, at the first build, what replaced what and how to keep it."""
    module_name = arch_module.__name__
    replaced = _unannounced.pop(module_name, None)
    if replaced is None:
        return
    message = (f"rexnet-plugin: {', '.join(replaced)} in {module_name} build rexnet-plugin's "
               f"ReXNet instead of PaddleClas's built-in (same arguments, weights, outputs and "
               f"initialisation). To keep PaddleClas's own: {KEEP_BUILTIN_ENV}="
               f"{replaced[0]}[,...] for some names, {KEEP_BUILTIN_ENV}=all for every one.")
    host_log = sys.modules.get(module_name.rsplit(".", 1)[0] + ".utils.logger")
    # PaddleClas's log once it is set up: rank 0 only, and into its log file.
    (host_log if getattr(host_log, "_logger", None) is not None else _log).info(message)


class UnknownModelError(AttributeError):
    """Unknown ``Arch.name``; the properties stop Python adding its own guess."""

    name = property(lambda self: None, lambda self, value: None)
    obj = property(lambda self: None, lambda self, value: None)


def _install_name_check(arch_module) -> None:
    """A module ``__getattr__`` (PEP 562: only for missing names) listing the variants."""
    previous = vars(arch_module).get("__getattr__")
    if getattr(previous, "rexnet_plugin", False):
        return

    def __getattr__(name: str):
        if "rexnet" in name.lower() and not name.startswith("__"):
            valid = [n for n in VARIANTS if hasattr(arch_module, n)]
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise UnknownModelError(f"Unknown model {name!r} (Arch.name) in "
                                    f"{arch_module.__name__}.{hint} The ReXNet models are: "
                                    f"{', '.join(valid)}")
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {arch_module.__name__!r} has no attribute {name!r}")

    __getattr__.rexnet_plugin = True
    arch_module.__getattr__ = __getattr__
