"""The LIFT+ network: frozen backbone + tuner + cosine classifier."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .adapters import Tuner
from .backbones import Backbone, get_backbone
from .data import ImageDataset
from .heads import CosineClassifier
from .training import predict_logits
from .transforms import eval_transform, tte_transform

__all__ = ["LiftNetwork", "predict_images"]


def predict_images(
    network: nn.Module,
    backbone: Backbone,
    paths,
    *,
    tte: bool,
    tte_expand: int,
    batch_size: int,
    device,
    num_workers=None,
    verbose: int = 0,
) -> np.ndarray:
    """Logits of ``network`` for image files, with the backbone's evaluation
    transform (five-crop TTE when ``tte``), averaged over the views.

    The prediction path shared by liftlearn's estimators.

    Parameters
    ----------
    network : nn.Module
        Image batch -> logits, already on ``device``.
    backbone : Backbone
        Gives the resolution and the normalisation.
    paths : sequence of str
        Already validated image files.

    Returns
    -------
    logits : ndarray of shape (n_images, n_classes), float32
    """
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    if tte:
        transform = tte_transform(size, mean, std, expand=int(tte_expand))
    else:
        transform = eval_transform(size, mean, std)
    return predict_logits(
        network,
        ImageDataset(paths, transform),
        batch_size=int(batch_size),
        device=device,
        num_workers=num_workers,
        verbose=int(verbose),
    )


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

    # Pickling keeps what was learned, on the CPU, and names the backbone by
    # its spec and weights fingerprint: files stay small, load on machines
    # without a GPU, and refuse a backbone whose weights have changed.
    def __getstate__(self):
        from .persistence import backbone_fingerprint

        net = self
        if self.device.type != "cpu":
            # Copy everything but the shared backbone, then move the copy.
            net = copy.deepcopy(self, memo={id(self.backbone): self.backbone}).cpu()
        state = net.__dict__.copy()
        state["backbone"] = _BackboneRef(self.backbone.spec, backbone_fingerprint(self.backbone))
        return state

    def __setstate__(self, state):
        from .persistence import check_fingerprint

        ref = state["backbone"]
        backbone = get_backbone(ref.spec, "cpu")
        check_fingerprint(backbone, ref.fingerprint)
        super().__setstate__(state)
        self.backbone = backbone


class _BackboneRef:
    """How a pickled network names its frozen backbone."""

    def __init__(self, spec, fingerprint):
        self.spec = spec
        self.fingerprint = fingerprint
