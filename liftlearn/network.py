"""Old home of :mod:`liftlearn.nn.networks` and :mod:`liftlearn.engine.predict`; kept for one release.

Model files pickled before liftlearn was split into layers name classes
here, so this module re-exports them; new code imports from :mod:`liftlearn.nn.networks` and :mod:`liftlearn.engine.predict`.
"""

from .engine.predict import predict_images  # noqa: F401
from .nn.networks import LiftNetwork, _BackboneRef  # noqa: F401

__all__ = ["LiftNetwork", "predict_images"]
