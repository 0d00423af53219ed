"""Faults, concurrency and hostile model files (issue 15).

Fault injection: writes that fail with ``OSError(ENOSPC)`` part-way, a
second thread, Ctrl-C sent to the main thread, crafted model and checkpoint
files, and a hypothesis fuzz test over safetensors headers. Every fit is on
the tiny random-weight backbone with 20 images (one optimiser step per
epoch), so each test takes a few seconds at most.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pickle
import random
import shutil
import signal
import stat
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import liftlearn._io as io_module
import liftlearn.engine.checkpoint as checkpoint_module
from liftlearn import CLIPFeatures, LiftPlusClassifier, TrainingError, ULFineClassifier, ZeroShotClassifier
from liftlearn import load, save
from liftlearn._io import TEMP_MARK, atomic_write, check_writable, check_writable_dir
from liftlearn._validation import InvalidParameterError
from liftlearn.engine.checkpoint import clean_checkpoints
from liftlearn.exceptions import BackboneError, BadImageError, LiftLearnWarning, ModelFileError

TINY = dict(backbone="liftlearn-tiny-vit", pretrained=None, epochs=1, batch_size=32,
            device="cpu", random_state=0)


@pytest.fixture(scope="module")
def few(small):
    """20 training images (2 per class) and 4 test images."""
    X, y, names, Xt, _ = small
    idx = [i for c in range(10) for i in np.flatnonzero(y == c)[:2]]
    return [X[i] for i in idx], y[idx], list(names), Xt[:4]


@pytest.fixture(scope="module")
def fitted(few):
    X, y, names, _ = few
    return LiftPlusClassifier(**TINY, class_names=names).fit(X, y)


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    save(fitted, path)
    return path


def _temp_files(folder) -> list:
    return [p for p in os.listdir(folder) if TEMP_MARK in p]


class FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def full_disk_open(room: int):
    """``open`` whose binary writes of liftlearn's temporary files hit a full disk."""
    import builtins

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode and TEMP_MARK in os.fspath(path):
            return FullDisk(f, room)
        return f

    return fake_open


# ----------------------------------------------------------- 1. NaN fits
def test_diverged_network_raises_and_leaves_estimator_unfitted(few):
    X, y, names, _ = few
    # 20 images, batch 32: one step per epoch, so the loss (computed before
    # the step) never sees what the step did to the weights.
    clf = LiftPlusClassifier(**TINY, lr=1e12, class_names=names)
    with pytest.raises(TrainingError, match="no longer finite"):
        clf.fit(X, y)
    assert not hasattr(clf, "classes_") and not hasattr(clf, "module_")
    with pytest.raises(InvalidParameterError, match="lr=inf"):
        LiftPlusClassifier(**TINY, lr=float("inf")).fit(X, y)


# ------------------------------------------------- 2. unordered class names
@pytest.mark.parametrize("make, match", [
    (lambda n: set(n), "set"),
    (lambda n: dict.fromkeys(n).keys(), "dict_keys"),
    (lambda n: dict(enumerate(n)).values(), "dict_values"),
    (lambda n: ["same"] * len(n), "twice"),
    (lambda n: [""] + n[1:], "empty name"),
    (lambda n: {i: "x" if i < 2 else s for i, s in enumerate(n)}, "twice"),
])
def test_class_names_must_be_ordered_distinct_and_not_blank(few, make, match, monkeypatch):
    X, y, names, _ = few
    monkeypatch.setattr("liftlearn.estimators._fine_tuned.get_backbone",
                        lambda *a, **k: pytest.fail("refused names reached the backbone"))
    with pytest.raises(InvalidParameterError, match="class_names"):
        LiftPlusClassifier(**TINY, class_names=make(names)).fit(X, y)
    with pytest.raises(ValueError, match=match):
        LiftPlusClassifier(**TINY).fit(X, y, class_names=make(names))


# ------------------------------------------- 3. threads and global RNGs
def _global_rng_states():
    return torch.get_rng_state().clone(), pickle.dumps(np.random.get_state()), random.getstate()


