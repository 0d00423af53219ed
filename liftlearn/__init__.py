"""liftlearn: long-tailed image classification with CLIP, the scikit-learn way.

The public API:

- :class:`LiftPlusClassifier`: LIFT+ (frozen CLIP + lightweight adapter +
  text-initialised cosine classifier + logit adjustment + minimalist
  augmentation + test-time ensembling).
- :mod:`liftlearn.metrics`: long-tail metrics, reports and scorers.
- :mod:`liftlearn.datasets`: the embedded CIFAR-10-LT sample and loaders.
- :mod:`liftlearn.backbones`: the frozen CLIP backbones and their cache.
"""

__version__ = "0.1.0.dev0"

from .estimators import LiftPlusClassifier
from .exceptions import BackboneError, BadImageError, NotFittedError, TrainingError

__all__ = [
    "BackboneError",
    "BadImageError",
    "LiftPlusClassifier",
    "NotFittedError",
    "TrainingError",
    "__version__",
]
