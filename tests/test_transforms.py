"""Tests of liftlearn.transforms (the LIFT+ image transforms)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from liftlearn.transforms import (
    MDA_SCHEDULES,
    ImageNormalization,
    MinimalistCrop,
    eval_transform,
    mda_min_scale,
    mda_schedule,
    train_transform,
    tte_transform,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's constants
STD = (0.26862954, 0.26130258, 0.27577711)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def normalized(img: Image.Image) -> torch.Tensor:
    """Reference to-tensor + normalize, written out independently."""
    x = torch.tensor(np.array(img), dtype=torch.float32).permute(2, 0, 1) / 255.0
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


# --- MDA schedule -----------------------------------------------------------


def test_convex_schedule_5_epochs():
    # 0.3915 at epoch 3 rounds to 0.391 (1 - sqrt(1 - 0.75**2) = 0.33856).
    expected = [0.080, 0.109, 0.203, 0.391, 1.000]
    assert mda_schedule(5) == pytest.approx(expected, abs=6e-4)


def test_convex_schedule_15_epochs():
    expected = [
        0.080,
        0.082,
        0.089,
        0.101,
        0.118,
        0.141,
        0.169,
        0.203,
        0.245,
        0.295,
        0.356,
        0.431,
        0.526,
        0.659,
        1.000,
    ]
    assert mda_schedule(15) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(
    "schedule, at_half",
    [
        ("linear", 0.5),
        ("concave", math.sqrt(0.75)),
        ("min", 0.0),
        ("max", 1.0),
        ("convex", 1 - math.sqrt(0.75)),
    ],
)
def test_schedule_shapes(schedule, at_half):
    assert mda_min_scale(2, 5, low=0.0, schedule=schedule) == pytest.approx(at_half)
    assert mda_min_scale(2, 5, low=0.2, schedule=schedule) == pytest.approx(
        0.2 + 0.8 * at_half
    )


@pytest.mark.parametrize("schedule", MDA_SCHEDULES)
def test_schedule_is_monotone_and_bounded(schedule):
    values = mda_schedule(20, low=0.1, schedule=schedule)
    assert all(0.1 <= v <= 1.0 for v in values)
    assert values == sorted(values)


def test_single_epoch_uses_start_of_schedule():
    assert mda_schedule(1) == [pytest.approx(0.08)]
    assert mda_min_scale(0, 1, schedule="max") == 1.0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(epoch=5, n_epochs=5), ValueError),
        (dict(epoch=-1, n_epochs=5), ValueError),
        (dict(epoch=0, n_epochs=0), ValueError),
        (dict(epoch=0, n_epochs=5, schedule="cosine"), ValueError),
        (dict(epoch=0, n_epochs=5, low=1.5), ValueError),
        (dict(epoch=1.0, n_epochs=5), TypeError),
    ],
)
def test_schedule_validation(kwargs, error):
    with pytest.raises(error):
        mda_min_scale(**kwargs)


def test_schedule_error_names_valid_choices():
    with pytest.raises(ValueError, match="convex"):
        mda_schedule(3, schedule="nope")


# --- MinimalistCrop ---------------------------------------------------------

image_sizes = st.one_of(
    st.tuples(st.integers(1, 8), st.integers(1, 8)),  # tiny images
    st.tuples(st.integers(1, 300), st.integers(1, 300)),  # incl. non-square
)


@settings(max_examples=300, deadline=None)
@given(
    hw=image_sizes,
    min_scale=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_crop_params_square_in_bounds_and_large_enough(hw, min_scale, seed):
    height, width = hw
    crop = MinimalistCrop(16, min_scale)
    top, left, side = crop.get_params(height, width, np.random.default_rng(seed))
    short = min(height, width)
    assert 1 <= side <= short
    assert 0 <= top <= height - side and 0 <= left <= width - side
    # The area fraction was drawn from [a, b] with a = min(min_scale, b),
    # so the (rounded) side is at least the rounded side of area a.
    largest = min(1.0, short * short / (height * width))
    smallest = min(min_scale, largest)
    assert side >= min(short, max(1, round(math.sqrt(height * width * smallest))))


@settings(max_examples=60, deadline=None)
@given(
    hw=image_sizes,
    size=st.integers(1, 24),
    min_scale=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_crop_output_is_resized_crop_of_drawn_box(hw, size, min_scale, seed):
    height, width = hw
    img = noise_image(width, height, seed % 1000)
    crop = MinimalistCrop(size, min_scale)
    out = crop(img, np.random.default_rng(seed))
    assert out.size == (size, size) and out.mode == "RGB"
    top, left, side = crop.get_params(height, width, np.random.default_rng(seed))
    expected = img.crop((left, top, left + side, top + side)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    assert np.array_equal(np.asarray(out), np.asarray(expected))


@settings(max_examples=100, deadline=None)
@given(hw=image_sizes, seed=st.integers(0, 2**32 - 1))
def test_min_scale_one_always_crops_largest_square(hw, seed):
    height, width = hw
    _, _, side = MinimalistCrop(8, 1.0).get_params(
        height, width, np.random.default_rng(seed)
    )
    assert side == min(height, width)


def test_crop_keeps_pixels_when_size_equals_side():
    # A 1.0-scale crop of a square image resized to its own size is the
    # image itself: no flip, no colour change.
    img = noise_image(20, 20)
    out = MinimalistCrop(20, 1.0)(img, np.random.default_rng(3))
    assert np.array_equal(np.asarray(out), np.asarray(img))


def test_same_seed_same_crop_and_different_seeds_differ():
    img = noise_image(97, 61)
    crop = MinimalistCrop(32, 0.08)
    a = crop(img, np.random.default_rng(42))
    b = crop(img, np.random.default_rng(42))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    others = [np.asarray(crop(img, np.random.default_rng(s))) for s in range(5)]
    assert any(not np.array_equal(np.asarray(a), o) for o in others)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=0, min_scale=0.5),
        dict(size=8, min_scale=1.5),
        dict(size=8, min_scale=0.5, interpolation="box-ish"),
    ],
)
def test_crop_validation(kwargs):
    with pytest.raises(ValueError):
        MinimalistCrop(**kwargs)


# --- tensors: train / eval / TTE --------------------------------------------


def test_train_transform_tensor():
    t = train_transform(24, 0.3, MEAN, STD)
    x = t(noise_image(50, 30), np.random.default_rng(0))
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    y = t(noise_image(50, 30), np.random.default_rng(0))
    assert torch.equal(x, y)


def test_eval_transform_shape_and_centre_crop():
    size = 28
    img = noise_image(64, 40)
    x = eval_transform(size, MEAN, STD)(img)
    assert x.shape == (1, 3, size, size) and x.dtype == torch.float32
    # Shorter side 40 -> 28 + 4 = 32, longer side 64 -> 51; then centre crop.
    resized = img.resize((51, 32), Image.Resampling.BICUBIC)
    left, top = round((51 - size) / 2), round((32 - size) / 2)
    ref = normalized(resized.crop((left, top, left + size, top + size)))
    assert torch.allclose(x[0], ref, atol=1e-5)


@pytest.mark.parametrize("width, height", [(32, 32), (90, 40), (33, 71)])
def test_tte_shape_and_centre_view(width, height):
    size, expand = 24, 8
    img = noise_image(width, height)
    x = tte_transform(size, MEAN, STD, expand=expand)(img)
    assert x.shape == (5, 3, size, size) and x.dtype == torch.float32
    # The fifth view is the centre crop of the resized image, which is what
    # a single-view transform with the same resize would produce.
    short = size + expand
    if width <= height:
        new = (short, int(short * height / width))
    else:
        new = (int(short * width / height), short)
    resized = img.resize(new, Image.Resampling.BICUBIC)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    ref = normalized(resized.crop((left, top, left + size, top + size)))
    assert torch.allclose(x[4], ref, atol=1e-5)
    # The first view is the top-left corner.
    assert torch.allclose(x[0], normalized(resized.crop((0, 0, size, size))), atol=1e-5)


@pytest.mark.parametrize("which", ["train", "eval", "tte"])
def test_normalisation_constants_applied(which):
    colour = (255, 0, 128)
    img = Image.new("RGB", (40, 30), colour)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    if which == "train":
        x = train_transform(16, 0.5, mean, std)(img, np.random.default_rng(0))
    elif which == "eval":
        x = eval_transform(16, mean, std)(img)
    else:
        x = tte_transform(16, mean, std)(img)
    expected = [(c / 255 - m) / s for c, m, s in zip(colour, mean, std)]
    channels = x.reshape(-1, 3, 16 * 16) if x.ndim == 4 else x.reshape(1, 3, -1)
    for ch in range(3):
        assert torch.allclose(channels[:, ch], torch.tensor(expected[ch]), atol=1e-5)


_MODES_TO_RGB = ["RGB", "1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB",
                 "HSV", "I", "I;16", "F"]


@settings(max_examples=60, deadline=None)
@given(width=st.integers(0, 70), height=st.integers(0, 70), seed=st.integers(0, 2**16),
       mode=st.sampled_from(_MODES_TO_RGB))
def test_uint8_chw_is_the_transposed_rgb_array(width, height, seed, mode):
    """The per-band conversion is numpy's view of the RGB image, transposed
    (empty images included)."""
    from liftlearn.data import _to_rgb
    from liftlearn.transforms import _to_uint8_chw

    img = noise_image(width, height, seed) if width * height else Image.new("RGB", (width, height))
    if mode != "RGB":
        img = img.convert(mode)
    chw = _to_uint8_chw(img)
    # Other modes as load_image converts them (alpha on white, wide modes scaled).
    expected = np.asarray(_to_rgb(img)).transpose(2, 0, 1)
    assert chw.dtype == torch.uint8 and chw.is_contiguous()
    assert np.array_equal(chw.numpy(), expected)


@pytest.mark.parametrize("width, height", [(341, 256), (4000, 3), (2, 40000)])
def test_uint8_chw_of_images_whose_bands_span_several_encoder_chunks(width, height, tmp_path):
    """Real TTE images' bands are larger than PIL's 64 KiB encoding chunk;
    also for an image still to be decoded from its file."""
    from liftlearn.transforms import _to_uint8_chw

    img = noise_image(width, height, 1)
    expected = np.asarray(img).transpose(2, 0, 1)
    assert np.array_equal(_to_uint8_chw(img).numpy(), expected)
    img.save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as lazy:
        assert np.array_equal(_to_uint8_chw(lazy).numpy(), expected)


def test_uint8_chw_of_a_file_whose_size_changes_when_decoded(tmp_path):
    """A reduced JPEG 2000 knows its final size only once loaded."""
    from PIL import features

    from liftlearn.transforms import _to_uint8_chw

    if not features.check("jpg_2000"):
        pytest.skip("Pillow built without JPEG 2000")
    noise_image(80, 64, 2).save(tmp_path / "x.jp2")
    with Image.open(tmp_path / "x.jp2") as lazy:
        lazy.reduce = 1
        chw = _to_uint8_chw(lazy)
        assert chw.shape == (3, 32, 40)
        assert np.array_equal(chw.numpy(), np.asarray(lazy).transpose(2, 0, 1))


def test_non_rgb_input_is_converted():
    x = eval_transform(8, MEAN, STD)(Image.new("L", (10, 10), 200))
    assert x.shape == (1, 3, 8, 8)


def _non_rgb(mode: str) -> Image.Image:
    rgb = noise_image(40, 30, seed=3)
    if mode == "P":
        return rgb.quantize(64)
    if mode == "RGBA":
        alpha = Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1)))
        img = rgb.copy()
        img.putalpha(alpha)
        return img
    if mode == "I;16":
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(grey)
        assert img.mode == "I;16"
        return img
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "I;16", "CMYK", "L"])
@pytest.mark.parametrize("which", ["train", "eval", "tte"])
def test_other_modes_give_what_their_rgb_image_gives(mode, which):
    # Converted as load_image converts (alpha on white, 16 bits scaled),
    # before any resampling: resized in its own mode a palette image was
    # resampled nearest-neighbour and an RGBA one lost its alpha to black.
    from liftlearn.data import decoded_rgb

    img = _non_rgb(mode)
    transform = {"train": lambda im: train_transform(16, 0.5)(im, np.random.default_rng(0)),
                 "eval": eval_transform(16), "tte": tte_transform(16, expand=4)}[which]
    expected = transform(decoded_rgb(img.copy()))
    assert torch.equal(transform(img), expected)


@pytest.mark.parametrize(
    "mean, std", [((0.5, 0.5), (0.5, 0.5, 0.5)), ((0.5,) * 3, (0.5, 0.0, 0.5)),
                  ((float("nan"),) * 3, (0.5,) * 3), ((0.5,) * 3, (float("inf"),) * 3)]
)
def test_normalisation_validation(mean, std):
    with pytest.raises(ValueError):
        eval_transform(8, mean, std)


def test_normalization_repr_names_the_class():
    assert repr(ImageNormalization(MEAN, STD)).startswith("ImageNormalization(mean=[")
    assert repr(eval_transform(8, MEAN, STD)).startswith("eval_transform(size=8, mean=[")


def test_transforms_pickle():
    img = noise_image(30, 20)
    for t in (eval_transform(8, MEAN, STD), tte_transform(8, MEAN, STD)):
        assert torch.equal(pickle.loads(pickle.dumps(t))(img), t(img))
    t = train_transform(8, 0.2, MEAN, STD)
    u = pickle.loads(pickle.dumps(t))
    assert torch.equal(
        u(img, np.random.default_rng(1)), t(img, np.random.default_rng(1))
    )
    assert "MinimalistCrop" in repr(t)


# --- uint8 output and the one normalisation ----------------------------------


def _torchvision_normalized(img: Image.Image, mean=MEAN, std=STD) -> torch.Tensor:
    """What the transforms gave before they shipped uint8: torchvision's
    pil_to_tensor + to_dtype(scale=True) + normalize."""
    from torchvision.transforms.v2 import functional as TF

    return TF.normalize(TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True), mean, std)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(1, 40), height=st.integers(1, 40),
       mean=st.tuples(*[st.floats(0, 1)] * 3), std=st.tuples(*[st.floats(0.01, 2)] * 3))
def test_image_normalization_is_torchvision_bit_for_bit(seed, width, height, mean, std):
    from liftlearn.transforms import ImageNormalization

    img = noise_image(width, height, seed)
    pixels = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())
    norm = ImageNormalization(mean, std)
    assert _same_bits(norm(pixels), _torchvision_normalized(img, mean, std))
    # A batch, as the loops normalise on the device, gives the same bits.
    assert _same_bits(norm(torch.stack([pixels, pixels]))[1], _torchvision_normalized(img, mean, std))


def test_image_normalization_divides_nothing():
    """x / 255 would round differently from torchvision's x * (1 / 255)."""
    from liftlearn.transforms import ImageNormalization

    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256)
    x = ImageNormalization((0.0,) * 3, (1.0,) * 3)(pixels)
    assert torch.equal(x, pixels.float() * (1.0 / 255))
    with pytest.raises(TypeError, match="uint8"):
        ImageNormalization(MEAN, STD)(x)


