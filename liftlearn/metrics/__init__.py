"""Long-tail metrics, a report, scorers and a plot.

Shot groups follow the OLTR / LIFT convention: a class is *many-shot* when its
**training** set holds more than ``many_threshold`` (100) images, *few-shot*
when it holds fewer than ``few_threshold`` (20), and *medium-shot* otherwise
(20 to 100 inclusive). A group's accuracy is the mean per-class accuracy of
its classes. A group without classes (CIFAR-10-LT at imbalance ratio 10 has
no few-shot class) scores NaN rather than raising.

Harmonic and geometric means
----------------------------
They do not clip per-class accuracy unless asked (``correction=0.0``, as
imbalanced-learn's ``geometric_mean_score``): one class at 0 makes both 0.

Classes absent from ``y_true``
------------------------------
A class with no test sample has no accuracy. Every per-class mean here --
balanced, many/medium/few-shot, harmonic, geometric, worst-class, macro-F1 --
follows scikit-learn's ``balanced_accuracy_score``: such classes are **left
out of the mean**, and each call emits one :class:`UndefinedClassWarning`
naming them; :func:`per_class_accuracy` gives them NaN. A mean over no
present class is NaN. Overall accuracy and the calibration error average over
samples, so the rule does not touch them.

Labels
------
``class_counts`` is a mapping ``label -> training images`` or an array aligned
with ``labels`` -- the ``class_counts_`` and ``classes_`` of a fitted liftlearn
estimator. Without ``labels``, a mapping's labels are its sorted keys, an
array's are ``0 .. len(class_counts) - 1``, and with no counts at all the
sorted union of ``y_true`` and ``y_pred``. Listing a class in ``labels`` is
how one that is never predicted gets accuracy 0 rather than being forgotten.
A label of ``y_true`` or ``y_pred`` outside ``labels`` is a ``ValueError``.

Scorers
-------
The ``*_scorer`` objects follow scikit-learn's ``scorer(estimator, X, y)``;
the shot scorers read the training counts from ``estimator.class_counts_``.
:func:`long_tail_scoring` is multi-metric ``scoring`` that computes every
metric of a fold from one prediction (and warns at most once per fold); a
``scoring={...}`` dict of single scorers pays one prediction per metric.
On a fold whose ``y`` holds no class of a group, that group's scorer returns
NaN; ``GridSearchCV`` warns about non-finite scores and ranks such candidates
last for that metric.
"""

from ._core import (
    UndefinedClassWarning,
    balanced_accuracy,
    expected_calibration_error,
    geometric_mean_accuracy,
    harmonic_mean_accuracy,
    long_tail_report,
    macro_f1,
    per_class_accuracy,
    shot_accuracy,
    shot_groups,
    worst_class_accuracy,
)
from ._plot import plot_per_class_accuracy
from ._scorer import (
    balanced_accuracy_scorer,
    few_shot_scorer,
    get_scorer,
    gmean_scorer,
    hmean_scorer,
    long_tail_scoring,
    macro_f1_scorer,
    make_shot_scorer,
    many_shot_scorer,
    medium_shot_scorer,
    neg_ece_scorer,
    worst_class_scorer,
)

__all__ = [
    "UndefinedClassWarning",
    "balanced_accuracy",
    "balanced_accuracy_scorer",
    "expected_calibration_error",
    "few_shot_scorer",
    "geometric_mean_accuracy",
    "get_scorer",
    "gmean_scorer",
    "harmonic_mean_accuracy",
    "hmean_scorer",
    "long_tail_report",
    "long_tail_scoring",
    "macro_f1",
    "macro_f1_scorer",
    "make_shot_scorer",
    "many_shot_scorer",
    "medium_shot_scorer",
    "neg_ece_scorer",
    "per_class_accuracy",
    "plot_per_class_accuracy",
    "shot_accuracy",
    "shot_groups",
    "worst_class_accuracy",
    "worst_class_scorer",
]
