"""Pickle/joblib and safetensors model files."""

import json
import pickle

import joblib
import numpy as np
import pytest
import torch

from liftlearn import BackboneError, LiftPlusClassifier
from liftlearn.nn.backbones import clear_backbone_cache, get_backbone
from liftlearn.persistence import DeviceWarning, load, save, weights_fingerprint


@pytest.fixture(scope="module")
def own_checkpoint(tmp_path_factory, tiny_checkpoint):
    # A checkpoint this module may overwrite without disturbing other tests.
    import shutil

    path = tmp_path_factory.mktemp("own") / "tiny.pt"
    shutil.copy(tiny_checkpoint, path)
    return str(path)


@pytest.fixture(scope="module")
def fitted(small, own_checkpoint):
    X, y, names, _, _ = small
    return LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=own_checkpoint, epochs=1, batch_size=32,
        device="cpu", random_state=0, class_names=names,
    ).fit(X, y)


@pytest.mark.parametrize("adapter", ["adaptformer", "lora", "bitfit", "full"])
def test_joblib_and_safetensors_round_trips(adapter, small, tiny_params, tmp_path):
    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1, "adapter": adapter}, class_names=names).fit(X, y)
    expected = clf.predict_proba(Xt)
    joblib.dump(clf, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(Xt), expected)
    save(clf, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict_proba(Xt), expected)
    assert loaded.get_params() == {**clf.get_params(), "class_names": None}
    assert loaded.class_names_ == names and loaded.n_trainable_params_ == clf.n_trainable_params_
    np.testing.assert_array_equal(loaded.class_counts_, clf.class_counts_)
    assert loaded.history_ == clf.history_
    assert loaded.skipped_images_ == clf.skipped_images_ == []


def test_files_hold_only_what_was_learned(fitted, tmp_path):
    joblib.dump(fitted, tmp_path / "m.joblib")
    save(fitted, tmp_path / "m.safetensors")
    learned = fitted.n_trainable_params_ * 4
    # The backbone (1.7M parameters, ~7 MB) is not in either file.
    assert (tmp_path / "m.joblib").stat().st_size < learned + 100_000
    assert (tmp_path / "m.safetensors").stat().st_size < learned + 100_000


def test_vit_b16_model_for_1000_classes_is_a_few_megabytes():
    # The default backbone with random weights: the file holds the AdaptFormer
    # (617,868) and the classifier (768,000) parameters only.
    from liftlearn.nn.heads import CosineClassifier
    from liftlearn.nn.networks import LiftNetwork

    est = LiftPlusClassifier(backbone="ViT-B-16-quickgelu", pretrained=None)
    bb = get_backbone("ViT-B-16-quickgelu", "cpu", pretrained=None)
    # The head's values do not change the size; random rows spare encoding
    # 1000 prompts on the CPU.
    net = LiftNetwork(bb, est._build_tuner(bb, 1000, seed=0), CosineClassifier(torch.randn(1000, 768)))
    assert net.tuner.n_trainable_params() == 617_868
    size = len(pickle.dumps(net))
    assert 5.4e6 < size < 6.0e6, size


def test_string_labels_and_ulfine_extras_survive_save(small, tiny_params, tmp_path):
    from liftlearn import ULFineClassifier

    X, y, names, Xt, _ = small
    ys = np.array(names, dtype=object)[y]
    ys[::3] = -1
    clf = ULFineClassifier(**{**tiny_params, "epochs": 1}).fit(X, ys)
    save(clf, tmp_path / "u.safetensors")
    loaded = load(tmp_path / "u.safetensors")
    assert type(loaded) is ULFineClassifier and loaded.classes_.tolist() == clf.classes_.tolist()
    np.testing.assert_allclose(loaded.predict_proba(Xt), clf.predict_proba(Xt), atol=1e-6)
    assert loaded.transduction_.tolist() == clf.transduction_.tolist()
    np.testing.assert_allclose(loaded.unlabeled_prior_, clf.unlabeled_prior_)


