"""Old home of :mod:`liftlearn.estimators`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.estimators`.
"""

from .estimators.zero_shot import ZeroShotClassifier  # noqa: F401
from .nn.heads import text_classifier  # noqa: F401
from .nn.networks import ZeroShotNetwork as _ZeroShotNetwork  # noqa: F401

__all__ = ["ZeroShotClassifier", "text_classifier"]
