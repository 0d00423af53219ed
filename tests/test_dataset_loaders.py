"""Benchmark loaders and data sources: small files made here, shipped names, shared data."""

from __future__ import annotations

import codecs
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liftlearn.datasets import (
    SOURCES,
    DataSource,
    DatasetFileError,
    extract_cifar10_lt,
    get_class_names,
    load_cifar10_lt,
    load_cifar100_lt,
    load_cifar10_lt_sample,
    load_image_folder,
    load_imagenet_lt,
    load_inat2018,
    load_places_lt,
    load_source,
    long_tailed_counts,
    read_list_file,
)

from conftest import REPO, run_in_threads, shared_cifar_dir

SPLITS_DIR = REPO.parent / "shared" / "data" / "lt-splits"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name, n, first, last",
    [
        ("imagenet", 1000, "tench", "toilet paper"),
        ("places365", 365, "airfield", "zen_garden"),
        ("cifar10", 10, "airplane", "truck"),
        ("cifar100", 100, "apple", "worm"),
    ],
)
def test_shipped_class_names(name, n, first, last):
    names = get_class_names(name)
    assert len(names) == n and names[0] == first and names[-1] == last
    assert all(x == x.strip() and x for x in names)


def test_cifar100_names_sorted_and_unique():
    names = get_class_names("cifar100-lt")
    assert names == sorted(names) and len(set(names)) == 100
    assert "aquarium_fish" in names and "sweet_pepper" in names


def test_unknown_class_names():
    with pytest.raises(ValueError, match="no class names shipped"):
        get_class_names("mnist")


@pytest.mark.skipif(not SPLITS_DIR.is_dir(), reason="shared split files absent")
def test_shipped_names_match_shared_files():
    shared = (SPLITS_DIR / "ImageNet_LT" / "classnames.txt").read_text().splitlines()
    assert get_class_names("imagenet") == shared
    # LIFT+'s Places file (the shared copy) orders five names as a sort would
    # ('-' before '_'); the split files number those classes otherwise.
    shared = (SPLITS_DIR / "Places_LT" / "classnames.txt").read_text().splitlines()
    differ = [(i, shared[i], name) for i, name in enumerate(get_class_names("places365"))
              if name != shared[i]]
    assert differ == [(116, "desert-sand", "desert_road"), (117, "desert-vegetation", "desert-sand"),
                      (118, "desert_road", "desert-vegetation"), (141, "field-wild", "field_road"),
                      (142, "field_road", "field-wild")]


@pytest.mark.skipif(not SPLITS_DIR.is_dir(), reason="shared split files absent")
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_places_names_name_the_folders_of_their_labels(tmp_path, split):
    paths, y, names = load_places_lt(tmp_path, split, list_dir=SPLITS_DIR / "Places_LT")
    folders = {(label, Path(path).parent.name) for path, label in zip(paths, y.tolist())}
    assert len(folders) == 365
    assert all(folder == names[label] for label, folder in folders)


# ------------------------------------------------------------- list files


def test_read_list_file(tmp_path):
    f = _write(tmp_path / "lists" / "train.txt", "a/x.jpg 1\n\nb/y.jpg 0\n")
    paths, y = read_list_file(f, tmp_path / "img")
    assert paths == [str((tmp_path / "img" / "a" / "x.jpg").resolve()),
                     str((tmp_path / "img" / "b" / "y.jpg").resolve())]
    assert y.tolist() == [1, 0] and y.dtype == np.int64


@pytest.mark.parametrize(
    "text, match",
    [
        ("a.jpg 0\nb.jpg\n", r"train.txt line 2: expected '<path> <label>'"),
        ("a.jpg 0\nb.jpg 1 2\n", r"line 2: expected '<path> <label>'"),
        ("a.jpg zero\n", r"line 1: label 'zero' is not an integer"),
        ("a.jpg 0\na.jpg -1\n", r"line 2: label '-1'"),
        ("a.jpg 0\n\na.jpg 5\n", r"line 3: label '5' is not an integer in 0..2"),
        ("\n\n", r"train.txt: no '<path> <label>' lines"),
    ],
)
def test_read_list_file_errors(tmp_path, text, match):
    f = _write(tmp_path / "train.txt", text)
    with pytest.raises(DatasetFileError, match=match):
        read_list_file(f, n_classes=3)


