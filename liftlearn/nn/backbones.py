"""Frozen CLIP backbones: loading, caching and the text side.

A backbone is named by a :class:`BackboneSpec` (open_clip model name plus the
``pretrained`` source). :func:`get_backbone` builds it once per process,
device and compute dtype (the estimators' ``precision``) and hands the same
frozen object to every estimator that asks, so a ``GridSearchCV`` over
adapter settings never reloads, copies or re-casts the weights.
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
from typing import Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._device import autocast_for, canonical_device
from .._logging import SharedChange, get_logger
from .._random import seeded_global_rng
from ..exceptions import BackboneError
from .timm_backbones import build_timm_model, check_timm_spec, is_timm_name

__all__ = [
    "Backbone",
    "BackboneSpec",
    "backbone_fingerprint",
    "check_backbone",
    "check_fingerprint",
    "clear_backbone_cache",
    "fp32_backbone",
    "get_backbone",
    "same_weights",
    "list_backbones",
    "unsupported_reason",
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


def unsupported_reason(model_cfg: Optional[dict]) -> Optional[str]:
    """Why liftlearn cannot adapt the model an open_clip config describes, or None.

    Decided from the config alone, without building anything: liftlearn
    trains modules inside open_clip's own ``VisionTransformer`` (classifying
    the CLS token, as LIFT+ does) and ``ModifiedResNet`` image towers.

    Parameters
    ----------
    model_cfg : dict or None
        An open_clip model config (``open_clip.get_model_config(name)``, or
        the ``model_cfg`` of an ``open_clip_config.json``).

    Returns
    -------
    reason : str or None
        E.g. ``"a timm image tower: eva02_base_patch16_clip_224"``; None
        for a supported config (or None given).
    """
    if not model_cfg:
        return None
    vision = model_cfg.get("vision_cfg") or {}
    if "multimodal_cfg" in model_cfg:
        return "a CoCa model: a captioning decoder on top of CLIP"
    if "init_logit_bias" in model_cfg:
        return "a SigLIP model"
    if vision.get("timm_model_name"):
        return f"a timm image tower: {vision['timm_model_name']}"
    if vision.get("hf_model_name"):
        return f"a Hugging Face image tower: {vision['hf_model_name']}"
    if vision.get("attentional_pool"):
        return "attention-pooled image features, not the CLS token LIFT+ classifies"
    pool = vision.get("pool_type", "tok")
    if pool not in (None, "tok"):
        return f"{pool!r}-pooled image features, not the CLS token LIFT+ classifies"
    return None


def list_backbones() -> list:
    """Names of the open_clip architectures liftlearn can fine-tune.

    Read from open_clip's model configs without building a model: those with
    open_clip's own ViT (CLS-token) or CLIP ResNet image tower. timm and
    Hugging Face image towers, SigLIP, CoCa and CLIPA (average-pooled)
    models are left out; :func:`get_backbone` refuses them by name.

    Returns
    -------
    names : list of str
        Supported open_clip model names plus liftlearn's own tiny test
        models, in open_clip's order.
    """
    oc = _open_clip()
    return [name for name in oc.list_models() if unsupported_reason(oc.get_model_config(name)) is None]


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
        return cls(_local_dir_absolute(name), pretrained)


def _local_dir_absolute(name: str) -> str:
    """A ``local-dir:`` name with its folder absolute (and ``~`` expanded,
    which open_clip would not do), as ``pretrained`` paths are, so that the
    cache key and a pickled model do not depend on the working folder;
    other names as they are."""
    if not name.startswith("local-dir:"):
        return name
    folder = name[len("local-dir:"):]
    if not folder.strip():
        raise ValueError("backbone='local-dir:' needs the folder after 'local-dir:'")
    return "local-dir:" + os.path.abspath(os.path.expanduser(folder))


def _offline_env() -> bool:
    """Whether the user asked for offline mode (``HF_HUB_OFFLINE``), read now."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - open_clip depends on it
        return False
    return bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _honour_offline_env(force: bool = False):
    """Apply ``HF_HUB_OFFLINE`` even when it was set after import.

    huggingface_hub reads the variable once at import; a user who sets it
    later would otherwise wait through about 46 s of retries before the
    error we want to give at once. ``force=True`` goes offline whatever the
    variable says: used when the weights are known to be cached, so that
    loading them sends no request (and waits on no retries without a
    network).
    """
    if not (force or _offline_env()):
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


