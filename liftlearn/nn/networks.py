"""The networks liftlearn's estimators fit and predict with.

Every network maps an image batch to one row per image (class logits or
features) and holds the frozen backbone as a plain attribute: only the
trainable parts (tuner, head, buffers) are registered sub-modules, so they
are what ``parameters()``, ``state_dict()``, ``.to()`` and pickling see. A
pickled network names its backbone by spec and weights fingerprint, and
rebuilds (and checks) it when unpickled.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import ulfine as um
from .._device import canonical_device
from .backbones import Backbone, backbone_fingerprint, check_fingerprint, get_backbone, same_weights
from .heads import CosineClassifier
from .tuners import Tuner
from .tuners._blocks import image_embedding

__all__ = ["FeatureNetwork", "LiftNetwork", "SharedBackboneNetwork", "ULFineNetwork", "ZeroShotNetwork"]


class SharedBackboneNetwork(nn.Module):
    """Base of the networks that run on a shared frozen backbone.

    Parameters
    ----------
    backbone : Backbone
        Kept as a plain attribute (never a sub-module): shared with every
        other network built on the same spec and device.
    """

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return self.backbone.device

    def to_device(self, device, dtype=None) -> "SharedBackboneNetwork":
        """Move the trainable parts and switch to the backbone on ``device``
        held in ``dtype`` (None: the current backbone's dtype); the
        trainable parts stay fp32."""
        device = canonical_device(device)
        dtype = self.backbone.dtype if dtype is None else dtype
        self.to(device)
        if self.backbone.device != device or self.backbone.dtype is not dtype:
            # Trained on the weights it holds: a file replaced since is refused.
            self.backbone = same_weights(self.backbone, device, dtype)
        return self

    def n_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def __call__(self, *args, **kwargs):
        # A backbone held in bf16/fp16 takes its input under autocast (the
        # trainable parts are fp32). The loops open one; a caller of the
        # fitted module_ (a callback, a user) need not.
        dtype = self.backbone.dtype
        device_type = self.backbone.device.type
        if dtype is torch.float32 or torch.is_autocast_enabled(device_type):
            return super().__call__(*args, **kwargs)
        with torch.autocast(device_type, dtype=dtype):
            return super().__call__(*args, **kwargs)

    def __deepcopy__(self, memo):
        # The copy shares the frozen backbone (cached, never trained) and
        # keeps the device and dtype; pickling, by contrast, names the
        # backbone and moves what was learned to the CPU.
        memo[id(self.backbone)] = self.backbone
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    # Pickling keeps what was learned, on the CPU, and names the backbone by
    # its spec and weights fingerprint: files stay small, load on machines
    # without a GPU, and refuse a backbone whose weights have changed.
    def __getstate__(self):
        net = self
        if self.device.type != "cpu":
            # Copy everything but the shared backbone, then move the copy.
            net = copy.deepcopy(self, memo={id(self.backbone): self.backbone}).cpu()
        state = net.__dict__.copy()
        state["backbone"] = _BackboneRef(self.backbone.spec, backbone_fingerprint(self.backbone))
        return state

    def __setstate__(self, state):
        ref = state["backbone"]
        backbone = get_backbone(ref.spec, "cpu")
        check_fingerprint(backbone, ref.fingerprint)
        super().__setstate__(state)
        self.backbone = backbone


class LiftNetwork(SharedBackboneNetwork):
    """Image batch -> class logits: frozen backbone + tuner + cosine head.

    Parameters
    ----------
    backbone : Backbone
    tuner : Tuner
    head : CosineClassifier
    """

    def __init__(self, backbone: Backbone, tuner: Tuner, head: CosineClassifier):
        super().__init__(backbone)
        self.tuner = tuner
        self.head = head

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.tuner.features(self.backbone.visual, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class ULFineNetwork(LiftNetwork):
    """LIFT+'s network with a second head of textual prototypes.

    ``head`` is the trained (linear-probing) cosine classifier; the textual
    prototypes are a buffer, moved only by PAF (and its orthogonality step),
    never by gradients. ``forward`` returns the logits used for
    pseudo-labels and predictions: the DLF fusion of both heads when
    ``dlf`` is on; otherwise the textual head's alone with ``text_only``
    (PAF without DLF: the only way PAF can act on predictions) or the linear
    head's alone.

    Parameters
    ----------
    backbone, tuner, head
        As in :class:`LiftNetwork`.
    text_prototypes : Tensor of shape (n_classes, dim)
        Initial textual prototypes (the semantic-aware initialisation).
    dlf : bool
        Fuse the two heads.
    fusion_weight : float
        Weight of the linear head in the fusion.
    text_only : bool, default=False
        Without ``dlf``: predict from the textual head instead of the
        linear one. Ignored with ``dlf``.
    """

    def __init__(self, backbone, tuner, head: CosineClassifier, text_prototypes: torch.Tensor,
                 dlf: bool, fusion_weight: float, text_only: bool = False):
        super().__init__(backbone, tuner, head)
        self.register_buffer("text_prototypes", F.normalize(text_prototypes.detach().float(), dim=-1))
        self.dlf = bool(dlf)
        self.fusion_weight = float(fusion_weight)
        self.text_only = bool(text_only)

    def __setstate__(self, state):
        # Networks pickled before ``text_only`` existed predicted from the
        # linear head whenever DLF was off.
        state.setdefault("text_only", False)
        super().__setstate__(state)

    def text_logits(self, features: torch.Tensor) -> torch.Tensor:
        # Same scale as the linear head, so that the fusion weight compares
        # like with like.
        f = F.normalize(features.float(), dim=-1)
        return self.head.scale * f @ self.text_prototypes.T

    def fused_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Prediction logits from pre-computed features (see class doc)."""
        if not self.dlf and self.text_only:
            return self.text_logits(features)
        linear = self.head(features)
        if not self.dlf:
            return linear.float()
        return um.dual_logit_fusion(self.text_logits(features), linear, self.fusion_weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fused_logits(self.features(images))


class ZeroShotNetwork(SharedBackboneNetwork):
    """Image batch -> ``logit_scale * cos(image embedding, class embedding)``.

    Parameters
    ----------
    backbone : Backbone
    text : Tensor of shape (n_classes, embed_dim)
        Normalised class embeddings (a buffer).
    logit_scale : float
    """

    def __init__(self, backbone: Backbone, text: torch.Tensor, logit_scale: float):
        super().__init__(backbone)
        self.register_buffer("text", text.detach().float())
        self.logit_scale = float(logit_scale)

    @property
    def device(self) -> torch.device:
        return self.text.device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = F.normalize(image_embedding(self.backbone.visual, images).float(), dim=-1)
        return self.logit_scale * image @ self.text.T


class FeatureNetwork(SharedBackboneNetwork):
    """Images -> (optionally normalised) pre-projection features.

    Parameters
    ----------
    backbone : Backbone
    tuner : Tuner
        "none" for the frozen encoder, or a fitted estimator's tuner.
    normalize : bool
    """

    def __init__(self, backbone: Backbone, tuner: Tuner, normalize: bool):
        super().__init__(backbone)
        self.tuner = tuner
        self.normalize = bool(normalize)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.tuner.features(self.backbone.visual, images)
        # In fp32: a bf16 row normalised in bf16 is unit length to 1e-3 only.
        return F.normalize(f.float(), dim=-1) if self.normalize else f


class _BackboneRef:
    """How a pickled network names its frozen backbone."""

    def __init__(self, spec, fingerprint):
        self.spec = spec
        self.fingerprint = fingerprint
