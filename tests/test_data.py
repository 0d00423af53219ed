"""Tests of liftlearn.data (image loading, path checks, datasets)."""

from __future__ import annotations

import io
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from liftlearn.data import ImageDataset, TrainDataset, check_paths, find_bad_images, load_image
from liftlearn.exceptions import BadImageError
from liftlearn.transforms import eval_transform, train_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=np.uint8
    )


@pytest.fixture
def jpeg(tmp_path) -> Path:
    path = tmp_path / "photo.jpg"
    Image.fromarray(noise(64, 48)).save(path, quality=95)
    return path


# --- load_image: colour modes ----------------------------------------------


def test_grey_l(tmp_path):
    path = tmp_path / "l.png"
    Image.new("L", (5, 4), 77).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (5, 4)
    assert img.getpixel((0, 0)) == (77, 77, 77)


def test_la_transparent_becomes_white(tmp_path):
    arr = np.zeros((4, 6, 2), dtype=np.uint8)
    arr[:, :3] = (10, 0)  # transparent
    arr[:, 3:] = (50, 255)  # opaque grey
    path = tmp_path / "la.png"
    Image.fromarray(arr, "LA").save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((5, 0)) == (50, 50, 50)


def test_premultiplied_la_in_memory_is_converted_as_la():
    # PIL converts La only to LA: it was refused as a corrupt image.
    from liftlearn.data import decoded_rgb

    arr = np.zeros((4, 6, 2), dtype=np.uint8)
    arr[:, :3] = (0, 0)
    arr[:, 3:] = (50, 255)
    la = Image.fromarray(arr, "LA")
    out = decoded_rgb(la.convert("La"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((5, 0)) == (50, 50, 50)
    assert np.array_equal(np.asarray(out), np.asarray(decoded_rgb(la)))


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((3, 3), 1)
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)  # index 0 is transparent
    assert out.getpixel((3, 3)) == (255, 0, 0)


def test_palette_without_transparency(tmp_path):
    img = Image.new("P", (3, 3), 1)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    path = tmp_path / "p.gif"
    img.save(path)
    assert load_image(path).getpixel((1, 1)) == (0, 200, 0)


def test_rgba_composited_on_white(tmp_path):
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 0] = (0, 0, 0, 0)
    arr[0, 1] = (255, 0, 0, 255)
    arr[1, 0] = (0, 0, 0, 128)
    path = tmp_path / "rgba.png"
    Image.fromarray(arr, "RGBA").save(path)
    img = load_image(path)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (255, 0, 0)
    assert all(abs(v - 127) <= 1 for v in img.getpixel((0, 1)))  # half black on white


def test_cmyk(tmp_path):
    path = tmp_path / "cmyk.tiff"
    Image.new("CMYK", (3, 3), (0, 255, 255, 0)).save(path)  # pure red
    img = load_image(path)
    assert img.mode == "RGB" and img.getpixel((1, 1)) == (255, 0, 0)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(path, quality=100)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (8, 8)


def test_16_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 65535, 257 * 100, 1000]], dtype=np.uint16)
    path = tmp_path / "i16.png"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    values = [img.getpixel((x, 0))[0] for x in range(4)]
    assert values == [0, 255, 100, 4]  # PIL's own convert would clip 1000 to 255


def test_float_image(tmp_path):
    arr = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "f.tiff"
    Image.fromarray(arr, "F").save(path)
    img = load_image(path)
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.array([[0, 257 * 10, 65535]], dtype=np.int32), [0, 10, 255]),  # 16-bit
        (np.array([[-50, 0, 200]], dtype=np.int32), [0, 51, 255]),  # stretched
        (np.array([[-1.0, 0.0, 1.0]], dtype=np.float32), [0, 128, 255]),
    ],
)
def test_wide_integer_and_float_modes(tmp_path, arr, expected):
    path = tmp_path / "wide.tiff"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert [img.getpixel((x, 0))[0] for x in range(3)] == expected


