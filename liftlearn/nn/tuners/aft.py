"""Arbitrary fine-tuning (AFT): a seeded random fraction of the projection
weights of the selected blocks, trained in place of the frozen values.

LIFT+'s heavy-versus-light axis: ``aft_ratio`` of the entries of every
weight and bias of the attention (``in_proj``, ``out_proj``) and/or MLP
(``c_fc``, ``c_proj``) projections are trainable; the others keep their
frozen values. Each forward builds the block's projection as
``frozen.masked_scatter(mask, values)``: a private copy of the weight, so the
shared frozen encoder is never written to. With ``aft_ratio=None`` the ratio
is LIFT+'s automatic one, which trains about as many entries as a C-way
classifier on the D-dimensional feature: ``C / (L (4D + 4))`` (attention),
``C / (L (8D + 5))`` (MLP) or ``C / (L (12D + 9))`` (both), for L blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import TunerMethod, register_tuner

__all__ = ["AFT_LOCATIONS", "MaskedProjections", "auto_aft_ratio", "random_mask"]

#: Where AFT trains, and the projections each location names.
AFT_LOCATIONS = {
    "attn": ("in_proj", "out_proj"),
    "mlp": ("c_fc", "c_proj"),
    "all": ("in_proj", "out_proj", "c_fc", "c_proj"),
}


def auto_aft_ratio(n_classes: int, n_layers: int, width: int, loc: str) -> float:
    """LIFT+'s automatic AFT ratio for ``n_classes`` on ``n_layers`` blocks
    of ``width`` (LIFT+ assumes an MLP four times as wide)."""
    per_layer = {"attn": 4 * width + 4, "mlp": 8 * width + 5, "all": 12 * width + 9}[loc]
    return min(1.0, n_classes / (n_layers * per_layer))


def random_mask(shape, ratio: float) -> torch.Tensor:
    """A boolean mask with ``int(numel * ratio)`` True entries at positions
    drawn by ``torch.randperm`` from the global generator (seeded by the
    caller), as LIFT+ draws them."""
    numel = 1
    for s in shape:
        numel *= int(s)
    chosen = torch.randperm(numel, dtype=torch.int64)[: int(numel * ratio)]
    return torch.zeros(numel, dtype=torch.bool).index_fill_(0, chosen, True).view(*shape)


class MaskedProjections(nn.Module):
    """The trainable entries of a block's projections.

    For each projection ``name`` (in ``names``) and each of its weight and
    bias: ``<name>_weight_mask`` (a boolean buffer) and ``<name>_weight``
    (a Parameter holding the masked entries, initialised to the frozen
    values), likewise for ``_bias``.

    Parameters
    ----------
    frozen : dict
        The block's frozen ``(weight, bias)`` pairs by projection name.
    names : sequence of str
        The projections to train.
    ratio : float
        Fraction of each tensor's entries that is trained.
    """

    def __init__(self, frozen: dict, names, ratio: float):
        super().__init__()
        self.names = tuple(names)
        self.ratio = float(ratio)
        for name in self.names:
            for part, tensor in zip(("weight", "bias"), frozen[name]):
                mask = random_mask(tensor.shape, ratio)
                self.register_buffer(f"{name}_{part}_mask", mask)
                values = torch.masked_select(tensor.detach().float().cpu(), mask).clone()
                setattr(self, f"{name}_{part}", nn.Parameter(values))

    def replacements(self, frozen: dict) -> dict:
        """The projections with the trained entries in place (new tensors)."""
        out = {}
        for name in self.names:
            pair = []
            for part, tensor in zip(("weight", "bias"), frozen[name]):
                mask = getattr(self, f"{name}_{part}_mask")
                values = getattr(self, f"{name}_{part}")
                pair.append(torch.masked_scatter(tensor, mask, values.to(tensor.dtype)))
            out[name] = tuple(pair)
        return out

    def extra_repr(self) -> str:
        return f"names={list(self.names)}, ratio={self.ratio:.3g}"


@register_tuner
class AFTMethod(TunerMethod):
    name = "aft"
    description = ("arbitrary fine-tuning: a seeded random aft_ratio of the attention and/or "
                   "MLP projection weights (aft_loc)")
    attribute = "aft"
    layered = True
    needs_blocks = True
    functional_attention = True
    functional_mlp = True
    options = ("ratio", "loc")

    def resolve_options(self, options, *, n_classes, n_layers, width, mlp_width):
        loc = options.get("loc") or "all"
        if loc not in AFT_LOCATIONS:
            raise ValueError(f"aft_loc={loc!r} must be one of {list(AFT_LOCATIONS)}")
        ratio = options.get("ratio")
        if ratio is None:
            ratio = auto_aft_ratio(n_classes, n_layers, width, loc)
        elif not 0 < float(ratio) <= 1:
            raise ValueError(f"aft_ratio={ratio!r} must be in (0, 1]")
        return {"ratio": float(ratio), "loc": loc}

    def build_block(self, *, index, width, mlp_width, size, block, ratio=None, loc="all"):
        if block is None:
            raise ValueError("adapter='aft' needs the backbone's blocks")
        from ._blocks import frozen_block_projections

        return MaskedProjections(frozen_block_projections(block), AFT_LOCATIONS[loc], ratio)

    def projections(self, module, frozen):
        return module.replacements(frozen)
