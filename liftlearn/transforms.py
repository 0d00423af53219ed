"""Image transforms of the LIFT+ recipe.

LIFT+ fine-tunes CLIP with *minimalist data augmentation* (MDA): the only
training augmentation is a random **square** crop whose minimum area shrinks
less and less as training goes on, following a schedule over epochs.  There
is no flip and no colour jitter.  At test time an image is either resized and
centre-cropped (one view) or resized slightly larger and cut into five crops
(test-time ensembling, TTE) whose predictions are averaged by the caller.

Every training transform takes an explicit :class:`numpy.random.Generator`
instead of using global random state, so a crop depends only on the generator
it is given (the datasets seed it from ``(seed, epoch, index)``) and never on
which DataLoader worker happened to process the image.

All transform objects are small classes rather than closures so that they
can be pickled into DataLoader worker processes.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ._validation import check_fraction, check_int

__all__ = [
    "MDA_SCHEDULES",
    "MinimalistCrop",
    "eval_transform",
    "mda_min_scale",
    "mda_schedule",
    "train_transform",
    "tte_transform",
]

#: Names accepted by ``schedule`` in :func:`mda_min_scale`.
MDA_SCHEDULES = ("convex", "linear", "concave", "min", "max")

_PIL_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def mda_min_scale(
    epoch: int, n_epochs: int, low: float = 0.08, schedule: str = "convex"
) -> float:
    """Minimum crop area fraction of minimalist data augmentation.

    With training progress ``t = epoch / (n_epochs - 1)`` in ``[0, 1]`` the
    schedule value ``s`` is

    - ``"convex"``: ``1 - sqrt(1 - t**2)`` (the LIFT+ default: strong
      augmentation for most of training, relaxed quickly at the end),
    - ``"linear"``: ``t``,
    - ``"concave"``: ``sqrt(1 - (1 - t)**2)``,
    - ``"min"``: ``0`` (always the strongest augmentation),
    - ``"max"``: ``1`` (always the largest square, i.e. no augmentation),

    and the result is ``low + s * (1 - low)``.

    Parameters
    ----------
    epoch : int
        Zero-based epoch, ``0 <= epoch < n_epochs``.
    n_epochs : int
        Total number of epochs, at least 1.
    low : float, default=0.08
        Minimum scale at the start of training, in ``[0, 1]``.
    schedule : {"convex", "linear", "concave", "min", "max"}, default="convex"
        Shape of the schedule.

    Returns
    -------
    float
        The minimum crop area as a fraction of the image area, in
        ``[low, 1]``.

    Notes
    -----
    For ``n_epochs == 1`` the progress is taken as ``t = 0`` (so the single
    epoch uses the strongest augmentation of the schedule); the reference
    implementation divides by zero in that case.

    Examples
    --------
    >>> [round(mda_min_scale(e, 5), 3) for e in range(5)]
    [0.08, 0.109, 0.203, 0.391, 1.0]
    """
    n_epochs = check_int(n_epochs, "n_epochs", 1)
    epoch = check_int(epoch, "epoch", 0)
    if epoch >= n_epochs:
        raise ValueError(
            f"epoch must be in [0, n_epochs - 1] = [0, {n_epochs - 1}], got {epoch}"
        )
    low = check_fraction(low, "low")
    t = 0.0 if n_epochs == 1 else epoch / (n_epochs - 1)
    if schedule == "convex":
        s = 1.0 - math.sqrt(1.0 - t * t)
    elif schedule == "linear":
        s = t
    elif schedule == "concave":
        s = math.sqrt(1.0 - (1.0 - t) ** 2)
    elif schedule == "min":
        s = 0.0
    elif schedule == "max":
        s = 1.0
    else:
        raise ValueError(
            f"unknown MDA schedule {schedule!r}; expected one of {MDA_SCHEDULES}"
        )
    return low + s * (1.0 - low)


def mda_schedule(
    n_epochs: int, low: float = 0.08, schedule: str = "convex"
) -> list[float]:
    """Minimum crop scale of every epoch.

    Parameters
    ----------
    n_epochs : int
        Total number of epochs, at least 1.
    low : float, default=0.08
        Minimum scale at the start of training.
    schedule : str, default="convex"
        See :func:`mda_min_scale`.

    Returns
    -------
    list of float
        ``[mda_min_scale(e, n_epochs, low, schedule) for e in range(n_epochs)]``.
    """
    n_epochs = check_int(n_epochs, "n_epochs", 1)
    return [mda_min_scale(e, n_epochs, low, schedule) for e in range(n_epochs)]


class MinimalistCrop:
    """Random square crop of at least ``min_scale`` of the image, resized.

    The crop is square so that resizing never distorts the aspect ratio.
    Its area, as a fraction of the image area, is drawn uniformly from
    ``[a, b]`` where ``b = min(1, min(H, W)**2 / (H * W))`` is the largest
    square that fits and ``a = min(min_scale, b)``; the position is uniform
    over all placements inside the image.

    Parameters
    ----------
    size : int
        Side of the output image in pixels.
    min_scale : float
        Minimum crop area as a fraction of the image area, in ``[0, 1]``
        (see :func:`mda_min_scale`).  ``1`` always crops the largest square.
    interpolation : {"bicubic", "bilinear", "lanczos", "nearest"}, default="bicubic"
        Resampling filter.  PIL filters are antialiased when downscaling.
    """

    def __init__(
        self, size: int, min_scale: float, interpolation: str = "bicubic"
    ) -> None:
        self.size = check_int(size, "size", 1)
        self.min_scale = check_fraction(min_scale, "min_scale")
        if interpolation not in _PIL_RESAMPLING:
            raise ValueError(
                f"interpolation must be one of {sorted(_PIL_RESAMPLING)}, "
                f"got {interpolation!r}"
            )
        self.interpolation = interpolation

    def get_params(
        self, height: int, width: int, rng: np.random.Generator
    ) -> tuple[int, int, int]:
        """Draw a crop for an image of the given size.

        Parameters
        ----------
        height, width : int
            Image size in pixels, both at least 1.
        rng : numpy.random.Generator
            Source of all randomness; exactly three draws are made.

        Returns
        -------
        top, left, side : int
            Upper-left corner and side of the square crop, with
            ``1 <= side <= min(height, width)``.
        """
        area = height * width
        short = min(height, width)
        largest = min(1.0, short * short / area)
        smallest = min(self.min_scale, largest)
        target_area = area * rng.uniform(smallest, largest)
        side = int(round(math.sqrt(target_area)))
        # Rounding can step just outside the valid range (e.g. 0 on a tiny
        # image with a small scale), so clip instead of trusting it.
        side = min(max(side, 1), short)
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        return top, left, side

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Crop ``img`` at random and resize the crop.

        Parameters
        ----------
        img : PIL.Image.Image
            Input image.
        rng : numpy.random.Generator
            Source of all randomness.

        Returns
        -------
        PIL.Image.Image
            Image of ``size x size`` pixels.
        """
        top, left, side = self.get_params(img.height, img.width, rng)
        # Crop first, then resize (as torchvision's resized_crop does).
        # PIL's ``resize(box=...)`` would be cheaper but its filter reads
        # pixels outside the box, which changes the crop's border pixels.
        crop = img.crop((left, top, left + side, top + side))
        return crop.resize((self.size, self.size), _PIL_RESAMPLING[self.interpolation])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, min_scale={self.min_scale!r}, "
            f"interpolation={self.interpolation!r})"
        )