def test_upright_image_is_not_copied_and_outlives_its_file(jpeg, monkeypatch):
    """No EXIF rotation: the decoded image is returned as is (no full-image
    copy), and it no longer depends on the file."""
    from PIL import ImageOps

    expected = np.asarray(Image.open(jpeg).convert("RGB")).copy()
    calls = []
    real_copy, real_transpose = Image.Image.copy, ImageOps.exif_transpose
    monkeypatch.setattr(Image.Image, "copy", lambda self: calls.append("copy") or real_copy(self))
    monkeypatch.setattr(ImageOps, "exif_transpose",
                        lambda *a, **k: calls.append("exif") or real_transpose(*a, **k))
    img = load_image(jpeg)
    assert calls == []
    jpeg.write_bytes(b"replaced")
    assert np.array_equal(np.asarray(img), expected)


def test_exif_rotation_applied(tmp_path):
    arr = noise(40, 20)
    arr[:, :20] = 0  # dark left half, to see where it goes
    arr[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    img = load_image(path)
    assert img.size == (20, 40)  # width and height swapped
    # The dark left half ends up at the top after a clockwise turn.
    assert sum(img.getpixel((10, 5))) < 100 and sum(img.getpixel((10, 35))) > 600


@pytest.mark.parametrize(
    "ext, lossless",
    [("png", True), ("jpg", False), ("bmp", True), ("webp", False), ("tiff", True)],
)
def test_formats(tmp_path, ext, lossless):
    arr = noise(17, 11)
    path = tmp_path / f"img.{ext}"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (17, 11)
    if lossless:
        assert np.array_equal(np.asarray(img), arr)


def test_str_and_pathlike_accepted(jpeg):
    assert load_image(str(jpeg)).size == load_image(jpeg).size == (64, 48)


# --- load_image: failures ---------------------------------------------------


def _bad(path) -> BadImageError:
    with pytest.raises(BadImageError) as info:
        load_image(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    assert _bad(tmp_path / "nope.jpg").reason == "no such file"


def test_directory(tmp_path):
    assert _bad(tmp_path).reason == "is a directory"


def test_text_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image at all\n")
    assert _bad(path).reason == "not an image PIL can read"


def test_truncated_jpeg(tmp_path, jpeg):
    data = jpeg.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert _bad(path).reason.startswith("truncated or corrupt")


def test_header_check_catches_a_jpeg_cut_short_and_keeps_appended_data(tmp_path):
    # A download cut short: whole header, part of the pixel data.
    data = io.BytesIO()
    Image.fromarray(noise(200, 150)).save(data, format="JPEG", quality=90)
    data = data.getvalue()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    # Data after the end-of-image marker (motion photos append a video).
    appended = tmp_path / "motion.jpg"
    appended.write_bytes(data + b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data)
    found = find_bad_images([str(whole), str(cut), str(appended)], mode="header")
    assert [(i, reason.split(":")[0]) for i, reason in found] == [(1, "truncated or corrupt")]
    assert find_bad_images([str(whole), str(cut), str(appended)], mode="decode") == found


def test_bad_image_error_is_value_error_and_pickles(tmp_path):
    err = _bad(tmp_path / "gone.png")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason) == (err.path, err.reason)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_no_file_left_open(tmp_path, jpeg):
    text = tmp_path / "t.png"
    text.write_text("x")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg.read_bytes()[:300])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_image(jpeg)
        for bad in (text, cut, tmp_path / "missing.jpg"):
            with pytest.raises(BadImageError):
                load_image(bad)
    assert len(os.listdir("/proc/self/fd")) <= before


# --- check_paths ------------------------------------------------------------


def test_check_paths_returns_object_array(jpeg):
    out = check_paths([jpeg, str(jpeg)])
    assert out.dtype == object and out.shape == (2,)
    assert list(out) == [str(jpeg), str(jpeg)] and all(type(p) is str for p in out)
    assert list(check_paths(np.array([str(jpeg)]))) == [str(jpeg)]
    assert list(check_paths((jpeg,))) == [str(jpeg)]


