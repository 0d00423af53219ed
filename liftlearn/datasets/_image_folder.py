"""Any ImageFolder-style tree: ``root/<class>/**/<image>``."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterator, Mapping
from typing import Sequence

import numpy as np

from .._labels import class_names_problem

from ._base import IMAGE_EXTENSIONS, Dataset, DatasetFileError, StrPath

__all__ = ["load_image_folder"]


def _list_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    exts = tuple(e.lower() for e in extensions)
    found = [
        Path(dirpath) / name
        for dirpath, _, files in os.walk(folder, followlinks=True)
        for name in files
        if name.lower().endswith(exts) and not name.startswith(".")
    ]
    return sorted(found)


def load_image_folder(
    root: StrPath,
    *,
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Dataset:
    """Any ImageFolder-style tree: ``root/<class>/**/<image>``.

    Parameters
    ----------
    root : str or os.PathLike
        One sub-folder per class; images may sit in nested folders below it.
    class_names : sequence of str, optional
        The class folders in label order; they may include classes without
        a folder (no training images). Default: the sub-folders, sorted.
    extensions : sequence of str
        File endings counted as images (case-insensitive).

    Returns
    -------
    paths, y, class_names
        Paths sorted by label, then by path.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    ValueError
        If ``class_names`` is a mapping, or not what the estimators take (a
        set, a single str, empty, blank or repeated names).
    DatasetFileError
        If there are no images, or a folder is not among ``class_names``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is not None:
        if isinstance(class_names, Mapping):
            # The estimators read a mapping as label -> name; here the names
            # are folder names in label order.
            raise ValueError("class_names must be the class folders in label order (a "
                             "sequence), not a mapping")
        if isinstance(class_names, Iterator):
            class_names = list(class_names)  # a generator or map: read once
        # The estimators' rule for names, checked here, before any folder is
        # listed: a set would make the labels depend on PYTHONHASHSEED, a
        # str would be split into letters.
        problem = class_names_problem(class_names)
        if problem:
            raise ValueError(problem)
    names = list(folders) if class_names is None else [str(n) for n in class_names]
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise DatasetFileError(
            f"{root}: class folder(s) {unknown[:5]} are not in class_names"
        )
    index = {name: i for i, name in enumerate(names)}
    paths: list[str] = []
    labels: list[int] = []
    for name in names:
        folder = root / name
        if not folder.is_dir():
            continue
        files = _list_images(folder, extensions)
        paths.extend(str(p.resolve()) for p in files)
        labels.extend([index[name]] * len(files))
    if not paths:
        raise DatasetFileError(
            f"{root}: no images ({', '.join(extensions)}) in class sub-folders"
        )
    return paths, np.asarray(labels, dtype=np.int64), names
