"""Prediction: logits (or features) of a network for images, TTE included."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .._device import autocast_for, network_dtype
from ..data import ImageDataset
from ..transforms import eval_transform, tte_transform
from ._loading import make_loader, progress

__all__ = ["predict_images", "predict_logits"]


@torch.no_grad()
def predict_logits(
    network: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    num_workers=None,
    verbose: int = 0,
) -> np.ndarray:
    """Network outputs averaged over each image's views.

    ``dataset`` yields tensors of shape ``(n_views, 3, H, W)`` (1 view without
    TTE, 5 with); all views of a batch run through the network together.

    Returns
    -------
    logits : ndarray of shape (n_images, n_outputs), float32
    """
    network.eval()
    autocast, _ = autocast_for(device, network_dtype(network))  # the backbone's precision
    loader = make_loader(dataset, batch_size, device, num_workers)
    out = []
    for views in progress(loader, verbose, "predict", len(loader)):
        b, v = views.shape[:2]
        views = views.to(device, non_blocking=True).flatten(0, 1)
        with autocast:
            logits = network(views)
        # Stay on the device: a copy per batch would be a host sync per batch.
        out.append(logits.float().view(b, v, -1).mean(dim=1))
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
    size, mean, std = backbone.image_size, backbone.mean, backbone.std
    if tte:
        transform = tte_transform(size, mean, std, expand=int(tte_expand))
    else:
        transform = eval_transform(size, mean, std)
    return predict_logits(
        network,
        ImageDataset(paths, transform),
        batch_size=int(batch_size),
        device=device,
        num_workers=num_workers,
        verbose=int(verbose),
    )
