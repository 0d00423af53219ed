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


def test_tte_from_resized_images_is_the_views_path_bit_for_bit(files, network):
    """predict_images cuts the five views on the device from the resized
    images: the same logits as the dataset of stacked views."""
    bb, cpu = network.backbone, torch.device("cpu")
    got = predict_images(network, bb, files, tte=True, tte_expand=6, batch_size=3, device=cpu)
    views = ImageDataset(files, tte_transform(bb.image_size, expand=6))
    assert np.array_equal(got, predict_logits(network, views, batch_size=3, device=cpu))


def test_tte_with_a_worker_is_the_same(files, network):
    bb, cpu = network.backbone, torch.device("cpu")
    kw = dict(tte=True, tte_expand=6, batch_size=4, device=cpu)
    assert np.array_equal(predict_images(network, bb, files, num_workers=1, **kw),
                          predict_images(network, bb, files, num_workers=0, **kw))


def test_packed_images_pack_in_a_worker_and_stay_unpacked_here():
    from torch.utils.data import DataLoader

    from liftlearn.engine import PackedImages

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 5 + i, 4 + 2 * i), dtype=torch.uint8, generator=g)
              for i in range(5)]
    here = PackedImages.collate(images)
    assert here.data is None and len(here) == 5
    assert here.to("cpu") is here  # on the CPU nothing moves or packs
    loader = DataLoader(images, batch_size=3, num_workers=1, collate_fn=PackedImages.collate)
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 2]
    assert all(b.data is not None and b.data.dim() == 1 for b in batches)  # one tensor
    got = [image for b in batches for image in b.images()]
    assert all(torch.equal(a, b) for a, b in zip(got, images))
    packed = here.packed()
    assert packed.data.numel() == sum(i.numel() for i in images)
    assert all(torch.equal(a, b) for a, b in zip(packed.images(), images))
    with pytest.raises(TypeError, match="images, or their packed data"):
        PackedImages()


def test_reused_buffers_are_overwritten_and_grow():
    from liftlearn.engine import DeviceImages, PackedImages

    class Norm:
        mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)

    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    batch = lambda n: torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=g)  # noqa: E731
    fresh, reusing = DeviceImages(Norm, cpu), DeviceImages(Norm, cpu, reuse_buffers=True)
    a, b, c = batch(4), batch(2), batch(6)
    first = reusing(a)
    assert torch.equal(first, fresh(a))
    second = reusing(b)  # fewer images: the leading rows of the same memory
    assert second.data_ptr() == first.data_ptr() and torch.equal(second, fresh(b))
    third = reusing(c)  # more images: a larger buffer
    assert torch.equal(third, fresh(c))
    with pytest.raises(TypeError, match="needs views="):
        reusing.forward_batches(PackedImages([a[0]]), 2)


def test_a_network_returning_its_input_does_not_see_it_overwritten(files, network):
    """predict_logits reuses its input buffer: an output that is the input
    itself is copied before the next batch overwrites it."""
    bb, cpu = network.backbone, torch.device("cpu")

    class Pixels(torch.nn.Module):
        backbone = bb

        def forward(self, x):
            return x.flatten(1)  # a view of the input

    data = ImageDataset(files, tte_transform(bb.image_size, expand=6))
    got = predict_logits(Pixels(), data, batch_size=2, device=cpu)
    views = torch.stack([data[i] for i in range(len(files))])
    expected = ImageNormalization(bb.mean, bb.std)(views.flatten(0, 1)).flatten(1)
    np.testing.assert_array_equal(got, expected.view(len(files), 5, -1).mean(dim=1).numpy())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_images_pin_and_move_in_one_tensor():
    from liftlearn.engine import PackedImages

    images = [torch.full((3, 4 + i, 5), i, dtype=torch.uint8) for i in range(3)]
    pinned = PackedImages.collate(images).pin_memory()
    assert pinned.data.is_pinned() and pinned.data.dim() == 1
    moved = pinned.to("cuda", non_blocking=True)
    assert moved.data.is_cuda
    assert all(torch.equal(a.cpu(), b) for a, b in zip(moved.images(), images))


def test_views_and_datasets_that_do_not_match_are_refused_by_name(files, network):
    from liftlearn.engine import DeviceImages, PackedImages

    bb, cpu = network.backbone, torch.device("cpu")
    t = tte_transform(bb.image_size, expand=6)
    # A dataset of stacked views given views=: refused, naming views=None.
    with pytest.raises(ValueError, match=r"an item had shape \(5, 3.*takes views=None"):
        predict_logits(network, ImageDataset(files, t), batch_size=4, device=cpu, views=t.views)
    images = DeviceImages(bb, cpu)
    with pytest.raises(TypeError, match="takes views=None"):
        images.forward_batches(torch.zeros(2, 5, 3, 8, 8, dtype=torch.uint8), 2, t.views)
    # Items that are not single images.
    with pytest.raises(ValueError, match=r"an item had shape \(5, 3"):
        images.forward_batches(PackedImages([torch.zeros(5, 3, 8, 8, dtype=torch.uint8)]), 2, t.views)
    one = [torch.zeros(3, 9, 9, dtype=torch.uint8), torch.zeros(3, 9, 10, dtype=torch.uint8)]
    # Uneven view counts (4 + 6 would pass a check on the total).
    uneven = iter([[0] * 4, [0] * 6])
    with pytest.raises(ValueError, match=r"same, positive number of views.*\[4, 6\]"):
        images.forward_batches(PackedImages(one), 2, lambda image: next(uneven))
    with pytest.raises(ValueError, match=r"gave \[0\]"):
        images.forward_batches(PackedImages(one), 2, lambda image: [])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tte_on_cuda_through_the_pinning_loader_matches_the_views_path(files, network):
    from torch.utils.data import DataLoader

    from liftlearn.engine import PackedImages

    t = tte_transform(network.backbone.image_size, expand=6)
    loader = DataLoader(ImageDataset(files, t.resized), batch_size=3, num_workers=1,
                        pin_memory=True, collate_fn=PackedImages.collate)
    assert all(batch.data.is_pinned() for batch in loader)
    gpu = torch.device("cuda")
    net = network.to(gpu)
    try:
        got = predict_images(net, net.backbone, files, tte=True, tte_expand=6, batch_size=3,
                             device=gpu, num_workers=1)
        views = predict_logits(net, ImageDataset(files, t), batch_size=3, device=gpu)
        np.testing.assert_allclose(got, views, rtol=1e-5, atol=1e-5)
    finally:
        network.to("cpu")
