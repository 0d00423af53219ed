"""Watching and steering a fit: validation per epoch, callbacks, early stopping."""

import logging
import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from liftlearn import LiftPlusClassifier, ULFineClassifier
from liftlearn._validation import InvalidParameterError
from liftlearn.callbacks import Callback, CSVLogger, EarlyStopping
from liftlearn.estimators._watch import VAL_KEYS, holdout_mask

from conftest import stop_after_epochs

PARAMS = dict(backbone="liftlearn-tiny-vit", pretrained=None, batch_size=12, device="cpu",
              random_state=0, tte=False)


@pytest.fixture(scope="module")
def data(sample):
    """12 training images of 3 classes (6, 4, 2) and 6 validation images."""
    X, y, _, Xt, yt = sample
    idx = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in ((0, 6), (1, 4), (2, 2))])
    vidx = np.concatenate([np.flatnonzero(yt == c)[:2] for c in range(3)])
    return [X[i] for i in idx], y[idx], [Xt[i] for i in vidx], yt[vidx]


class Recorder(Callback):
    """Records every call, the trained weights after each epoch, and stops
    after ``stop_at``."""

    def __init__(self, stop_at=None):
        self.stop_at = stop_at

    def on_fit_begin(self, estimator):
        self.calls, self.weights = ["begin"], []

    def on_epoch_end(self, estimator, record):
        self.calls.append(record["epoch"])
        self.weights.append({k: v.clone() for k, v in estimator.module_.state_dict().items()})
        return record["epoch"] == self.stop_at

    def on_fit_end(self, estimator):
        self.calls.append("end")


@pytest.fixture(scope="module")
def validated(data):
    X, y, Xv, yv = data
    recorder = Recorder()
    clf = LiftPlusClassifier(**PARAMS, epochs=2, callbacks=[recorder]).fit(X, y, validation_data=(Xv, yv))
    return clf, recorder


def test_validation_is_recorded_every_epoch(validated, data):
    clf, recorder = validated
    _, _, Xv, yv = data
    assert [r["epoch"] for r in clf.history_] == [1, 2]
    for record in clf.history_:
        assert set(VAL_KEYS) <= set(record)
        assert 0.0 <= record["val_accuracy"] <= 1.0
    # Classes 0 and 1 have 6 and 4 training images, class 2 has 2: all few-shot.
    assert np.isnan(clf.history_[-1]["val_many_shot_accuracy"])
    last = clf.history_[-1]
    assert last["val_accuracy"] == pytest.approx(clf.score(Xv, yv))  # tte=False, as validation
    y_pred = clf.predict(Xv)
    per_class = [np.mean(y_pred[yv == c] == c) for c in range(3)]
    assert last["val_balanced_accuracy"] == pytest.approx(np.mean(per_class))
    assert last["val_few_shot_accuracy"] == pytest.approx(np.mean(per_class))
    assert recorder.calls == ["begin", 1, 2, "end"]
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(clf.history_)
    assert list(frame["epoch"]) == [1, 2] and "val_balanced_accuracy" in frame


def test_validation_does_not_change_training(validated, data):
    X, y, _, _ = data
    clf, _ = validated
    plain = LiftPlusClassifier(**PARAMS, epochs=2).fit(X, y)
    assert [r["loss"] for r in plain.history_] == [r["loss"] for r in clf.history_]
    np.testing.assert_array_equal(plain.predict_proba(X), clf.predict_proba(X))


def test_the_epoch_line_shows_validation(data, caplog):
    X, y, Xv, yv = data
    with caplog.at_level(logging.INFO, logger="liftlearn"):
        LiftPlusClassifier(**PARAMS, epochs=1, verbose=1).fit(X, y, validation_data=(Xv, yv))
    assert any("val acc" in r.getMessage() and "val bal acc" in r.getMessage() for r in caplog.records)


