"""Sequential bottleneck adapter on the MLP output of every block.

``m = MLP(LN2(h)); m = m + up(relu(down(LN(m))))``
"""

from __future__ import annotations

from ._base import TunerMethod, register_tuner
from .adaptformer import AdaptFormer, auto_adapter_dim

__all__ = ["Adapter"]


class Adapter(AdaptFormer):
    """Sequential bottleneck adapter ``up(relu(down(LN(m))))`` (no scale),
    added to the MLP output: ``m = m + Adapter(m)``."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__(dim, bottleneck, scale=None)


@register_tuner
class AdapterMethod(TunerMethod):
    name = "adapter"
    description = "sequential bottleneck adapter on the MLP output of every block"
    attribute = "seq_adapter"
    sized = True
    layered = True

    def auto_size(self, n_classes, n_layers):
        return auto_adapter_dim(n_classes, n_layers)

    def build_block(self, *, index, width, mlp_width, size, block):
        return Adapter(width, size)

    def mlp_out(self, module, m):
        return m + module(m)
