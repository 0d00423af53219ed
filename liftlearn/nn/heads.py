"""Classifier heads and their text-based initialisation."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import is_prompt_template
from .backbones import backbone_fingerprint

__all__ = [
    "CLASSIFIERS",
    "DEFAULT_TEMPLATE",
    "CosineClassifier",
    "L2NormClassifier",
    "LayerNormClassifier",
    "LinearClassifier",
    "class_prompts",
    "clear_text_cache",
    "encode_prompts",
    "make_classifier",
    "random_class_vectors",
    "prompt_templates",
    "semantic_init",
    "text_classifier",
]

DEFAULT_TEMPLATE = "a photo of a {}."


class CosineClassifier(nn.Module):
    """``scale * cos(x, w_j)`` for every class j; no bias.

    Parameters
    ----------
    weight : Tensor of shape (n_classes, dim)
        Initial class vectors (their norm is irrelevant).
    scale : float, default=25.0
        LIFT+'s logit scale.
    """

    def __init__(self, weight: torch.Tensor, scale: float = 25.0):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.scale = float(scale)

    @property
    def n_classes(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.weight, dim=-1)
        return self.scale * F.linear(F.normalize(x, dim=-1), w.to(x.dtype))

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        return f"in_features={d}, n_classes={n}, scale={self.scale}"


class LinearClassifier(nn.Module):
    """``x @ W.T + b``: a plain linear classifier (LIFT+'s ``LinearClassifier``).

    Parameters
    ----------
    weight : Tensor of shape (n_classes, dim)
        Initial class vectors, used as given.
    bias : Tensor of shape (n_classes,) or None, default=None
        Initial bias; None starts at zero, as LIFT+ does.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor = None):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())
        b = torch.zeros(weight.shape[0]) if bias is None else bias.detach().clone().float()
        self.bias = nn.Parameter(b)

    @property
    def n_classes(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        return f"in_features={d}, n_classes={n}"


class L2NormClassifier(nn.Module):
    """``x @ normalize(W).T``: unit class vectors on the raw feature; no bias,
    no scale (LIFT+'s ``L2NormClassifier``).

    Parameters
    ----------
    weight : Tensor of shape (n_classes, dim)
        Initial class vectors (their norm is irrelevant).
    """

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())

    @property
    def n_classes(self) -> int:
        return self.weight.shape[0]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.weight, dim=-1)
        return F.linear(self._features(x), w.to(x.dtype))

    def extra_repr(self) -> str:
        n, d = self.weight.shape
        return f"in_features={d}, n_classes={n}"


class LayerNormClassifier(L2NormClassifier):
    """``LN(x) @ normalize(W).T`` with a LayerNorm without affine parameters
    (``eps=1e-12``, computed in fp32), as LIFT+'s ``LayerNormClassifier``.

    Parameters
    ----------
    weight : Tensor of shape (n_classes, dim)
        Initial class vectors (their norm is irrelevant).
    """

    eps = 1e-12

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        # LIFT+ runs its LayerNorms in fp32 whatever the autocast dtype.
        return F.layer_norm(x.float(), x.shape[-1:], eps=self.eps).to(x.dtype)


#: The values of the estimators' ``classifier`` parameter.
CLASSIFIERS = {
    "cosine": "scale * cos(x, w_j), no bias (LIFT+'s default)",
    "linear": "x @ W.T + b",
    "l2norm": "x @ normalize(W).T (raw feature, unit class vectors)",
    "layernorm": "LayerNorm(x) @ normalize(W).T (no affine parameters)",
}


def make_classifier(kind: str, weight: torch.Tensor, scale: float = 25.0) -> nn.Module:
    """The head ``kind`` (a key of :data:`CLASSIFIERS`) with class vectors
    ``weight``; ``scale`` applies to ``"cosine"`` only."""
    if kind == "cosine":
        return CosineClassifier(weight, scale=scale)
    if kind == "linear":
        return LinearClassifier(weight)
    if kind == "l2norm":
        return L2NormClassifier(weight)
    if kind == "layernorm":
        return LayerNormClassifier(weight)
    raise ValueError(f"classifier={kind!r} must be one of {list(CLASSIFIERS)}")