# The capture lists of this thread's open _open_clip_logs blocks, innermost
# last: root's filter runs in the thread that logs, so a record goes to the
# build that made it, not to one running in another thread.
class _Captures(threading.local):
    def __init__(self) -> None:
        self.stack: list = []


_open_clip_captures = _Captures()


def _start_root_guard() -> tuple:
    import logging

    root = logging.getLogger()
    prefix = os.path.dirname(_open_clip().__file__) + os.sep

    def keep(record: logging.LogRecord) -> bool:
        stack = _open_clip_captures.stack
        if stack and str(record.pathname).startswith(prefix):
            stack[-1].append(record)
            return False
        return True

    guard = None
    if not root.handlers:
        # Another thread's root records meanwhile go to this placeholder
        # rather than to logging's last resort; the blocks last a build.
        guard = logging.NullHandler()
        root.addHandler(guard)
    root.addFilter(keep)
    return keep, guard


def _finish_root_guard(saved: tuple) -> None:
    import logging

    keep, guard = saved
    root = logging.getLogger()
    root.removeFilter(keep)
    if guard is not None:
        root.removeHandler(guard)


_root_guard = SharedChange(_start_root_guard, _finish_root_guard)


@contextlib.contextmanager
def _open_clip_logs(expected: Sequence[str] = ()) -> Iterator[None]:
    """Route what open_clip logs while it builds a model to liftlearn's logger.

    open_clip logs on the *root* logger with ``logging.info(...)``, which
    installs a stderr handler on root the first time (``basicConfig``) and so
    makes every library's warnings print from then on, and prints its
    download errors beside the exception liftlearn raises for them. Within
    this block a filter on root keeps open_clip's records from this thread
    (the root handlers never see them) and a placeholder handler stops
    ``basicConfig``; when the block ends without an error they are re-logged
    on ``liftlearn.backbones`` (the CLI's ``-q`` hides them), and on an error
    they are dropped: the exception says what went wrong, once. Records
    containing one of ``expected`` (news the caller asked for, such as
    "initialized randomly" for ``pretrained=None``) are re-logged at INFO.
    Blocks overlapping in threads share the filter and the placeholder,
    which the last of them to end removes.

    Parameters
    ----------
    expected : sequence of str
        Texts whose records are re-logged at INFO at most.

    Yields
    ------
    None
    """
    import logging

    captured: list = []
    stack = _open_clip_captures.stack
    stack.append(captured)
    try:
        with _root_guard.hold():
            yield
    finally:
        stack.pop()
    log = get_logger("backbones")
    for record in captured:
        message = record.getMessage()
        level = record.levelno
        if any(text in message for text in expected):
            level = min(level, logging.INFO)
        log.log(level, "open_clip: %s", message)


def _candidate_weight_files(tag_cfg: dict) -> tuple:
    """Where open_clip's ``download_pretrained`` looks for a tag's weights.

    Returns ``(kind, location, files)``: ``("hf", repo_id, filenames)``
    (safetensors alternatives first, as open_clip tries them),
    ``("url", cache_folder, [filename])`` or ``("file", None, [path])``.
    """
    if tag_cfg.get("file"):
        return "file", None, [tag_cfg["file"]]
    try:
        import huggingface_hub  # noqa: F401
        has_hub = True
    except ImportError:  # pragma: no cover - open_clip depends on it
        has_hub = False
    if has_hub and tag_cfg.get("hf_hub"):
        repo_id, filename = os.path.split(tag_cfg["hf_hub"])
        default = "open_clip_pytorch_model.bin"  # open_clip.constants.HF_WEIGHTS_NAME
        filename = filename or default
        files = []
        if filename == default:
            files.append("open_clip_model.safetensors")
        elif filename.endswith((".bin", ".pth")):
            files.append(filename[:-4] + ".safetensors")
        return "hf", repo_id, files + [filename]
    url = tag_cfg.get("url", "")
    return "url", os.path.expanduser("~/.cache/clip"), [os.path.basename(url)]


