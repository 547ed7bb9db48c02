"""One factory per named variant, generated from the variant table (zoo.py).

``ReXNet_1_0(pretrained=False, **kwargs)`` and its siblings have the
signature of PaddleClas's legendary-model factories.
"""

from __future__ import annotations

from .model import ReXNet
from .zoo import VARIANTS, get_variant

IMAGENET_CLASSES = 1000  # the class count of every published checkpoint


def create_model(name: str, pretrained=False, **kwargs) -> ReXNet:
    """Build the variant ``name`` (one of ``zoo.VARIANTS``).

    ``pretrained``: False; True (the variant's default weights); a source
    name from the variant table; a local file; or a URL (see
    ``weights.load_pretrained``). With a class_num other than 1000, the
    checkpoint's classifier is skipped (fine-tuning).
    ``kwargs`` go to ``ReXNet`` (class_num, dropout_ratio, drop_path_rate ...).
    """
    variant = get_variant(name)
    model = ReXNet(**variant.arch, **kwargs)
    if pretrained is not False and pretrained is not None:
        from .weights import load_pretrained
        # Published weights have 1000 classes: with another class_num (or a
        # headless model) load the backbone and keep the new classifier.
        load_pretrained(model, pretrained, variant=variant.name,
                        skip_head=model.class_num != IMAGENET_CLASSES)
    return model


def _factory(name: str):
    def factory(pretrained=False, **kwargs) -> ReXNet:
        return create_model(name, pretrained, **kwargs)
    v = VARIANTS[name]
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"ReXNet{'-lite' if v.lite else ' V1'} x{v.width_mult}. "
                       f"See create_model for the arguments.")
    return factory


FACTORIES = {name: _factory(name) for name in VARIANTS}
globals().update(FACTORIES)
__all__ = ["create_model", *FACTORIES]
