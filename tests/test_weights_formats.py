"""Every layout and file format loads, converts and reproduces the official logits.

Starting point: the official weights in shared/reference (official PyTorch
key names), written to .safetensors, to .pth with torch, and renamed to
timm's keys by the reference table; each file is loaded directly and after
``rexnet-plugin convert`` to .pdparams and .safetensors.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import paddle
import pytest
from safetensors.numpy import save_file

from conftest import REFERENCE_NPZ, load_reference_npz, reference_path
from rexnet_plugin import create_model
from rexnet_plugin.weights.formats import read_checkpoint
from rexnet_plugin.cli import main
from rexnet_plugin.weights.errors import (CorruptCheckpointError, NotReXNetError, UnsafeCheckpointError,
                                  WeightsError, WrongVariantError)
from rexnet_plugin.weights import (detect_layout, inspect_state, load_pretrained,
                                   timm_to_official, to_canonical)
from rexnet_plugin.zoo import VARIANTS
from weights_helpers import official_to_timm, state_of

LOGITS_ATOL = 1e-4


def _logits(model, x):
    model.eval()
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def _save_torch(state: dict, path, prefix=""):
    torch = pytest.importorskip("torch", reason="torch is not installed: pip install 'rexnet-plugin[torch]'")
    torch.save({prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)


def _with_counters(state: dict) -> dict:
    """What torch's state_dict() has: a num_batches_tracked per BN."""
    out = dict(state)
    for k in state:
        if k.endswith("running_var"):
            out[k.replace("running_var", "num_batches_tracked")] = np.array(3, np.int64)
    return out


# file kind -> writer(official state, folder) -> path. timm has no lite.
def _official_safetensors(state, folder):
    save_file(state, str(folder / "official.safetensors"))
    return folder / "official.safetensors"


def _official_pth(state, folder):
    _save_torch(_with_counters(state), folder / "official.pth", prefix="module.")
    return folder / "official.pth"


def _timm_safetensors(state, folder):
    save_file(official_to_timm(state), str(folder / "timm.safetensors"))
    return folder / "timm.safetensors"


def _timm_pth(state, folder):
    _save_torch(official_to_timm(state), folder / "timm.pth")
    return folder / "timm.pth"


SOURCES = {"official.safetensors": _official_safetensors, "official.pth": _official_pth,
           "timm.safetensors": _timm_safetensors, "timm.pth": _timm_pth}
CASES = [(v, s) for v in REFERENCE_NPZ for s in SOURCES if not (VARIANTS[v].kind == "lite" and "timm" in s)]


@pytest.mark.parametrize("variant,source", CASES)
def test_round_trip_reproduces_official_logits(variant, source, tmp_path, capsys):
    state, cases = load_reference_npz(variant)
    src = SOURCES[source](state, tmp_path)
    expected = cases["a"]["logits"]

    direct = create_model(variant, pretrained=str(src))
    assert np.abs(_logits(direct, cases["a"]["input"]) - expected).max() <= LOGITS_ATOL

    # Each source converts to one format; both are covered across the cases.
    dst_name = "converted" + (".pdparams" if CASES.index((variant, source)) % 2 else ".safetensors")
    assert main(["convert", str(src), str(tmp_path / dst_name)]) == 0
    summary = capsys.readouterr().out
    assert f"variant   {variant} " in summary and f"{len(to_canonical(state))} converted" in summary
    converted = create_model(variant, pretrained=str(tmp_path / dst_name))
    assert np.abs(_logits(converted, cases["a"]["input"]) - expected).max() <= LOGITS_ATOL
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst_name])  # no temps


def test_converted_pdparams_loads_with_plain_paddle(tmp_path):
    """What PaddleClas does with pretrained_model: paddle.load + set_state_dict."""
    state, cases = load_reference_npz("ReXNet_1_0")
    src = _timm_safetensors(state, tmp_path)
    assert main(["convert", str(src), str(tmp_path / "w.pdparams")]) == 0
    model = create_model("ReXNet_1_0")
    missing, unexpected = model.set_state_dict(paddle.load(str(tmp_path / "w.pdparams")))
    assert not missing and not unexpected
    assert np.abs(_logits(model, cases["b"]["input"]) - cases["b"]["logits"]).max() <= LOGITS_ATOL


