"""Prediction: logits (or features) of a network for images, TTE included."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .._device import autocast_for, network_dtype
from ..data import ImageDataset
from ..transforms import eval_transform, tte_transform
from ._loading import DeviceImages, PackedImages, make_loader, progress

__all__ = ["input_batches", "prediction_data", "predict_images", "predict_logits"]


@torch.no_grad()
def predict_logits(
    network: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    num_workers=None,
    verbose: int = 0,
    *,
    backbone=None,
    views=None,
) -> np.ndarray:
    """Network outputs averaged over each image's views.

    ``dataset`` yields tensors of shape ``(n_views, 3, H, W)`` (1 view without
    TTE, 5 with): uint8 pixels, normalised on the device with the backbone's
    mean and std (:class:`~liftlearn.engine.DeviceImages`), or float32
    values already normalised. With ``views``, it yields one uint8 image
    ``(3, H, W)`` of any size per item instead, and ``views(image)`` cuts
    it into its views on the device. A batch of ``batch_size`` images holds
    ``n_views * batch_size`` views; they go through the network in forward
    batches of at most ``batch_size`` views, so TTE costs five forwards of the
    usual size instead of one five times as large (slower on a CPU, and five
    times the activation memory on a GPU).

    Parameters
    ----------
    backbone : Backbone or None
        Gives the normalisation; None: ``network.backbone``.
    views : callable or None
        ``image -> list of views`` (the same number for every image), e.g.
        the ``views`` of :func:`~liftlearn.transforms.tte_transform`.

    Notes
    -----
    Each forward batch is normalised into the same buffer as the one
    before it: a network (or a forward hook) that keeps its input past
    the forward sees it overwritten. An output that is the input itself,
    or a view of it, is copied.

    Returns
    -------
    logits : ndarray of shape (n_images, n_outputs), float32
    """
    network.eval()
    autocast, _ = autocast_for(device, network_dtype(network))  # the backbone's precision
    # Each input is done with once the network has run on it (no grad).
    images = (DeviceImages(backbone, device, reuse_buffers=True) if backbone is not None
              else DeviceImages.of(network, device, reuse_buffers=True))
    out = []
    for n_images, n_views, inputs in input_batches(dataset, images, batch_size, num_workers,
                                                   verbose, views):
        logits = []
        for x in inputs:
            with autocast:
                y = network(x).float()
            if y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
                y = y.clone()  # the output is the input: its buffer is reused
            logits.append(y)
        # Stay on the device: a copy per batch would be a host sync per batch.
        out.append(torch.cat(logits).view(n_images, n_views, -1).mean(dim=1))
    return torch.cat(out).cpu().numpy()


def input_batches(dataset: Dataset, images: DeviceImages, batch_size: int, num_workers=None,
                  verbose: int = 0, views=None):
    """The loader batches of ``dataset`` as network input on ``images.device``.

    What :func:`predict_logits` feeds the network (and
    ``benchmarks/perf_profile.py`` times as the data pipeline).

    Parameters
    ----------
    dataset : Dataset
        As :func:`predict_logits` takes it (views, or single images with
        ``views``).
    images : DeviceImages
        The device and normalisation; with ``reuse_buffers=True`` each input
        is overwritten by the next one.
    batch_size : int
        Images per loader batch, and views per forward batch.
    num_workers : int or None
        As :func:`~liftlearn.engine._loading.make_loader`.
    verbose : int
        A progress bar on a terminal when > 0.
    views : callable or None
        As :func:`predict_logits`.

    Yields
    ------
    n_images, n_views, inputs
        As :meth:`DeviceImages.forward_batches`, one loader batch at a time.
    """
    loader = make_loader(dataset, batch_size, images.device, num_workers,
                         collate_fn=None if views is None else PackedImages.collate)
    for batch in progress(loader, verbose, "predict", len(loader)):
        yield images.forward_batches(batch, batch_size, views)


def prediction_data(backbone, paths, *, tte: bool, tte_expand: int):
    """The evaluation data of ``paths``, as :func:`predict_logits` takes it.

    With TTE the loader resizes each image and the five overlapping crops
    are cut on the device (about a third of their pixels cross to it for a
    4:3 photo); without, one centre crop per image.

    Parameters
    ----------
    backbone : Backbone
        Gives the resolution.
    paths : sequence of path-like, or ImageSource
    tte : bool
    tte_expand : int
        Pixels added to the resolution before the five crops.

    Returns
    -------
    dataset : ImageDataset
        uint8 images (TTE) or views (no TTE).
    views : callable or None
        What cuts an image into its five views (TTE), else None.
    """
    size = backbone.image_size
    # uint8 pixels; the normalisation happens on the device.
    if tte:
        transform = tte_transform(size, expand=int(tte_expand))
        return ImageDataset(paths, transform.resized), transform.views
    return ImageDataset(paths, eval_transform(size)), None


def predict_images(
    network: nn.Module,
    backbone,
    paths,
    *,
    tte: bool,
    tte_expand: int,
    batch_size: int,
    device,
    num_workers=None,
    verbose: int = 0,
) -> np.ndarray:
    """Outputs of ``network`` for image files, with the backbone's evaluation
    transform (five-crop TTE when ``tte``), averaged over the views.

    The prediction path of every liftlearn estimator.

    Parameters
    ----------
    network : nn.Module
        Image batch -> logits (or features), already on ``device``.
    backbone : Backbone
        Gives the resolution and the normalisation.
    paths : sequence of str
        Already validated image files.

    Returns
    -------
    logits : ndarray of shape (n_images, n_outputs), float32
    """
    dataset, views = prediction_data(backbone, paths, tte=tte, tte_expand=tte_expand)
    return predict_logits(
        network,
        dataset,
        batch_size=int(batch_size),
        device=device,
        num_workers=num_workers,
        verbose=int(verbose),
        backbone=backbone,
        views=views,
    )
