"""Images from anywhere: every kind of input gives the model the files give.

One fit on the image files is the reference; a fit on each other kind of
input (the same decoded pixels) must predict the same probabilities, since
the crops are keyed by index and the pixels are equal.
"""

import hashlib
import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from liftlearn import BadImageError, CLIPFeatures, LiftPlusClassifier, ZeroShotClassifier
from liftlearn.data import ImageDataset, load_image
from liftlearn.image_sources import ItemSource, PathSource, as_image_source

PARAMS = dict(backbone="liftlearn-tiny-vit", pretrained=None, epochs=1, batch_size=12,
              device="cpu", random_state=0, tte=False)


@pytest.fixture(scope="module")
def few(sample):
    """12 files of 3 classes, their labels and their decoded RGB arrays."""
    X, y, names, _, _ = sample
    idx = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    paths = [X[i] for i in idx]
    arrays = np.stack([np.asarray(load_image(p)) for p in paths])
    return paths, y[idx], arrays


@pytest.fixture(scope="module")
def reference(few):
    paths, y, _ = few
    clf = LiftPlusClassifier(**PARAMS).fit(paths, y)
    return clf, clf.predict_proba(paths)


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class PairDataset(torch.utils.data.Dataset):
    """A map-style Dataset of (PIL image, label), as torchvision's are."""

    def __init__(self, arrays, labels):
        self.arrays, self.labels = arrays, labels

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return Image.fromarray(self.arrays[i]), int(self.labels[i])


def _hf_column(arrays, labels, decode: bool):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(decode=decode),
                                  "label": datasets.ClassLabel(num_classes=int(max(labels)) + 1)})
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": _png(a), "path": None} for a in arrays], "label": list(map(int, labels))},
        features=features,
    )
    return ds


KINDS = {
    "pil": lambda arrays, y: (list(map(Image.fromarray, arrays)), y),
    "array": lambda arrays, y: (arrays, y),
    "array_list": lambda arrays, y: (list(arrays), y),
    "torch_dataset": lambda arrays, y: (PairDataset(arrays, y), None),
    "hf_column": lambda arrays, y: (_hf_column(arrays, y, True)["image"], y),
    "hf_bytes": lambda arrays, y: (_hf_column(arrays, y, False)["image"], y),
    "hf_dataset": lambda arrays, y: (_hf_column(arrays, y, True), None),
}


# A list of arrays takes the array path item by item: predicted (not fitted)
# below, with sizes that vary, to keep the suite fast.
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "array_list"])
def test_each_input_kind_fits_and_predicts_as_the_files(kind, few, reference):
    paths, y, arrays = few
    X, y_arg = KINDS[kind](arrays, y)
    clf = LiftPlusClassifier(**PARAMS).fit(X, y_arg)
    ref, ref_proba = reference
    np.testing.assert_array_equal(clf.classes_, ref.classes_)
    # Trained the same (same pixels, same crops by index) ...
    np.testing.assert_allclose(clf.predict_proba(paths), ref_proba, atol=1e-6)
    # ... and predicts this kind of input as the files.
    np.testing.assert_allclose(clf.predict_proba(X), ref_proba, atol=1e-6)
    if y_arg is None:  # the labels X carries score it too
        assert clf.score(X, None) == ref.score(paths, y)


def test_varying_sizes_and_grey_arrays_predict_as_files(few, reference, tmp_path):
    _, _, arrays = few
    ref, _ = reference
    images = [arrays[0][: 20 + i, : 32 - i] for i in range(3)] + [arrays[3].mean(axis=2).astype(np.uint8)]
    files = []
    for i, a in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(files[-1])
    np.testing.assert_allclose(ref.predict_proba(images), ref.predict_proba(files), atol=1e-6)
    same_size = KINDS["array_list"](arrays, None)[0]
    np.testing.assert_allclose(ref.predict_proba(same_size), ref.predict_proba(arrays), atol=1e-6)
    grey = np.stack([arrays[3].mean(axis=2).astype(np.uint8)] * 2)  # (n, H, W)
    np.testing.assert_allclose(ref.predict_proba(grey), ref.predict_proba([files[3]] * 2), atol=1e-6)


