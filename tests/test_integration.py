"""End-to-end runs on real data: CIFAR-10-LT from ../shared and the quickstart."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from liftlearn import LiftPlusClassifier
from liftlearn.datasets import extract_cifar10_lt

from conftest import REPO, shared_cifar_dir


@pytest.fixture(scope="module")
def cifar10_lt(tmp_path_factory):
    source = shared_cifar_dir()
    if source is None:
        pytest.skip("../shared/data/cifar10-jpg not found")
    dest = tmp_path_factory.mktemp("cifar10lt")
    X, y, names = extract_cifar10_lt(source, dest, split="train", imbalance=100, n_max=1000, random_state=1)
    Xt, yt, _ = extract_cifar10_lt(source, dest, split="test", n_max=100, random_state=1)
    return X, y, names, Xt, yt


def test_lift_plus_learns_cifar10_lt_imbalance_100(cifar10_lt):
    X, y, names, Xt, yt = cifar10_lt
    counts = np.bincount(y)
    assert counts[0] == 1000 and counts[-1] == 10  # imbalance 100
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=None, epochs=5, device="cpu", random_state=0
    ).fit(X, y, class_names=names)
    assert clf.history_[-1]["loss"] < clf.history_[0]["loss"]
    y_pred = clf.predict(Xt)  # TTE on by default
    bacc = balanced_accuracy_score(yt, y_pred)
    # Chance is 0.10; the tiny backbone has random weights, so the adapter and
    # the classifier do all of the learning.
    assert bacc > 0.17, bacc
    # The logit adjustment keeps the tail alive: not everything goes to the head.
    assert len(np.unique(y_pred)) >= 5


def test_quickstart_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py"), "--epochs", "1",
         "--plot", str(tmp_path / "plot.png")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "few-shot (<20)" in out.stdout and "balanced accuracy" in out.stdout
    assert "random weights" in out.stdout
    assert (tmp_path / "plot.png").stat().st_size > 1000
