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
None for random weights fixed by a seed; nothing is downloaded. A file whose
tensors have other shapes (a ViT of another resolution) is refused rather
than resampled.
"""

from __future__ import annotations

import os
from typing import Optional

from torch import nn

from .._random import seeded_global_rng
from ..exceptions import BackboneError

__all__ = ["TIMM_BACKBONES", "TimmTower", "build_timm_model", "check_timm_spec", "is_timm_name",
           "timm_name_kind"]

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


def timm_name_kind(name: str) -> str:
    """``"vit"`` or ``"resnet"``: the kind of the :data:`TIMM_BACKBONES` entry
    ``name``, known from the name alone (before anything is built)."""
    return "resnet" if TIMM_BACKBONES[name][0].startswith("resnet") else "vit"


def _check_shapes(spec, arch: str, state: dict, model: nn.Module) -> None:
    """Refuse a weights file whose tensors timm reshaped while loading them.

    timm's ViT checkpoint filter resamples ``pos_embed`` (another
    resolution) and ``patch_embed.proj.weight`` (another patch size) to the
    model's shapes without a word; the LIFT+ study loads each resolution's
    own weights, so a file of another shape is a mistake to report, as a
    ResNet file of another shape already is (by timm's strict load).
    """
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and tuple(tensor.shape) != tuple(own[key].shape):
            raise BackboneError(
                f"pretrained={spec.pretrained!r} holds {key} of shape {tuple(tensor.shape)}, but "
                f"backbone {spec.name!r} (timm {arch!r}) has {key} of shape "
                f"{tuple(own[key].shape)}: the file is for another resolution or patch size; "
                "liftlearn does not resample weights (pass the file of this backbone)"
            )


def build_timm_model(spec) -> TimmTower:
    """The :class:`TimmTower` of ``spec`` (a name of :data:`TIMM_BACKBONES`)."""
    import timm
    from timm.models import load_state_dict

    check_timm_spec(spec)
    arch, extra, size, mean, std = TIMM_BACKBONES[spec.name]
    try:
        overlay = {}
        if spec.pretrained is not None:
            # Read as timm reads a pretrained "file", but by us, so that the
            # shapes in the file can be compared with the model's afterwards.
            state = load_state_dict(spec.pretrained)
            overlay = {"pretrained_cfg_overlay": {"state_dict": state, "file": None,
                                                  "hf_hub_id": None, "url": None}}
        # timm initialises every model from torch's global generator (a
        # pretrained one too, before its weights are loaded): seeded under
        # liftlearn's lock, with the caller's generator state put back.
        with seeded_global_rng(_RANDOM_INIT_SEED):
            model = timm.create_model(arch, pretrained=spec.pretrained is not None,
                                      num_classes=0, **overlay, **extra)
        if overlay:
            # timm keeps its config on the model: without this the file's
            # tensors would stay alive (and be deep-copied by "full").
            model.pretrained_cfg.pop("state_dict", None)
            _check_shapes(spec, arch, state, model)
    except BackboneError:
        raise
    except Exception as exc:
        raise BackboneError(
            f"could not load backbone {spec.name!r} (timm {arch!r}) with "
            f"pretrained={spec.pretrained!r}: {str(exc).rstrip().rstrip('.')}."
        ) from exc
    return TimmTower(model, timm_name_kind(spec.name), size, mean, std)


def timm_kind(backbone) -> Optional[str]:
    """``"vit"`` or ``"resnet"`` for a timm backbone, None for a CLIP one."""
    model = getattr(backbone, "model", None)
    return model.kind if getattr(model, "is_timm", False) else None
