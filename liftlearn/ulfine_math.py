"""Old home of :mod:`liftlearn.nn.ulfine`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.nn.ulfine`.
"""

from .nn.ulfine import *  # noqa: F401,F403
from .nn.ulfine import __all__  # noqa: F401
