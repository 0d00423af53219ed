"""Old home of :mod:`liftlearn.estimators`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.estimators`.
"""

from .estimators.features import CLIPFeatures  # noqa: F401
from .nn.networks import FeatureNetwork as _FeatureNetwork  # noqa: F401

__all__ = ["CLIPFeatures"]
