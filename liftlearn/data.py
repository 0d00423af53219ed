"""Reading images from disk and wrapping them as PyTorch datasets.

Estimators take image paths or images in memory (converted by
:mod:`liftlearn.image_sources`); the datasets here read image ``i`` as
``images.load(i)`` from such a source (plain paths are wrapped in
:class:`PathImages`).  For paths, :func:`check_paths` validates them cheaply
up front (existence only, no decoding) so a typo fails at ``fit`` time rather
than in a DataLoader worker halfway through an epoch; :func:`load_image`
decodes one file into an RGB :class:`PIL.Image.Image` and turns every way
that can go wrong into a :class:`~liftlearn.exceptions.BadImageError` that
names the file.

The datasets are deliberately stateless: the training crop of image ``i``
is drawn from ``numpy.random.default_rng([seed, epoch, i])``, with the epoch
given to the constructor, so results do not depend on the number of
DataLoader workers, on which worker loads which image, or on worker
persistence across epochs.
"""

from __future__ import annotations

import operator
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ._validation import check_int
from .exceptions import BadImageError

__all__ = [
    "ImageDataset",
    "PathImages",
    "SSLDataset",
    "TrainDataset",
    "check_paths",
    "find_bad_images",
    "load_image",
]

PathLike = Union[str, "os.PathLike[str]"]

