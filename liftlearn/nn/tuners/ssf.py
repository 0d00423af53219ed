"""SSF: scale and shift after qkv, the attention output, fc1 and fc2 of every
block (ResNet: of the pooled feature)."""

from __future__ import annotations

import torch
from torch import nn

from ._base import TunerMethod, register_tuner

__all__ = ["SSF"]


class SSF(nn.Module):
    """Scale and shift of the last dimension: ``x * scale + shift``.

    scale ~ N(1, 0.02), shift ~ N(0, 0.02): not the identity at init.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim).normal_(1.0, 0.02))
        self.shift = nn.Parameter(torch.empty(dim).normal_(0.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class _BlockSSF(nn.Module):
    """The four SSF modules of one block."""

    def __init__(self, dim: int, mlp_width: int):
        super().__init__()
        self.qkv = SSF(3 * dim)
        self.out = SSF(dim)
        self.fc1 = SSF(mlp_width)
        self.fc2 = SSF(dim)


@register_tuner
class SSFMethod(TunerMethod):
    name = "ssf"
    description = "scale and shift after qkv, attention out, fc1 and fc2 (ResNet: pooled feature)"
    attribute = "ssf"
    layered = True
    resnet = True
    functional_attention = True
    functional_mlp = True
    identity_at_init = False  # scale ~ N(1, 0.02), shift ~ N(0, 0.02)

    def build_block(self, *, index, width, mlp_width, size, block):
        return _BlockSSF(width, mlp_width)

    def build_pooled(self, feature_dim):
        return SSF(feature_dim)

    def qkv(self, module, a, qkv):
        return module.qkv(qkv)

    def attn_out(self, module, o):
        return module.out(o)

    def fc1(self, module, m):
        return module.fc1(m)

    def fc2(self, module, m):
        return module.fc2(m)
