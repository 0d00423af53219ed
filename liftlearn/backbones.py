"""Old home of :mod:`liftlearn.nn.backbones`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.nn.backbones`.
"""

from .nn.backbones import *  # noqa: F401,F403
from .nn.backbones import (  # noqa: F401
    DEFAULT_BACKBONE,
    DEFAULT_PRETRAINED,
    TINY_BACKBONE,
    _build_model,
    _open_clip,
)
from .nn.backbones import __all__  # noqa: F401
