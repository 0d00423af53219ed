"""DataLoaders, device input and progress display shared by training and prediction."""

from __future__ import annotations

import math
import sys
import warnings

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .._device import usable_cpus
from ..exceptions import LiftLearnWarning
from ..transforms import ImageNormalization

__all__ = ["DeviceImages", "PackedImages", "clamp_workers", "make_loader", "progress"]


class DeviceImages:
    """Where image batches reach the device: move, then convert and normalise there.

    The loaders ship uint8 pixels (a quarter of the bytes of float32 over
    the bus, and a cheap batch stack); they become the network's float32
    input on the device, with the backbone's mean and std, through
    :class:`~liftlearn.transforms.ImageNormalization` (bit for bit what
    normalising on the CPU gives). Training and prediction both go through
    here, so the normalisation has one place.

    A float batch is taken as already normalised (a dataset of the caller's
    own) and only moved.

    Parameters
    ----------
    backbone : Backbone or None
        Gives ``mean`` and ``std``; None accepts float batches only.
    device : torch.device
    reuse_buffers : bool, default=False
        Normalise uint8 batches into the same memory every call (replaced
        only when a batch needs more rows or another shape), so that each
        call overwrites the previous result: for loops that are done with
        one network input before they ask for the next, as prediction is.
        On a CPU a fresh float32 batch per forward is memory the C
        allocator maps and the kernel zeroes anew, again and again; a GPU's
        caching allocator reuses its blocks anyway.
    """

    def __init__(self, backbone, device: torch.device, reuse_buffers: bool = False) -> None:
        self.device = device
        self.normalization = (
            None if backbone is None else ImageNormalization(backbone.mean, backbone.std)
        )
        self._buffers = {} if reuse_buffers else None

    @classmethod
    def of(cls, network: torch.nn.Module, device: torch.device,
           reuse_buffers: bool = False) -> "DeviceImages":
        """For a network that holds its backbone as ``network.backbone``."""
        backbone = getattr(network, "backbone", None)
        return cls(backbone if hasattr(backbone, "mean") else None, device, reuse_buffers)

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype):
        """A tensor of ``shape`` on the device: fresh, or (reusing buffers)
        the leading rows of the buffer ``name``."""
        if self._buffers is None:
            return None
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.shape[1:] != shape[1:] \
                or len(buffer) < shape[0]:
            buffer = torch.empty(shape, dtype=dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[: shape[0]]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if images.dtype != torch.uint8:
            return images
        if self.normalization is None:
            raise TypeError("uint8 images need a backbone's mean and std to be normalised")
        return self.normalization(images, out=self._buffer("input", images.shape, torch.float32))

    def forward_batches(self, batch, batch_size: int, views=None):
        """A loader batch as network input, in forward batches of at most
        ``batch_size`` views.

        Parameters
        ----------
        batch : Tensor or PackedImages
            ``(n_images, n_views, 3, H, W)`` views, or images ``(3, H, W)``
            of any size (:class:`PackedImages`) that ``views`` cuts into views.
        batch_size : int
        views : callable or None
            ``image (3, H, W) -> list of views``, the same number for every
            image; given exactly when ``batch`` is a :class:`PackedImages`.

        Returns
        -------
        n_images, n_views : int
        inputs : iterator of Tensor
            Normalised network input, image by image and view by view
            (view ``j`` of image ``i`` is row ``i * n_views + j`` of their
            concatenation), made one forward batch at a time. With
            ``reuse_buffers``, making the next input overwrites the previous
            one: use each before asking for the next.

        Raises
        ------
        TypeError
            If ``views`` is missing for a :class:`PackedImages` batch, or
            given for a batch of views.
        ValueError
            If an image is not ``(3, H, W)``, or the images do not all give
            the same, positive number of views.
        """
        if not isinstance(batch, PackedImages):
            if views is not None:
                raise TypeError(
                    f"views= cuts single images, but the loader gave a {type(batch).__name__} "
                    f"batch of views of shape {tuple(batch.shape)}: a dataset of "
                    "(n_views, 3, H, W) views takes views=None"
                )
            n_images, n_views = batch.shape[:2]
            # One copy to the device per batch (uint8: a quarter of the bytes).
            flat = batch.to(self.device, non_blocking=True).flatten(0, 1)
            return n_images, n_views, (self(chunk) for chunk in flat.split(batch_size))
        if views is None:
            raise TypeError("a PackedImages batch needs views= to cut its images into views")
        bad = [shape for shape in batch.shapes if len(shape) != 3]
        if bad:
            raise ValueError(
                f"views= takes a dataset of single images (3, H, W); an item had shape {bad[0]} "
                "(a dataset of (n_views, 3, H, W) views takes views=None)"
            )
        # One copy of the images to the device; the views are cut there
        # (TTE's five crops overlap: about a third of their pixels travel
        # for a 4:3 photo).
        batch = batch.to(self.device, non_blocking=True)
        per_image = [views(image) for image in batch.images()]
        counts = sorted({len(image_views) for image_views in per_image})
        if len(counts) != 1 or counts[0] == 0:
            raise ValueError(f"views(image) must give the same, positive number of views for "
                             f"every image; it gave {counts}")
        crops = [crop for image_views in per_image for crop in image_views]
        chunks = (crops[i:i + batch_size] for i in range(0, len(crops), batch_size))
        return len(batch), counts[0], (self(self._stack(chunk)) for chunk in chunks)

    def _stack(self, views: list) -> torch.Tensor:
        # One kernel on a GPU (the views lie in one device tensor).
        shape = (len(views), *views[0].shape)
        return torch.stack(views, out=self._buffer("views", shape, views[0].dtype))


class PackedImages:
    """A batch of uint8 images of different sizes, packed in one flat tensor
    where it crosses a boundary.

    :meth:`collate` is the loader's ``collate_fn`` for datasets of
    ``(3, H, W)`` uint8 images. In a loader worker it packs the images into
    one tensor, which one shared-memory block carries to the main process
    (a tensor per image would be a file descriptor per image), pinning
    pins and one copy moves to the device. In the main process the images
    stay as they are until they move: on a CPU they never do, and packing
    them would be one more copy of every pixel.

    Parameters
    ----------
    images : list of Tensor or None
        The images, unpacked.
    data : Tensor or None
        Or their pixels, flattened and concatenated...
    shapes : list of tuple or None
        ... and each image's shape.
    """

    def __init__(self, images=None, data=None, shapes=None) -> None:
        if (images is None) == (data is None):
            raise TypeError("give the images, or their packed data and shapes")
        self._images = images
        self.data = data
        self.shapes = [tuple(image.shape) for image in images] if shapes is None else shapes

    @classmethod
    def collate(cls, images: list) -> "PackedImages":
        batch = cls(list(images))
        return batch.packed() if get_worker_info() is not None else batch

    def packed(self, pin_memory: bool = False) -> "PackedImages":
        """The same batch in one flat tensor (in pinned memory if asked)."""
        if self.data is not None:
            data = self.data.pin_memory() if pin_memory else self.data
            return PackedImages(data=data, shapes=self.shapes)
        # Straight into the flat (pinned) tensor: one copy of every pixel.
        data = torch.empty(sum(math.prod(s) for s in self.shapes),
                           dtype=self._images[0].dtype, pin_memory=pin_memory)
        torch.cat([image.reshape(-1) for image in self._images], out=data)
        return PackedImages(data=data, shapes=self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def pin_memory(self) -> "PackedImages":
        # Called by DataLoader's pinning thread (pin_memory=True on CUDA).
        return self.packed(pin_memory=True)

    def to(self, device, non_blocking: bool = False) -> "PackedImages":
        device = torch.device(device)
        if self._images is not None and all(image.device == device for image in self._images):
            return self
        data = self.packed().data.to(device, non_blocking=non_blocking)
        return PackedImages(data=data, shapes=self.shapes)

    def images(self) -> list:
        """Each image, in batch order (views of :attr:`data` when packed)."""
        if self._images is not None:
            return list(self._images)
        sizes = [math.prod(shape) for shape in self.shapes]
        return [flat.view(shape) for flat, shape in zip(self.data.split(sizes), self.shapes)]


def clamp_workers(num_workers):
    """``num_workers`` at most the usable CPUs, with a warning when clamped.

    More worker processes than CPUs only add memory (each holds a copy of
    the dataset and its prefetched batches) and contention.
    """
    if num_workers is None:
        return None
    cpus = usable_cpus()
    if num_workers > cpus:
        warnings.warn(
            f"num_workers={num_workers} is more than the {cpus} CPU(s) this process may use; "
            f"using {cpus}", LiftLearnWarning, stacklevel=3,
        )
        return cpus
    return int(num_workers)


def make_loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers=None,
                sampler=None, collate_fn=None) -> DataLoader:
    """A DataLoader with liftlearn's worker and pinning policy.

    ``num_workers=None``: 0 on a CPU (the model needs the cores more than
    the loader does); on CUDA one per usable CPU but one, at most 16, since
    decoding JPEGs is what starves a GPU (one process decodes and crops
    about 260 ImageNet-sized JPEGs/s: benchmarks/perf_profile.py).
    ``collate_fn``: None for torch's default (stacked tensors), or e.g.
    :meth:`PackedImages.collate`.
    """
    if num_workers is None:
        num_workers = min(16, max(1, usable_cpus() - 1)) if device.type == "cuda" else 0
    num_workers = clamp_workers(num_workers)
    extra = {}
    if num_workers > 0:
        # Loaders are rebuilt every epoch (the epoch is a dataset argument),
        # so persistent workers would buy nothing; a deeper queue evens out
        # slow files without changing which crops are drawn.
        extra["prefetch_factor"] = 4
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        # Its own generator: without one, every iteration draws the workers'
        # base seed from torch's global generator, which moves the caller's
        # random state and races with seeded initialisations in other
        # threads. The datasets draw their randomness from their own
        # (seed, epoch, image) generators, so the base seed changes nothing.
        generator=torch.Generator().manual_seed(0),
        collate_fn=collate_fn,
        **extra,
    )


def progress(iterable, verbose: int, desc: str, total: int):
    """``iterable`` behind a progress bar when ``verbose`` and stderr is a terminal.

    A bar redraws itself with carriage returns: in a log file or a pipe
    (a batch job, ``2> fit.log``) that leaves a line of ``\\r`` fragments per
    update, so elsewhere only the logged epoch lines report progress.
    """
    if not verbose or not _is_terminal(sys.stderr):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def _is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False when unsure).

    A Jupyter kernel's stderr counts as one: ``tqdm.auto`` draws a widget
    there, not carriage-return fragments.
    """
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
