"""Tests of liftlearn.datasets (CIFAR-10-LT sample and extraction)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from liftlearn.data import load_image
from liftlearn.datasets import (
    extract_cifar10_lt,
    load_cifar10_lt_sample,
    long_tailed_counts,
)
from liftlearn.datasets._make_sample import SAMPLE_DIR, build_sample
from conftest import run_in_threads

CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _shared_cifar10() -> Path:
    env = os.environ.get("LIFTLEARN_SHARED_DATA")
    candidates = []
    if env:
        candidates += [Path(env) / "cifar10-jpg", Path(env)]
    candidates.append(
        Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg"
    )
    for folder in candidates:
        if (folder / "train.tar").is_file() and (folder / "test.tar").is_file():
            return folder
    pytest.skip("shared CIFAR-10 JPEG archives not found (set LIFTLEARN_SHARED_DATA)")


@pytest.fixture(scope="module")
def shared_cifar10() -> Path:
    return _shared_cifar10()


# --- counts -----------------------------------------------------------------


def test_long_tailed_counts_formula():
    counts = long_tailed_counts(500, 10, 100)
    assert counts == [int(500 * 0.01 ** (c / 9)) for c in range(10)]
    assert counts == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    # The standard CIFAR-10-LT (imbalance 100) profile.
    assert long_tailed_counts(5000, 10, 100) == [
        5000,
        2997,
        1796,
        1077,
        645,
        387,
        232,
        139,
        83,
        50,
    ]
    assert long_tailed_counts(7, 1, 10) == [7]
    assert long_tailed_counts(10, 4, 1) == [10] * 4


@pytest.mark.parametrize(
    "args", [(0, 10, 100), (500, 0, 100), (500, 10, 0.5), (500, 10, float("nan"))]
)
def test_long_tailed_counts_validation(args):
    with pytest.raises(ValueError):
        long_tailed_counts(*args)


# --- shipped sample ---------------------------------------------------------


def test_sample_train():
    paths, y, class_names = load_cifar10_lt_sample()
    assert class_names == CLASSES
    assert y.dtype == np.int64 and len(paths) == len(y)
    counts = Counter(y.tolist())
    assert [counts[c] for c in range(10)] == long_tailed_counts(500, 10, 100)
    # Paths are absolute and the folder name agrees with the label.
    for path, label in zip(paths, y):
        assert os.path.isabs(path) and os.path.isfile(path)
        assert Path(path).parent.name == class_names[label]


def test_sample_test_is_balanced():
    paths, y, class_names = load_cifar10_lt_sample("test")
    assert np.bincount(y).tolist() == [100] * 10
    assert all(os.path.isfile(p) for p in paths)
    assert set(paths).isdisjoint(load_cifar10_lt_sample("train")[0])


def test_sample_images_decode():
    for split in ("train", "test"):
        for path in load_cifar10_lt_sample(split)[0]:
            img = load_image(path)
            assert img.mode == "RGB" and img.size == (32, 32)


def test_sample_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_cifar10_lt_sample("val")


def test_sample_loader_reads_what_make_sample_writes(monkeypatch, tmp_path):
    from liftlearn.datasets import _sample

    assert _sample._SAMPLE_DIR == SAMPLE_DIR
    monkeypatch.setattr(_sample, "_SAMPLE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m liftlearn.datasets._make_sample"):
        load_cifar10_lt_sample()


def test_sample_has_provenance():
    text = (SAMPLE_DIR / "PROVENANCE.txt").read_text()
    assert "d7d05618061fe37d830fb0419063d113c575ccbc" in text
    assert "Krizhevsky" in text


# --- extraction from the shared archives ------------------------------------


def test_extract_train_long_tailed(shared_cifar10, tmp_path):
    paths, y, class_names = extract_cifar10_lt(
        shared_cifar10, tmp_path, n_max=200, random_state=0
    )
    assert class_names == CLASSES
    assert np.bincount(y, minlength=10).tolist() == long_tailed_counts(200, 10, 100)
    assert len(set(paths)) == len(paths)
    for path, label in zip(paths, y):
        rel = Path(path).relative_to(tmp_path.resolve())
        assert rel.parts[:2] == ("train", class_names[label])
    assert load_image(paths[-1]).size == (32, 32)
    # Nothing but the chosen files was written.
    written = {str(p) for p in (tmp_path / "train").rglob("*") if p.is_file()}
    assert written == set(paths)


def test_extract_is_deterministic_and_seeded(shared_cifar10, tmp_path):
    a = extract_cifar10_lt(shared_cifar10, tmp_path / "a", n_max=200, random_state=3)
    b = extract_cifar10_lt(shared_cifar10, tmp_path / "b", n_max=200, random_state=3)
    rel = lambda paths, root: [
        Path(p).relative_to((tmp_path / root).resolve()) for p in paths
    ]
    assert rel(a[0], "a") == rel(b[0], "b")
    assert np.array_equal(a[1], b[1])
    c = extract_cifar10_lt(shared_cifar10, tmp_path / "c", n_max=200, random_state=4)
    assert rel(c[0], "c") != rel(a[0], "a")
    # Re-running into the same folder keeps the files (and their bytes).
    before = {p: Path(p).stat().st_mtime_ns for p in a[0]}
    again = extract_cifar10_lt(
        shared_cifar10, tmp_path / "a", n_max=200, random_state=3
    )
    assert again[0] == a[0]
    assert {p: Path(p).stat().st_mtime_ns for p in a[0]} == before


def test_extract_test_is_balanced(shared_cifar10, tmp_path):
    paths, y, _ = extract_cifar10_lt(shared_cifar10, tmp_path, split="test", n_max=20)
    assert np.bincount(y).tolist() == [20] * 10
    assert all(
        Path(p).relative_to(tmp_path.resolve()).parts[0] == "test" for p in paths
    )


def test_extract_too_many_requested(shared_cifar10, tmp_path):
    with pytest.raises(ValueError, match="only"):
        extract_cifar10_lt(shared_cifar10, tmp_path, n_max=6000)


def test_sample_rebuild_is_byte_identical(shared_cifar10, tmp_path):
    summary = build_sample(shared_cifar10, tmp_path)
    assert summary["train"] == long_tailed_counts(500, 10, 100)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    shipped = sorted(
        p.relative_to(SAMPLE_DIR) for p in SAMPLE_DIR.rglob("*") if p.is_file()
    )
    assert built == shipped
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (SAMPLE_DIR / rel).read_bytes(), rel


# --- errors without the archives --------------------------------------------


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train\.tar"):
        extract_cifar10_lt(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"test\.tar"):
        extract_cifar10_lt(tmp_path, tmp_path / "out", split="test")


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        extract_cifar10_lt(tmp_path, tmp_path, split="val")


# --- the extracted files: written whole, by any number of writers -----------


def _tiny_tar(folder: Path, per_class: int = 2) -> Path:
    """A ``train.tar`` of 10 classes with ``per_class`` members of 1000
    random bytes each (the extraction copies bytes; it never decodes)."""
    import io
    import tarfile

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "train.tar", "w") as tar:
        for name in CLASSES:
            for i in range(per_class):
                data = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
                info = tarfile.TarInfo(f"train/{name}/{i:04d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder


def _files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_failed_extraction_leaves_no_partial_or_temporary_file(tmp_path, monkeypatch):
    import errno

    src = _tiny_tar(tmp_path / "src")
    real_write_bytes = Path.write_bytes

    def full_disk(self, data):
        real_write_bytes(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match=r"extracted image .*0000\.jpg.*the disk is full") as info:
        extract_cifar10_lt(src, tmp_path / "out", n_max=2, imbalance=2)
    assert info.value.errno == errno.ENOSPC
    # Neither a short file a later run would reuse nor a temporary one
    # ("0000.jpg.part" used to stay).
    assert _files(tmp_path / "out") == []
    monkeypatch.undo()
    paths, _, _ = extract_cifar10_lt(src, tmp_path / "out", n_max=2, imbalance=2)
    assert sorted(str(Path(p).relative_to((tmp_path / "out").resolve())) for p in paths) \
        == _files(tmp_path / "out")


def test_two_writers_of_one_extracted_file_both_succeed(tmp_path, monkeypatch):
    import io
    import threading

    from liftlearn.datasets._cifar10 import _Member, _write_member

    data = os.urandom(5000)
    member = _Member("train/cat/0001.jpg", 0, len(data))
    dest = tmp_path / "train" / "cat" / "0001.jpg"
    # Both writers hold a written temporary file before either renames it:
    # with one fixed "<name>.part" the second rename found no file.
    both_written = threading.Barrier(2, timeout=30)
    real_write_bytes = Path.write_bytes

    def write_then_wait(self, content):
        n = real_write_bytes(self, content)
        both_written.wait()
        return n

    monkeypatch.setattr(Path, "write_bytes", write_then_wait)
    run_in_threads(*[lambda: _write_member(io.BytesIO(data), member, dest)] * 2)
    assert dest.read_bytes() == data
    assert _files(tmp_path) == [str(Path("train", "cat", "0001.jpg"))]


def test_an_extracted_file_another_writer_finished_first_is_kept(tmp_path, monkeypatch):
    import errno
    import io

    from liftlearn.datasets._cifar10 import _Member, _write_member

    data = os.urandom(5000)
    member = _Member("train/cat/0001.jpg", 0, len(data))
    dest = tmp_path / "train" / "cat" / "0001.jpg"
    real_write_bytes = Path.write_bytes

    def other_writer_first(self, content):
        real_write_bytes(dest, content)  # the other extraction's file, complete
        return real_write_bytes(self, content)

    def replace_refused(src, dst):  # Windows, while the other file is open
        raise PermissionError(errno.EACCES, "Access is denied", dst)

    monkeypatch.setattr(Path, "write_bytes", other_writer_first)
    monkeypatch.setattr(os, "replace", replace_refused)
    _write_member(io.BytesIO(data), member, dest)
    assert dest.read_bytes() == data
    assert _files(tmp_path) == [str(Path("train", "cat", "0001.jpg"))]