class _ToNormalizedTensor:
    """PIL image -> float32 tensor (3, H, W) in [0, 1], then normalized."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean = [float(m) for m in mean]
        std = [float(s) for s in std]
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f"mean and std need one value per RGB channel, got {mean} and {std}"
            )
        if not all(s > 0 for s in std):
            raise ValueError(f"std values must be > 0, got {std}")
        self.mean = mean
        self.std = std

    def __repr__(self) -> str:
        return f"mean={self.mean}, std={self.std}"

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.mode != "RGB":
            # load_image always gives RGB; this only guards direct callers.
            img = img.convert("RGB")
        x = F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)
        return F.normalize(x, self.mean, self.std)


class _TrainTransform:
    def __init__(self, crop: MinimalistCrop, to_tensor: _ToNormalizedTensor) -> None:
        self.crop = crop
        self.to_tensor = to_tensor

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        return self.to_tensor(self.crop(img, rng))

    def __repr__(self) -> str:
        return f"train_transform({self.crop!r}, {self.to_tensor!r})"


def _resize_shorter(img: Image.Image, side: int) -> Image.Image:
    # torchvision on PIL input delegates to PIL's resize, which always
    # antialiases; antialias=True just states it.
    return F.resize(
        img, [side], interpolation=InterpolationMode.BICUBIC, antialias=True
    )


class _EvalTransform:
    def __init__(self, size: int, to_tensor: _ToNormalizedTensor) -> None:
        self.size = size
        self.resize_to = size + size // 7  # 224 -> 256, the usual CLIP ratio
        self.to_tensor = to_tensor

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = F.center_crop(_resize_shorter(img, self.resize_to), [self.size])
        return self.to_tensor(img).unsqueeze(0)

    def __repr__(self) -> str:
        return f"eval_transform(size={self.size}, {self.to_tensor!r})"


class _TTETransform:
    def __init__(self, size: int, expand: int, to_tensor: _ToNormalizedTensor) -> None:
        self.size = size
        self.expand = expand
        self.to_tensor = to_tensor

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = _resize_shorter(img, self.size + self.expand)
        crops = F.five_crop(img, [self.size])
        return torch.stack([self.to_tensor(c) for c in crops])

    def __repr__(self) -> str:
        return (
            f"tte_transform(size={self.size}, expand={self.expand}, "
            f"mean={self.to_tensor.mean}, std={self.to_tensor.std})"
        )


def train_transform(
    size: int, min_scale: float, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image, np.random.Generator], torch.Tensor]:
    """Training transform of one epoch: minimalist crop, tensor, normalize.

    Parameters
    ----------
    size : int
        Output side in pixels (the backbone's input resolution).
    min_scale : float
        Minimum crop area fraction of this epoch, from :func:`mda_min_scale`.
    mean, std : sequence of 3 floats
        Per-channel normalisation of the backbone, applied to values in
        ``[0, 1]``.

    Returns
    -------
    callable
        ``transform(img, rng) -> Tensor`` of shape ``(3, size, size)`` and
        dtype float32.  Picklable.
    """
    return _TrainTransform(
        MinimalistCrop(size, min_scale), _ToNormalizedTensor(mean, std)
    )


def eval_transform(
    size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Image.Image], torch.Tensor]:
    """Single-view test transform: resize, centre crop, tensor, normalize.

    The shorter side is resized (bicubic, antialiased) to
    ``size + size // 7`` and the central ``size x size`` square is kept.

    Parameters
    ----------
    size : int
        Output side in pixels.
    mean, std : sequence of 3 floats
        Per-channel normalisation.

    Returns
    -------
    callable
        ``transform(img) -> Tensor`` of shape ``(1, 3, size, size)``.  The
        leading axis of length 1 is a view axis, so that single-view and
        :func:`tte_transform` batches have the same layout
        ``(batch, views, 3, size, size)``.  Picklable.
    """
    size = check_int(size, "size", 1)
    return _EvalTransform(size, _ToNormalizedTensor(mean, std))


def tte_transform(
    size: int, mean: Sequence[float], std: Sequence[float], expand: int = 24
) -> Callable[[Image.Image], torch.Tensor]:
    """Test-time-ensembling transform: resize slightly larger, five crops.

    The shorter side is resized (bicubic, antialiased) to ``size + expand``
    and cut into the four corner crops and the centre crop, in
    :func:`torchvision.transforms.v2.functional.five_crop` order
    (top-left, top-right, bottom-left, bottom-right, centre).

    Parameters
    ----------
    size : int
        Side of each crop in pixels.
    mean, std : sequence of 3 floats
        Per-channel normalisation.
    expand : int, default=24
        How many pixels larger than ``size`` the shorter side is resized to.

    Returns
    -------
    callable
        ``transform(img) -> Tensor`` of shape ``(5, 3, size, size)``.
        Picklable.
    """
    size = check_int(size, "size", 1)
    expand = check_int(expand, "expand", 0)
    return _TTETransform(size, expand, _ToNormalizedTensor(mean, std))


# --------------------------------------------------------------------------
# Strong augmentation for semi-supervised learning (ULFineClassifier).


class _StrongTransform:
    """Minimalist crop, then torchvision's RandAugment, then tensor.

    RandAugment draws its operations from torch's global generator, so the
    draw is made inside ``fork_rng`` with a seed taken from the sample's own
    ``rng``: the strong view of image ``i`` then depends only on that
    generator (hence on ``(seed, epoch, i)``), never on the worker or on the
    caller's torch random state.
    """

    def __init__(
        self, crop: MinimalistCrop, to_tensor: _ToNormalizedTensor, num_ops: int, magnitude: int
    ) -> None:
        from torchvision.transforms import v2

        self.crop = crop
        self.to_tensor = to_tensor
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.randaugment = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        img = self.crop(img, rng)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(0, 2**63 - 1)))
            img = self.randaugment(img)
        return self.to_tensor(img)

    def __repr__(self) -> str:
        return (
            f"strong_transform({self.crop!r}, RandAugment(num_ops={self.num_ops}, "
            f"magnitude={self.magnitude}), {self.to_tensor!r})"
        )


def strong_transform(
    size: int,
    min_scale: float,
    mean: Sequence[float],
    std: Sequence[float],
    num_ops: int = 2,
    magnitude: int = 9,
) -> Callable[[Image.Image, np.random.Generator], torch.Tensor]:
    """FixMatch's strong view: the weak view (minimalist crop) + RandAugment.

    Parameters
    ----------
    size, min_scale, mean, std
        As in :func:`train_transform`; the crop is the weak view's.
    num_ops : int, default=2
        RandAugment operations per image (FixMatch's 2).
    magnitude : int, default=9
        RandAugment magnitude, 0..30 (torchvision's default bins).

    Returns
    -------
    callable
        ``transform(img, rng) -> Tensor`` of shape ``(3, size, size)``,
        float32, deterministic given ``rng``.  Picklable.
    """
    num_ops = check_int(num_ops, "num_ops", 0)
    magnitude = check_int(magnitude, "magnitude", 0)
    if magnitude > 30:
        raise ValueError(f"magnitude must be <= 30, got {magnitude}")
    return _StrongTransform(
        MinimalistCrop(size, min_scale), _ToNormalizedTensor(mean, std), num_ops, magnitude
    )


__all__.append("strong_transform")