def test_official_layout_safetensors_for_pytorch_users(tmp_path):
    state, _ = load_reference_npz("ReXNetLite_1_0")
    src = _official_safetensors(state, tmp_path)
    assert main(["convert", str(src), str(tmp_path / "w.pdparams")]) == 0
    assert main(["convert", str(tmp_path / "w.pdparams"), str(tmp_path / "back.safetensors"),
                 "--layout", "official"]) == 0
    back, fmt = read_checkpoint(tmp_path / "back.safetensors")
    assert fmt == "safetensors" and back.keys() == state.keys()
    assert all(np.array_equal(back[k], state[k]) for k in state)


def test_float16_checkpoint_loads_into_float32_model(tmp_path):
    data = np.load(reference_path(REFERENCE_NPZ["ReXNet_1_0"]))
    half = {k: data[k] for k in data.files if not k.startswith(("a.", "b."))}
    assert all(v.dtype == np.float16 for v in half.values())
    save_file(half, str(tmp_path / "half.safetensors"))
    model = create_model("ReXNet_1_0", pretrained=str(tmp_path / "half.safetensors"))
    _, cases = load_reference_npz("ReXNet_1_0")
    assert np.abs(_logits(model, cases["b"]["input"]) - cases["b"]["logits"]).max() <= LOGITS_ATOL


def test_paddleclas_style_path_without_suffix(tmp_path):
    state, _ = load_reference_npz("ReXNet_1_0")
    main(["convert", str(_official_safetensors(state, tmp_path)), str(tmp_path / "best_model.pdparams")])
    model = create_model("ReXNet_1_0", pretrained=str(tmp_path / "best_model"))
    assert np.array_equal(state_of(model)["features.1._mean"], state["features.1.running_mean"])


# -- layouts, by rule -------------------------------------------------------------

def test_timm_rule_reproduces_the_reference_mapping():
    """The rule in timm_to_official gives exactly the reference table's mapping."""
    table = json.loads(reference_path("timm_rexnet_100_keys.json").read_text())["mapping"]
    timm = {k: np.full((2, 3) if k == "head.fc.weight" else (1,), i, np.float32)
            for i, k in enumerate(table)}
    official = timm_to_official(timm)
    assert len(official) == len(table)
    for i, (timm_key, official_key) in enumerate(table.items()):
        assert official_key in official, f"{timm_key} should map to {official_key}"
        assert official[official_key].flat[0] == i, f"{timm_key} mapped to the wrong key"
    assert official["output.1.weight"].shape == (2, 3, 1, 1)


def test_layout_detection():
    state, _ = load_reference_npz("ReXNet_1_0")
    assert detect_layout(state) == "official"
    assert detect_layout({"module." + k: v for k, v in _with_counters(state).items()}) == "official"
    assert detect_layout(to_canonical(state)) == "paddle"
    assert detect_layout(official_to_timm(state)) == "timm"
    conv_head = dict(official_to_timm(state), **{"head.fc.weight": np.zeros((1000, 1280, 1, 1))})
    assert detect_layout(conv_head) is None  # timm's head is 2-D; this is something else
    assert detect_layout({"conv1.weight": np.zeros((64, 3, 7, 7)),
                          "bn1.running_mean": np.zeros(64)}) is None


@pytest.mark.parametrize("class_num", [1000, 10, 0])
def test_variant_inferred_from_official_shapes(official_shapes, class_num):
    """Width, kind and class count of every official variant, from shapes alone."""
    by_official_name = {v.official_name: name for name, v in VARIANTS.items()}
    for official_name, entry in official_shapes.items():
        if official_name.startswith("_"):
            continue
        state = {k: np.zeros(s, np.float32) for k, s in entry["state_dict"].items()
                 if class_num or not k.startswith("output.")}
        classifier = "output.4" if "output.4.weight" in state else "output.1"
        if class_num and class_num != 1000:
            w = state[f"{classifier}.weight"]
            state[f"{classifier}.weight"] = np.zeros((class_num, *w.shape[1:]), np.float32)
            state[f"{classifier}.bias"] = np.zeros(class_num, np.float32)
        info = inspect_state(to_canonical(state))
        name = by_official_name[official_name]
        assert info.variant == name, official_name
        assert info.kind == VARIANTS[name].kind
        assert info.class_num == class_num


# -- errors -------------------------------------------------------------------------

