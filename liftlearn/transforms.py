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

The estimators' transforms end in contiguous uint8 ``(3, H, W)`` pixels: a
quarter of the bytes of float32 through the loader queues and to the device,
and a plain block for the batch stack.  The training and prediction loops
convert and normalise them where they reach the device, with
:class:`ImageNormalization`; given ``mean`` and ``std``, a transform applies
that same normalisation itself and gives float32.
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
from .data import _to_rgb

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
        img = _rgb(img)
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


class ImageNormalization:
    """Per-channel normalisation of uint8 images, on whatever device they are.

    The one place liftlearn turns pixels into network input:
    ``images * (1 / 255)`` then ``(x - mean) / std``, with exactly the operations
    of torchvision's ``to_dtype(..., scale=True)`` and ``normalize``, so the
    result is bit for bit what they give.  The training and prediction
    loops apply it on the device to the uint8 batches the loaders ship
    (:class:`liftlearn.engine.DeviceImages`), and the transforms apply it on
    the CPU when given ``mean`` and ``std``.

    Parameters
    ----------
    mean, std : sequence of 3 floats
        Per-channel mean and standard deviation of the backbone, for values
        in ``[0, 1]``; every ``std`` must be positive.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean = [float(m) for m in mean]
        std = [float(s) for s in std]
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f"mean and std need one value per RGB channel, got {mean} and {std}"
            )
        if not all(math.isfinite(v) for v in mean + std) or not all(s > 0 for s in std):
            # NaN or inf would make every input NaN or 0, silently.
            raise ValueError(f"mean must be finite and std finite and > 0, got {mean} and {std}")
        self.mean = mean
        self.std = std
        self._constants: dict = {}

    def __getstate__(self) -> dict:
        # The per-device constants are rebuilt where the object is used.
        return {"mean": self.mean, "std": self.std}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mean"], state["std"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Built once per device: a tensor made from a list on a GPU for
        # every batch would be a blocking host-to-device copy per batch.
        key = str(device)
        constants = self._constants.get(key)
        if constants is None:
            constants = tuple(
                torch.as_tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1)
                for v in (self.mean, self.std)
            )
            self._constants[key] = constants
        return constants

    def __call__(self, images: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 network input from uint8 images of shape ``(..., 3, H, W)``.

        Parameters
        ----------
        images : Tensor
            uint8 pixels.
        out : Tensor, optional
            float32 tensor of the same shape on the same device to write the
            result into (and return), e.g. one buffer reused batch after batch.
        """
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        mean, std = self._on(images.device)
        if out is None:
            x = images.to(torch.float32)
        else:
            if (out.dtype != torch.float32 or out.shape != images.shape
                    or out.device != images.device):
                raise ValueError(
                    f"out must be float32 of shape {tuple(images.shape)} on {images.device}, "
                    f"got {out.dtype} {tuple(out.shape)} on {out.device}"
                )
            x = out.copy_(images)
        # torchvision's to_dtype(scale=True) multiplies by 1/255 (not a
        # division: that would round differently), then normalize
        # subtracts and divides; three separate passes, so no fused
        # multiply-add changes a bit either.
        return x.mul_(1.0 / 255).sub_(mean).div_(std)


def _to_uint8_chw(img: Image.Image) -> torch.Tensor:
    """PIL image -> contiguous uint8 tensor (3, H, W).

    Channel-first and contiguous: DataLoader's collate then stacks plain
    blocks, and the float conversion on the device reads memory in order
    (a pixel-interleaved view was 4x slower to normalise).
    """
    # Loading first: a lazily opened file may only know its final size
    # once decoded (e.g. a reduced JPEG 2000).
    img.load()
    img = _rgb(img)  # the transforms resample RGB images only; this guards direct callers
    width, height = img.size
    chw = np.empty((3, height, width), dtype=np.uint8)
    for plane, band in zip(chw, "RGB"):
        # PIL's packer for one band reads it from PIL's own pixel store into
        # a bytes object that is copied into its plane: cheaper than the
        # interleaved RGB bytes of np.asarray(img) and numpy's 3-D transpose
        # copy of them.
        plane[...] = np.frombuffer(img.tobytes("raw", band), dtype=np.uint8).reshape(height, width)
    return torch.from_numpy(chw)


