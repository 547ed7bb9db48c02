"""The variant table feeds the factories."""

from pathlib import Path

import paddle
import pytest

import rexnet_plugin
from rexnet_plugin import factories
from rexnet_plugin.zoo import VARIANTS

REQUIRED = ["ReXNet_1_0", "ReXNet_1_3", "ReXNet_1_5", "ReXNet_2_0", "ReXNet_3_0",
            "ReXNet_0_9", "ReXNet_2_2",
            "ReXNetLite_1_0", "ReXNetLite_1_3", "ReXNetLite_1_5", "ReXNetLite_2_0"]


def test_every_required_variant_has_a_written_out_factory():
    assert sorted(VARIANTS) == sorted(REQUIRED)
    assert sorted(factories.__all__) == sorted(["create_model", *VARIANTS])
    for name in REQUIRED:
        factory = getattr(factories, name)
        assert getattr(rexnet_plugin, name) is factory and factory.__name__ == name
        assert f"def {name}(" in Path(factories.__file__).read_text()  # grep finds it


@pytest.mark.parametrize("name", ["ReXNet_2_2", "ReXNetLite_1_5"])
def test_factory_builds_its_variant_and_passes_options(name):
    model = getattr(rexnet_plugin, name)(class_num=7, dropout_ratio=0.1)
    v = VARIANTS[name]
    assert (model.width_mult, model.lite) == (v.width_mult, v.lite)
    assert model.output[-1].weight.shape[0] == 7
    assert isinstance(model, paddle.nn.Layer)


def test_paper_accuracy_where_the_official_readme_gives_it():
    assert VARIANTS["ReXNet_1_0"].paper_top1 == 77.9
    assert VARIANTS["ReXNet_2_2"].paper_top1 is None  # detection-only variant
    assert all(VARIANTS[n].paper_top1 for n in REQUIRED if n != "ReXNet_2_2")


def test_importing_the_package_does_not_import_paddle():
    import subprocess
    import sys
    code = "import sys, rexnet_plugin; assert 'paddle' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