def test_transform_and_zero_shot_take_every_kind(few):
    paths, y, arrays = few
    features = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu").fit()
    expected = features.transform(paths)
    zero_shot = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu")
    zero_shot.fit(paths, y)
    expected_proba = zero_shot.predict_proba(paths)
    for kind in ("pil", "array", "torch_dataset", "hf_bytes"):
        X, y_arg = KINDS[kind](arrays, y)
        np.testing.assert_allclose(features.transform(X), expected, atol=1e-6)
        fitted = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu").fit(X, y_arg)
        np.testing.assert_array_equal(fitted.class_counts_, zero_shot.class_counts_)
        np.testing.assert_allclose(fitted.predict_proba(X), expected_proba, atol=1e-6)


@pytest.mark.parametrize("bad, shape", [
    (np.zeros((2, 3, 8, 8), np.uint8), "(2, 3, 8, 8)"),     # channels first
    (np.zeros((2, 8, 8, 3), np.float32), "(2, 8, 8, 3)"),   # float
    (np.zeros((2, 8, 8, 4), np.uint8), "(2, 8, 8, 4)"),     # RGBA
    (np.zeros((8, 8), np.uint8), "(8, 8)"),                 # one image, not a batch
    (np.zeros((32, 40, 3), np.uint8), "(32, 40, 3)"),       # one RGB image: not 32 grey ones
    (np.zeros((32, 40, 4), np.uint8), "(32, 40, 4)"),       # one RGBA image
])
def test_arrays_of_another_dtype_or_shape_are_refused_naming_the_shape(bad, shape):
    with pytest.raises(ValueError, match=f"shape {shape.replace('(', '[(]').replace(')', '[)]')}"):
        as_image_source(bad)
    if bad.ndim == 3 and bad.shape[2] == 3:
        assert len(as_image_source(bad[None])) == 1  # the batch of one it suggests
    if bad.ndim == 3 and bad.shape[2] == 4:
        assert len(as_image_source([Image.fromarray(bad)])) == 1


def test_a_list_entry_of_the_wrong_kind_is_named():
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"X\[1\] is an array of shape \(8, 8, 3\) and dtype int64"):
        as_image_source([good, good.astype(np.int64)])
    with pytest.raises(TypeError, match=r"X\[1\] must be a PIL image.*got str"):
        as_image_source([Image.new("RGB", (4, 4)), "a.jpg"])
    with pytest.raises(ValueError, match="single image"):
        as_image_source(Image.new("RGB", (4, 4)))


def test_a_dataset_with_a_tensor_transform_is_refused_at_once():
    class Tensors(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 8, 8), 0

    with pytest.raises(TypeError, match=r"X\[0\] is a torch.Tensor.*without a transform"):
        as_image_source(Tensors())


class DecodingDataset(torch.utils.data.Dataset):
    """(image, label) decoded from bytes on access, as torchvision's folder
    datasets and datasets' Image columns do; item ``bad`` is not an image."""

    def __init__(self, arrays, labels, bad):
        self.files = [b"not an image" if i == bad else _png(a) for i, a in enumerate(arrays)]
        self.labels = self.targets = [int(v) for v in labels]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return Image.open(io.BytesIO(self.files[i])), self.labels[i]


@pytest.mark.parametrize("kind", ["torch", "torch_no_targets", "hf"])
def test_an_item_that_fails_to_decode_is_a_bad_image(few, kind):
    _, y, arrays = few
    if kind.startswith("torch"):
        X, fit_y = DecodingDataset(arrays, y, bad=4), None
        if kind == "torch_no_targets":  # the labels are read item by item
            X.targets = None
    else:
        datasets = pytest.importorskip("datasets")
        rows = [{"bytes": b"not an image" if i == 4 else _png(a), "path": None}
                for i, a in enumerate(arrays)]
        features = datasets.Features({"image": datasets.Image(decode=True)})
        X, fit_y = datasets.Dataset.from_dict({"image": rows}, features=features)["image"], y
    with pytest.raises(BadImageError, match=r"X\[4\].*not an image PIL can read"):
        LiftPlusClassifier(**PARAMS).fit(X, fit_y)
    with pytest.warns(UserWarning, match="skipping 1 unusable"):
        clf = LiftPlusClassifier(**PARAMS, on_bad_image="skip").fit(X, fit_y)
    assert clf.skipped_images_ == [("X[4]", "not an image PIL can read")]


def test_torch_dataset_labels_come_from_targets_or_items(few):
    _, y, arrays = few
    ds = PairDataset(arrays, y)
    assert as_image_source(ds).labels() == [int(v) for v in y]
    ds.targets = list(reversed(y.tolist()))  # torchvision's attribute wins: no item is read
    assert as_image_source(ds).labels() == list(reversed(y.tolist()))


