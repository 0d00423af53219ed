"""Training losses for long-tailed data: the losses of the LIFT+ study.

Every loss is built from the training images per class and maps float
logits and integer targets to a scalar. Classes without training images are
never a target; where a formula would divide by or take the log of their
zero count, a documented finite stand-in keeps the loss finite.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOSSES",
    "BalancedSoftmaxLoss",
    "ClassBalancedLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "GeneralizedReweightLoss",
    "LADELoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "log_prior",
    "make_loss",
]

# Stands in for log(0) for classes without training images: the softmax
# weight of such a class becomes ~1e-13 (no gradient to speak of), while
# staying finite so that mixed precision never meets an infinity.
_LOG_ZERO = -30.0


def log_prior(class_counts) -> torch.Tensor:
    """``log(n_j / sum(n))`` per class, with a large finite value for ``n_j = 0``."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("class_counts must be a non-empty 1-D array of counts with a positive sum")
    prior = counts / counts.sum()
    with np.errstate(divide="ignore"):
        logp = np.where(prior > 0, np.log(prior), _LOG_ZERO)
    return torch.as_tensor(logp, dtype=torch.float32)


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted cross-entropy: ``CE(z + tau * log(prior), y)``.

    The adjustment only applies in training; predictions use the raw logits,
    which moves the decision boundaries towards the head classes' side and
    so favours the tail. With ``tau=1`` this equals Balanced Softmax.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
        Training images per class.
    tau : float, default=1.0
    """

    def __init__(self, class_counts, tau: float = 1.0):
        super().__init__()
        self.tau = float(tau)
        self.register_buffer("log_prior", log_prior(class_counts))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        adjusted = logits.float() + self.tau * self.log_prior
        return F.cross_entropy(adjusted, target)


def _counts(class_counts) -> np.ndarray:
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("class_counts must be a non-empty 1-D array of counts with a positive sum")
    return counts


class CrossEntropyLoss(nn.Module):
    """Plain cross-entropy ``CE(z, y)`` (LIFT+'s ``"CE"``).

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
        Unused; taken so that every loss is built alike.
    """

    def __init__(self, class_counts=None):
        super().__init__()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target)


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced Softmax, ``CE(z + log(prior), y)``: logit adjustment with
    ``tau = 1`` (Ren et al., 2020).

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
    """

    def __init__(self, class_counts):
        super().__init__(class_counts, tau=1.0)


class FocalLoss(nn.Module):
    """Focal loss ``mean((1 - p_y)**gamma * CE_i)`` with ``p_y = exp(-CE_i)``
    (Lin et al., 2017), unweighted as in LIFT+.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
        Unused.
    gamma : float, default=2.0
    """

    def __init__(self, class_counts=None, gamma: float = 2.0):
        super().__init__()
        if not gamma >= 0:
            raise ValueError(f"focal loss: gamma={gamma!r} must be >= 0")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        p = torch.exp(-ce)
        return ((1 - p) ** self.gamma * ce).mean()


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss (Cao et al., 2019).

    The target logit is lowered by ``s * m_y`` with ``m_j`` proportional to
    ``n_j**(-1/4)`` and the largest margin ``max_m``; the logits are already
    scaled by the classifier, so only the margin is scaled. A class without
    training images (never a target) gets the largest margin, ``max_m``.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
    max_m : float, default=0.5
    s : float, default=25.0
        Margin scale; LIFT+ passes its classifier scale (25).
    """

    def __init__(self, class_counts, max_m: float = 0.5, s: float = 25.0):
        super().__init__()
        counts = _counts(class_counts)
        if not max_m > 0 or not s > 0:
            raise ValueError(f"LDAM loss: max_m={max_m!r} and s={s!r} must be > 0")
        seen = counts > 0
        m = np.zeros_like(counts)
        m[seen] = 1.0 / np.sqrt(np.sqrt(counts[seen]))
        m = m * (max_m / m[seen].max())
        m[~seen] = max_m
        self.max_m, self.s = float(max_m), float(s)
        self.register_buffer("margins", torch.as_tensor(m, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        onehot = F.one_hot(target, logits.shape[1]).bool()
        shifted = logits - (self.margins[target] * self.s)[:, None]
        return F.cross_entropy(torch.where(onehot, shifted, logits), target)


class _WeightedCE(nn.Module):
    """Cross-entropy with per-class weights (a weighted mean over the batch,
    as ``F.cross_entropy(weight=...)`` computes it)."""

    #: Normalised by the batch's own total weight: the mean of micro-batch
    #: losses is not the batch's loss, so gradient accumulation changes it.
    batch_statistics = True

    def __init__(self, weights: np.ndarray):
        super().__init__()
        self.register_buffer("class_weights", torch.as_tensor(weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.class_weights)


def _normalised(weights: np.ndarray, seen: np.ndarray) -> np.ndarray:
    # Weights of classes without images are 0 (they are never a target);
    # the mean is over the others, which is LIFT+'s mean when all have images.
    out = np.zeros_like(weights)
    out[seen] = weights[seen] / weights[seen].mean()
    return out


class ClassBalancedLoss(_WeightedCE):
    """Class-balanced cross-entropy (Cui et al., 2019): class weights
    ``(1 - beta) / (1 - beta**n_j)``, normalised to mean 1.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
    beta : float, default=0.9999
    """

    def __init__(self, class_counts, beta: float = 0.9999):
        counts = _counts(class_counts)
        if not 0 <= beta < 1:
            raise ValueError(f"class-balanced loss: beta={beta!r} must be in [0, 1)")
        seen = counts > 0
        w = np.zeros_like(counts)
        w[seen] = (1.0 - beta) / (1.0 - beta ** counts[seen])
        super().__init__(_normalised(w, seen))
        self.beta = float(beta)


class GeneralizedReweightLoss(_WeightedCE):
    """Generalised re-weighting (Zhang et al., 2021): class weights
    ``prior_j**(-exp_scale)``, normalised to mean 1.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
    exp_scale : float, default=1.0
    """

    def __init__(self, class_counts, exp_scale: float = 1.0):
        counts = _counts(class_counts)
        seen = counts > 0
        w = np.zeros_like(counts)
        w[seen] = 1.0 / (counts[seen] / counts.sum()) ** exp_scale
        super().__init__(_normalised(w, seen))
        self.exp_scale = float(exp_scale)


class LADELoss(nn.Module):
    """LADE (Hong et al., 2021): Balanced Softmax plus ``estim_loss_weight``
    times the negated, prior-weighted ReMINE lower bound of each class's
    ``log p(y|x)`` spread, as LIFT+ computes it.

    For class j with ``n_j`` images in the batch (``x_ij`` the logits):
    ``first_j = sum_{i: y_i = j} x_ij / (n_j + 1e-8)``, ``second_j =
    logsumexp_i(x_ij - log(prior_j + 1e-9) + log(1/C + 1e-9)) - log(N)``,
    ``bound_j = first_j - second_j - remine_lambda * second_j**2``, and the
    loss is ``BS(x, y) - estim_loss_weight * sum_j prior_j * bound_j``.

    Parameters
    ----------
    class_counts : array-like of shape (n_classes,)
    remine_lambda : float, default=0.1
    estim_loss_weight : float, default=0.1
    """

    #: Per-class statistics of the batch: not a mean over its items, so
    #: gradient accumulation changes it.
    batch_statistics = True

    def __init__(self, class_counts, remine_lambda: float = 0.1, estim_loss_weight: float = 0.1):
        super().__init__()
        counts = _counts(class_counts)
        prior = counts / counts.sum()
        self.remine_lambda = float(remine_lambda)
        self.estim_loss_weight = float(estim_loss_weight)
        self.register_buffer("prior", torch.as_tensor(prior, dtype=torch.float32))
        self.register_buffer("log_prior", log_prior(counts))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        n, c = logits.shape
        ce = F.cross_entropy(logits + self.log_prior, target)
        member = (target[None, :] == torch.arange(c, device=target.device)[:, None])  # C x N
        per_class = logits.T * member
        spread = (logits - torch.log(self.prior + 1e-9) + math.log(1.0 / c + 1e-9)).T
        first = per_class.sum(-1) / (member.sum(-1).float() + 1e-8)
        second = torch.logsumexp(spread, -1) - math.log(n)
        bound = first - second - self.remine_lambda * second ** 2
        return ce - self.estim_loss_weight * torch.sum(bound * self.prior)


#: The values of the estimators' ``loss`` parameter: class and the
#: hyper-parameters ``loss_params`` may set, with LIFT+'s defaults (LDAM's
#: ``s`` defaults to the classifier's ``scale``, as LIFT+ passes it).
LOSSES = {
    "la": (LogitAdjustedLoss, {}),
    "ce": (CrossEntropyLoss, {}),
    "focal": (FocalLoss, {"gamma": 2.0}),
    "ldam": (LDAMLoss, {"max_m": 0.5, "s": None}),
    "cb": (ClassBalancedLoss, {"beta": 0.9999}),
    "grw": (GeneralizedReweightLoss, {"exp_scale": 1.0}),
    "bs": (BalancedSoftmaxLoss, {}),
    "lade": (LADELoss, {"remine_lambda": 0.1, "estim_loss_weight": 0.1}),
}


def check_loss_params(loss: str, loss_params) -> dict:
    """``loss_params`` checked against :data:`LOSSES`: a dict of real
    numbers whose keys ``loss`` takes. Returns a plain dict of floats.

    Raises
    ------
    ValueError
        Naming the unknown key or the bad value.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} must be one of {list(LOSSES)}")
    allowed = LOSSES[loss][1]
    out = {}
    for key, value in dict(loss_params or {}).items():
        if key not in allowed:
            takes = f"takes {sorted(allowed)}" if allowed else "takes no loss_params"
            hint = " (set tau itself for loss='la')" if key == "tau" else ""
            raise ValueError(f"loss_params key {key!r} does not apply to loss={loss!r}; it {takes}{hint}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(value)):
            raise ValueError(f"loss_params[{key!r}]={value!r} must be a finite real number")
        out[key] = float(value)
    return out


def make_loss(loss: str, class_counts, *, tau: float = 1.0, scale: float = 25.0, loss_params=None) -> nn.Module:
    """The training criterion ``loss`` (a key of :data:`LOSSES`).

    Parameters
    ----------
    loss : str
    class_counts : array-like of shape (n_classes,)
    tau : float, default=1.0
        The logit adjustment of ``"la"``.
    scale : float, default=25.0
        The default of LDAM's ``s`` (LIFT+ passes the classifier scale).
    loss_params : dict or None
        Hyper-parameters overriding the defaults in :data:`LOSSES`.
    """
    params = check_loss_params(loss, loss_params)
    cls, defaults = LOSSES[loss]
    kwargs = {**defaults, **params}
    if loss == "la":
        kwargs["tau"] = float(tau)
    if loss == "ldam" and kwargs["s"] is None:
        kwargs["s"] = float(scale)
    return cls(class_counts, **kwargs)
