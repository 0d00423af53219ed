"""The per-class accuracy plot (see :mod:`liftlearn.metrics`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._core import GROUPS, _groups, _shot, _tally
# -- plot --------------------------------------------------------------------


def plot_per_class_accuracy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    class_counts: Mapping | ArrayLike,
    *,
    labels: ArrayLike | None = None,
    ax: Any = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
    **scatter_kwargs: Any,
) -> Any:
    """Scatter per-class accuracy against training-set frequency.

    The x axis is the training image count on a log scale, with the shot
    regions shaded and a dashed line at each group's accuracy. Classes absent
    from ``y_true`` are not drawn; classes without training images sit at
    x = 0.5, since a log axis has no 0. Needs matplotlib
    (``pip install liftlearn[plot]``).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    class_counts, labels, many_threshold, few_threshold
        As in :func:`shot_groups`.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure when None.
    **scatter_kwargs
        Passed to ``ax.scatter``.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> ax = plot_per_class_accuracy(y_test, clf.predict(X_test),
    ...     clf.class_counts_, labels=clf.classes_)  # doctest: +SKIP
    >>> ax.figure.savefig("per_class_accuracy.png")  # doctest: +SKIP
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plot_per_class_accuracy needs matplotlib: pip install liftlearn[plot]"
        ) from exc
    tally = _tally(y_true, y_pred, labels, class_counts)
    groups = _groups(tally.counts, many_threshold, few_threshold)
    shot = _shot(tally, many_threshold, few_threshold)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    x = np.maximum(tally.counts[tally.present], 0.5)
    style = {"s": 14, "alpha": 0.7, "zorder": 3, **scatter_kwargs}
    ax.scatter(x, tally.accuracy[tally.present], **style)
    ax.set_xscale("log")
    # Keep all three regions in view even when the data misses one.
    lo = min(x.min() / 1.5, few_threshold / 2)
    hi = max(x.max() * 1.5, many_threshold * 2)
    spans = {
        "many": (many_threshold, hi),
        "medium": (few_threshold, many_threshold),
        "few": (lo, few_threshold),
    }
    colors = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
    for name in GROUPS:
        (x0, x1), color = spans[name], colors[name]
        ax.axvspan(x0, x1, color=color, alpha=0.08, lw=0)
        label = f"{name}-shot (n={int(groups[name].sum())})"
        if not np.isnan(shot[name]):
            ax.hlines(shot[name], x0, x1, colors=color, linestyles="--", zorder=2)
            label += f": {shot[name]:.3f}"
        ax.plot([], [], color=color, lw=6, alpha=0.3, label=label)  # legend swatch
    for threshold in (few_threshold, many_threshold):
        ax.axvline(threshold, color="grey", lw=0.8)
    ax.set(xlim=(lo, hi), ylim=(-0.03, 1.03), ylabel="per-class accuracy",
           xlabel="training images per class (log scale)")
    ax.legend(loc="lower right", fontsize="small")
    return ax