def test_class_names_come_with_the_labels_a_dataset_carries(few):
    """A torchvision dataset's ``classes`` or a ClassLabel's ``names`` name
    the classes when y and class_names are not given (else the text
    classifier would read prompts like "a photo of a 0.")."""
    from liftlearn import ZeroShotClassifier

    _, y, arrays = few
    names = [f"thing {c}" for c in range(int(y.max()) + 1)]
    ds = PairDataset(arrays, y)
    ds.classes = names  # torchvision's attribute
    assert as_image_source(ds).class_names() == names
    zs = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                            tte=False).fit(ds)
    assert zs.class_names_ == names
    # Given names and given labels win; names of labels it does not carry are not taken.
    assert ZeroShotClassifier(**{**zs.get_params(), "class_names": [n.upper() for n in names]}
                              ).fit(ds).class_names_ == [n.upper() for n in names]
    assert as_image_source(PairDataset(arrays, y)).class_names() is None
    hf = _hf_column(arrays, y, decode=True)
    assert as_image_source(hf).class_names() == hf.features["label"].names


def test_in_memory_bad_images_follow_on_bad_image(few):
    _, y, arrays = few
    items = [{"bytes": _png(a), "path": None} for a in arrays[:6]]
    items[2] = {"bytes": b"not an image", "path": None}
    source = as_image_source(items)
    assert [(i, r) for i, r in source.problems("header")] == [(2, "not an image PIL can read")]
    with pytest.raises(BadImageError, match=r"X\[2\]"):
        ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu").fit(items, y[:6])
    clf = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                             on_bad_image="skip")
    with pytest.warns(Warning, match="skipping 1 unusable"):
        clf.fit(items, y[:6])
    assert clf.skipped_images_ == [("X[2]", "not an image PIL can read")]
    with pytest.warns(Warning, match="could not be used"):
        proba = clf.predict_proba(items)
    assert np.isnan(proba[2]).all() and not np.isnan(np.delete(proba, 2, axis=0)).any()
    assert as_image_source([Image.new("RGB", (0, 0))]).problems("decode") == [(0, "empty image (0x0)")]


def test_subsets_name_the_original_positions_and_pickle(few):
    _, _, arrays = few
    source = as_image_source(list(arrays))[np.array([False, True, False, True] + [False] * 8)]
    assert len(source) == 2 and source.name(1) == "X[3]"
    np.testing.assert_array_equal(np.asarray(source.load(1)), arrays[3])
    again = pickle.loads(pickle.dumps(source))  # DataLoader workers get a copy
    np.testing.assert_array_equal(np.asarray(again.load(0)), arrays[1])


def test_datasets_read_through_the_sources(few):
    paths, _, arrays = few
    transform = lambda img: torch.from_numpy(np.asarray(img).copy())  # noqa: E731
    by_path = ImageDataset(paths[:3], transform)
    by_array = ImageDataset(as_image_source(arrays[:3]), transform)
    assert all(torch.equal(by_path[i], by_array[i]) for i in range(3))
    assert isinstance(as_image_source(paths), PathSource)
    assert isinstance(as_image_source(arrays), ItemSource)


def _key(source) -> str:
    h = hashlib.sha256()
    source.update_key(h)
    return h.hexdigest()


def test_the_checkpoint_key_follows_the_pixels(few):
    _, _, arrays = few
    assert _key(as_image_source(arrays)) == _key(as_image_source(list(arrays)))
    changed = arrays.copy()
    changed[5, 0, 0, 0] ^= 1
    assert _key(as_image_source(changed)) != _key(as_image_source(arrays))


def test_in_memory_fits_resume_from_their_checkpoint(few, tmp_path):
    _, y, arrays = few
    first = LiftPlusClassifier(**PARAMS, checkpoint_dir=tmp_path).fit(arrays, y)
    again = LiftPlusClassifier(**PARAMS, checkpoint_dir=tmp_path).fit(list(arrays), y)
    # Resumed from the finished run: nothing retrained (same measured seconds).
    assert again.history_ == first.history_
    assert len(os.listdir(tmp_path)) == 1
    changed = arrays.copy()
    changed[0] = 255 - changed[0]
    LiftPlusClassifier(**PARAMS, checkpoint_dir=tmp_path).fit(changed, y)
    assert len(os.listdir(tmp_path)) == 2  # other pixels: another run


def test_datasets_is_imported_only_when_given():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from liftlearn.image_sources import as_image_source; "
            "as_image_source(np.zeros((1, 4, 4, 3), np.uint8)); print('datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
