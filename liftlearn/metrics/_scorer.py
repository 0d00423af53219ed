"""Scorers for GridSearchCV and cross_validate (see :mod:`liftlearn.metrics`)."""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import get_scorer as _sklearn_get_scorer

from ._core import (
    GROUPS, _as_1d, _balanced, _ece, _f1, _gmean, _groups, _hmean, _shot, _tally, _worst,
)

# -- scorers -----------------------------------------------------------------


def _fitted(estimator, name: str):
    # A Pipeline exposes classes_ but not class_counts_; its last step has both.
    for obj in (estimator, getattr(estimator, "steps", [(None, None)])[-1][1]):
        if obj is not None and hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(
        f"{type(estimator).__name__} has no fitted attribute {name!r}; liftlearn "
        "estimators set classes_ and class_counts_ in fit"
    )


def _score_predictions(estimator, X, y, *, summary, needs_counts=False, **kwargs):
    y = _as_1d(y, "y")
    labels = np.asarray(_fitted(estimator, "classes_"))
    counts = _fitted(estimator, "class_counts_") if needs_counts else None
    known = set(labels.tolist())
    unseen = [value for value in np.unique(y).tolist() if value not in known]
    if unseen:
        # A CV fold can test classes its training part lacked: seen zero
        # times, which is exactly their training count.
        labels = np.asarray(labels.tolist() + unseen)
        if counts is not None:
            counts = np.concatenate([counts, np.zeros(len(unseen), dtype=np.int64)])
    return summary(_tally(y, estimator.predict(X), labels, counts), **kwargs)


def _score_ece(estimator, X, y, *, n_bins=15, norm="l1") -> float:
    proba = np.asarray(estimator.predict_proba(X), dtype=float)
    classes = np.asarray(_fitted(estimator, "classes_"))
    correct = classes[proba.argmax(axis=1)] == _as_1d(y, "y")
    # Lower is better, so negate as scikit-learn's neg_* scorers do.
    return -_ece(proba.max(axis=1), correct, n_bins, norm)


def _shot_of(tally, group, many_threshold, few_threshold) -> float:
    return _shot(tally, many_threshold, few_threshold)[group]


class _Scorer:
    """Scikit-learn scorer ``scorer(estimator, X, y) -> float``; greater is better."""

    def __init__(self, name: str, score: Callable, **kwargs):
        # Module-level functions and plain kwargs keep scorers picklable for
        # GridSearchCV(n_jobs=...).
        self.name, self._score, self._kwargs = name, score, kwargs

    def __call__(self, estimator, X, y) -> float:
        return self._score(estimator, X, y, **self._kwargs)

    def __repr__(self) -> str:
        return f"<liftlearn scorer {self.name!r}>"


