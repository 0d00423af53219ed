import pickle

import joblib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError

from liftlearn import BadImageError, LiftPlusClassifier, TrainingError


@pytest.fixture(scope="module")
def fitted(small, tiny_checkpoint):
    X, y, names, Xt, yt = small
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=2,
        batch_size=32, device="cpu", random_state=0,
    )
    return clf.fit(X, y, class_names=names)


def test_is_a_classifier_for_sklearn():
    assert is_classifier(LiftPlusClassifier())


def test_defaults_follow_lift_plus():
    p = LiftPlusClassifier().get_params()
    assert p["backbone"] == "ViT-B-16-quickgelu" and p["pretrained"] == "openai"
    assert p["adapter"] == "adaptformer" and p["adapter_dim"] is None
    assert (p["epochs"], p["batch_size"], p["lr"], p["momentum"], p["weight_decay"]) == (5, 128, 0.02, 0.9, 5e-4)
    assert (p["tau"], p["scale"], p["tte"], p["tte_expand"]) == (1.0, 25.0, True, 24)
    assert p["prompt_template"] == "a photo of a {}." and p["mda_schedule"] == "convex"


def test_fitted_attributes(fitted, small):
    X, y, names, Xt, yt = small
    assert fitted.fit(X, y, class_names=names) is fitted
    np.testing.assert_array_equal(fitted.classes_, np.arange(10))
    assert fitted.class_names_ == names
    np.testing.assert_array_equal(fitted.class_counts_, np.bincount(y, minlength=10))
    assert fitted.adapter_dim_ == 1
    # AdaptFormer (4 blocks of 2*64 + 64*1 + 1 + 1*64 + 64 + 1) + head 10 x 64.
    assert fitted.n_adapter_params_ == 4 * (128 + 64 + 1 + 64 + 64 + 1)
    assert fitted.n_trainable_params_ == fitted.n_adapter_params_ + 640
    assert [h["epoch"] for h in fitted.history_] == [1, 2]
    assert np.isclose(fitted.history_[0]["lr"], 0.02) and np.isclose(fitted.history_[1]["lr"], 0.01)
    assert all(np.isfinite(h["loss"]) for h in fitted.history_)


def test_predict_proba_decision_consistency(fitted, small):
    Xt = small[3]
    logits = fitted.decision_function(Xt)
    proba = fitted.predict_proba(Xt)
    assert logits.shape == proba.shape == (len(Xt), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.predict(Xt), fitted.classes_[proba.argmax(1)])
    assert np.abs(logits).max() <= 25.0 + 1e-4  # cosine logits


def test_tte_averages_five_views(fitted, small):
    from liftlearn.data import ImageDataset
    from liftlearn.transforms import tte_transform
    import torch

    Xt = small[3][:3]
    bb = fitted.module_.backbone
    views = torch.stack([tte_transform(bb.image_size, bb.mean, bb.std, 24)(ImageDataset(Xt, lambda im: im)[i]) for i in range(3)])
    with torch.no_grad():
        per_view = fitted.module_(views.flatten(0, 1)).view(3, 5, -1)
    np.testing.assert_allclose(fitted.decision_function(Xt), per_view.mean(1).numpy(), atol=1e-5)
    no_tte = clone(fitted).set_params(tte=False)
    no_tte.__dict__.update({k: v for k, v in vars(fitted).items() if k.endswith("_")})
    assert not np.allclose(no_tte.decision_function(Xt), fitted.decision_function(Xt))


def test_not_fitted_errors():
    clf = LiftPlusClassifier()
    for method in ("predict", "predict_proba", "decision_function", "score"):
        args = (["a.png"], [0]) if method == "score" else (["a.png"],)
        with pytest.raises(NotFittedError):
            getattr(clf, method)(*args)


def test_random_state_makes_fits_identical(small, tiny_params):
    X, y, names, Xt, _ = small
    a = LiftPlusClassifier(**tiny_params, class_names=names).fit(X, y)
    b = LiftPlusClassifier(**tiny_params, class_names=names).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    c = LiftPlusClassifier(**{**tiny_params, "random_state": 1}, class_names=names).fit(X, y)
    assert not np.array_equal(a.predict_proba(Xt), c.predict_proba(Xt))


def test_gradient_accumulation_gives_the_same_fit(small, tiny_params):
    X, y, names, Xt, _ = small
    full = LiftPlusClassifier(**tiny_params, class_names=names).fit(X, y)
    accum = LiftPlusClassifier(**tiny_params, class_names=names, device_batch_size=8).fit(X, y)
    np.testing.assert_allclose(full.decision_function(Xt), accum.decision_function(Xt), atol=2e-4)
    np.testing.assert_allclose([h["loss"] for h in full.history_], [h["loss"] for h in accum.history_], rtol=1e-4)


