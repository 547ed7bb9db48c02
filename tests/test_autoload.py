"""The start-up hook, through real interpreters: the installed .pth, the
meta-path finder, entry-point discovery, the off switch and failure handling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ppcls_support import ROOT, subprocess_env
from ppcls_support import needs_paddleclas_wheel

PTH = ROOT / "rexnet_plugin_autoload.pth"


def run_python(code: str, env: dict | None = None, args=(), cwd=None):
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)],
                          env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def make_plugin_dist(where: Path, name: str, group: str, target: str, module_code: str):
    """A minimal installed distribution on ``where``: one module, one entry point."""
    module = target.split(":")[0]
    (where / f"{module}.py").write_text(textwrap.dedent(module_code))
    info = where / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")


def test_pth_is_installed_and_imports_nothing_heavy():
    result = run_python("""
        import sys
        from rexnet_plugin.integrations import autoload
        print(autoload.installed_finder() is not None)
        print(sorted(m for m in sys.modules if m.split('.')[0] in
                     ('paddle', 'numpy', 'ppcls', 'paddleclas', 'importlib_metadata')
                     or m in ('rexnet_plugin.model', 'rexnet_plugin.zoo', 'importlib.metadata')))
    """)
    assert result.returncode == 0, result.stderr
    installed, heavy = result.stdout.split("\n")[:2]
    assert installed == "True", "the .pth did not install the hook: is the package installed?"
    assert heavy == "[]"


def test_pth_line_never_breaks_startup(tmp_path):
    """The .pth line, run against a broken package: one line on stderr, exit 0."""
    broken = tmp_path / "rexnet_plugin" / "integrations"
    broken.mkdir(parents=True)
    (tmp_path / "rexnet_plugin" / "__init__.py").write_text("")
    (broken / "__init__.py").write_text("")
    (broken / "autoload.py").write_text("raise RuntimeError('simulated breakage')\n")
    line = PTH.read_text().strip()
    assert line.startswith("import ") and "\n" not in line  # site.py runs it as one line
    result = run_python(line + "\nprint('host ran')", args=("-S",), cwd=tmp_path,
                        env=subprocess_env(PYTHONPATH=str(tmp_path)))
    assert result.returncode == 0
    assert result.stdout.strip() == "host ran"
    assert result.stderr.strip().splitlines() == [
        "rexnet-plugin: autoload hook disabled (RuntimeError: simulated breakage)"]


@needs_paddleclas_wheel
def test_registration_through_real_autoload():
    result = run_python("""
        import paddleclas.ppcls.arch as arch
        from paddleclas.ppcls.arch.backbone.base.theseus_layer import TheseusLayer
        print(arch.ReXNet_1_5.__module__, arch.ReXNetLite_1_0.__module__)
        print(arch.backbone.ReXNet_1_5 is arch.ReXNet_1_5, 'ReXNetLite_2_0' in arch.backbone.__all__)
        print(type(arch.__loader__).__name__, type(arch.__spec__.loader).__name__)
        for _ in range(2):
            model = arch.build_model({'Arch': {'name': 'ReXNet_1_0', 'class_num': 4}})
        print(isinstance(model, TheseusLayer))
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    plugin = "rexnet_plugin.integrations.paddleclas"
    assert f"{plugin} {plugin}" in lines
    assert "True True" in lines
    assert "SourceFileLoader SourceFileLoader" in lines  # the real loader is put back
    assert lines[-1] == "True"
    announced = [line for line in lines if "instead of" in line and "rexnet-plugin" in line]
    assert len(announced) == 1, result.stdout  # the replacement is logged once
    assert "ReXNet_1_0, ReXNet_1_3, ReXNet_1_5, ReXNet_2_0, ReXNet_3_0" in announced[0]


