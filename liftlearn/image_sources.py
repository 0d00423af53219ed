"""One conversion layer from whatever holds the images to an image source.

Every estimator method that takes ``X`` turns it into an
:class:`ImageSource` with :func:`as_image_source`: image ``i`` is read with
``source.load(i)`` (a fully decoded RGB :class:`PIL.Image.Image`, or a
:class:`~liftlearn.exceptions.BadImageError` naming ``source.name(i)``),
checked with ``source.problems(mode)``, keyed for checkpoints with
``source.update_key(hash)`` and sliced with ``source[index]``. The datasets
of :mod:`liftlearn.data` read through it, so the image checks,
``on_bad_image``, the per-image crops keyed by index and checkpoint resume
work the same for every kind of input:

- paths (str or os.PathLike; a list, tuple, 1-D array or pandas Series):
  read from disk when needed, so memory stays flat for ImageNet-size sets;
- a sequence of PIL images;
- a uint8 array of shape (n, H, W, 3) or (n, H, W) (an array (H, W, 3) or
  (H, W, 4) is refused: one image, not H grey ones), or a list of uint8
  arrays of shape (H, W, 3) or (H, W), sizes free;
- a map-style ``torch.utils.data.Dataset`` whose items are a PIL image (or
  uint8 array) or an ``(image, label)`` pair; its labels are
  :meth:`ImageSource.labels`;
- a Hugging Face ``datasets`` column of the ``Image`` feature (decoded PIL
  images, or ``{"bytes", "path"}`` dicts with ``decode=False``), or a
  ``datasets.Dataset`` with one ``Image`` column (labels from its one
  ``ClassLabel`` column). ``datasets`` is imported only when given such an
  object.

In-memory images are checked by converting them: both ``check_images``
modes decode what is not decoded yet.
"""

from __future__ import annotations

import io
import os
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .data import (
    PathImages, _failure_reason, check_paths, decoded_rgb, find_bad_images, load_image, open_rgb,
)
from .exceptions import BadImageError

__all__ = ["ImageSource", "as_image_source"]


class ImageSource:
    """Images ``0 .. n-1``, each readable as an RGB PIL image.

    Subclasses implement ``__len__``, :meth:`load`, :meth:`name` and
    :meth:`_key_bytes`.
    """

    #: What :func:`as_image_source` found (for messages and the docs).
    kind = "images"

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        """Image ``i`` as a fully decoded RGB image.

        Raises
        ------
        BadImageError
            Naming :meth:`name` ``(i)`` when the image cannot be used.
        """
        raise NotImplementedError

    def name(self, i: int) -> str:
        """How messages and ``skipped_images_`` name image ``i``."""
        raise NotImplementedError

    def labels(self) -> Optional[list]:
        """Labels the input carries itself (a Dataset's), else None."""
        return None

    def class_names(self) -> Optional[list]:
        """Names of the classes ``0..C-1`` of :meth:`labels` where the input
        carries them (a torchvision dataset's ``classes``, a ``datasets``
        ``ClassLabel``'s ``names``), else None."""
        return None

    def problems(self, mode: str) -> list:
        """``(index, reason)`` of every unusable image, in index order.

        In-memory images are converted in both modes (there is no cheaper
        header to read).
        """
        out = []
        for i in range(len(self)):
            try:
                self.load(i)
            except BadImageError as exc:
                out.append((i, exc.reason))
        return out

    def update_key(self, h) -> None:
        """Feed the images' identity into ``h`` (a hashlib object), for the
        checkpoint key: changed contents start a new run."""
        for i in range(len(self)):
            h.update(self._key_bytes(i))

    def _key_bytes(self, i: int) -> bytes:
        raise NotImplementedError

    def __getitem__(self, index) -> "ImageSource":
        """The images at ``index`` (an integer array or a boolean mask), as
        a source whose messages still name the original positions."""
        return _Subset(self, _positions(index, len(self)))


def _positions(index, n: int) -> np.ndarray:
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (n,):
            raise IndexError(f"boolean mask of shape {index.shape} for {n} images")
        return np.flatnonzero(index)
    positions = np.asarray(index, dtype=np.int64).reshape(-1)
    if positions.size and not (-n <= positions.min() and positions.max() < n):
        raise IndexError(f"index out of range for {n} images")
    return positions % max(n, 1)  # negative positions count from the end


