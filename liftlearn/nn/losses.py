"""Training losses for long-tailed data."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogitAdjustedLoss", "log_prior"]

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
