"""A guest's manners: with the plugin installed, a config that names one of
PaddleClas's built-in ReXNets (the pip wheel's ``paddleclas.ppcls``) does
what it did before. Each test compares with the built-in itself."""

from __future__ import annotations

import importlib
import inspect
import logging
import traceback
import types

import numpy as np
import paddle
import pytest

from ppcls_support import needs_paddleclas_wheel
from rexnet_plugin.integrations import paddleclas as integration
from rexnet_plugin.weights import download
from rexnet_plugin.weights.errors import WeightsError
from rexnet_plugin.weights.formats import write_checkpoint
from rexnet_plugin.zoo import PADDLECLAS_BUILTIN_NAMES, VARIANTS
from weights_helpers import _server, cache, local_only, server, state_of  # noqa: F401

pytestmark = needs_paddleclas_wheel
BUILTIN_MODULE = "paddleclas.ppcls.arch.backbone.model_zoo.rexnet"
SMALL = [2, 3, 64, 64]


@pytest.fixture(scope="module")
def arch():
    module = importlib.import_module("paddleclas.ppcls.arch")
    integration.register(module)  # the autoload did it already, unless switched off
    return module


@pytest.fixture(scope="module")
def builtin():
    """PaddleClas's own module: its factories and ReXNetV1, never replaced."""
    return importlib.import_module(BUILTIN_MODULE)


def image(shape=SMALL, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal(shape).astype("float32"))


def test_the_plugin_answers_for_every_builtin_name(arch, builtin):
    assert sorted(PADDLECLAS_BUILTIN_NAMES) == sorted(builtin.MODEL_URLS)
    for name in PADDLECLAS_BUILTIN_NAMES:
        assert getattr(arch, name).__module__ == integration.__name__
        assert getattr(builtin, name).__module__ == BUILTIN_MODULE


def builtin_keywords(builtin) -> dict:
    """Every keyword the built-in accepts (its factory's and ReXNetV1's), with its default."""
    keywords = {}
    for function in (builtin.ReXNet_1_0, builtin.ReXNetV1.__init__):
        for p in inspect.signature(function).parameters.values():
            if p.default is not inspect.Parameter.empty:
                keywords[p.name] = p.default
    return keywords


# A value other than the default for each keyword, to see it act the same.
OTHER_VALUES = {"pretrained": False, "use_ssld": True, "input_ch": 24, "final_ch": 150,
                "depth_mult": 0.5, "class_num": 7, "use_se": False, "se_ratio": 8,
                "dropout_ratio": 0.5, "bn_momentum": 0.99}


@pytest.mark.slow  # builds both models per keyword
def test_every_keyword_of_the_builtin_is_accepted_with_the_same_meaning(arch, builtin):
    keywords = builtin_keywords(builtin)
    keywords.pop("width_mult")  # fixed by each factory, in both
    # A keyword PaddleClas adds later fails here until it is handled.
    assert set(keywords) == set(OTHER_VALUES)
    for key, value in OTHER_VALUES.items():
        paddle.seed(5)
        theirs = builtin.ReXNet_1_3(**{key: value})
        paddle.seed(5)
        ours = arch.ReXNet_1_3(**{key: value})
        their_state, our_state = state_of(theirs), state_of(ours)
        assert {k: v.shape for k, v in our_state.items()} == \
            {k: v.shape for k, v in their_state.items()}, key
        for k in their_state:
            assert np.array_equal(our_state[k], their_state[k]), (key, k)
        assert ours.output[0].p == theirs.output[0].p, key  # dropout ratio
        theirs.eval(), ours.eval()
        x = image()
        np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=0, atol=1e-5,
                                   err_msg=key)


def test_use_ssld_with_pretrained_true_fails_clearly(arch):
    with pytest.raises(WeightsError, match="SSLD weights; none exist.*Arch.use_ssld"):
        arch.ReXNet_1_0(pretrained=True, use_ssld=True)


@pytest.mark.parametrize("name", PADDLECLAS_BUILTIN_NAMES)
def test_same_seed_same_initial_weights_through_build_model(arch, builtin, name):
    paddle.seed(11)
    theirs = state_of(getattr(builtin, name)(class_num=10))
    paddle.seed(11)
    ours = state_of(arch.build_model({"Arch": {"name": name, "class_num": 10}}))
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)


def test_official_initialisation_is_an_opt_in(arch, builtin):
    paddle.seed(11)
    theirs = state_of(builtin.ReXNet_1_0())
    paddle.seed(11)
    ours = arch.build_model({"Arch": {"name": "ReXNet_1_0", "weight_init": "official"}})
    conv = state_of(ours)["features.0.weight"]  # PyTorch's default: U(+-1/sqrt(fan_in))
    assert not np.array_equal(conv, theirs["features.0.weight"])
    assert np.abs(conv).max() <= 1 / np.sqrt(3 * 3 * 3)


def test_same_weights_same_outputs(arch, builtin):
    paddle.seed(3)
    theirs = builtin.ReXNet_1_5(class_num=12)
    ours = arch.ReXNet_1_5(class_num=12)
    ours.set_state_dict(theirs.state_dict())
    theirs.eval(), ours.eval()
    x = image([2, 3, 97, 131])
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=0, atol=1e-5)


