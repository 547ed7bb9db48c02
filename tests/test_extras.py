"""Commands check what they need before any work and name the install that works
from where the package came from (a checkout, a wheel, the index)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from rexnet_plugin import extras
from rexnet_plugin.cli import main


class _Dist:
    def __init__(self, record):
        self.record = record

    def read_text(self, name):
        assert name == "direct_url.json"
        return None if self.record is None else json.dumps(self.record)


@pytest.mark.parametrize("record, expected", [
    ({"url": "file:///home/me/rexnet-plugin", "dir_info": {"editable": True}},
     'pip install -e "/home/me/rexnet-plugin[torch]"'),
    ({"url": "file:///home/me/rexnet-plugin", "dir_info": {}},
     'pip install "/home/me/rexnet-plugin[torch]"'),
    ({"url": "file:///tmp/dist/rexnet_plugin-0.5.0-py3-none-any.whl", "archive_info": {}},
     'pip install "/tmp/dist/rexnet_plugin-0.5.0-py3-none-any.whl[torch]"'),
    (None, 'pip install "rexnet-plugin[torch]"'),  # from an index: no direct_url.json
])
def test_the_install_command_works_from_where_the_package_came_from(monkeypatch, record,
                                                                    expected):
    from importlib import metadata
    monkeypatch.setattr(metadata, "distribution", lambda name: _Dist(record))
    assert extras.install_command("torch") == expected


def test_this_installation_gets_a_command_that_names_it():
    """However the suite's environment installed the package, the command names
    a real place: the folder or wheel it came from, or the published name."""
    command = extras.install_command("paddlex")
    assert command.startswith("pip install ") and command.endswith('[paddlex]"')


def test_a_missing_module_names_its_package_and_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "paddlex", None)  # find_spec: not installed
    reason = extras.missing("paddlex")
    assert reason.startswith("paddlex is not installed: pip install") and "[paddlex]" in reason
    assert extras.missing("json") is None


def test_no_wheel_for_this_python_is_said_plainly(monkeypatch):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)
    monkeypatch.setitem(extras._NO_WHEEL, "paddle2onnx", sys.version_info[:2])
    reason = extras.missing("paddle2onnx")
    assert f"no wheel for Python {sys.version_info[0]}.{sys.version_info[1]}" in reason


def test_export_with_onnx_fails_before_any_work_when_paddle2onnx_is_missing(
        monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)
    started = time.perf_counter()
    code = main(["export", "ReXNet_3_0", "--untrained", "--onnx", "-o", str(tmp_path / "m")])
    assert code == 2 and time.perf_counter() - started < 10
    err = capsys.readouterr().err
    assert "--onnx needs paddle2onnx" in err
    assert extras.missing("paddle2onnx") in err  # the install line, or "no wheel for 3.13"
    assert not (tmp_path / "m").exists()


def test_quantize_fails_before_reading_images_when_onnxruntime_is_missing(
        monkeypatch, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("inference.json", "inference.pdiparams", "inference.yml"):
        (folder / name).write_text("")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code = main(["quantize", str(folder), "--calib", str(tmp_path / "none"),
                 "--out", str(tmp_path / "int8")])
    assert code == 2
    assert "quantize needs onnx, onnxruntime, paddle2onnx" in capsys.readouterr().err
    assert not (tmp_path / "int8").exists()
