"""The LIFT+ network: frozen backbone + tuner + cosine classifier."""

from __future__ import annotations

import torch
from torch import nn

from .adapters import Tuner
from .backbones import Backbone, get_backbone
from .heads import CosineClassifier

__all__ = ["LiftNetwork"]


class LiftNetwork(nn.Module):
    """Image batch -> class logits.

    Only the tuner and the head are registered sub-modules: they are what
    ``parameters()``, ``state_dict()``, ``.to()`` and pickling see. The
    frozen backbone is a plain attribute, shared with every other network
    built on the same spec and device, and pickles as its spec.

    Parameters
    ----------
    backbone : Backbone
    tuner : Tuner
    head : CosineClassifier
    """

    def __init__(self, backbone: Backbone, tuner: Tuner, head: CosineClassifier):
        super().__init__()
        self.backbone = backbone
        self.tuner = tuner
        self.head = head

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def to_device(self, device) -> "LiftNetwork":
        """Move the trainable parts and switch to the backbone on ``device``."""
        device = torch.device(device)
        self.to(device)
        if self.backbone.device != self.head.weight.device:
            self.backbone = get_backbone(self.backbone.spec, self.head.weight.device)
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.tuner.features(self.backbone.visual, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def n_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