def test_check_paths_accepts_series_like(jpeg):
    class SeriesLike:  # pandas is optional, so mimic Series.to_numpy
        def to_numpy(self):
            return np.array([str(jpeg)], dtype=object)

    assert list(check_paths(SeriesLike())) == [str(jpeg)]


def test_check_paths_single_string(jpeg):
    with pytest.raises(ValueError, match="list"):
        check_paths(str(jpeg))
    with pytest.raises(ValueError, match="list"):
        check_paths(jpeg)


@pytest.mark.parametrize(
    "X, error, match",
    [
        ([], ValueError, "empty"),
        (np.array([["a"], ["b"]]), ValueError, "1-D"),
        ([1, 2], TypeError, r"X\[0\]"),
        ({"a": 1}, TypeError, "list"),
    ],
)
def test_check_paths_shape_and_type_errors(X, error, match):
    with pytest.raises(error, match=match):
        check_paths(X)


def test_check_paths_reports_first_bad_and_count(tmp_path, jpeg):
    missing = [tmp_path / f"missing{i}.jpg" for i in range(3)]
    with pytest.raises(BadImageError) as info:
        check_paths(
            [jpeg, missing[0], jpeg, missing[1], tmp_path, missing[2]], name="paths"
        )
    assert info.value.path == str(missing[0])
    assert "no such file" in info.value.reason
    assert "3 other" in info.value.reason and "paths" in info.value.reason


def test_check_paths_directory(tmp_path):
    with pytest.raises(BadImageError, match="is a directory"):
        check_paths([tmp_path])


def test_check_paths_does_not_decode(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("not decoded here")
    assert list(check_paths([path])) == [str(path)]


def test_check_paths_is_fast(jpeg):
    paths = [str(jpeg)] * 100_000
    start = time.perf_counter()
    check_paths(paths)
    # Well under a second on a laptop; the bound leaves room for slow CI.
    assert time.perf_counter() - start < 2.0


# --- datasets ---------------------------------------------------------------


@pytest.fixture
def image_files(tmp_path) -> list[str]:
    paths = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(noise(48 + 4 * i, 40, seed=i)).save(path)
        paths.append(str(path))
    return paths


def _train_ds(paths, epoch=0, seed=7):
    return TrainDataset(
        paths,
        np.arange(len(paths)) % 3,
        train_transform(16, 0.08, MEAN, STD),
        seed=seed,
        epoch=epoch,
    )


def test_train_dataset_items(image_files):
    ds = _train_ds(image_files)
    assert len(ds) == 6
    x, y = ds[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert y == 1 and type(y) is int


def test_train_dataset_reproducible(image_files):
    a, b = _train_ds(image_files), _train_ds(image_files)
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0])
    assert torch.equal(a[-1][0], a[5][0])  # negative index, same random stream


def test_train_dataset_epoch_and_seed_change_crop(image_files):
    base = _train_ds(image_files, epoch=0)
    later = _train_ds(image_files, epoch=1)
    other_seed = _train_ds(image_files, seed=8)
    assert any(not torch.equal(base[i][0], later[i][0]) for i in range(6))
    assert any(not torch.equal(base[i][0], other_seed[i][0]) for i in range(6))


def test_train_dataset_validation(image_files):
    t = train_transform(16, 0.5, MEAN, STD)
    with pytest.raises(ValueError, match="length"):
        TrainDataset(image_files, [0, 1], t, seed=0, epoch=0)
    with pytest.raises(ValueError, match="seed"):
        TrainDataset(image_files, [0] * 6, t, seed=-1, epoch=0)
    with pytest.raises(IndexError):
        _train_ds(image_files)[6]


def test_train_dataset_bad_file_names_path(tmp_path, image_files):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    ds = _train_ds(image_files + [str(bad)])
    with pytest.raises(BadImageError, match="bad.jpg"):
        ds[6]


