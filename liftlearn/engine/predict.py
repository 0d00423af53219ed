"""Prediction: logits (or features) of a network for images, TTE included."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .._device import autocast_for, network_dtype
from ..data import ImageDataset
from ..transforms import eval_transform, tte_transform
from ._loading import DeviceImages, make_loader, progress

__all__ = ["predict_images", "predict_logits"]


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
) -> np.ndarray:
    """Network outputs averaged over each image's views.

    ``dataset`` yields tensors of shape ``(n_views, 3, H, W)`` (1 view without
    TTE, 5 with): uint8 pixels, normalised on the device with the backbone's
    mean and std (:class:`~liftlearn.engine.DeviceImages`), or float32
    values already normalised. A batch of ``batch_size`` images holds
    ``n_views * batch_size`` views; they go through the network in forward
    batches of at most ``batch_size`` views, so TTE costs five forwards of the
    usual size instead of one five times as large (slower on a CPU, and five
    times the activation memory on a GPU).

    Parameters
    ----------
    backbone : Backbone or None
        Gives the normalisation; None: ``network.backbone``.

    Returns
    -------
    logits : ndarray of shape (n_images, n_outputs), float32
    """
    network.eval()
    autocast, _ = autocast_for(device, network_dtype(network))  # the backbone's precision
    images = DeviceImages(backbone, device) if backbone is not None else DeviceImages.of(network, device)
    loader = make_loader(dataset, batch_size, device, num_workers)
    out = []
    for views in progress(loader, verbose, "predict", len(loader)):
        b, v = views.shape[:2]
        # One copy to the device per batch (uint8: a quarter of the bytes),
        # then forward batches of at most batch_size views, in order.
        views = views.to(device, non_blocking=True).flatten(0, 1)
        logits = []
        for chunk in views.split(batch_size):
            with autocast:
                logits.append(network(images(chunk)).float())
        # Stay on the device: a copy per batch would be a host sync per batch.
        out.append(torch.cat(logits).view(b, v, -1).mean(dim=1))
    return torch.cat(out).cpu().numpy()


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
    size = backbone.image_size
    # uint8 views; the normalisation happens on the device (predict_logits).
    transform = tte_transform(size, expand=int(tte_expand)) if tte else eval_transform(size)
    return predict_logits(
        network,
        ImageDataset(paths, transform),
        batch_size=int(batch_size),
        device=device,
        num_workers=num_workers,
        verbose=int(verbose),
        backbone=backbone,
    )
