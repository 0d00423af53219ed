"""Long-tail metrics and the report (see :mod:`liftlearn.metrics`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from sklearn.exceptions import UndefinedMetricWarning

from ..exceptions import LiftLearnWarning

GROUPS = ("many", "medium", "few")


class UndefinedClassWarning(LiftLearnWarning, UndefinedMetricWarning):
    """Classes without samples in ``y_true`` were left out of the means.

    Subclasses scikit-learn's ``UndefinedMetricWarning`` so that filters
    written for it catch this one too.
    """


# -- labels ----------------------------------------------------------------


def _as_1d(y, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {y.shape}")
    return y


def _check_labels(labels) -> np.ndarray:
    labels = _as_1d(labels, "labels")
    if len(labels) == 0:
        raise ValueError("labels must not be empty")
    if len(set(labels.tolist())) != len(labels):
        raise ValueError("labels must not contain duplicates")
    return labels


def _align_counts(class_counts, labels) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(labels, counts)`` with ``counts[i]`` the count of ``labels[i]``."""
    if isinstance(class_counts, Mapping):
        if labels is None:
            labels = np.asarray(sorted(class_counts))
        labels = _check_labels(labels)
        missing = [label for label in labels.tolist() if label not in class_counts]
        if missing:
            raise ValueError(f"class_counts has no entry for labels {missing[:10]}")
        counts = np.asarray([class_counts[label] for label in labels.tolist()])
    else:
        counts = _as_1d(class_counts, "class_counts")
        labels = np.arange(len(counts)) if labels is None else _check_labels(labels)
        if len(counts) != len(labels):
            raise ValueError(
                f"class_counts has {len(counts)} entries but there are "
                f"{len(labels)} labels; they must be aligned"
            )
    if len(counts) == 0:
        raise ValueError("class_counts must not be empty")
    if counts.dtype.kind not in "iuf" or np.any(counts < 0) or np.any(counts % 1):
        raise ValueError("class_counts must hold non-negative whole numbers")
    return labels, counts.astype(np.int64)


