"""DataLoaders, device input and progress display shared by training and prediction."""

from __future__ import annotations

import sys
import warnings

import torch
from torch.utils.data import DataLoader, Dataset

from .._device import usable_cpus
from ..exceptions import LiftLearnWarning
from ..transforms import ImageNormalization

__all__ = ["DeviceImages", "clamp_workers", "make_loader", "progress"]


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
    """

    def __init__(self, backbone, device: torch.device) -> None:
        self.device = device
        self.normalization = (
            None if backbone is None else ImageNormalization(backbone.mean, backbone.std)
        )

    @classmethod
    def of(cls, network: torch.nn.Module, device: torch.device) -> "DeviceImages":
        """For a network that holds its backbone as ``network.backbone``."""
        backbone = getattr(network, "backbone", None)
        return cls(backbone if hasattr(backbone, "mean") else None, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if images.dtype != torch.uint8:
            return images
        if self.normalization is None:
            raise TypeError("uint8 images need a backbone's mean and std to be normalised")
        return self.normalization(images)


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
                sampler=None) -> DataLoader:
    """A DataLoader with liftlearn's worker and pinning policy.

    ``num_workers=None``: 0 on a CPU (the model needs the cores more than
    the loader does); on CUDA one per usable CPU but one, at most 16, since
    decoding JPEGs is what starves a GPU (one process decodes and crops
    about 260 ImageNet-sized JPEGs/s: benchmarks/perf_profile.py).
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
