"""Old home of :mod:`liftlearn.engine`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.engine`.
"""

from ._device import autocast_for as _autocast  # noqa: F401
from ._device import resolve_device  # noqa: F401
from .engine.checkpoint import Checkpoint  # noqa: F401
from .engine.loop import TrainConfig  # noqa: F401
from .engine.predict import predict_logits  # noqa: F401

__all__ = ["Checkpoint", "TrainConfig", "predict_logits", "resolve_device"]
