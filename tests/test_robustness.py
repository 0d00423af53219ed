"""Property-based robustness tests: odd images, broken files, odd labels.

Every input either works or fails with one of the documented errors
(:class:`~liftlearn.exceptions.BadImageError` naming the file, or a
``ValueError`` naming the problem); nothing else escapes.
"""

from __future__ import annotations

import inspect
import io
import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from liftlearn import LiftPlusClassifier
from liftlearn._labels import resolve_labels
from liftlearn.data import find_bad_images, load_image
from liftlearn.exceptions import BadImageError
from liftlearn.transforms import eval_transform, train_transform, tte_transform

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SIZE = 32
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
MODES = ("1", "L", "LA", "P", "P+t", "RGB", "RGBA", "CMYK", "I;16", "I", "F")
EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff", "GIF": "gif"}
# Formats whose writer stores an EXIF block that exif_transpose reads.
EXIF_FORMATS = ("JPEG", "PNG")

_counter = itertools.count()


def _pixels(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """A noise image of ``mode`` (``"P+t"``: palette with a transparent index)."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w)).astype(bool))
    if mode == "I;16":
        return Image.frombytes("I;16", size, rng.integers(0, 65536, (h, w), dtype="<u2").tobytes())
    if mode == "I":
        low, high = sorted(rng.integers(-(2**31), 2**31 - 1, 2))
        return Image.fromarray(rng.integers(low, high + 1, (h, w), dtype=np.int32))
    if mode == "F":
        arr = rng.normal(0, 10.0 ** int(rng.integers(-3, 6)), (h, w)).astype(np.float32)
        if rng.random() < 0.3:  # non-finite pixels
            arr.flat[rng.integers(0, arr.size)] = rng.choice([np.nan, np.inf, -np.inf])
        return Image.fromarray(arr)
    base = "P" if mode == "P+t" else mode
    bands = Image.getmodebands(base)
    img = Image.frombytes(base, size, rng.integers(0, 256, w * h * bands, dtype=np.uint8).tobytes())
    if base == "P":
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    return img


def _save_kwargs(mode: str, fmt: str) -> dict:
    kw = {}
    if mode == "P+t" and fmt in ("PNG", "GIF"):
        kw["transparency"] = 0
    if fmt in ("JPEG", "WEBP"):
        kw["quality"] = 80
    return kw


def _writable(mode: str, fmt: str) -> bool:
    if mode == "P+t" and fmt not in ("PNG", "GIF"):
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _pixels(mode, (3, 2), 0).save(io.BytesIO(), fmt, **_save_kwargs(mode, fmt))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


# (mode, format) pairs this Pillow can write, found once at import.
WRITABLE = [(m, f) for m in MODES for f in FORMATS if _writable(m, f)]


@st.composite
def image_specs(draw):
    mode, fmt = draw(st.sampled_from(WRITABLE))
    small = st.integers(1, 24)
    w = draw(st.one_of(small, st.integers(1, 300)))
    h = draw(st.one_of(small, st.integers(1, 300)))
    orientation = None
    if fmt in EXIF_FORMATS and draw(st.booleans()):
        orientation = draw(st.integers(1, 8))
    return mode, fmt, (w, h), orientation, draw(st.integers(0, 2**32 - 1))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("odd_images")


def _write_image(folder, spec) -> str:
    mode, fmt, size, orientation, seed = spec
    img = _pixels(mode, size, seed)
    kw = _save_kwargs(mode, fmt)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    path = folder / f"img{next(_counter)}.{EXT[fmt]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img.save(path, fmt, **kw)
    return str(path)


BROKEN_KINDS = ("truncated", "corrupted", "random", "empty", "directory", "missing", "text")


@st.composite
def broken_files(draw, folder):
    """A path to something that may or may not load: returned with its kind."""
    kind = draw(st.sampled_from(BROKEN_KINDS))
    path = folder / f"broken{next(_counter)}.{draw(st.sampled_from(sorted(EXT.values())))}"
    if kind in ("truncated", "corrupted"):
        data = bytearray(open(_write_image(folder, draw(image_specs())), "rb").read())
        if kind == "truncated":
            data = data[: draw(st.integers(0, len(data) - 1))]
        else:
            for _ in range(draw(st.integers(1, 8))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        path.write_bytes(bytes(data))
    elif kind == "random":
        path.write_bytes(draw(st.binary(min_size=1, max_size=2000)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text(draw(st.text(max_size=200)), encoding="utf-8")
    return str(path), kind  # "missing": never created


def _expected_size(spec) -> tuple[int, int]:
    _, _, (w, h), orientation, _ = spec
    return (h, w) if orientation is not None and orientation >= 5 else (w, h)


def _load_or_bad(path):
    """load_image's result, or its BadImageError; anything else fails the test."""
    try:
        img = load_image(path)
    except BadImageError as err:
        assert err.path == str(path) and str(path) in str(err)
        assert err.reason
        return err
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    return img


def fast(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck)
    )


