"""One factory per named variant: ``ReXNet_1_0(pretrained=False, **kwargs)``.

The factories are written out (so grep, IDEs and type checkers find them);
``tests/test_zoo.py`` checks that they are exactly the variant table's names.
They have the signature of PaddleClas's legendary-model factories.
"""

from __future__ import annotations

from .model import ReXNet
from .zoo import get_variant


def create_model(name: str, pretrained=False, *, skip_head: bool = False, **kwargs) -> ReXNet:
    """Build the variant ``name`` (one of ``zoo.VARIANTS``).

    ``pretrained``: False; True (the variant's default weights); a source
    name from the variant table; a local file; or a URL (see
    ``weights.load_pretrained``). The classifier of the weights is left out
    when ``skip_head`` is set, when the model is headless (``class_num=0``),
    or when published weights meet another class count (fine-tuning); any
    other mismatch is an error (``weights.should_skip_head`` is the rule).
    ``kwargs`` go to ``ReXNet`` (class_num, dropout_ratio, drop_path_rate ...).
    """
    variant = get_variant(name)
    model = ReXNet(**variant.arch, **kwargs)
    if pretrained is not False and pretrained is not None:
        from .weights import load_pretrained, should_skip_head
        load_pretrained(model, pretrained, variant=variant.name,
                        skip_head=should_skip_head(model.class_num, pretrained, skip_head,
                                                   variant.name))
    return model


def ReXNet_0_9(pretrained=False, **kwargs) -> ReXNet:
    """ReXNet_0_9; see ``create_model`` for the arguments."""
    return create_model("ReXNet_0_9", pretrained, **kwargs)


def ReXNet_1_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNet_1_0; see ``create_model`` for the arguments."""
    return create_model("ReXNet_1_0", pretrained, **kwargs)


def ReXNet_1_3(pretrained=False, **kwargs) -> ReXNet:
    """ReXNet_1_3; see ``create_model`` for the arguments."""
    return create_model("ReXNet_1_3", pretrained, **kwargs)


def ReXNet_1_5(pretrained=False, **kwargs) -> ReXNet:
    """ReXNet_1_5; see ``create_model`` for the arguments."""
    return create_model("ReXNet_1_5", pretrained, **kwargs)


def ReXNet_2_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNet_2_0; see ``create_model`` for the arguments."""
    return create_model("ReXNet_2_0", pretrained, **kwargs)


def ReXNet_2_2(pretrained=False, **kwargs) -> ReXNet:
    """ReXNet_2_2; see ``create_model`` for the arguments."""
    return create_model("ReXNet_2_2", pretrained, **kwargs)


def ReXNet_3_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNet_3_0; see ``create_model`` for the arguments."""
    return create_model("ReXNet_3_0", pretrained, **kwargs)


def ReXNetLite_1_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetLite_1_0; see ``create_model`` for the arguments."""
    return create_model("ReXNetLite_1_0", pretrained, **kwargs)


def ReXNetLite_1_3(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetLite_1_3; see ``create_model`` for the arguments."""
    return create_model("ReXNetLite_1_3", pretrained, **kwargs)


def ReXNetLite_1_5(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetLite_1_5; see ``create_model`` for the arguments."""
    return create_model("ReXNetLite_1_5", pretrained, **kwargs)


def ReXNetLite_2_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetLite_2_0; see ``create_model`` for the arguments."""
    return create_model("ReXNetLite_2_0", pretrained, **kwargs)


def ReXNetR_1_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetR_1_0; see ``create_model`` for the arguments."""
    return create_model("ReXNetR_1_0", pretrained, **kwargs)


def ReXNetR_1_3(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetR_1_3; see ``create_model`` for the arguments."""
    return create_model("ReXNetR_1_3", pretrained, **kwargs)


def ReXNetR_1_5(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetR_1_5; see ``create_model`` for the arguments."""
    return create_model("ReXNetR_1_5", pretrained, **kwargs)


def ReXNetR_2_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetR_2_0; see ``create_model`` for the arguments."""
    return create_model("ReXNetR_2_0", pretrained, **kwargs)


def ReXNetR_3_0(pretrained=False, **kwargs) -> ReXNet:
    """ReXNetR_3_0; see ``create_model`` for the arguments."""
    return create_model("ReXNetR_3_0", pretrained, **kwargs)


__all__ = [
    "create_model", "ReXNet_0_9", "ReXNet_1_0", "ReXNet_1_3", "ReXNet_1_5",
    "ReXNet_2_0", "ReXNet_2_2", "ReXNet_3_0", "ReXNetLite_1_0", "ReXNetLite_1_3",
    "ReXNetLite_1_5", "ReXNetLite_2_0", "ReXNetR_1_0", "ReXNetR_1_3", "ReXNetR_1_5",
    "ReXNetR_2_0", "ReXNetR_3_0",
]