def _uint8_and_float(which):
    """(transform without mean/std, transform with them, call)."""
    from liftlearn.transforms import strong_transform, weak_transform

    rng = lambda: np.random.default_rng(3)  # noqa: E731
    makers = {
        "train": (lambda *ms: train_transform(20, 0.3, *ms), True),
        "eval": (lambda *ms: eval_transform(20, *ms), False),
        "tte": (lambda *ms: tte_transform(20, *ms, expand=6), False),
        "weak": (lambda *ms: weak_transform(20, *ms), True),
        "strong": (lambda *ms: strong_transform(20, *ms), True),
    }
    make, random = makers[which]
    call = (lambda t, img: t(img, rng())) if random else (lambda t, img: t(img))
    return make(), make(MEAN, STD), call


@pytest.mark.parametrize("which", ["train", "eval", "tte", "weak", "strong"])
def test_transforms_ship_contiguous_uint8_that_normalise_to_their_float_output(which):
    from liftlearn.transforms import ImageNormalization

    plain, normalising, call = _uint8_and_float(which)
    img = noise_image(45, 33, 7)
    pixels = call(plain, img)
    assert pixels.dtype == torch.uint8 and pixels.is_contiguous()
    assert pixels.shape[-3:] == (3, 20, 20)
    assert _same_bits(ImageNormalization(MEAN, STD)(pixels), call(normalising, img))
    u = pickle.loads(pickle.dumps(plain))
    assert torch.equal(call(u, img), pixels)


