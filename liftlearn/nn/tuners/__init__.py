"""Fine-tuning methods that adapt a frozen CLIP image encoder, by name.

Each method of the LIFT+ study is one :class:`TunerMethod` in its own module,
registered in :data:`TUNERS` by :func:`register_tuner`: it declares what it
accepts (``sized``: ``adapter_dim``; ``layered``: ``adapter_layers``;
``resnet``: CLIP ResNets) and where it acts, through hooks inside a pre-LN
block (``h`` is the residual stream)::

    a = LN1(h); qkv = a W_in + b_in
    q += LoRA_q(a); v += LoRA_v(a)          # "lora"
    qkv = SSF_qkv(qkv)                      # "ssf"
    o = SSF_out(SDPA(q, k, v) W_out + b_out)
    h = h + ls_1(o)
    m = SSF_fc2(fc2(act(SSF_fc1(fc1(LN2(h))))))
    m = m + Adapter(m)                      # "adapter" (sequential)
    m = ls_2(m) + AdaptFormer(h)            # "adaptformer" (LIFT+ default)
    out = h + m

"vpt" inserts learnable prompt tokens right after CLS; "bitfit" trains copies
of the block biases (the frozen weights are used with the tuner's biases);
"full" trains a private deep copy of the selected blocks.

A :class:`Tuner` (:class:`ResNetTuner` for a CLIP ResNet) owns the trainable
modules of one method and runs the frozen encoder with them in place; the
encoder itself is never modified, so one backbone serves any number of
estimators. :func:`build_tuner` builds one for a backbone.

Adding a method: write a module with a registered :class:`TunerMethod`
subclass and import it below (one line); no other file changes.
"""

from ._base import TUNERS, Tuner, TunerMethod, _auto_size, _check_layers, register_tuner

# The built-in methods, registered on import, in the order of ADAPTERS.
from . import adaptformer, adapter, lora, vpt, ssf, bitfit, full, none  # noqa: E402,F401,I001
from . import aft  # noqa: E402,F401
from . import clip_adapter  # noqa: E402,F401

from ._build import build_tuner, check_timm_adapter, weights_source  # noqa: E402
from .adaptformer import AdaptFormer, auto_adapter_dim  # noqa: E402
from .adapter import Adapter  # noqa: E402
from .lora import LoRA, auto_lora_rank  # noqa: E402
from .resnet import ResNetTuner  # noqa: E402
from .ssf import SSF, _BlockSSF  # noqa: E402
from .vpt import auto_prompt_length  # noqa: E402

__all__ = [
    "ADAPTERS",
    "RESNET_ADAPTERS",
    "TUNERS",
    "Adapter",
    "AdaptFormer",
    "LoRA",
    "ResNetTuner",
    "SSF",
    "Tuner",
    "TunerMethod",
    "auto_adapter_dim",
    "auto_lora_rank",
    "auto_prompt_length",
    "build_tuner",
    "check_timm_adapter",
    "register_tuner",
    "weights_source",
]

#: The built-in values of the ``adapter`` parameter, with what each trains
#: (from the registry when this package is imported; :data:`TUNERS` also has
#: methods registered later).
ADAPTERS = {name: method.description for name, method in TUNERS.items()}

#: The built-in methods that apply to a CLIP ResNet.
RESNET_ADAPTERS = tuple(name for name, method in TUNERS.items() if method.resnet)