def _five_crop_views(image, size: int) -> list:
    """Views of the four corner crops and the centre crop of ``image``
    (an array or tensor ``(..., H, W)``), in torchvision's ``five_crop``
    boxes and order (tested against it).

    One definition for both places the crops are cut: the TTE transform
    (in a loader worker) and the device, where a packed batch of resized
    images becomes TTE views (:mod:`liftlearn.engine`).
    """
    height, width = image.shape[-2:]
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the image ({height}x{width})")
    top, left = height - size, width - size
    boxes = ((0, 0), (0, left), (top, 0), (top, left),
             (int(round(top / 2.0)), int(round(left / 2.0))))
    return [image[..., y:y + size, x:x + size] for y, x in boxes]


class _ToTensor:
    """PIL image -> uint8 tensor (3, H, W), or normalised float32 with a normalisation."""

    def __init__(self, normalization: ImageNormalization | None) -> None:
        self.normalization = normalization

    def __repr__(self) -> str:
        n = self.normalization
        return "uint8" if n is None else f"mean={n.mean}, std={n.std}"

    def __call__(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        x = img if isinstance(img, torch.Tensor) else _to_uint8_chw(img)
        return x if self.normalization is None else self.normalization(x)


def _to_tensor(mean, std) -> _ToTensor:
    """The tensor conversion of a transform: uint8 without ``mean`` and ``std``."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (normalised float32 output) or neither (uint8)")
    return _ToTensor(None if mean is None else ImageNormalization(mean, std))


class _RandomTransform:
    """A random view (``img, rng -> PIL``: the minimalist crop, FixMatch's
    weak or strong view) followed by the tensor conversion."""

    def __init__(self, view, to_tensor: _ToTensor) -> None:
        self.view = view
        self.to_tensor = to_tensor

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        return self.to_tensor(self.view(img, rng))

    def __repr__(self) -> str:
        return f"{self.view!r} + tensor({self.to_tensor!r})"


def _rgb(img: Image.Image) -> Image.Image:
    # Before any resampling, as load_image does: a palette image resized in
    # its own mode is resized nearest-neighbour, an RGBA one would lose its
    # alpha to black instead of white, a 16-bit one would be clipped.
    return img if img.mode == "RGB" else _to_rgb(img)


def _resize_shorter(img: Image.Image, side: int) -> Image.Image:
    # torchvision on PIL input delegates to PIL's resize, which always
    # antialiases; antialias=True just states it.
    return F.resize(
        _rgb(img), [side], interpolation=InterpolationMode.BICUBIC, antialias=True
    )


class _EvalTransform:
    def __init__(self, size: int, to_tensor: _ToTensor) -> None:
        self.size = size
        self.resize_to = size + size // 7  # 224 -> 256, the usual CLIP ratio
        self.to_tensor = to_tensor

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = F.center_crop(_resize_shorter(img, self.resize_to), [self.size])
        return self.to_tensor(img).unsqueeze(0)

    def __repr__(self) -> str:
        return f"eval_transform(size={self.size}, {self.to_tensor!r})"


class _TTETransform:
    def __init__(self, size: int, expand: int, to_tensor: _ToTensor) -> None:
        self.size = size
        self.expand = expand
        self.to_tensor = to_tensor

    def resized(self, img: Image.Image) -> torch.Tensor:
        """The first half: the resized image, uint8 (3, H, W), that all
        five views are cut from (about a third of their pixels for a 4:3
        photo)."""
        return _to_uint8_chw(_resize_shorter(img, self.size + self.expand))

    def views(self, image):
        """The second half: the five views of a :meth:`resized` image, as views."""
        return _five_crop_views(image, self.size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        # numpy copies the five crops into one array faster than torch
        # stacks views of them on a CPU.
        crops = np.stack(self.views(self.resized(img).numpy()))
        return self.to_tensor(torch.from_numpy(crops))

    def __repr__(self) -> str:
        return (
            f"tte_transform(size={self.size}, expand={self.expand}, "
            f"{self.to_tensor!r})"
        )


def train_transform(
    size: int,
    min_scale: float,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Callable[[Image.Image, np.random.Generator], torch.Tensor]:
    """Training transform of one epoch: minimalist crop, then tensor.

    Parameters
    ----------
    size : int
        Output side in pixels (the backbone's input resolution).
    min_scale : float
        Minimum crop area fraction of this epoch, from :func:`mda_min_scale`.
    mean, std : sequence of 3 floats, optional
        Per-channel normalisation; without them the output is uint8 pixels
        (see :class:`ImageNormalization`).

    Returns
    -------
    callable
        ``transform(img, rng) -> Tensor`` of shape ``(3, size, size)``:
        contiguous uint8, or float32 when ``mean`` and ``std`` are given.
        Picklable.
    """
    return _RandomTransform(MinimalistCrop(size, min_scale), _to_tensor(mean, std))


def eval_transform(
    size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """Single-view test transform: resize, centre crop, tensor.

    The shorter side is resized (bicubic, antialiased) to
    ``size + size // 7`` and the central ``size x size`` square is kept.

    Parameters
    ----------
    size : int
        Output side in pixels.
    mean, std : sequence of 3 floats, optional
        Per-channel normalisation; without them the output is uint8 pixels
        (see :class:`ImageNormalization`).

    Returns
    -------
    callable
        ``transform(img) -> Tensor`` of shape ``(1, 3, size, size)`` (uint8,
        or float32 with ``mean`` and ``std``).  The leading axis of length 1
        is a view axis, so that single-view and :func:`tte_transform`
        batches have the same layout ``(batch, views, 3, size, size)``.
        Picklable.
    """
    size = check_int(size, "size", 1)
    return _EvalTransform(size, _to_tensor(mean, std))


def tte_transform(
    size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    expand: int = 24,
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
    mean, std : sequence of 3 floats, optional
        Per-channel normalisation; without them the output is uint8 pixels
        (see :class:`ImageNormalization`).
    expand : int, default=24
        How many pixels larger than ``size`` the shorter side is resized to.

    Returns
    -------
    callable
        ``transform(img) -> Tensor`` of shape ``(5, 3, size, size)`` (uint8,
        or float32 with ``mean`` and ``std``).  Picklable.  Its two halves
        are methods: ``transform.resized(img)``, the resized image as uint8
        ``(3, H, W)``, and ``transform.views(image)``, the five crops of
        such an image as views (of a tensor or an array); prediction ships
        the first from its loader and cuts the second where the batch is
        (``predict_logits(..., views=...)``).
    """
    size = check_int(size, "size", 1)
    expand = check_int(expand, "expand", 0)
    return _TTETransform(size, expand, _to_tensor(mean, std))


# --------------------------------------------------------------------------
# FixMatch's weak and strong views of unlabeled images (ULFineClassifier).
#
# Both draw every random choice from the sample's numpy Generator (never
# from torch's or Python's global generators), so a view depends only on
# ``(seed, epoch, image index)``, like the minimalist crop.

#: RandAugment's operations (FixMatch's pool; torchvision's names).
RANDAUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)

#: RandAugment's magnitude scale: magnitude k in 0..30 is k/30 of an
#: operation's largest change (torchvision's 31 bins).
RANDAUGMENT_LEVELS = 30

# FixMatch fills what geometric operations uncover with grey, and Cutout's
# square with (127, 127, 127).
_RA_FILL = [128, 128, 128]
_CUTOUT_FILL = 127


def _randaugment_op(img: Image.Image, op: str, level: int, negate: bool) -> Image.Image:
    """Apply one RandAugment operation at ``level`` (of 30), torchvision's table.

    The amounts at the top level are torchvision's ``RandAugment`` ones
    (shear 0.3, translation 150/331 of the side, rotation 30 degrees,
    brightness/colour/contrast/sharpness factor 1 +- 0.9, posterize to 4
    bits, solarize at threshold 0); ``negate`` flips the sign of the signed
    operations.
    """
    t = level / RANDAUGMENT_LEVELS
    sign = -1.0 if negate else 1.0
    nearest = InterpolationMode.NEAREST
    if op == "Identity":
        return img
    if op in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(sign * 0.3 * t))
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=[shear, 0.0] if op == "ShearX" else [0.0, shear],
                        interpolation=nearest, fill=_RA_FILL, center=[0, 0])
    if op in ("TranslateX", "TranslateY"):
        side = img.width if op == "TranslateX" else img.height
        shift = int(sign * 150.0 / 331.0 * side * t)
        return F.affine(img, angle=0.0, translate=[shift, 0] if op == "TranslateX" else [0, shift],
                        scale=1.0, shear=[0.0, 0.0], interpolation=nearest, fill=_RA_FILL)
    if op == "Rotate":
        return F.rotate(img, sign * 30.0 * t, interpolation=nearest, fill=_RA_FILL)
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        adjust = {"Brightness": F.adjust_brightness, "Color": F.adjust_saturation,
                  "Contrast": F.adjust_contrast, "Sharpness": F.adjust_sharpness}[op]
        return adjust(img, 1.0 + sign * 0.9 * t)
    if op == "Posterize":
        return F.posterize(img, int(8 - round(4 * t)))
    if op == "Solarize":
        return F.solarize(img, 255.0 * (1.0 - t))
    if op == "AutoContrast":
        return F.autocontrast(img)
    if op == "Equalize":
        return F.equalize(img)
    raise ValueError(f"unknown RandAugment operation {op!r}; expected one of {RANDAUGMENT_OPS}")


