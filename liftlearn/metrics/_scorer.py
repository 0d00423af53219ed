"""Scorers for GridSearchCV and cross_validate (see :mod:`liftlearn.metrics`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Callable, NamedTuple, Optional

import numpy as np
from sklearn.metrics import get_scorer as _sklearn_get_scorer

from .._labels import unlabeled_mask
from ._core import (
    GROUPS, _as_1d, _balanced, _check_correction, _ece, _f1, _gmean, _groups, _hmean,
    _shot, _tally, _worst,
)

# -- scorers -----------------------------------------------------------------


# Where a meta-estimator keeps the fitted estimator it wraps: the fitted
# copy of its template (estimator_, scikit-learn's convention), a search's
# best_estimator_, a Pipeline's last step, CalibratedClassifierCV's one
# calibrated classifier (ensemble=False or a FrozenEstimator), a
# FrozenEstimator's estimator. Never a meta-estimator's estimator parameter
# otherwise: an unfitted template, or one fitted on other data.
def _wrapped(estimator) -> list:
    from sklearn.frozen import FrozenEstimator

    inner = [getattr(estimator, "estimator_", None), getattr(estimator, "best_estimator_", None)]
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps:
        inner.append(steps[-1][1])
    calibrated = getattr(estimator, "calibrated_classifiers_", None)
    if calibrated is not None and len(calibrated) == 1:
        inner.append(getattr(calibrated[0], "estimator", None))
    if isinstance(estimator, FrozenEstimator):
        inner.append(estimator.estimator)
    return [obj for obj in inner if obj is not None]


def _fitted(estimator, name: str, _depth: int = 0):
    """The fitted attribute ``name`` of ``estimator`` or of the liftlearn
    estimator it wraps (a Pipeline exposes classes_, not class_counts_)."""
    if hasattr(estimator, name):
        return getattr(estimator, name)
    if _depth < 8:
        for inner in _wrapped(estimator):
            try:
                return _fitted(inner, name, _depth + 1)
            except AttributeError:
                continue
    if _depth:
        raise AttributeError(name)
    calibrated = getattr(estimator, "calibrated_classifiers_", None)
    hint = (f"; its {len(calibrated)} calibrated classifiers were each fitted on one fold: "
            "calibrate a FrozenEstimator of the fitted model, or use ensemble=False"
            if calibrated is not None and len(calibrated) > 1 else "")
    raise AttributeError(
        f"{type(estimator).__name__} has no fitted attribute {name!r}, nor does an estimator "
        f"it wraps; liftlearn estimators set classes_ and class_counts_ in fit{hint}"
    )


class _Fold(NamedTuple):
    y: np.ndarray
    y_pred: np.ndarray
    unpredicted: np.ndarray  # images the model skipped (on_bad_image="skip")
    proba: Optional[np.ndarray]


def _fold(estimator, X, y, *, proba: bool) -> _Fold:
    """One fold's labels and predictions, as every scorer reads them.

    Samples marked unlabeled (``y == -1``, where -1 is no class of the
    model) carry no truth and are left out, as ``ULFineClassifier.score``
    does. Images the model skipped (a NaN probability row, or a prediction
    that is no class: -1 or None) count as errors of their true class.
    """
    # Before _as_1d: a list mixing strings with -1 would become strings.
    unlabeled = unlabeled_mask(np.asarray(y, dtype=object).ravel())
    y = _as_1d(y, "y")
    classes = np.asarray(_fitted(estimator, "classes_"))
    if proba:
        p = np.asarray(estimator.predict_proba(X), dtype=float)
        unpredicted = np.isnan(p).any(axis=1)
        # The class of highest probability: what liftlearn's predict returns.
        y_pred = classes[np.nan_to_num(p, nan=-np.inf).argmax(axis=1)]
    else:
        p = None
        y_pred = _as_1d(estimator.predict(X), "y_pred")
        # liftlearn marks a skipped image's prediction -1 (None if -1 is a class).
        known = set(classes.tolist())
        values = y_pred.tolist()
        unpredicted = (unlabeled_mask(y_pred) | np.array([v is None for v in values], dtype=bool)) \
            & np.array([v not in known for v in values], dtype=bool)
    keep = np.ones(len(y), dtype=bool)
    if -1 not in classes.tolist():
        keep = ~unlabeled
        if not keep.any():
            raise ValueError("no labeled sample to score: every label in y is -1 (unlabeled)")
    return _Fold(y[keep], y_pred[keep], unpredicted[keep], None if p is None else p[keep])


def _fold_tally(estimator, fold: _Fold, needs_counts: bool):
    """The tally of one fold's predictions against the estimator's classes."""
    labels = np.asarray(_fitted(estimator, "classes_"))
    counts = _fitted(estimator, "class_counts_") if needs_counts else None
    known = set(labels.tolist())
    unseen = [value for value in np.unique(fold.y).tolist() if value not in known]
    if unseen:
        # A CV fold can test classes its training part lacked: seen zero
        # times, which is exactly their training count.
        labels = np.asarray(labels.tolist() + unseen)
        if counts is not None:
            counts = np.concatenate([counts, np.zeros(len(unseen), dtype=np.int64)])
    return _tally(fold.y, fold.y_pred, labels, counts, unpredicted=fold.unpredicted)


def _score_predictions(estimator, X, y, *, summary, needs_counts=False, **kwargs):
    fold = _fold(estimator, X, y, proba=False)
    return summary(_fold_tally(estimator, fold, needs_counts), **kwargs)


def _score_ece(estimator, X, y, *, n_bins=15, norm="l1") -> float:
    return _neg_ece(_fold(estimator, X, y, proba=True), n_bins, norm)


def _neg_ece(fold: _Fold, n_bins=15, norm="l1") -> float:
    # Over the images the model predicted (a skipped one has no confidence).
    # Lower is better, so negate as scikit-learn's neg_* scorers do.
    made = ~fold.unpredicted
    if not made.any():
        return float("nan")
    return -_ece(fold.proba[made].max(axis=1), fold.y_pred[made] == fold.y[made], n_bins, norm)


def _accuracy(tally) -> float:
    return float(tally.correct.sum() / tally.support.sum())


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
# scikit-learn's "accuracy" scorer, but for the rules of _fold (unlabeled
# samples left out, skipped images errors).
accuracy_scorer = _Scorer("accuracy", _score_predictions, summary=_accuracy)
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


class LongTailScoring(Mapping):
    """Every long-tail metric of a fold from one prediction.

    Made by :func:`long_tail_scoring`. As a scoring callable,
    ``scoring(estimator, X, y)`` returns a dict of all metrics, computed from
    ONE call of ``estimator.predict`` (``predict_proba`` with
    ``calibration=True``; the prediction is then the class of highest
    probability, which is what liftlearn's classifiers predict) and one
    tally of it, so the absent-class warning comes at most once per fold.
    scikit-learn's ``GridSearchCV`` and ``cross_validate`` take such a
    callable as multi-metric ``scoring`` (``refit`` names one of its keys).

    As a read-only mapping, it gives the metric names (iteration) and a
    single-metric scorer per name (``scoring["few_shot_accuracy"]``); a
    ``scoring={...}`` dict built from those pays one prediction per metric.
    """

    def __init__(self, *, many_threshold: int = 100, few_threshold: int = 20,
                 calibration: bool = False, correction: float = 0.0):
        _groups(np.zeros(0), many_threshold, few_threshold)  # fail now, not mid-search
        _check_correction(correction)
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.calibration = bool(calibration)
        self.correction = correction
        scorers = {
            "accuracy": accuracy_scorer,
            "balanced_accuracy": balanced_accuracy_scorer,
        }
        for group in GROUPS:
            scorers[f"{group}_shot_accuracy"] = make_shot_scorer(
                group, many_threshold=many_threshold, few_threshold=few_threshold
            )
        scorers["harmonic_mean_accuracy"] = _Scorer(
            "harmonic_mean_accuracy", _score_predictions, summary=_hmean, correction=correction)
        scorers["geometric_mean_accuracy"] = _Scorer(
            "geometric_mean_accuracy", _score_predictions, summary=_gmean, correction=correction)
        for scorer in (worst_class_scorer, macro_f1_scorer):
            scorers[scorer.name] = scorer
        if self.calibration:
            scorers[neg_ece_scorer.name] = neg_ece_scorer
        self._scorers = scorers

    def __call__(self, estimator, X, y) -> dict[str, float]:
        """All metrics of ``estimator`` on ``(X, y)``, from one prediction.

        Parameters
        ----------
        estimator : fitted classifier
            With ``classes_`` and ``class_counts_``: liftlearn's classifiers,
            or a Pipeline, search, ``FrozenEstimator`` or
            ``CalibratedClassifierCV`` wrapping one.
        X : array-like
            What ``estimator.predict`` takes.
        y : array-like of shape (n_samples,)
            True labels.

        Returns
        -------
        scores : dict of str to float
            The keys of this mapping, in its order; greater is better.
        """
        fold = _fold(estimator, X, y, proba=self.calibration)
        tally = _fold_tally(estimator, fold, needs_counts=True)
        shot = _shot(tally, self.many_threshold, self.few_threshold)
        scores = {
            "accuracy": _accuracy(tally),
            "balanced_accuracy": _balanced(tally),
            **{f"{group}_shot_accuracy": shot[group] for group in GROUPS},
            "harmonic_mean_accuracy": _hmean(tally, self.correction),
            "geometric_mean_accuracy": _gmean(tally, self.correction),
            "worst_class_accuracy": _worst(tally),
            "macro_f1": _f1(tally),
        }
        if self.calibration:
            scores[neg_ece_scorer.name] = _neg_ece(fold)
        return scores

    def __getitem__(self, name: str) -> Callable:
        return self._scorers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scorers)

    def __len__(self) -> int:
        return len(self._scorers)

    def __repr__(self) -> str:
        return (
            f"long_tail_scoring(many_threshold={self.many_threshold}, few_threshold="
            f"{self.few_threshold}, calibration={self.calibration}, "
            f"correction={self.correction})"
        )


def long_tail_scoring(
    *, many_threshold: int = 100, few_threshold: int = 20, calibration: bool = False,
    correction: float = 0.0,
) -> LongTailScoring:
    """Multi-metric ``scoring`` for ``GridSearchCV`` and ``cross_validate``.

    All metrics of a fold come from one prediction: one ``decision_function``
    of a liftlearn classifier per fold (a full TTE pass), not one per metric.

    Parameters
    ----------
    many_threshold, few_threshold : int, default=100, 20
        Group boundaries of the shot scorers, as in :func:`shot_groups`.
    calibration : bool, default=False
        Add ``"neg_expected_calibration_error"``: the fold is then predicted
        with ``predict_proba`` (still once), and the other metrics score the
        class of highest probability.
    correction : float, default=0.0
        Of the harmonic and geometric means, as in
        :func:`harmonic_mean_accuracy`.

    Returns
    -------
    scoring : LongTailScoring
        A callable ``scoring(estimator, X, y) -> dict`` (what
        ``GridSearchCV(scoring=...)`` uses; ``refit`` names a key) that is
        also a mapping of the metric names to single-metric scorers:
        ``accuracy``, ``balanced_accuracy``, ``many_shot_accuracy``,
        ``medium_shot_accuracy``, ``few_shot_accuracy``,
        ``harmonic_mean_accuracy``, ``geometric_mean_accuracy``,
        ``worst_class_accuracy`` and ``macro_f1`` (then
        ``neg_expected_calibration_error``).

    Examples
    --------
    >>> scoring = long_tail_scoring()
    >>> list(scoring)[:3]
    ['accuracy', 'balanced_accuracy', 'many_shot_accuracy']
    >>> search = GridSearchCV(LiftPlusClassifier(class_names=names), {"lr": [0.01, 0.02]},
    ...                       scoring=scoring, refit="balanced_accuracy")  # doctest: +SKIP
    """
    return LongTailScoring(
        many_threshold=many_threshold, few_threshold=few_threshold,
        calibration=calibration, correction=correction,
    )


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
