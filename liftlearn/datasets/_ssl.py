"""Labeled/unlabeled splits for long-tailed semi-supervised learning (LTSSL)."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from .._labels import _as_label_array, unlabeled_mask
from ._cifar10 import long_tailed_counts

__all__ = ["make_long_tailed_ssl_split"]


def _profile(n_max: int, n_classes: int, imbalance: float, name: str) -> list:
    if int(n_max) != n_max or n_max < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n_max!r}")
    if n_max == 0:
        return [0] * n_classes
    return long_tailed_counts(int(n_max), n_classes, imbalance)


def make_long_tailed_ssl_split(
    y,
    n_max_labeled: int,
    n_max_unlabeled: int,
    imbalance_labeled: float,
    imbalance_unlabeled: float,
    reverse_unlabeled: bool = False,
    random_state=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a long-tailed labeled set and a disjoint unlabeled set from ``y``.

    The conventions of the public LTSSL codebases (DARP, DASO, ACR, ...):
    with K classes in sorted order (class 0 the head) and
    ``r = (1 / g) ** (1 / (K - 1))``, class k gets ``int(N_max * r**k)``
    labeled and ``int(M_max * r_u**k)`` unlabeled samples, drawn without
    overlap from that class's samples in ``y``.  ``reverse_unlabeled``
    reverses the unlabeled profile (class K-1 gets ``M_max``), and
    ``imbalance_unlabeled=1`` makes it uniform.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels of the pool to draw from (for example CIFAR-10's training
        set). ``-1`` is not allowed: it is the output's unlabeled marker.
    n_max_labeled : int
        Labeled samples of the head class (N_1; CIFAR-10-LT: 1500).
    n_max_unlabeled : int
        Unlabeled samples of the most frequent unlabeled class (M_1;
        CIFAR-10-LT: 3000). 0 gives no unlabeled samples.
    imbalance_labeled : float
        Labeled imbalance ratio g_l >= 1 (CIFAR-10-LT: 100).
    imbalance_unlabeled : float
        Unlabeled imbalance ratio g_u >= 1 (100, 1 or reversed 100).
    reverse_unlabeled : bool, default=False
        Reverse the unlabeled profile (tail classes most frequent).
    random_state : int, RandomState instance or None, default=None
        Which samples of each class are drawn; None draws fresh entropy
        (numpy's global generator is neither used nor advanced).

    Returns
    -------
    indices : ndarray of int64, shape (n_labeled + n_unlabeled,)
        Positions in ``y`` of the drawn samples, ascending.
    y_ssl : ndarray of shape (n_labeled + n_unlabeled,)
        ``y[indices]`` with -1 for the unlabeled samples; int64 for integer
        labels, object dtype otherwise (as ``sklearn.semi_supervised``).

    Raises
    ------
    ValueError
        If a class has fewer samples than its labeled plus unlabeled counts
        (the message names the class and the numbers), or on bad arguments.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.repeat(np.arange(3), 10)
    >>> idx, y_ssl = make_long_tailed_ssl_split(y, 4, 6, 4, 1, random_state=0)
    >>> [int((y_ssl == c).sum()) for c in range(3)], int((y_ssl == -1).sum())
    ([4, 2, 1], 18)
    """
    if len(y) == 0:
        raise ValueError("y is empty")
    # As the estimators read labels: whole floats are integer classes.
    y = _as_label_array(y)
    numeric = y.dtype.kind in "iu"
    if unlabeled_mask(y).any():
        raise ValueError("y contains -1, the unlabeled marker; pass the fully labeled pool")
    classes = np.unique(y)
    k = len(classes)
    if k < 2:
        raise ValueError(f"need at least 2 classes in y, got {k}")
    for name, g in (("imbalance_labeled", imbalance_labeled), ("imbalance_unlabeled", imbalance_unlabeled)):
        if isinstance(g, bool) or not isinstance(g, (int, float, np.number)) or not g >= 1:
            raise ValueError(f"{name} must be a number >= 1, got {g!r}")
    n_lab = _profile(n_max_labeled, k, imbalance_labeled, "n_max_labeled")
    n_unl = _profile(n_max_unlabeled, k, imbalance_unlabeled, "n_max_unlabeled")
    if not isinstance(reverse_unlabeled, (bool, np.bool_)):
        raise ValueError(f"reverse_unlabeled={reverse_unlabeled!r} must be True or False")
    if reverse_unlabeled:
        n_unl = n_unl[::-1]
    if random_state is None:
        # check_random_state(None) is numpy's global generator.
        random_state = int(np.random.default_rng().integers(2**32, dtype=np.uint64))
    rng = check_random_state(random_state)

    labeled, unlabeled = [], []
    for c, nl, nu in zip(classes, n_lab, n_unl):
        members = np.flatnonzero(y == c)
        if nl + nu > len(members):
            label = c.item() if hasattr(c, "item") else c  # 1, not np.int64(1)
            raise ValueError(
                f"class {label!r} has {len(members)} samples but the split needs {nl} labeled "
                f"+ {nu} unlabeled = {nl + nu}; lower n_max_labeled/n_max_unlabeled"
            )
        # One permutation per class, in class order: the labeled draw comes
        # first, so it does not change with the unlabeled settings.
        chosen = members[rng.permutation(len(members))[: nl + nu]]
        labeled.append(chosen[:nl])
        unlabeled.append(chosen[nl:])
    lab = np.concatenate(labeled).astype(np.int64)
    unl = np.concatenate(unlabeled).astype(np.int64)
    indices = np.sort(np.concatenate([lab, unl]))
    if numeric:
        y_ssl = y[indices].astype(np.int64)
        y_ssl[np.isin(indices, unl)] = -1
    else:
        y_ssl = y[indices].astype(object)
        y_ssl[np.isin(indices, unl)] = -1
    return indices, y_ssl