def _cached_weights(tag_cfg: dict) -> tuple:
    """``(path or None, where)``: a cached weights file of a pretrained tag
    (None when open_clip would have to download it) and, for messages,
    which cache was looked in."""
    kind, location, files = _candidate_weight_files(tag_cfg)
    if kind == "file":
        return (files[0] if os.path.isfile(files[0]) else None), files[0]
    if kind == "url":
        path = os.path.join(location, files[0])
        return (path if os.path.isfile(path) else None), f"open_clip's cache ({location})"
    from huggingface_hub import constants, try_to_load_from_cache

    for filename in files:
        found = try_to_load_from_cache(location, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return found, ""
    return None, f"Hugging Face cache ({constants.HF_HUB_CACHE})"


def _hub_unreachable(timeout: float = 5.0) -> Optional[str]:
    """Why the Hugging Face Hub cannot be reached now, or None when it can.

    One request without retries (huggingface_hub retries a failed download
    5 times per file with back-off, about a minute without a network); it
    goes through huggingface_hub's own session, so proxies and
    ``HF_ENDPOINT`` are honoured.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means no download
        return f"{constants.ENDPOINT} cannot be reached ({exc})"
    return None


def _missing_weights(spec: "BackboneSpec", where: str, why: str) -> BackboneError:
    """The one error for weights that are neither cached nor downloadable now.

    ``summary`` (what is wrong, without advice) and ``missing_weights`` let
    a caller such as the CLI give advice in its own terms.
    """
    summary = (
        f"the weights of backbone {spec.name!r} for the pretrained tag {spec.pretrained!r} "
        f"are not in the {where}, and {why}"
    )
    err = BackboneError(
        f"{summary}. Download them once with network access (they stay in the cache), "
        "or pass pretrained='/path/to/weights.safetensors' (a local checkpoint file) or "
        "backbone='local-dir:/path' (a folder with open_clip_config.json)."
    )
    err.summary = summary
    err.missing_weights = True
    return err


def _local_dir_config(name: str) -> Optional[dict]:
    """The ``model_cfg`` of a ``local-dir:`` backbone (None if unreadable:
    open_clip then reports the folder)."""
    import json

    path = Path(name.split(":", 1)[1]).expanduser() / "open_clip_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_cfg")
    except (OSError, ValueError, AttributeError):
        return None


def _local_dir_folder(name: str) -> Path:
    """The folder of a ``local-dir:`` name; BackboneError if there is none."""
    folder = Path(name[len("local-dir:"):]).expanduser()
    if not folder.is_dir():
        raise BackboneError(f"backbone {name!r}: the folder {str(folder)!r} does not exist")
    return folder


#: The weight files open_clip loads from a ``local-dir:`` folder.
_LOCAL_DIR_WEIGHTS = ("*.safetensors", "*.bin", "*.pth")


def check_local_dir(spec: "BackboneSpec") -> None:
    """Before a fit: a ``local-dir:`` folder has a weights file (else
    open_clip builds random weights with one log line) and no
    ``pretrained`` file is given beside it (open_clip ignores ``pretrained``
    there). Other specs pass.

    Not part of :func:`check_backbone`: a model fitted (and saved) before
    these rules existed still loads.

    Raises
    ------
    BackboneError
    """
    if not spec.name.startswith("local-dir:"):
        return
    folder = _local_dir_folder(spec.name)
    if not any(next(folder.glob(pattern), None) for pattern in _LOCAL_DIR_WEIGHTS):
        raise BackboneError(
            f"backbone {spec.name!r}: the folder has no weights file open_clip loads "
            "(*.safetensors, *.bin or *.pth, e.g. open_clip_pytorch_model.bin)"
        )
    pretrained = spec.pretrained
    if pretrained is not None and (os.sep in pretrained or os.path.isfile(pretrained)):
        raise BackboneError(
            f"pretrained={pretrained!r} does not apply to backbone {spec.name!r}: open_clip "
            "loads the folder's own weights; put the file in the folder, or leave pretrained "
            "a tag or None"
        )


def check_backbone(spec: "BackboneSpec") -> Optional[str]:
    """Check, without building or downloading, that ``spec`` can be loaded.

    The checks :func:`get_backbone` makes before it builds a model (the
    ``liftlearn`` command makes them before loading any data): the name is
    an open_clip config of a supported family, ``pretrained`` is a tag of
    that model or an existing file, and a tag's weights are in the cache or
    can be downloaded now (one quick request, unless ``HF_HUB_OFFLINE`` is
    set: then only the cache counts).

    Parameters
    ----------
    spec : BackboneSpec

    Returns
    -------
    cached : str or None
        The cached weights file of a pretrained tag, else None.

    Raises
    ------
    BackboneError
        Naming the backbone and what to do instead. For weights that are
        neither cached nor downloadable the error has ``missing_weights =
        True`` and a ``summary`` without advice.
    """
    if is_timm_name(spec.name):
        check_timm_spec(spec)  # the study's non-CLIP backbones (local files only)
        return None
    oc = _open_clip()
    name = spec.name
    if name.startswith("local-dir:"):
        folder = _local_dir_folder(name)
        cfg = _local_dir_config(name)
        if cfg is None:
            raise BackboneError(
                f"backbone {name!r}: {str(folder / 'open_clip_config.json')!r} is missing or "
                "holds no 'model_cfg'"
            )
    elif name.startswith("hf-hub:"):
        return None  # open_clip fetches the config with the weights
    else:
        cfg = oc.get_model_config(name)
        if cfg is None:
            raise BackboneError(
                f"unknown backbone {name!r}: not an open_clip model config; "
                "liftlearn.nn.backbones.list_backbones() lists the supported names, or "
                "use 'local-dir:/path' for a folder with open_clip_config.json"
            )
    reason = unsupported_reason(cfg)
    if reason is not None:
        raise BackboneError(
            f"backbone {name!r} is not supported ({reason}): liftlearn fine-tunes "
            "open_clip's own VisionTransformer (CLS token) and ModifiedResNet image "
            "towers; liftlearn.nn.backbones.list_backbones() lists them"
        )
    if name.startswith("local-dir:"):
        return None  # open_clip reads the folder (check_local_dir, before a fit)
    pretrained = spec.pretrained
    if pretrained is None:
        return None
    if os.sep in pretrained or os.path.isfile(pretrained):
        if not os.path.isfile(pretrained):
            raise BackboneError(
                f"pretrained checkpoint {pretrained!r} does not exist or is not a file"
            )
        return None
    tag_cfg = oc.get_pretrained_cfg(name, pretrained)
    if not tag_cfg:
        tags = oc.list_pretrained_tags_by_model(name)
        raise BackboneError(
            f"{pretrained!r} is neither a pretrained tag of backbone {name!r} nor a file. "
            f"Known tags for {name!r}: {tags or 'none'}"
        )
    cached, where = _cached_weights(tag_cfg)
    if cached is not None:
        return cached
    if _offline_env():
        raise _missing_weights(spec, where, "HF_HUB_OFFLINE is set, so they are not downloaded")
    kind = _candidate_weight_files(tag_cfg)[0]
    if kind == "hf":
        unreachable = _hub_unreachable()
        if unreachable is not None:
            raise _missing_weights(spec, where, unreachable)
    return None


def _build_model(spec: BackboneSpec):
    """Build the open_clip model of ``spec``, after :func:`check_backbone`.

    Refuses unknown and unsupported names, unknown tags and weights that are
    neither cached nor downloadable before open_clip builds or downloads
    anything; open_clip's own log lines go to liftlearn's logger (one error,
    the raised one).
    """
    if is_timm_name(spec.name):
        return build_timm_model(spec)
    open_clip = _open_clip()
    name = spec.name
    cached = check_backbone(spec)
    try:
        # Weights known to be cached load without a network request.
        # pretrained=None asks for random weights: open_clip's warning that
        # none were loaded is news only at INFO.
        expected = ("initialized randomly",) if spec.pretrained is None else ()
        with _honour_offline_env(force=cached is not None), _open_clip_logs(expected), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
            # open_clip initialises every model from the global generator,
            # also when weights are then loaded over it: seeded, under the
            # lock every seeded use of that generator takes, so that the
            # caller's state is put back and a fit initialising in another
            # thread neither perturbs nor sees these draws.
            with seeded_global_rng(_RANDOM_INIT_SEED):
                model = open_clip.create_model(name, pretrained=spec.pretrained)
    except BackboneError:
        raise
    except Exception as exc:
        hint = ""
        if spec.pretrained is not None and os.sep not in spec.pretrained:
            hint = (
                " The weights are downloaded into the Hugging Face cache (HF_HOME / "
                "HF_HUB_CACHE) the first time; without a network pass "
                "pretrained='/path/to/weights.safetensors' or backbone='local-dir:/path'."
            )
        # open_clip's messages end with a period or not: add exactly one.
        raise BackboneError(
            f"could not load backbone {name!r} with pretrained={spec.pretrained!r}: "
            f"{str(exc).rstrip().rstrip('.')}.{hint}"
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
    dtype : torch.dtype
        The dtype its weights are held in, the compute dtype of the networks
        on it (fp32, or bf16/fp16 under the estimators' ``precision``).
    """

    def __init__(self, spec: BackboneSpec, model, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.model = model
        model.eval()
        model.requires_grad_(False)
        visual = model.visual
        if getattr(model, "is_timm", False):
            # A timm tower of the study (liftlearn.nn.timm_backbones): no
            # text encoder; its own resolution and normalisation.
            self.kind = "timm"
            self.n_layers = model.n_layers
            self.feature_dim = model.feature_dim
            self.image_size, self.mean, self.std = model.image_size, model.mean, model.std
            return
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
        dtype = "" if self.dtype is torch.float32 else f", dtype={self.dtype}"
        return (
            f"Backbone({self.spec.name!r}, pretrained={self.spec.pretrained!r}, "
            f"device={str(self.device)!r}{dtype})"
        )

    def __reduce__(self):
        # Pickling a backbone means naming it: the weights are rebuilt from
        # the same source by whoever unpickles it.
        return (get_backbone, (self.spec, "cpu"))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], chunk_size: int = 256) -> torch.Tensor:
        """L2-normalised joint-space text embeddings, on the CPU in fp32.

        Prompts are encoded in chunks (iNaturalist has 8,142 classes), each
        cut to its longest prompt (:func:`encode_tokens`); with more than one
        chunk, prompts of similar length share a chunk.
        """
        if self.kind == "timm":
            raise BackboneError(
                f"backbone {self.spec.name!r} has no text encoder: use "
                "classifier_init='class_mean' (or 'linear_probing' or None)"
            )
        with _open_clip_logs():  # open_clip logs on root (see there)
            tokenizer = _open_clip().get_tokenizer(self.spec.name)
        tokens = tokenizer(list(texts))
        order = torch.arange(len(tokens))
        if len(tokens) > chunk_size:
            # Sorted by length, each chunk is cut to little more than its
            # own prompts (ImageNet's names: 18 tokens at the longest, 9 on
            # average); a single chunk keeps the given order.
            order = torch.argsort((tokens != 0).sum(dim=-1), stable=True)
        out = []
        autocast, _ = autocast_for(self.device, self.dtype)  # its mixed ops, as in training
        for rows in order.split(chunk_size):
            with autocast:
                feats = encode_tokens(self.model, tokens[rows].to(self.device)).float()
            out.append(F.normalize(feats, dim=-1).cpu())
        return torch.cat(out)[torch.argsort(order)]

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


