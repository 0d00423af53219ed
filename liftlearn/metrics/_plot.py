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
    target_names: ArrayLike | None = None,
    annotate: int | str = 5,
    ax: Any = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
    **scatter_kwargs: Any,
) -> Any:
    """Scatter per-class accuracy against training-set frequency.

    The x axis is the training image count on a log scale, with the shot
    regions shaded and a dashed line at each group's accuracy. Classes absent
    from ``y_true`` are not drawn; classes without training images sit at
    x = 0.5, since a log axis has no 0. The points of the worst classes are
    named, and the legend sits to the right of the axes, where it hides no
    point. Needs matplotlib (``pip install liftlearn[plot]``).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    class_counts, labels, many_threshold, few_threshold
        As in :func:`shot_groups`.
    target_names : list of str of shape (n_classes,), default=None
        Display names of ``labels`` (e.g. a fitted classifier's
        ``class_names_``); default ``str(label)``.
    annotate : int or "all", default=5
        Name the points of this many classes, lowest accuracy first (ties:
        fewer training images first); ``"all"`` names every point, 0 none.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure (constrained layout, so the legend
        outside the axes is kept) when None. On an Axes of your own, save
        with ``bbox_inches="tight"`` to keep the legend in the file.
    **scatter_kwargs
        Passed to ``ax.scatter``.

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> ax = plot_per_class_accuracy(y_test, clf.predict(X_test),
    ...     clf.class_counts_, labels=clf.classes_,
    ...     target_names=clf.class_names_)  # doctest: +SKIP
    >>> ax.figure.savefig("per_class_accuracy.png")  # doctest: +SKIP
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plot_per_class_accuracy needs matplotlib: pip install liftlearn[plot]"
        ) from exc
    if not (annotate == "all" or (isinstance(annotate, (int, np.integer))
                                  and not isinstance(annotate, bool) and annotate >= 0)):
        raise ValueError(f"annotate must be a non-negative int or 'all', got {annotate!r}")
    tally = _tally(y_true, y_pred, labels, class_counts)
    names = [str(label) for label in tally.labels.tolist()]
    if target_names is not None:
        names = [str(name) for name in target_names]
        if len(names) != len(tally.labels):
            raise ValueError(
                f"target_names has {len(names)} entries for {len(tally.labels)} labels"
            )
    groups = _groups(tally.counts, many_threshold, few_threshold)
    shot = _shot(tally, many_threshold, few_threshold)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    x = np.maximum(tally.counts[tally.present], 0.5)
    y = tally.accuracy[tally.present]
    style = {"s": 14, "alpha": 0.7, "zorder": 3, **scatter_kwargs}
    ax.scatter(x, y, **style)
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
    _annotate_worst(ax, x, y, np.asarray(names, dtype=object)[tally.present], annotate)
    # Outside the axes, so that it can hide no point.
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              fontsize="small", frameon=False)
    return ax


def _annotate_worst(ax, x, y, names, annotate) -> None:
    """Name the points of the ``annotate`` worst classes (all with "all")."""
    n = len(x) if annotate == "all" else min(int(annotate), len(x))
    # Lowest accuracy first; among equals, the rarer class (the tail is
    # what the plot is about).
    order = np.lexsort((x, y))[:n]
    lo, hi = np.log(ax.get_xlim())
    for i in order:
        # Names stay inside the axes: below points near the top, to the left
        # of points near the right edge.
        below = y[i] > 0.9
        left = (np.log(x[i]) - lo) / (hi - lo) > 0.85
        ax.annotate(
            str(names[i]), (x[i], y[i]), xytext=(-4 if left else 4, -9 if below else 4),
            textcoords="offset points", ha="right" if left else "left",
            fontsize="x-small", zorder=4,
        )
