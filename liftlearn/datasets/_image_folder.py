"""Any ImageFolder-style tree: ``root/<class>/**/<image>``."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

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
    DatasetFileError
        If there are no images, or a folder is not among ``class_names``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(folders) if class_names is None else [str(n) for n in class_names]
    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        raise DatasetFileError(f"class_names repeats {repeated[:5]}: each class needs its own name")
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