def random_class_vectors(n_classes: int, dim: int, generator: torch.Generator = None) -> torch.Tensor:
    """LIFT+'s random classifier initialisation: rows drawn uniformly in
    ``[-1, 1]`` and rescaled to unit norm (its ``uniform_(-1, 1).renorm_(2, 0,
    1e-5).mul_(1e5)``, which caps every row at norm ``1e-5`` and multiplies
    back).

    Returns
    -------
    weight : Tensor of shape (n_classes, dim), float32
    """
    w = torch.rand(n_classes, dim, generator=generator) * 2 - 1
    return F.normalize(w, dim=-1)


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list:
    """LIFT+'s prompts: the template filled with the name, underscores as spaces."""
    return [template.format(str(name).replace("_", " ")) for name in class_names]


#: Most bytes of text features :func:`encode_prompts` keeps (about 16
#: iNaturalist-sized or 128 ImageNet-sized sets at 512 dimensions).
TEXT_CACHE_BYTES = 256 * 2**20
_text_cache: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_text_cache_lock = threading.Lock()


def _text_key(backbone, prompts: Sequence[str]) -> tuple:
    # The weights (by fingerprint, so a replaced checkpoint is a new key),
    # the tokenizer (by model name), where and in which dtype the tower runs
    # (the rounding differs), and the prompts (template and class names).
    dtype = next(backbone.model.parameters()).dtype
    return (backbone.spec.name, backbone_fingerprint(backbone), str(backbone.device), str(dtype),
            tuple(prompts))


def encode_prompts(backbone, prompts: Sequence[str]) -> torch.Tensor:
    """``backbone.encode_text(prompts)``, kept for the process.

    Every estimator that initialises from text (and every clone a
    ``GridSearchCV`` fits) asks for the same prompts on the same backbone;
    the features are computed once per process, like the backbone itself
    (:func:`~liftlearn.nn.backbones.get_backbone`), and kept, least recently
    used first out, up to :data:`TEXT_CACHE_BYTES`.

    Returns
    -------
    features : Tensor of shape (n_prompts, embed_dim), fp32 on the CPU
        A fresh copy: changing it never changes what later calls get.
    """
    prompts = [str(p) for p in prompts]
    key = _text_key(backbone, prompts)
    with _text_cache_lock:
        cached = _text_cache.get(key)
        if cached is not None:
            _text_cache.move_to_end(key)
            return cached.clone()
    features = backbone.encode_text(prompts)
    size = features.numel() * features.element_size()
    if size <= TEXT_CACHE_BYTES:
        with _text_cache_lock:
            _text_cache[key] = features.clone()
            total = sum(t.numel() * t.element_size() for t in _text_cache.values())
            while total > TEXT_CACHE_BYTES:
                _, old = _text_cache.popitem(last=False)
                total -= old.numel() * old.element_size()
    return features


def clear_text_cache() -> None:
    """Forget every text feature :func:`encode_prompts` kept."""
    with _text_cache_lock:
        _text_cache.clear()


def semantic_init(backbone, class_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """Class vectors from CLIP's text encoder (semantic-aware initialisation).

    Returns the ``(n_classes, feature_dim)`` matrix whose rows, used in a
    cosine classifier on the pre-projection image feature ``f``, give scores
    proportional to zero-shot CLIP's image-text similarity: row j is
    ``normalize(t_j @ proj.T)``, so ``f @ row_j = (f @ proj) . t_j / |proj t_j|``.
    """
    text = encode_prompts(backbone, class_prompts(class_names, template))
    return backbone.text_to_visual(text)


def prompt_templates(prompt_template) -> list:
    """One template or a prompt ensemble, as a non-empty list of templates.

    Raises
    ------
    ValueError
        Unless every template is a str with one ``{}`` (or ``{0}``) where
        the name goes.
    """
    if isinstance(prompt_template, str):
        templates = [prompt_template]
    elif isinstance(prompt_template, (list, tuple)):
        templates = list(prompt_template)
    else:
        templates = []
    if not templates or not all(is_prompt_template(t) for t in templates):
        raise ValueError(
            f"prompt_template={prompt_template!r} must be a str with one '{{}}' where "
            "the class name goes, or a non-empty list of such str (a prompt ensemble)"
        )
    return templates


def text_classifier(backbone, class_names, prompt_template=DEFAULT_TEMPLATE) -> torch.Tensor:
    """Joint-space class embeddings from CLIP's text encoder.

    With several templates (a prompt ensemble) each prompt's embedding is
    L2-normalised, the templates are averaged per class, and the mean is
    normalised again.

    Returns
    -------
    embeddings : Tensor of shape (n_classes, embed_dim), fp32 on the CPU
    """
    per_template = [
        encode_prompts(backbone, class_prompts(class_names, t)) for t in prompt_templates(prompt_template)
    ]
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)