def _causal(mask) -> bool:
    """Whether ``mask`` is the additive causal mask (-inf above the diagonal, 0 elsewhere)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.isneginf(mask[above]).all() and (mask[~above] == 0).all())


def _pooled_length(model, tokens: torch.Tensor) -> Optional[int]:
    """How many leading positions of ``tokens`` decide the pooled text
    feature, or None when every position may (the whole context is needed)."""
    if not (hasattr(model, "token_embedding") and hasattr(model, "positional_embedding")):
        return None  # not open_clip's CLIP text tower (a custom one)
    pool = getattr(model, "text_pool_type", None)
    if pool == "argmax":
        last = tokens.argmax(dim=-1)
    elif pool == "eos" and getattr(model, "text_eos_id", None) is not None:
        last = (tokens == model.text_eos_id).int().argmax(dim=-1)
    else:
        return None  # "last", "first", mean pools: not the end-of-text token
    if not _causal(getattr(model, "attn_mask", None)):
        return None  # bidirectional attention: padding changes every position
    return int(last.max()) + 1


def encode_tokens(model, tokens: torch.Tensor, embedded: Optional[torch.Tensor] = None,
                  length: Optional[int] = None) -> torch.Tensor:
    """``model.encode_text(tokens)``, cut to the context the result depends on.

    CLIP's text attention is causal and the feature is read at the
    end-of-text token, so nothing after the longest prompt's end-of-text
    token reaches it: the tower runs on that many positions, with the
    positional embedding and the causal mask cut to match, instead of the
    whole 77-token context (about 5x less work for ImageNet's class names).
    The same numbers up to float rounding. Towers whose feature may depend
    on later positions (other pools, no causal mask, custom text towers)
    get the whole context.

    Parameters
    ----------
    model : open_clip CLIP model
    tokens : Tensor of shape (n_prompts, context_length)
    embedded : Tensor of shape (n_prompts, context_length, width), optional
        The token embeddings to use instead of ``model.token_embedding(tokens)``
        (CoOp's learned context in place of some of them).
    length : int, optional
        ``_pooled_length(model, tokens)`` when the caller already knows it
        (it costs a device sync to find out).
    """
    n = _pooled_length(model, tokens) if length is None else length
    if embedded is None:
        if n is None or n >= tokens.shape[1]:
            return model.encode_text(tokens)
        embedded = model.token_embedding(tokens[:, :n])
    from open_clip.transformer import text_global_pool

    n = tokens.shape[1] if n is None else n
    tokens, embedded = tokens[:, :n], embedded[:, :n]
    mask = model.attn_mask
    # open_clip's CLIP.encode_text, on the first n positions.
    cast = model.transformer.get_cast_dtype()
    x = embedded.to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=None if mask is None else mask[:n, :n]))
    x = text_global_pool(x, tokens, model.text_pool_type,
                         eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


def get_backbone(
    spec: Union[BackboneSpec, str],
    device: Union[str, torch.device] = "cpu",
    pretrained: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
) -> Backbone:
    """The process-wide frozen backbone for ``spec`` on ``device`` in ``dtype``.

    Parameters
    ----------
    spec : BackboneSpec or str
        The backbone; a str is a model name combined with ``pretrained``.
    device : str or torch.device, default="cpu"
    pretrained : str or None
        Only used when ``spec`` is a str.
    dtype : torch.dtype, default=torch.float32
        The dtype the weights are held in: cast once here, so that autocast
        does not re-cast the frozen weights on every forward (it caches
        casts only of weights that require gradients). Its
        :func:`backbone_fingerprint` is the fp32 weights' one, so a model
        fitted in any precision names the same weights.

    Returns
    -------
    backbone : Backbone
        The same object for every call with an equal spec, device and dtype, as
        long as the weights file behind ``pretrained`` (or the
        ``local-dir:`` folder) keeps its size and modification time: a
        replaced file is loaded afresh, as build tools notice a changed
        input.
    """
    if isinstance(spec, BackboneSpec):
        # A spec read from an older file or pickle may name a local-dir
        # folder by a relative path: the same folder, one cache entry.
        spec = BackboneSpec(_local_dir_absolute(spec.name), spec.pretrained)
    else:
        spec = BackboneSpec.create(spec, pretrained)
    device = canonical_device(device)
    key = (spec, str(device), dtype)
    signature = _source_signature(spec)
    with _cache_lock:
        backbone = _cache.get(key)
        if backbone is None or getattr(backbone, "_source_signature", None) != signature:
            _cache.pop(key, None)  # free the stale weights before loading
            model = _build_model(spec)
            # Hashed in fp32, before the cast (what pickled models name).
            fingerprint = None if dtype is torch.float32 else weights_fingerprint(model)
            model = _cast(model.to(device), dtype)
            backbone = Backbone(spec, model, device, dtype)
            backbone._source_signature = signature
            if fingerprint is not None:
                backbone._fingerprint = fingerprint
            _cache[key] = backbone
    return backbone


def fp32_backbone(backbone: Backbone) -> Backbone:
    """The weights of ``backbone`` held in fp32: itself, or for a backbone
    held in another dtype (``precision``), the process-wide fp32 copy on
    the CPU.

    What a fine-tuning method that trains copies of pretrained weights
    ("full", "bitfit", "aft") copies from: LIFT+ under mixed precision
    trains fp32 master weights initialised from the fp32 checkpoint, not
    from its bf16/fp16 rounding. The CPU, because a GPU then holds only the
    compute-dtype copy (the fp32 one is read once, when a tuner is built).

    Parameters
    ----------
    backbone : Backbone

    Returns
    -------
    fp32 : Backbone

    Raises
    ------
    BackboneError
        When the fp32 weights loaded now are not the ones ``backbone`` was
        cast from (its source changed in between).
    """
    if backbone.dtype is torch.float32:
        return backbone
    return same_weights(backbone, "cpu", torch.float32)


def same_weights(backbone: Backbone, device, dtype: torch.dtype) -> Backbone:
    """The backbone of ``backbone``'s spec on ``device`` in ``dtype``, holding
    the weights ``backbone`` holds.

    The cache loads a weights file afresh when it changed since
    ``backbone`` was built; what was trained on ``backbone`` must not run
    on those, so they are refused.

    Parameters
    ----------
    backbone : Backbone
    device : str or torch.device
    dtype : torch.dtype

    Returns
    -------
    backbone : Backbone

    Raises
    ------
    BackboneError
        When the weights loaded now are not ``backbone``'s.
    """
    other = get_backbone(backbone.spec, device, dtype=dtype)
    check_fingerprint(other, backbone_fingerprint(backbone))
    return other


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``model`` with its floating weights and buffers in ``dtype``; 0-dim
    ones (CLIP's ``logit_scale``) stay fp32, as a bf16 logit scale would
    move zero-shot logits by ~1%."""
    if dtype is torch.float32:
        return model
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point() and t.dim() > 0:
                t.data = t.data.to(dtype)
    return model


def _file_signature(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (path, None)
    return (path, st.st_size, st.st_mtime_ns, st.st_ino)


def _source_signature(spec: BackboneSpec) -> tuple:
    """What the cache compares to notice replaced weights: size, mtime and
    inode of the local files a spec loads (an empty tuple for tags, whose
    cached downloads do not change under a name)."""
    files = []
    if spec.pretrained is not None and os.path.isfile(spec.pretrained):
        files.append(spec.pretrained)
    if spec.name.startswith("local-dir:"):
        folder = spec.name[len("local-dir:"):]
        if os.path.isdir(folder):
            files.extend(sorted(os.path.join(folder, f) for f in os.listdir(folder)))
    return tuple(_file_signature(f) for f in files)


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