class WeakView:
    """FixMatch's weak view: the whole image, flipped and shifted a little.

    The shorter side is resized (bicubic, antialiased) to ``size`` and the
    central square kept (CLIP-style resize + centre crop: the whole image of
    a square dataset); then a horizontal flip with probability 1/2 (if
    ``flip``) and a random translation of up to ``translate * size`` pixels
    each way, the border filled by reflection (FixMatch's
    ``RandomCrop(32, padding=4, padding_mode="reflect")`` is
    ``translate=0.125``).  It never zooms in: every view keeps at least
    ``(1 - translate)`` of the image's width and height.

    Parameters
    ----------
    size : int
        Output side in pixels.
    translate : float, default=0.125
        Largest shift as a fraction of ``size``, in ``[0, 0.5]``.
    flip : bool, default=True
        Flip horizontally with probability 1/2.
    """

    def __init__(self, size: int, translate: float = 0.125, flip: bool = True) -> None:
        self.size = check_int(size, "size", 1)
        translate = check_fraction(translate, "translate")
        if translate > 0.5:
            raise ValueError(f"translate must be in [0, 0.5], got {translate}")
        self.translate = translate
        self.flip = bool(flip)
        # Reflection needs the padding to be smaller than the image.
        self.pad = min(int(round(translate * self.size)), self.size - 1)

    def get_params(self, rng: np.random.Generator) -> tuple[bool, int, int]:
        """Draw ``(flipped, dy, dx)``: the flip and the offsets into the padded image.

        Exactly three draws are made, whatever the options, so that the
        draws that follow (the strong view's) do not depend on them.
        """
        flipped = bool(rng.random() < 0.5) and self.flip
        dy, dx = (int(v) for v in rng.integers(0, 2 * self.pad + 1, size=2))
        return flipped, dy, dx

    def apply(self, img: Image.Image, params: tuple[bool, int, int]) -> Image.Image:
        """The view for drawn ``params`` (a ``size x size`` RGB image)."""
        flipped, dy, dx = params
        img = F.center_crop(_resize_shorter(img, self.size), [self.size])
        if flipped:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.pad:
            p, s = self.pad, self.size
            arr = np.pad(np.asarray(img), ((p, p), (p, p), (0, 0)), mode="reflect")
            img = Image.fromarray(np.ascontiguousarray(arr[dy:dy + s, dx:dx + s]))
        return img

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return self.apply(img, self.get_params(rng))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, translate={self.translate!r}, flip={self.flip})"