def test_concurrent_fits_equal_sequential_ones_and_keep_global_rngs(few, monkeypatch, request):
    X, y, names, Xt = few
    import liftlearn.estimators._fine_tuned as fine_tuned

    real_build = fine_tuned.build_tuner

    def slow_build(*args, **kwargs):
        # Widen the window in which two seeded initialisations could
        # interleave on torch's global generator.
        time.sleep(0.3)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(fine_tuned, "build_tuner", slow_build)
    settings_ = [dict(TINY, random_state=1, adapter="lora"), dict(TINY, random_state=2, adapter="lora")]
    # The fits below set one thread; BLAS keeps one count for the process.
    request.addfinalizer(functools.partial(torch.set_num_threads, torch.get_num_threads()))

    def fit(settings):
        # One intra-op thread in every fit, sequential or concurrent: with
        # more, BLAS and OpenMP split sums by how many threads they get, which
        # depends on what else runs (and a new thread starts with OpenMP's
        # default count, not the main thread's), so the last bits would
        # differ for reasons that have nothing to do with the generators.
        torch.set_num_threads(1)
        return LiftPlusClassifier(**settings, class_names=names).fit(X, y).predict_proba(Xt)

    def fit_in_a_thread(settings):
        out = []
        thread = threading.Thread(target=lambda: out.append(fit(settings)))
        thread.start()
        thread.join()
        assert out, "the fit failed (see the thread's exception above)"
        return out[0]

    before = _global_rng_states()
    sequential = [fit_in_a_thread(s) for s in settings_]
    after = _global_rng_states()
    assert torch.equal(before[0], after[0]), "a fit moved torch's global generator"
    assert before[1:] == after[1:], "a fit moved numpy's or Python's global generator"

    results, errors = [None, None], []

    def run(i):
        try:
            results[i] = fit(settings_[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for concurrent, alone in zip(results, sequential):
        np.testing.assert_array_equal(concurrent, alone)
    assert torch.equal(before[0], torch.get_rng_state())


# ------------------------------------------- 4. checkpoint key and contents
def test_changed_image_contents_start_a_new_run(few, tmp_path):
    X, y, names, Xt = few
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i, src in enumerate(X):
        dst = folder / f"{i:02d}.jpg"
        shutil.copy(src, dst)
        paths.append(str(dst))
    params = dict(TINY, class_names=names, checkpoint_dir=str(tmp_path / "ckpt"))
    first = LiftPlusClassifier(**params).fit(paths, y).predict_proba(Xt)
    # Same names and labels, other contents (the images in reverse order).
    for i, src in enumerate(reversed(X)):
        shutil.copy(src, paths[i])
        later = time.time() + 10
        os.utime(paths[i], (later, later))
    again = LiftPlusClassifier(**params).fit(paths, y).predict_proba(Xt)
    fresh = LiftPlusClassifier(**dict(params, checkpoint_dir=None)).fit(paths, y).predict_proba(Xt)
    np.testing.assert_array_equal(again, fresh)
    assert not np.array_equal(again, first)


# ----------------------------------------------------- 5. odd labels, names
def test_huge_float_labels_and_repeated_target_names_are_refused(few):
    from liftlearn.metrics import long_tail_report

    X, y, _, _ = few
    y_float = np.where(y == 0, 1e20, y).astype(np.float64)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        LiftPlusClassifier(**TINY).fit(X, y_float)
    with pytest.raises(ValueError, match="64 bits"):
        LiftPlusClassifier(**TINY).fit(X, [2**70 if v == 0 else int(v) for v in y])
    with pytest.raises(ValueError, match="'x' twice"):
        long_tail_report([0, 1, 2], [0, 1, 2], [5, 5, 5], target_names=["x", "x", "y"], output_dict=True)


# -------------------------------------- 6. shared checkpoint_dir, clean-up
def test_fits_sharing_a_checkpoint_dir_keep_their_own_files(few, tmp_path, monkeypatch):
    X, y, names, _ = few
    ckpt = tmp_path / "ckpt"
    settings_ = [dict(TINY, epochs=2, class_names=names, checkpoint_dir=str(ckpt), lr=lr)
                 for lr in (0.01, 0.02)]
    errors = []

    def run(s):
        try:
            LiftPlusClassifier(**s).fit(X, y)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in settings_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(list(ckpt.glob("liftlearn-checkpoint-*.pt"))) == 2
    assert not _temp_files(ckpt)
    # Each run resumes from its own finished checkpoint: no training at all.
    monkeypatch.setattr("liftlearn.engine.loop.make_loader",
                        lambda *a, **k: pytest.fail("a finished run trained again"))
    for s in settings_:
        assert len(LiftPlusClassifier(**s).fit(X, y).history_) == 2


def test_legacy_single_checkpoint_file_still_resumes(few, tmp_path, monkeypatch):
    X, y, names, _ = few
    ckpt = tmp_path / "ckpt"
    clf = LiftPlusClassifier(**TINY, class_names=names, checkpoint_dir=str(ckpt)).fit(X, y)
    paths, labels = clf._training_images(X, y, None)[:2]
    run = clf._checkpoint(paths, labels)
    state = torch.load(run.path, weights_only=True)
    os.remove(run.path)
    torch.save({**state, "key": run.legacy_key}, ckpt / "liftlearn-checkpoint.pt")
    monkeypatch.setattr("liftlearn.engine.loop.make_loader",
                        lambda *a, **k: pytest.fail("the legacy checkpoint was not resumed"))
    assert clf.fit(X, y).history_ == state["history"]


def test_clean_checkpoints_removes_only_old_liftlearn_files(tmp_path):
    old = time.time() - 7200
    names = ["liftlearn-checkpoint-0123456789abcdef.pt", "liftlearn-checkpoint.pt",
             f".liftlearn-checkpoint-0123456789abcdef{TEMP_MARK}abc.pt", "notes.txt", "model.pt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / "liftlearn-checkpoint-fedcba9876543210.pt").write_bytes(b"new")
    removed = clean_checkpoints(tmp_path, older_than=3600)
    assert sorted(os.path.basename(p) for p in removed) == sorted(names[:3])
    assert clean_checkpoints(tmp_path) == [str(tmp_path / "liftlearn-checkpoint-fedcba9876543210.pt")]
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "notes.txt"]
    with pytest.raises(ValueError, match="older_than"):
        clean_checkpoints(tmp_path, older_than="1 day")


def test_clean_checkpoints_leaves_a_write_in_progress_alone(tmp_path):
    # Another process's checkpoint write: its temporary file is young.
    writing = tmp_path / f".liftlearn-checkpoint-0123456789abcdef{TEMP_MARK}abc.pt"
    writing.write_bytes(b"partial")
    stale = tmp_path / f".liftlearn-checkpoint-0123456789abcdef{TEMP_MARK}def.pt"
    stale.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    for older_than in (None, 0, 60):
        assert writing.exists()
        removed = clean_checkpoints(tmp_path, older_than=older_than)
        assert str(writing) not in removed
    assert not stale.exists() and writing.exists()


# --------------------------------------------------- 7. atomic files, ENOSPC
def test_atomic_write_from_two_threads_and_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "report.txt"
    errors = []

    def writer(text):
        try:
            for _ in range(30):
                atomic_write(target, lambda tmp: Path(tmp).write_text(text * 1000))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert target.read_text() in ("a" * 1000, "b" * 1000)
    assert not _temp_files(tmp_path)

    monkeypatch.setattr(io_module, "open", full_disk_open(room=10), raising=False)
    with pytest.raises(OSError) as info:
        with io_module.atomic_open(target, "wb", what="report") as f:
            f.write(b"c" * 5000)
    assert info.value.errno == errno.ENOSPC
    assert "report" in str(info.value) and str(target) in str(info.value)
    assert target.read_text() in ("a" * 1000, "b" * 1000)  # the old file is intact
    assert not _temp_files(tmp_path)


def test_a_name_near_the_length_limit_is_written(tmp_path):
    # The temporary name is longer than the target's; it is shortened, the
    # target is not.
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    target = tmp_path / ("m" * (limit - len(".safetensors")) + ".safetensors")
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"data"))
    assert target.read_bytes() == b"data"
    assert not _temp_files(tmp_path)