@pytest.mark.parametrize("params, match", [
    ({"loss": "cb", "device_batch_size": 8}, "loss='cb' is computed from statistics of the whole batch"),
    ({"loss": "lade", "device_batch_size": 8}, "loss='lade'"),
    ({"classifier": "linear", "scale": 30.0}, "scale=30.0 scales the cosine classifier"),
])
def test_parameters_that_would_be_ignored_or_change_the_fit_are_refused(small, tiny_params, params, match):
    X, y, names, _, _ = small
    clf = LiftPlusClassifier(**tiny_params, class_names=names, **params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    # The same with device_batch_size = batch_size, or scale with LDAM, is fine.
    LiftPlusClassifier(**{**tiny_params, "batch_size": 8}, device_batch_size=8, loss="cb")._check_fit_relations()
    LiftPlusClassifier(classifier="linear", scale=30.0, loss="ldam")._check_fit_relations()


def test_prediction_keeps_to_device_batch_size(small, tiny_params, monkeypatch):
    import liftlearn.estimators._base as base

    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=names, device_batch_size=8).fit(X, y)
    seen = []
    real = base.predict_images
    monkeypatch.setattr(base, "predict_images",
                        lambda *a, **k: seen.append(k["batch_size"]) or real(*a, **k))
    clf.predict(Xt[:3])
    assert seen == [8]


def test_string_labels_and_classes_without_images(small, tiny_params):
    X, y, names, Xt, _ = small
    ys = np.array(names, dtype=object)[y]
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}).fit(X, ys)
    assert list(clf.classes_) == sorted(names)
    assert set(clf.predict(Xt)) <= set(names)
    # A mapping that names an extra class with no training image keeps it as a column.
    mapping = {n: n.replace("_", " ") for n in names} | {"zebra": "zebra"}
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=mapping).fit(X, ys)
    assert "zebra" in clf.classes_ and clf.predict_proba(Xt).shape == (len(Xt), 11)
    assert clf.class_counts_[list(clf.classes_).index("zebra")] == 0


def test_sequence_class_names_with_unseen_classes(small, tiny_params):
    X, y, names, Xt, _ = small
    keep = y < 5
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}).fit(
        [x for x, k in zip(X, keep) if k], y[keep], class_names=names
    )
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.predict_proba(Xt).shape == (len(Xt), 10)
    assert list(clf.class_counts_[5:]) == [0] * 5


def test_fit_class_names_override_constructor(small, tiny_params):
    X, y, names, _, _ = small
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=[f"c{i}" for i in range(12)])
    clf.fit(X, y, class_names=names)
    assert clf.class_names_ == names


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(adapter="lora2"), "parameter adapter='lora2'"),
        (dict(epochs=0), "epochs=0"),
        (dict(lr=-1.0), "lr=-1.0"),
        (dict(device_batch_size=5), "must divide batch_size"),
        (dict(mda_schedule="cubic"), "mda_schedule='cubic'"),
        (dict(prompt_template="no slot"), "prompt_template"),
        (dict(device="tpu:9"), "device"),
        (dict(backbone="ViT-Nope"), "unknown backbone"),
    ],
)
def test_bad_parameters_raise_naming_them(small, tiny_params, change, message):
    X, y, names, _, _ = small
    with pytest.raises((ValueError, RuntimeError), match=message):
        LiftPlusClassifier(**{**tiny_params, **change}).fit(X, y, class_names=names)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda X, y: (X[:-1], y), r"X has \d+ images but y has \d+ labels"),
        (lambda X, y: (X, np.where(y == 0, 12, y)), "not among the classes: 12"),
        (lambda X, y: (X, np.where(y == 0, -1, y)), "unlabeled"),
        (lambda X, y: ([], []), "empty"),
        (lambda X, y: (X, y.astype(float) + np.where(np.arange(len(y)) == 3, np.nan, 0)), "NaN"),
    ],
)
def test_bad_data_raise_clear_errors(small, tiny_params, make, message):
    X, y, names, _, _ = small
    X2, y2 = make(list(X), np.asarray(y))
    with pytest.raises(ValueError, match=message):
        LiftPlusClassifier(**tiny_params, class_names=names).fit(X2, y2)


def test_single_class_needs_class_names(small, tiny_params):
    X, y, names, _, _ = small
    with pytest.raises(ValueError, match="at least 2 classes"):
        LiftPlusClassifier(**tiny_params).fit(X[:5], [3] * 5)


def test_missing_and_corrupt_images_are_named(small, tiny_params, tmp_path):
    X, y, names, _, _ = small
    missing = str(tmp_path / "gone.jpg")
    with pytest.raises(BadImageError, match="gone.jpg"):
        LiftPlusClassifier(**tiny_params, class_names=names).fit(X[:-1] + [missing], y)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadImageError, match="corrupt.jpg"):
        LiftPlusClassifier(**tiny_params, class_names=names).fit(X[:-1] + [str(corrupt)], y)