@needs_paddleclas_wheel
def test_switched_off_then_installed_after_the_trigger_module():
    """Off: PaddleClas's own ReXNet and no finder. install() later runs the plugins
    of a trigger module that is already imported."""
    result = run_python("""
        import os
        import paddleclas.ppcls.arch as arch
        from rexnet_plugin.integrations import autoload
        print(autoload.installed_finder(), arch.ReXNet_1_0.__module__, hasattr(arch, 'ReXNetLite_1_0'))
        os.environ['REXNET_PLUGIN_AUTOLOAD'] = '1'
        autoload.install()
        print(arch.ReXNetLite_1_0.__module__)
    """, env=subprocess_env(REXNET_PLUGIN_AUTOLOAD="0"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "None", "paddleclas.ppcls.arch.backbone.model_zoo.rexnet", "False",
        "rexnet_plugin.integrations.paddleclas"]


def test_broken_plugin_logs_one_warning_and_the_host_runs(tmp_path):
    make_plugin_dist(tmp_path, "broken_plugin", "paddleclas.plugins", "broken_plugin:register",
                     "def register(module):\n    raise ImportError('needs a missing package')\n")
    result = run_python("""
        import paddleclas.ppcls.arch as arch
        import importlib
        from rexnet_plugin.integrations import autoload
        autoload.run_plugins('paddleclas.plugins', arch)  # a second trigger: no new warning
        model = arch.build_model({'Arch': {'name': 'ReXNet_1_0', 'class_num': 2}})
        print('host ok', type(model).__module__)
    """, env=subprocess_env(PYTHONPATH=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "host ok rexnet_plugin.integrations.paddleclas" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "broken_plugin" in line]
    assert len(warnings) == 1, result.stderr
    assert "ImportError: needs a missing package" in warnings[0]
    assert "REXNET_PLUGIN_AUTOLOAD=0" in warnings[0]


def test_any_package_can_use_a_trigger_group(tmp_path):
    """A second plugin package gets the module object of its trigger."""
    (tmp_path / "ppdet").mkdir()
    (tmp_path / "ppdet" / "__init__.py").write_text("HOST = 'fake ppdet'\n")
    make_plugin_dist(tmp_path, "probe_plugin", "ppdet.plugins", "probe_plugin:register",
                     "def register(module):\n    module.SEEN_BY_PLUGIN = module.HOST\n")
    result = run_python("""
        import ppdet
        print(ppdet.SEEN_BY_PLUGIN)
    """, env=subprocess_env(PYTHONPATH=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fake ppdet"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="timing runs on POSIX only")
def test_startup_cost_command_runs():
    """The README's start-up measurement script runs (its figures are not asserted)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "startup_cost.py"),
                             "--runs", "3"], capture_output=True, text=True, timeout=300,
                            env=subprocess_env())
    assert result.returncode == 0, result.stderr
    assert "hook on" in result.stdout and "hook off" in result.stdout


@pytest.mark.parametrize("other_pth", ["aaa_other_plugin.pth", "zzz_other_plugin.pth"])
def test_a_second_packages_triggers_add_to_ours_whatever_the_pth_order(tmp_path, other_pth):
    """Two .pth files in one site dir, the other package's sorting first or
    last: its install(triggers) adds to the defaults, and both plugins run."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "rexnet_plugin_autoload.pth").write_text(PTH.read_text())
    (site_dir / other_pth).write_text(
        "import rexnet_plugin.integrations.autoload as a; "
        "a.install({'otherhost': 'otherhost.plugins', 'ppdet': 'other.ppdet.plugins'})\n")
    # Fake hosts: `ppdet` (one of our default triggers) and the other package's host.
    for host in ("ppdet", "otherhost"):
        (tmp_path / host).mkdir()
        (tmp_path / host / "__init__.py").write_text("SEEN = []\n")
    make_plugin_dist(tmp_path, "ours_probe", "ppdet.plugins", "ours_probe:register",
                     "def register(module):\n    module.SEEN.append('default group')\n")
    make_plugin_dist(tmp_path, "their_probe", "otherhost.plugins", "their_probe:register",
                     "def register(module):\n    module.SEEN.append('their group')\n")
    make_plugin_dist(tmp_path, "their_ppdet", "other.ppdet.plugins", "their_ppdet:register",
                     "def register(module):\n    module.SEEN.append('their ppdet group')\n")
    # -S: no site-packages (so only these distributions are found); the site
    # dir's .pth files then run in site.addsitedir's (sorted) order.
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]))
    result = run_python(f"""
        import site
        site.addsitedir({str(site_dir)!r})
        import ppdet, otherhost
        from rexnet_plugin.integrations import autoload
        print(ppdet.SEEN, otherhost.SEEN)
        print(autoload.installed_finder().triggers['ppcls.arch'])
    """, env=env, args=("-S",))
    assert result.returncode == 0, result.stderr
    seen, ppcls = result.stdout.splitlines()[-2:]
    assert seen == "['default group', 'their ppdet group'] ['their group']"
    assert ppcls == "['paddleclas.plugins']"


def test_install_twice_adds_nothing_twice():
    result = run_python("""
        from rexnet_plugin.integrations import autoload
        first = autoload.install({'x.y': 'x.plugins'})
        second = autoload.install({'x.y': 'x.plugins'})
        print(first is second, first.triggers['x.y'], len(first.triggers) == len(autoload.TRIGGERS) + 1)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "True ['x.plugins'] True"


def test_every_off_value_turns_the_pth_and_the_hook_off(monkeypatch):
    from rexnet_plugin.integrations import autoload
    for value in ("0", "false", "OFF", " 0", "no "):
        monkeypatch.setenv("REXNET_PLUGIN_AUTOLOAD", value)
        assert not autoload.enabled() and autoload.install() is None, repr(value)
    result = run_python("""
        from rexnet_plugin.integrations import autoload
        print(autoload.installed_finder() is None)
    """, env=subprocess_env(REXNET_PLUGIN_AUTOLOAD="no "))  # the .pth line itself
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def test_pth_and_module_agree_on_the_off_values():
    from rexnet_plugin.integrations import autoload
    assert str(autoload.OFF_VALUES).replace("'", '"') in PTH.read_text()


def test_the_hook_adds_only_its_own_modules_at_startup():
    """The hook imported typing (and re, enum), ~9 ms at every start-up."""
    probe = "import sys; print(' '.join(sorted(sys.modules)))"
    on = run_python(probe).stdout.split()
    off = run_python(probe, env=subprocess_env(REXNET_PLUGIN_AUTOLOAD="0")).stdout.split()
    added = sorted(set(on) - set(off))
    assert [m for m in added if not m.startswith("rexnet_plugin")] in ([], ["__future__"]), added
