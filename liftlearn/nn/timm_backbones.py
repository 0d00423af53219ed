"""Non-CLIP backbones of the LIFT+ study, built with timm.

The study's ImageNet-21k ViTs and ImageNet-1k ResNets, as its code loads them
(``vit_base_patch16_224``, ``vit_base_patch16_384``, ``vit_large_patch16_224``,
``resnet50/101/152``) with the normalisation of its configs (mean = std = 0.5
for the ViTs, ImageNet's for the ResNets). The classification head is removed:
the feature is the ViT's CLS token after its final LayerNorm, or the ResNet's
average-pooled feature. There is no text encoder, so the classifier starts from
the training images (``classifier_init="class_mean"``).

Weights follow liftlearn's offline rules: ``pretrained`` is a local weights
file (a timm/PyTorch state dict, ``.pth``, ``.bin`` or ``.safetensors``) or
None for random weights fixed by a seed; nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

from ..exceptions import BackboneError

__all__ = ["TIMM_BACKBONES", "TimmTower", "build_timm_model", "check_timm_spec", "is_timm_name"]

_HALF = (0.5, 0.5, 0.5)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: liftlearn's names of the study's timm backbones: (timm architecture, extra
#: create_model arguments, resolution, mean, std).
TIMM_BACKBONES = {
    "IN21K-ViT-B/16": ("vit_base_patch16_224", {}, 224, _HALF, _HALF),
    "IN21K-ViT-B/16@384px": ("vit_base_patch16_384", {}, 384, _HALF, _HALF),
    "IN21K-ViT-L/16": ("vit_large_patch16_224", {}, 224, _HALF, _HALF),
    "IN1K-RN50": ("resnet50", {}, 224, _IMAGENET_MEAN, _IMAGENET_STD),
    "IN1K-RN101": ("resnet101", {}, 224, _IMAGENET_MEAN, _IMAGENET_STD),
    "IN1K-RN152": ("resnet152", {}, 224, _IMAGENET_MEAN, _IMAGENET_STD),
    # Tiny random configurations for tests and demos.
    "liftlearn-tiny-timm-vit": (
        "vit_tiny_patch16_224", dict(img_size=32, embed_dim=32, depth=2, num_heads=2), 32, _HALF, _HALF,
    ),
    "liftlearn-tiny-timm-resnet": ("resnet18", dict(layers=[1, 1, 1, 1]), 32, _IMAGENET_MEAN, _IMAGENET_STD),
}

#: Random timm weights are drawn under this seed (as liftlearn's random CLIP).
_RANDOM_INIT_SEED = 0


def is_timm_name(name) -> bool:
    """Whether ``name`` is one of :data:`TIMM_BACKBONES`."""
    return isinstance(name, str) and name in TIMM_BACKBONES


def check_timm_spec(spec) -> None:
    """Raise :class:`BackboneError` unless ``spec`` can be loaded offline."""
    pretrained = spec.pretrained
    if pretrained is not None and not os.path.isfile(pretrained):
        raise BackboneError(
            f"backbone {spec.name!r} takes pretrained=None (random weights) or a local "
            f"weights file of timm's {TIMM_BACKBONES[spec.name][0]!r}; {pretrained!r} is not "
            "a file (liftlearn downloads no timm weights: fetch the file once, e.g. from the "
            "Hugging Face hub, and pass its path)"
        )


class TimmTower(nn.Module):
    """A timm image model without its head, as the ``model`` of a
    :class:`~liftlearn.nn.backbones.Backbone` (``visual`` is the timm model).

    Attributes
    ----------
    is_timm : bool
        Always True (how :class:`Backbone` recognises it).
    kind : {"vit", "resnet"}
    image_size : int
    mean, std : tuple of float
    """

    is_timm = True

    def __init__(self, visual: nn.Module, kind: str, image_size: int, mean, std):
        super().__init__()
        self.visual = visual
        self.kind = kind
        self.image_size = int(image_size)
        self.mean = tuple(mean)
        self.std = tuple(std)

    @property
    def feature_dim(self) -> int:
        return int(self.visual.num_features)

    @property
    def n_layers(self) -> int:
        blocks = getattr(self.visual, "blocks", None)
        return len(blocks) if blocks is not None else 4


def build_timm_model(spec) -> TimmTower:
    """The :class:`TimmTower` of ``spec`` (a name of :data:`TIMM_BACKBONES`)."""
    import timm

    check_timm_spec(spec)
    arch, extra, size, mean, std = TIMM_BACKBONES[spec.name]
    kind = "resnet" if arch.startswith("resnet") else "vit"
    try:
        if spec.pretrained is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_RANDOM_INIT_SEED)
                model = timm.create_model(arch, pretrained=False, num_classes=0, **extra)
        else:
            model = timm.create_model(
                arch, pretrained=True, num_classes=0,
                pretrained_cfg_overlay={"file": spec.pretrained, "hf_hub_id": None, "url": None},
                **extra,
            )
    except BackboneError:
        raise
    except Exception as exc:
        raise BackboneError(
            f"could not load backbone {spec.name!r} (timm {arch!r}) with "
            f"pretrained={spec.pretrained!r}: {str(exc).rstrip().rstrip('.')}."
        ) from exc
    return TimmTower(model, kind, size, mean, std)


def timm_kind(backbone) -> Optional[str]:
    """``"vit"`` or ``"resnet"`` for a timm backbone, None for a CLIP one."""
    model = getattr(backbone, "model", None)
    return model.kind if getattr(model, "is_timm", False) else None
