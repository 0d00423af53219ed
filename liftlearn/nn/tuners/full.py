"""Full fine-tuning: a private trainable copy of the selected blocks (on a
ResNet or timm tower, a copy of the whole tower whose residual stages or
blocks train, see :func:`~liftlearn.nn.tuners.resnet.full_tuning_parts`);
the shared frozen encoder is never touched."""

from __future__ import annotations

import copy

from . import _blocks
from ._base import TunerMethod, register_tuner


@register_tuner
class FullMethod(TunerMethod):
    name = "full"
    description = "every parameter of the blocks (a private copy; or of the last k blocks)"
    attribute = "blocks"
    layered = True
    resnet = True
    needs_blocks = True
    replaces_block = True

    def build_block(self, *, index, width, mlp_width, size, block):
        if block is None:
            raise ValueError("adapter='full' needs the backbone's blocks to copy")
        # Trained in fp32 whatever dtype the frozen backbone is held in.
        return copy.deepcopy(block).float().requires_grad_(True)

    def replace_block(self, module, x):
        # The private copy runs like every other block (SDPA attention).
        return _blocks.block_forward(module, x)