def test_datasets_pickle(image_files):
    ds = pickle.loads(pickle.dumps(_train_ds(image_files)))
    assert torch.equal(ds[2][0], _train_ds(image_files)[2][0])
    ev = ImageDataset(image_files, eval_transform(16, MEAN, STD))
    assert torch.equal(pickle.loads(pickle.dumps(ev))[0], ev[0])


def _collect(ds, num_workers):
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=num_workers)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_dataloader_workers_match_single_process(image_files):
    ds = _train_ds(image_files, epoch=3)
    x0, y0 = _collect(ds, 0)
    x2, y2 = _collect(ds, 2)
    assert x0.shape == (6, 3, 16, 16)
    assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_image_dataset(image_files):
    ds = ImageDataset([Path(p) for p in image_files], eval_transform(16, MEAN, STD))
    assert len(ds) == 6
    x = ds[1]
    assert x.shape == (1, 3, 16, 16)
    assert torch.equal(x, eval_transform(16, MEAN, STD)(load_image(image_files[1])))
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch.shape == (3, 1, 3, 16, 16)


def test_datasets_ship_uint8_that_the_device_normalises(image_files):
    """The estimators' datasets yield uint8 pixels (batched by the loader
    as they are); normalised where they reach the device, they are exactly
    the float tensors a normalising transform gives."""
    from liftlearn.engine import DeviceImages

    class Norm:
        mean, std = MEAN, STD

    train = TrainDataset(image_files, np.zeros(6), train_transform(16, 0.08), seed=7, epoch=0)
    x, _ = train[2]
    assert x.dtype == torch.uint8 and x.is_contiguous()
    batch = next(iter(DataLoader(train, batch_size=6)))[0]
    assert batch.dtype == torch.uint8 and batch.shape == (6, 3, 16, 16)
    device_input = DeviceImages(Norm, torch.device("cpu"))(batch)
    assert torch.equal(device_input, torch.stack([_train_ds(image_files)[i][0] for i in range(6)]))
    views = ImageDataset(image_files, eval_transform(16))[1]
    assert views.dtype == torch.uint8
    assert torch.equal(DeviceImages(Norm, torch.device("cpu"))(views),
                       ImageDataset(image_files, eval_transform(16, MEAN, STD))[1])
    already = torch.randn(2, 3, 16, 16)  # a float batch is taken as normalised
    assert DeviceImages(None, torch.device("cpu"))(already) is already
    with pytest.raises(TypeError, match="mean and std"):
        DeviceImages(None, torch.device("cpu"))(batch)


# --- find_bad_images ----------------------------------------------------------




