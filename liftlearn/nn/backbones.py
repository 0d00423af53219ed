"""Frozen CLIP backbones: loading, caching and the text side.

A backbone is named by a :class:`BackboneSpec` (open_clip model name plus the
``pretrained`` source). :func:`get_backbone` builds it once per process and
device and hands the same frozen object to every estimator that asks, so a
``GridSearchCV`` over adapter settings never reloads or copies the weights.
Nothing here trains: parameters are frozen on load and callers never hold an
optimiser over them.

liftlearn ships one architecture of its own, ``"liftlearn-tiny-vit"``: a
four-block ViT on 32x32 images whose random weights (``pretrained=None``) are
fixed by a seed, so tests, examples and CI run offline with the real loading
code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._device import canonical_device
from ..exceptions import BackboneError

__all__ = [
    "Backbone",
    "BackboneSpec",
    "backbone_fingerprint",
    "check_fingerprint",
    "clear_backbone_cache",
    "get_backbone",
    "list_backbones",
    "weights_fingerprint",
]

DEFAULT_BACKBONE = "ViT-B-16-quickgelu"
DEFAULT_PRETRAINED = "openai"
TINY_BACKBONE = "liftlearn-tiny-vit"

_CONFIG_DIR = Path(__file__).with_name("model_configs")
# Random-init weights must not depend on the caller's global RNG, or two
# estimators asking for the "same" random backbone would get different ones.
_RANDOM_INIT_SEED = 0

_cache: dict = {}
_cache_lock = threading.Lock()
_configs_registered = False


def _open_clip():
    """Import open_clip and register liftlearn's model configs once."""
    global _configs_registered
    import open_clip

    if not _configs_registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _configs_registered = True
    return open_clip


def list_backbones() -> list:
    """Names of the open_clip architectures liftlearn can build.

    Returns
    -------
    names : list of str
        open_clip's model configs plus liftlearn's own tiny test model.
    """
    return list(_open_clip().list_models())


@dataclass(frozen=True)
class BackboneSpec:
    """Where a frozen backbone comes from.

    Parameters
    ----------
    name : str
        open_clip model name, e.g. ``"ViT-B-16-quickgelu"`` (also the
        ``"local-dir:/path"`` and ``"hf-hub:org/repo"`` schemas).
    pretrained : str or None
        open_clip pretrained tag (``"openai"``), path of a local checkpoint
        file, or None for random weights (fixed by a seed).
    """

    name: str
    pretrained: Optional[str]

    @classmethod
    def create(cls, name, pretrained) -> "BackboneSpec":
        """Validate and normalise user input into a spec."""
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"backbone must be a non-empty open_clip model name, got {name!r}"
            )
        if pretrained is not None:
            if isinstance(pretrained, os.PathLike):
                pretrained = os.fspath(pretrained)
            if not isinstance(pretrained, str) or not pretrained:
                raise ValueError(
                    "pretrained must be an open_clip tag, a checkpoint path or "
                    f"None, got {pretrained!r}"
                )
            # A path is made absolute so the cache key (and a pickled model)
            # does not depend on the working directory.
            if os.path.exists(pretrained) or os.sep in pretrained:
                pretrained = os.path.abspath(os.path.expanduser(pretrained))
        return cls(name, pretrained)


@contextlib.contextmanager
def _honour_offline_env():
    """Apply ``HF_HUB_OFFLINE`` even when it was set after import.

    huggingface_hub reads the variable once at import; a user who sets it
    later would otherwise wait through about 46 s of retries before the
    error we want to give at once.
    """
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    if flag not in ("1", "true", "yes", "on"):
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip depends on it
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _build_model(spec: BackboneSpec):
    open_clip = _open_clip()
    name = spec.name
    if ":" not in name and name not in open_clip.list_models():
        raise BackboneError(
            f"unknown backbone {name!r}: not an open_clip model config. "
            "See liftlearn.backbones.list_backbones() for the names, or use "
            "'local-dir:/path' for a folder with open_clip_config.json."
        )
    if spec.pretrained is not None and os.sep in spec.pretrained:
        if not os.path.isfile(spec.pretrained):
            raise BackboneError(
                f"pretrained checkpoint {spec.pretrained!r} does not exist "
                "or is not a file"
            )
    try:
        with _honour_offline_env(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
            if spec.pretrained is None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_RANDOM_INIT_SEED)
                    model = open_clip.create_model(name, pretrained=None)
            else:
                model = open_clip.create_model(name, pretrained=spec.pretrained)
    except BackboneError:
        raise
    except Exception as exc:
        hint = ""
        if spec.pretrained is not None and os.sep not in spec.pretrained:
            tags = open_clip.list_pretrained_tags_by_model(name) if ":" not in name else []
            hint = (
                f" Known tags for {name!r}: {tags or 'none'}. Offline, the weights "
                "must already be in the Hugging Face cache (HF_HOME / "
                "HF_HUB_CACHE); otherwise pass pretrained='/path/to/weights."
                "safetensors' or backbone='local-dir:/path'. Set HF_HUB_OFFLINE=1 "
                "to fail fast instead of retrying the network."
            )
        raise BackboneError(
            f"could not load backbone {name!r} with pretrained={spec.pretrained!r}: "
            f"{exc}.{hint}"
        ) from exc
    return model


