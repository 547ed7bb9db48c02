"""Run entry-point plugins when a host toolkit's module is first imported (the hosts have no
plugin discovery). ``rexnet_plugin_autoload.pth`` calls ``install()`` at start-up, which only
adds a ``sys.meta_path`` finder; this module imports only ``os`` and ``sys``: keep it so."""

from __future__ import annotations

import os
import sys

ENV_SWITCH = "REXNET_PLUGIN_AUTOLOAD"
OFF_VALUES = ("0", "false", "off", "no")  # rexnet_plugin_autoload.pth repeats them

# Watched module -> entry-point group whose plugins get the module once it has executed.
TRIGGERS = {
    "ppcls.arch": "paddleclas.plugins",             # a PaddleClas source checkout
    "paddleclas.ppcls.arch": "paddleclas.plugins",  # the paddleclas wheel
    "ppdet": "ppdet.plugins",  # its tools import the package before load_config
    "paddleclas.deploy.utils.predictor": "paddleclas.deploy.plugins",
    "paddlex.inference.models": "paddlex.plugins",  # `import paddlex` imports it
    "paddlex.modules": "paddlex.modules.plugins",   # training
    "paddlex.inference.serving.basic_serving": "paddlex.serving.plugins",
}

_failed_plugins: set = set()  # entry points that already logged their warning


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip().lower() not in OFF_VALUES


def run_plugins(group: str, module) -> None:
    """Call every entry point of ``group`` with ``module``; a failure logs one warning."""
    import logging
    from importlib.metadata import entry_points
    log = logging.getLogger(__name__)
    try:
        found = entry_points()
        plugins = found.select(group=group) if hasattr(found, "select") else found.get(group, [])
    except Exception as exc:  # a broken distribution's metadata must not break the host
        log.warning("rexnet-plugin autoload: cannot list entry points of group %r (%s: %s)",
                    group, type(exc).__name__, exc)
        return
    for ep in dict.fromkeys(plugins):  # once, if a distribution is twice on sys.path
        try:
            ep.load()(module)
        except Exception as exc:
            if ep not in _failed_plugins:
                _failed_plugins.add(ep)
                log.warning("rexnet-plugin autoload: plugin %r (%s, entry-point group %r) "
                            "failed on %s and was skipped: %s: %s. The host continues "
                            "without it; set %s=0 to turn plugin autoloading off.", ep.name,
                            ep.value, group, module.__name__, type(exc).__name__, exc, ENV_SWITCH)


class _RunPluginsAfterExec:
    """Wraps a module's loader: execute the module, then run the plugins."""

    def __init__(self, loader, groups):
        self.loader, self.groups = loader, tuple(groups)

    def exec_module(self, module):
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # look untouched
        for group in self.groups:
            run_plugins(group, module)

    def __getattr__(self, name):  # create_module, get_source, resource readers ...
        return getattr(self.loader, name)


class TriggerFinder:
    """A meta-path finder that wraps the loader of the watched modules only."""

    def __init__(self):
        self.triggers: dict[str, list[str]] = {}  # module -> groups, in order

    def find_spec(self, fullname, path=None, target=None):
        groups = self.triggers.get(fullname)
        if not groups:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        else:
            return None
        if hasattr(spec.loader, "exec_module"):  # not a namespace package
            spec.loader = _RunPluginsAfterExec(spec.loader, groups)
        return spec


def installed_finder() -> TriggerFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, TriggerFinder)), None)


def install(triggers: dict[str, str] | None = None) -> TriggerFinder | None:
    """Watch ``TRIGGERS`` plus ``triggers`` (from any package's .pth, in any order); a module
    already imported gets its new groups' plugins now. None when autoload is off."""
    if not enabled():
        return None
    finder = installed_finder()
    if finder is None:
        finder = TriggerFinder()
        sys.meta_path.insert(0, finder)
    for name, group in [*TRIGGERS.items(), *(triggers or {}).items()]:
        groups = finder.triggers.setdefault(name, [])
        if group in groups:
            continue
        groups.append(group)
        module = sys.modules.get(name)
        if module is not None and not getattr(getattr(module, "__spec__", None),
                                             "_initializing", False):
            run_plugins(group, module)
    return finder