def test_pretrained_true_loads_paddleclas_own_file(arch, server, cache, monkeypatch, tmp_path):
    """The built-in's pretrained=True downloads PaddleClas's .pdparams; so does
    the replacement (a local mirror serves both files; only one is asked for)."""
    monkeypatch.setenv(download.MIRROR_ENV, server.base)
    paddle.seed(1)
    expected = state_of(arch.ReXNet_1_0())
    weights = VARIANTS["ReXNet_1_0"].weights
    for source in ("paddleclas", "ppim"):
        write_checkpoint(expected, tmp_path / weights[source].filename)
        server.add("/" + weights[source].filename, tmp_path / weights[source].filename)
    model = arch.ReXNet_1_0(pretrained=True)
    assert server.hits == {"/" + weights["paddleclas"].filename: 1}
    loaded = state_of(model)
    assert all(np.array_equal(loaded[k], expected[k]) for k in expected)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_log_line_says_what_replaced_what_and_how_to_keep_the_builtin(arch):
    integration._unannounced[arch.__name__] = list(PADDLECLAS_BUILTIN_NAMES)
    records = _Records()
    loggers = [logging.getLogger("ppcls"), logging.getLogger(integration.__name__)]
    for logger in loggers:  # PaddleClas's own log, or ours when it is not set up
        logger.addHandler(records)
    try:
        arch.ReXNet_1_0()
    finally:
        for logger in loggers:
            logger.removeHandler(records)
    (message,) = [m for m in records.messages if "rexnet-plugin:" in m]
    assert all(name in message for name in PADDLECLAS_BUILTIN_NAMES)
    assert "instead of PaddleClas's built-in" in message
    assert f"{integration.KEEP_BUILTIN_ENV}=ReXNet_1_0" in message  # per name
    assert f"{integration.KEEP_BUILTIN_ENV}=all" in message  # globally


@pytest.mark.parametrize("keep, builtin_names", [
    ("ReXNet_1_5", {"ReXNet_1_5"}),
    ("all", {"ReXNet_1_0", "ReXNet_1_5"}),
])
def test_keeping_the_builtin_per_name_or_globally(arch, builtin, monkeypatch, keep,
                                                  builtin_names):
    """register() on a stand-in of ppcls.arch holding PaddleClas's built-ins."""
    fake = types.ModuleType("fake.ppcls.arch")
    fake.TheseusLayer, fake.backbone = arch.TheseusLayer, types.ModuleType("fake.backbone")
    fake.backbone.__all__ = list(builtin.__all__)
    for name in builtin.__all__:
        setattr(fake, name, getattr(builtin, name))
        setattr(fake.backbone, name, getattr(builtin, name))
    monkeypatch.setenv(integration.KEEP_BUILTIN_ENV, keep)
    integration.register(fake)
    for name in ("ReXNet_1_0", "ReXNet_1_5"):
        expected = BUILTIN_MODULE if name in builtin_names else integration.__name__
        assert getattr(fake, name).__module__ == expected, (keep, name)
        assert getattr(fake.backbone, name) is getattr(fake, name)
    assert fake.ReXNet_0_9.__module__ == integration.__name__  # no built-in: always the plugin's


def test_a_registration_that_fails_partway_puts_paddleclas_models_back(arch, builtin,
                                                                       monkeypatch, caplog):
    from rexnet_plugin.integrations import autoload
    real = integration.make_factory

    def failing(name, module):
        if name == "ReXNet_2_0":
            raise RuntimeError("simulated failure")
        return real(name, module)

    exported = list(arch.backbone.__all__)
    monkeypatch.setattr(integration, "make_factory", failing)
    for name in VARIANTS:  # as before the plugin: built-ins only
        if name in PADDLECLAS_BUILTIN_NAMES:
            setattr(arch, name, getattr(builtin, name))
            setattr(arch.backbone, name, getattr(builtin, name))
        else:
            vars(arch).pop(name, None)
            vars(arch.backbone).pop(name, None)
    arch.backbone.__all__[:] = [n for n in exported if n in builtin.__all__ or n not in VARIANTS]
    before_all = list(arch.backbone.__all__)
    try:
        with caplog.at_level(logging.WARNING):
            autoload.run_plugins("paddleclas.plugins", arch)  # logs, never raises
        assert "simulated failure" in caplog.text
        for name in PADDLECLAS_BUILTIN_NAMES:
            assert getattr(arch, name) is getattr(builtin, name)
            assert getattr(arch.backbone, name) is getattr(builtin, name)
        assert "ReXNet_0_9" not in vars(arch) and "ReXNet_0_9" not in vars(arch.backbone)
        assert arch.backbone.__all__ == before_all
    finally:
        monkeypatch.setattr(integration, "make_factory", real)
        integration.register(arch)
        arch.backbone.__all__[:] = exported


def test_unknown_name_gets_one_suggestion_and_no_second_guess(arch):
    with pytest.raises(AttributeError) as error:
        getattr(arch, "ReXNet_1_4")
    # As the interpreter prints it (Python 3.10+ appends its own guess where it can).
    last = "".join(traceback.format_exception(type(error.value), error.value,
                                              error.value.__traceback__)).strip().splitlines()[-1]
    assert "Unknown model 'ReXNet_1_4'" in last and "Did you mean ReXNet_1_5 or ReXNet_1_3" in last
    assert ".." not in last and "Did you mean:" not in last  # Python's own guess is not added