def make_shot_scorer(
    group: str, *, many_threshold: int = 100, few_threshold: int = 20
) -> Callable:
    """Scorer for one shot group's accuracy, with custom thresholds.

    Parameters
    ----------
    group : {"many", "medium", "few"}
        Which group to score.
    many_threshold, few_threshold : int, default=100, 20
        Group boundaries, as in :func:`shot_groups`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y)``, reading ``estimator.classes_`` and
        ``estimator.class_counts_``; NaN when ``y`` has no class of the group.

    Examples
    --------
    >>> make_shot_scorer("few", few_threshold=10)
    <liftlearn scorer 'few_shot_accuracy'>
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    _groups(np.zeros(0), many_threshold, few_threshold)  # fail now, not mid-search
    return _Scorer(
        f"{group}_shot_accuracy", _score_predictions, summary=_shot_of,
        needs_counts=True, group=group, many_threshold=many_threshold,
        few_threshold=few_threshold,
    )


many_shot_scorer = make_shot_scorer("many")
medium_shot_scorer = make_shot_scorer("medium")
few_shot_scorer = make_shot_scorer("few")
balanced_accuracy_scorer = _Scorer(
    "balanced_accuracy", _score_predictions, summary=_balanced
)
hmean_scorer = _Scorer("harmonic_mean_accuracy", _score_predictions, summary=_hmean)
gmean_scorer = _Scorer("geometric_mean_accuracy", _score_predictions, summary=_gmean)
worst_class_scorer = _Scorer("worst_class_accuracy", _score_predictions, summary=_worst)
macro_f1_scorer = _Scorer("macro_f1", _score_predictions, summary=_f1)
neg_ece_scorer = _Scorer("neg_expected_calibration_error", _score_ece)

_SCORERS = {
    scorer.name: scorer
    for scorer in (
        balanced_accuracy_scorer, many_shot_scorer, medium_shot_scorer,
        few_shot_scorer, hmean_scorer, gmean_scorer, worst_class_scorer,
        macro_f1_scorer, neg_ece_scorer,
    )
}
_ALIASES = {
    "many_shot": "many_shot_accuracy",
    "medium_shot": "medium_shot_accuracy",
    "few_shot": "few_shot_accuracy",
    "hmean": "harmonic_mean_accuracy",
    "gmean": "geometric_mean_accuracy",
    "worst_class": "worst_class_accuracy",
    "neg_ece": "neg_expected_calibration_error",
}


def long_tail_scoring(
    *, many_threshold: int = 100, few_threshold: int = 20, calibration: bool = False
) -> dict[str, Callable]:
    """Multi-metric ``scoring`` for ``GridSearchCV`` and ``cross_validate``.

    Parameters
    ----------
    many_threshold, few_threshold : int, default=100, 20
        Group boundaries of the shot scorers, as in :func:`shot_groups`.
    calibration : bool, default=False
        Add ``"neg_expected_calibration_error"``, which needs ``predict_proba``.

    Returns
    -------
    scoring : dict of str to callable
        ``accuracy``, ``balanced_accuracy``, ``many_shot_accuracy``,
        ``medium_shot_accuracy``, ``few_shot_accuracy``,
        ``harmonic_mean_accuracy``, ``geometric_mean_accuracy``,
        ``worst_class_accuracy`` and ``macro_f1``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]},
    ...                       scoring=long_tail_scoring(), refit="balanced_accuracy")
    >>> list(long_tail_scoring())[:3]
    ['accuracy', 'balanced_accuracy', 'many_shot_accuracy']
    """
    scoring = {
        "accuracy": _sklearn_get_scorer("accuracy"),
        "balanced_accuracy": balanced_accuracy_scorer,
    }
    for group in GROUPS:
        scoring[f"{group}_shot_accuracy"] = make_shot_scorer(
            group, many_threshold=many_threshold, few_threshold=few_threshold
        )
    for scorer in (hmean_scorer, gmean_scorer, worst_class_scorer, macro_f1_scorer):
        scoring[scorer.name] = scorer
    if calibration:
        scoring[neg_ece_scorer.name] = neg_ece_scorer
    return scoring


def get_scorer(scoring: str | Callable) -> Callable:
    """A liftlearn scorer by name, else scikit-learn's ``get_scorer(scoring)``.

    Parameters
    ----------
    scoring : str or callable
        A key of :func:`long_tail_scoring` (with ``balanced_accuracy``
        computed by liftlearn), ``neg_expected_calibration_error``, or a short
        name: ``many_shot``, ``medium_shot``, ``few_shot``, ``hmean``,
        ``gmean``, ``worst_class``, ``neg_ece``. Anything else goes to
        scikit-learn (note that its ``"f1_macro"`` also averages over classes
        that are only predicted).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> float``, greater is better.

    Examples
    --------
    >>> get_scorer("few_shot")
    <liftlearn scorer 'few_shot_accuracy'>
    """
    if isinstance(scoring, str) and _ALIASES.get(scoring, scoring) in _SCORERS:
        return _SCORERS[_ALIASES.get(scoring, scoring)]
    return _sklearn_get_scorer(scoring)
