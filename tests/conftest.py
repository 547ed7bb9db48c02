"""Shared fixtures. Reference vectors are read in place from ../shared/reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_GUARD = Path(__file__).resolve().parent / "network_guard"

# Here and in every subprocess: connections beyond 127.0.0.1 are refused.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(NETWORK_GUARD), *filter(None, [os.environ.get("PYTHONPATH")])])
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("network_guard", NETWORK_GUARD / "sitecustomize.py")
network_guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(network_guard)
REFERENCE_DIR = Path(os.environ.get("REXNET_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))

# Official PyTorch npz test vectors: variant name -> file.
REFERENCE_NPZ = {"ReXNet_1_0": "rexnet_v1_1_0.npz", "ReXNetLite_1_0": "rexnet_lite_1_0.npz"}
REFERENCE_FEATURES = (2, 5, 7, 13, 18, 21)


def reference_path(name: str) -> Path:
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference file {path} not found: put the project's shared/ "
                    f"folder beside the checkout or set REXNET_REFERENCE_DIR")
    return path


@pytest.fixture(scope="session")
def official_shapes() -> dict:
    return json.loads(reference_path("official_shapes.json").read_text())


@pytest.fixture(scope="session")
def paddleclas_state_dicts() -> dict:
    return json.loads(reference_path("paddleclas_state_dicts.json").read_text())


def load_reference_npz(variant: str):
    """(official-layout float32 state dict, {case: {input, logits, features}})."""
    data = np.load(reference_path(REFERENCE_NPZ[variant]))
    state = {k: data[k].astype("float32") for k in data.files if not k.startswith(("a.", "b."))}
    cases = {}
    for case in ("a", "b"):
        cases[case] = {
            "input": data[f"{case}.input"],
            "logits": data[f"{case}.logits"],
            "features": {i: data[f"{case}.features.{i}"] for i in REFERENCE_FEATURES},
        }
    return state, cases


def export_reference_model(folder: Path, onnx: bool = True):
    """ReXNet_1_0 with the test-vector weights, exported into ``folder / "model"``
    as ``rexnet-plugin export --onnx`` does (softmax, inference.yml, ONNX unless
    ``onnx=False``).
    Returns (model folder, the eval-mode dygraph model)."""
    import paddle
    from rexnet_plugin import create_model
    from rexnet_plugin.deploy.export import export_model
    from rexnet_plugin.weights import to_canonical
    state, _ = load_reference_npz("ReXNet_1_0")
    model = create_model("ReXNet_1_0")
    model.set_state_dict(to_canonical(state))
    model.eval()
    paddle.save(model.state_dict(), str(folder / "weights.pdparams"))
    export_model("ReXNet_1_0", str(folder / "weights.pdparams"), folder / "model", onnx=onnx)
    return folder / "model", model


@pytest.fixture(scope="session")
def reference_export(tmp_path_factory):
    """One ``export_reference_model`` (with ONNX) per test session: (model folder,
    dygraph model). Read-only: a test that changes the folder copies it first."""
    return export_reference_model(tmp_path_factory.mktemp("reference_export"))


# YAML nested aliases ("billion laughs"): a few hundred bytes that expand to 9**5
# strings. Anchor &e is the whole expansion.
BILLION_LAUGHS_YAML = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
"""


class Blocked(BaseException):
    """Raised by ``alarm``; not an OSError, which the code under test may catch."""


@pytest.fixture
def alarm():
    """``alarm(seconds)``: fail with Blocked instead of hanging."""
    import signal

    def expire(signum, frame):
        raise Blocked("the call blocked")
    previous = signal.signal(signal.SIGALRM, expire)
    yield signal.alarm
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
