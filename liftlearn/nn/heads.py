"""Classifier heads and their text-based initialisation."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_TEMPLATE",
    "CosineClassifier",
    "class_prompts",
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


def class_prompts(class_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list:
    """LIFT+'s prompts: the template filled with the name, underscores as spaces."""
    return [template.format(str(name).replace("_", " ")) for name in class_names]


def semantic_init(backbone, class_names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> torch.Tensor:
    """Class vectors from CLIP's text encoder (semantic-aware initialisation).

    Returns the ``(n_classes, feature_dim)`` matrix whose rows, used in a
    cosine classifier on the pre-projection image feature ``f``, give scores
    proportional to zero-shot CLIP's image-text similarity: row j is
    ``normalize(t_j @ proj.T)``, so ``f @ row_j = (f @ proj) . t_j / |proj t_j|``.
    """
    text = backbone.encode_text(class_prompts(class_names, template))
    return backbone.text_to_visual(text)


def prompt_templates(prompt_template) -> list:
    """One template or a prompt ensemble, as a non-empty list of templates.

    Raises
    ------
    ValueError
        Unless every template is a str with a ``{}`` where the name goes.
    """
    if isinstance(prompt_template, str):
        templates = [prompt_template]
    elif isinstance(prompt_template, (list, tuple)):
        templates = list(prompt_template)
    else:
        templates = []
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
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
        backbone.encode_text(class_prompts(class_names, t)) for t in prompt_templates(prompt_template)
    ]
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)