def test_read_list_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_list_file(tmp_path / "nope.txt")


@pytest.mark.parametrize("file_name", ["ImageNet_LT_val.txt", "val.txt"])
def test_imagenet_lt_both_list_names(tmp_path, file_name):
    _write(tmp_path / "lists" / file_name, "train/n1/a.JPEG 0\ntrain/n2/b.JPEG 999\n")
    (tmp_path / "imagenet").mkdir()
    paths, y, names = load_imagenet_lt(tmp_path / "imagenet", "val", list_dir=tmp_path / "lists")
    assert y.tolist() == [0, 999] and len(names) == 1000
    assert paths[1].endswith(str(Path("imagenet/train/n2/b.JPEG")))


def test_oltr_name_preferred_and_file_accepted(tmp_path):
    _write(tmp_path / "ImageNet_LT_test.txt", "val/a.JPEG 3\n")
    _write(tmp_path / "test.txt", "val/b.JPEG 4\n")
    assert load_imagenet_lt(tmp_path, "test")[1].tolist() == [3]
    assert load_imagenet_lt(tmp_path, "test", list_dir=tmp_path / "test.txt")[1].tolist() == [4]


def test_imagenet_lt_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageNet_LT_train.txt, train.txt"):
        load_imagenet_lt(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be"):
        load_imagenet_lt(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="image root not found"):
        load_imagenet_lt(tmp_path / "missing", "train")
    _write(tmp_path / "ImageNet_LT_train.txt", "a 0\n" * 16 + "broken line here\n")
    with pytest.raises(DatasetFileError, match="ImageNet_LT_train.txt line 17"):
        load_imagenet_lt(tmp_path, "train")


def test_places_lt(tmp_path):
    _write(tmp_path / "Places_LT_train.txt", "train/airfield/1.jpg 0\ntrain/zen_garden/2.jpg 364\n")
    paths, y, names = load_places_lt(tmp_path, "train")
    assert names[y[1]] == "zen_garden" and len(names) == 365
    _write(tmp_path / "Places_LT_test.txt", "val/x.jpg 365\n")
    with pytest.raises(DatasetFileError, match=r"Places_LT_test.txt line 1: .* 0..364"):
        load_places_lt(tmp_path, "test")


@pytest.mark.skipif(not SPLITS_DIR.is_dir(), reason="shared split files absent")
def test_shared_split_files(tmp_path):
    _, y, names = load_places_lt(tmp_path, "train", list_dir=SPLITS_DIR / "Places_LT")
    counts = np.bincount(y, minlength=365)
    assert len(y) == 62500 and counts.max() == 4980 and counts.min() == 5
    assert [(counts > 100).sum(), ((counts >= 20) & (counts <= 100)).sum(),
            (counts < 20).sum()] == [131, 163, 71]
    paths, y, names = load_imagenet_lt(tmp_path, "test", list_dir=SPLITS_DIR / "ImageNet_LT")
    assert len(paths) == 50000 and np.bincount(y).tolist() == [50] * 1000
    paths, y, names = load_inat2018(
        tmp_path, "val", annotations=SPLITS_DIR / "iNaturalist2018" / "val.txt")
    assert len(paths) == 24426 and len(names) == 8142
    # Labels are category ids: the folder in each path is the label.
    assert all(Path(p).parent.name == str(label) for p, label in zip(paths[:500], y[:500]))


# ------------------------------------------------------------- iNat 2018


def _inat_categories(n=3):
    return [{"id": i, "name": f"Genus species{i}", "supercategory": "Plantae"} for i in range(n)]


def test_inat_official_json(tmp_path):
    data = {
        "images": [{"id": 10, "file_name": "train_val2018/Plantae/2/a.jpg"},
                   {"id": 11, "file_name": "train_val2018/Plantae/0/b.jpg"}],
        "annotations": [{"image_id": 10, "category_id": 2}, {"image_id": 11, "category_id": 0}],
        "categories": list(reversed(_inat_categories())),  # order in the file does not matter
    }
    _write(tmp_path / "val2018.json", json.dumps(data))
    paths, y, names = load_inat2018(tmp_path, "val")
    assert y.tolist() == [2, 0] and names == ["Genus species0", "Genus species1", "Genus species2"]
    assert paths[0] == str((tmp_path / "train_val2018/Plantae/2/a.jpg").resolve())


def test_inat_list_and_categories(tmp_path):
    _write(tmp_path / "categories.json", json.dumps(_inat_categories()))
    _write(tmp_path / "iNaturalist18_train.txt", "train_val2018/P/1/x.jpg 1\n")
    paths, y, names = load_inat2018(tmp_path, "train")
    assert y.tolist() == [1] and names[1] == "Genus species1"


def test_inat_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train2018.json"):
        load_inat2018(tmp_path, "train")
    _write(tmp_path / "val.txt", "a.jpg 0\n")
    with pytest.raises(FileNotFoundError, match="categories.json"):
        load_inat2018(tmp_path, "val")
    _write(tmp_path / "categories.json", '[{"id": 0, "name": "a"},\n{"id": 1 "name": "b"}]')
    with pytest.raises(DatasetFileError, match=r"categories.json line 2: invalid JSON"):
        load_inat2018(tmp_path, "val")
    _write(tmp_path / "categories.json", json.dumps([{"id": 0, "name": "a"}, {"id": 2, "name": "b"}]))
    with pytest.raises(DatasetFileError, match=r"category ids are not 0..1"):
        load_inat2018(tmp_path, "val")
    _write(tmp_path / "categories.json", json.dumps(_inat_categories(1)))
    _write(tmp_path / "val.txt", "a.jpg 0\nb.jpg 1\n")
    with pytest.raises(DatasetFileError, match=r"val.txt line 2: label '1'"):
        load_inat2018(tmp_path, "val")
    bad = {"images": [], "annotations": [{"image_id": 1, "category_id": 0}],
           "categories": _inat_categories()}
    _write(tmp_path / "train2018.json", json.dumps(bad))
    with pytest.raises(DatasetFileError, match="annotation #0 refers to unknown image"):
        load_inat2018(tmp_path, "train")
    _write(tmp_path / "train2018.json", json.dumps({"images": []}))
    with pytest.raises(DatasetFileError, match="train2018.json: expected a JSON object"):
        load_inat2018(tmp_path, "train")


# ---------------------------------------------------------- image folders


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_image_folder(tmp_path):
    for cls, n in (("cat", 3), ("dog", 1)):
        for i in range(n):
            _png(tmp_path / cls / "sub" / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    paths, y, names = load_image_folder(tmp_path)
    assert names == ["cat", "dog"] and y.tolist() == [0, 0, 0, 1]
    assert all(Path(p).is_absolute() and p.endswith(".png") for p in paths)
    # class_names fixes the order and may name classes without a folder.
    _, y, names = load_image_folder(tmp_path, class_names=["dog", "bird", "cat"])
    assert y.tolist() == [0, 2, 2, 2] and names == ["dog", "bird", "cat"]
    with pytest.raises(DatasetFileError, match=r"\['dog'\] are not in class_names"):
        load_image_folder(tmp_path, class_names=["cat"])


def test_image_folder_takes_class_names_from_a_generator(tmp_path):
    _png(tmp_path / "cat" / "0.png")
    _png(tmp_path / "dog" / "0.png")
    names = ["dog", "cat"]
    for given in (iter(names), (n for n in names), map(str, names)):
        _, y, got = load_image_folder(tmp_path, class_names=given)
        assert got == names and sorted(y.tolist()) == [0, 1]


@pytest.mark.parametrize("class_names, message", [
    (["cat", "cat", "dog"], r"the name 'cat' twice \(entries 0 and 1\)"),
    ({"cat", "dog"}, "sets and dict views do not say which class is 0"),
    ("cat", "not a single str"),
    (["cat", " "], "an empty name"),
    ([], "class_names is empty"),
    ({0: "cat", 1: "dog"}, "not a mapping"),
])
def test_image_folder_refuses_class_names_the_estimators_refuse(tmp_path, class_names, message):
    # The estimators' own rule, before any folder is read: a set would make
    # the labels depend on PYTHONHASHSEED, a str would name one class a letter.
    _png(tmp_path / "cat" / "0.png")
    with pytest.raises(ValueError, match=message):
        load_image_folder(tmp_path, class_names=class_names)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        load_image_folder(tmp_path / "none")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetFileError, match="no images"):
        load_image_folder(tmp_path)


def test_list_files_name_lines_that_are_not_utf8_and_drop_a_byte_order_mark(tmp_path):
    f = tmp_path / "train.txt"
    f.write_bytes(codecs.BOM_UTF8 + b"a/x.jpg 1\nb/caf\xe9.jpg 0\n")
    with pytest.raises(DatasetFileError, match="train.txt line 2: not UTF-8"):
        read_list_file(f, tmp_path)
    f.write_bytes(codecs.BOM_UTF8 + b"a/x.jpg 1\n")
    assert read_list_file(f, tmp_path)[0] == [str((tmp_path / "a" / "x.jpg").resolve())]
    for newline in (b"\r", b"\r\n"):  # old Mac and Windows line ends
        f.write_bytes(b"a/x.jpg 1" + newline + b"b/y.jpg 0" + newline + b"c/\xff.jpg 2")
        with pytest.raises(DatasetFileError, match="train.txt line 3: not UTF-8"):
            read_list_file(f, tmp_path)
        f.write_bytes(b"a/x.jpg 1" + newline + b"b/y.jpg 0" + newline)
        assert read_list_file(f, tmp_path)[1].tolist() == [1, 0]


def test_a_list_file_of_another_split_is_refused(tmp_path):
    (tmp_path / "img").mkdir()
    test_list = _write(tmp_path / "lists" / "test.txt", "val/a.jpg 3\n")
    with pytest.raises(ValueError, match="is the 'test' list, but split='train'"):
        load_places_lt(tmp_path / "img", "train", list_dir=test_list)
    assert load_places_lt(tmp_path / "img", "test", list_dir=test_list)[1].tolist() == [3]
    _write(tmp_path / "lists" / "categories.json", '[{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]')
    val_list = _write(tmp_path / "lists" / "val.txt", "x/1.jpg 1\n")
    with pytest.raises(ValueError, match="is the 'val' list, but split='train'"):
        load_inat2018(tmp_path / "img", "train", annotations=val_list)
    # A folder is searched, as root is.
    assert load_inat2018(tmp_path / "img", "val", annotations=tmp_path / "lists")[1].tolist() == [1]


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["images"][0].update(file_name=3), "image #0 needs an 'id'"),
    (lambda d: d["images"][0].update(id=[1]), "image #0 needs an 'id'"),
    (lambda d: d["images"].append({"id": 1, "file_name": "z.jpg"}), "image id 1 appears twice"),
    (lambda d: d.update(annotations=5), "'annotations' is not a list"),
    (lambda d: d["annotations"][0].update(category_id=True), "category_id True"),
    (lambda d: d["annotations"][0].update(image_id=[1]), "unknown image"),
    (lambda d: d["categories"][1].update(name="caf\udce9"), "val2018.json line 1: not UTF-8"),
])
def test_malformed_inat_json_names_the_entry(tmp_path, edit, match):
    data = {"images": [{"id": 1, "file_name": "a/1.jpg"}],
            "annotations": [{"image_id": 1, "category_id": 0}],
            "categories": [{"id": 0, "name": "x"}, {"id": 1, "name": "y"}]}
    assert load_inat2018(tmp_path, "val", annotations=_write(tmp_path / "val2018.json",
                                                             json.dumps(data)))[1].tolist() == [0]
    edit(data)
    path = tmp_path / "val2018.json"
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogateescape"))
    with pytest.raises(DatasetFileError, match=match):
        load_inat2018(tmp_path, "val", annotations=path)


