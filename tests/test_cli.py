"""The command line itself: help works everywhere without loading a framework, and
bad arguments get one clear line and exit code 2."""

import os
import shutil
import subprocess
import sys

import pytest

from rexnet_plugin.cli import build_parser, main

COMMANDS = [a.dest for a in build_parser()._subparsers._group_actions[0]._choices_actions]


def test_every_help_works_without_paddle_or_the_unix_only_resource_module():
    """One interpreter for all of them: Windows has no `resource`, and help
    must not import paddle (seconds of start-up)."""
    code = ("import contextlib, io, sys\n"
            "sys.modules['resource'] = None\n"
            "from rexnet_plugin.cli import main\n"
            f"for argv in [['--help'], *[[c, '--help'] for c in {COMMANDS!r}]]:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out):\n"
            "        try:\n            main(argv)\n"
            "        except SystemExit as e:\n            assert e.code == 0, (argv, e.code)\n"
            "    assert 'usage: rexnet-plugin' in out.getvalue(), argv\n"
            "assert 'paddle' not in sys.modules, 'help imported paddle'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-1500:]
    assert {"demo", "export", "convert", "configs", "weights", "variants", "predict",
            "quantize", "paddlex-pipeline"} <= set(COMMANDS)


def test_the_console_script_runs():
    script = shutil.which("rexnet-plugin", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the rexnet-plugin console script is not installed beside this Python")
    result = subprocess.run([script, "configs", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--toolkit" in result.stdout, result.stderr[-1500:]


@pytest.mark.parametrize("argv, message", [
    (["weights", "ReXNet_9"], "Unknown ReXNet variant 'ReXNet_9'"),
    (["weights", "--download"], "name the variants to --download"),
    (["configs", "--dest", "out", "--names", "ReXNet_9"], "Valid names: ReXNet_0_9"),
    (["configs", "--dest", "out", "--toolkit", "ppdet", "--names", "ReXNet_1_0"],
     "--names is for --toolkit ppcls and tipc"),
    (["convert", "missing.pdparams", "out.pdparams"], "missing.pdparams"),
    (["demo", "--lr", "-1", "--out", "demo"], "--lr -1.0: must be above 0"),
    (["demo", "--lr", "0", "--out", "demo"], "--lr 0.0: must be above 0"),
], ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys, tmp_path,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rexnet-plugin {argv[0]}: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing written
