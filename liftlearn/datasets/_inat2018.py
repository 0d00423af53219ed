"""iNaturalist 2018 from the official JSON or from LIFT-style list files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._base import (
    Dataset, DatasetFileError, StrPath, _check_list_split, _check_split, _read_utf8, read_list_file,
)

__all__ = ["load_inat2018"]


def _read_json(path: Path) -> object:
    try:
        return json.loads(_read_utf8(path))
    except json.JSONDecodeError as exc:
        raise DatasetFileError(
            f"{path.name} line {exc.lineno}: invalid JSON ({exc.msg}) ({path})"
        ) from None


def _is_id(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _category_names(categories: object, path: Path) -> list[str]:
    if not isinstance(categories, list) or not categories:
        raise DatasetFileError(f"{path.name}: expected a non-empty list of categories ({path})")
    by_id: dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetFileError(
                f"{path.name}: category #{i} has no 'id' and 'name' ({path})"
            )
        cid = cat["id"]
        if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
            raise DatasetFileError(f"{path.name}: category #{i} has id {cid!r} ({path})")
        if cid in by_id:
            raise DatasetFileError(f"{path.name}: category id {cid} appears twice ({path})")
        by_id[cid] = str(cat["name"])
    if sorted(by_id) != list(range(len(by_id))):
        raise DatasetFileError(
            f"{path.name}: category ids are not 0..{len(by_id) - 1} ({path})"
        )
    return [by_id[i] for i in range(len(by_id))]


def load_inat2018(
    root: StrPath,
    split: str = "train",
    *,
    annotations: StrPath | None = None,
    categories: StrPath | None = None,
) -> Dataset:
    """iNaturalist 2018 from the official JSON or from LIFT-style list files.

    Two layouts are read, tried in this order:

    1. The official annotations ``<split>2018.json`` (COCO style:
       ``images`` with ``id``/``file_name``, ``annotations`` with
       ``image_id``/``category_id``, ``categories`` with ``id``/``name``).
    2. A list file ``iNaturalist18_<split>.txt`` or ``<split>.txt``
       (``"<path> <label>"``) with ``categories.json`` (a list of
       ``{"id", "name"}``) next to it.

    Parameters
    ----------
    root : str or os.PathLike
        Folder the image paths are relative to (the one holding
        ``train_val2018/``); also where the annotation files are looked for.
    split : {"train", "val"}, default="train"
        The papers report on ``"val"`` (24,426 images, 3 per class).
    annotations : str or os.PathLike, optional
        The JSON annotation file or list file to read, or a folder to search
        for them, instead of ``root`` (a file named for the other split is
        refused).
    categories : str or os.PathLike, optional
        ``categories.json`` for a list file; default: next to the list file,
        then in ``root``.

    Returns
    -------
    paths, y, class_names
        The label of an image is its category ``id`` (0..8141), the
        convention of both the official JSON and the LIFT-style list files,
        whose folder names are those ids; ``class_names[i]`` is the ``name``
        (Latin binomial) of category ``i``.

    Notes
    -----
    The LIFT+ notes say labels are re-indexed "in sorted order of unique
    names"; with the released files that re-indexing would not match the
    labels in ``val.txt`` (which equal the category ids, and the names are
    not sorted by id), so liftlearn keeps the ids.
    """
    _check_split(split, ("train", "val"))
    root = Path(root)

    def names_of(s: str) -> tuple:
        return (f"{s}2018.json", f"iNaturalist18_{s}.txt", f"{s}.txt")

    source = Path(annotations) if annotations is not None else None
    if source is not None and source.is_file():
        _check_list_split(source, split, names_of, ("train", "val"), "iNaturalist 2018")
    if source is None or source.is_dir():
        where = root if source is None else source  # a folder is searched as root is
        for name in names_of(split):
            if (where / name).is_file():
                source = where / name
                break
        else:
            raise FileNotFoundError(
                f"iNaturalist 2018 {split} annotations: none of {', '.join(names_of(split))} "
                f"found in {where}"
            )
    if not source.is_file():
        raise FileNotFoundError(f"iNaturalist 2018 annotations not found: {source}")

    if source.suffix.lower() == ".json":
        data = _read_json(source)
        if not isinstance(data, dict) or not all(
            k in data for k in ("images", "annotations", "categories")
        ):
            raise DatasetFileError(
                f"{source.name}: expected a JSON object with 'images', "
                f"'annotations' and 'categories' ({source})"
            )
        names = _category_names(data["categories"], source)
        for key in ("images", "annotations"):
            if not isinstance(data[key], list):
                raise DatasetFileError(f"{source.name}: '{key}' is not a list ({source})")
        files: dict = {}
        for i, img in enumerate(data["images"]):
            if not (isinstance(img, dict) and _is_id(img.get("id"))
                    and isinstance(img.get("file_name"), str) and img["file_name"]):
                raise DatasetFileError(
                    f"{source.name}: image #{i} needs an 'id' (int or str) and a "
                    f"'file_name' (str) ({source})"
                )
            if img["id"] in files:
                raise DatasetFileError(
                    f"{source.name}: image id {img['id']!r} appears twice ({source})"
                )
            files[img["id"]] = img["file_name"]
        base = root.resolve()
        paths: list[str] = []
        labels: list[int] = []
        for i, ann in enumerate(data["annotations"]):
            if not (isinstance(ann, dict) and "image_id" in ann and "category_id" in ann):
                raise DatasetFileError(
                    f"{source.name}: annotation #{i} needs 'image_id' and "
                    f"'category_id' ({source})"
                )
            image_id, label = ann["image_id"], ann["category_id"]
            if not _is_id(image_id) or image_id not in files:
                raise DatasetFileError(
                    f"{source.name}: annotation #{i} refers to unknown image "
                    f"{str(image_id)[:64]!r} ({source})"
                )
            if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(names):
                raise DatasetFileError(
                    f"{source.name}: annotation #{i} has category_id {label!r}, "
                    f"not in 0..{len(names) - 1} ({source})"
                )
            paths.append(str(base / files[image_id]))
            labels.append(label)
        if not paths:
            raise DatasetFileError(f"{source.name}: no annotations ({source})")
        return paths, np.asarray(labels, dtype=np.int64), names

    cat_file = Path(categories) if categories is not None else None
    if cat_file is None:
        for where in (source.parent, root):
            if (where / "categories.json").is_file():
                cat_file = where / "categories.json"
                break
        else:
            raise FileNotFoundError(
                f"iNaturalist 2018 categories.json not found next to {source} or in {root}"
            )
    if not cat_file.is_file():
        raise FileNotFoundError(f"iNaturalist 2018 categories file not found: {cat_file}")
    names = _category_names(_read_json(cat_file), cat_file)
    paths, y = read_list_file(source, root, n_classes=len(names))
    return paths, y, names
