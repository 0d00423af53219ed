"""CIFAR-10-LT and CIFAR-100-LT, from the python pickles or image folders.

The pickled images are written once as PNG files (the estimators read
files) under a cache folder; image folders are read as they are.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from .._io import atomic_write
from .._labels import class_names_problem

from ._base import Dataset, DatasetFileError, StrPath, _check_split, get_class_names
from ._cifar10 import long_tailed_counts
from ._image_folder import load_image_folder

__all__ = ["load_cifar10_lt", "load_cifar100_lt"]


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


def _latin1_encode(text, encoding="utf-8"):
    # How Python 3 pickles bytes at protocol 2; no other codec is looked up.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin-1")


def _numpy_globals() -> dict:
    """What pickles of numpy arrays, dtypes and scalars name, by the names
    this numpy writes and the names older ones wrote (``numpy.core``)."""
    found = {
        "ndarray": np.ndarray,
        "dtype": np.dtype,
        "_reconstruct": np.zeros(1).__reduce__()[0],
        "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],
        "scalar": np.int64(0).__reduce__()[0],
    }
    allowed = {("_codecs", "encode"): _latin1_encode}
    # Containers that protocols 0 to 3 build by calling their type.
    for builtin in (bytes, bytearray, set, frozenset):
        for module in ("builtins", "__builtin__"):
            allowed[(module, builtin.__name__)] = builtin
    for name, obj in found.items():
        for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                       "numpy.core.numeric", "numpy._core.numeric"):
            allowed[(module, name)] = obj
    return allowed


class _DataUnpickler(pickle.Unpickler):
    """Unpickles data only: numpy arrays and scalars, and builtin
    containers, numbers, str and bytes. Any other
    name in the file is refused before anything is called, so a crafted
    file cannot run code."""

    _allowed = _numpy_globals()

    def find_class(self, module, name):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not data")
        return obj


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = _DataUnpickler(f, encoding="bytes").load()
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
    raw_names = meta[spec["names"]]
    if not isinstance(raw_names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in raw_names):
        raise DatasetFileError(f"{meta_path.name}: {spec['names'].decode()} is not a list of names "
                               f"({meta_path})")
    try:
        names = [n.decode() if isinstance(n, bytes) else n for n in raw_names]
    except UnicodeDecodeError:
        raise DatasetFileError(f"{meta_path.name}: a class name is not UTF-8 ({meta_path})") from None
    if len(names) != n_classes:
        raise DatasetFileError(
            f"{meta_path.name}: {len(names)} class names, expected {n_classes} ({meta_path})"
        )
    # Each name becomes a folder of the PNG cache: it must be one plain,
    # distinct folder name there.
    for n in names:
        if (not n or n in (".", "..") or "/" in n or "\\" in n or "\0" in n
                or (os.altsep and os.altsep in n)):
            raise DatasetFileError(f"{meta_path.name}: class name {n!r} cannot name a folder "
                                   f"({meta_path})")
    problem = class_names_problem(names)
    if problem:
        raise DatasetFileError(f"{meta_path.name}: {problem} ({meta_path})")
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
    # Files are only ever written whole, so an existing one is complete:
    # written by an earlier call, it is reused.
    if dest.is_file():
        return
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    # atomic_write, not "<name>.<pid>.part": the threads of one process
    # (loaders sharing cache_dir) each write a temporary file of their
    # own, and a failed write leaves no temporary file behind.
    try:
        # Not synced to the disk: a cache made again at will (the syncs
        # made building it five times slower).
        atomic_write(dest, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"),
                     what="cached image", durable=False)
    except OSError:
        # Another loader may have written the same image meanwhile (on
        # Windows, replacing it fails while it is open for reading): the
        # same pixels, so its file is kept.
        if not dest.is_file():
            raise


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
        reused, so a second call writes nothing. Each file is written whole
        or not at all (a full disk or Ctrl-C leaves no partial or temporary
        file), and loaders sharing the folder, in threads or processes, do
        not disturb each other.

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
