"""Turning ``y`` and ``class_names`` into classes, names and encoded targets."""

from __future__ import annotations

from collections.abc import Mapping, MappingView
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from numbers import Integral, Real


import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

__all__ = ["LabelInfo", "class_names_problem", "resolve_labels", "unlabeled_mask"]


@dataclass
class LabelInfo:
    """What ``fit`` learns about the labels."""

    classes: np.ndarray  #: sorted labels, the column order of predict_proba
    names: list  #: one human-readable name per class (used in the prompts)
    y_encoded: np.ndarray  #: index into ``classes`` per sample
    counts: np.ndarray  #: training samples per class


_FLOAT_EXACT = 2.0 ** 53
_INT64 = np.iinfo(np.int64)


def _check_int64(values) -> None:
    """Refuse Python ints that int64 (the dtype of ``classes_``) cannot hold."""
    for i, v in enumerate(values):
        if not _INT64.min <= v <= _INT64.max:
            raise ValueError(f"y[{i}] is {v!r}: integer labels must fit in 64 bits")


def class_names_problem(class_names):
    """Why ``class_names`` cannot name the classes, or None if it can.

    The names must be ordered (a list, tuple, array or mapping: which class
    is 0 must not depend on ``PYTHONHASHSEED``, as it would for a set or a
    dict view), non-empty, distinct (two classes with one name get one
    prompt and cannot be told apart) and not blank.
    """
    if isinstance(class_names, (str, bytes)):
        return "class_names must be a sequence of names or a mapping, not a single str"
    if isinstance(class_names, (AbstractSet, MappingView)):
        return (
            f"class_names is a {type(class_names).__name__}: sets and dict views do not "
            "say which class is 0 (a set's order changes with PYTHONHASHSEED); pass a "
            "list, e.g. sorted(names), or the mapping itself"
        )
    if isinstance(class_names, Mapping):
        names = [str(v) for v in class_names.values()]
    else:
        try:
            names = [str(n) for n in class_names]
        except TypeError:
            return f"class_names must be a sequence of names or a mapping, not {type(class_names).__name__}"
    if not names:
        return "class_names is empty"
    for i, name in enumerate(names):
        if not name.strip():
            return f"class_names has an empty name (entry {i}: {name!r})"
    seen = {}
    for i, name in enumerate(names):
        if name in seen:
            return (
                f"class_names has the name {name!r} twice (entries {seen[name]} and {i}); "
                "each class needs its own name"
            )
        seen[name] = i
    return None


def unlabeled_mask(y) -> np.ndarray:
    """Where ``y`` holds scikit-learn's mark of an unlabeled sample: the
    number -1 (a float -1.0 too, as a float ``y`` is read), not the string."""
    return np.array([isinstance(v, Real) and not isinstance(v, bool) and v == -1
                     for v in np.asarray(y, dtype=object).ravel().tolist()], dtype=bool)


def _as_label_array(y) -> np.ndarray:
    from_sequence = isinstance(y, (list, tuple))
    y = column_or_1d(np.asarray(y, dtype=None if not from_sequence else object), warn=True)
    if y.dtype == object:
        # Lists of ints arrive as object arrays above; make them ints again so
        # that classes_ has a numeric dtype like sklearn's.
        if all(isinstance(v, Integral) and not isinstance(v, bool) for v in y):
            _check_int64(y)
            y = y.astype(np.int64)
        elif all(isinstance(v, Real) and not isinstance(v, bool) for v in y):
            # Numbers with a float among them (a list like [-1.0, 0.0, 2.0]):
            # as the same values in a float array, so that whole floats
            # become integer classes and -1.0 marks an unlabeled image.
            y = y.astype(np.float64)
        elif from_sequence and all(isinstance(v, str) for v in y):
            # What numpy (and so LabelEncoder) makes of a list of str. An
            # object array of str stays object: LabelEncoder().fit(y).classes_
            # keeps that dtype, and so does classes_.
            y = y.astype(str)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise ValueError(
                f"y contains {int(bad.sum())} NaN or infinite label(s), first at index "
                f"{int(np.flatnonzero(bad)[0])}"
            )
        if np.all(y == np.round(y)):
            # Beyond 2**53 floats skip integers, and beyond 2**63 the cast
            # to int64 wraps (1e20 would become class -2**63): refuse.
            huge = np.abs(y) > _FLOAT_EXACT
            if huge.any():
                i = int(np.flatnonzero(huge)[0])
                raise ValueError(
                    f"y[{i}] is {y[i]!r}: float labels beyond 2**53 cannot be told apart "
                    "exactly as classes; use integer or string labels"
                )
            y = y.astype(np.int64)
    if y.dtype == object:
        for i, v in enumerate(y):
            if v is None or (isinstance(v, float) and not np.isfinite(v)):
                raise ValueError(f"y[{i}] is {v!r}, which is not a label")
    return y


