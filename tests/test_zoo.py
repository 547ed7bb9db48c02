"""The variant table feeds the factories."""

from pathlib import Path

import paddle
import pytest

import rexnet_plugin
from rexnet_plugin import factories
from rexnet_plugin.zoo import VARIANTS

REQUIRED = ["ReXNet_1_0", "ReXNet_1_3", "ReXNet_1_5", "ReXNet_2_0", "ReXNet_3_0",
            "ReXNet_0_9", "ReXNet_2_2",
            "ReXNetLite_1_0", "ReXNetLite_1_3", "ReXNetLite_1_5", "ReXNetLite_2_0",
            "ReXNetR_1_0", "ReXNetR_1_3", "ReXNetR_1_5", "ReXNetR_2_0", "ReXNetR_3_0"]


def test_every_required_variant_has_a_written_out_factory():
    assert sorted(VARIANTS) == sorted(REQUIRED)
    assert sorted(factories.__all__) == sorted(["create_model", *VARIANTS])
    for name in REQUIRED:
        factory = getattr(factories, name)
        assert getattr(rexnet_plugin, name) is factory and factory.__name__ == name
        assert f"def {name}(" in Path(factories.__file__).read_text()  # grep finds it


@pytest.mark.parametrize("name", ["ReXNet_2_2", "ReXNetLite_1_5", "ReXNetR_1_3"])
def test_factory_builds_its_variant_and_passes_options(name):
    model = getattr(rexnet_plugin, name)(class_num=7, dropout_ratio=0.1)
    v = VARIANTS[name]
    assert (model.width_mult, model.lite, model.ch_div, model.kind) == \
        (v.width_mult, v.lite, v.ch_div, v.kind)
    assert model.output[-1].weight.shape[0] == 7
    assert isinstance(model, paddle.nn.Layer)


def test_paper_accuracy_where_the_official_readme_gives_it():
    assert VARIANTS["ReXNet_1_0"].paper_top1 == 77.9
    assert VARIANTS["ReXNet_2_2"].paper_top1 is None  # detection-only variant
    official = [n for n in REQUIRED if VARIANTS[n].kind != "r"]
    assert all(VARIANTS[n].paper_top1 for n in official if n != "ReXNet_2_2")
    # ReXNet-R is timm's, not the paper's: its figures are timm's, per file.
    assert all(VARIANTS[n].paper_top1 is None for n in REQUIRED if n not in official)


def test_kinds_and_channel_divisors():
    kinds = {n: (v.kind, v.ch_div) for n, v in VARIANTS.items()}
    assert {n for n, (k, _) in kinds.items() if k == "r"} == {n for n in REQUIRED if "ReXNetR_" in n}
    assert {n for n, (k, _) in kinds.items() if k == "lite"} == {n for n in REQUIRED if "Lite" in n}
    # timm: rexnetr_300 rounds to 16, the others to 8; V1 and lite have no ch_div.
    assert {n: d for n, (_, d) in kinds.items() if d} == {
        "ReXNetR_1_0": 8, "ReXNetR_1_3": 8, "ReXNetR_1_5": 8, "ReXNetR_2_0": 8, "ReXNetR_3_0": 16}
    assert VARIANTS["ReXNetR_2_0"].timm_name == "rexnetr_200"
    assert VARIANTS["ReXNet_2_0"].timm_name == "rexnet_200"


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
    import subprocess
    import sys
    code = "import sys, rexnet_plugin; assert 'paddle' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