def test_a_callback_stops_the_fit_and_keeps_the_schedule(data):
    X, y, _, _ = data
    recorder = Recorder(stop_at=2)
    clf = LiftPlusClassifier(**PARAMS, epochs=3, callbacks=[recorder]).fit(X, y)
    assert [r["epoch"] for r in clf.history_] == [1, 2]
    assert recorder.calls == ["begin", 1, 2, "end"]
    # Epoch 2's learning rate is the 3-epoch cosine's, not a 2-epoch one's.
    assert clf.history_[1]["lr"] == pytest.approx(0.02 * (1 + np.cos(np.pi / 3)) / 2)


def test_early_stopping_restores_the_best_epoch(data):
    X, y, _, _ = data
    recorder = Recorder()
    # "epoch" never decreases: with mode="min" epoch 1 stays the best, so
    # patience=1 stops after epoch 2 and puts back epoch 1's weights.
    stop = EarlyStopping(monitor="epoch", mode="min", patience=1)
    clf = LiftPlusClassifier(**PARAMS, epochs=4, callbacks=[recorder, stop]).fit(X, y)
    assert [r["epoch"] for r in clf.history_] == [1, 2]
    assert (stop.best_epoch_, stop.stopped_epoch_) == (1, 2)
    state = clf.module_.state_dict()
    assert all(np.array_equal(state[k].numpy(), v.numpy()) for k, v in recorder.weights[0].items())
    assert any(not np.array_equal(state[k].numpy(), v.numpy()) for k, v in recorder.weights[1].items())


def test_early_stopping_logic():
    class Est:
        module_ = None

    stop = EarlyStopping(patience=2, restore_best=False)
    stop.on_fit_begin(Est())
    scores = [0.5, 0.6, 0.6, float("nan"), 0.9]
    stopped = [stop.on_epoch_end(Est(), {"epoch": e + 1, "val_balanced_accuracy": s})
               for e, s in enumerate(scores[:4])]
    assert stopped == [False, False, False, True] and stop.best_epoch_ == 2
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0).on_fit_begin(Est())
    with pytest.raises(ValueError, match="validation_data"):
        EarlyStopping().on_epoch_end(Est(), {"epoch": 1, "loss": 1.0})


