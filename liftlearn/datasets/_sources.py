"""The data sources by name: one table for the command line and the scripts.

:data:`SOURCES` maps each name of ``liftlearn fit --data NAME`` (and of
``benchmarks/reproduce.py --datasets``) to a :class:`DataSource`: its title,
the loader, the options it uses, how split names map and the epochs of the
LIFT+ recipe where they differ. :func:`load_source` loads one split::

    paths, y, class_names = load_source("imagenet-lt", "test", root="/data/imagenet",
                                        list_dir="/data/ImageNet_LT")
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ._base import Dataset
from ._cifar_lt import load_cifar10_lt, load_cifar100_lt
from ._image_folder import load_image_folder
from ._imagenet_lt import load_imagenet_lt
from ._inat2018 import load_inat2018
from ._places_lt import load_places_lt
from ._sample import load_cifar10_lt_sample

__all__ = ["DataSource", "SOURCES", "load_source"]

#: The options a source may use; :func:`load_source` accepts no others.
OPTIONS = ("root", "list_dir", "imbalance", "n_max", "cache_dir", "seed")


@dataclass(frozen=True)
class DataSource:
    """How to load one data source by name.

    Attributes
    ----------
    name : str
        The name on the command line, e.g. ``"imagenet-lt"``.
    title : str
        The name in tables and reports, e.g. ``"ImageNet-LT"``.
    loader : callable
        ``loader(split, **options)`` returning ``(paths, y, class_names)``.
        Its parameters among ``root``, ``list_dir``, ``imbalance``,
        ``n_max``, ``cache_dir`` and ``seed`` are the source's
        :attr:`options`; ``root`` without a default makes it required.
    splits : mapping of str to str
        Split names the source reads under another name, e.g.
        ``{"val": "test"}`` for CIFAR (which has no validation set); other
        names are passed on unchanged (and the loader checks them).
    benchmark : bool
        One of the published long-tail benchmarks that
        ``benchmarks/reproduce.py`` runs.
    epochs : int or None
        Training epochs of the LIFT+ recipe where they differ from
        ``LiftPlusClassifier``'s default (iNaturalist 2018: 15); else None.
    """

    name: str
    title: str
    loader: Callable[..., Dataset] = field(repr=False)
    splits: Mapping[str, str] = field(default_factory=dict, hash=False)
    benchmark: bool = False
    epochs: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", MappingProxyType(dict(self.splits)))

    @property
    def options(self) -> tuple[str, ...]:
        """The options of :data:`OPTIONS` that this source uses."""
        params = inspect.signature(self.loader).parameters
        return tuple(name for name in OPTIONS if name in params)

    @property
    def needs_root(self) -> bool:
        """Whether the source needs ``root`` (all but the shipped sample)."""
        param = inspect.signature(self.loader).parameters.get("root")
        return param is not None and param.default is inspect.Parameter.empty

    def split_name(self, split: str) -> str:
        """The split the loader reads for ``split`` (e.g. CIFAR: val -> test)."""
        return self.splits.get(split, split)

    def load(self, split: str = "train", **options: Any) -> Dataset:
        """Load one split; see :func:`load_source`."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown data source option(s) {', '.join(unknown)}; "
                f"the options are {', '.join(OPTIONS)}"
            )
        if self.needs_root and options.get("root") is None:
            raise ValueError(f"data source {self.name!r} needs root")
        used = {key: value for key, value in options.items() if key in self.options}
        return self.loader(self.split_name(split), **used)


# Each loader below takes (split, **its options) and calls the public loader.


def _sample(split: str) -> Dataset:
    return load_cifar10_lt_sample(split)


_SPLIT_FOLDERS = ("train", "val", "test")


def _image_folder(split: str, root) -> Dataset:
    # root/<split>/<class>/<image> when root/<split> exists, else
    # root/<class>/<image>; but a root with split folders and not this one
    # lacks the split (its split folders are no classes).
    base = Path(root)
    if (base / split).is_dir():
        return load_image_folder(base / split)
    present = [s for s in _SPLIT_FOLDERS if (base / s).is_dir()]
    if present:
        raise FileNotFoundError(
            f"image folder {base / split} not found: {base} has the split folder(s) "
            f"{', '.join(present)} but no {split!r}"
        )
    return load_image_folder(base)


