"""Old home of :mod:`liftlearn.nn.losses`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.nn.losses`.
"""

from .nn.losses import *  # noqa: F401,F403
from .nn.losses import __all__  # noqa: F401