def test_failed_fit_leaves_the_estimator_unfitted(fitted, small, tiny_params):
    X, y, names, Xt, _ = small
    clf = clone(fitted)
    clf.fit(X, y, class_names=names)
    with pytest.raises(ValueError):
        clf.fit(X[:-1], y, class_names=names)
    with pytest.raises(NotFittedError):
        clf.predict(Xt)
    assert not [k for k in vars(clf) if k.endswith("_")]


def test_diverging_loss_stops_the_fit(small, tiny_params):
    X, y, names, _, _ = small
    clf = LiftPlusClassifier(**{**tiny_params, "lr": 1e30, "epochs": 1}, class_names=names)
    with pytest.raises(TrainingError, match="smaller lr"):
        clf.fit(X, y)
    assert not hasattr(clf, "classes_")


def test_fit_never_changes_the_shared_backbone(small, tiny_params):
    import torch

    from liftlearn.nn.backbones import get_backbone

    X, y, names, _, _ = small
    bb = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_params["pretrained"])
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    clf = LiftPlusClassifier(**tiny_params, class_names=names).fit(X, y)
    assert clf.module_.backbone is bb
    assert all(torch.equal(before[k], v) for k, v in bb.model.state_dict().items())


def test_clone_and_pickle_round_trip(fitted, small, tmp_path):
    Xt = small[3]
    c = clone(fitted)
    assert not hasattr(c, "classes_") and c.get_params() == fitted.get_params()
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(Xt), fitted.predict_proba(Xt))
    # Only the trained parts travel; the frozen backbone is rebuilt by name.
    assert path.stat().st_size < 200_000
    assert pickle.loads(pickle.dumps(fitted)).module_.backbone is fitted.module_.backbone


def test_score_is_accuracy(fitted, small):
    Xt, yt = small[3], small[4]
    assert fitted.score(Xt, yt) == pytest.approx(np.mean(fitted.predict(Xt) == yt))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.lists(st.integers(0, 39), min_size=1, max_size=6))
def test_predictions_do_not_depend_on_batch_composition(fitted, small, idx):
    Xt = small[3]
    full = fitted.predict_proba(Xt)
    sub = fitted.predict_proba([Xt[i] for i in idx])
    np.testing.assert_allclose(sub, full[idx], atol=1e-5)
    np.testing.assert_allclose(sub.sum(1), 1.0, rtol=1e-6)


def test_fit_does_not_change_parameters(small, tiny_params):
    from sklearn.base import clone

    X, y, names, _, _ = small
    est = LiftPlusClassifier(**{**tiny_params, "epochs": 1, "adapter_layers": [0, 2]}, class_names=list(names))
    before = clone(est).get_params()
    est.fit(X, y)
    after = est.get_params()
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in before)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="without a CUDA device nothing can initialise CUDA")
def test_import_init_and_a_cpu_fit_leave_cuda_alone(tiny_checkpoint):
    """In a process of its own: another test of this process may have
    initialised CUDA already."""
    import subprocess
    import sys

    from conftest import checkout_env

    code = (
        "import torch, liftlearn\n"
        "from liftlearn.datasets import load_cifar10_lt_sample\n"
        "X, y, names = load_cifar10_lt_sample('train')\n"
        "idx = [int(i) for i in torch.linspace(0, len(X) - 1, 30)]\n"
        "clf = liftlearn.LiftPlusClassifier(backbone='liftlearn-tiny-vit', pretrained=%r,\n"
        "    epochs=1, batch_size=8, device='cpu', tte=False, class_names=list(names))\n"
        "assert not torch.cuda.is_initialized(), 'import or __init__'\n"
        "clf.fit([X[i] for i in idx], [y[i] for i in idx]).predict([X[i] for i in idx[:4]])\n"
        "assert not torch.cuda.is_initialized(), 'fit or predict on the CPU'\n"
    ) % tiny_checkpoint
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=checkout_env())
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_refit_is_idempotent(fitted, small):
    X, y, names, Xt, _ = small
    first = fitted.predict_proba(Xt)
    fitted.fit(X, y, class_names=names)
    np.testing.assert_array_equal(fitted.predict_proba(Xt), first)


def test_compile_option_trains_the_same_model(small, tiny_params):
    pytest.importorskip("torch._dynamo")
    X, y, names, Xt, _ = small
    X, y = X[:40], y[:40]
    plain = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=names).fit(X, y)
    compiled = LiftPlusClassifier(**{**tiny_params, "epochs": 1, "compile": True}, class_names=names).fit(X, y)
    np.testing.assert_allclose(compiled.history_[0]["loss"], plain.history_[0]["loss"], rtol=1e-4)
    np.testing.assert_allclose(compiled.predict_proba(Xt), plain.predict_proba(Xt), atol=1e-4)