def test_save_is_atomic_readable_by_others_and_picks_format_by_suffix(fitted, few, tmp_path, monkeypatch):
    _, _, _, Xt = few
    path = tmp_path / "m.safetensors"
    old_umask = os.umask(0o022)
    try:
        save(fitted, path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    expected = load(path).predict_proba(Xt)
    monkeypatch.setattr(io_module, "open", full_disk_open(room=100), raising=False)
    with pytest.raises(OSError) as info:
        save(fitted, path)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path).predict_proba(Xt), expected)
    assert not _temp_files(tmp_path)
    with pytest.raises(ValueError, match="safetensors"):
        save(fitted, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_write_checks_name_the_option(tmp_path):
    check_writable(tmp_path / "out.joblib", "--out")
    with pytest.raises(ValueError, match="--out.*folder"):
        check_writable(tmp_path, "--out")
    with pytest.raises(ValueError, match="--out.*does not exist"):
        check_writable(tmp_path / "missing" / "m.joblib", "--out")
    check_writable(tmp_path / "made" / "m.joblib", "--out", create_folder=True)
    assert (tmp_path / "made").is_dir() and not os.listdir(tmp_path / "made")
    with pytest.raises(ValueError, match="--out"):
        check_writable("/proc/self/liftlearn.joblib", "--out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir.*not a folder"):
        check_writable_dir(tmp_path / "file", "checkpoint_dir")
    with pytest.raises(ValueError, match="checkpoint_dir"):
        check_writable_dir("/proc/self/liftlearn-ckpt", "checkpoint_dir")
    assert not _temp_files(tmp_path)


@pytest.mark.parametrize("name", ["logs/", "logs/.", "logs/.."])
def test_a_path_naming_a_folder_is_refused_by_the_check_and_the_write(tmp_path, name):
    # abspath("logs/") is ".../logs": the folder check used to pass for
    # it, and the write failed only after the work (CSVLogger: epoch 1).
    (tmp_path / "logs").mkdir()
    for path in (name, name.replace("logs", "missing")):
        with pytest.raises(ValueError, match="--out=.*names a folder; give the file to write"):
            check_writable(os.path.join(tmp_path, path), "--out")
        with pytest.raises(IsADirectoryError, match="names a folder"):
            with io_module.atomic_open(os.path.join(tmp_path, path), "w") as f:
                f.write("x")
    assert sorted(os.listdir(tmp_path)) == ["logs"] and not os.listdir(tmp_path / "logs")


def _as_non_root(monkeypatch):
    """Make writable opens of a file without its owner's write bit fail, as
    they do for any user but root (the tests may run as root, whom the
    kernel lets write anything)."""
    import builtins

    real_open, real_os_open = builtins.open, os.open

    def read_only(path) -> bool:
        return not isinstance(path, int) and os.path.exists(path) and not os.stat(path).st_mode & 0o200

    def fake_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wa+") and read_only(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR) and read_only(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(io_module, "open", fake_open, raising=False)
    monkeypatch.setattr(os, "open", fake_os_open)


def test_a_read_only_file_in_a_writable_folder_is_replaced_as_checked(tmp_path, monkeypatch):
    # check_writable passes such a file (the folder is writable, and an
    # atomic write replaces the file rather than writing into it); the
    # write used to give its temporary file the target's 0444 before
    # reopening it for the fsync, and failed after the work.
    target = tmp_path / "model.joblib"
    target.write_text("old")
    target.chmod(0o444)
    _as_non_root(monkeypatch)
    with pytest.raises(PermissionError):  # the emulation refuses what a user is refused
        with io_module.open(target, "w"):
            pass
    check_writable(target, "--out")
    atomic_write(target, lambda tmp: Path(tmp).write_text("new"), what="model file")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o444  # the mode is kept
    assert not _temp_files(tmp_path)


# ----------------------------------------------- 8. ULFine skip, str labels
def test_ulfine_skips_a_bad_image_with_string_labels(few, tmp_path):
    X, y, names, Xt = few
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    labels = np.array([names[v] for v in y] + ["cat"], dtype=object)
    labels[::3] = -1
    with pytest.warns(LiftLearnWarning, match="skipping 1"):
        clf = ULFineClassifier(**TINY, tte=False, on_bad_image="skip").fit(X + [str(bad)], labels)
    assert clf.transduction_.shape == (len(X) + 1,) and clf.transduction_[-1] == -1
    assert clf.skipped_images_[0][0] == str(bad)


@pytest.mark.parametrize("cls", [LiftPlusClassifier, ULFineClassifier])
def test_a_class_whose_only_image_is_skipped_keeps_its_column(few, tmp_path, cls):
    X, y, names, Xt = few
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    y = np.append(np.asarray(y), 99)  # class 99's only image is unusable
    with pytest.warns(LiftLearnWarning, match="skipping 1"):
        clf = cls(**TINY, tte=False, on_bad_image="skip").fit(X + [str(bad)], y)
    assert clf.classes_.tolist() == sorted(set(y.tolist()))
    assert clf.class_counts_.tolist()[-1] == 0
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(Xt), len(clf.classes_)) and np.isfinite(proba).all()