@pytest.fixture
def mixed_folder(tmp_path, jpeg):
    """Good and bad files: (paths, {index: reason prefix} per mode)."""
    data = jpeg.read_bytes()
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cut_jpeg = tmp_path / "cut.jpg"  # header intact, body cut: no end-of-image marker
    cut_jpeg.write_bytes(data[: len(data) // 2])
    png = tmp_path / "ok.png"
    Image.fromarray(noise(30, 20)).save(png)
    cut_png = tmp_path / "cut.png"  # PNG's verify() walks the chunks
    cut_png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    head_only = tmp_path / "head.jpg"  # not even a full header
    head_only.write_bytes(data[:20])
    paths = [
        jpeg, text, png, tmp_path / "missing.webp", tmp_path, empty, cut_jpeg,
        str(png), cut_png, head_only,
    ]
    header = {
        1: "not an image PIL can read",
        3: "no such file",
        4: "is a directory",
        5: "not an image PIL can read",
        6: "truncated or corrupt",
        8: "truncated or corrupt",
        9: "",
    }
    return paths, {"header": header, "decode": header}


@pytest.mark.parametrize("mode", ["header", "decode"])
@pytest.mark.parametrize("n_jobs", [1, 3, None, -1])
def test_find_bad_images_kinds_and_order(mixed_folder, mode, n_jobs):
    paths, expected = mixed_folder
    bad = find_bad_images(paths, mode=mode, n_jobs=n_jobs)
    assert [i for i, _ in bad] == sorted(expected[mode])
    for i, reason in bad:
        assert reason.startswith(expected[mode][i]), (i, reason)


def test_find_bad_images_reasons_match_load_image(mixed_folder):
    paths, _ = mixed_folder
    for i, reason in find_bad_images(paths, mode="decode"):
        with pytest.raises(BadImageError) as info:
            load_image(paths[i])
        assert info.value.reason == reason


def test_find_bad_images_all_good_and_empty(image_files):
    assert find_bad_images(image_files) == []
    assert find_bad_images(image_files, mode="decode", n_jobs=2) == []
    assert find_bad_images([]) == []
    assert find_bad_images(np.array(image_files, dtype=object)) == []


def test_find_bad_images_many_threads_keep_order(tmp_path, image_files):
    missing = str(tmp_path / "missing.png")
    paths = [image_files[i % 6] if i % 7 else missing for i in range(200)]
    expected = [(i, "no such file") for i in range(0, 200, 7)]
    for n_jobs in (1, 2, 8, 64):
        assert find_bad_images(paths, n_jobs=n_jobs) == expected
        assert find_bad_images(paths, mode="decode", n_jobs=n_jobs) == expected


def test_find_bad_images_non_path_entries(jpeg):
    bad = find_bad_images([jpeg, None, 3, str(jpeg)])
    assert bad == [(1, "not a path but NoneType"), (2, "not a path but int")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("mode", ["header", "decode"])
def test_find_bad_images_fifo_does_not_block(tmp_path, mode):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert find_bad_images([fifo], mode=mode) == [(0, "not a regular file")]


def test_find_bad_images_decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (8, 8)).save(path)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 16  # errors above 2 * 16 pixels
    try:
        for mode in ("header", "decode"):
            [(i, reason)] = find_bad_images([path], mode=mode)
            assert i == 0 and reason.startswith("too large to decode safely")
        with pytest.raises(BadImageError, match="too large"):
            load_image(path)
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_load_image_bomb_warning_as_error_is_bad_image(tmp_path):
    # Between 1x and 2x MAX_IMAGE_PIXELS PIL only warns; where warnings are
    # errors, the warning must still come out as a BadImageError.
    import warnings

    path = tmp_path / "big.png"
    Image.new("L", (6, 5)).save(path)
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 20
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with pytest.raises(BadImageError, match="too large"):
                load_image(path)
    finally:
        Image.MAX_IMAGE_PIXELS = old


def test_load_image_one_pixel(tmp_path):
    for ext in ("png", "jpg", "webp", "bmp", "tiff", "gif"):
        path = tmp_path / f"one.{ext}"
        Image.new("RGB", (1, 1), (200, 10, 10)).save(path)
        img = load_image(path)
        assert img.mode == "RGB" and img.size == (1, 1)
    assert find_bad_images(sorted(tmp_path.iterdir()), mode="decode") == []


@pytest.mark.parametrize(
    "paths, error",
    [("a.jpg", ValueError), (Path("a.jpg"), ValueError), (np.array([["a"]]), ValueError),
     ({"a.jpg"}, TypeError)],
)
def test_find_bad_images_argument_errors(paths, error):
    with pytest.raises(error):
        find_bad_images(paths)


@pytest.mark.parametrize("kwargs", [{"mode": "full"}, {"n_jobs": 0}, {"n_jobs": 1.5},
                                    {"n_jobs": True}, {"n_jobs": -2}])
def test_find_bad_images_parameter_errors(jpeg, kwargs):
    with pytest.raises(ValueError):
        find_bad_images([jpeg], **kwargs)


def test_find_bad_images_header_is_fast(jpeg):
    paths = [str(jpeg)] * 2000
    start = time.perf_counter()
    assert find_bad_images(paths) == []
    # A few thousand per second even on slow CI; typically >10,000/s.
    assert time.perf_counter() - start < 4.0
