"""LoRA: low-rank updates of the query and value projections (scale 1/r).

``q += B_q A_q a / r`` and ``v += B_v A_v a / r`` with ``a = LN1(x)``; the
attention runs functionally (SDPA on the packed projection).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._base import TunerMethod, _pow2, register_tuner

__all__ = ["LoRA", "auto_lora_rank"]


def auto_lora_rank(n_classes: int, n_layers: int) -> int:
    """LIFT+'s automatic LoRA rank, ``2**max(0, int(log2(C / 4L)))``."""
    return _pow2(n_classes / (4 * n_layers))


class LoRA(nn.Module):
    """Low-rank updates of the query and value projections.

    ``q += B_q A_q a / r`` and ``v += B_v A_v a / r``; B (``*_up``) is zero,
    so the update is 0 at initialisation.

    A (``*_down``, an ``nn.Linear(dim, rank)`` whose weight has shape
    ``(rank, dim)``) is drawn uniformly in ``+-1/sqrt(rank)``, as in LIFT+:
    there A is a ``(dim, rank)`` Parameter initialised with
    ``kaiming_uniform_(a=sqrt(5))``, whose fan-in is its second dimension,
    the rank (gain ``sqrt(2 / (1 + 5))``, bound ``sqrt(3) * gain /
    sqrt(rank) = 1/sqrt(rank)``, std ``1/sqrt(3 * rank)``). liftlearn's
    first LoRA used the Linear's own fan-in, ``dim`` (``+-1/sqrt(dim)``);
    only the initial draw changed, so its model files load unchanged.
    """

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.rank = rank
        self.q_down = nn.Linear(dim, rank, bias=False)
        self.q_up = nn.Linear(rank, dim, bias=False)
        self.v_down = nn.Linear(dim, rank, bias=False)
        self.v_up = nn.Linear(rank, dim, bias=False)
        bound = 1.0 / math.sqrt(rank)
        for down, up in ((self.q_down, self.q_up), (self.v_down, self.v_up)):
            nn.init.uniform_(down.weight, -bound, bound)
            nn.init.zeros_(up.weight)

    def forward(self, a: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv.chunk(3, dim=-1)
        q = q + self.q_up(self.q_down(a)) / self.rank
        v = v + self.v_up(self.v_down(a)) / self.rank
        return torch.cat([q, k, v], dim=-1)


@register_tuner
class LoRAMethod(TunerMethod):
    name = "lora"
    description = "low-rank updates of the query and value projections (scale 1/r)"
    attribute = "lora"
    sized = True
    layered = True
    functional_attention = True

    def auto_size(self, n_classes, n_layers):
        return auto_lora_rank(n_classes, n_layers)

    def build_block(self, *, index, width, mlp_width, size, block):
        return LoRA(width, size)

    def qkv(self, module, a, qkv):
        return module(a, qkv)