def test_a_backbone_with_other_weights_is_refused(fitted, own_checkpoint, tmp_path):
    joblib.dump(fitted, tmp_path / "m.joblib")
    save(fitted, tmp_path / "m.safetensors")
    state = torch.load(own_checkpoint, weights_only=True)
    original = {k: v.clone() for k, v in state.items()}
    state["visual.ln_post.bias"] += 1.0
    torch.save(state, own_checkpoint)
    clear_backbone_cache()
    try:
        with pytest.raises(BackboneError, match="fingerprint"):
            joblib.load(tmp_path / "m.joblib")
        with pytest.raises(BackboneError, match="fingerprint"):
            load(tmp_path / "m.safetensors")
    finally:
        torch.save(original, own_checkpoint)
        clear_backbone_cache()


def test_model_fitted_on_cuda_loads_on_a_cpu_only_machine(fitted, small, tmp_path, monkeypatch):
    # Simulated: the CPU fit is labelled as a CUDA fit. What a real CUDA fit
    # adds (tensors on the GPU) never reaches the file: pickling moves the
    # learned tensors to the CPU first.
    Xt = small[3]
    expected = fitted.predict_proba(Xt)
    fitted.device_ = torch.device("cuda", 0)
    try:
        data = pickle.dumps(fitted)
        save(fitted, tmp_path / "m.safetensors")
    finally:
        fitted.device_ = torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(DeviceWarning, match="CUDA is not available"):
        loaded = pickle.loads(data)
    assert loaded.device_.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(Xt), expected)
    with pytest.warns(DeviceWarning):
        loaded = load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict_proba(Xt), expected)


def test_safetensors_file_is_data_only(fitted, tmp_path):
    path = tmp_path / "m.safetensors"
    save(fitted, path)
    raw = path.read_bytes()
    # safetensors: an 8-byte little-endian header length, then a JSON header.
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert "liftlearn" in header["__metadata__"] and b"__reduce__" not in raw
    other = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a liftlearn model file"):
        load(other)


def test_estimators_share_one_backbone(small, tiny_params):
    X, y, names, _, _ = small
    a, b = (LiftPlusClassifier(**{**tiny_params, "epochs": 1, "adapter": adapter}, class_names=names).fit(X, y)
            for adapter in ("adaptformer", "lora"))
    assert a.module_.backbone is b.module_.backbone


def test_weights_fingerprint_sees_every_change():
    m = torch.nn.Linear(3, 2)
    a = weights_fingerprint(m)
    with torch.no_grad():
        m.bias[0] += 1e-6
    assert weights_fingerprint(m) != a


def test_skipped_images_survive_save(small, tiny_params, tmp_path):
    X, y, names, _, _ = small
    missing = str(tmp_path / "gone.jpg")
    with pytest.warns(UserWarning, match="skipping 1"):
        clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=names,
                                 on_bad_image="skip").fit(X[:-1] + [missing], y)
    save(clf, tmp_path / "m.safetensors")
    assert load(tmp_path / "m.safetensors").skipped_images_ == clf.skipped_images_ == [(missing, "no such file")]


def test_local_dir_models_save_from_a_relative_folder_and_older_files_load(small, tmp_path, monkeypatch,
                                                                           tiny_checkpoint):
    import shutil

    import open_clip
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "bb"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config("liftlearn-tiny-vit"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    shutil.copy(tiny_checkpoint, folder / "open_clip_pytorch_model.bin")
    X, y, names, Xt, _ = small
    monkeypatch.chdir(folder)
    clf = LiftPlusClassifier(backbone="local-dir:.", pretrained=None, epochs=1, batch_size=32,
                             device="cpu", random_state=0, class_names=names).fit(X, y)
    save(clf, tmp_path / "m.safetensors")
    monkeypatch.chdir(tmp_path)
    np.testing.assert_allclose(load(tmp_path / "m.safetensors").predict_proba(Xt), clf.predict_proba(Xt))
    # A file of a release without the local-dir checks, with a pretrained
    # file beside the folder (which open_clip ignored): still loads.
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["liftlearn"])
    meta["params"]["pretrained"] = meta["backbone"]["pretrained"] = tiny_checkpoint
    save_file(load_file(str(tmp_path / "m.safetensors")), str(tmp_path / "old.safetensors"),
              metadata={"liftlearn": json.dumps(meta)})
    np.testing.assert_allclose(load(tmp_path / "old.safetensors").predict_proba(Xt), clf.predict_proba(Xt))
    # An absolute folder in the parameters must be the one the model runs on.
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    with pytest.raises(ValueError, match="load would refuse its params.backbone"):
        save(clf.set_params(backbone=f"local-dir:{other}"), tmp_path / "moved.safetensors")
