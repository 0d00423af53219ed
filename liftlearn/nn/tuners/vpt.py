"""Visual prompt tuning: learnable tokens right after CLS.

"vpt" (deep): every selected block gets its own prompts, which replace the
previous block's; "vpt-shallow": prompts at the first block only. The
blocks themselves run unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import TunerMethod, _pow2, register_tuner

__all__ = ["MAX_PROMPT_LENGTH", "auto_prompt_length"]

#: The longest prompt a caller may ask for: every block's attention then runs
#: over this many extra tokens (LIFT+'s automatic lengths for 8,142 classes
#: on 12 blocks: 512).
MAX_PROMPT_LENGTH = 1024


def auto_prompt_length(n_classes: int, n_layers: int) -> int:
    """LIFT+'s automatic prompt length, ``2**max(0, int(log2(C / L)))``."""
    return _pow2(n_classes / n_layers)


@register_tuner
class VPTMethod(TunerMethod):
    name = "vpt"
    description = "deep visual prompt tuning: prompts after CLS, replaced in every block"
    attribute = "prompts"
    sized = True
    layered = True
    edits_blocks = False
    identity_at_init = False  # the prompts join the attention

    def auto_size(self, n_classes, n_layers):
        return auto_prompt_length(n_classes, n_layers)

    def max_size(self, width):
        return MAX_PROMPT_LENGTH

    def build_block(self, *, index, width, mlp_width, size, block):
        # N(0, 0.02), as LIFT+.
        return nn.Parameter(torch.empty(size, width).normal_(0.0, 0.02))

    def prompts(self, module):
        return module


@register_tuner
class VPTShallowMethod(VPTMethod):
    name = "vpt-shallow"
    description = "shallow visual prompt tuning: prompts after CLS at the first block"
    layered = False
    fixed_layers = (0,)