class StrongView:
    """FixMatch's strong view: the weak view, RandAugment, then Cutout.

    FixMatch's ``RandAugmentMC``: ``num_ops`` operations drawn uniformly
    (with replacement) from :data:`RANDAUGMENT_OPS`, each applied with
    probability 1/2 at its own magnitude drawn uniformly from
    ``1..max_magnitude`` (of 30; FixMatch draws 1..9 of 10, so the default
    27 spans the same range), signed operations with a random sign; then
    Cutout: a grey (127) square of side ``cutout * size`` centred uniformly
    on the image and clipped to it.

    Parameters
    ----------
    weak : WeakView
        The geometric part (flip, translation).
    num_ops : int, default=2
    max_magnitude : int, default=27
        In ``1..30``.
    cutout : float, default=0.5
        Side of the Cutout square as a fraction of the image side; 0
        disables it.
    """

    def __init__(self, weak: WeakView, num_ops: int = 2, max_magnitude: int = 27,
                 cutout: float = 0.5) -> None:
        self.weak = weak
        self.num_ops = check_int(num_ops, "num_ops", 0)
        self.max_magnitude = check_int(max_magnitude, "max_magnitude", 1)
        if self.max_magnitude > RANDAUGMENT_LEVELS:
            raise ValueError(f"max_magnitude must be <= {RANDAUGMENT_LEVELS}, got {max_magnitude}")
        self.cutout = check_fraction(cutout, "cutout")

    def get_params(self, rng: np.random.Generator, height: int, width: int) -> dict:
        """Draw every choice of one strong view.

        Returns
        -------
        dict
            ``weak``: the :meth:`WeakView.get_params` draw; ``ops``: a list
            of ``(op, magnitude, negate, applied)``; ``cutout``: the
            ``(top, left, bottom, right)`` box (empty when ``cutout=0``) on
            the ``height x width`` output.
        """
        weak = self.weak.get_params(rng)
        ops = []
        for _ in range(self.num_ops):
            op = RANDAUGMENT_OPS[int(rng.integers(len(RANDAUGMENT_OPS)))]
            magnitude = int(rng.integers(1, self.max_magnitude + 1))
            negate = bool(rng.random() < 0.5)
            applied = bool(rng.random() < 0.5)
            ops.append((op, magnitude, negate, applied))
        # FixMatch's CutoutAbs: a centre drawn over the image, the square's
        # corner clipped at 0 and its far side at the border.
        side = int(round(self.cutout * min(height, width)))
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        top, left = int(max(0.0, cy - side / 2)), int(max(0.0, cx - side / 2))
        box = (top, left, min(height, top + side), min(width, left + side)) if side else (0, 0, 0, 0)
        return {"weak": weak, "ops": ops, "cutout": box}

    def apply(self, img: Image.Image, params: dict) -> Image.Image:
        img = self.weak.apply(img, params["weak"])
        for op, magnitude, negate, applied in params["ops"]:
            if applied:
                img = _randaugment_op(img, op, magnitude, negate)
        top, left, bottom, right = params["cutout"]
        if bottom > top and right > left:
            arr = np.array(img)
            arr[top:bottom, left:right] = _CUTOUT_FILL
            img = Image.fromarray(arr)
        return img

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        size = self.weak.size
        return self.apply(img, self.get_params(rng, size, size))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.weak!r}, num_ops={self.num_ops}, "
            f"max_magnitude={self.max_magnitude}, cutout={self.cutout!r})"
        )