def _encode(y: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Index of each entry of ``y`` in ``labels``."""
    index = {label: i for i, label in enumerate(labels.tolist())}
    uniques, inverse = np.unique(y, return_inverse=True)
    codes = np.empty(len(uniques), dtype=np.intp)
    for j, value in enumerate(uniques.tolist()):
        if value not in index:
            raise ValueError(
                f"{name} contains label {value!r}, which is not among the "
                f"{len(labels)} labels; pass labels (or class_counts) that "
                "cover every class"
            )
        codes[j] = index[value]
    return codes[inverse.ravel()]


# -- the absent-class rule ---------------------------------------------------


class _Tally(NamedTuple):
    labels: np.ndarray
    counts: Any  # training images per class, or None
    support: np.ndarray  # test samples per class
    correct: np.ndarray
    predicted: np.ndarray
    present: np.ndarray  # support > 0: the classes every mean runs over
    accuracy: np.ndarray  # per class, NaN where absent


def _tally(y_true, y_pred, labels=None, class_counts=None, unpredicted=None) -> _Tally:
    """Count per class and apply the absent-class rule; every metric starts here.

    The rule has two halves: this function decides which classes are present
    and warns once about the rest; :func:`_class_mean` averages over the
    present ones only. ``unpredicted`` (a boolean mask) marks samples the
    model gave no prediction (images it skipped): errors of their true
    class, predictions of none, whatever ``y_pred`` holds there.
    """
    y_true, y_pred = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred have different lengths ({len(y_true)}, {len(y_pred)})"
        )
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    counts = None
    if class_counts is not None:
        labels, counts = _align_counts(class_counts, labels)
    elif labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    else:
        labels = _check_labels(labels)
    true = _encode(y_true, labels, "y_true")
    if unpredicted is None:
        pred = _encode(y_pred, labels, "y_pred")
    else:
        pred = np.full(len(y_pred), -1, dtype=np.intp)
        made = ~np.asarray(unpredicted, dtype=bool)
        pred[made] = _encode(y_pred[made], labels, "y_pred")
    k = len(labels)
    support = np.bincount(true, minlength=k)
    correct = np.bincount(true[true == pred], minlength=k)
    predicted = np.bincount(pred[pred >= 0], minlength=k)
    absent = labels[support == 0].tolist()
    if absent:
        shown = ", ".join(map(repr, absent[:5])) + (", ..." if len(absent) > 5 else "")
        warnings.warn(
            f"{len(absent)} of {k} classes have no samples in y_true ({shown}); "
            "their accuracy is undefined and they are left out of every "
            "per-class mean",
            UndefinedClassWarning,
            stacklevel=3,
        )
    present = support > 0
    accuracy = np.divide(correct, support, out=np.full(k, np.nan), where=present)
    return _Tally(labels, counts, support, correct, predicted, present, accuracy)


def _class_mean(values: np.ndarray, tally: _Tally, mask=None) -> float:
    keep = tally.present if mask is None else tally.present & mask
    # An empty group (no few-shot class at all) is a fact, not an error.
    return float(np.mean(values[keep])) if keep.any() else float("nan")


# -- metrics on a tally ------------------------------------------------------


def _groups(counts, many_threshold, few_threshold) -> dict[str, np.ndarray]:
    if few_threshold > many_threshold:
        raise ValueError(
            f"few_threshold ({few_threshold}) must not exceed "
            f"many_threshold ({many_threshold})"
        )
    many, few = counts > many_threshold, counts < few_threshold
    return {"many": many, "medium": ~many & ~few, "few": few}


def _shot(tally, many_threshold=100, few_threshold=20) -> dict[str, float]:
    groups = _groups(tally.counts, many_threshold, few_threshold)
    return {name: _class_mean(tally.accuracy, tally, m) for name, m in groups.items()}


def _balanced(tally) -> float:
    return _class_mean(tally.accuracy, tally)


def _check_correction(correction) -> None:
    if not 0 <= correction <= 1:
        raise ValueError(f"correction must be in [0, 1], got {correction}")


def _clipped(tally, correction) -> np.ndarray:
    _check_correction(correction)
    return np.maximum(tally.accuracy, correction)


def _hmean(tally, correction=0.0) -> float:
    with np.errstate(divide="ignore"):  # correction=0: 1/0 = inf gives hmean 0
        return 1.0 / _class_mean(1.0 / _clipped(tally, correction), tally)


def _gmean(tally, correction=0.0) -> float:
    with np.errstate(divide="ignore"):
        return float(np.exp(_class_mean(np.log(_clipped(tally, correction)), tally)))


def _worst(tally) -> float:
    return float(np.min(tally.accuracy[tally.present]))


def _f1(tally) -> float:
    # 2TP / (2TP + FP + FN) == 2TP / (predicted + support), positive for
    # every present class.
    f1 = 2 * tally.correct / np.maximum(tally.predicted + tally.support, 1)
    return _class_mean(f1, tally)


def _ece(confidence, correct, n_bins=15, norm="l1") -> float:
    if not (isinstance(n_bins, (int, np.integer)) and n_bins >= 1):
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if norm not in ("l1", "l2", "max"):
        raise ValueError(f"norm must be 'l1', 'l2' or 'max', got {norm!r}")
    # Bins are (lo, hi]; the first also holds confidence 0.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    size = np.bincount(bins, minlength=n_bins)
    full = size > 0
    acc = np.bincount(bins, weights=correct, minlength=n_bins)[full] / size[full]
    conf = np.bincount(bins, weights=confidence, minlength=n_bins)[full] / size[full]
    gap, weight = np.abs(acc - conf), size[full] / len(confidence)
    if norm == "l1":
        return float(np.sum(weight * gap))
    if norm == "l2":
        return float(np.sqrt(np.sum(weight * gap**2)))
    return float(np.max(gap))


# -- public metrics ----------------------------------------------------------

def per_class_accuracy(
    y_true: ArrayLike, y_pred: ArrayLike, *, labels: ArrayLike | None = None
) -> np.ndarray:
    """Accuracy (recall) of each class; NaN for classes absent from ``y_true``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    labels : array-like of shape (n_classes,), default=None
        Classes to report, in this order. Defaults to the sorted union of
        ``y_true`` and ``y_pred``.

    Returns
    -------
    accuracy : ndarray of shape (n_classes,)

    Examples
    --------
    >>> per_class_accuracy([0, 0, 1, 1], [0, 1, 1, 1])
    array([0.5, 1. ])
    """
    return _tally(y_true, y_pred, labels).accuracy


def shot_groups(
    class_counts: Mapping | ArrayLike,
    *,
    labels: ArrayLike | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, np.ndarray]:
    """Split the classes into many-, medium- and few-shot by training count.

    Parameters
    ----------
    class_counts : mapping or array-like of shape (n_classes,)
        Training images per class: ``{label: count}`` or counts aligned with
        ``labels``.
    labels : array-like of shape (n_classes,), default=None
        Classes the masks refer to; defaults to the sorted keys of a mapping,
        else ``arange(len(class_counts))``.
    many_threshold : int, default=100
        Classes with more training images are many-shot.
    few_threshold : int, default=20
        Classes with fewer training images are few-shot.

    Returns
    -------
    groups : dict of str to ndarray of bool
        Masks ``"many"``, ``"medium"``, ``"few"`` over ``labels``; each class
        is in exactly one.

    Examples
    --------
    >>> groups = shot_groups([500, 100, 20, 19])
    >>> {name: mask.nonzero()[0].tolist() for name, mask in groups.items()}
    {'many': [0], 'medium': [1, 2], 'few': [3]}
    """
    _, counts = _align_counts(class_counts, labels)
    return _groups(counts, many_threshold, few_threshold)


def shot_accuracy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    class_counts: Mapping | ArrayLike,
    *,
    labels: ArrayLike | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, float]:
    """Mean per-class accuracy of the many-, medium- and few-shot classes.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    class_counts, labels, many_threshold, few_threshold
        As in :func:`shot_groups`.

    Returns
    -------
    accuracy : dict of str to float
        Keys ``"many"``, ``"medium"``, ``"few"``; NaN for a group with no
        class present in ``y_true``.

    Examples
    --------
    >>> shot_accuracy([0, 0, 1, 2], [0, 1, 1, 1], [200, 50, 5])
    {'many': 0.5, 'medium': 1.0, 'few': 0.0}
    """
    tally = _tally(y_true, y_pred, labels, class_counts)
    return _shot(tally, many_threshold, few_threshold)


def balanced_accuracy(
    y_true: ArrayLike, y_pred: ArrayLike, *, labels: ArrayLike | None = None
) -> float:
    """Mean per-class accuracy, as ``sklearn.metrics.balanced_accuracy_score``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    labels : array-like of shape (n_classes,), default=None
        All classes; those absent from ``y_true`` are left out with a warning.

    Returns
    -------
    score : float

    Examples
    --------
    >>> balanced_accuracy([0, 0, 0, 1], [0, 0, 0, 0])
    0.5
    """
    return _balanced(_tally(y_true, y_pred, labels))


def harmonic_mean_accuracy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    correction: float = 0.0,
) -> float:
    """Harmonic mean of per-class accuracy, dominated by the weakest classes.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    labels : array-like of shape (n_classes,), default=None
        All classes; those absent from ``y_true`` are left out with a warning.
    correction : float, default=0.0
        Clip per-class accuracies below at this value, so that one class at
        0 does not zero the whole figure (imbalanced-learn's
        ``geometric_mean_score(correction=...)``, whose default is also 0).
        The default gives the raw mean: 0 whenever a class scores 0, as
        :func:`worst_class_accuracy` would show.

    Returns
    -------
    score : float

    Examples
    --------
    >>> round(harmonic_mean_accuracy([0, 0, 1, 1], [0, 1, 1, 1]), 4)
    0.6667
    >>> harmonic_mean_accuracy([0, 1], [1, 1])
    0.0
    >>> round(harmonic_mean_accuracy([0, 1], [1, 1], correction=1e-3), 4)
    0.002
    """
    return _hmean(_tally(y_true, y_pred, labels), correction)


def geometric_mean_accuracy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    correction: float = 0.0,
) -> float:
    """Geometric mean of per-class accuracy.

    Parameters
    ----------
    y_true, y_pred, labels, correction
        As in :func:`harmonic_mean_accuracy`.

    Returns
    -------
    score : float

    Examples
    --------
    >>> round(geometric_mean_accuracy([0, 0, 1, 1], [0, 1, 1, 1]), 4)
    0.7071
    """
    return _gmean(_tally(y_true, y_pred, labels), correction)


def worst_class_accuracy(
    y_true: ArrayLike, y_pred: ArrayLike, *, labels: ArrayLike | None = None
) -> float:
    """Lowest accuracy among the classes present in ``y_true``.

    Parameters
    ----------
    y_true, y_pred, labels
        As in :func:`balanced_accuracy`.

    Returns
    -------
    score : float

    Examples
    --------
    >>> worst_class_accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 2])
    0.5
    """
    return _worst(_tally(y_true, y_pred, labels))


def macro_f1(
    y_true: ArrayLike, y_pred: ArrayLike, *, labels: ArrayLike | None = None
) -> float:
    """Unweighted mean F1 over the classes present in ``y_true``.

    Equals ``sklearn.metrics.f1_score(average="macro", labels=present)``: a
    class that is only ever predicted has no F1 of its own, but predicting it
    still counts as a miss of the true class.

    Parameters
    ----------
    y_true, y_pred, labels
        As in :func:`balanced_accuracy`.

    Returns
    -------
    score : float

    Examples
    --------
    >>> round(macro_f1([0, 0, 1, 1], [0, 1, 1, 1]), 4)
    0.7333
    """
    return _f1(_tally(y_true, y_pred, labels))


def expected_calibration_error(
    y_true: ArrayLike,
    y_proba: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    n_bins: int = 15,
    norm: str = "l1",
) -> float:
    """Top-label expected calibration error (lower is better).

    Samples are binned on their top probability into ``n_bins`` equal-width
    bins ``(lo, hi]`` over [0, 1]; the error is the gap between a bin's
    accuracy and mean confidence, weighted by its share of the samples.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_proba : array-like of shape (n_samples, n_classes)
        Predicted probabilities, columns aligned with ``labels``.
    labels : array-like of shape (n_classes,), default=None
        Class of each column, like an estimator's ``classes_``; defaults to
        ``arange(n_classes)``.
    n_bins : int, default=15
        Number of bins.
    norm : {"l1", "l2", "max"}, default="l1"
        Weighted mean gap, root of the weighted mean squared gap, or the
        largest gap.

    Returns
    -------
    ece : float

    Examples
    --------
    >>> proba = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]
    >>> round(expected_calibration_error([0, 1, 1, 1], proba, n_bins=5), 4)
    0.25
    """
    y_true = _as_1d(y_true, "y_true")
    y_proba = np.asarray(y_proba, dtype=float)
    if y_proba.ndim != 2 or len(y_proba) != len(y_true):
        raise ValueError(
            f"y_proba must have shape (n_samples, n_classes) with n_samples = "
            f"{len(y_true)}, got {y_proba.shape}"
        )
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    labels = np.arange(y_proba.shape[1]) if labels is None else _check_labels(labels)
    if len(labels) != y_proba.shape[1]:
        raise ValueError(
            f"y_proba has {y_proba.shape[1]} columns but there are {len(labels)} labels"
        )
    if not np.isfinite(y_proba).all() or y_proba.min() < 0 or y_proba.max() > 1:
        raise ValueError("y_proba must hold probabilities in [0, 1]")
    correct = _encode(y_true, labels, "y_true") == y_proba.argmax(axis=1)
    return _ece(y_proba.max(axis=1), correct, n_bins, norm)


# -- report ------------------------------------------------------------------


def _table(header, rows, first_width) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        # Names read best left-aligned, numbers right-aligned.
        cells = [row[0].ljust(first_width)]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    return lines


def long_tail_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    class_counts: Mapping | ArrayLike,
    *,
    labels: ArrayLike | None = None,
    target_names: ArrayLike | None = None,
    y_proba: ArrayLike | None = None,
    many_threshold: int = 100,
    few_threshold: int = 20,
    digits: int = 3,
    output_dict: bool = False,
    correction: float = 0.0,
) -> str | dict:
    """Per-class and per-group accuracy, like ``classification_report``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted labels.
    class_counts, labels, many_threshold, few_threshold
        As in :func:`shot_groups`; ``labels`` also orders ``y_proba``.
    target_names : list of str of shape (n_classes,), default=None
        Display names of ``labels``; distinct (a ValueError names a repeat).
    y_proba : array-like of shape (n_samples, n_classes), default=None
        Predicted probabilities; adds the expected calibration error.
    digits : int, default=3
        Decimals in the text.
    output_dict : bool, default=False
        Return a dict instead of text.
    correction : float, default=0.0
        Clipping of the harmonic and geometric means, as in
        :func:`harmonic_mean_accuracy`; a nonzero value is named in their
        rows of the text ("clipped at ...").

    Returns
    -------
    report : str or dict
        Text: each class with its training count, group, test support and
        accuracy; then overall figures, each with the number of classes and
        test samples behind it (for a group: the group's size). Dict:
        ``"classes"`` (name -> ``train_count``, ``group``, ``support``,
        ``accuracy``), ``"groups"`` (group -> ``n_classes``, ``support``,
        ``accuracy``), ``accuracy``, ``balanced_accuracy``,
        ``harmonic_mean_accuracy``, ``geometric_mean_accuracy``,
        ``worst_class_accuracy``, ``macro_f1``, ``correction`` (the clipping
        of the two means, 0.0 for none) and, given ``y_proba``,
        ``expected_calibration_error``. Undefined values are NaN (``-`` in
        the text).

    Examples
    --------
    >>> print(long_tail_report([0, 0, 1, 2], [0, 1, 1, 1], [200, 50, 5]))
    class                 train   group  support  accuracy
    0                       200    many        2     0.500
    1                        50  medium        1     1.000
    2                         5     few        1     0.000
    <BLANKLINE>
                          classes  support  value
    accuracy                    3        4  0.500
    balanced accuracy           3        4  0.500
    many-shot (>100)            1        2  0.500
    medium-shot (20-100)        1        1  1.000
    few-shot (<20)              1        1  0.000
    harmonic mean               3        4  0.000
    geometric mean              3        4  0.000
    worst class                 3        4  0.000
    macro F1                    3        4  0.389
    """
    tally = _tally(y_true, y_pred, labels, class_counts)
    k = len(tally.labels)
    names = tally.labels if target_names is None else target_names
    names = [str(name) for name in names]
    if len(names) != k:
        raise ValueError(f"target_names has {len(names)} entries for {k} labels")
    # The dict is keyed by name: a repeated name would silently drop classes.
    first = {}
    for i, name in enumerate(names):
        if name in first:
            raise ValueError(
                f"target_names has {name!r} twice (positions {first[name]} and {i}); "
                "each class needs its own name"
            )
        first[name] = i
    groups = _groups(tally.counts, many_threshold, few_threshold)
    group_of = np.select(list(groups.values()), list(groups), default="")
    shot = _shot(tally, many_threshold, few_threshold)
    # (text title, dict key, value, mask of the classes behind the value):
    # the per-class figures leave classes without test samples out.
    tested = tally.support > 0
    rows = [
        ("accuracy", "accuracy", tally.correct.sum() / tally.support.sum(), tested),
        ("balanced accuracy", "balanced_accuracy", _balanced(tally), tested),
    ]
    bounds = {
        "many": f">{many_threshold}",
        "medium": f"{few_threshold}-{many_threshold}",
        "few": f"<{few_threshold}",
    }
    rows += [(f"{g}-shot ({bounds[g]})", g, shot[g], groups[g]) for g in GROUPS]
    clipped = f" (clipped at {correction:g})" if correction else ""
    rows += [
        ("harmonic mean" + clipped, "harmonic_mean_accuracy", _hmean(tally, correction), tested),
        ("geometric mean" + clipped, "geometric_mean_accuracy", _gmean(tally, correction), tested),
        ("worst class", "worst_class_accuracy", _worst(tally), tested),
        ("macro F1", "macro_f1", _f1(tally), tested),
    ]
    if y_proba is not None:
        ece = expected_calibration_error(y_true, y_proba, labels=tally.labels)
        rows.append(("ECE", "expected_calibration_error", ece, None))

    if output_dict:
        report: dict[str, Any] = {"classes": {}, "groups": {}}
        for i, name in enumerate(names):
            report["classes"][name] = {
                "train_count": int(tally.counts[i]),
                "group": str(group_of[i]),
                "support": int(tally.support[i]),
                "accuracy": float(tally.accuracy[i]),
            }
        for _, key, value, mask in rows:
            if key in groups:
                report["groups"][key] = {
                    "n_classes": int(mask.sum()),
                    "support": int(tally.support[mask].sum()),
                    "accuracy": value,
                }
            else:
                report[key] = float(value)
        report["correction"] = float(correction)
        return report

    def fmt(value):
        return "-" if np.isnan(value) else f"{value:.{digits}f}"

    class_rows = [
        [name, str(tally.counts[i]), str(group_of[i]), str(tally.support[i]),
         fmt(tally.accuracy[i])]
        for i, name in enumerate(names)
    ]
    summary_rows = [
        [title, "" if mask is None else str(mask.sum()),
         str(tally.support[tested if mask is None else mask].sum()), fmt(value)]
        for title, _, value, mask in rows
    ]
    width = max(len(row[0]) for row in [["class"], *class_rows, *summary_rows])
    header = ["class", "train", "group", "support", "accuracy"]
    lines = _table(header, class_rows, width)
    lines += [""] + _table(["", "classes", "support", "value"], summary_rows, width)
    return "\n".join(lines)
