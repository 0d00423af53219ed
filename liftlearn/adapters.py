"""Lightweight fine-tuning modules that adapt a frozen CLIP image encoder.

A *tuner* owns every trainable module that lives inside the image encoder and
knows how to run the frozen encoder with those modules in place. The frozen
encoder itself is never modified: the tuner re-implements the forward pass of
open_clip's ``VisionTransformer`` around the frozen sub-modules, so a single
backbone can serve any number of estimators at once.

The LIFT+ default is AdaptFormer: in every block, a bottleneck MLP running
parallel to the block's MLP, reading the residual stream *before* ``ln_2``
through its own LayerNorm, with a zero-initialised up-projection so that the
adapted encoder equals the frozen one at initialisation.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

__all__ = [
    "ADAPTERS",
    "AdaptFormer",
    "Tuner",
    "auto_adapter_dim",
    "build_tuner",
]

#: The values of the ``adapter`` parameter, with what each trains.
ADAPTERS = {
    "adaptformer": "AdaptFormer bottleneck parallel to the MLP of every block (LIFT+ default)",
    "none": "nothing in the encoder: the cosine classifier alone (linear probing)",
}


def auto_adapter_dim(n_classes: int, n_layers: int) -> int:
    """LIFT+'s automatic bottleneck width, ``2**max(0, int(log2(C / 2L)))``.

    Chosen so that the adapter has about as many parameters as a C-way
    classifier on the same features.
    """
    return 2 ** max(0, int(math.log2(n_classes / (2 * n_layers))))


class AdaptFormer(nn.Module):
    """Parallel bottleneck adapter: ``s * up(relu(down(LN(h))))``.

    Parameters
    ----------
    dim : int
        Width of the residual stream.
    bottleneck : int
        Width of the hidden layer.
    scale : float, default=1.0
        Initial value of the learnable output scale ``s``.
    """

    def __init__(self, dim: int, bottleneck: int, scale: float = 1.0):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
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
        return self.up(torch.relu(self.down(z))) * self.scale


class Tuner(nn.Module):
    """The trainable modules inside a ViT image encoder, and its forward.

    Parameters
    ----------
    adapter : str
        One of :data:`ADAPTERS`.
    width : int
        Width of the encoder's residual stream.
    n_layers : int
        Number of transformer blocks.
    adapter_dim : int
        Bottleneck width (ignored by ``"none"``).
    """

    def __init__(self, adapter: str, width: int, n_layers: int, adapter_dim: int):
        super().__init__()
        if adapter not in ADAPTERS:
            raise ValueError(
                f"unknown adapter {adapter!r}; choose one of {sorted(ADAPTERS)}"
            )
        self.adapter = adapter
        self.adapter_dim = adapter_dim
        self.adaptformer: Optional[nn.ModuleList] = None
        if adapter == "adaptformer":
            self.adaptformer = nn.ModuleList(
                AdaptFormer(width, adapter_dim) for _ in range(n_layers)
            )

    def _block(self, i: int, block, x: torch.Tensor) -> torch.Tensor:
        if self.adaptformer is None:
            return block(x)
        x = x + block.ls_1(block.attention(q_x=block.ln_1(x)))
        h = x
        return h + block.ls_2(block.mlp(block.ln_2(h))) + self.adaptformer[i](h)

    def features(self, visual, images: torch.Tensor) -> torch.Tensor:
        """Pre-projection image features: ``ln_post`` of the CLS token.

        Parameters
        ----------
        visual : open_clip.transformer.VisionTransformer
            The frozen image tower.
        images : Tensor of shape (n, 3, H, W)
        """
        if not hasattr(visual, "transformer"):
            # A CLIP ResNet: the attention-pool output is the feature.
            return visual(images)
        x = visual._embeds(images)
        for i, block in enumerate(visual.transformer.resblocks):
            x = self._block(i, block, x)
        pooled, _ = visual._pool(x)
        return pooled


def build_tuner(adapter: str, backbone, n_classes: int, adapter_dim=None) -> Tuner:
    """The tuner for ``adapter`` on ``backbone``, sized for ``n_classes``.

    ``adapter_dim=None`` uses LIFT+'s automatic size (:func:`auto_adapter_dim`).
    """
    if backbone.kind != "vit":
        if adapter != "none":
            raise ValueError(
                f"adapter={adapter!r} needs a ViT backbone; {backbone.spec.name!r} "
                "is a ResNet (use adapter='none')"
            )
    if adapter_dim is None:
        adapter_dim = auto_adapter_dim(n_classes, backbone.n_layers)
    elif adapter == "none":
        raise ValueError("adapter_dim does not apply to adapter='none'; leave it None")
    return Tuner(adapter, backbone.feature_dim, backbone.n_layers, int(adapter_dim))