# ------------------------------------------------ 9. hostile model files
def _header(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["liftlearn"])


def _tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _write(path, meta, tensors) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"liftlearn": json.dumps(meta)})
    return Path(path)


@pytest.mark.parametrize("edit, field", [
    (lambda m, t: m.update(estimator="find_bad_images"), "estimator"),
    (lambda m, t: m["params"].update(paths=["/etc/passwd"]), "params.paths"),
    (lambda m, t: m["params"].update(lr="0.1"), "params.lr"),
    (lambda m, t: m["params"].update(adapter=["lora"]), "params.adapter"),
    (lambda m, t: m["params"].update(checkpoint_dir={"__class__": "os.system"}), "params.checkpoint_dir"),
    (lambda m, t: m["params"].update(adapter_dim=10**6), "params"),
    (lambda m, t: m.update(format_version="2"), "format"),
    (lambda m, t: m["fitted"].update(predict={"value": 1}), "fitted.predict"),
    (lambda m, t: m["fitted"].update(module_={"value": "os.system"}), "fitted.module_"),
    (lambda m, t: m["fitted"]["classes_"].update(array=list(range(200_000))), "fitted.classes_"),
    (lambda m, t: m["fitted"]["classes_"].update(array=[2**70] * 10), "fitted.classes_"),
    (lambda m, t: m["fitted"]["classes_"].update(dtype="V8"), "fitted.classes_"),
    (lambda m, t: m["fitted"]["class_names_"].update(value=["x" * 10_000] * 10), "fitted.class_names_"),
    (lambda m, t: m["fitted"].pop("classes_"), "fitted"),
    (lambda m, t: m["backbone"].update(fingerprint=None), "backbone.fingerprint"),
    (lambda m, t: m["backbone"].update(name="no-such-model"), "backbone.name"),
    (lambda m, t: m.update(device=["cuda"]), "device"),
    (lambda m, t: t.update({"head.weight": torch.zeros(3, 64)}), "tensors.head.weight"),
    (lambda m, t: t.update({"head.weight": torch.full(t["head.weight"].shape, float("nan"))}), "tensors.head.weight"),
    (lambda m, t: t.update({"extra": torch.zeros(1)}), "tensors"),
    # A few bytes of JSON that would claim gigabytes of padded strings.
    (lambda m, t: m["fitted"].update(notes_={"array": ["a"] * 1000, "dtype": "<U99999"}), "fitted.notes_"),
    (lambda m, t: m["fitted"].update(skipped_images_={"array": [1, 2], "dtype": "<i8"}),
     "fitted.skipped_images_"),
    (lambda m, t: m["params"].update(backbone="ViT-B-16"), "params.backbone"),
    (lambda m, t: m["params"].update(pretrained="openai"), "params.pretrained"),
])
def test_malformed_files_give_one_error_naming_file_and_field(model_file, tmp_path, edit, field, monkeypatch):
    meta, tensors = _header(model_file), _tensors(model_file)
    edit(meta, tensors)
    path = _write(tmp_path / "crafted.safetensors", meta, tensors)
    import liftlearn.data

    monkeypatch.setattr(liftlearn.data, "find_bad_images", lambda *a, **k: pytest.fail("called by name"))
    with pytest.raises(ModelFileError) as info:
        load(path)
    assert info.value.path == str(path) and info.value.field == field
    assert str(path) in str(info.value)


