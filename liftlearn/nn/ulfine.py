"""The tensor math of ULFine's parts, kept free of data loading and training.

ULFine (Zhang, Li, Geng & Chen, 2025, arXiv 2505.05062) has two parts,
Prototype Adaptive Fitting (PAF) and Dual Logit Fusion (DLF), run under
FixMatch-style pseudo-labelling.  No code is public and the full text was not
available; ``shared/reference/ulfine.md`` keeps three sources apart, and so
do the docstrings here:

- **paper**: the abstract (the two parts, their purpose, LP/LFT/FFT findings);
- **review**: a third-party review of the paper, second hand: the PAF update
  ``c_t <- (1 - a_k) c_t + a_k c_v`` with ``a_k = m P_u[k] / max_i P_u[i]``,
  visual prototypes as moving averages of labeled class means, an
  orthogonality constraint listed under PAF (formula unknown), and DLF
  fusing textual-prototype logits with linear-probing logits;
- **ours**: liftlearn's reconstruction of everything else (normalisations,
  the orthogonality step, the fusion rule, how ``P_u`` is measured), each a
  parameter of :class:`~liftlearn.ULFineClassifier`.

Each function is a pure function of its tensors, so that tests can check it
on hand-made inputs.  The training task applies the running updates
(visual prototypes, ``P_u``, PAF, orthogonality) once per optimizer step,
from the whole logical batch, so that results do not depend on gradient
accumulation.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "confidence_momentum",
    "dual_logit_fusion",
    "ema_class_histogram",
    "masked_mean",
    "orthogonality_penalty",
    "orthogonality_step",
    "paf_update",
    "pseudo_labels",
    "update_visual_prototypes",
]


def update_visual_prototypes(
    prototypes: torch.Tensor,
    seen: torch.Tensor,
    features: torch.Tensor,
    targets: torch.Tensor,
    momentum: float,
) -> None:
    """Moving average of each class's mean labeled feature, in place.

    Review: the visual prototype of class k is a moving average of the mean
    feature of the labeled samples of class k in each mini-batch.  Ours:
    features are L2-normalised first (the heads are cosine heads, so only
    directions matter), a class seen for the first time takes its batch
    mean outright instead of averaging with a meaningless zero vector, and
    "mini-batch" is the whole logical batch of an optimizer step (the
    caller concatenates its micro-batches).

    Parameters
    ----------
    prototypes : Tensor of shape (n_classes, dim)
        Updated in place for the classes present in ``targets``.
    seen : bool Tensor of shape (n_classes,)
        Which prototypes hold a value; updated in place.
    features : Tensor of shape (n, dim)
    targets : long Tensor of shape (n,)
    momentum : float
        Weight of the new batch mean, in (0, 1].
    """
    if len(targets) == 0:
        return
    feats = F.normalize(features.detach().float(), dim=-1)
    n_classes = prototypes.shape[0]
    sums = torch.zeros_like(prototypes).index_add_(0, targets, feats)
    counts = torch.bincount(targets, minlength=n_classes).to(prototypes.dtype)
    present = counts > 0
    means = sums[present] / counts[present, None]
    old = prototypes[present]
    fresh = ~seen[present]
    blended = torch.where(fresh[:, None], means, (1 - momentum) * old + momentum * means)
    prototypes[present] = blended
    seen |= present


def confidence_momentum(unlabeled_prior: torch.Tensor, base_momentum: float) -> torch.Tensor:
    """PAF's per-class momentum ``a_k = m * P_u[k] / max_i P_u[i]``.

    Review: this form (the value of ``m`` is unknown).  It moves the
    textual prototypes of the classes the model predicts most on unlabeled
    data fastest, and barely touches the rarely predicted (tail) ones, whose
    visual prototypes rest on few images.
    """
    peak = unlabeled_prior.max()
    if peak <= 0:
        return torch.zeros_like(unlabeled_prior)
    return base_momentum * unlabeled_prior / peak


def paf_update(
    text_prototypes: torch.Tensor,
    visual_prototypes: torch.Tensor,
    seen: torch.Tensor,
    unlabeled_prior: torch.Tensor,
    base_momentum: float,
) -> torch.Tensor:
    """Prototype Adaptive Fitting: ``c_t <- (1 - a_k) c_t + a_k c_v`` per class.

    Review: the update and ``a_k`` (:func:`confidence_momentum`), applied
    every step.  Ours: both prototypes are unit vectors and the result is
    re-normalised, so that the update rotates a direction rather than
    shrinking it; classes without a visual prototype yet (``seen`` False)
    are left alone.

    Returns
    -------
    Tensor of shape (n_classes, dim)
        The new textual prototypes (the inputs are not modified).
    """
    a = confidence_momentum(unlabeled_prior.float(), base_momentum)
    a = torch.where(seen, a, torch.zeros_like(a))[:, None]
    t = F.normalize(text_prototypes.float(), dim=-1)
    v = F.normalize(visual_prototypes.float(), dim=-1)
    return F.normalize((1 - a) * t + a * v, dim=-1)


def orthogonality_penalty(weight: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine similarity between different classes' vectors.

    Review: PAF has an orthogonality constraint; its formula is unknown.
    This measure is **ours**: 0 when the class vectors are mutually
    orthogonal, 1 when all are parallel.  :func:`orthogonality_step` takes
    a gradient-free step on it for the textual prototypes (the default, the
    paper's reading); with ``orthogonality_target="linear"`` it is instead
    a loss term on the linear head's class vectors.
    """
    w = F.normalize(weight.float(), dim=-1)
    n = w.shape[0]
    if n < 2:
        return w.new_zeros(())
    gram = w @ w.T
    off = gram - torch.diag_embed(torch.diagonal(gram))
    return off.pow(2).sum() / (n * (n - 1))


