"""The variant table feeds the factories: one row, one written-out factory."""

import importlib.util
import subprocess
import sys

import paddle
import pytest

import rexnet_plugin
from conftest import ROOT
from rexnet_plugin import factories
from rexnet_plugin.zoo import VARIANTS


def test_the_factories_are_generated_from_the_table():
    spec = importlib.util.spec_from_file_location(
        "update_factories", ROOT / "scripts" / "update_factories.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.FACTORIES.read_text() == script.expected_text(), \
        "run: python scripts/update_factories.py"
    for name in VARIANTS:  # what the package exposes, not what the file says
        assert getattr(rexnet_plugin, name) is getattr(factories, name)


@pytest.mark.parametrize("name", ["ReXNet_2_2", "ReXNetLite_1_5", "ReXNetR_1_3"])
def test_factory_builds_its_variant_and_passes_options(name):
    model = getattr(rexnet_plugin, name)(class_num=7, dropout_ratio=0.1)
    v = VARIANTS[name]
    assert (model.width_mult, model.lite, model.ch_div, model.kind) == \
        (v.width_mult, v.kind == "lite", v.ch_div, v.kind)
    assert model.output[-1].weight.shape[0] == 7 and model.output[-1]._in_channels > 7
    assert [d.p for d in model.output.sublayers() if isinstance(d, paddle.nn.Dropout)] == [0.1]


def test_every_default_source_is_an_imagenet_1k_file():
    """should_skip_head relies on it when it is not told the variant."""
    from rexnet_plugin.zoo import IMAGENET_CLASSES
    assert {v.weights[v.default_source].class_num for v in VARIANTS.values() if v.weights} \
        == {IMAGENET_CLASSES}


def test_unknown_rexnetr_width_lists_the_names_and_the_way_out():
    with pytest.raises(ValueError) as err:
        rexnet_plugin.create_model("ReXNetR_2_2")
    msg = str(err.value)
    assert "ReXNetR_2_0" in msg and "ReXNetR_3_0" in msg and "ch_div=8" in msg


def test_importing_the_package_does_not_import_paddle():
    code = "import sys, rexnet_plugin; assert 'paddle' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