# --- (a) load_image ---------------------------------------------------------


@fast(80)
@given(spec=image_specs())
def test_valid_images_load_as_rgb_of_right_size(folder, spec):
    path = _write_image(folder, spec)
    img = _load_or_bad(path)
    assert not isinstance(img, BadImageError), f"{spec}: {img}"
    assert img.size == _expected_size(spec)
    assert np.asarray(img).shape == (img.size[1], img.size[0], 3)


@fast(80)
@given(data=st.data())
def test_broken_files_load_or_raise_bad_image_error(folder, data):
    path, kind = data.draw(broken_files(folder))
    result = _load_or_bad(path)
    if kind in ("random", "empty", "directory", "missing", "text"):
        # Random bytes could in theory form an image, but not in 2000 bytes
        # drawn by hypothesis without a valid signature and header.
        assert isinstance(result, BadImageError), kind


# --- (b) find_bad_images flags exactly what load_image rejects -------------


@fast(25)
@given(data=st.data())
def test_find_bad_images_decode_matches_load_image(folder, data):
    entries = data.draw(
        st.lists(
            st.one_of(
                image_specs().map(lambda spec: _write_image(folder, spec)),
                broken_files(folder).map(lambda pk: pk[0]),
            ),
            min_size=0,
            max_size=8,
        )
    )
    n_jobs = data.draw(st.sampled_from([1, 2, None]))
    expected = []
    for i, path in enumerate(entries):
        result = _load_or_bad(path)
        if isinstance(result, BadImageError):
            expected.append((i, result.reason))
    assert find_bad_images(entries, mode="decode", n_jobs=n_jobs) == expected
    # The cheap check never rejects a loadable file.
    header = find_bad_images(entries, mode="header", n_jobs=n_jobs)
    assert {i for i, _ in header} <= {i for i, _ in expected}
    assert [i for i, _ in header] == sorted(i for i, _ in header)


# --- (c) transforms on any loadable image ----------------------------------

TRANSFORMS = {
    "train": train_transform(SIZE, 0.08, MEAN, STD),
    "eval": eval_transform(SIZE, MEAN, STD),
    "tte": tte_transform(SIZE, MEAN, STD, expand=4),
}


@fast(40)
@given(spec=image_specs(), seed=st.integers(0, 2**32 - 1))
def test_transforms_give_finite_tensors(folder, spec, seed):
    img = load_image(_write_image(folder, spec))
    x = TRANSFORMS["train"](img, np.random.default_rng(seed))
    assert x.shape == (3, SIZE, SIZE)
    ev = TRANSFORMS["eval"](img)
    assert ev.shape[-3:] == (3, SIZE, SIZE) and ev.numel() == 3 * SIZE * SIZE
    tte = TRANSFORMS["tte"](img)
    assert tte.shape == (5, 3, SIZE, SIZE)
    for t in (x, ev, tte):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()


# --- (d) labels ---------------------------------------------------------------

_label_values = st.one_of(
    st.integers(-2, 6),
    st.sampled_from(["cat", "dog", "bird", "", "Ünï"]),
    st.sampled_from([0.0, 1.0, 2.5, float("nan"), float("inf")]),
    st.none(),
    st.booleans(),
)


@st.composite
def label_arrays(draw):
    kind = draw(st.sampled_from(["ints", "strings", "floats", "mixed", "single"]))
    n = draw(st.integers(0, 12))
    if kind == "ints":
        values = draw(st.lists(st.integers(-1, 4), min_size=n, max_size=n))
    elif kind == "strings":
        values = draw(st.lists(st.sampled_from(["cat", "dog", "bird"]), min_size=n, max_size=n))
    elif kind == "floats":
        values = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 0.5, float("nan")]),
                               min_size=n, max_size=n))
    elif kind == "single":
        values = [draw(st.sampled_from([3, "cat"]))] * n
    else:
        values = draw(st.lists(_label_values, min_size=n, max_size=n))
    container = draw(st.sampled_from(["list", "tuple", "array"]))
    if container == "tuple":
        return tuple(values)
    if container == "array":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return np.asarray(values)
        except (ValueError, TypeError):
            return values
    return values


_class_names = st.one_of(
    st.none(),
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=0, max_size=5),
    st.dictionaries(st.integers(-1, 4), st.text(min_size=1, max_size=5), max_size=5),
    st.dictionaries(st.sampled_from(["cat", "dog", "bird"]), st.text(min_size=1, max_size=5),
                    max_size=3),
)


