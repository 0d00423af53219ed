"""Old home of :mod:`liftlearn.nn.tuners`; kept for one release.

Model files pickled before liftlearn was split into layers name the tuner
classes here (``liftlearn.adapters.Tuner``, ``AdaptFormer``, ...), so this
module re-exports them so that those files still load; new code imports
from :mod:`liftlearn.nn.tuners`.
"""

from .nn.tuners import *  # noqa: F401,F403
from .nn.tuners import (  # noqa: F401
    ADAPTERS,
    RESNET_ADAPTERS,
    SSF,
    TUNERS,
    Adapter,
    AdaptFormer,
    LoRA,
    ResNetTuner,
    Tuner,
    TunerMethod,
    _auto_size,
    _BlockSSF,
    _check_layers,
    auto_adapter_dim,
    auto_lora_rank,
    auto_prompt_length,
    build_tuner,
    register_tuner,
)
from .nn.tuners import __all__  # noqa: F401
