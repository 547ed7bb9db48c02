"""What the wheel ships, read from a wheel built from this checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT
from rexnet_plugin.zoo import VARIANTS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "hatchling" in result.stderr:
        pytest.skip("building the wheel needs hatchling: pip install hatchling")
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = out.glob("rexnet_plugin-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_the_wheel_ships_the_paddleclas_configs(wheel):
    for name in VARIANTS:
        shipped = wheel.read(f"rexnet_plugin/ppcls_configs/{name}.yaml").decode()
        assert shipped == (ROOT / "ppcls_configs" / f"{name}.yaml").read_text()


def test_the_wheel_ships_the_tipc_configs(wheel):
    configs = sorted((ROOT / "tipc_configs").glob("*.txt"))
    assert len(configs) == 2 * len(VARIANTS)
    for config in configs:
        assert wheel.read(f"rexnet_plugin/tipc_configs/{config.name}").decode() == config.read_text()


def test_the_wheel_ships_the_paddledetection_configs(wheel):
    configs = sorted((ROOT / "ppdet_configs").rglob("*.yml"))
    assert configs
    for config in configs:
        relative = config.relative_to(ROOT / "ppdet_configs").as_posix()
        assert wheel.read(f"rexnet_plugin/ppdet_configs/{relative}").decode() == config.read_text()


def test_the_wheel_ships_the_autoload_hook_and_entry_points(wheel):
    names = wheel.namelist()
    assert "rexnet_plugin_autoload.pth" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[paddleclas.plugins]" in text and "[ppdet.plugins]" in text
    assert "[paddlex.plugins]\nrexnet = rexnet_plugin.integrations.paddlex:register\n" in text
    assert ("[paddlex.modules.plugins]\nrexnet = "
            "rexnet_plugin.integrations.paddlex:register_training") in text
    assert ("[paddlex.serving.plugins]\nrexnet = "
            "rexnet_plugin.integrations.paddlex:register_serving") in text
    assert ("[paddleclas.deploy.plugins]\npir-memory-optim = "
            "rexnet_plugin.integrations.paddleclas_deploy:register") in text
    assert "rexnet-plugin = rexnet_plugin.cli:main" in text


def test_the_wheel_holds_no_development_tools_or_tests(wheel):
    names = wheel.namelist()
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "scripts/"))]
    assert not [n for n in names if "__pycache__" in n]
