"""The shipped PaddleDetection configs as files: variants, weights, packaging."""

from __future__ import annotations


import pytest
import yaml

from ppdet_support import CHECKOUT_CONFIGS, CONFIGS, STANDALONE_CONFIGS, detector_kind, shipped
from rexnet_plugin.zoo import VARIANTS

ALL = shipped(CHECKOUT_CONFIGS) + shipped(STANDALONE_CONFIGS)


def test_there_are_configs_of_both_kinds():
    assert shipped(CHECKOUT_CONFIGS) and shipped(STANDALONE_CONFIGS)
    kinds = {detector_kind(c) for c in shipped(CHECKOUT_CONFIGS)}
    assert kinds == {"picodet", "faster_rcnn", "ppyoloe"}
    rexnetr = [c for c in shipped(CHECKOUT_CONFIGS)
               if VARIANTS[yaml.safe_load(c.read_text())["ReXNet"]["variant"]].kind == "r"]
    assert [detector_kind(c) for c in rexnetr] == ["ppyoloe"]


@pytest.mark.parametrize("config", ALL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_backbone_section_names_a_variant_and_its_published_weights(config):
    cfg = yaml.safe_load(config.read_text())
    variant = VARIANTS[cfg["ReXNet"]["variant"]]
    assert variant.name.lower() in config.stem, "the file name says another variant"
    urls = {w.url for w in variant.weights.values()}
    own = cfg["ReXNet"].get("pretrained")
    if cfg.get("pretrain_weights"):
        # One source of truth: the URL is the variant table's.
        assert cfg["pretrain_weights"] in urls and own is None
    elif own is not None:
        # The backbone's own loader: a source name of the variant table
        # (timm's .safetensors, which ppdet's pretrain_weights cannot read).
        assert own in variant.weights and "pretrain_weights" in cfg  # null: not the base's
    else:
        assert not urls, f"{config.name} loads no weights although {variant.name} has some"


@pytest.mark.parametrize("config", shipped(CHECKOUT_CONFIGS), ids=lambda p: p.stem)
def test_checkout_configs_base_on_paddledetections_own(config):
    bases = yaml.safe_load(config.read_text())["_BASE_"]
    assert bases and all(b.startswith("../") and not b.startswith("../rexnet/") for b in bases)


def test_configs_writer_copies_keeps_edits_and_warns_about_the_folder(tmp_path):
    from rexnet_plugin.integrations.configs import PPDET_CHECKOUT as CHECKOUT
    from rexnet_plugin.integrations.configs import PPDET_STANDALONE as STANDALONE
    from rexnet_plugin.integrations.configs import copy_ppdet_configs as copy_configs
    from rexnet_plugin.integrations.configs import ppdet_destination_warning as check_destination
    from rexnet_plugin.integrations.configs import ppdet_names as config_names
    dest = tmp_path / "PaddleDetection" / "configs" / "rexnet"
    report = copy_configs(dest)
    assert sorted(p.name for p in report["written"]) == config_names(CHECKOUT) == \
        [p.name for p in shipped(CHECKOUT_CONFIGS)]
    edited = dest / config_names(CHECKOUT)[0]
    edited.write_text(edited.read_text() + "\nepoch: 1\n")
    report = copy_configs(dest)
    assert report["kept"] == [edited] and not report["written"]
    assert copy_configs(dest, force=True)["written"] == [edited]
    # Checkout configs outside <PaddleDetection>/configs/: their ../ bases break.
    assert "runtime.yml" in check_destination(dest, CHECKOUT)
    (dest.parent / "runtime.yml").write_text("use_gpu: false\n")
    assert check_destination(dest, CHECKOUT) is None
    assert check_destination(tmp_path / "anywhere", STANDALONE) is None
    standalone = copy_configs(tmp_path / "mine", kind=STANDALONE)["written"]
    assert [p.name for p in standalone] == [p.name for p in shipped(STANDALONE_CONFIGS)]


def test_cli_writes_the_ppdet_configs(tmp_path, capsys):
    from rexnet_plugin.cli import main
    dest = tmp_path / "PaddleDetection" / "configs" / "rexnet"
    (dest.parent).mkdir(parents=True)
    (dest.parent / "runtime.yml").write_text("use_gpu: false\n")
    assert main(["configs", "--toolkit", "ppdet", "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == [p.name for p in shipped(CHECKOUT_CONFIGS)]
    assert "warning" not in capsys.readouterr().out
    assert main(["configs", "--toolkit", "ppdet", "--standalone",
                 "--dest", str(tmp_path / "mine")]) == 0
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == \
        [p.name for p in shipped(STANDALONE_CONFIGS)]
    assert main(["configs", "--toolkit", "ppdet", "--names", "ReXNet_1_0",
                 "--dest", str(tmp_path / "x")]) == 2
    assert main(["configs", "--standalone", "--dest", str(tmp_path / "y")]) == 2
    assert "--standalone is for --toolkit ppdet" in capsys.readouterr().err
