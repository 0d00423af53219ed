"""ImageNet-LT (Liu et al., 2019) from its split list files."""

from __future__ import annotations

from ._base import Dataset, StrPath, _load_listed, get_class_names

__all__ = ["load_imagenet_lt"]


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
        the OLTR name first; a file given by a name of another split is
        refused.

    Returns
    -------
    paths, y, class_names
        ``class_names`` are CLIP's 1000 curated ImageNet names, shipped with
        liftlearn (:func:`get_class_names`).
    """
    return _load_listed(
        root, split, list_dir, "ImageNet_LT", get_class_names("imagenet"), "ImageNet-LT"
    )
