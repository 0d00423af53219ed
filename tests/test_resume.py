"""Interrupted fits: no half-fitted estimator, and resuming from a checkpoint."""

import numpy as np
import pytest
import torch

from liftlearn import LiftPlusClassifier, ULFineClassifier
from liftlearn.engine import Checkpoint

from conftest import stop_after_epochs

# ULFine with a low threshold, so that pseudo-labels, P_u and the prototypes
# (the task's own state) carry across epochs and must be checkpointed.
ESTIMATORS = {
    "lift_plus": (LiftPlusClassifier, {}, False),
    "ulfine": (ULFineClassifier, {"threshold": 0.2, "tte": False}, True),
}


def _ssl(y, unlabeled):
    return np.where(np.arange(len(y)) % 3 == 0, -1, y) if unlabeled else y


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
@pytest.mark.parametrize("random_state", [0, None])
def test_resumed_fit_equals_uninterrupted(small, tiny_params, tmp_path, random_state, kind):
    cls, extra, unlabeled = ESTIMATORS[kind]
    X, y, names, Xt, _ = small
    y = _ssl(y, unlabeled)
    params = {**tiny_params, **extra, "epochs": 4, "class_names": names, "random_state": random_state}
    ckpt = tmp_path / "ckpt"

    clf = cls(**params, checkpoint_dir=str(ckpt))
    stop_after_epochs(lambda: clf.fit(X, y), after_epochs=2)
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


@pytest.mark.parametrize("tamper", ["optimizer", "network"])
def test_a_checkpoint_that_trains_other_parameters_starts_afresh(small, tiny_params, tmp_path,
                                                                 tamper):
    # The same key, other trainable parts (a liftlearn that trained other
    # parameters for these settings, as "full" on a ResNet once did): the
    # fit warns and starts afresh, untouched by the file, instead of
    # failing in load_state_dict with torch's message.
    X, y, names, Xt, _ = small
    params = {**tiny_params, "epochs": 2, "class_names": names}
    ckpt = tmp_path / "ckpt"
    clf = LiftPlusClassifier(**params, checkpoint_dir=str(ckpt))
    stop_after_epochs(lambda: clf.fit(X, y))
    (path,) = ckpt.glob("liftlearn-checkpoint-*.pt")
    state = torch.load(path, weights_only=True)
    if tamper == "optimizer":
        group = state["optimizer"]["param_groups"][0]
        state["optimizer"]["state"].pop(group["params"].pop(), None)
    else:
        name = next(iter(state["network"]))
        state["network"][name] = torch.zeros(3, 1, 7)
    torch.save(state, path)
    with pytest.warns(UserWarning, match="ignoring checkpoint .*(optimiser trains other|another shape)"):
        resumed = clf.fit(X, y)
    assert [h["epoch"] for h in resumed.history_] == [1, 2]
    np.testing.assert_array_equal(resumed.predict_proba(Xt),
                                  LiftPlusClassifier(**params).fit(X, y).predict_proba(Xt))


def test_unreadable_checkpoint_starts_afresh(small, tiny_params, tmp_path):
    X, y, names, _, _ = small
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / Checkpoint.FILENAME).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=names, checkpoint_dir=str(ckpt)).fit(X, y)
    assert len(clf.history_) == 1


def test_a_refit_with_validation_data_is_a_run_of_its_own(small, tiny_params, tmp_path):
    # The history holds validation scores: a finished run without them must
    # not stand in for a fit that asks for them (nor one on other images).
    X, y, names, Xt, yt = small
    params = {**tiny_params, "epochs": 1, "class_names": names, "checkpoint_dir": str(tmp_path)}
    assert "val_accuracy" not in LiftPlusClassifier(**params).fit(X, y).history_[0]
    first = LiftPlusClassifier(**params).fit(X, y, validation_data=(Xt, yt))
    assert "val_accuracy" in first.history_[0]
    other = LiftPlusClassifier(**params).fit(X, y, validation_data=(Xt[:10], yt[:10]))
    assert len(list(tmp_path.glob("liftlearn-checkpoint-*.pt"))) == 3
    plain = LiftPlusClassifier(**{**params, "checkpoint_dir": None}).fit(
        X, y, validation_data=(Xt[:10], yt[:10]))
    assert other.history_[0]["val_accuracy"] == plain.history_[0]["val_accuracy"]


def test_replaced_weights_in_a_local_dir_backbone_start_a_new_run(small, tmp_path):
    import json

    import open_clip

    from liftlearn.nn.backbones import _open_clip

    _open_clip()
    folder = tmp_path / "backbone"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config("liftlearn-tiny-vit"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))

    def weights(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model("liftlearn-tiny-vit")
        torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")

    X, y, names, Xt, _ = small
    params = dict(backbone=f"local-dir:{folder}", pretrained=None, epochs=1, batch_size=32,
                  device="cpu", random_state=0, class_names=names)
    weights(1)
    LiftPlusClassifier(**params, checkpoint_dir=str(tmp_path / "ckpt")).fit(X, y)
    weights(2)
    refit = LiftPlusClassifier(**params, checkpoint_dir=str(tmp_path / "ckpt")).fit(X, y)
    assert len(list((tmp_path / "ckpt").glob("liftlearn-checkpoint-*.pt"))) == 2
    fresh = LiftPlusClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(refit.predict_proba(Xt), fresh.predict_proba(Xt))