def _check_target_type(labeled: np.ndarray) -> None:
    """scikit-learn's check of classification targets on the labeled part of
    ``y`` ("Unknown label type: continuous ..." for regression targets).

    Object arrays of numbers are checked as floats (scikit-learn would call
    any object array of numbers "unknown"); other object arrays (strings,
    mixed types) are left to :func:`resolve_labels`, whose messages name the
    problem more precisely than "unknown".
    """
    if not len(labeled):
        return
    values = labeled
    if values.dtype == object:
        if not all(isinstance(v, Real) and not isinstance(v, bool) for v in values.tolist()):
            return
        values = values.astype(np.float64)
    if values.dtype.kind in "biuf":
        check_classification_targets(values)


def _unknown(labels, known) -> str:
    missing = sorted({repr(v) for v in labels if v not in known})
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    return f"{len(missing)} label(s) not among the classes: {shown}"


def resolve_labels(y, class_names=None, *, allow_unlabeled: bool = False) -> LabelInfo:
    """Validate labels against ``class_names`` and encode them.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Integer or string labels.
    class_names : None, sequence of str, or mapping label -> str
        A sequence of C names means classes ``0..C-1`` (y must be integers in
        that range); a mapping names each class label; None makes the classes
        the labels seen in y, named ``str(label)``.
    allow_unlabeled : bool, default=False
        Let ``-1`` mark unlabeled samples (semi-supervised estimators); they
        get ``y_encoded == -1`` and are not counted.

    Returns
    -------
    LabelInfo
        ``classes`` has the dtype ``LabelEncoder().fit(y).classes_`` would:
        ``<U`` for a list of str, object for an object array of str.

    Raises
    ------
    ValueError
        On labels that are no classes: scikit-learn's target check refuses
        continuous values ("Unknown label type: continuous ..."); NaN, None,
        unsortable mixtures, -1 where not allowed, labels outside
        ``class_names`` and fewer than 2 classes are named.
    """
    if class_names is not None:
        problem = class_names_problem(class_names)
        if problem is not None:
            raise ValueError(problem)
    y = _as_label_array(y)
    unlabeled = np.zeros(len(y), dtype=bool)
    if allow_unlabeled:
        unlabeled = unlabeled_mask(y)
    labeled = y[~unlabeled]
    _check_target_type(labeled)

    names_minus_one = isinstance(class_names, Mapping) and -1 in class_names
    if not allow_unlabeled and not names_minus_one and y.dtype.kind in "iu" and (y == -1).any():
        raise ValueError(
            "y contains -1, which marks unlabeled samples in scikit-learn; this "
            "estimator is supervised (ULFineClassifier takes unlabeled images), "
            "or name -1 as a class with class_names={-1: name, ...}"
        )
    if class_names is None:
        try:
            classes = np.unique(labeled)
        except TypeError:
            raise ValueError("y mixes label types that cannot be sorted (e.g. ints and strings)") from None
        names = [str(c) for c in classes]
    elif isinstance(class_names, Mapping):
        keys = list(class_names)
        if len({str if isinstance(k, str) else "other" for k in keys}) > 1:
            raise ValueError("class_names keys mix strings with other label types; use one type")
        try:
            classes = np.unique(np.asarray(keys, dtype=None if not all(isinstance(k, str) for k in keys) else str))
        except TypeError:
            raise ValueError("class_names keys mix label types that cannot be sorted") from None
        if len(classes) != len(keys):
            raise ValueError("class_names has duplicate keys")
        lookup = {k: v for k, v in class_names.items()}
        names = [str(lookup[c.item() if hasattr(c, "item") else c]) for c in classes]
        known = set(classes.tolist())
        if not set(labeled.tolist()) <= known:
            raise ValueError("y has " + _unknown(labeled.tolist(), known) + " of class_names")
    else:
        if isinstance(class_names, str):
            raise ValueError("class_names must be a sequence of names or a mapping, not a single str")
        names = [str(n) for n in class_names]
        if not names:
            raise ValueError("class_names is empty")
        classes = np.arange(len(names))
        if labeled.dtype.kind not in "iu":
            raise ValueError(
                "class_names given as a sequence means classes 0..C-1, so y must "
                f"hold integers; got labels of dtype {labeled.dtype}. Pass a "
                "mapping {label: name} for other labels."
            )
        bad = (labeled < 0) | (labeled >= len(names))
        if bad.any():
            raise ValueError(
                f"y has labels outside 0..{len(names) - 1}, the classes named by "
                "class_names: " + _unknown(labeled[bad].tolist(), set())
            )
    if y.dtype == object and classes.dtype.kind == "U":
        # Names from class_names keys: keep y's object dtype, as LabelEncoder would.
        classes = classes.astype(object)
    if len(classes) < 2:
        raise ValueError(
            f"need at least 2 classes, got {len(classes)}"
            + (f" ({classes[0]!r})" if len(classes) else "")
            + "; pass class_names to name the others"
        )
    y_encoded = np.full(len(y), -1, dtype=np.int64)
    if len(labeled):
        y_encoded[~unlabeled] = np.searchsorted(classes, labeled)
    counts = np.bincount(y_encoded[~unlabeled], minlength=len(classes))
    return LabelInfo(classes=classes, names=names, y_encoded=y_encoded, counts=counts)
