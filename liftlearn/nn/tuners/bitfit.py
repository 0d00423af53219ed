"""BitFit: trainable copies of the block biases (LayerNorm biases included),
used with the frozen weights (ResNet: the biases of the residual stages)."""

from __future__ import annotations

import torch
from torch import nn

from . import _blocks
from ._base import TunerMethod, register_tuner


@register_tuner
class BitFitMethod(TunerMethod):
    name = "bitfit"
    description = "the bias parameters of the blocks (LayerNorm biases included)"
    attribute = "bitfit"
    layered = True
    resnet = True
    needs_blocks = True
    functional_attention = True
    functional_mlp = True
    trains_biases = True

    def build_block(self, *, index, width, mlp_width, size, block):
        # Zero placeholders, overwritten with the pretrained biases where the
        # frozen block is given (always through build_tuner).
        sizes = _blocks.block_bias_sizes(width, mlp_width)
        biases = nn.ParameterDict({k: nn.Parameter(torch.zeros(n)) for k, n in sizes.items()})
        if block is not None:
            with torch.no_grad():
                for k, b in _blocks.frozen_block_biases(block).items():
                    biases[k].copy_(b.detach().float())
        return biases

    def biases(self, module):
        return module
