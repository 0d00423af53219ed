"""Loaders for the standard long-tail benchmarks, from the files users download.

Every loader returns ``(paths, y, class_names)``: absolute image paths (as
``str``), integer labels (``numpy.int64``) and the name of each label, ready
for :meth:`liftlearn.LiftPlusClassifier.fit`.  The loaders read the list and
annotation files only; they do not open the images (the estimator checks the
paths before it trains).  Problems in the files raise :class:`DatasetFileError`
(a :class:`ValueError`) naming the file and, where there is one, the line.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ._cifar10 import long_tailed_counts

__all__ = [
    "DatasetFileError",
    "IMAGE_EXTENSIONS",
    "get_class_names",
    "load_cifar10_lt",
    "load_cifar100_lt",
    "load_image_folder",
    "load_imagenet_lt",
    "load_inat2018",
    "load_places_lt",
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
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
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
    if not paths:
        raise DatasetFileError(f"{path.name}: no '<path> <label>' lines ({path})")
    return paths, np.asarray(labels, dtype=np.int64)


def _find_list_file(where: Path, names: Sequence[str], what: str) -> Path:
    if where.is_file():
        return where
    for name in names:
        if (where / name).is_file():
            return where / name
    raise FileNotFoundError(
        f"{what}: none of {', '.join(names)} found in {where}"
    )


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
    candidates = [f"{prefix}_{split}.txt", f"{split}.txt"]
    list_file = _find_list_file(where, candidates, f"{what} {split} list")
    paths, y = read_list_file(list_file, root, n_classes=len(names))
    return paths, y, names


def load_imagenet_lt(
    root: StrPath, split: str = "train", *, list_dir: StrPath | None = None
) -> Dataset:
    """ImageNet-LT (Liu et al., 2019) from its split list files.

    Parameters
    ----------
    root : str or os.PathLike
        The ImageNet root: the list entries (``train/n01440764/...JPEG``,
        ``val/n01440764/...JPEG``) are relative to it.
    split : {"train", "val", "test"}, default="train"
        ``"test"`` is the 50,000 ImageNet validation images that the papers
        report on; ``"val"`` is 20 training images per class.
    list_dir : str or os.PathLike, optional
        Folder holding the split files, or the split file itself; default
        ``root``. Both the OLTR names (``ImageNet_LT_train.txt``) and the
        short names (``train.txt``, as in the LIFT+ repository) are found,
        the OLTR name first.

    Returns
    -------
    paths, y, class_names
        ``class_names`` are CLIP's 1000 curated ImageNet names, shipped with
        liftlearn (:func:`get_class_names`).
    """
    return _load_listed(
        root, split, list_dir, "ImageNet_LT", get_class_names("imagenet"), "ImageNet-LT"
    )


def load_places_lt(
    root: StrPath, split: str = "train", *, list_dir: StrPath | None = None
) -> Dataset:
    """Places-LT (Liu et al., 2019) from its split list files.

    Parameters
    ----------
    root : str or os.PathLike
        The Places365 root the list entries are relative to
        (``train/airfield/00004851.jpg``, ``val/airfield/...jpg``).
    split : {"train", "val", "test"}, default="train"
        ``"test"`` is 100 Places365 validation images per class.
    list_dir : str or os.PathLike, optional
        Folder with ``Places_LT_<split>.txt`` or ``<split>.txt``, or the
        file itself; default ``root``.

    Returns
    -------
    paths, y, class_names
        ``class_names`` are the 365 folder-style names (e.g.
        ``"apartment_building-outdoor"``) shipped with liftlearn; prompts
        turn ``_`` into spaces.
    """
    return _load_listed(
        root, split, list_dir, "Places_LT", get_class_names("places365"), "Places-LT"
    )


# ------------------------------------------------------------ iNaturalist 2018


def _read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetFileError(
            f"{path.name} line {exc.lineno}: invalid JSON ({exc.msg}) ({path})"
        ) from None


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
        The JSON annotation file or list file to read instead of searching
        ``root``.
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
    source = Path(annotations) if annotations is not None else None
    if source is None:
        for name in (f"{split}2018.json", f"iNaturalist18_{split}.txt", f"{split}.txt"):
            if (root / name).is_file():
                source = root / name
                break
        else:
            raise FileNotFoundError(
                f"iNaturalist 2018 {split} annotations: none of {split}2018.json, "
                f"iNaturalist18_{split}.txt, {split}.txt found in {root}"
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
        try:
            files = {img["id"]: img["file_name"] for img in data["images"]}
        except (KeyError, TypeError):
            raise DatasetFileError(
                f"{source.name}: every image needs 'id' and 'file_name' ({source})"
            ) from None
        base = root.resolve()
        paths: list[str] = []
        labels: list[int] = []
        for i, ann in enumerate(data["annotations"]):
            try:
                image_id, label = ann["image_id"], ann["category_id"]
            except (KeyError, TypeError):
                raise DatasetFileError(
                    f"{source.name}: annotation #{i} needs 'image_id' and "
                    f"'category_id' ({source})"
                ) from None
            if image_id not in files:
                raise DatasetFileError(
                    f"{source.name}: annotation #{i} refers to unknown image "
                    f"{image_id!r} ({source})"
                )
            if not isinstance(label, int) or not 0 <= label < len(names):
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


# ------------------------------------------------------------- image folders


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


# ------------------------------------------------------------------ CIFAR-LT

_CIFAR = {
    10: {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": b"labels",
        "names": b"label_names",
        "n_max": 5000,
    },
    100: {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": b"fine_labels",
        "names": b"fine_label_names",
        "n_max": 500,
    },
}


def _default_cache_dir() -> Path:
    env = os.environ.get("LIFTLEARN_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "liftlearn"


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure
        raise DatasetFileError(f"{path.name}: not a CIFAR python pickle ({exc}) ({path})") from None
    if not isinstance(data, dict):
        raise DatasetFileError(f"{path.name}: expected a pickled dict ({path})")
    # Also accept str keys (pickles re-saved under Python 3).
    return {(k.encode() if isinstance(k, str) else k): v for k, v in data.items()}


def _read_cifar_pickles(folder: Path, n_classes: int, split: str):
    spec = _CIFAR[n_classes]
    meta_path = folder / spec["meta"]
    meta = _unpickle(meta_path)
    if spec["names"] not in meta:
        raise DatasetFileError(
            f"{meta_path.name}: no {spec['names'].decode()} entry ({meta_path})"
        )
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec["names"]]]
    if len(names) != n_classes:
        raise DatasetFileError(
            f"{meta_path.name}: {len(names)} class names, expected {n_classes} ({meta_path})"
        )
    images, labels = [], []
    for name in spec[split]:
        path = folder / name
        batch = _unpickle(path)
        if b"data" not in batch or spec["labels"] not in batch:
            raise DatasetFileError(
                f"{path.name}: needs b'data' and {spec['labels']!r} entries ({path})"
            )
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        lab = np.asarray(batch[spec["labels"]], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DatasetFileError(
                f"{path.name}: data of shape {data.shape} with {len(lab)} labels; "
                f"expected N x 3072 uint8 with N labels ({path})"
            )
        if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
            raise DatasetFileError(
                f"{path.name}: labels outside 0..{n_classes - 1} ({path})"
            )
        images.append(data)
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels), names


def _lt_select(labels: np.ndarray, counts: Sequence[int], random_state: int | None) -> np.ndarray:
    """Indices of the long-tailed subset, as the usual CIFAR-LT recipe.

    ``numpy.random.RandomState(random_state)``, shared over the classes in
    label order, shuffles each class's indices and keeps the first
    ``counts[c]``: with seed 0 this is the subset of LDAM-DRW's
    ``IMBALANCECIFAR`` that LIFT / LIFT+ train on. Returned by label, then
    by index.
    """
    rs = np.random.RandomState(random_state)
    keep = []
    for c, count in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if count > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images, {count} requested")
        rs.shuffle(idx)
        keep.append(np.sort(idx[:count]))
    return np.concatenate(keep)


def _write_png(pixels: np.ndarray, dest: Path) -> None:
    if dest.is_file():
        return
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, dest)


def _load_cifar_lt(
    n_classes: int,
    root: StrPath,
    split: str,
    imbalance: float,
    n_max: int | None,
    random_state: int | None,
    cache_dir: StrPath | None,
) -> Dataset:
    _check_split(split, ("train", "test"))
    spec = _CIFAR[n_classes]
    root = Path(root)
    n_max = spec["n_max"] if n_max is None else n_max
    shipped = get_class_names(f"cifar{n_classes}")

    pickle_dir = root if (root / spec["meta"]).is_file() else root / spec["folder"]
    if (pickle_dir / spec["meta"]).is_file():
        pixels, labels, names = _read_cifar_pickles(pickle_dir, n_classes, split)
        if split == "train":
            counts = long_tailed_counts(n_max, n_classes, imbalance)
            idx = _lt_select(labels, counts, random_state)
            sub = f"train-ir{imbalance:g}-n{n_max}-seed{random_state}"
        else:
            idx = np.arange(len(labels))
            sub = "test"
        out = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
        out = (out / spec["folder"] / sub).resolve()
        paths = []
        for i in idx:
            dest = out / names[labels[i]] / f"{i:05d}.png"
            img = pixels[i].reshape(3, 32, 32).transpose(1, 2, 0)
            _write_png(np.ascontiguousarray(img), dest)
            paths.append(str(dest))
        return paths, labels[idx].astype(np.int64), names

    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-{n_classes} not found in {root}: expected the python pickles "
            f"({spec['folder']}/{spec['meta']}) or image folders ({split}/<class>/...)"
        )
    present = {p.name for p in folder.iterdir() if p.is_dir()}
    names = shipped if present <= set(shipped) else sorted(present)
    paths, y, names = load_image_folder(folder, class_names=names)
    if split == "train":
        counts = long_tailed_counts(n_max, len(names), imbalance)
        idx = _lt_select(y, counts, random_state)
        paths, y = [paths[i] for i in idx], y[idx]
    return paths, y, names


def load_cifar10_lt(
    root: StrPath,
    split: str = "train",
    *,
    imbalance: float = 100.0,
    n_max: int | None = None,
    random_state: int | None = 0,
    cache_dir: StrPath | None = None,
) -> Dataset:
    """CIFAR-10-LT: exponentially long-tailed training set, balanced test set.

    Parameters
    ----------
    root : str or os.PathLike
        Either the python version (a folder holding ``cifar-10-batches-py``
        or that folder itself: ``data_batch_1..5``, ``test_batch``,
        ``batches.meta``) or image folders ``root/<split>/<class>/*.png|jpg``.
    split : {"train", "test"}, default="train"
        ``"train"`` keeps ``long_tailed_counts(n_max, 10, imbalance)``
        images per class; ``"test"`` keeps every image.
    imbalance : float, default=100.0
        Imbalance ratio ``n_max / n_min`` (the papers use 100, 50, 10).
    n_max : int, optional
        Images of the head class; default 5000.
    random_state : int or None, default=0
        Seed of the subset: a ``numpy.random.RandomState`` shuffles each
        class's images in label order and the first ``n_i`` are kept (the
        LDAM-DRW / LIFT recipe with seed 0).
    cache_dir : str or os.PathLike, optional
        Where the pickled images are written as PNG files (the estimators
        read files), under ``cifar-10-batches-py/<subset>/<class>/NNNNN.png``
        with ``NNNNN`` the image's index in the split. Default
        ``$LIFTLEARN_CACHE`` or ``~/.cache/liftlearn``. Existing files are
        reused, so a second call writes nothing.

    Returns
    -------
    paths, y, class_names
    """
    return _load_cifar_lt(10, root, split, imbalance, n_max, random_state, cache_dir)


def load_cifar100_lt(
    root: StrPath,
    split: str = "train",
    *,
    imbalance: float = 100.0,
    n_max: int | None = None,
    random_state: int | None = 0,
    cache_dir: StrPath | None = None,
) -> Dataset:
    """CIFAR-100-LT: exponentially long-tailed training set, balanced test set.

    As :func:`load_cifar10_lt`, for ``cifar-100-python`` (``train``,
    ``test``, ``meta`` with the fine labels) or image folders; the head
    class has ``n_max=500`` images by default, so imbalance 100 gives
    10,847 training images (``n_i = int(500 * 100 ** (-i / 99))``).
    """
    return _load_cifar_lt(100, root, split, imbalance, n_max, random_state, cache_dir)