@fast(300)
@given(y=label_arrays(), class_names=_class_names)
def test_resolve_labels_encodes_or_raises_value_error(y, class_names):
    y_list = list(y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info = resolve_labels(y, class_names)
    except ValueError as err:
        assert str(err)  # a message that names the problem
        return
    classes = info.classes
    assert len(classes) >= 2 and len(info.names) == len(classes)
    assert all(isinstance(name, str) for name in info.names)
    assert list(classes) == sorted(classes.tolist())
    assert len(np.unique(classes)) == len(classes)
    assert info.y_encoded.shape == (len(y_list),)
    assert ((info.y_encoded >= 0) & (info.y_encoded < len(classes))).all()
    decoded = classes[info.y_encoded].tolist()
    assert decoded == [v.item() if hasattr(v, "item") else v for v in y_list]
    assert info.counts.sum() == len(y_list)
    assert np.array_equal(info.counts, np.bincount(info.y_encoded, minlength=len(classes)))


@pytest.mark.parametrize(
    "y, match",
    [
        ([], "at least 2 classes"),
        ([1, 1, 1], "at least 2 classes"),
        (["cat"] * 3, "at least 2 classes"),
        ([0.0, float("nan"), 1.0], "(?i)nan"),
        (np.array([0.0, np.nan, 1.0]), "NaN"),
        ([0, None, 1], "None"),
        ([0, -1, 1], "-1"),
        ([0, "cat", 1], "mixes label types"),
    ],
)
def test_resolve_labels_messages(y, match):
    with pytest.raises(ValueError, match=match):
        resolve_labels(y)


def test_resolve_labels_mixed_key_mapping_is_a_value_error():
    # np.asarray([0, "cat"]) would turn the int key into "0": refuse clearly.
    with pytest.raises(ValueError, match="mix strings"):
        resolve_labels([0, 0], {0: "zero", "cat": "cat"})


# --- end to end ----------------------------------------------------------------


def _assert_unfitted(clf):
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    assert not [a for a in vars(clf) if a.endswith("_") and not a.startswith("__")]


@pytest.fixture(scope="module")
def e2e_pool(sample):
    """A few real images from two classes of the embedded sample."""
    X, y, _, _, _ = sample
    idx = np.concatenate([np.flatnonzero(y == c)[:6] for c in (0, 1)])
    return [X[i] for i in idx], y[idx]


@fast(4)
@given(data=st.data())
def test_fit_with_odd_inputs_fits_or_raises_documented_errors(
    folder, e2e_pool, tiny_checkpoint, data
):
    X, y = e2e_pool
    X, y = list(X), [int(v) for v in y]
    n_odd = data.draw(st.integers(0, 3))
    for _ in range(n_odd):
        if data.draw(st.booleans()):
            X.append(_write_image(folder, data.draw(image_specs())))
        else:
            X.append(data.draw(broken_files(folder))[0])
        y.append(data.draw(st.sampled_from([0, 1, -1, 7])))
    if data.draw(st.booleans()):  # length mismatch
        y = y[: data.draw(st.integers(0, len(y)))]
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
        batch_size=16, device="cpu", random_state=0, tte=False,
    )
    try:
        clf.fit(X, y)
    except (BadImageError, ValueError) as err:
        assert str(err)
        _assert_unfitted(clf)
        return
    proba = clf.predict_proba(X[:4])
    assert proba.shape == (4, len(clf.classes_))
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


_HAS_BAD_IMAGE_PARAMS = {"check_images", "on_bad_image"} <= set(
    inspect.signature(LiftPlusClassifier).parameters
)


def _good_and_bad(folder, e2e_pool):
    X, y = e2e_pool
    text = folder / "e2e_notes.jpg"
    text.write_text("not an image")
    cut = folder / "e2e_cut.png"
    data = open(X[0], "rb").read()
    Image.open(io.BytesIO(data)).save(cut)
    cut.write_bytes(cut.read_bytes()[:60])
    X = list(X)
    bad = {2: str(folder / "e2e_missing.jpg"), 7: str(text), 9: str(cut)}
    for i, path in bad.items():
        X[i] = path
    return X, np.asarray(y), bad


@pytest.mark.skipif(not _HAS_BAD_IMAGE_PARAMS,
                    reason="LiftPlusClassifier has no check_images/on_bad_image yet")
def test_fit_skips_bad_images_when_asked(folder, e2e_pool, tiny_checkpoint):
    X, y, bad = _good_and_bad(folder, e2e_pool)
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
        batch_size=16, device="cpu", random_state=0, tte=False, on_bad_image="skip",
    )
    with pytest.warns(UserWarning):
        clf.fit(X, y)
    skipped = clf.skipped_images_
    assert [p for p, _ in skipped] == [bad[i] for i in sorted(bad)]
    assert all(isinstance(reason, str) and reason for _, reason in skipped)
    good = [p for i, p in enumerate(X) if i not in bad]
    proba = clf.predict_proba(good[:3])
    assert proba.shape == (3, 2) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(not _HAS_BAD_IMAGE_PARAMS,
                    reason="LiftPlusClassifier has no check_images/on_bad_image yet")
def test_fit_raises_on_first_bad_image_by_default(folder, e2e_pool, tiny_checkpoint):
    X, y, bad = _good_and_bad(folder, e2e_pool)
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
        batch_size=16, device="cpu", random_state=0, tte=False,
    )
    with pytest.raises(BadImageError) as info:
        clf.fit(X, y)
    assert info.value.path == bad[min(bad)]
    _assert_unfitted(clf)