def weak_transform(
    size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    translate: float = 0.125,
    flip: bool = True,
) -> Callable[[Image.Image, np.random.Generator], torch.Tensor]:
    """FixMatch's weak view of an unlabeled image (see :class:`WeakView`).

    Resize + centre crop to ``size``, horizontal flip with probability 1/2,
    translation by up to ``translate * size`` pixels (reflected border).
    ULFineClassifier's pseudo-labels come from this view; its labeled images
    keep LIFT+'s minimalist crop (:func:`train_transform`).

    Parameters
    ----------
    size : int
        Output side in pixels.
    mean, std : sequence of 3 floats, optional
        Per-channel normalisation; without them the output is uint8 pixels
        (see :class:`ImageNormalization`).
    translate : float, default=0.125
        FixMatch's 4 of 32 pixels.
    flip : bool, default=True

    Returns
    -------
    callable
        ``transform(img, rng) -> Tensor`` of shape ``(3, size, size)``
        (uint8, or float32 with ``mean`` and ``std``), deterministic given
        ``rng``.  Picklable.
    """
    return _RandomTransform(WeakView(size, translate, flip), _to_tensor(mean, std))


def strong_transform(
    size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_ops: int = 2,
    max_magnitude: int = 27,
    cutout: float = 0.5,
    translate: float = 0.125,
    flip: bool = True,
) -> Callable[[Image.Image, np.random.Generator], torch.Tensor]:
    """FixMatch's strong view: weak view + RandAugment (random magnitude) + Cutout.

    See :class:`StrongView`.  Before issue 16 this function was the
    minimalist crop + torchvision's fixed-magnitude RandAugment and took
    ``min_scale`` as its second argument (see the changelog).

    Parameters
    ----------
    size, mean, std, translate, flip
        As in :func:`weak_transform`.
    num_ops : int, default=2
        RandAugment operations drawn per image (FixMatch's 2), each applied
        with probability 1/2.
    max_magnitude : int, default=27
        Largest magnitude (of 30); each operation draws its own from
        ``1..max_magnitude``.
    cutout : float, default=0.5
        Cutout square side as a fraction of ``size`` (FixMatch's 16 of 32).

    Returns
    -------
    callable
        ``transform(img, rng) -> Tensor`` of shape ``(3, size, size)``
        (uint8, or float32 with ``mean`` and ``std``), deterministic given
        ``rng``.  Picklable.
    """
    view = StrongView(WeakView(size, translate, flip), num_ops, max_magnitude, cutout)
    return _RandomTransform(view, _to_tensor(mean, std))


__all__ += [
    "RANDAUGMENT_OPS", "ImageNormalization", "StrongView", "WeakView", "strong_transform",
    "weak_transform",
]