# Modes whose pixels carry an alpha channel PIL can convert to RGBA.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
# High-bit-depth single-channel modes that PIL's convert("RGB") would clip
# rather than rescale (a 16-bit value of 1000 would become 255).
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def _wide_to_8bit(img: Image.Image) -> Image.Image:
    """Rescale a 16-bit, 32-bit integer or float image to 8-bit ``L``.

    16-bit modes use their full range (``v / 257``).  Mode ``I`` is what PIL
    uses for 16-bit PNGs on some versions, so values within ``[0, 65535]``
    are read as 16-bit too; anything else is stretched from its min to max.
    Mode ``F`` in ``[0, 1]`` is read as a unit-range intensity, otherwise it
    is stretched as well.
    """
    arr = np.asarray(img).astype(np.float64)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = arr * 255.0
    elif img.mode != "F" and lo >= 0.0 and hi <= 65535.0:
        scaled = arr / 257.0
    elif hi > lo:
        scaled = (arr - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(arr)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency onto white."""
    if img.mode in _WIDE_MODES:
        return _wide_to_8bit(img).convert("RGB")
    # Palette and RGB/L images can mark a colour as transparent through
    # info["transparency"]; convert("RGBA") honours it.
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        # PIL converts premultiplied La to LA only, not on to RGBA.
        rgba = (img.convert("LA") if img.mode == "La" else img).convert("RGBA")
        # White rather than black: transparent regions of icons and product
        # photos are usually meant to be seen on a light page.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def decoded_rgb(src: Image.Image) -> Image.Image:
    """``src`` fully decoded, rotated per its EXIF orientation and in RGB
    (what :func:`load_image` does after opening; in-memory images share it).

    An upright RGB image is returned as is, not copied: a full-image copy per
    image was a measurable share of the data pipeline, and nothing in
    liftlearn modifies an image in place. Pixels that PIL mapped from the
    file (raw formats, read-only) are copied, so the result never depends on
    the file once it is closed.
    """
    src.load()
    rgb = _to_rgb(_exif_upright(src))
    return rgb.copy() if rgb is src and src.readonly else rgb


def load_image(path: PathLike) -> Image.Image:
    """Read an image file as a fully decoded RGB image.

    The file is decoded completely (so truncated files fail here, not later
    in a transform), rotated according to its EXIF orientation tag and
    converted to RGB: transparency is composited onto white, 16-bit and
    float images are rescaled to 8 bits, CMYK and greyscale are converted.
    The file is closed before returning.

    Parameters
    ----------
    path : str or os.PathLike
        Image file in any format PIL can read.

    Returns
    -------
    PIL.Image.Image
        Image in mode ``"RGB"``, independent of the file.

    Raises
    ------
    BadImageError
        If the file is missing, is a directory, is not an image, or is
        truncated or corrupt.  ``err.path`` names the file and ``err.reason``
        says what is wrong.
    """
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise BadImageError(path, f"not a path but {type(path).__name__}") from None
    return open_rgb(fspath, fspath)


def open_rgb(file, name: str) -> Image.Image:
    """:func:`decoded_rgb` of an image file, a path or a binary file object
    (encoded bytes in memory); every failure that is about the file is a
    :class:`BadImageError` naming ``name``."""
    try:
        with Image.open(file) as src:
            rgb = decoded_rgb(src)
        # Leaving the block closed the file; the decoded pixels stay in
        # memory (see decoded_rgb for pixels PIL maps from the file).
        return rgb
    except Exception as exc:  # noqa: BLE001 - classified, or re-raised below
        reason = _failure_reason(exc, name)
        if reason is None:
            raise
    raise BadImageError(name, reason)


#: EXIF orientations that need a transpose (1 is upright).
_EXIF_ORIENTATION = 0x0112
_ROTATED = frozenset(range(2, 9))


def _exif_upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says, or ``img`` itself when
    upright (``ImageOps.exif_transpose`` would return a copy)."""
    try:
        if img.getexif().get(_EXIF_ORIENTATION, 1) not in _ROTATED:
            return img
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        # A malformed EXIF block should not cost an otherwise good image:
        # keep it unrotated.
        return img


def _failure_reason(exc: BaseException, fspath: str) -> str | None:
    """The BadImageError wording for an exception raised while reading an
    image, or None for an exception that is not about the file (a bug)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        # Windows reports opening a directory as a permission error.
        return "is a directory" if os.path.isdir(fspath) else "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can read"
    # The warning only escapes where warnings are turned into errors.
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large to decode safely: {exc}"
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError, MemoryError)):
        # PIL signals truncated data and broken headers with OSError,
        # SyntaxError or ValueError depending on the plugin.
        return f"truncated or corrupt: {exc}"
    return None


def _stat_problem(path: str) -> str | None:
    """Why ``path`` is not a readable regular file, or None if it is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a parent is not a directory)"
    except PermissionError:
        return "permission denied"
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL byte
        return f"cannot access: {exc}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def check_paths(
    X: Sequence[PathLike], *, name: str = "X", must_exist: bool = True
) -> np.ndarray:
    """Validate a sequence of image paths without decoding the images.

    Parameters
    ----------
    X : list, tuple, numpy.ndarray or pandas.Series of str or os.PathLike
        One path per sample, 1-D and non-empty.
    name : str, default="X"
        Name of the argument, used in error messages.
    must_exist : bool, default=True
        Check that every path is an existing regular file.  False checks
        only the shape and types, for callers that deal with bad paths
        themselves (see :func:`find_bad_images`).

    Returns
    -------
    numpy.ndarray
        1-D array of dtype object holding the paths as ``str``, in order.

    Raises
    ------
    ValueError
        If ``X`` is a single path, is empty or is not 1-D.
    TypeError
        If ``X`` is not a sequence or an entry is not a path.
    BadImageError
        With ``must_exist``, for the first path that does not exist or is
        not a regular file; the reason also counts the other bad paths.
    """
    if isinstance(X, (str, bytes, os.PathLike)):
        raise ValueError(
            f"{name} must be a list of image paths, got a single path {X!r}; "
            f"wrap it in a list: [{X!r}]"
        )
    if hasattr(X, "columns"):  # a DataFrame: which column is meant is unclear
        raise ValueError(
            f"{name} must be 1-D; got a DataFrame, pass one column such as df['path']"
        )
    if hasattr(X, "to_numpy"):  # pandas Series / Index, without importing pandas
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.ndim != 1:
            raise ValueError(
                f"{name} must be a 1-D sequence of paths, "
                f"got an array of shape {X.shape}"
            )
        entries = X.tolist()
    elif isinstance(X, (list, tuple)):
        entries = list(X)
    else:
        raise TypeError(
            f"{name} must be a list, tuple, 1-D array or Series of image paths, "
            f"got {type(X).__name__}"
        )
    if not entries:
        raise ValueError(f"{name} is empty; need at least one image path")

    paths = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, (str, os.PathLike)):
            raise TypeError(
                f"{name}[{i}] must be a str or os.PathLike path, "
                f"got {type(entry).__name__}: {entry!r}"
            )
        paths.append(os.fspath(entry))

    first_bad: tuple[str, str] | None = None
    n_bad = 0
    for path in paths if must_exist else ():
        problem = _stat_problem(path)
        if problem is not None:
            n_bad += 1
            if first_bad is None:
                first_bad = (path, problem)
    if first_bad is not None:
        path, problem = first_bad
        if n_bad > 1:
            problem += (
                f" (and {n_bad - 1} other path(s) in {name} are missing or "
                f"not files)"
            )
        raise BadImageError(path, problem)

    out = np.empty(len(paths), dtype=object)
    out[:] = paths
    return out


