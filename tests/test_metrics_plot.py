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


def test_plot_names_the_worst_points_and_keeps_the_legend_off_the_data(tmp_path):
    counts = np.array([500, 300, 120, 60, 30, 12, 6])
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog"]
    y_true = np.repeat(np.arange(7), 10)
    # Accuracies 1.0, 0.9, ..., 0.4: the rare classes are the worst.
    y_pred = np.where(np.tile(np.arange(10), 7) < 10 - y_true, y_true, (y_true + 1) % 7)
    ax = plot_per_class_accuracy(y_true, y_pred, counts, target_names=names, annotate=3)
    named = {text.get_text(): text.xy for text in ax.texts}
    assert set(named) == {"frog", "dog", "deer"}  # the three lowest accuracies
    assert_allclose(named["frog"], (6, 0.4))
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    legend_box = ax.get_legend().get_window_extent(renderer)
    axes_box = ax.get_window_extent(renderer)
    assert legend_box.x0 >= axes_box.x1  # beside the axes: it hides no point
    figure_box = ax.figure.bbox
    assert legend_box.x1 <= figure_box.x1 + 1  # and still in the saved image
    for text in ax.texts:  # every name is drawn inside the axes
        box = text.get_window_extent(renderer)
        assert axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 + 1, text.get_text()

    every = plot_per_class_accuracy(y_true, y_pred, counts, target_names=names, annotate="all")
    assert sorted(t.get_text() for t in every.texts) == sorted(names)
    assert not plot_per_class_accuracy(y_true, y_pred, counts, annotate=0).texts
    plain = plot_per_class_accuracy(y_true, y_pred, counts)  # default: 5 worst, label names
    assert {t.get_text() for t in plain.texts} == {"6", "5", "4", "3", "2"}
    with pytest.raises(ValueError, match="annotate"):
        plot_per_class_accuracy(y_true, y_pred, counts, annotate=-1)
    with pytest.raises(ValueError, match="target_names"):
        plot_per_class_accuracy(y_true, y_pred, counts, target_names=names[:3])
    ax.figure.savefig(tmp_path / "named.png")