def orthogonality_step(prototypes: torch.Tensor, rate: float) -> torch.Tensor:
    """One gradient-free step that pushes the class prototypes apart.

    **Ours** (the paper's orthogonality formula is unknown): for unit
    prototypes ``c_i``,

    ``c_i <- normalize(c_i - rate * mean_{j != i} (c_i . c_j) c_j)``,

    i.e. each prototype loses ``rate`` times its mean projection onto the
    other classes' prototypes.  It is a gradient step of size
    ``rate * n / 4`` on :func:`orthogonality_penalty` (whose gradient for
    ``c_i`` is ``4 / (n (n - 1)) * sum_{j != i} (c_i . c_j) c_j``), written
    per class so that ``rate`` does not depend on the number of classes.
    The textual prototypes carry no gradient (PAF moves them), so the
    constraint is applied as a step, once per optimizer step, after the PAF
    update.  Mutually orthogonal prototypes are a fixed point; ``rate=0``
    only re-normalises.

    Parameters
    ----------
    prototypes : Tensor of shape (n_classes, dim)
    rate : float
        Step size, ``>= 0``.

    Returns
    -------
    Tensor of shape (n_classes, dim)
        New unit prototypes (the input is not modified).
    """
    c = F.normalize(prototypes.float(), dim=-1)
    n = c.shape[0]
    if n < 2 or rate == 0:
        return c
    gram = c @ c.T
    off = gram - torch.diag_embed(torch.diagonal(gram))
    return F.normalize(c - rate * (off @ c) / (n - 1), dim=-1)


def dual_logit_fusion(
    text_logits: torch.Tensor, linear_logits: torch.Tensor, weight: float
) -> torch.Tensor:
    """Dual Logit Fusion: ``(1 - w) * z_text + w * z_linear``.

    Paper/review: DLF fuses textual-prototype logits with linear-probing
    logits.  Ours: a convex combination with weight ``w`` on the linear
    head.  The class-prior adjustment lives in the linear head's training
    loss (logit adjustment by the prior of labeled plus pseudo-labeled
    images), which makes its raw logits prior-free, so the fused logits need
    no further correction.
    """
    return (1.0 - weight) * text_logits.float() + weight * linear_logits.float()


def pseudo_labels(logits: torch.Tensor, threshold: float) -> tuple:
    """FixMatch's hard pseudo-labels: the arg-max, kept at confidence >= threshold.

    FixMatch's rule (exact); which logits propose them (the fused ones) and
    the threshold are ours.

    Returns
    -------
    labels : long Tensor of shape (n,)
    mask : bool Tensor of shape (n,)
        True where the softmax confidence reaches ``threshold``.
    """
    probs = torch.softmax(logits.detach().float(), dim=-1)
    confidence, labels = probs.max(dim=-1)
    return labels, confidence >= threshold


def ema_class_histogram(
    prior: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, momentum: float
) -> torch.Tensor:
    """Move the unlabeled class-prior estimate towards a batch's pseudo-labels.

    Ours (the paper's measurement of ``P_u`` is unknown): the histogram of
    the logical batch's *confident* pseudo-labels, normalised, blended in
    with weight ``momentum``.  A batch without confident pseudo-labels
    leaves the estimate unchanged.
    """
    kept = labels[mask]
    if len(kept) == 0:
        return prior
    hist = torch.bincount(kept, minlength=prior.shape[0]).to(prior.dtype)
    return (1 - momentum) * prior + momentum * hist / hist.sum()


def masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """FixMatch's unlabeled loss reduction: masked values averaged over *all* samples."""
    if mask is not None:
        values = values * mask.to(values.dtype)
    return values.sum() / max(len(values), 1)
