"""Old home of :mod:`liftlearn.nn.heads`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.nn.heads`.
"""

from .nn.heads import *  # noqa: F401,F403
from .nn.heads import __all__  # noqa: F401
