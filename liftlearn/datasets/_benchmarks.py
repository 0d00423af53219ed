"""Deprecated location of the benchmark loaders; kept for one release.

The loaders moved to one private module per data source
(``_base``, ``_imagenet_lt``, ``_places_lt``, ``_inat2018``, ``_cifar_lt``,
``_image_folder``). Import them from :mod:`liftlearn.datasets`; this module
only re-exports them and will be removed in the next release.
"""

from __future__ import annotations

from ._base import (  # noqa: F401
    IMAGE_EXTENSIONS,
    Dataset,
    DatasetFileError,
    StrPath,
    _check_split,
    _find_list_file,
    _load_listed,
    get_class_names,
    read_list_file,
)
from ._cifar_lt import (  # noqa: F401
    _CIFAR,
    _default_cache_dir,
    _load_cifar_lt,
    _lt_select,
    _read_cifar_pickles,
    _unpickle,
    _write_png,
    load_cifar10_lt,
    load_cifar100_lt,
)
from ._image_folder import _list_images, load_image_folder  # noqa: F401
from ._imagenet_lt import load_imagenet_lt  # noqa: F401
from ._inat2018 import _category_names, _read_json, load_inat2018  # noqa: F401
from ._places_lt import load_places_lt  # noqa: F401

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