def _imagenet_lt(split: str, root, list_dir=None) -> Dataset:
    return load_imagenet_lt(root, split, list_dir=list_dir)


def _places_lt(split: str, root, list_dir=None) -> Dataset:
    return load_places_lt(root, split, list_dir=list_dir)


def _inat2018(split: str, root, list_dir=None) -> Dataset:
    return load_inat2018(root, split, annotations=list_dir)


def _cifar_lt(
    loader, split: str, root, imbalance=100.0, n_max=None, cache_dir=None, seed=0
) -> Dataset:
    return loader(root, split, imbalance=imbalance, n_max=n_max, random_state=seed,
                  cache_dir=cache_dir)


_NO_VAL = {"val": "test"}  # CIFAR and the sample: no validation set

SOURCES: Mapping[str, DataSource] = MappingProxyType({
    s.name: s
    for s in (
        DataSource("cifar10-lt-sample", "CIFAR-10-LT sample", _sample, _NO_VAL),
        DataSource("imagefolder", "Image folder", _image_folder),
        DataSource("imagenet-lt", "ImageNet-LT", _imagenet_lt, benchmark=True),
        DataSource("places-lt", "Places-LT", _places_lt, benchmark=True),
        # iNaturalist 2018 is evaluated on its validation set.
        DataSource("inat2018", "iNaturalist 2018", _inat2018, {"test": "val"},
                   benchmark=True, epochs=15),
        DataSource("cifar10-lt", "CIFAR-10-LT",
                   functools.partial(_cifar_lt, load_cifar10_lt), _NO_VAL, benchmark=True),
        DataSource("cifar100-lt", "CIFAR-100-LT",
                   functools.partial(_cifar_lt, load_cifar100_lt), _NO_VAL, benchmark=True),
    )
})
"""Data sources by name, in the order the ``liftlearn`` command lists them."""


def load_source(name: str, split: str = "train", **options: Any) -> Dataset:
    """Load ``(paths, y, class_names)`` of one split of a data source by name.

    Parameters
    ----------
    name : str
        A key of :data:`SOURCES`: ``"cifar10-lt-sample"``, ``"imagefolder"``,
        ``"imagenet-lt"``, ``"places-lt"``, ``"inat2018"``, ``"cifar10-lt"``
        or ``"cifar100-lt"``.
    split : str, default="train"
        ``"train"``, ``"val"`` or ``"test"``. CIFAR-LT and the sample read
        ``"val"`` as ``"test"``, iNaturalist 2018 reads ``"test"`` as
        ``"val"``; ``imagefolder`` reads ``root/<split>`` when it exists,
        else ``root`` itself if it has no ``train``, ``val`` or ``test``
        folder (else FileNotFoundError: the split is missing).
    **options
        Among ``root`` (required by all sources but the sample),
        ``list_dir`` (ImageNet-LT, Places-LT: the split files' folder;
        iNaturalist 2018: the JSON or list file), and for CIFAR-LT
        ``imbalance``, ``n_max``, ``cache_dir`` and ``seed`` (the subset's
        ``random_state``; 0 is the papers' subset). Options a source does
        not use are ignored, so one set of options (a command line's) fits
        every source.

    Returns
    -------
    paths, y, class_names
        As the source's loader in :mod:`liftlearn.datasets` returns them.

    Raises
    ------
    ValueError
        For an unknown name, or a missing ``root``.
    TypeError
        For an option none of the sources knows.

    Examples
    --------
    >>> paths, y, class_names = load_source("cifar10-lt-sample", "val")  # the test split
    >>> len(paths)
    1000
    """
    try:
        source = SOURCES[name]
    except KeyError:
        raise ValueError(
            f"unknown data source {name!r}; choose one of {', '.join(SOURCES)}"
        ) from None
    return source.load(split, **options)
