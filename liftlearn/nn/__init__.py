"""Torch modules: the layer every other part of liftlearn builds on.

- :mod:`liftlearn.nn.backbones`: frozen CLIP backbones, their process-wide
  cache and weights fingerprint, and the text side.
- :mod:`liftlearn.nn.tuners`: the fine-tuning methods, registered by name.
- :mod:`liftlearn.nn.heads`: the cosine classifier and its text
  initialisation.
- :mod:`liftlearn.nn.losses`: the logit-adjusted loss.
- :mod:`liftlearn.nn.ulfine`: ULFine's tensor math.
- :mod:`liftlearn.nn.networks`: the networks the estimators fit.

This package imports torch and open_clip, never scikit-learn, and nothing
from the layers above it (``engine``, ``estimators``, ``persistence``,
``cli``).
"""

from .backbones import (
    Backbone,
    BackboneSpec,
    clear_backbone_cache,
    get_backbone,
    list_backbones,
)

__all__ = ["Backbone", "BackboneSpec", "clear_backbone_cache", "get_backbone", "list_backbones"]
