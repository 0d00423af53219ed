"""Old home of :mod:`liftlearn.estimators`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.estimators`.
"""

from .data import SSLDataset  # noqa: F401
from .estimators.ulfine import ULFineClassifier  # noqa: F401
from .nn.networks import ULFineNetwork  # noqa: F401

__all__ = ["SSLDataset", "ULFineClassifier", "ULFineNetwork"]
