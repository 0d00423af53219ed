"""Datasets: a small real CIFAR-10-LT sample and the tools that build it.

:func:`load_cifar10_lt_sample` needs no download: it returns paths to about
2,200 real CIFAR-10 JPEGs (a few MB) shipped inside the package, long-tailed
for training (imbalance 100, 500 images in the head class, 5 in the tail)
and balanced for testing (100 per class).  :func:`extract_cifar10_lt`
builds larger subsets from the full CIFAR-10 JPEG archives.

The benchmark loaders read the files users download and return
``(paths, y, class_names)``: :func:`load_imagenet_lt`,
:func:`load_places_lt`, :func:`load_inat2018`, :func:`load_cifar10_lt`,
:func:`load_cifar100_lt` and :func:`load_image_folder` (any
``root/<class>/<image>`` tree). :func:`get_class_names` gives the class-name
lists shipped with liftlearn (CLIP's ImageNet names, Places365, CIFAR).

:data:`SOURCES` names every data source (the ``liftlearn`` command's
``--data`` choices) as a :class:`DataSource`; :func:`load_source` loads one
split by name.
"""

from __future__ import annotations

from ._base import IMAGE_EXTENSIONS, DatasetFileError, get_class_names, read_list_file
from ._cifar10 import extract_cifar10_lt, long_tailed_counts
from ._cifar_lt import load_cifar10_lt, load_cifar100_lt
from ._image_folder import load_image_folder
from ._imagenet_lt import load_imagenet_lt
from ._inat2018 import load_inat2018
from ._places_lt import load_places_lt
from ._sample import load_cifar10_lt_sample
from ._sources import SOURCES, DataSource, load_source
from ._ssl import make_long_tailed_ssl_split

__all__ = [
    "DataSource",
    "DatasetFileError",
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "extract_cifar10_lt",
    "get_class_names",
    "load_cifar10_lt",
    "load_cifar100_lt",
    "load_cifar10_lt_sample",
    "load_image_folder",
    "load_imagenet_lt",
    "load_inat2018",
    "load_places_lt",
    "load_source",
    "long_tailed_counts",
    "make_long_tailed_ssl_split",
    "read_list_file",
]