class Backbone:
    """A frozen open_clip CLIP model and what LIFT+ needs to know about it.

    Do not build this directly; use :func:`get_backbone`.

    Attributes
    ----------
    spec : BackboneSpec
    model : open_clip.CLIP
        The whole CLIP model, every parameter frozen, in eval mode.
    kind : {"vit", "resnet"}
    image_size : int
    mean, std : tuple of float
        Normalisation the backbone was trained with.
    feature_dim : int
        Width of the pre-projection image feature that LIFT+ classifies.
    n_layers : int
        Number of transformer blocks (ViT) or residual stages (ResNet).
    """

    def __init__(self, spec: BackboneSpec, model, device: torch.device):
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        self.spec = spec
        self.device = device
        self.model = model
        model.eval()
        model.requires_grad_(False)
        visual = model.visual
        if isinstance(visual, VisionTransformer):
            self.kind = "vit"
            self.n_layers = len(visual.transformer.resblocks)
            self.feature_dim = visual.transformer.width
        elif isinstance(visual, ModifiedResNet):
            self.kind = "resnet"
            self.n_layers = 4
            self.feature_dim = visual.attnpool.c_proj.out_features
        else:
            raise BackboneError(
                f"backbone {spec.name!r} has a {type(visual).__name__} image "
                "tower; liftlearn supports open_clip's own VisionTransformer and "
                "ModifiedResNet towers (not timm or Hugging Face towers)"
            )
        from open_clip import get_model_preprocess_cfg

        cfg = get_model_preprocess_cfg(model)
        size = cfg.get("size", visual.image_size)
        size = size if isinstance(size, int) else size[0]
        self.image_size = int(size)
        self.mean = tuple(float(v) for v in cfg["mean"])
        self.std = tuple(float(v) for v in cfg["std"])

    @property
    def visual(self):
        return self.model.visual

    def __repr__(self):
        return (
            f"Backbone({self.spec.name!r}, pretrained={self.spec.pretrained!r}, "
            f"device={str(self.device)!r})"
        )

    def __reduce__(self):
        # Pickling a backbone means naming it: the weights are rebuilt from
        # the same source by whoever unpickles it.
        return (get_backbone, (self.spec, "cpu"))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], chunk_size: int = 1000) -> torch.Tensor:
        """L2-normalised joint-space text embeddings, on the CPU in fp32.

        Prompts are encoded in chunks (iNaturalist has 8,142 classes).
        """
        tokenizer = _open_clip().get_tokenizer(self.spec.name)
        out = []
        for start in range(0, len(texts), chunk_size):
            tokens = tokenizer(list(texts[start : start + chunk_size])).to(self.device)
            feats = self.model.encode_text(tokens).float()
            out.append(F.normalize(feats, dim=-1).cpu())
        return torch.cat(out)

    def text_to_visual(self, text_features: torch.Tensor) -> torch.Tensor:
        """Map joint-space text embeddings to the classified image feature.

        For a ViT the classified feature is the pre-projection CLS token, so
        the text embedding is mapped back through the *transpose* of the
        visual projection (LIFT+'s semantic-aware initialisation); a ResNet's
        attention-pool output already lives in the joint space.
        """
        if self.kind == "vit":
            proj = self.visual.proj.detach().float().cpu()
            text_features = text_features @ proj.T
        return F.normalize(text_features, dim=-1)


def get_backbone(
    spec: Union[BackboneSpec, str],
    device: Union[str, torch.device] = "cpu",
    pretrained: Optional[str] = None,
) -> Backbone:
    """The process-wide frozen backbone for ``spec`` on ``device``.

    Parameters
    ----------
    spec : BackboneSpec or str
        The backbone; a str is a model name combined with ``pretrained``.
    device : str or torch.device, default="cpu"
    pretrained : str or None
        Only used when ``spec`` is a str.

    Returns
    -------
    backbone : Backbone
        The same object for every call with an equal spec and device.
    """
    if not isinstance(spec, BackboneSpec):
        spec = BackboneSpec.create(spec, pretrained)
    device = canonical_device(device)
    key = (spec, str(device))
    with _cache_lock:
        backbone = _cache.get(key)
        if backbone is None:
            model = _build_model(spec)
            model = model.to(device)
            backbone = Backbone(spec, model, device)
            _cache[key] = backbone
    return backbone


def clear_backbone_cache() -> None:
    """Forget every cached backbone (their memory is freed once unused)."""
    with _cache_lock:
        _cache.clear()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every tensor's name, dtype, shape and bytes, in order."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            # Raw bytes through a uint8 view: works for every dtype (bf16
            # has no numpy type) without copying the tensor.
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def backbone_fingerprint(backbone: Backbone) -> str:
    """The weights fingerprint of a backbone, computed once per object."""
    fp = getattr(backbone, "_fingerprint", None)
    if fp is None:
        fp = weights_fingerprint(backbone.model)
        backbone._fingerprint = fp
    return fp


def check_fingerprint(backbone: Backbone, expected: Optional[str]) -> None:
    """Refuse a backbone whose weights differ from the ones a model was fitted on."""
    if expected is None:
        return
    actual = backbone_fingerprint(backbone)
    if actual != expected:
        raise BackboneError(
            f"the backbone {backbone.spec.name!r} (pretrained={backbone.spec.pretrained!r}) "
            f"loaded here has weights fingerprint {actual}, but the model was fitted on "
            f"{expected}: the checkpoint or tag now points to different weights. Load "
            "the model where the original weights are available."
        )