# ------------------------------------------------------------ CIFAR pickles


def _fake_cifar100(root: Path, per_class: int = 20, n_test: int = 2) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [n.encode() for n in get_class_names("cifar100")]
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": names, b"coarse_label_names": []}, f)
    for split, n in (("train", per_class), ("test", n_test)):
        labels = np.repeat(np.arange(100), n)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": labels.tolist()}, f)
    return folder


def test_cifar100_lt_pickles(tmp_path):
    _fake_cifar100(tmp_path / "src")
    cache = tmp_path / "cache"
    paths, y, names = load_cifar100_lt(tmp_path / "src", "train", imbalance=10, n_max=20,
                                       cache_dir=cache)
    counts = long_tailed_counts(20, 100, 10)
    assert np.bincount(y, minlength=100).tolist() == counts
    assert names[0] == "apple" and len(names) == 100
    assert all(Path(p).is_file() and Path(p).parent.name == names[k] for p, k in zip(paths, y))
    with Image.open(paths[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    # Pixels survive the round trip (channel-first rows of 1024 per colour).
    with open(tmp_path / "src" / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f)
    index = int(Path(paths[0]).stem)
    expected = raw[b"data"][index].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(Image.open(paths[0])), expected)
    # Deterministic, and a second call reuses the files.
    mtimes = [Path(p).stat().st_mtime_ns for p in paths]
    again, y2, _ = load_cifar100_lt(tmp_path / "src" / "cifar-100-python", "train",
                                    imbalance=10, n_max=20, cache_dir=cache)
    assert again == paths and y2.tolist() == y.tolist()
    assert [Path(p).stat().st_mtime_ns for p in again] == mtimes
    other, _, _ = load_cifar100_lt(tmp_path / "src", "train", imbalance=10, n_max=20,
                                   cache_dir=cache, random_state=1)
    assert other != paths
    paths, y, _ = load_cifar100_lt(tmp_path / "src", "test", cache_dir=cache)
    assert np.bincount(y).tolist() == [2] * 100


def test_cifar_lt_selection_matches_ldam_recipe(tmp_path):
    """Seed 0: np.random.seed(0), then shuffle each class's indices in turn."""
    _fake_cifar100(tmp_path / "src", per_class=12)
    paths, y, _ = load_cifar100_lt(tmp_path / "src", "train", imbalance=4, n_max=12,
                                   cache_dir=tmp_path / "c")
    with open(tmp_path / "src" / "cifar-100-python" / "train", "rb") as f:
        labels = np.asarray(pickle.load(f)[b"fine_labels"])
    np.random.seed(0)
    expected = []
    for c, n in enumerate(long_tailed_counts(12, 100, 4)):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expected.extend(sorted(idx[:n].tolist()))
    assert [int(Path(p).stem) for p in paths] == expected


def test_cifar10_lt_pickles_and_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = get_class_names("cifar10")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names]}, f)
    rng = np.random.default_rng(1)
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                         b"labels": list(range(10)) * 2}, f)
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10_lt(tmp_path, "test", cache_dir=tmp_path / "c")
    paths, y, got = load_cifar10_lt(tmp_path, "train", imbalance=10, n_max=10,
                                    cache_dir=tmp_path / "c")
    assert got == names and np.bincount(y).tolist() == long_tailed_counts(10, 10, 10)
    with pytest.raises(ValueError, match="requested"):
        load_cifar10_lt(tmp_path, "train", n_max=11, imbalance=10, cache_dir=tmp_path / "c")
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetFileError, match="data_batch_3: not a CIFAR python pickle"):
        load_cifar10_lt(tmp_path, "train", cache_dir=tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="expected the python pickles"):
        load_cifar10_lt(tmp_path / "elsewhere", "train")


