"""Run plugins when a host toolkit's module is first imported.

PaddleClas and PaddleDetection have no plugin discovery, and their tools put
the toolkit's checkout on ``sys.path`` only at run time. So the wheel installs
``rexnet_plugin_autoload.pth``, which calls ``install()`` at interpreter
start-up. ``install()`` only adds a small ``sys.meta_path`` finder: nothing
heavy is imported until a watched module is imported.

When a watched module (a key of ``TRIGGERS``) has finished executing, every
entry point of its group(s) is loaded and called with the module object::

    [project.entry-points."paddleclas.plugins"]
    my_models = "my_package.ppcls:register"     # register(arch_module)

Any package can use these groups; nothing here is specific to ReXNet. A
package can also watch more modules: ``install({"host.module": "host.plugins"})``
(from its own .pth) adds to the triggers already installed, whatever the
order the .pth files run in; nothing replaces anything. A plugin that fails
logs one warning and the host carries on without it.
``REXNET_PLUGIN_AUTOLOAD=0`` (or false, off, no) turns the whole mechanism off.

This module imports only ``os`` and ``sys`` at start-up; keep it that way
(the README quotes its cost on ``python -c pass``).
"""

from __future__ import annotations

import os
import sys

ENV_SWITCH = "REXNET_PLUGIN_AUTOLOAD"
# Values that turn it off, case and spaces ignored; rexnet_plugin_autoload.pth
# repeats them (it cannot import this module before deciding).
OFF_VALUES = ("0", "false", "off", "no")

# Watched module -> entry-point group whose plugins run once it has executed.
TRIGGERS = {
    "ppcls.arch": "paddleclas.plugins",             # a PaddleClas source checkout
    "paddleclas.ppcls.arch": "paddleclas.plugins",  # the paddleclas pip wheel
    # PaddleDetection's tools import the whole package before load_config.
    "ppdet": "ppdet.plugins",
    # PaddleClas's deploy predictor (deploy/python/*.py import it from the wheel).
    "paddleclas.deploy.utils.predictor": "paddleclas.deploy.plugins",
    # PaddleX 3: its inference models package, once its own bindings are made
    # (`import paddlex` imports it; so do create_model and create_pipeline).
    "paddlex.inference.models": "paddlex.plugins",
    # ... and its training modules (trainer, evaluator, exporter by model name).
    "paddlex.modules": "paddlex.modules.plugins",
    # ... and its serving app (paddlex --serve imports it before creating the app).
    "paddlex.inference.serving.basic_serving": "paddlex.serving.plugins",
}

_failed_plugins: set = set()  # entry points that already logged their warning


def enabled() -> bool:
    """False when REXNET_PLUGIN_AUTOLOAD is 0, false, off or no (the .pth then
    imports nothing at all)."""
    return os.environ.get(ENV_SWITCH, "").strip().lower() not in OFF_VALUES


def _logger():
    import logging
    return logging.getLogger("rexnet_plugin.autoload")


def _entry_points(group: str):
    from importlib.metadata import entry_points
    found = entry_points()
    if hasattr(found, "select"):  # Python 3.10+
        return list(found.select(group=group))
    return list(found.get(group, []))  # Python 3.9


def run_plugins(group: str, module) -> None:
    """Call every entry point of ``group`` with ``module``; never raise."""
    try:
        plugins = _entry_points(group)
    except Exception as exc:  # a broken distribution's metadata
        _logger().warning("rexnet-plugin autoload: cannot list the entry points of "
                          "group %r (%s: %s); no plugins were loaded for %s.",
                          group, type(exc).__name__, exc, module.__name__)
        return
    seen = set()
    for ep in plugins:
        key = (ep.group, ep.name, ep.value)
        if key in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(key)
        try:
            ep.load()(module)
        except Exception as exc:
            if key in _failed_plugins:
                _logger().debug("plugin %s failed again on %s: %r", ep.value, module.__name__, exc)
                continue
            _failed_plugins.add(key)
            _logger().warning(
                "rexnet-plugin autoload: plugin %r (%s, entry-point group %r) failed "
                "on %s and was skipped: %s: %s. The host continues without it; set "
                "%s=0 to turn plugin autoloading off.",
                ep.name, ep.value, group, module.__name__, type(exc).__name__, exc,
                ENV_SWITCH)


class _RunPluginsAfterExec:
    """Wraps a module's loader: execute the module, then run the plugins."""

    def __init__(self, loader, groups):
        self.loader = loader
        self.groups = tuple(groups)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        # Put the real loader back, so the module looks untouched afterwards.
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        for group in self.groups:
            run_plugins(group, module)

    def __getattr__(self, name):  # get_source, is_package, resource readers ...
        return getattr(self.loader, name)


class TriggerFinder:
    """A ``sys.meta_path`` finder that only ever acts on the watched modules.

    ``triggers`` maps a module name to the entry-point groups run once it
    has executed (several packages may watch the same module). It asks the
    other finders for the real spec and wraps its loader; it never imports
    anything itself.
    """

    def __init__(self, triggers: dict[str, str] | None = None):
        self.triggers: dict[str, list[str]] = {}
        self.add(triggers or {})

    def add(self, triggers: dict[str, str]) -> None:
        """Watch more modules, or run more groups for a watched one."""
        for name, group in triggers.items():
            groups = self.triggers.setdefault(name, [])
            if group not in groups:
                groups.append(group)

    def find_spec(self, fullname, path=None, target=None):
        groups = self.triggers.get(fullname)
        if not groups:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # namespace package or legacy loader: leave it alone
        spec.loader = _RunPluginsAfterExec(spec.loader, groups)
        return spec

    def __repr__(self):
        return f"<rexnet_plugin autoload TriggerFinder watching {sorted(self.triggers)}>"


def installed_finder() -> TriggerFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, TriggerFinder)), None)


def install(triggers: dict[str, str] | None = None) -> TriggerFinder | None:
    """Add the finder (once) watching ``TRIGGERS`` plus ``triggers``; a later
    call adds its ``triggers`` to the installed finder. Returns the finder, or
    None when autoload is switched off.

    A newly watched module that is already imported (fully executed) gets
    the plugins of its new groups run right away.
    """
    if not enabled():
        return None
    finder = installed_finder()
    if finder is None:
        finder = TriggerFinder()
        sys.meta_path.insert(0, finder)
    new: dict[str, list[str]] = {}
    for name, group in [*TRIGGERS.items(), *(triggers or {}).items()]:
        if group not in finder.triggers.get(name, ()) and group not in new.get(name, ()):
            new.setdefault(name, []).append(group)
    for name, groups in new.items():
        for group in groups:
            finder.add({name: group})
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if module is not None and not getattr(spec, "_initializing", False):
            for group in groups:
                run_plugins(group, module)
    return finder