class _Subset(ImageSource):
    def __init__(self, base: ImageSource, positions: np.ndarray):
        self.base, self.positions = base, positions
        self.kind = base.kind

    def __len__(self):
        return len(self.positions)

    def load(self, i):
        return self.base.load(int(self.positions[i]))

    def name(self, i):
        return self.base.name(int(self.positions[i]))

    def labels(self):
        labels = self.base.labels()
        return None if labels is None else [labels[int(p)] for p in self.positions]

    def _key_bytes(self, i):
        return self.base._key_bytes(int(self.positions[i]))

    def __getitem__(self, index):
        return _Subset(self.base, self.positions[_positions(index, len(self))])


def _file_signature(path) -> tuple:
    """``(size, mtime in ns)`` of a file, ``(-1, -1)`` if it cannot be read."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _utf8(text: str) -> bytes:
    # surrogatepass: names that are not UTF-8 (os.listdir gives them as lone
    # surrogates) hash too.
    return text.encode("utf-8", "surrogatepass")


class PathSource(PathImages, ImageSource):
    """Image files, read when needed (memory stays flat)."""

    kind = "paths"

    def name(self, i):
        return str(self.paths[i])

    def problems(self, mode):
        return find_bad_images(self.paths, mode=mode)

    def signatures(self) -> list:
        """Each file's ``(size, mtime in ns)``."""
        return [_file_signature(p) for p in self.paths]

    def update_key(self, h):
        # The key of releases that took only paths: their checkpoints resume.
        for path, (size, mtime) in zip(self.paths, self.signatures()):
            h.update(_utf8(str(path)) + f"\0{size}\0{mtime}\0".encode())

    def __getitem__(self, index):
        return PathSource(self.paths[_positions(index, len(self))])


def _array_problem(arr: np.ndarray) -> Optional[str]:
    """Why a uint8 image array is not a usable image (its shape), or None."""
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        return (f"an array of shape {arr.shape} and dtype {arr.dtype}; images as arrays must "
                "be uint8 of shape (H, W, 3) (RGB, channels last) or (H, W) (grey)")
    return None


def _item_image(item, name: str) -> Image.Image:
    """One in-memory item (PIL image, uint8 array, ``{"bytes", "path"}``)
    as an RGB image."""
    if isinstance(item, Image.Image):
        if item.width < 1 or item.height < 1:
            raise BadImageError(name, f"empty image ({item.width}x{item.height})")
        try:
            return decoded_rgb(item)
        except Exception as exc:  # noqa: BLE001 - a lazily opened, broken file
            reason = _failure_reason(exc, name)
            if reason is None:
                raise
            raise BadImageError(name, reason) from None
    if isinstance(item, np.ndarray):
        problem = _array_problem(item)
        if problem is not None:
            raise ValueError(f"{name} is {problem}")
        if 0 in item.shape:
            raise BadImageError(name, f"empty image (array of shape {item.shape})")
        return Image.fromarray(np.ascontiguousarray(item), "RGB" if item.ndim == 3 else "L").convert("RGB")
    if isinstance(item, dict) and ("bytes" in item or "path" in item):
        if item.get("bytes") is not None:
            return open_rgb(io.BytesIO(item["bytes"]), name)
        if item.get("path"):
            return load_image(item["path"])
        raise BadImageError(name, "an image dict with neither bytes nor path")
    if isinstance(item, torch.Tensor):
        raise TypeError(
            f"{name} is a torch.Tensor; liftlearn applies its own transforms to PIL images or "
            "uint8 arrays: build the Dataset without a transform (or with one that returns "
            "a PIL image)"
        )
    raise TypeError(
        f"{name} must be a PIL image, a uint8 array or a {{'bytes', 'path'}} dict, "
        f"got {type(item).__name__}"
    )


def _item_key(item) -> bytes:
    if isinstance(item, Image.Image):
        return f"{item.mode}\0{item.size}\0".encode() + item.tobytes()
    if isinstance(item, np.ndarray):
        return f"{item.shape}\0".encode() + np.ascontiguousarray(item).tobytes()
    if isinstance(item, dict):
        if item.get("bytes") is not None:
            return b"bytes\0" + bytes(item["bytes"])
        path = str(item.get("path"))
        return _utf8(path) + repr(_file_signature(path)).encode()
    return repr(item).encode()


class ItemSource(ImageSource):
    """Images held in a container indexed ``0 .. n-1`` (a list of PIL
    images, a uint8 array, a ``datasets`` column, a torch Dataset's images).

    Parameters
    ----------
    items : sequence
        ``items[i]`` is image ``i``; read when needed (a lazy container
        stays lazy).
    label : str
        How messages name the input (``"X"``: image 3 is ``"X[3]"``).
    kind : str
    """

    def __init__(self, items, label: str = "X", kind: str = "images"):
        self.items, self.label, self.kind = items, label, kind

    def __len__(self):
        return len(self.items)

    def name(self, i):
        return f"{self.label}[{i}]"

    def load(self, i):
        name = self.name(i)
        try:
            # A decoding container (a datasets Image column, a torchvision
            # dataset's loader) reads the file here: its failure is the
            # image's, as the conversion's is.
            item = self.items[int(i)]
        except Exception as exc:  # noqa: BLE001
            reason = _failure_reason(exc, name)
            if reason is None:
                raise
            raise BadImageError(name, reason) from None
        return _item_image(item, name)

    def _key_bytes(self, i):
        return _item_key(self.items[int(i)])