class _RunsCode:
    """Unpickling this calls a function by name (here a harmless one that
    leaves a mark, standing in for os.system)."""

    def __reduce__(self):
        return (Path.touch, (Path(self.mark),))


class _Python2Pickler(pickle._Pickler):
    """Pickles as the CIFAR files were written (Python 2, numpy 1): bytes as
    Python 2 str opcodes, numpy under its old module name."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def _dump(obj, f, protocol):
    if protocol != "python2":
        pickle.dump(obj, f, protocol=protocol)
        return
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(obj)
    f.write(buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


@pytest.mark.parametrize("protocol", ["python2", 2, pickle.HIGHEST_PROTOCOL])
def test_cifar_pickles_are_read_as_data_only(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = get_class_names("cifar10")
    rng = np.random.default_rng(1)
    # Pickles as the original files are and as Python 3 writes them, with
    # numpy arrays and scalars: read as before.
    with open(folder / "batches.meta", "wb") as f:
        _dump({b"label_names": [n.encode() for n in names], b"num_vis": np.int64(3072),
               b"empty": b"", b"tags": {b"a"}, b"none": np.zeros(0, np.uint8)}, f, protocol)
    with open(folder / "test_batch", "wb") as f:
        _dump({b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
               b"labels": np.arange(20) % 10, b"batch_label": b"testing batch 1 of 1"}, f, protocol)
    paths, y, _ = load_cifar10_lt(tmp_path, "test", cache_dir=tmp_path / "c")
    assert len(paths) == 20 and y.tolist() == (np.arange(20) % 10).tolist()
    # A file that names any other function is refused before it is called.
    bad = _RunsCode()
    bad.mark = str(tmp_path / "ran")
    with open(folder / "batches.meta", "wb") as f:
        _dump({b"label_names": [bad] * 10}, f, protocol)
    with pytest.raises(DatasetFileError, match=r"batches.meta: not a CIFAR python pickle .*not data"):
        load_cifar10_lt(tmp_path, "test", cache_dir=tmp_path / "c")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", "", "dup", "  "])
def test_cifar_class_names_must_be_distinct_folder_names(tmp_path, name):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [name] + (["dup"] if name == "dup" else []) + [f"c{i}" for i in range(10)]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names[:10]]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((10, 3072), np.uint8), b"labels": list(range(10))}, f)
    with pytest.raises(DatasetFileError, match="batches.meta: (class name|class_names has)"):
        load_cifar10_lt(tmp_path, "test", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_cifar_lt_from_image_folders(tmp_path):
    for c, name in enumerate(get_class_names("cifar10")):
        for i in range(6):
            _png(tmp_path / "train" / name / f"{i:04d}.png", c)
    paths, y, names = load_cifar10_lt(tmp_path, "train", imbalance=6, n_max=6)
    assert names == get_class_names("cifar10")
    assert np.bincount(y).tolist() == long_tailed_counts(6, 10, 6)
    assert all(Path(p).parent.name == names[k] for p, k in zip(paths, y))


# --------------------------------------------------------- shared CIFAR-10


@pytest.mark.skipif(shared_cifar_dir() is None, reason="shared CIFAR-10 JPEGs absent")
def test_shared_cifar10_as_image_folder(tmp_path):
    extract_cifar10_lt(shared_cifar_dir(), tmp_path, split="train", imbalance=10, n_max=30)
    paths, y, names = load_cifar10_lt(tmp_path, "train", imbalance=10, n_max=30)
    assert names == get_class_names("cifar10")
    assert np.bincount(y).tolist() == long_tailed_counts(30, 10, 10)
    with Image.open(paths[-1]) as im:
        assert im.size == (32, 32)


# ----------------------------------------------------------- data sources

CLI_NAMES = ["cifar10-lt-sample", "imagefolder", "imagenet-lt", "places-lt", "inat2018",
             "cifar10-lt", "cifar100-lt"]


def test_sources_table():
    assert list(SOURCES) == CLI_NAMES
    assert all(isinstance(s, DataSource) and s.name == name for name, s in SOURCES.items())
    assert {n for n, s in SOURCES.items() if s.benchmark} == {
        "imagenet-lt", "places-lt", "inat2018", "cifar10-lt", "cifar100-lt"}
    assert SOURCES["imagenet-lt"].title == "ImageNet-LT"
    assert SOURCES["inat2018"].title == "iNaturalist 2018"
    assert SOURCES["cifar100-lt"].title == "CIFAR-100-LT"
    assert {n: s.epochs for n, s in SOURCES.items() if s.epochs} == {"inat2018": 15}
    with pytest.raises(TypeError):
        SOURCES["new"] = SOURCES["imagenet-lt"]  # read-only


@pytest.mark.parametrize(
    "name, options, needs_root",
    [
        ("cifar10-lt-sample", (), False),
        ("imagefolder", ("root",), True),
        ("imagenet-lt", ("root", "list_dir"), True),
        ("places-lt", ("root", "list_dir"), True),
        ("inat2018", ("root", "list_dir"), True),
        ("cifar10-lt", ("root", "imbalance", "n_max", "cache_dir", "seed"), True),
        ("cifar100-lt", ("root", "imbalance", "n_max", "cache_dir", "seed"), True),
    ],
)
def test_source_options(name, options, needs_root):
    assert SOURCES[name].options == options
    assert SOURCES[name].needs_root is needs_root


@pytest.mark.parametrize(
    "name, mapped",
    [
        ("cifar10-lt-sample", {"train": "train", "val": "test", "test": "test"}),
        ("imagefolder", {"train": "train", "val": "val", "test": "test"}),
        ("imagenet-lt", {"train": "train", "val": "val", "test": "test"}),
        ("places-lt", {"train": "train", "val": "val", "test": "test"}),
        ("inat2018", {"train": "train", "val": "val", "test": "val"}),
        ("cifar10-lt", {"train": "train", "val": "test", "test": "test"}),
        ("cifar100-lt", {"train": "train", "val": "test", "test": "test"}),
    ],
)
def test_source_split_names(name, mapped):
    assert {split: SOURCES[name].split_name(split) for split in mapped} == mapped


def test_load_source_sample_val_is_test():
    paths, y, names = load_source("cifar10-lt-sample", "val")
    expected = load_cifar10_lt_sample("test")
    assert paths == expected[0] and y.tolist() == expected[1].tolist() and names == expected[2]
    # The sample needs no root, and ignores one.
    assert load_source("cifar10-lt-sample", root="/nowhere")[0] == load_cifar10_lt_sample()[0]
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_source("cifar10-lt-sample", "dev")


def test_load_source_image_folder_split_or_root(tmp_path):
    for split, classes in (("train", ("b", "a")), ("test", ("a",))):
        for cls in classes:
            _png(tmp_path / "split" / split / cls / "0.png")
    _, y, names = load_source("imagefolder", "train", root=tmp_path / "split")
    assert names == ["a", "b"] and len(y) == 2
    paths, _, names = load_source("imagefolder", "test", root=str(tmp_path / "split"))
    assert names == ["a"] and all(Path(p).parent.parent.name == "test" for p in paths)
    # Without root/<split>, root itself holds the class folders.
    for cls in ("x", "y"):
        _png(tmp_path / "flat" / cls / "0.png")
    assert load_source("imagefolder", "val", root=tmp_path / "flat")[2] == ["x", "y"]
    # A root with split folders but not this one lacks the split: its split
    # folders are not classes.
    with pytest.raises(FileNotFoundError, match=r"split folder\(s\) train, test but no 'val'"):
        load_source("imagefolder", "val", root=tmp_path / "split")


def test_load_source_list_files(tmp_path):
    _write(tmp_path / "lists" / "ImageNet_LT_val.txt", "train/n1/a.JPEG 7\n")
    _write(tmp_path / "lists" / "Places_LT_test.txt", "val/a.jpg 3\n")
    (tmp_path / "img").mkdir()
    paths, y, names = load_source("imagenet-lt", "val", root=tmp_path / "img",
                                  list_dir=tmp_path / "lists", imbalance=10, seed=3)
    assert y.tolist() == [7] and len(names) == 1000 and "img" in paths[0]
    _, y, names = load_source("places-lt", "test", root=tmp_path / "img",
                              list_dir=tmp_path / "lists")
    assert y.tolist() == [3] and len(names) == 365
    with pytest.raises(FileNotFoundError, match="ImageNet_LT_train.txt, train.txt"):
        load_source("imagenet-lt", "train", root=tmp_path / "img", list_dir=tmp_path / "lists")


def test_load_source_inat_test_is_val(tmp_path):
    _write(tmp_path / "categories.json", json.dumps(_inat_categories()))
    _write(tmp_path / "val.txt", "a/2/x.jpg 2\n")
    _, y, names = load_source("inat2018", "test", root=tmp_path)
    assert y.tolist() == [2] and names[2] == "Genus species2"
    # list_dir is the annotation file.
    _write(tmp_path / "other" / "mine.txt", "a/1/y.jpg 1\n")
    _, y, _ = load_source("inat2018", "train", root=tmp_path,
                          list_dir=tmp_path / "other" / "mine.txt")
    assert y.tolist() == [1]


def test_load_source_cifar_options_and_val(tmp_path):
    for c, name in enumerate(get_class_names("cifar10")):
        for i in range(6):
            _png(tmp_path / "train" / name / f"{i:04d}.png", c)
        _png(tmp_path / "test" / name / "0.png", c)
    paths, y, _ = load_source("cifar10-lt", "train", root=tmp_path, imbalance=6, n_max=6,
                              seed=1, list_dir="ignored")
    expected = load_cifar10_lt(tmp_path, "train", imbalance=6, n_max=6, random_state=1)
    assert paths == expected[0] and np.bincount(y).tolist() == long_tailed_counts(6, 10, 6)
    assert paths != load_source("cifar10-lt", "train", root=tmp_path, imbalance=6, n_max=6)[0]
    _, y, _ = load_source("cifar10-lt", "val", root=tmp_path)
    assert y.tolist() == list(range(10))


def test_load_source_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 'mnist'; choose one of cifar10"):
        load_source("mnist", "train")
    with pytest.raises(ValueError, match="data source 'places-lt' needs root"):
        load_source("places-lt", "train")
    with pytest.raises(ValueError, match="needs root"):
        load_source("imagefolder", "train", root=None)
    with pytest.raises(TypeError, match="unknown data source option.* listdir"):
        load_source("imagenet-lt", "train", root=tmp_path, listdir=tmp_path)


def test_loaders_live_in_one_module_per_source():
    import liftlearn.datasets as ds
    from liftlearn.datasets import _benchmarks

    modules = {
        "load_imagenet_lt": "_imagenet_lt", "load_places_lt": "_places_lt",
        "load_inat2018": "_inat2018", "load_cifar10_lt": "_cifar_lt",
        "load_cifar100_lt": "_cifar_lt", "load_image_folder": "_image_folder",
        "load_cifar10_lt_sample": "_sample", "read_list_file": "_base",
        "get_class_names": "_base", "load_source": "_sources",
    }
    for name, module in modules.items():
        assert getattr(ds, name).__module__ == f"liftlearn.datasets.{module}", name
    # The old module re-exports the same objects for one release.
    assert _benchmarks.__all__ and all(
        getattr(_benchmarks, name) is getattr(ds, name) for name in _benchmarks.__all__)
    assert _benchmarks.DatasetFileError is ds.DatasetFileError


def _cache_files(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_failed_cache_write_leaves_no_partial_or_temporary_file(tmp_path, monkeypatch):
    import errno

    _fake_cifar100(tmp_path / "src", per_class=2, n_test=1)
    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        with open(fp, "r+b") as f:  # half of it reached the disk
            f.truncate(Path(fp).stat().st_size // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match=r"cached image .*\.png.*the disk is full") as info:
        load_cifar100_lt(tmp_path / "src", "test", cache_dir=cache)
    assert info.value.errno == errno.ENOSPC
    # "<name>.png.<pid>.part" used to stay behind.
    assert _cache_files(cache) == []
    monkeypatch.undo()
    paths, _, _ = load_cifar100_lt(tmp_path / "src", "test", cache_dir=cache)
    assert sorted(str(Path(p).relative_to(cache.resolve())) for p in paths) == _cache_files(cache)


def test_two_threads_caching_one_image_both_succeed(tmp_path, monkeypatch):
    import threading

    from liftlearn.datasets._cifar_lt import _write_png

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    dest = tmp_path / "apple" / "00001.png"
    # Both threads hold a written temporary file before either renames it:
    # with one "<name>.<pid>.part" per process the second rename failed.
    both_written = threading.Barrier(2, timeout=30)
    real_save = Image.Image.save

    def save_then_wait(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        both_written.wait()

    monkeypatch.setattr(Image.Image, "save", save_then_wait)
    run_in_threads(*[lambda: _write_png(pixels, dest)] * 2)
    with Image.open(dest) as im:
        assert np.array_equal(np.asarray(im), pixels)
    assert _cache_files(tmp_path) == [str(Path("apple", "00001.png"))]