def test_wrong_variant_names_the_checkpoint_variant(tmp_path):
    state, _ = load_reference_npz("ReXNetLite_1_0")
    path = _official_safetensors(state, tmp_path)
    with pytest.raises(WrongVariantError) as err:
        create_model("ReXNet_1_0", pretrained=str(path))
    msg = str(err.value)
    assert str(path) in msg and "ReXNetLite_1_0" in msg and "create_model('ReXNetLite_1_0')" in msg
    assert "shape conflict at" in msg or "missing keys" in msg
    with pytest.raises(WrongVariantError, match="ReXNetLite_1_0"):
        main_convert_raises(path, tmp_path / "x.pdparams", "ReXNetLite_1_3")


def main_convert_raises(src, dst, variant):
    from rexnet_plugin.weights.convert import convert
    try:
        return convert(src, dst, variant=variant)
    finally:
        assert not dst.exists()


def test_class_count_mismatch_lists_keys_and_the_fix(tmp_path):
    state, _ = load_reference_npz("ReXNet_1_0")
    path = _official_safetensors(state, tmp_path)
    model = create_model("ReXNet_1_0", class_num=10)
    with pytest.raises(WeightsError) as err:
        load_pretrained(model, str(path))
    msg = str(err.value)
    assert "shape conflict at output.1.weight: checkpoint [1000, 1280, 1, 1], model [10, 1280, 1, 1]" in msg
    assert "skip_head=True" in msg and "class_num=1000" in msg


@pytest.mark.parametrize("variant", list(REFERENCE_NPZ))
def test_fine_tuning_keeps_the_new_head(variant, tmp_path):
    state, _ = load_reference_npz(variant)
    path = _official_safetensors(state, tmp_path)
    canonical = to_canonical(state)
    # A local file whose classifier does not fit is an error unless asked for
    # (weights.should_skip_head: the same rule as in PaddleClas).
    with pytest.raises(WeightsError, match="skip_head=True"):
        create_model(variant, class_num=10, pretrained=str(path))
    for class_num, skip_head in ((10, True), (0, False)):  # headless needs no asking
        paddle.seed(1)
        fresh = state_of(create_model(variant, class_num=class_num))
        paddle.seed(1)
        model = create_model(variant, class_num=class_num, pretrained=str(path),
                             skip_head=skip_head)
        loaded = state_of(model)
        for key, value in loaded.items():
            if key in canonical and canonical[key].shape == value.shape:
                assert np.array_equal(value, canonical[key]), key  # backbone (and lite's 1024 conv)
            else:
                assert key.startswith("output.") and np.array_equal(value, fresh[key]), key


def test_not_rexnet_checkpoint(tmp_path):
    resnet = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
              "bn1.running_mean": np.zeros(64, np.float32), "fc.weight": np.zeros((10, 64), np.float32)}
    save_file(resnet, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(NotReXNetError, match="is not a ReXNet checkpoint.*conv1.weight"):
        create_model("ReXNet_1_0", pretrained=str(tmp_path / "resnet.safetensors"))
    mobilenet = {"features.0.0.weight": np.zeros((32, 3, 3, 3), np.float32),
                 "features.0.1.running_mean": np.zeros(32, np.float32)}
    save_file(mobilenet, str(tmp_path / "mbv2.safetensors"))
    assert main(["convert", str(tmp_path / "mbv2.safetensors"), str(tmp_path / "out.pdparams")]) == 2
    assert not (tmp_path / "out.pdparams").exists()


@pytest.mark.parametrize("suffix", [".pdparams", ".safetensors", ".pth"])
def test_truncated_file_is_reported_as_corrupt(suffix, tmp_path):
    state, _ = load_reference_npz("ReXNetLite_1_0")
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".pth":
        _save_torch(state, whole)
    elif suffix == ".safetensors":
        save_file(state, str(whole))
    else:
        paddle.save(to_canonical(state), str(whole))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match=f"{cut}.*truncated or damaged"):
        create_model("ReXNetLite_1_0", pretrained=str(cut))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_pdparams_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(pickle.dumps({"features.0.weight": _RunsCode(marker)}))
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system"):
        create_model("ReXNet_1_0", pretrained=str(evil))
    assert not marker.exists()