class _DatasetImages:
    """The images of a map-style torch Dataset (the first element of an
    ``(image, label)`` item)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        return item[0] if isinstance(item, (tuple, list)) else item


class DatasetSource(ItemSource):
    """A map-style torch Dataset of PIL images or ``(image, label)`` pairs."""

    def __init__(self, dataset, label: str = "X"):
        super().__init__(_DatasetImages(dataset), label, kind="torch Dataset")
        self.dataset = dataset

    def labels(self):
        ds = self.dataset
        targets = getattr(ds, "targets", None)  # torchvision's ImageFolder, CIFAR10, ...
        if targets is not None and len(targets) == len(ds):
            return list(np.asarray(targets).tolist())
        labels, unread = [], []
        for i in range(len(ds)):
            try:
                item = ds[i]
            except Exception as exc:  # noqa: BLE001 - an image that fails to decode
                reason = _failure_reason(exc, self.name(i))
                if reason is None:
                    raise
                unread.append((i, reason))
                labels.append(None)
                continue
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                return None
            labels.append(item[1])
        if not unread:
            return labels
        known = [label for label in labels if label is not None]
        if not known:
            i, reason = unread[0]
            raise BadImageError(self.name(i), f"{reason} (and so its label)")
        # An item whose image fails to decode has no readable label. The
        # image check names it (or, with on_bad_image="skip", leaves it out)
        # before any label is used, so another item's label stands in.
        return [known[0] if label is None else label for label in labels]

    def class_names(self):
        # torchvision's datasets name their integer targets in ``classes``.
        return _names_of_int_labels(getattr(self.dataset, "classes", None), self.labels)


class _HFImages:
    """A ``datasets.Dataset``'s image column, read row by row (lazy)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[int(i)][self.column]


class HFDatasetSource(ItemSource):
    """A Hugging Face ``datasets.Dataset`` with one ``Image`` column."""

    def __init__(self, dataset, image_column: str, label_column: Optional[str], label: str = "X"):
        super().__init__(_HFImages(dataset, image_column), label, kind="datasets.Dataset")
        self.dataset, self.label_column = dataset, label_column

    def labels(self):
        if self.label_column is None:
            return None
        return list(self.dataset[self.label_column])

    def class_names(self):
        if self.label_column is None:
            return None
        names = getattr(self.dataset.features[self.label_column], "names", None)
        return _names_of_int_labels(names, self.labels)


def _names_of_int_labels(names, labels: Callable[[], Optional[list]]) -> Optional[list]:
    """``names`` as a list of str when they name the integer labels that
    ``labels()`` gives, all in ``0..len(names)-1``, else None (nothing to
    trust). ``labels`` is called only when there are names: a Dataset
    without ``targets`` is read item by item for them."""
    if not isinstance(names, (list, tuple)) or len(names) < 2:
        return None
    if not all(isinstance(n, str) for n in names):
        return None
    labels = labels()
    if labels is None:
        return None
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(names)
             for v in labels)
    return list(names) if ok else None


def _hf_source(X, name: str) -> Optional[ImageSource]:
    """A source for a Hugging Face ``datasets`` object, None for others.
    ``datasets`` is imported only when ``X`` comes from it."""
    if type(X).__module__.split(".")[0] != "datasets":
        return None
    import datasets

    if isinstance(X, getattr(datasets, "IterableDataset", ())):
        raise TypeError(f"{name} is a streaming datasets.IterableDataset; liftlearn needs to "
                        "index the images: load the split without streaming=True")
    if isinstance(X, datasets.Dataset):
        images = [k for k, f in X.features.items() if isinstance(f, datasets.Image)]
        if len(images) != 1:
            raise ValueError(
                f"{name} is a datasets.Dataset with {len(images)} Image columns "
                f"({images}); pass the column itself, e.g. {name}['image']"
            )
        classes = [k for k, f in X.features.items() if isinstance(f, datasets.ClassLabel)]
        if len(X) == 0:
            raise ValueError(f"{name} is empty; need at least one image")
        return HFDatasetSource(X, images[0], classes[0] if len(classes) == 1 else None, name)
    return None  # a Column: a sequence, read below


