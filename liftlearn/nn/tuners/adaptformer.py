"""AdaptFormer (the LIFT+ default): a bottleneck parallel to every block's MLP.

``out = h + ls_2(MLP(LN2(h))) + s * up(relu(down(LN(h))))``
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ._base import TunerMethod, _pow2, register_tuner

__all__ = ["AdaptFormer", "auto_adapter_dim"]


def auto_adapter_dim(n_classes: int, n_layers: int) -> int:
    """LIFT+'s automatic bottleneck width, ``2**max(0, int(log2(C / 2L)))``.

    Chosen so that the adapter has about as many parameters as a C-way
    classifier on the same features.
    """
    return _pow2(n_classes / (2 * n_layers))


class AdaptFormer(nn.Module):
    """Parallel bottleneck adapter: ``s * up(relu(down(LN(h))))``.

    Parameters
    ----------
    dim : int
        Width of the residual stream.
    bottleneck : int
        Width of the hidden layer.
    scale : float or None, default=1.0
        Initial value of the learnable output scale ``s``; None for no scale
        (the sequential :class:`~liftlearn.nn.tuners.Adapter`).
    """

    def __init__(self, dim: int, bottleneck: int, scale: Optional[float] = 1.0):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.scale = None if scale is None else nn.Parameter(torch.tensor(float(scale)))
        # LIFT+: down-projection Kaiming-uniform(a=sqrt(5)) (torch's Linear
        # default) with zero bias; up-projection all zeros, so the module
        # outputs exactly 0 until trained.
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # The adapter's LayerNorm runs in fp32 like open_clip's own norms;
        # under autocast the linear layers then run in low precision.
        z = self.ln(h.float()).to(h.dtype) if h.dtype != torch.float32 else self.ln(h)
        out = self.up(torch.relu(self.down(z)))
        return out if self.scale is None else out * self.scale


@register_tuner
class AdaptFormerMethod(TunerMethod):
    name = "adaptformer"
    description = "AdaptFormer bottleneck parallel to the MLP of every block (LIFT+ default)"
    attribute = "adaptformer"
    sized = True
    layered = True

    def auto_size(self, n_classes, n_layers):
        return auto_adapter_dim(n_classes, n_layers)

    def build_block(self, *, index, width, mlp_width, size, block):
        return AdaptFormer(width, size)

    def parallel(self, module, h):
        return module(h)
