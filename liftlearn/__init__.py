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
- :mod:`liftlearn.nn`: the torch modules (backbones and their cache,
  fine-tuning methods, heads, networks).

The names above are imported on first use, so ``import liftlearn`` (and the
``liftlearn`` command's ``--help``) does not pay for importing torch.
"""

from importlib import import_module

__version__ = "0.1.0.dev0"

# name -> module that defines it; resolved lazily by __getattr__ (PEP 562).
_LAZY = {
    "LiftPlusClassifier": "liftlearn.estimators",
    "ULFineClassifier": "liftlearn.estimators",
    "ZeroShotClassifier": "liftlearn.estimators",
    "CLIPFeatures": "liftlearn.estimators",
    "CoOpClassifier": "liftlearn.estimators",
    "load": "liftlearn.persistence",
    "save": "liftlearn.persistence",
    "BackboneError": "liftlearn.exceptions",
    "BadImageError": "liftlearn.exceptions",
    "LiftLearnWarning": "liftlearn.exceptions",
    "ModelFileError": "liftlearn.exceptions",
    "NotFittedError": "liftlearn.exceptions",
    "TrainingError": "liftlearn.exceptions",
    "UnknownLabelWarning": "liftlearn.exceptions",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'liftlearn' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
