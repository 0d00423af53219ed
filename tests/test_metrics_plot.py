"""Tests for liftlearn.metrics.plot_per_class_accuracy (needs matplotlib)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from liftlearn.metrics import (  # noqa: E402
    UndefinedClassWarning,
    plot_per_class_accuracy,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_plot_draws_present_classes_on_a_log_axis(tmp_path):
    y_true = [0, 0, 1, 1, 2, 3, 3]
    y_pred = [0, 0, 1, 0, 2, 3, 0]
    counts = {0: 800, 1: 60, 2: 0, 3: 7, 4: 30}  # class 4 has no test sample
    with pytest.warns(UndefinedClassWarning, match="4"):
        ax = plot_per_class_accuracy(y_true, y_pred, counts)
    assert ax.get_xscale() == "log"
    points = ax.collections[0].get_offsets()
    # One point per class present in y_true; no training image -> x = 0.5.
    assert_allclose(points, [[800, 1.0], [60, 0.5], [0.5, 1.0], [7, 0.5]])
    lo, hi = ax.get_xlim()
    assert lo < 0.5 and hi > 800
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == [
        "many-shot (n=1): 1.000",
        "medium-shot (n=2): 0.500",
        "few-shot (n=2): 0.750",
    ]
    path = tmp_path / "per_class_accuracy.png"
    ax.figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_uses_given_axes_and_thresholds():
    _, ax = plt.subplots()
    y = np.repeat(np.arange(3), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plot_per_class_accuracy(
            y, y, [5000, 3000, 1000], ax=ax, many_threshold=2000, few_threshold=10,
            color="black",
        )
    assert out is ax
    # All classes are many-shot; the other regions stay visible but empty.
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == [
        "many-shot (n=2): 1.000",
        "medium-shot (n=1): 1.000",
        "few-shot (n=0)",
    ]
    lo, hi = ax.get_xlim()
    assert lo <= 5 and hi >= 5000 * 1.5
