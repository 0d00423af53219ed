"""liftlearn: long-tailed image classification with CLIP, the scikit-learn way.

The public API:

- :class:`LiftPlusClassifier`: LIFT+ (frozen CLIP + lightweight adapter +
  text-initialised cosine classifier + logit adjustment + minimalist
  augmentation + test-time ensembling).
- :class:`ULFineClassifier`: its semi-supervised sibling (unlabeled images
  marked ``y == -1``).
- :class:`ZeroShotClassifier`: CLIP zero-shot, the baseline row.
- :class:`CLIPFeatures`: frozen or adapted CLIP features for Pipelines.
- :func:`save` / :func:`load`: pickle-free model files (safetensors + JSON).
- :mod:`liftlearn.metrics`: long-tail metrics, reports and scorers.
- :mod:`liftlearn.datasets`: the embedded CIFAR-10-LT sample and loaders.
- :mod:`liftlearn.backbones`: the frozen CLIP backbones and their cache.
"""

__version__ = "0.1.0.dev0"

from .estimators import LiftPlusClassifier
from .exceptions import BackboneError, BadImageError, NotFittedError, TrainingError
from .features import CLIPFeatures
from .persistence import load, save
from .semi_supervised import ULFineClassifier
from .zero_shot import ZeroShotClassifier

__all__ = [
    "BackboneError",
    "BadImageError",
    "CLIPFeatures",
    "LiftPlusClassifier",
    "NotFittedError",
    "TrainingError",
    "ULFineClassifier",
    "ZeroShotClassifier",
    "__version__",
    "load",
    "save",
]
