"""Shared pieces of the dataset loaders: errors, class names, list files.

Every loader of :mod:`liftlearn.datasets` returns ``(paths, y,
class_names)``: absolute image paths (as ``str``), integer labels
(``numpy.int64``) and the name of each label, ready for
:meth:`liftlearn.LiftPlusClassifier.fit`.  The loaders read the list and
annotation files only; they do not open the images (the estimator checks the
paths before it trains).  Problems in the files raise :class:`DatasetFileError`
(a :class:`ValueError`) naming the file and, where there is one, the line.
"""

from __future__ import annotations

import codecs
import io
import os
import re
from pathlib import Path
from typing import Sequence, Union

import numpy as np

__all__ = [
    "DatasetFileError",
    "IMAGE_EXTENSIONS",
    "get_class_names",
    "read_list_file",
]


StrPath = Union[str, "os.PathLike[str]"]
Dataset = tuple[list[str], np.ndarray, list[str]]

_CLASSNAMES_DIR = Path(__file__).resolve().parent / "data" / "classnames"
_SHIPPED = {
    "imagenet": "imagenet.txt",
    "imagenet-lt": "imagenet.txt",
    "places": "places365.txt",
    "places365": "places365.txt",
    "places-lt": "places365.txt",
    "cifar10": "cifar10.txt",
    "cifar10-lt": "cifar10.txt",
    "cifar100": "cifar100.txt",
    "cifar100-lt": "cifar100.txt",
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class DatasetFileError(ValueError):
    """A dataset file is missing a field, malformed or inconsistent.

    The message starts with the file (and line, where there is one), e.g.
    ``"ImageNet_LT_train.txt line 17: expected '<path> <label>'"``.
    """


# --------------------------------------------------------------------- names


def get_class_names(dataset: str) -> list[str]:
    """Class names shipped with liftlearn, in label order.

    Parameters
    ----------
    dataset : {"imagenet", "places365", "cifar10", "cifar100"}
        Also accepted: ``"imagenet-lt"``, ``"places"``, ``"places-lt"``,
        ``"cifar10-lt"``, ``"cifar100-lt"``.

    Returns
    -------
    list of str
        ImageNet: CLIP's 1000 curated names (as used by LIFT+). Places365:
        365 folder-style names such as ``"apartment_building-outdoor"``.
        CIFAR-10 / CIFAR-100: the dataset's label names, in label order.

    Examples
    --------
    >>> get_class_names("imagenet")[:2]
    ['tench', 'goldfish']
    >>> len(get_class_names("cifar100"))
    100
    """
    key = str(dataset).lower()
    if key not in _SHIPPED:
        raise ValueError(
            f"no class names shipped for {dataset!r}; choose one of "
            f"{sorted(set(_SHIPPED))}"
        )
    text = (_CLASSNAMES_DIR / _SHIPPED[key]).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


# ----------------------------------------------------------------- list files


def read_list_file(
    path: StrPath, root: StrPath | None = None, *, n_classes: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Read a ``"<relative image path> <label>"`` list file.

    This is the format of the ImageNet-LT, Places-LT and LIFT-style
    iNaturalist 2018 split files. Blank lines are skipped; the path may not
    contain spaces (the label is the last field).

    Parameters
    ----------
    path : str or os.PathLike
        The list file.
    root : str or os.PathLike, optional
        Folder the relative paths start from; default: the list file's
        folder. Absolute paths in the file are kept as they are.
    n_classes : int, optional
        When given, labels must lie in ``0..n_classes-1``.

    Returns
    -------
    paths : list of str
        Absolute image paths, in file order.
    y : numpy.ndarray of int64
        The labels.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DatasetFileError
        For a line that is not ``<path> <label>``, a label that is not a
        non-negative integer or is out of range, or a file with no entries.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: {path}")
    base = Path(root) if root is not None else path.parent
    base = base.resolve()
    paths: list[str] = []
    labels: list[int] = []
    # Universal newlines (\n, \r\n or \r), as text files are read.
    for lineno, line in enumerate(io.StringIO(_read_utf8(path), newline=None), start=1):
        _read_list_line(line, lineno, path, base, n_classes, paths, labels)
    if not paths:
        raise DatasetFileError(f"{path.name}: no '<path> <label>' lines ({path})")
    return paths, np.asarray(labels, dtype=np.int64)


def _read_utf8(path: Path) -> str:
    """A data file's text: UTF-8 without the byte-order mark some editors
    write (no part of a path or of JSON); otherwise a DatasetFileError
    naming the file and the line."""
    data = Path(path).read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = len(re.findall(rb"\r\n|\r|\n", data[:exc.start])) + 1
        raise DatasetFileError(f"{path.name} line {lineno}: not UTF-8 text ({path})") from None


def _read_list_line(line: str, lineno: int, path: Path, base: Path, n_classes, paths: list,
                    labels: list) -> None:
    """One line of a list file into ``paths`` and ``labels`` (blank: none)."""
    line = line.strip()
    if not line:
        return
    fields = line.split()
    if len(fields) != 2:
        raise DatasetFileError(
            f"{path.name} line {lineno}: expected '<path> <label>', "
            f"got {line[:80]!r} ({path})"
        )
    rel, label = fields
    try:
        value = int(label)
    except ValueError:
        value = -1
    if value < 0 or (n_classes is not None and value >= n_classes):
        bound = f" in 0..{n_classes - 1}" if n_classes is not None else ""
        raise DatasetFileError(
            f"{path.name} line {lineno}: label {label!r} is not an "
            f"integer{bound} >= 0 ({path})"
        )
    paths.append(str(base / rel))
    labels.append(value)


def _find_list_file(where: Path, names: Sequence[str], what: str) -> Path:
    if where.is_file():
        return where
    for name in names:
        if (where / name).is_file():
            return where / name
    raise FileNotFoundError(
        f"{what}: none of {', '.join(names)} found in {where}"
    )


def _check_list_split(path: Path, split: str, names_of, splits: Sequence[str], what: str) -> None:
    """Refuse a list file given by name that is another split's
    (``names_of(split)``: the file names a split's list goes by): training
    on the test list is not an error anything later would notice."""
    for other in splits:
        if other != split and path.name in names_of(other):
            raise ValueError(f"{what}: {path} is the {other!r} list, but split={split!r}")


def _check_split(split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {tuple(allowed)}, got {split!r}")


def _load_listed(
    root: StrPath,
    split: str,
    list_dir: StrPath | None,
    prefix: str,
    names: list[str],
    what: str,
) -> Dataset:
    _check_split(split, ("train", "val", "test"))
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} image root not found: {root}")
    where = Path(list_dir) if list_dir is not None else root

    def names_of(s: str) -> list:
        return [f"{prefix}_{s}.txt", f"{s}.txt"]

    if where.is_file():
        _check_list_split(where, split, names_of, ("train", "val", "test"), what)
    list_file = _find_list_file(where, names_of(split), f"{what} {split} list")
    paths, y = read_list_file(list_file, root, n_classes=len(names))
    return paths, y, names
