"""The scikit-learn estimators.

- :class:`LiftPlusClassifier`: LIFT+.
- :class:`ULFineClassifier`: ULFine, LIFT+ with unlabeled images.
- :class:`ZeroShotClassifier`: zero-shot CLIP.
- :class:`CLIPFeatures`: frozen or adapted CLIP features.
- :class:`CoOpClassifier`: CoOp prompt learning (the LIFT+ study's text-side baseline).

All four share the abstract bases of :mod:`liftlearn.estimators._base`.
"""

from .coop import CoOpClassifier
from .features import CLIPFeatures
from .lift_plus import LiftPlusClassifier
from .ulfine import ULFineClassifier
from .zero_shot import ZeroShotClassifier

__all__ = ["CLIPFeatures", "CoOpClassifier", "LiftPlusClassifier", "ULFineClassifier", "ZeroShotClassifier"]
