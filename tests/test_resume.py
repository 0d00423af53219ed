"""Interrupted fits: no half-fitted estimator, and resuming from a checkpoint."""

import numpy as np
import pytest

from liftlearn import LiftPlusClassifier, ULFineClassifier
from liftlearn.engine import Checkpoint

# ULFine with a low threshold, so that pseudo-labels, P_u and the prototypes
# (the task's own state) carry across epochs and must be checkpointed.
ESTIMATORS = {
    "lift_plus": (LiftPlusClassifier, {}, False),
    "ulfine": (ULFineClassifier, {"threshold": 0.2, "tte": False}, True),
}


def _ssl(y, unlabeled):
    return np.where(np.arange(len(y)) % 3 == 0, -1, y) if unlabeled else y


def interrupting_write(after_epochs):
    """A Checkpoint.write that raises KeyboardInterrupt after the n-th epoch."""
    real = Checkpoint.write

    def write(checkpoint, state):
        real(checkpoint, state)
        if len(state["history"]) == after_epochs:
            raise KeyboardInterrupt

    return write


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
@pytest.mark.parametrize("random_state", [0, None])
def test_resumed_fit_equals_uninterrupted(small, tiny_params, tmp_path, monkeypatch, random_state, kind):
    cls, extra, unlabeled = ESTIMATORS[kind]
    X, y, names, Xt, _ = small
    y = _ssl(y, unlabeled)
    params = {**tiny_params, **extra, "epochs": 4, "class_names": names, "random_state": random_state}
    ckpt = tmp_path / "ckpt"

    clf = cls(**params, checkpoint_dir=str(ckpt))
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "write", interrupting_write(after_epochs=2))
        with pytest.raises(KeyboardInterrupt):
            clf.fit(X, y)
    assert not hasattr(clf, "classes_")  # never half-fitted
    # One file per run, named by the run's key.
    assert len(list(ckpt.glob("liftlearn-checkpoint-*.pt"))) == 1

    resumed = clf.fit(X, y)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    if random_state is None:
        return  # an uninterrupted run would draw another seed
    reference = cls(**params).fit(X, y)
    np.testing.assert_array_equal(resumed.predict_proba(Xt), reference.predict_proba(Xt))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in reference.history_]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history_] == strip
    if unlabeled:
        assert sum(h["n_pseudo_labels"] for h in reference.history_) > 0
        np.testing.assert_array_equal(resumed.transduction_, reference.transduction_)
        np.testing.assert_array_equal(resumed.unlabeled_prior_, reference.unlabeled_prior_)
        np.testing.assert_array_equal(resumed.class_prior_, reference.class_prior_)


def test_checkpoint_of_another_run_is_ignored(small, tiny_params, tmp_path):
    X, y, names, Xt, _ = small
    ckpt = str(tmp_path / "ckpt")
    LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=names, checkpoint_dir=ckpt).fit(X, y)
    other = LiftPlusClassifier(**{**tiny_params, "epochs": 1, "lr": 0.05}, class_names=names, checkpoint_dir=ckpt).fit(X, y)
    plain = LiftPlusClassifier(**{**tiny_params, "epochs": 1, "lr": 0.05}, class_names=names).fit(X, y)
    np.testing.assert_array_equal(other.predict_proba(Xt), plain.predict_proba(Xt))


def test_unreadable_checkpoint_starts_afresh(small, tiny_params, tmp_path):
    X, y, names, _, _ = small
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / Checkpoint.FILENAME).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=names, checkpoint_dir=str(ckpt)).fit(X, y)
    assert len(clf.history_) == 1
