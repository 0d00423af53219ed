"""make_long_tailed_ssl_split: LTSSL counts, disjointness, -1 marking, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liftlearn.datasets._cifar10 import long_tailed_counts
from liftlearn.datasets._ssl import make_long_tailed_ssl_split


def _pool(n_classes, per_class, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(2, 8),
    n_l=st.integers(1, 30),
    n_u=st.integers(0, 30),
    g_l=st.floats(1, 50),
    g_u=st.floats(1, 50),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_counts_disjoint_and_marked(k, n_l, n_u, g_l, g_u, reverse, seed):
    y = _pool(k, 60, seed)
    idx, y_ssl = make_long_tailed_ssl_split(y, n_l, n_u, g_l, g_u, reverse, random_state=seed)
    assert len(idx) == len(y_ssl) == len(np.unique(idx))  # no sample used twice
    assert np.all(np.diff(idx) > 0)
    labeled = y_ssl != -1
    # Labeled samples keep their label; unlabeled are drawn from the pool too.
    np.testing.assert_array_equal(y_ssl[labeled], y[idx[labeled]])
    expect_l = long_tailed_counts(n_l, k, g_l)
    expect_u = long_tailed_counts(n_u, k, g_u) if n_u else [0] * k
    if reverse:
        expect_u = expect_u[::-1]
    for c in range(k):
        assert (y_ssl == c).sum() == expect_l[c]
        assert (y[idx[~labeled]] == c).sum() == expect_u[c]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), n_u=st.integers(0, 20))
def test_labeled_part_independent_of_unlabeled_settings(seed, n_u):
    y = _pool(4, 40)
    a, ya = make_long_tailed_ssl_split(y, 10, 0, 5, 1, random_state=seed)
    b, yb = make_long_tailed_ssl_split(y, 10, n_u, 5, 1, random_state=seed)
    np.testing.assert_array_equal(np.sort(a[ya != -1]), np.sort(b[yb != -1]))


def test_head_is_class_zero_and_conventions():
    y = _pool(10, 500)
    idx, y_ssl = make_long_tailed_ssl_split(y, 150, 300, 100, 100, random_state=0)
    counts = np.bincount(y_ssl[y_ssl >= 0], minlength=10)
    assert counts[0] == 150 and counts[-1] == 1
    u = np.bincount(y[idx[y_ssl == -1]], minlength=10)
    assert u[0] == 300 and u[-1] == 3
    _, y_rev = make_long_tailed_ssl_split(y, 150, 300, 100, 100, True, random_state=0)
    assert (y_rev == -1).sum() == (y_ssl == -1).sum()


def test_deterministic_and_string_labels():
    y = np.array(["cat", "dog", "emu"] * 12)
    a = make_long_tailed_ssl_split(y, 6, 4, 3, 1, random_state=3)
    b = make_long_tailed_ssl_split(list(y), 6, 4, 3, 1, random_state=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].dtype == object
    assert set(a[1].tolist()) == {"cat", "dog", "emu", -1}
    # Sorted classes: "cat" is the head.
    assert sum(v == "cat" for v in a[1]) == 6


def test_too_few_samples_names_the_class():
    y = np.concatenate([np.zeros(50, int), np.ones(3, int)])
    with pytest.raises(ValueError, match=r"class 1 has 3 samples .* needs 5 labeled \+ 5 unlabeled"):
        make_long_tailed_ssl_split(y, 5, 5, 1, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_max_labeled=-1), "n_max_labeled"),
        (dict(n_max_labeled=2.5), "n_max_labeled"),
        (dict(imbalance_labeled=0.5), "imbalance_labeled"),
        (dict(imbalance_unlabeled=float("nan")), "imbalance_unlabeled"),
        (dict(reverse_unlabeled="yes"), "reverse_unlabeled"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = dict(n_max_labeled=2, n_max_unlabeled=2, imbalance_labeled=2, imbalance_unlabeled=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_long_tailed_ssl_split(_pool(3, 20), **args)


def test_rejects_minus_one_and_single_class():
    with pytest.raises(ValueError, match="-1"):
        make_long_tailed_ssl_split([0, 1, -1, 1], 1, 0, 1, 1)
    with pytest.raises(ValueError, match="2 classes"):
        make_long_tailed_ssl_split([3, 3, 3], 1, 0, 1, 1)


def test_no_random_state_leaves_numpys_global_generator_alone():
    y = np.repeat(np.arange(3), 20)
    np.random.seed(7)
    expected = np.random.random_sample(3)
    np.random.seed(7)
    a, _ = make_long_tailed_ssl_split(y, 4, 6, 2, 1)
    assert np.array_equal(np.random.random_sample(3), expected)
    assert len(a) == len(np.unique(a))


def test_float_labels_are_read_as_the_estimators_read_them():
    y = np.repeat([0.0, 1.0, 2.0], 10)
    _, y_ssl = make_long_tailed_ssl_split(y, 4, 2, 1, 1, random_state=0)
    assert y_ssl.dtype == np.int64 and set(y_ssl.tolist()) <= {-1, 0, 1, 2}
    with pytest.raises(ValueError, match="unlabeled marker"):
        make_long_tailed_ssl_split(np.repeat([-1.0, 0.0, 1.0], 10), 4, 2, 1, 1, random_state=0)