def test_files_with_settings_fit_now_refuses_still_load(model_file, tmp_path):
    # Rules of training-only parameters added after a file was saved do not
    # stop it from loading and predicting.
    meta, tensors = _header(model_file), _tensors(model_file)
    meta["params"].update(loss="cb", device_batch_size=8)
    loaded = load(_write(tmp_path / "older.safetensors", meta, tensors))
    assert loaded.loss == "cb" and loaded.device_batch_size == 8


def test_padded_string_arrays_take_the_memory_of_their_entries(model_file, tmp_path):
    meta, tensors = _header(model_file), _tensors(model_file)
    # 4,096-character entries (the most a file may hold) for 100,000 "a"s:
    # 1.6 GB as declared; loaded at the entries' own width.
    meta["fitted"]["notes_"] = {"array": ["a"] * 100_000, "dtype": "<U4096"}
    meta["fitted"]["tags_"] = {"array": ["ab", "c"], "dtype": "<U9"}  # small: kept as declared
    estimator = load(_write(tmp_path / "padded.safetensors", meta, tensors))
    assert estimator.notes_.dtype == np.dtype("<U1") and len(estimator.notes_) == 100_000
    assert estimator.tags_.dtype == np.dtype("<U9") and estimator.tags_.tolist() == ["ab", "c"]


def test_malformed_features_config_names_the_field(few, tmp_path):
    X, _, _, _ = few
    features = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu").fit(X)
    save(features, tmp_path / "f.safetensors")
    meta, tensors = _header(tmp_path / "f.safetensors"), _tensors(tmp_path / "f.safetensors")
    meta["fitted"]["tuner_config_"]["value"]["adapter"] = ["lora"]  # unhashable
    with pytest.raises(ModelFileError) as info:
        load(_write(tmp_path / "bad.safetensors", meta, tensors))
    assert info.value.field == "fitted.tuner_config_"