def test_float_output_is_what_torchvision_gave():
    """The float transforms keep their old values bit for bit (golden fits
    and direct callers depend on them)."""
    img = noise_image(61, 47, 2)
    crop = MinimalistCrop(24, 0.3)
    expected = _torchvision_normalized(crop(img, np.random.default_rng(5)))
    assert _same_bits(train_transform(24, 0.3, MEAN, STD)(img, np.random.default_rng(5)), expected)
    # TTE cuts its five crops from the resized image's array: the same
    # pixels as five_crop on the PIL image.
    from torchvision.transforms.v2 import functional as TF

    resized = TF.resize(img, [30], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    expected = torch.stack([_torchvision_normalized(c) for c in TF.five_crop(resized, [24])])
    assert _same_bits(tte_transform(24, MEAN, STD, expand=6)(img), expected)


def test_mean_without_std_is_refused():
    with pytest.raises(ValueError, match="both mean and std"):
        eval_transform(8, MEAN)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), size=st.integers(1, 40))
def test_five_crop_views_are_torchvision_five_crop(height, width, size):
    """One box definition serves the TTE transform and the device-side views."""
    from torchvision.transforms.v2 import functional as TF

    from liftlearn.transforms import _five_crop_views

    image = torch.arange(3 * height * width, dtype=torch.int32).view(3, height, width)
    if size > height or size > width:
        with pytest.raises(ValueError, match="larger than the image"):
            _five_crop_views(image, size)
        return
    views = _five_crop_views(image, size)
    expected = TF.five_crop(image, [size])
    assert len(views) == 5
    assert all(torch.equal(a, b) for a, b in zip(views, expected))
    # numpy arrays are cut the same way (the transform cuts in numpy).
    arrays = _five_crop_views(image.numpy(), size)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(arrays, expected))


def test_tte_halves_make_the_whole_transform():
    """resized + views on the device = the transform's five views, bit for bit."""
    img = noise_image(53, 37, 4)
    for normalising in (False, True):
        t = tte_transform(20, *((MEAN, STD) if normalising else ()), expand=5)
        views = torch.stack(t.views(t.resized(img)))
        assert t.resized(img).dtype == torch.uint8 and t.resized(img).shape == (3, 25, int(25 * 53 / 37))
        if normalising:
            views = ImageNormalization(MEAN, STD)(views)
        assert _same_bits(t(img), views)


def test_normalization_into_a_buffer_is_the_same_bits():
    images = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    norm = ImageNormalization(MEAN, STD)
    out = torch.full((4, 3, 9, 7), float("nan"))
    got = norm(images, out=out)
    assert got is out and _same_bits(got, norm(images))
    for bad in (torch.empty(4, 3, 9, 7, dtype=torch.float64), torch.empty(3, 3, 9, 7),
                torch.empty(4, 3, 9, 7, device="meta")):
        with pytest.raises(ValueError, match="out must be float32 of shape"):
            norm(images, out=bad)