@pytest.mark.parametrize("hook", ["on_fit_begin", "on_epoch_end", "on_fit_end"])
def test_a_callback_that_raises_fails_the_fit_cleanly(data, hook):
    X, y, _, _ = data

    class Boom(Callback):
        pass

    def boom(*args):
        raise RuntimeError(f"boom in {hook}")

    cb = Boom()
    setattr(cb, hook, boom)
    clf = LiftPlusClassifier(**PARAMS, epochs=1, callbacks=[cb])
    with pytest.raises(RuntimeError, match=f"boom in {hook}"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    assert not [a for a in vars(clf) if a.endswith("_")]


def test_csv_logger_and_checkpoints_keep_callback_state(data, tmp_path):
    X, y, Xv, yv = data
    pandas = pytest.importorskip("pandas")
    log = tmp_path / "fit.csv"
    params = dict(PARAMS, epochs=3, checkpoint_dir=tmp_path / "ckpt")
    first = LiftPlusClassifier(**params, callbacks=[CSVLogger(log), Recorder(stop_at=2)]).fit(
        X, y, validation_data=(Xv, yv))
    frame = pandas.read_csv(log)
    assert list(frame["epoch"]) == [1, 2]
    np.testing.assert_allclose(frame["val_accuracy"], [r["val_accuracy"] for r in first.history_])
    # The same run again: the checkpoint says its callbacks stopped it after
    # epoch 2, so nothing is trained, and the logger's rows come back.
    log.unlink()
    logger = CSVLogger(log)
    again = LiftPlusClassifier(**params, callbacks=[logger, Recorder(stop_at=2)]).fit(
        X, y, validation_data=(Xv, yv))
    # Same measured seconds: read back, not retrained (NaN != NaN, so not ==).
    pandas.testing.assert_frame_equal(pandas.DataFrame(again.history_), pandas.DataFrame(first.history_))
    assert len(logger._rows) == 2 and not log.exists()  # no epoch ran, so nothing rewritten
    # Other callbacks (here: in another order, one that would not stop): the
    # saved states and the stop are not theirs. Nothing is handed to the
    # wrong callback; the fit resumes from epoch 2 and trains to the last.
    other = [Recorder(), CSVLogger(log)]
    with pytest.warns(UserWarning, match="other callbacks or validation data"):
        longer = LiftPlusClassifier(**params, callbacks=other).fit(X, y, validation_data=(Xv, yv))
    assert [r["epoch"] for r in longer.history_] == [1, 2, 3]
    pandas.testing.assert_frame_equal(pandas.DataFrame(longer.history_[:2]),
                                      pandas.DataFrame(first.history_))
    assert other[0].calls == ["begin", 3, "end"]
    # Other validation data make a run of their own (its history holds
    # their scores): nothing is resumed, nothing warned about.
    recorder = Recorder(stop_at=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LiftPlusClassifier(**params, callbacks=[CSVLogger(log), recorder]).fit(
            X, y, validation_data=(Xv[:3], yv[:3]))
    assert recorder.calls == ["begin", 1, 2, "end"]
    assert len(list((tmp_path / "ckpt").glob("liftlearn-checkpoint-*.pt"))) == 2


def test_validation_fraction_is_stratified_and_fixed():
    y = np.array([0] * 10 + [1] * 5 + [2] * 1 + [-1] * 4)
    mask = holdout_mask(y, 0.2)
    assert [int(mask[y == c].sum()) for c in (0, 1, 2, -1)] == [2, 1, 0, 0]
    np.testing.assert_array_equal(mask, holdout_mask(y, 0.2))


def test_ulfine_validates_and_stops_on_the_same_engine(data):
    X, y, _, _ = data
    y_semi = y.copy()
    y_semi[[1, 7]] = -1  # two unlabeled images
    stop = EarlyStopping(monitor="epoch", mode="min", patience=1)
    clf = ULFineClassifier(**PARAMS, epochs=3, validation_fraction=0.3, callbacks=[stop]).fit(X, y_semi)
    assert [r["epoch"] for r in clf.history_] == [1, 2]
    assert set(VAL_KEYS) <= set(clf.history_[0])
    # Held-out images (3 labeled ones) are not trained on: no label in transduction_.
    assert int((clf.transduction_ == -1).sum()) >= 3


def test_callbacks_pickle_with_the_estimator_or_are_dropped(validated, data):
    clf, _ = validated
    clf.set_params(callbacks=[EarlyStopping(patience=2), CSVLogger("log.csv")])
    again = pickle.loads(pickle.dumps(clf))
    assert [type(cb).__name__ for cb in again.callbacks] == ["EarlyStopping", "CSVLogger"]

    class Local(Callback):  # defined in a function: cannot be pickled
        pass

    clf.set_params(callbacks=[Local()])
    with pytest.warns(Warning, match="cannot be pickled"):
        again = pickle.loads(pickle.dumps(clf))
    assert again.callbacks is None
    assert type(clf.callbacks[0]).__name__ == "Local"  # the live estimator keeps it
    X, _, _, _ = data
    np.testing.assert_array_equal(again.predict_proba(X[:2]), clf.predict_proba(X[:2]))


def test_bad_callbacks_and_validation_arguments_are_named(data):
    X, y, Xv, yv = data
    recorder = Recorder()
    with pytest.raises(ValueError, match="EarlyStopping monitors 'val_balanced_accuracy', which "
                                         "needs validation_data"):
        LiftPlusClassifier(**PARAMS, callbacks=[recorder, EarlyStopping()]).fit(X, y)
    assert not hasattr(recorder, "calls")  # refused before any hook or epoch ran
    with pytest.raises(InvalidParameterError, match="callbacks"):
        LiftPlusClassifier(**PARAMS, callbacks=[object()]).fit(X, y)
    with pytest.raises(ValueError, match="not both"):
        LiftPlusClassifier(**PARAMS, validation_fraction=0.2).fit(X, y, validation_data=(Xv, yv))
    with pytest.raises(ValueError, match="not classes of the training data: 9"):
        LiftPlusClassifier(**PARAMS).fit(X, y, validation_data=(Xv, np.full(len(yv), 9)))


@pytest.mark.parametrize("callback, match", [
    (EarlyStopping(monitor="los"), "EarlyStopping monitors 'los', which this fit's history "
                                   "does not have; its entries: epoch, loss, lr, seconds"),
    (EarlyStopping(monitor="labeled_accuracy"), "does not have"),  # ULFine's, not LiftPlus's
    (EarlyStopping(monitor="loss", patience=0), "patience=0"),
    (EarlyStopping(monitor="val_acc"), "'val_acc', which this fit's history does not have"),
    (CSVLogger("/proc/self/liftlearn-log.csv"), "CSVLogger path"),
    (CSVLogger("logs/"), "CSVLogger path='logs/' names a folder"),  # failed after epoch 1
])
def test_callbacks_that_cannot_work_are_refused_before_any_work(data, monkeypatch, callback, match):
    import liftlearn.estimators._fine_tuned as fine_tuned

    X, y, _, _ = data
    # Neither an image check nor the backbone may come first.
    monkeypatch.setattr(fine_tuned, "get_backbone", lambda *a, **k: pytest.fail("backbone loaded"))
    monkeypatch.setattr(LiftPlusClassifier, "_images",
                        lambda *a, **k: pytest.fail("images read first"))
    with pytest.raises(ValueError, match=match):
        LiftPlusClassifier(**PARAMS, callbacks=[callback]).fit(X, y, validation_data=(X[:3], y[:3]))


@pytest.mark.parametrize("cls, extra", [(LiftPlusClassifier, {}), (ULFineClassifier, {"threshold": 0.2})])
def test_history_keys_are_the_entries_fits_record(data, cls, extra):
    from liftlearn.engine import history_keys

    X, y, Xv, yv = data
    y = np.where(np.arange(len(y)) % 3 == 0, -1, y) if cls is ULFineClassifier else y
    # Every declared entry can be monitored (the fit runs), and is recorded.
    monitors = [EarlyStopping(monitor=key, patience=5) for key in history_keys(cls._task_type)]
    clf = cls(**PARAMS, **extra, epochs=1, callbacks=monitors).fit(X, y, validation_data=(Xv, yv))
    assert list(clf.history_[0]) == [*history_keys(cls._task_type), *VAL_KEYS]


def test_other_objects_keep_their_own_monitor_and_check(data):
    # Callbacks by their hooks alone: attributes named monitor or check are
    # theirs, not liftlearn's (as in every release).
    class Printer:
        monitor = "gpu_memory"

        def check(self):
            return "its own"

        def on_epoch_end(self, estimator, record):
            return False

    X, y, _, _ = data
    clf = LiftPlusClassifier(**PARAMS, epochs=1, callbacks=[Printer()]).fit(X, y)
    assert len(clf.history_) == 1


# ------------------------------------------- CSVLogger: one file per fit
def _csv_files(folder):
    return sorted(p.name for p in folder.iterdir())


def _rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_logger_gives_every_fit_of_a_grid_search_a_file_of_its_own(data, tmp_path):
    from sklearn.model_selection import GridSearchCV

    X, y, _, _ = data
    log = tmp_path / "fit.csv"
    clf = LiftPlusClassifier(**PARAMS, epochs=1, callbacks=[CSVLogger(log)])
    # Its 4 fits (clones, and so copies of the logger) all wrote fit.csv,
    # each replacing the one before: the last fit's log was all that stayed.
    GridSearchCV(clf, {"lr": [0.01, 0.02]}, cv=2, refit=False).fit(X, y)
    assert _csv_files(tmp_path) == ["fit-2.csv", "fit-3.csv", "fit-4.csv", "fit.csv"]
    # Candidate by candidate, fold by fold (epoch 1 runs at the set lr).
    logs = [_rows(tmp_path / name) for name in ("fit.csv", "fit-2.csv", "fit-3.csv", "fit-4.csv")]
    assert [[row["epoch"] for row in rows] for rows in logs] == [["1"]] * 4
    assert [float(rows[0]["lr"]) for rows in logs] == pytest.approx([0.01, 0.01, 0.02, 0.02])


def test_csv_logger_keeps_one_fit_as_it_was_and_gives_later_fits_new_files(data, tmp_path, monkeypatch):
    import errno

    import liftlearn.callbacks as callbacks_module

    X, y, _, _ = data
    log = tmp_path / "fit.csv"
    logger = CSVLogger(log)
    clf = LiftPlusClassifier(**PARAMS, epochs=2, callbacks=[logger]).fit(X, y)
    # One fit: the file named, nothing else, one row per epoch.
    assert _csv_files(tmp_path) == ["fit.csv"] and logger.path_ == str(log)
    assert [{k: float(v) for k, v in row.items()} for row in _rows(log)] == \
        [pytest.approx(record) for record in clf.history_]
    first = log.read_bytes()
    # A second fit of the same estimator is another run, with a file of its own.
    clf.fit(X, y)
    assert logger.path_ == str(tmp_path / "fit-2.csv") and log.read_bytes() == first
    assert len(_rows(tmp_path / "fit-2.csv")) == 2
    # A numbered file of an earlier session is kept; a failed first write
    # leaves no empty log behind.
    (tmp_path / "fit-3.csv").write_text("an earlier session's log\n")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(callbacks_module, "atomic_open", full_disk)
    logger.on_fit_begin(clf)
    with pytest.raises(OSError):
        logger.on_epoch_end(clf, {"epoch": 1})
    assert _csv_files(tmp_path) == ["fit-2.csv", "fit-3.csv", "fit.csv"]
    monkeypatch.undo()
    logger.on_epoch_end(clf, {"epoch": 1})
    assert logger.path_ == str(tmp_path / "fit-4.csv")
    assert (tmp_path / "fit-3.csv").read_text() == "an earlier session's log\n"


def test_csv_logger_copies_in_threads_and_processes_never_share_a_file(tmp_path):
    import copy
    import subprocess
    import sys
    import threading

    from conftest import checkout_env

    log = tmp_path / "logs" / "fit.csv"
    log.parent.mkdir()
    logger = CSVLogger(log)
    pickled = tmp_path / "logger.pkl"
    pickled.write_bytes(pickle.dumps(logger))
    # Copies in other processes (GridSearchCV's n_jobs workers): they cannot
    # see each other's fits, so none of them takes fit.csv.
    worker = ("import pickle, sys\n"
              "logger = pickle.load(open(sys.argv[1], 'rb'))\n"
              "logger.on_fit_begin(None)\n"
              "logger.on_epoch_end(None, {'epoch': 1, 'who': sys.argv[2]})\n")
    processes = [subprocess.Popen([sys.executable, "-c", worker, str(pickled), f"process {i}"],
                                  env=checkout_env()) for i in range(2)]
    # Copies in this process's threads (GridSearchCV with threads), all
    # writing their first epoch at once: one takes fit.csv.
    copies = [copy.deepcopy(logger) for _ in range(3)]
    at_once = threading.Barrier(len(copies), timeout=30)
    errors = []

    def fit(i, cb):
        try:
            cb.on_fit_begin(None)
            at_once.wait()
            cb.on_epoch_end(None, {"epoch": 1, "who": f"thread {i}"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fit, args=(i, cb)) for i, cb in enumerate(copies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    assert not errors, errors
    names = _csv_files(log.parent)
    assert names == ["fit-2.csv", "fit-3.csv", "fit-4.csv", "fit-5.csv", "fit.csv"]
    whose = {name: _rows(log.parent / name)[0]["who"] for name in names}
    assert sorted(whose.values()) == ["process 0", "process 1", "thread 0", "thread 1", "thread 2"]
    assert whose["fit.csv"].startswith("thread")
    assert sorted(cb.path_ for cb in copies) == sorted(
        str(log.parent / name) for name, who in whose.items() if who.startswith("thread"))


def test_csv_logger_of_a_resumed_fit_goes_on_in_its_file(data, tmp_path):
    # Stopped after epoch 1's checkpoint (Ctrl-C in a notebook) and fitted
    # again in the same process: the file the user named holds the whole
    # run, not epoch 1 only with the run in fit-2.csv.
    pandas = pytest.importorskip("pandas")
    X, y, _, _ = data
    log = tmp_path / "fit.csv"
    clf = LiftPlusClassifier(**PARAMS, epochs=3, checkpoint_dir=tmp_path / "ckpt",
                             callbacks=[CSVLogger(log)])
    stop_after_epochs(lambda: clf.fit(X, y))
    assert list(pandas.read_csv(log)["epoch"]) == [1]
    clf.fit(X, y)
    assert list(pandas.read_csv(log)["epoch"]) == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["fit.csv"]


@pytest.mark.parametrize("saved", ["/etc/passwd", "../fit.csv", "fit-2.csv.bak", "fit-x.csv", 3])
def test_csv_logger_writes_only_its_own_names_read_from_a_checkpoint(tmp_path, saved):
    # The name comes back from a checkpoint file: only path or one of its
    # numbered names is written to, whatever the file says.
    logger = CSVLogger(tmp_path / "fit.csv")
    logger.on_fit_begin(None)
    logger.load_state_dict({"rows": [{"epoch": 1}], "path": saved})
    logger.on_epoch_end(None, {"epoch": 2})
    assert logger.path_ in (str(tmp_path / "fit.csv"), str(tmp_path / "fit-2.csv"))
    ok = CSVLogger(tmp_path / "fit.csv")
    ok.on_fit_begin(None)
    ok.load_state_dict({"rows": [], "path": str(tmp_path / "fit-7.csv")})
    ok.on_epoch_end(None, {"epoch": 1})
    assert ok.path_ == str(tmp_path / "fit-7.csv")


def test_csv_logger_resumed_and_new_runs_never_share_path(data, tmp_path):
    # A run resumed by a new logger takes path; the logger's next run must
    # not overwrite it. And a logger whose path another run holds resumes a
    # run that had path into a numbered file, keeping the other's log.
    pandas = pytest.importorskip("pandas")
    X, y, _, _ = data
    log = tmp_path / "log.csv"
    params = dict(PARAMS, epochs=2, checkpoint_dir=tmp_path / "ckpt")
    first = LiftPlusClassifier(**params, callbacks=[CSVLogger(log)])
    stop_after_epochs(lambda: first.fit(X, y))
    resumed = LiftPlusClassifier(**params, callbacks=[CSVLogger(log)]).fit(X, y)  # a new logger
    assert list(pandas.read_csv(log)["epoch"]) == [1, 2]
    resumed.set_params(lr=0.05, epochs=1).fit(X, y)
    assert list(pandas.read_csv(log)["epoch"]) == [1, 2]  # kept
    assert list(pandas.read_csv(tmp_path / "log-2.csv")["epoch"]) == [1]

    other = tmp_path / "other.csv"
    r1 = dict(params, lr=0.01)
    stopped = LiftPlusClassifier(**r1, callbacks=[CSVLogger(other)])
    stop_after_epochs(lambda: stopped.fit(X, y))
    logger = CSVLogger(other)
    LiftPlusClassifier(**dict(params, lr=0.03, epochs=1), callbacks=[logger]).fit(X, y)  # takes path
    LiftPlusClassifier(**r1, callbacks=[logger]).fit(X, y)  # resumes the run that had path
    assert list(pandas.read_csv(other)["lr"]) == [0.03]
    assert list(pandas.read_csv(tmp_path / "other-2.csv")["epoch"]) == [1, 2]