FIND_BAD_MODES = ("header", "decode")


def _header_problem(fspath: str) -> str | None:
    """Why ``fspath`` fails the cheap header check, or None if it passes."""
    problem = _stat_problem(fspath)  # also keeps FIFOs from blocking open()
    if problem is not None:
        return problem
    try:
        img = Image.open(fspath)
    except Exception as exc:  # noqa: BLE001 - load_image fails the same way
        reason = _failure_reason(exc, fspath)
        if reason is None:
            reason = f"truncated or corrupt: {type(exc).__name__}: {exc}"
        return reason
    try:
        with img:
            width, height = img.size
            if width < 1 or height < 1:
                raise ValueError(f"image size is {width}x{height}")
            if img.format == "JPEG" and not _ends_jpeg(img.fp):
                # verify() does not read a JPEG's data, so a download cut
                # short would pass; a file that does not end in the
                # end-of-image marker is decoded to decide (one with data
                # appended after the image, as motion photos have, loads).
                return _decode_problem(fspath)
            img.verify()
    except Exception:  # noqa: BLE001
        # verify() is stricter than decoding in places (a PNG cut after its
        # pixel data fails verify but loads), and the header check must
        # never reject what load_image accepts: let a full decode decide.
        # This costs time only for the rare suspicious file.
        return _decode_problem(fspath)
    return None


def _ends_jpeg(fp) -> bool:
    """Whether an open JPEG file ends in the end-of-image marker (FF D9)."""
    position = fp.tell()
    try:
        fp.seek(-2, os.SEEK_END)
        return fp.read(2) == b"\xff\xd9"
    finally:
        fp.seek(position)


def _decode_problem(fspath: str) -> str | None:
    """Why :func:`load_image` rejects ``fspath``, or None if it loads."""
    problem = _stat_problem(fspath)
    if problem is not None:
        return problem
    try:
        load_image(fspath)
    except BadImageError as exc:
        return exc.reason
    return None


