"""Places-LT (Liu et al., 2019) from its split list files."""

from __future__ import annotations

from ._base import Dataset, StrPath, _load_listed, get_class_names

__all__ = ["load_places_lt"]


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
        file itself (one named for another split is refused); default
        ``root``.

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
