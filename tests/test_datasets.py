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