def test_load_names_a_bad_device_before_reading(model_file, tmp_path):
    with pytest.raises(ValueError, match="device='bogus'"):
        load(tmp_path / "absent.safetensors", device="bogus")
    with pytest.raises(ValueError, match="device='meta'"):
        load(model_file, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load(model_file, device="cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available"):
            load(tmp_path / "absent.safetensors", device="mps")
    assert load(model_file, device="auto").device_.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_save_refuses_parameters_changed_since_the_fit(fitted, tmp_path):
    import copy

    changed = copy.deepcopy(fitted).set_params(backbone="ViT-B-16")
    with pytest.raises(ValueError, match="load would refuse its params.backbone.*set it back or refit"):
        save(changed, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_labels_save_accepts_are_labels_load_accepts(few, tmp_path):
    X, y, _, _ = few
    y = np.asarray(y)
    fit = dict(TINY, epochs=1)
    booleans = LiftPlusClassifier(**fit, class_names={False: "no", True: "yes"}).fit(X, y == y[0])
    save(booleans, tmp_path / "b.safetensors")
    loaded = load(tmp_path / "b.safetensors")
    assert loaded.classes_.dtype == bool and loaded.classes_.tolist() == [False, True]
    np.testing.assert_array_equal(loaded.predict(X[:3]), booleans.predict(X[:3]))
    # Labels longer than load keeps are refused when saving, not when loading.
    long = np.where(y == y[0], "a" * 5000, "b")
    too_long = LiftPlusClassifier(**fit, class_names={"a" * 5000: "a", "b": "b"}).fit(X, long)
    with pytest.raises(ValueError, match="load would refuse its fitted.classes_"):
        save(too_long, tmp_path / "l.safetensors")
    assert not (tmp_path / "l.safetensors").exists()


def test_files_that_are_not_models_or_lie_about_their_header(tmp_path):
    cases = {
        "empty.safetensors": b"",
        "text.safetensors": b"hello world, not a model",
        "bomb.safetensors": (2**60).to_bytes(8, "little") + b"{}",
        "short.safetensors": (1000).to_bytes(8, "little") + b"{}",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelFileError, match="header") as info:
            load(tmp_path / name)
        assert info.value.field == "header"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="not a liftlearn model file"):
        load(tmp_path / "plain.safetensors")


def test_load_reaches_no_network_unless_allowed(model_file, tmp_path, monkeypatch):
    import liftlearn.persistence as persistence

    meta, tensors = _header(model_file), _tensors(model_file)
    meta["backbone"]["name"] = meta["params"]["backbone"] = "hf-hub:someone/some-clip"
    path = _write(tmp_path / "hub.safetensors", meta, tensors)
    calls = []

    def fake_get_backbone(spec, device):
        calls.append(spec.name)
        raise BackboneError("stop here")

    monkeypatch.setattr(persistence, "get_backbone", fake_get_backbone)
    with pytest.raises(ModelFileError, match="allow_network=True") as info:
        load(path)
    assert info.value.field == "backbone" and calls == []
    with pytest.raises(BackboneError, match="stop here"):
        load(path, allow_network=True)
    assert calls == ["hf-hub:someone/some-clip"]

    # A pretrained tag loads only from the cache: downloads are switched off.
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    seen = []

    def record(spec, device):
        seen.append((constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")))
        raise BackboneError("stop here")

    monkeypatch.setattr(persistence, "get_backbone", record)
    meta["backbone"].update(name="ViT-B-16-quickgelu", pretrained="openai")
    meta["params"].update(backbone="ViT-B-16-quickgelu", pretrained="openai")
    path = _write(tmp_path / "tag.safetensors", meta, tensors)
    with pytest.raises(BackboneError):
        load(path)
    assert seen == [(True, "1")] and constants.HF_HUB_OFFLINE is False


def _json_containers(inner):
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    _json_containers,
    max_leaves=12,
)


def _paths(value, prefix=()):
    """Every path into a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_headers_load_or_raise_model_file_error(model_file, tmp_path, data):
    meta, tensors = _header(model_file), _tensors(model_file)
    paths = [p for p in _paths(meta) if p]
    where = data.draw(st.sampled_from(paths))
    parent = meta
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(_json)
    path = _write(tmp_path / "fuzz.safetensors", meta, tensors)
    try:
        load(path)
    except ModelFileError as exc:
        assert exc.path == str(path)
    except BackboneError as exc:  # other weights than fitted on: documented
        assert "backbone" in str(exc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_fuzzed_raw_headers_raise_model_file_error(tmp_path, raw):
    path = tmp_path / "raw.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(ModelFileError):
        load(path)


# ---------------------------------------------- 10. every parameter round-trips
def test_every_accepted_parameter_value_round_trips(few, tmp_path):
    X, y, names, _ = few
    params = dict(
        TINY, class_names=names, epochs=np.int64(1), batch_size=np.int32(32), lr=np.float32(0.02),
        adapter_layers=np.array([2, 3]), random_state=np.int64(3), checkpoint_dir=tmp_path / "ckpt",
        device=torch.device("cpu"), tau=np.float64(1.0), compile=np.bool_(False),
    )
    clf = LiftPlusClassifier(**params).fit(X, y)
    save(clf, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors").get_params()
    for key, value in clf.get_params().items():
        if key == "class_names":
            continue
        assert type(loaded[key]) is type(value), key
        assert np.array_equal(loaded[key], value) if isinstance(value, np.ndarray) else loaded[key] == value
    zs = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                            prompt_template=("a {}.", "an image of a {}."), class_names=names).fit(X, y)
    save(zs, tmp_path / "z.safetensors")
    assert load(tmp_path / "z.safetensors").prompt_template == ("a {}.", "an image of a {}.")


# ------------------------------------------------- 11. odd checkpoint files
def test_foreign_checkpoint_contents_are_ignored_with_a_warning(few, tmp_path):
    X, y, names, _ = few
    ckpt = tmp_path / "ckpt"
    params = dict(TINY, class_names=names, checkpoint_dir=str(ckpt))
    LiftPlusClassifier(**params).fit(X, y)
    (path,) = ckpt.glob("liftlearn-checkpoint*.pt")
    state = torch.load(path, weights_only=True)
    # A list (None takes the same path) and a dict of this run with broken entries.
    for content in ([1, 2, 3], {"key": state["key"], "history": "not a list"}):
        torch.save(content, path)
        with pytest.warns(UserWarning, match="ignoring checkpoint"):
            clf = LiftPlusClassifier(**params).fit(X, y)
        assert len(clf.history_) == 1


def test_full_disk_while_checkpointing_says_what_and_where(few, tmp_path, monkeypatch):
    X, y, names, _ = few
    ckpt = tmp_path / "ckpt"
    monkeypatch.setattr(checkpoint_module, "open", full_disk_open(room=1000), raising=False)
    clf = LiftPlusClassifier(**TINY, class_names=names, checkpoint_dir=str(ckpt))
    with pytest.raises(OSError) as info:
        clf.fit(X, y)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and "disk is full" in message
    assert "checkpoint" in message and str(ckpt) in message and "epoch 1" in message
    assert not hasattr(clf, "classes_")
    assert not _temp_files(ckpt) and not list(ckpt.glob("liftlearn-checkpoint*.pt"))


# ----------------------------------------- 12. bad images in worker processes
def test_bad_image_error_keeps_path_and_reason_across_workers(fitted, tmp_path):
    from liftlearn.engine import predict_images

    bad = tmp_path / "bad \udcff'name.jpg"
    bad.write_bytes(b"GIF89a broken")
    module = fitted.module_
    with pytest.raises(BadImageError) as info:
        predict_images(module, module.backbone, [str(bad)], tte=False, tte_expand=0, batch_size=2,
                       device=torch.device("cpu"), num_workers=1)
    assert info.value.path == str(bad)
    assert info.value.reason.startswith(("not an image", "truncated or corrupt"))
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.path, again.reason) == (info.value.path, info.value.reason)


# ------------------------------------------------ 13. non-UTF-8 file names
def test_non_utf8_file_names_fit_checkpoint_and_save(few, tmp_path):
    X, y, names, Xt = few
    folder = os.fsencode(tmp_path)
    odd = os.fsdecode(folder + b"/caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8
    shutil.copy(X[0], os.fsencode(odd))
    broken = os.fsdecode(folder + b"/bad-\xfe.jpg")
    with open(os.fsencode(broken), "wb") as f:
        f.write(b"no image")
    params = dict(TINY, class_names=names, checkpoint_dir=str(tmp_path / "ckpt"), on_bad_image="skip")
    with pytest.warns(LiftLearnWarning, match="skipping 1"):
        clf = LiftPlusClassifier(**params).fit([odd] + X[1:] + [broken], list(y) + [0])
    assert clf.skipped_images_[0][0] == broken
    save(clf, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    assert loaded.skipped_images_ == clf.skipped_images_
    np.testing.assert_array_equal(loaded.predict_proba([odd]), clf.predict_proba([odd]))


# --------------------------------------------- 14. replaced weights files
def test_replaced_pretrained_file_is_loaded_afresh(tmp_path):
    import open_clip

    from liftlearn.nn.backbones import _open_clip, backbone_fingerprint, get_backbone

    _open_clip()
    path = tmp_path / "weights.pt"

    def write(seed, when):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            torch.save(open_clip.create_model("liftlearn-tiny-vit").state_dict(), path)
        os.utime(path, (when, when))

    write(1, time.time() - 100)
    first = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=str(path))
    assert get_backbone("liftlearn-tiny-vit", "cpu", pretrained=str(path)) is first
    write(2, time.time())
    second = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=str(path))
    assert second is not first
    assert backbone_fingerprint(second) != backbone_fingerprint(first)


# ------------------------------------------- 15-18. clear errors, before work
@pytest.fixture
def no_image_check(monkeypatch):
    """Fail if a fit gets as far as checking the images."""
    # Every input's check pass goes through its image source; for paths,
    # that is find_bad_images as image_sources imports it.
    import liftlearn.image_sources as image_sources

    monkeypatch.setattr(image_sources, "find_bad_images",
                        lambda *a, **k: pytest.fail("the images were checked before the error"))


def test_unusable_checkpoint_dir_is_named_before_any_work(few, tmp_path, no_image_check):
    X, y, names, _ = few
    (tmp_path / "file").write_text("x")
    for where in (tmp_path / "file", "/proc/self/liftlearn-ckpt"):
        with pytest.raises(ValueError, match="checkpoint_dir"):
            LiftPlusClassifier(**TINY, class_names=names, checkpoint_dir=where).fit(X, y)


def test_skip_with_every_image_bad_says_none_is_left(tmp_path):
    bad = []
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_text("no")
        bad.append(str(tmp_path / f"{i}.jpg"))
    with pytest.raises(ValueError, match="no usable training image is left"):
        LiftPlusClassifier(**TINY, on_bad_image="skip").fit(bad, [0, 1, 0])


@pytest.mark.parametrize("cls, params", [
    (LiftPlusClassifier, {"prompt_template": "{} {}"}),
    (LiftPlusClassifier, {"prompt_template": "{x} {}"}),
    (ZeroShotClassifier, {"prompt_template": ["a {}.", "{} and {}"]}),
    (LiftPlusClassifier, {"adapter": ["lora"]}),
    (LiftPlusClassifier, {"tte_expand": 10**6}),
    (CLIPFeatures, {"tte_expand": 10**6}),
])
def test_unusable_parameter_values_are_named_at_fit(few, cls, params, no_image_check):
    X, y, names, _ = few
    kwargs = {k: v for k, v in TINY.items() if k in cls().get_params()}
    with pytest.raises(InvalidParameterError, match=next(iter(params))):
        cls(**kwargs, **params).fit(X, y)


@pytest.mark.parametrize("adapter, dim", [("adaptformer", 10**6), ("lora", 65), ("vpt", 2000)])
def test_sizes_that_cannot_work_are_refused_before_allocating(few, adapter, dim):
    X, y, names, _ = few
    clf = LiftPlusClassifier(**TINY, adapter=adapter, adapter_dim=dim, class_names=names)
    with pytest.raises(ValueError, match=f"adapter_dim={dim} is too large"):
        clf.fit(X, y)
    assert not hasattr(clf, "classes_")


def test_num_workers_above_the_cpus_is_clamped_with_a_warning():
    from liftlearn._device import usable_cpus

    clf = LiftPlusClassifier(**TINY, num_workers=10_000)
    with pytest.warns(LiftLearnWarning, match="num_workers=10000"):
        assert clf._train_config().num_workers == usable_cpus()


# ---------------------------------------------------- 20. refits that fail
@pytest.mark.parametrize("make", [
    lambda: ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu"),
    lambda: CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu"),
])
def test_failed_refit_leaves_no_old_fitted_state(few, make):
    X, y, _, _ = few
    est = make().fit(X, y)
    est.set_params(batch_size=0)
    with pytest.raises(InvalidParameterError):
        est.fit(X, y)
    assert not [a for a in vars(est) if a.endswith("_") and not a.startswith("_")]


# ------------------------------------------------ 21. Ctrl-C in image check
def test_ctrl_c_during_the_image_check_cancels_pending_work(tmp_path, monkeypatch):
    import liftlearn.data as data

    checked = []

    def slow_check(path):
        checked.append(path)
        time.sleep(0.1)
        return None

    monkeypatch.setattr(data, "_header_problem", slow_check)
    # 8 chunks of 50 files, 5 s each: before the fix, Ctrl-C waited for the
    # two running chunks.
    paths = [str(tmp_path / f"{i}.jpg") for i in range(400)]
    main = threading.main_thread().ident
    timer = threading.Timer(0.3, signal.pthread_kill, args=(main, signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            data.find_bad_images(paths, n_jobs=2)
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - start
    time.sleep(0.2)  # let the running chunks notice the cancellation
    done = len(checked)
    time.sleep(0.3)
    assert elapsed < 2.0, elapsed
    assert len(checked) == done < 20  # nothing more is checked after Ctrl-C


def test_the_end_of_epoch_check_builds_no_graph():
    # The probe forward runs every epoch: under autograd it would hold a
    # graph over every trainable parameter (memory and time on a GPU).
    import contextlib

    from liftlearn.engine.loop import _health

    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            seen.append(torch.is_grad_enabled())
            return x.flatten(1)[:, :3] * self.w

    net = Net()
    ok = _health(net, [net.w], torch.zeros(2, 3, 2, 2), contextlib.nullcontext())
    assert seen == [False] and ok.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("durable", [True, False])
def test_files_made_again_at_will_skip_the_syncs_but_stay_all_or_nothing(tmp_path, monkeypatch,
                                                                          durable):
    # Dataset caches write thousands of small files: the syncs made them
    # five times slower, and they protect only against a power loss.
    synced = []
    real = os.fsync
    monkeypatch.setattr(io_module.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    dest = tmp_path / "x.png"
    atomic_write(dest, lambda tmp: open(tmp, "wb").write(b"new"), durable=durable)
    assert dest.read_bytes() == b"new" and bool(synced) == durable

    def killed_mid_write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(dest, killed_mid_write, durable=durable)
    assert dest.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
