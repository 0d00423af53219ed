"""Tests of liftlearn.engine.predict: device-side normalisation and TTE chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from liftlearn.data import ImageDataset
from liftlearn.engine import predict_images, predict_logits
from liftlearn.nn.backbones import get_backbone
from liftlearn.nn.networks import ZeroShotNetwork
from liftlearn.transforms import ImageNormalization, tte_transform


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + i, 36, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


class Recording(torch.nn.Module):
    """The network, remembering the batch size of every forward."""

    def __init__(self, network):
        super().__init__()
        self.network, self.backbone, self.sizes = network, network.backbone, []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.network(x)


@pytest.fixture(scope="module")
def network():
    bb = get_backbone("liftlearn-tiny-vit", "cpu")
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(3, bb.model.text_projection.shape[1]), dim=-1)
    return ZeroShotNetwork(bb, text, 10.0)


def test_tte_views_go_through_in_batches_of_batch_size(files, network):
    bb, cpu = network.backbone, torch.device("cpu")
    recording = Recording(network)
    got = predict_images(recording, bb, files, tte=True, tte_expand=6, batch_size=4, device=cpu)
    # 7 images: a batch of 4 (20 views) and one of 3 (15 views).
    assert recording.sizes == [4, 4, 4, 4, 4, 4, 4, 4, 3]
    # The reference: every view of every image in one forward, as before.
    views = torch.stack([ImageDataset(files, tte_transform(bb.image_size, expand=6))[i] for i in range(7)])
    with torch.no_grad():
        logits = network(ImageNormalization(bb.mean, bb.std)(views.flatten(0, 1)))
    expected = logits.view(7, 5, -1).mean(dim=1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_single_view_prediction_is_one_forward_per_batch(files, network):
    recording = Recording(network)
    predict_images(recording, network.backbone, files, tte=False, tte_expand=0, batch_size=4,
                   device=torch.device("cpu"))
    assert recording.sizes == [4, 3]


def test_float_datasets_are_taken_as_normalised(files, network):
    """A caller's own dataset of float views is used as it is."""
    bb, cpu = network.backbone, torch.device("cpu")
    floats = ImageDataset(files, tte_transform(bb.image_size, bb.mean, bb.std, expand=6))
    uint8 = ImageDataset(files, tte_transform(bb.image_size, expand=6))
    a = predict_logits(network, floats, batch_size=8, device=cpu)
    b = predict_logits(network, uint8, batch_size=8, device=cpu)
    assert np.array_equal(a, b)
