"""Tests for liftlearn.metrics: long-tail metrics, report and scorers."""

from __future__ import annotations

import contextlib
import pickle
import re
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
)
from sklearn.metrics import get_scorer as sklearn_get_scorer
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from liftlearn.exceptions import LiftLearnWarning
from liftlearn.metrics import (
    UndefinedClassWarning,
    balanced_accuracy,
    balanced_accuracy_scorer,
    expected_calibration_error,
    few_shot_scorer,
    geometric_mean_accuracy,
    get_scorer,
    gmean_scorer,
    harmonic_mean_accuracy,
    hmean_scorer,
    long_tail_report,
    long_tail_scoring,
    macro_f1,
    macro_f1_scorer,
    make_shot_scorer,
    many_shot_scorer,
    medium_shot_scorer,
    neg_ece_scorer,
    per_class_accuracy,
    plot_per_class_accuracy,
    shot_accuracy,
    shot_groups,
    worst_class_accuracy,
    worst_class_scorer,
)

PROPERTY = settings(max_examples=60, deadline=None)


@contextlib.contextmanager
def quiet():
    """Silence the absent-class warning where a test does not look at it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedClassWarning)
        yield


@st.composite
def problems(draw, max_classes=8):
    """Random labels 0..K-1 with training counts spanning all three groups."""
    k = draw(st.integers(1, max_classes))
    counts = draw(st.lists(st.integers(0, 300), min_size=k, max_size=k))
    n = draw(st.integers(1, 60))
    y_true = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    return np.array(y_true), np.array(y_pred), np.array(counts)


def all_scores(y_true, y_pred, counts, labels=None):
    """Every scalar metric of the module, by name."""
    scores = {
        "balanced": balanced_accuracy(y_true, y_pred, labels=labels),
        "hmean": harmonic_mean_accuracy(y_true, y_pred, labels=labels),
        "gmean": geometric_mean_accuracy(y_true, y_pred, labels=labels),
        "worst": worst_class_accuracy(y_true, y_pred, labels=labels),
        "f1": macro_f1(y_true, y_pred, labels=labels),
    }
    shot = shot_accuracy(y_true, y_pred, counts, labels=labels)
    scores.update({f"shot_{name}": value for name, value in shot.items()})
    return scores


# -- properties ----------------------------------------------------------------


@PROPERTY
@given(problems())
def test_perfect_predictions_score_one_everywhere(problem):
    y_true, _, counts = problem
    labels = np.arange(len(counts))
    with quiet():
        scores = all_scores(y_true, y_true, counts, labels=labels)
        accuracy = per_class_accuracy(y_true, y_true, labels=labels)
        report = long_tail_report(y_true, y_true, counts, output_dict=True)
    present = np.isin(labels, y_true)
    assert_array_equal(accuracy[present], 1.0)
    assert np.isnan(accuracy[~present]).all()
    groups = shot_groups(counts)
    for name, value in scores.items():
        if name.startswith("shot_") and not (groups[name[5:]] & present).any():
            assert np.isnan(value)  # no class of the group to score
        else:
            assert value == 1.0, name
    assert report["accuracy"] == 1.0
    assert expected_calibration_error(y_true, np.eye(len(counts))[y_true]) == 0.0


@PROPERTY
@given(problems(), st.randoms())
def test_invariant_under_relabelling(problem, random):
    y_true, y_pred, counts = problem
    k = len(counts)
    perm = list(range(k))
    random.shuffle(perm)
    # Rename class i to the string "c{perm[i]}" and move its count along.
    names = np.array([f"c{p:02d}" for p in perm])
    count_map = {names[i]: counts[i] for i in range(k)}
    with quiet():
        before = all_scores(y_true, y_pred, counts)
        after_ids = all_scores(
            np.array(perm)[y_true], np.array(perm)[y_pred], counts[np.argsort(perm)]
        )
        after_names = all_scores(names[y_true], names[y_pred], count_map, labels=names)
        acc_before = per_class_accuracy(y_true, y_pred, labels=np.arange(k))
        acc_after = per_class_accuracy(names[y_true], names[y_pred], labels=names)
    for name in before:
        assert_allclose(after_ids[name], before[name], rtol=1e-12, err_msg=name)
        assert_allclose(after_names[name], before[name], rtol=1e-12, err_msg=name)
    assert_allclose(acc_after, acc_before)


@PROPERTY
@given(
    st.lists(st.integers(0, 1000), min_size=1, max_size=30),
    st.integers(0, 300),
    st.integers(0, 300),
)
def test_groups_partition_the_classes(counts, a, b):
    few_threshold, many_threshold = min(a, b), max(a, b)
    counts = np.array(counts)
    groups = shot_groups(
        counts, many_threshold=many_threshold, few_threshold=few_threshold
    )
    assert list(groups) == ["many", "medium", "few"]
    assert_array_equal(sum(mask.astype(int) for mask in groups.values()), 1)
    assert_array_equal(groups["many"], counts > many_threshold)
    assert_array_equal(groups["few"], counts < few_threshold)


@PROPERTY
@given(problems())
def test_agrees_with_sklearn(problem):
    y_true, y_pred, counts = problem
    present = np.unique(y_true)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on absent classes too
        assert_allclose(
            balanced_accuracy(y_true, y_pred), balanced_accuracy_score(y_true, y_pred)
        )
        assert_allclose(
            macro_f1(y_true, y_pred),
            f1_score(y_true, y_pred, average="macro", labels=present),
        )
        accuracy = per_class_accuracy(y_true, y_pred, labels=np.arange(len(counts)))
        assert_allclose(
            accuracy[present],
            recall_score(y_true, y_pred, average=None, labels=present),
        )
        report = long_tail_report(y_true, y_pred, counts, output_dict=True)
    assert_allclose(report["accuracy"], accuracy_score(y_true, y_pred))
    raw = accuracy[present]
    # No clipping by default, as imbalanced-learn's geometric_mean_score:
    # one class at 0 makes both means 0.
    assert_allclose(report["harmonic_mean_accuracy"], stats.hmean(raw) if raw.min() > 0 else 0.0)
    with np.errstate(divide="ignore"):
        assert_allclose(report["geometric_mean_accuracy"], stats.gmean(raw))
    assert report["correction"] == 0.0
    with quiet():
        clipped_report = long_tail_report(y_true, y_pred, counts, output_dict=True, correction=1e-3)
    clipped = np.maximum(raw, 1e-3)
    assert_allclose(clipped_report["harmonic_mean_accuracy"], stats.hmean(clipped))
    assert_allclose(clipped_report["geometric_mean_accuracy"], stats.gmean(clipped))
    assert report["worst_class_accuracy"] == accuracy[present].min()


@PROPERTY
@given(problems())
def test_means_are_ordered_and_groups_add_up(problem):
    y_true, y_pred, counts = problem
    with quiet():
        s = all_scores(y_true, y_pred, counts)
    # HM <= GM <= AM of the clipped accuracies, which exceeds balanced by < 1e-3.
    assert 0 <= s["worst"] <= s["hmean"] * (1 + 1e-9)
    assert s["hmean"] <= s["gmean"] * (1 + 1e-9)
    assert s["gmean"] <= (s["balanced"] + 1e-3) * (1 + 1e-9)
    # Balanced accuracy is the class-weighted mean of the group accuracies.
    present = np.isin(np.arange(len(counts)), y_true)
    groups = shot_groups(counts)
    n = {name: (mask & present).sum() for name, mask in groups.items()}
    total = sum(n[g] * s[f"shot_{g}"] for g in groups if n[g])
    assert_allclose(total / present.sum(), s["balanced"])


def reference_ece(y_true, proba, n_bins):
    """Textbook loop over bins (lo, hi]."""
    proba = np.asarray(proba)
    confidence, correct = proba.max(1), proba.argmax(1) == np.asarray(y_true)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        in_bin = (confidence > lo) & (confidence <= hi)
        if i == 0:
            in_bin |= confidence == 0
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            total += in_bin.mean() * gap
    return total


@PROPERTY
@given(
    st.integers(2, 5).flatmap(
        lambda k: st.lists(
            st.tuples(
                st.integers(0, k - 1),
                st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k),
            ),
            min_size=1,
            max_size=40,
        )
    ),
    st.integers(1, 20),
)
def test_ece_matches_reference(rows, n_bins):
    y_true = np.array([y for y, _ in rows])
    weights = np.array([w for _, w in rows])
    proba = weights / weights.sum(1, keepdims=True)
    assert_allclose(
        expected_calibration_error(y_true, proba, n_bins=n_bins),
        reference_ece(y_true, proba, n_bins),
        atol=1e-12,
    )


# -- hand-made examples ----------------------------------------------------------


def test_per_class_accuracy_includes_never_predicted_classes():
    acc = per_class_accuracy([0, 0, 1, 2], [0, 0, 1, 1], labels=[0, 1, 2])
    assert_array_equal(acc, [1.0, 1.0, 0.0])
    acc = per_class_accuracy(["b", "a", "a"], ["b", "b", "a"])
    assert_array_equal(acc, [0.5, 1.0])  # sorted labels: a, b


def test_shot_group_boundaries():
    groups = shot_groups([101, 100, 20, 19, 0])
    assert_array_equal(groups["many"], [1, 0, 0, 0, 0])
    assert_array_equal(groups["medium"], [0, 1, 1, 0, 0])
    assert_array_equal(groups["few"], [0, 0, 0, 1, 1])
    groups = shot_groups([101, 100, 20, 19], many_threshold=50, few_threshold=20)
    assert_array_equal(groups["many"], [1, 1, 0, 0])
    assert_array_equal(groups["medium"], [0, 0, 1, 0])


def test_shot_groups_from_mapping_use_sorted_keys():
    groups = shot_groups({"zebra": 5, "ant": 500, "cat": 50})  # ant, cat, zebra
    assert_array_equal(groups["many"], [1, 0, 0])
    assert_array_equal(groups["few"], [0, 0, 1])
    groups = shot_groups({"zebra": 5, "ant": 500}, labels=["zebra", "ant"])
    assert_array_equal(groups["many"], [0, 1])


def test_shot_accuracy_hand_example():
    y_true = [0, 0, 1, 1, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 0, 0, 0, 3, 0]
    # many: class 0 (1.0); medium: classes 1, 2 (0.5, 0.0); few: class 3 (0.5)
    result = shot_accuracy(y_true, y_pred, [500, 60, 20, 3])
    assert result == {"many": 1.0, "medium": 0.25, "few": 0.5}
    result = shot_accuracy(
        y_true, y_pred, [500, 60, 20, 3], many_threshold=50, few_threshold=21
    )
    # many: classes 0, 1 (1.0, 0.5); medium: none; few: classes 2, 3 (0.0, 0.5)
    assert (result["many"], result["few"]) == (0.75, 0.25)
    assert np.isnan(result["medium"])


def test_empty_group_is_nan_without_error_or_warning():
    # CIFAR-10-LT at imbalance ratio 10: 5000 down to 500 images per class.
    counts = [int(5000 * 0.1 ** (i / 9)) for i in range(10)]
    y = np.repeat(np.arange(10), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = shot_accuracy(y, y, counts)
        report = long_tail_report(y, y, counts)
    assert result["many"] == 1.0
    assert np.isnan(result["medium"]) and np.isnan(result["few"])
    assert summary_rows(report)["medium-shot (20-100)"] == ["0", "0", "-"]


def test_harmonic_and_geometric_mean_hand_examples():
    y_true, y_pred = [0, 0, 1, 1], [0, 1, 1, 1]  # accuracies 0.5, 1.0
    assert_allclose(harmonic_mean_accuracy(y_true, y_pred), 2 / 3)
    assert_allclose(geometric_mean_accuracy(y_true, y_pred), np.sqrt(0.5))
    y_true, y_pred = [0, 1, 1], [1, 1, 1]  # accuracies 0.0, 1.0
    assert_allclose(harmonic_mean_accuracy(y_true, y_pred, correction=1e-3), 2 / (1000 + 1))
    assert_allclose(geometric_mean_accuracy(y_true, y_pred, correction=1e-3), np.sqrt(1e-3))
    assert_allclose(geometric_mean_accuracy(y_true, y_pred, correction=0.01), 0.1)
    assert harmonic_mean_accuracy(y_true, y_pred, correction=0) == 0.0
    assert geometric_mean_accuracy(y_true, y_pred, correction=0) == 0.0


def test_means_do_not_clip_by_default_and_the_report_names_a_correction():
    # The quickstart's case: a class at 0 beside good ones. imbalanced-learn's
    # geometric_mean_score (correction=0.0 by default) gives 0; so do we.
    y_true, y_pred = [0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 0, 0]
    assert geometric_mean_accuracy(y_true, y_pred) == 0.0
    assert harmonic_mean_accuracy(y_true, y_pred) == 0.0
    counts = [500, 50, 5]
    rows = summary_rows(long_tail_report(y_true, y_pred, counts))
    assert rows["geometric mean"][-1] == "0.000" and rows["harmonic mean"][-1] == "0.000"
    text = long_tail_report(y_true, y_pred, counts, correction=1e-3)
    rows = summary_rows(text)
    assert rows["geometric mean (clipped at 0.001)"][-1] == "0.100"
    assert "harmonic mean (clipped at 0.001)" in rows
    assert long_tail_report(y_true, y_pred, counts, output_dict=True,
                            correction=1e-3)["correction"] == 1e-3
    with pytest.raises(ValueError, match="correction"):
        long_tail_report(y_true, y_pred, counts, correction=-1)


def test_worst_class_and_macro_f1_hand_examples():
    assert worst_class_accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 2]) == 0.5
    # class 0: P=1, R=1/2 -> F1=2/3; class 1: P=2/3, R=1 -> F1=4/5
    assert_allclose(macro_f1([0, 0, 1, 1], [0, 1, 1, 1]), (2 / 3 + 4 / 5) / 2)


def test_macro_f1_leaves_out_predicted_only_class():
    y_true, y_pred = [0, 0, 1], [0, 2, 1]
    with pytest.warns(UndefinedClassWarning, match="2"):
        value = macro_f1(y_true, y_pred)
    assert_allclose(value, (2 / 3 + 1) / 2)
    assert_allclose(value, f1_score(y_true, y_pred, average="macro", labels=[0, 1]))


def test_ece_hand_example():
    proba = [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]
    y_true = [0, 1, 1, 1]
    # 5 bins: 0.9 alone (acc 1), 0.8 and 0.7 together (acc 1/2, conf 0.75),
    # 0.6 alone (acc 1).
    gaps, weights = np.array([0.1, 0.25, 0.4]), np.array([0.25, 0.5, 0.25])
    assert_allclose(
        expected_calibration_error(y_true, proba, n_bins=5), np.sum(weights * gaps)
    )
    assert_allclose(
        expected_calibration_error(y_true, proba, n_bins=5, norm="l2"),
        np.sqrt(np.sum(weights * gaps**2)),
    )
    ece = expected_calibration_error(y_true, proba, n_bins=5, norm="max")
    assert_allclose(ece, 0.4)
    ece = expected_calibration_error(
        ["a", "b", "b", "b"], proba, labels=["a", "b"], n_bins=5
    )
    assert_allclose(ece, 0.25)


# -- the absent-class rule ---------------------------------------------------------


def test_absent_class_is_left_out_with_one_warning():
    y_true, y_pred = [0, 0, 1, 1], [0, 1, 1, 2]
    message = r"2 of 4 classes .*\(2, 3\)"
    with pytest.warns(UndefinedClassWarning, match=message) as record:
        value = balanced_accuracy(y_true, y_pred, labels=[0, 1, 2, 3])
    assert len(record) == 1
    assert value == 0.5
    warning = record[0].message
    assert isinstance(warning, LiftLearnWarning)
    assert isinstance(warning, UndefinedMetricWarning)


@pytest.mark.parametrize(
    "metric",
    [
        lambda t, p: per_class_accuracy(t, p, labels=[0, 1, 2]),
        lambda t, p: balanced_accuracy(t, p, labels=[0, 1, 2]),
        lambda t, p: harmonic_mean_accuracy(t, p, labels=[0, 1, 2]),
        lambda t, p: geometric_mean_accuracy(t, p, labels=[0, 1, 2]),
        lambda t, p: worst_class_accuracy(t, p, labels=[0, 1, 2]),
        lambda t, p: macro_f1(t, p, labels=[0, 1, 2]),
        lambda t, p: shot_accuracy(t, p, [500, 50, 5]),
        lambda t, p: long_tail_report(t, p, [500, 50, 5]),
        lambda t, p: long_tail_report(t, p, [500, 50, 5], output_dict=True),
    ],
)
def test_every_metric_warns_once_about_absent_classes(metric):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        metric([0, 0, 1], [0, 1, 1])
    assert [type(r.message) for r in record] == [UndefinedClassWarning]


def test_absent_class_ranks_nothing():
    # The absent class 2 has NaN accuracy but is not the "worst class".
    with quiet():
        accuracy = per_class_accuracy([0, 1], [0, 0], labels=[0, 1, 2])
        worst = worst_class_accuracy([0, 1], [0, 0], labels=[0, 1, 2])
        few = shot_accuracy([0, 1], [0, 0], [500, 50, 5])["few"]
    assert np.isnan(accuracy[2]) and worst == 0.0 and np.isnan(few)


def test_no_warning_when_every_class_is_present():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balanced_accuracy([0, 1, 2], [0, 0, 0])


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: balanced_accuracy([0, 1], [0, 7], labels=[0, 1]),
            "y_pred contains label 7, which is not among the 2 labels",
        ),
        (
            lambda: shot_accuracy(["cat"], ["cat"], [5, 6]),
            "y_true contains label 'cat'",
        ),
        (lambda: balanced_accuracy([0, 1], [0]), "different lengths"),
        (lambda: balanced_accuracy([], []), "empty"),
        (lambda: balanced_accuracy([[0, 1]], [[0, 1]]), "1-dimensional"),
        (lambda: balanced_accuracy([0], [0], labels=[0, 0]), "duplicates"),
        (lambda: shot_groups([1, 2, 3], labels=[0, 1]), "3 entries but there are 2"),
        (
            lambda: shot_groups({"a": 1}, labels=["a", "b"]),
            r"no entry for labels \['b'\]",
        ),
        (lambda: shot_groups([5, -1]), "non-negative whole"),
        (lambda: shot_groups([5, 1.5]), "non-negative whole"),
        (lambda: shot_groups([5], many_threshold=10, few_threshold=20), "exceed"),
        (lambda: harmonic_mean_accuracy([0], [0], correction=2), "correction"),
        (lambda: expected_calibration_error([0, 1], [[1, 0]]), "shape"),
        (lambda: expected_calibration_error([0], [[1, 0]], labels=[0]), "2 columns"),
        (lambda: expected_calibration_error([0], [[1.5, 0]]), r"\[0, 1\]"),
        (lambda: expected_calibration_error([0], [[1, 0]], n_bins=0), "n_bins"),
        (lambda: expected_calibration_error([0], [[1, 0]], norm="l3"), "norm"),
        (
            lambda: long_tail_report([0], [0], [5], target_names=["a", "b"]),
            "target_names has 2 entries for 1 labels",
        ),
        (lambda: make_shot_scorer("rare"), "group must be one of"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install liftlearn\[plot\]"):
        plot_per_class_accuracy([0], [0], [5])


def summary_rows(text):
    """Summary lines of a report as ``{title: [cells]}``; cells are 2+ spaces apart."""
    summary = text.split("\n\n")[1].splitlines()[1:]
    cells = [re.split(r"\s{2,}", line.strip()) for line in summary]
    return {row[0]: row[1:] for row in cells}


# -- report ----------------------------------------------------------------------------


def test_report_text_lists_classes_groups_and_sizes():
    y_true = [0, 0, 1, 1, 2, 3, 3, 3]
    y_pred = [0, 0, 1, 0, 2, 3, 0, 0]
    counts = {0: 800, 1: 150, 2: 40, 3: 7}
    proba = np.eye(4)[y_pred] * 0.9 + 0.025
    text = long_tail_report(
        y_true,
        y_pred,
        counts,
        target_names=["dog", "cat", "owl", "okapi"],
        y_proba=proba,
    )
    lines = text.splitlines()
    assert lines[0].split() == ["class", "train", "group", "support", "accuracy"]
    assert lines[1].split() == ["dog", "800", "many", "2", "1.000"]
    assert lines[4].split() == ["okapi", "7", "few", "3", "0.333"]
    rows = summary_rows(text)
    assert rows["accuracy"] == ["4", "8", "0.625"]
    assert rows["balanced accuracy"] == ["4", "8", "0.708"]
    assert rows["many-shot (>100)"] == ["2", "4", "0.750"]  # 2 classes, 4 images
    assert rows["medium-shot (20-100)"] == ["1", "1", "1.000"]
    assert rows["few-shot (<20)"] == ["1", "3", "0.333"]
    assert rows["worst class"] == ["4", "8", "0.333"]
    assert rows["ECE"] == ["8", "0.300"]  # confidence 0.925, accuracy 0.625
    assert {"harmonic mean", "geometric mean", "macro F1"} <= set(rows)


def test_report_counts_the_classes_behind_each_figure():
    # Class 2 has no test image: the per-class means leave it out, and the
    # classes column says so; its group keeps its size.
    with pytest.warns(UndefinedClassWarning):
        text = long_tail_report([0, 0, 1], [0, 1, 1], [200, 50, 5], labels=[0, 1, 2])
    rows = summary_rows(text)
    assert rows["accuracy"] == ["2", "3", "0.667"]
    assert rows["balanced accuracy"] == ["2", "3", "0.750"]
    assert rows["few-shot (<20)"] == ["1", "0", "-"]


def test_report_options():
    y, counts = [0, 1, 2], [500, 50, 5]
    text = long_tail_report(y, y, counts, digits=1, many_threshold=40, few_threshold=6)
    assert "many-shot (>40)" in text and "few-shot (<6)" in text
    assert " 1.0" in text and "1.000" not in text
    assert "ECE" not in text


def test_report_dict():
    y_true, y_pred = ["a", "a", "b", "c"], ["a", "b", "b", "b"]
    report = long_tail_report(
        y_true, y_pred, {"a": 300, "b": 30, "c": 3}, y_proba=np.eye(3)[[0, 1, 1, 1]],
        output_dict=True,
    )
    assert report["classes"]["c"] == {
        "train_count": 3, "group": "few", "support": 1, "accuracy": 0.0
    }
    assert report["groups"]["many"] == {"n_classes": 1, "support": 2, "accuracy": 0.5}
    assert report["accuracy"] == 0.5
    assert report["balanced_accuracy"] == 0.5
    assert report["worst_class_accuracy"] == 0.0
    assert report["expected_calibration_error"] == 0.5
    assert_allclose(report["macro_f1"], f1_score(y_true, y_pred, average="macro"))


# -- scorers -----------------------------------------------------------------------


class LookupClassifier(ClassifierMixin, BaseEstimator):
    """Looks up the answer for row ``X[i, 0]`` when ``X[i, 1] < skill``.

    Otherwise it predicts the majority class, so ``skill`` tunes accuracy
    without any model; ``X[:, 1]`` holds uniform noise.
    """

    def __init__(self, answers=None, skill=1.0):
        self.answers = answers
        self.skill = skill

    def fit(self, X, y):
        self.classes_, self.class_counts_ = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(self.class_counts_)]
        return self

    def predict(self, X):
        hit = X[:, 1] < self.skill
        answers = np.asarray(self.answers)[X[:, 0].astype(int)]
        return np.where(hit, answers, self.majority_)

    def predict_proba(self, X):
        pred = np.searchsorted(self.classes_, self.predict(X))
        k = len(self.classes_)
        rest = 0.1 / (k - 1)  # 0.9 on the prediction, the rest spread evenly
        return np.full((len(X), k), rest) + np.eye(k)[pred] * (0.9 - rest)


def long_tail_data(sizes=(450, 300, 90, 60, 15, 12), names=None, seed=0):
    """Rows per class; with 3-fold CV the training counts span all groups."""
    y = np.repeat(np.arange(len(sizes)), sizes)
    if names is not None:
        y = np.asarray(names)[y]
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(len(y)), rng.random(len(y))])
    return X, y


ALL_SCORERS = [
    balanced_accuracy_scorer, many_shot_scorer, medium_shot_scorer, few_shot_scorer,
    hmean_scorer, gmean_scorer, worst_class_scorer, macro_f1_scorer,
]


def test_scorers_match_the_metrics():
    X, y = long_tail_data()
    clf = LookupClassifier(answers=y, skill=0.7).fit(X, y)
    y_pred = clf.predict(X)
    shot = shot_accuracy(y, y_pred, clf.class_counts_, labels=clf.classes_)
    assert few_shot_scorer(clf, X, y) == shot["few"]
    assert medium_shot_scorer(clf, X, y) == shot["medium"]
    assert many_shot_scorer(clf, X, y) == shot["many"]
    assert balanced_accuracy_scorer(clf, X, y) == balanced_accuracy_score(y, y_pred)
    assert hmean_scorer(clf, X, y) == harmonic_mean_accuracy(y, y_pred)
    assert gmean_scorer(clf, X, y) == geometric_mean_accuracy(y, y_pred)
    assert worst_class_scorer(clf, X, y) == worst_class_accuracy(y, y_pred)
    assert macro_f1_scorer(clf, X, y) == macro_f1(y, y_pred)
    ece = expected_calibration_error(y, clf.predict_proba(X), labels=clf.classes_)
    assert neg_ece_scorer(clf, X, y) == -ece < 0


def test_perfect_estimator_scores_one():
    X, y = long_tail_data(names=[f"class {i}" for i in range(6)])
    clf = LookupClassifier(answers=y).fit(X, y)
    for scorer in ALL_SCORERS:
        assert scorer(clf, X, y) == 1.0, scorer
    assert_allclose(neg_ece_scorer(clf, X, y), -0.1)


def test_grid_search_with_long_tail_scoring():
    X, y = long_tail_data()
    search = GridSearchCV(
        LookupClassifier(answers=y),
        {"skill": [0.2, 0.9, 0.5]},
        scoring=long_tail_scoring(calibration=True),
        refit="balanced_accuracy",
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search.fit(X, y)
    assert search.best_params_ == {"skill": 0.9}
    for name in long_tail_scoring(calibration=True):
        assert np.isfinite(search.cv_results_[f"mean_test_{name}"]).all(), name
    few = search.cv_results_["mean_test_few_shot_accuracy"]
    assert few[1] > few[2] > few[0]  # the majority fallback never hits a few class


CALLS: list = []


class CountingClassifier(LookupClassifier):
    """Records every prediction call (module-level so that clones count too)."""

    def predict(self, X):
        CALLS.append("predict")
        return super().predict(X)

    def predict_proba(self, X):
        CALLS.append("predict_proba")
        pred = np.searchsorted(self.classes_, super().predict(X))  # not self.predict
        k = len(self.classes_)
        rest = 0.1 / (k - 1)
        return np.full((len(X), k), rest) + np.eye(k)[pred] * (0.9 - rest)

    def decision_function(self, X):
        CALLS.append("decision_function")
        return np.log(self.predict_proba(X))


@pytest.mark.parametrize("calibration", [False, True])
def test_long_tail_scoring_predicts_once_per_fold_and_warns_once(calibration):
    # 3-fold CV where class 5 (2 images) is missing from one test fold: the
    # absent-class warning is due there, once, not once per metric.
    X, y = long_tail_data(sizes=(60, 40, 30, 20, 10, 2))
    scoring = long_tail_scoring(calibration=calibration)
    CALLS.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cross_validate(CountingClassifier(answers=y, skill=0.6), X, y,
                                cv=KFold(3, shuffle=True, random_state=0), scoring=scoring)
    # Exactly one prediction per fold: predict_proba with calibration, else predict.
    assert CALLS == ["predict_proba" if calibration else "predict"] * 3
    absent = [w for w in caught if issubclass(w.category, UndefinedClassWarning)]
    assert 1 <= len(absent) <= 3
    for name in scoring:
        assert result[f"test_{name}"].shape == (3,), name
    assert np.isfinite(result["test_balanced_accuracy"]).all()


@PROPERTY
@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.sampled_from([0.0, 1e-3]))
def test_long_tail_scoring_equals_its_single_metric_scorers(seed, skill, correction):
    X, y = long_tail_data(sizes=(150, 60, 25, 8), seed=seed)
    train = np.arange(len(y)) % 2 == 0
    clf = LookupClassifier(answers=y, skill=skill).fit(X[train], y[train])
    scoring = long_tail_scoring(many_threshold=50, few_threshold=10, calibration=True,
                                correction=correction)
    with quiet():
        together = scoring(clf, X, y)
        for name, scorer in scoring.items():
            assert_allclose(together[name], scorer(clf, X, y), err_msg=name)
    assert list(together) == list(scoring)


def test_long_tail_scoring_in_a_search_refits_on_a_key():
    X, y = long_tail_data()
    search = GridSearchCV(LookupClassifier(answers=y), {"skill": [0.2, 0.9]},
                          scoring=long_tail_scoring(), refit="few_shot_accuracy", cv=3)
    with quiet():
        search.fit(X, y)
    assert search.best_params_ == {"skill": 0.9}
    assert "mean_test_macro_f1" in search.cv_results_
    assert "long_tail_scoring(" in repr(long_tail_scoring())


def test_few_shot_scorer_is_nan_on_folds_without_few_classes():
    X, y = long_tail_data(sizes=(300, 300, 90))  # no class under 20 images
    result = cross_validate(
        LookupClassifier(answers=y), X, y, cv=3,
        scoring={"few": few_shot_scorer, "balanced": "balanced_accuracy"},
    )
    assert np.isnan(result["test_few"]).all()
    assert_array_equal(result["test_balanced"], 1.0)
    search = GridSearchCV(
        LookupClassifier(answers=y),
        {"skill": [0.5, 1.0]},
        scoring=few_shot_scorer,
        cv=3,
    )
    with pytest.warns(UserWarning, match="non-finite"):
        search.fit(X, y)


def test_custom_thresholds_in_scoring():
    X, y = long_tail_data()
    clf = LookupClassifier(answers=y, skill=0.6).fit(X, y)
    scoring = long_tail_scoring(many_threshold=400, few_threshold=100)
    shot = shot_accuracy(
        y, clf.predict(X), clf.class_counts_, labels=clf.classes_,
        many_threshold=400, few_threshold=100,
    )
    assert scoring["many_shot_accuracy"](clf, X, y) == shot["many"]
    assert scoring["few_shot_accuracy"](clf, X, y) == shot["few"]


def test_scorer_handles_test_classes_unseen_in_training():
    X, y = long_tail_data()
    train = y != 5
    clf = LookupClassifier(answers=y).fit(X[train], y[train])
    # Class 5 was seen 0 times in training, which makes it few-shot rather
    # than an unknown label.
    assert few_shot_scorer(clf, X, y) == 1.0
    clf.set_params(skill=0.0)
    assert few_shot_scorer(clf, X, y) == 0.0


def test_scorers_reach_into_pipelines():
    X, y = long_tail_data()
    pipe = make_pipeline(FunctionTransformer(), LookupClassifier(answers=y)).fit(X, y)
    assert few_shot_scorer(pipe, X, y) == 1.0


def test_shot_scorer_needs_class_counts():
    X, y = long_tail_data(sizes=(30, 30))
    clf = LogisticRegression().fit(X, y)
    with pytest.raises(AttributeError, match="class_counts_"):
        few_shot_scorer(clf, X, y)
    # Scorers without training counts work on any classifier.
    sklearn_scorer = sklearn_get_scorer("balanced_accuracy")
    assert balanced_accuracy_scorer(clf, X, y) == sklearn_scorer(clf, X, y)


def test_get_scorer():
    assert get_scorer("few_shot") is few_shot_scorer
    assert get_scorer("few_shot_accuracy") is few_shot_scorer
    assert get_scorer("hmean") is hmean_scorer
    assert get_scorer("neg_ece") is neg_ece_scorer
    X, y = long_tail_data(sizes=(30, 30))
    clf = LookupClassifier(answers=y, skill=0.5).fit(X, y)
    assert get_scorer("accuracy")(clf, X, y) == accuracy_score(y, clf.predict(X))
    assert get_scorer(few_shot_scorer) is few_shot_scorer
    with pytest.raises(ValueError):
        get_scorer("no_such_metric")


def test_scorers_pickle():
    X, y = long_tail_data()
    clf = LookupClassifier(answers=y, skill=0.5).fit(X, y)
    scoring = long_tail_scoring(calibration=True)
    for name, scorer in scoring.items():
        clone = pickle.loads(pickle.dumps(scorer))
        assert_allclose(clone(clf, X, y), scorer(clf, X, y), err_msg=name)
    assert pickle.loads(pickle.dumps(scoring))(clf, X, y) == scoring(clf, X, y)
    assert repr(few_shot_scorer) == "<liftlearn scorer 'few_shot_accuracy'>"


def test_docstring_examples_run():
    import doctest

    from liftlearn.metrics import _core, _plot, _scorer

    attempted = 0
    for module in (_core, _scorer, _plot):
        result = doctest.testmod(module, raise_on_error=False, verbose=False)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 10


class SkippingClassifier(LookupClassifier):
    """As liftlearn's classifiers with on_bad_image="skip": rows with
    ``X[i, 1] > 0.9`` are images it could not read (-1, a NaN row)."""

    def predict(self, X):
        return np.where(X[:, 1] > 0.9, -1, super().predict(X))

    def predict_proba(self, X):
        proba = super().predict_proba(X)
        proba[X[:, 1] > 0.9] = np.nan
        return proba


def test_scorers_count_skipped_images_as_errors():
    X, y = long_tail_data()
    clf = SkippingClassifier(answers=y).fit(X, y)
    skipped = X[:, 1] > 0.9
    assert skipped.any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: -1 is no class of y_true
        expected = balanced_accuracy_score(y, np.where(skipped, -1, y))
    assert balanced_accuracy_scorer(clf, X, y) == pytest.approx(expected)
    scores = long_tail_scoring(calibration=True)(clf, X, y)
    assert scores["accuracy"] == pytest.approx(1 - skipped.mean())
    assert scores["balanced_accuracy"] == pytest.approx(expected)
    # Confidence of the predicted images only: 0.9, all right.
    assert scores["neg_expected_calibration_error"] == pytest.approx(-0.1)
    assert long_tail_scoring()["accuracy"](clf, X, y) == scores["accuracy"]
    search = GridSearchCV(SkippingClassifier(answers=y), {"skill": [0.5, 1.0]}, cv=3,
                          scoring=long_tail_scoring(calibration=True), refit="balanced_accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedClassWarning)
        search.fit(X, y)
    assert search.best_params_ == {"skill": 1.0}


def test_scorers_leave_unlabeled_samples_out():
    X, y = long_tail_data()
    clf = LookupClassifier(answers=y, skill=0.5).fit(X, y)
    y_ssl = np.where(np.arange(len(y)) % 3 == 0, -1, y)
    labeled = y_ssl != -1
    for scorer in [*ALL_SCORERS, long_tail_scoring()["accuracy"]]:
        assert scorer(clf, X, y_ssl) == scorer(clf, X[labeled], y[labeled]), scorer
    assert long_tail_scoring()(clf, X, y_ssl) == long_tail_scoring()(clf, X[labeled], y[labeled])
    with pytest.raises(ValueError, match="every label in y is -1"):
        balanced_accuracy_scorer(clf, X, np.full(len(y), -1))


def test_scorers_reach_into_searches_and_calibrated_frozen_models():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    X, y = long_tail_data()
    search = GridSearchCV(LookupClassifier(answers=y), {"skill": [0.2, 1.0]}, cv=3,
                          scoring=balanced_accuracy_scorer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedClassWarning)
        search.fit(X, y)
    assert few_shot_scorer(search, X, y) == 1.0
    clf = LookupClassifier(answers=y).fit(X, y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(clf)).fit(X, y)
    assert few_shot_scorer(calibrated, X, y) == few_shot_scorer(clf, X, y)


def test_scorers_read_fitted_copies_not_templates_or_fold_models():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.semi_supervised import SelfTrainingClassifier

    X, y = long_tail_data()
    # The template was fitted on a part; the meta-estimator fits its own copy.
    template = LookupClassifier(answers=y).fit(X[::2], y[::2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y contains no unlabeled samples"
        wrapped = SelfTrainingClassifier(template).fit(X, y)
    assert few_shot_scorer(wrapped, X, y) == 1.0
    assert _fitted_counts(wrapped).tolist() == np.bincount(y).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folds = CalibratedClassifierCV(LookupClassifier(answers=y), cv=3).fit(X, y)
    with pytest.raises(AttributeError, match="each fitted on one fold"):
        few_shot_scorer(folds, X, y)


def _fitted_counts(estimator):
    from liftlearn.metrics._scorer import _fitted

    return np.asarray(_fitted(estimator, "class_counts_"))


def test_unlabeled_marks_in_a_list_of_strings_are_left_out():
    X, y = long_tail_data(names=["ant", "bee", "cat", "dog", "eel", "fox"])
    clf = LookupClassifier(answers=y, skill=0.5).fit(X, y)
    y_ssl = [-1 if i % 3 == 0 else v for i, v in enumerate(y.tolist())]
    labeled = np.arange(len(y)) % 3 != 0
    assert balanced_accuracy_scorer(clf, X, y_ssl) == balanced_accuracy_scorer(clf, X[labeled], y[labeled])
