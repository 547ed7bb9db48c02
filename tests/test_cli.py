"""The command line itself: help works everywhere, without loading a framework."""

import subprocess
import sys

import pytest

from rexnet_plugin.cli import build_parser

COMMANDS = [a.dest for a in build_parser()._subparsers._group_actions[0]._choices_actions]


def _help(argv: list[str], without: str) -> subprocess.CompletedProcess:
    code = (f"import sys; sys.modules[{without!r}] = None\n"  # as on a platform without it
            f"from rexnet_plugin.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    code = e.code\n"
            f"assert 'paddle' not in sys.modules, 'help imported paddle'\n"
            f"sys.exit(code)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_there_are_commands():
    assert {"demo", "export", "convert", "configs", "weights", "variants", "bench"} <= set(COMMANDS)


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]],
                         ids=lambda a: " ".join(a))
def test_help_works_without_the_unix_only_resource_module(argv):
    result = _help(argv, without="resource")  # Windows has no `resource`
    assert result.returncode == 0, result.stderr[-1500:]
    assert "usage: rexnet-plugin" in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["weights", "ReXNet_9"], "Unknown ReXNet variant 'ReXNet_9'"),
    (["demo", "--lr", "-1", "--out", "demo"], "--lr -1.0: must be above 0"),
    (["demo", "--lr", "0", "--out", "demo"], "--lr 0.0: must be above 0"),
])
def test_bad_arguments_are_refused_before_any_work(argv, message, capsys, tmp_path,
                                                   monkeypatch):
    from rexnet_plugin.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written