def test_pth_with_objects_is_refused(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed: pip install 'rexnet-plugin[torch]'")
    marker = tmp_path / "pwned"
    torch.save({"features.0.weight": torch.zeros(1), "x": _RunsCode(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"weights_only=True\) refused") as err:
        create_model("ReXNet_1_0", pretrained=str(tmp_path / "evil.pth"))
    assert not marker.exists()
    assert "system" in str(err.value) and "weights_only=False" not in str(err.value)


def test_pth_without_torch_says_how_to_install(tmp_path, monkeypatch):
    state, _ = load_reference_npz("ReXNetLite_1_0")
    _save_torch(state, tmp_path / "w.pth")
    monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch -> ImportError
    import re
    from rexnet_plugin.extras import install_command
    with pytest.raises(WeightsError, match="needs torch.*" + re.escape(install_command("torch"))):
        create_model("ReXNetLite_1_0", pretrained=str(tmp_path / "w.pth"))


def test_convert_refuses_to_overwrite_without_force(tmp_path, capsys):
    state, _ = load_reference_npz("ReXNetLite_1_0")
    src = _official_safetensors(state, tmp_path)
    (tmp_path / "out.pdparams").write_bytes(b"keep me")
    assert main(["convert", str(src), str(tmp_path / "out.pdparams")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "out.pdparams").read_bytes() == b"keep me"
    assert main(["convert", str(src), str(tmp_path / "out.pdparams"), "--force"]) == 0
    assert create_model("ReXNetLite_1_0", pretrained=str(tmp_path / "out.pdparams"))


def test_convert_entry_point(tmp_path):
    """The installed command, as a user runs it."""
    import shutil
    import subprocess
    exe = shutil.which("rexnet-plugin")
    if exe is None:
        pytest.skip("rexnet-plugin is not on PATH: pip install -e . first")
    state, _ = load_reference_npz("ReXNetLite_1_0")
    src = _official_safetensors(state, tmp_path)
    run = subprocess.run([exe, "convert", str(src), str(tmp_path / "lite.pdparams")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "variant   ReXNetLite_1_0 (ReXNet-lite, width 1.0, 1000 classes)" in run.stdout
    run = subprocess.run([exe, "convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.pdparams")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "missing.pth does not exist" in run.stderr


def test_safetensors_need_no_torch(tmp_path, monkeypatch):
    """With torch unimportable, .safetensors still read, convert and write."""
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    state, cases = load_reference_npz("ReXNet_1_0")
    save_file(official_to_timm(state), str(tmp_path / "timm.safetensors"))
    assert main(["convert", str(tmp_path / "timm.safetensors"), str(tmp_path / "w.safetensors")]) == 0
    model = create_model("ReXNet_1_0", pretrained=str(tmp_path / "w.safetensors"))
    assert np.abs(_logits(model, cases["b"]["input"]) - cases["b"]["logits"]).max() <= LOGITS_ATOL


def test_pdparams_as_paddle_writes_them(tmp_path):
    """paddle.save of a training checkpoint ({"model": state_dict, "epoch": n}) and
    of Tensors with Paddle 2.0's name table load with the allow-list reader."""
    state, cases = load_reference_npz("ReXNetLite_1_0")
    canonical = {k: paddle.to_tensor(v) for k, v in to_canonical(state).items()}
    paddle.save({"model": canonical, "epoch": 3}, str(tmp_path / "train.pdparams"))
    paddle.save(dict(canonical, **{"StructuredToParameterName@@": {"a": "b"}}),
                str(tmp_path / "named.pdparams"))
    for name in ("train.pdparams", "named.pdparams"):
        model = create_model("ReXNetLite_1_0", pretrained=str(tmp_path / name))
        assert np.abs(_logits(model, cases["b"]["input"]) - cases["b"]["logits"]).max() <= LOGITS_ATOL


def test_model_built_from_what_the_checkpoint_is(tmp_path):
    from rexnet_plugin.weights import inspect_checkpoint, model_from_checkpoint
    state, cases = load_reference_npz("ReXNetLite_1_0")
    path = _official_safetensors(state, tmp_path)
    info = inspect_checkpoint(path)
    assert (info.variant, info.kind, info.class_num) == ("ReXNetLite_1_0", "lite", 1000)
    model = model_from_checkpoint(path)
    assert (model.width_mult, model.lite, model.class_num) == (1.0, True, 1000)
    assert np.abs(_logits(model, cases["b"]["input"]) - cases["b"]["logits"]).max() <= LOGITS_ATOL