def as_image_source(X, *, name: str = "X", must_exist: bool = True) -> ImageSource:
    """``X`` as an :class:`ImageSource` (see the module docstring for the
    kinds of ``X``).

    Parameters
    ----------
    X : paths, PIL images, uint8 array(s), torch Dataset, datasets column, or ImageSource
    name : str, default="X"
        Used in messages.
    must_exist : bool, default=True
        For paths: check that every file exists (see
        :func:`~liftlearn.data.check_paths`).

    Raises
    ------
    ValueError
        For an array of another dtype or shape (the shape is named), an
        empty input, a DataFrame or a single path.
    TypeError
        For what is none of the kinds, or a list that mixes them.
    BadImageError
        With ``must_exist``, for a missing file.
    """
    if isinstance(X, ImageSource):
        return X
    source = _hf_source(X, name)
    if source is not None:
        return source
    if isinstance(X, torch.utils.data.IterableDataset):
        raise TypeError(f"{name} is an IterableDataset; liftlearn needs a map-style Dataset "
                        "(with __len__ and __getitem__)")
    if isinstance(X, torch.utils.data.Dataset):
        if not hasattr(X, "__len__") or len(X) == 0:
            raise ValueError(f"{name} must be a non-empty map-style Dataset with __len__")
        source = DatasetSource(X, name)
        _item_image(source.items[0], source.name(0))  # a transform's Tensor: named at once
        return source
    if isinstance(X, Image.Image):
        raise ValueError(f"{name} must be a list of images, got a single image; wrap it in a list: [img]")
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.dtype.kind in "US":  # paths as a string array
            return PathSource(check_paths(X, name=name, must_exist=must_exist))
        if X.dtype != np.uint8 or X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[3] != 3):
            raise ValueError(
                f"{name} is an array of shape {X.shape} and dtype {X.dtype}; liftlearn reads "
                "arrays as uint8 images of shape (n, H, W, 3) (RGB, channels last) or "
                "(n, H, W) (grey)"
            )
        if X.ndim == 3 and X.shape[2] in (3, 4):
            # Read as grey images, one RGB(A) image would become H images
            # 3 or 4 pixels wide, and predict would return H labels.
            how = (f"pass a batch of one, {name}[None], or a list: [image]" if X.shape[2] == 3
                   else "pass it as a PIL image in a list, [PIL.Image.fromarray(image)], which "
                        "liftlearn puts on white as it does RGBA files")
            raise ValueError(
                f"{name} is an array of shape {X.shape}: one {'RGB' if X.shape[2] == 3 else 'RGBA'} "
                f"image, not {X.shape[0]} grey images {X.shape[2]} pixels wide; {how}"
            )
        if len(X) == 0:
            raise ValueError(f"{name} is empty; need at least one image")
        return ItemSource(X, name, kind="array")
    entries = X
    if hasattr(X, "to_numpy") and not hasattr(X, "columns"):  # a pandas Series
        entries = X.to_numpy()
    if isinstance(entries, (list, tuple, np.ndarray)) or (
        type(X).__module__.split(".")[0] == "datasets"  # a datasets Column
    ):
        n = len(entries)
        first = entries[0] if n else None
        if n and not isinstance(first, (str, bytes, os.PathLike)):
            kinds = (Image.Image, np.ndarray, dict)
            for i in range(n) if isinstance(entries, (list, tuple, np.ndarray)) else ():
                if not isinstance(entries[i], kinds):
                    raise TypeError(
                        f"{name}[{i}] must be a PIL image, a uint8 array or a "
                        f"{{'bytes', 'path'}} dict like {name}[0], got {type(entries[i]).__name__}"
                    )
                if isinstance(entries[i], np.ndarray):
                    problem = _array_problem(entries[i])
                    if problem is not None:
                        raise ValueError(f"{name}[{i}] is {problem}")
            kind = "datasets column" if type(X).__module__.split(".")[0] == "datasets" else "images"
            return ItemSource(entries, name, kind=kind)
    return PathSource(check_paths(X, name=name, must_exist=must_exist))


def carried_class_names(source: ImageSource, y) -> Optional[list]:
    """The class names ``source`` carries for its own labels, used when
    ``y`` is None (the labels then come from ``source``), else None."""
    return source.class_names() if y is None else None


def image_labels(source: ImageSource, y):
    """``y``, or the labels ``source`` carries when ``y`` is None."""
    if y is not None:
        return y
    labels = source.labels()
    return None if labels is None else np.asarray(labels, dtype=object if _mixed(labels) else None)


def _mixed(labels: Sequence) -> bool:
    return len({type(v) for v in labels}) > 1