def find_bad_images(
    paths: Sequence[PathLike], *, mode: str = "header", n_jobs: int | None = None
) -> list[tuple[int, str]]:
    """List the image paths that cannot be used, without raising.

    Meant as a fast validation pass over a whole training set before any
    training time is spent, or to clean a folder of images.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
        Image files (a list, tuple, 1-D array or Series).  An entry that is
        not a path at all is reported as bad rather than raised.
    mode : {"header", "decode"}, default="header"
        ``"header"`` opens each file and checks what PIL can check without
        decoding pixels: the path exists and is a regular file, the format
        is recognised, the header parses, the size is non-zero and not a
        decompression bomb, and ``Image.verify()`` passes (for PNG this
        walks every chunk and its checksum, so truncated PNGs are caught);
        a JPEG must end in its end-of-image marker (a download cut short
        does not).  A file failing either is then fully decoded, so this
        mode never flags a file that :func:`load_image` accepts.  It does
        **not** decode pixel data otherwise, so a JPEG corrupt inside, or a
        WebP, TIFF, BMP or GIF whose body is truncated or corrupt after an
        intact header, passes (and stops a fit that reaches it with a
        :class:`BadImageError` naming it).
        ``"decode"`` runs :func:`load_image` on every file and therefore
        flags exactly the files it would reject, at the cost of a full
        decode (a few times slower).
    n_jobs : int or None, default=None
        Threads to use.  ``None`` means ``min(8, os.cpu_count())``, ``-1``
        all CPUs, ``1`` no thread pool.  PIL releases the GIL while reading
        and decoding, so threads help.

    Returns
    -------
    list of (int, str)
        ``(index, reason)`` for every unusable path, in index order; empty
        when all are fine.  ``reason`` uses the same wording as
        :class:`~liftlearn.exceptions.BadImageError` (``"no such file"``,
        ``"is a directory"``, ``"not an image PIL can read"``,
        ``"truncated or corrupt: ..."``, ``"too large to decode safely:
        ..."``, ...).

    Raises
    ------
    ValueError
        If ``paths`` is a single path or is not 1-D, or ``mode`` or
        ``n_jobs`` is invalid.
    TypeError
        If ``paths`` is not a sequence.

    See Also
    --------
    check_paths : existence check only, raising on the first bad path.
    """
    if mode not in FIND_BAD_MODES:
        raise ValueError(f"mode={mode!r}; choose one of {list(FIND_BAD_MODES)}")
    if n_jobs is None:
        n_jobs = min(8, os.cpu_count() or 1)
    elif isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or not (
        n_jobs >= 1 or n_jobs == -1
    ):
        raise ValueError(f"n_jobs={n_jobs!r} must be None, -1 or an integer >= 1")
    elif n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    n_jobs = int(n_jobs)

    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ValueError(
            f"paths must be a list of image paths, got a single path {paths!r}; "
            f"wrap it in a list: [{paths!r}]"
        )
    if hasattr(paths, "to_numpy"):  # pandas Series / Index
        paths = paths.to_numpy()
    if isinstance(paths, np.ndarray):
        if paths.ndim != 1:
            raise ValueError(f"paths must be 1-D, got an array of shape {paths.shape}")
        entries = paths.tolist()
    elif isinstance(paths, (list, tuple)):
        entries = list(paths)
    else:
        raise TypeError(
            "paths must be a list, tuple, 1-D array or Series of image paths, "
            f"got {type(paths).__name__}"
        )

    check = _header_problem if mode == "header" else _decode_problem

    def problem_of(entry) -> str | None:
        if not isinstance(entry, (str, os.PathLike)):
            return f"not a path but {type(entry).__name__}"
        return check(os.fspath(entry))

    if n_jobs == 1 or len(entries) <= 1:
        problems = [problem_of(e) for e in entries]
    else:
        # A few chunks per thread: one task per file would cost more in
        # scheduling than a header check of a small file takes.
        n_chunks = min(len(entries), 4 * n_jobs)
        bounds = np.linspace(0, len(entries), n_chunks + 1).astype(int)
        chunks = [entries[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        stop = threading.Event()

        def check_chunk(chunk):
            out = []
            for entry in chunk:
                if stop.is_set():  # the caller is gone (Ctrl-C): stop early
                    break
                out.append(problem_of(entry))
            return out

        pool = ThreadPoolExecutor(max_workers=min(n_jobs, n_chunks))
        try:
            # map keeps input order.
            problems = [p for chunk in pool.map(check_chunk, chunks) for p in chunk]
        except BaseException:
            # Ctrl-C (or an error): cancel the chunks not started and tell
            # the running ones to stop after their current file, without
            # waiting for them (a `with` block would wait for every chunk).
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return [(i, p) for i, p in enumerate(problems) if p is not None]


class PathImages:
    """Image files read by :func:`load_image`, as the datasets below read
    images: ``len(images)`` and ``images.load(i)``.

    The estimators hand the datasets an image source of
    :mod:`liftlearn.image_sources` (this class's subclass for paths, or one
    for images in memory), which follows the same two-method protocol.
    """

    def __init__(self, paths: Sequence[PathLike]):
        # Plain str in an object array pickles small and fast into worker
        # processes.
        paths = [os.fspath(p) for p in paths]
        self.paths = np.empty(len(paths), dtype=object)
        self.paths[:] = paths

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        return load_image(self.paths[i])


def _as_source(images):
    """An image source as is; anything else read as paths."""
    return images if callable(getattr(images, "load", None)) else PathImages(images)


class TrainDataset(torch.utils.data.Dataset):
    """Labelled images with a reproducible random training transform.

    Parameters
    ----------
    paths : sequence of str or os.PathLike, or ImageSource
        Image files, or an image source (anything with ``len`` and
        ``load(i)``, as :func:`liftlearn.image_sources.as_image_source`
        returns for every input the estimators take).
    targets : array-like of int
        Encoded class label of each image, same length as ``paths``.
    transform : callable
        ``transform(img, rng) -> Tensor``, for example
        :func:`liftlearn.transforms.train_transform`.
    seed : int
        Non-negative base seed of the run.
    epoch : int
        Zero-based epoch; build a new dataset for each epoch.

    Notes
    -----
    Item ``i`` receives ``numpy.random.default_rng([seed, epoch, i])``, so
    the same ``(seed, epoch, i)`` always yields the same tensor whatever the
    DataLoader's worker count or sampling order.
    """

    def __init__(
        self,
        paths: Sequence[PathLike],
        targets: Sequence[int] | np.ndarray,
        transform: Callable[[Image.Image, np.random.Generator], torch.Tensor],
        seed: int,
        epoch: int,
    ) -> None:
        self.paths = _as_source(paths)
        self.targets = np.asarray(targets).reshape(-1)
        if len(self.targets) != len(self.paths):
            raise ValueError(
                f"paths and targets differ in length: {len(self.paths)} != "
                f"{len(self.targets)}"
            )
        self.transform = transform
        # SeedSequence needs non-negative integers; check here rather than
        # in a worker process at the first item.
        self.seed = check_int(seed, "seed", 0)
        self.epoch = check_int(epoch, "epoch", 0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = _normalize_index(i, len(self))
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return self.transform(self.paths.load(i), rng), int(self.targets[i])


class ImageDataset(torch.utils.data.Dataset):
    """Unlabelled images with a deterministic transform, for prediction.

    Parameters
    ----------
    paths : sequence of str or os.PathLike, or ImageSource
        As in :class:`TrainDataset`.
    transform : callable
        ``transform(img) -> Tensor``, for example
        :func:`liftlearn.transforms.eval_transform`.
    """

    def __init__(
        self,
        paths: Sequence[PathLike],
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        self.paths = _as_source(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.paths.load(_normalize_index(i, len(self))))


def _normalize_index(i, n: int) -> int:
    # Negative indices must map to the same random stream as their positive
    # twin, so resolve them before seeding.
    i = operator.index(i)
    if not -n <= i < n:
        raise IndexError(f"index {i} out of range for dataset of length {n}")
    return i + n if i < 0 else i


class SSLDataset(torch.utils.data.Dataset):
    """Images with a weak view and, for unlabeled ones, a strong view.

    Item ``i`` draws all its randomness from
    ``numpy.random.default_rng([seed, epoch, index[i]])``, where ``index``
    is the image's position in the ``X`` given to ``fit``: as in
    :class:`TrainDataset`, results do not depend on workers or sampling
    order. An epoch that draws an image more than once asks for item
    ``i + k * len(self)``, the ``k``-th redraw of image ``i``, whose
    randomness is ``default_rng([seed, epoch, index[i], k])``: each draw
    gets fresh views, as FixMatch's sampling with fresh augmentations does.
    Yields ``(weak, target, index)`` without a strong transform and
    ``(weak, strong, index)`` with one.

    Parameters
    ----------
    paths : sequence of path-like
    targets : array-like of int
        Encoded labels (-1 for unlabeled images).
    index : array-like of int
        Each image's position in ``X``.
    weak : callable
        ``(img, rng) -> Tensor``: the labeled images' training view, or the
        unlabeled images' weak view.
    strong : callable or None
        ``(img, rng) -> Tensor``: the unlabeled images' strong view.
    seed, epoch : int
    """

    def __init__(self, paths: Sequence[PathLike], targets, index, weak: Callable,
                 strong: Callable | None, seed: int, epoch: int):
        self.paths = _as_source(paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.index = np.asarray(index, dtype=np.int64)
        self.weak, self.strong = weak, strong
        self.seed, self.epoch = int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        i = operator.index(i)
        n = len(self.paths)
        if i < 0 or n == 0:
            raise IndexError(f"index {i} out of range for dataset of length {n}")
        i, redraw = i % n, i // n
        key = [self.seed, self.epoch, int(self.index[i])]
        # The first draw keeps the three-number key, so a dataset drawn
        # once per epoch gives what it always gave.
        rng = np.random.default_rng(key + [redraw] if redraw else key)
        img = self.paths.load(i)
        weak = self.weak(img, rng)
        if self.strong is None:
            return weak, int(self.targets[i]), int(self.index[i])
        # FixMatch draws the two views independently; both come from rng.
        return weak, self.strong(img, rng), int(self.index[i])
