"""ULFineClassifier: PAF/DLF math on hand-made tensors, masking, and fits."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from liftlearn.nn import ulfine as um
from liftlearn import ULFineClassifier
from liftlearn.nn.networks import ULFineNetwork

from conftest import shared_cifar_dir


# ---------------------------------------------------------------- math: PAF
def test_confidence_momentum_is_m_times_relative_frequency():
    a = um.confidence_momentum(torch.tensor([0.5, 0.25, 0.25, 0.0]), 0.1)
    torch.testing.assert_close(a, torch.tensor([0.1, 0.05, 0.05, 0.0]))
    assert torch.equal(um.confidence_momentum(torch.zeros(3), 0.1), torch.zeros(3))


def test_paf_update_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    visual = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    seen = torch.tensor([True, True, False])
    prior = torch.tensor([0.6, 0.3, 0.1])  # a = m * [1, 0.5, 1/6]
    out = um.paf_update(text, visual, seen, prior, base_momentum=0.5)
    # class 0: 0.5 * e1 + 0.5 * e2, normalised; class 1: 0.75 * e2 + 0.25 * e1
    expect0 = torch.tensor([1.0, 1.0]) / 2**0.5
    expect1 = torch.tensor([0.25, 0.75]) / (0.25**2 + 0.75**2) ** 0.5
    torch.testing.assert_close(out[0], expect0)
    torch.testing.assert_close(out[1], expect1)
    # No visual prototype yet: unchanged (but unit length).
    torch.testing.assert_close(out[2], torch.tensor([1.0, 1.0]) / 2**0.5)
    # Inputs untouched; m = 0 is the identity on directions.
    assert torch.equal(text[1], torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(
        um.paf_update(text, visual, seen, prior, 0.0), torch.nn.functional.normalize(text, dim=-1)
    )


def test_visual_prototypes_first_batch_then_moving_average():
    protos = torch.zeros(3, 2)
    seen = torch.zeros(3, dtype=torch.bool)
    feats = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    um.update_visual_prototypes(protos, seen, feats, torch.tensor([0, 1, 1]), momentum=0.5)
    torch.testing.assert_close(protos, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert seen.tolist() == [True, True, False]
    um.update_visual_prototypes(protos, seen, torch.tensor([[0.0, 3.0]]), torch.tensor([0]), 0.5)
    torch.testing.assert_close(protos[0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(protos[1], torch.tensor([0.0, 1.0]))  # not in batch


def test_orthogonality_penalty_by_hand():
    assert float(um.orthogonality_penalty(torch.eye(3))) == pytest.approx(0.0)
    assert float(um.orthogonality_penalty(torch.ones(4, 5))) == pytest.approx(1.0)
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1/sqrt(2), squared 1/2
    assert float(um.orthogonality_penalty(w)) == pytest.approx(0.5)
    w.requires_grad_(True)
    um.orthogonality_penalty(w).backward()
    assert w.grad.abs().sum() > 0


# ---------------------------------------------------------------- math: DLF
def test_dual_logit_fusion_by_hand():
    zt = torch.tensor([[1.0, 3.0]])
    zl = torch.tensor([[5.0, -1.0]])
    torch.testing.assert_close(um.dual_logit_fusion(zt, zl, 0.25), torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(um.dual_logit_fusion(zt, zl, 0.0), zt)
    torch.testing.assert_close(um.dual_logit_fusion(zt, zl, 1.0), zl)


def test_prior_estimate_and_class_histogram():
    prior = um.prior_estimate(torch.tensor([6.0, 3.0, 1.0]), torch.tensor([0.0, 0.5, 0.5]), 10)
    torch.testing.assert_close(prior, torch.tensor([0.3, 0.4, 0.3]))
    p = torch.tensor([0.5, 0.5, 0.0])
    labels = torch.tensor([2, 2, 0, 1])
    mask = torch.tensor([True, True, True, False])
    out = um.ema_class_histogram(p, labels, mask, momentum=0.5)
    torch.testing.assert_close(out, torch.tensor([0.25 + 1 / 6, 0.25, 1 / 3]))
    # No confident pseudo-label: estimate unchanged.
    assert um.ema_class_histogram(p, labels, torch.zeros(4, dtype=torch.bool), 0.5) is p


# ------------------------------------------------------ threshold masking
def test_pseudo_label_threshold_masking():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.05, 0.05, 0.9]]))
    labels, mask = um.pseudo_labels(logits, threshold=0.7)
    assert labels.tolist() == [0, 0, 2]
    assert mask.tolist() == [True, False, True]  # >= threshold is kept
    assert not um.pseudo_labels(logits, 0.95)[1][0]
    assert um.pseudo_labels(logits, 0.0)[1].all()
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # FixMatch averages over all unlabeled images, masked ones count as 0.
    assert float(um.masked_mean(values, torch.tensor([True, False, False, True]))) == pytest.approx(1.25)


# ------------------------------------------------------------- estimator
@pytest.fixture(scope="module")
def ssl_data(small):
    X, y, names, Xt, yt = small
    # Every other image of the small subset (5 to 6 per class); two of every
    # three of those unlabeled.
    X, y = X[::2], y[::2]
    y_ssl = np.where(np.arange(len(y)) % 3 == 0, y, -1)
    return X, y, y_ssl, names, Xt, yt


def _params(tiny_params, **kw):
    p = dict(tiny_params, batch_size=16, tte=False)
    p.update(kw)
    return p


@pytest.fixture(scope="module")
def fitted_once(tiny_checkpoint, ssl_data):
    X, _, y_ssl, names, _, _ = ssl_data
    params = dict(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=2,
                  device="cpu", random_state=0)
    return ULFineClassifier(**_params(params, threshold=0.0)).fit(X, y_ssl, class_names=names)


@pytest.fixture
def fitted(fitted_once):
    # A private copy: some tests refit or change it.
    return pickle.loads(pickle.dumps(fitted_once))


def test_fitted_attributes(fitted, ssl_data):
    X, y, y_ssl, names, Xt, _ = ssl_data
    assert isinstance(fitted.module_, ULFineNetwork)
    np.testing.assert_array_equal(fitted.classes_, np.arange(10))
    np.testing.assert_array_equal(fitted.class_counts_, np.bincount(y_ssl[y_ssl >= 0], minlength=10))
    assert fitted.n_unlabeled_ == (y_ssl == -1).sum()
    lab = y_ssl != -1
    np.testing.assert_array_equal(fitted.transduction_[lab], y[lab])
    # threshold=0 accepts every pseudo-label, and every unlabeled image is
    # drawn (ratio 2 covers twice as many unlabeled as labeled images).
    assert (fitted.transduction_[~lab] >= 0).all()
    assert fitted.unlabeled_prior_.shape == (10,)
    assert fitted.unlabeled_prior_.sum() == pytest.approx(1.0)
    assert fitted.class_prior_.sum() == pytest.approx(1.0)
    assert [h["epoch"] for h in fitted.history_] == [1, 2]
    for h in fitted.history_:
        assert h["n_pseudo_labels"] == 2 * lab.sum()
        assert h["pseudo_label_rate"] == 1.0
        assert 0.0 <= h["labeled_accuracy"] <= 1.0
    proba = fitted.predict_proba(Xt[:6])
    assert proba.shape == (6, 10)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    assert set(fitted.predict(Xt[:6])) <= set(range(10))


def test_pickle_and_clone(fitted, ssl_data):
    Xt = ssl_data[4][:4]
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(again.decision_function(Xt), fitted.decision_function(Xt), rtol=1e-5, atol=1e-5)
    assert again.module_.backbone is fitted.module_.backbone
    assert again.module_.dlf and again.module_.fusion_weight == 0.5
    fresh = clone(fitted)
    assert not hasattr(fresh, "classes_")
    assert fresh.get_params()["paf_momentum"] == 0.01


def test_unlabeled_images_change_the_fit(tiny_params, ssl_data):
    X, _, y_ssl, names, Xt, _ = ssl_data
    base = _params(tiny_params, epochs=1, threshold=0.0)
    with_u = ULFineClassifier(**base).fit(X, y_ssl, class_names=names)
    without = ULFineClassifier(**base, pseudo_label=False).fit(X, y_ssl, class_names=names)
    assert without.history_[0]["n_pseudo_labels"] == 0
    assert (without.transduction_[y_ssl == -1] == -1).all()
    assert not np.allclose(with_u.decision_function(Xt[:8]), without.decision_function(Xt[:8]), atol=1e-4)


def test_threshold_one_masks_every_pseudo_label(tiny_params, ssl_data):
    X, _, y_ssl, names, Xt, _ = ssl_data
    base = _params(tiny_params, epochs=1, orthogonality_weight=0.0)
    masked = ULFineClassifier(**base, threshold=1.0).fit(X, y_ssl, class_names=names)
    assert masked.history_[0]["n_pseudo_labels"] == 0
    assert (masked.transduction_[y_ssl == -1] == -1).all()
    # No confident pseudo-label means no unlabeled loss and an unchanged
    # P_u: the fit is the one without unlabeled images.
    np.testing.assert_allclose(masked.unlabeled_prior_, np.full(10, 0.1))
    off = ULFineClassifier(**base, pseudo_label=False).fit(X, y_ssl, class_names=names)
    np.testing.assert_allclose(
        masked.decision_function(Xt[:8]), off.decision_function(Xt[:8]), rtol=1e-3, atol=1e-3
    )


@pytest.mark.parametrize(
    "switches",
    [
        dict(paf=False, dlf=False),  # FixMatch + LFT
        dict(paf=False, dlf=False, adapter="none"),  # FixMatch + LP
        dict(paf=True, dlf=False),
        dict(paf=False, dlf=True),
    ],
)
def test_each_part_switches_off(tiny_params, ssl_data, switches):
    X, _, y_ssl, names, Xt, _ = ssl_data
    clf = ULFineClassifier(**_params(tiny_params, epochs=1, **switches)).fit(X, y_ssl, class_names=names)
    net = clf.module_
    assert net.dlf == switches["dlf"]
    init = clf.module_.text_prototypes.clone()
    if not switches["paf"]:
        # Without PAF the textual prototypes stay at the text initialisation.
        from liftlearn.nn.heads import semantic_init

        ref = torch.nn.functional.normalize(semantic_init(net.backbone, clf.class_names_), dim=-1)
        torch.testing.assert_close(init, ref)
    if not switches["dlf"]:
        with torch.no_grad():
            f = net.features(torch.zeros(2, 3, 32, 32))
            torch.testing.assert_close(net(torch.zeros(2, 3, 32, 32)), net.head(f).float())
    assert clf.predict(Xt[:3]).shape == (3,)


def test_paf_moves_text_prototypes(fitted):
    from liftlearn.nn.heads import semantic_init

    net = fitted.module_
    ref = torch.nn.functional.normalize(semantic_init(net.backbone, fitted.class_names_), dim=-1)
    assert not torch.allclose(net.text_prototypes, ref)


def test_string_labels_with_object_minus_one(tiny_params, ssl_data):
    X, y, y_ssl, names, _, _ = ssl_data
    y_str = np.array([names[v] if v >= 0 else -1 for v in y_ssl], dtype=object)
    clf = ULFineClassifier(**_params(tiny_params, epochs=1)).fit(X, y_str)
    assert -1 not in clf.classes_.tolist()
    assert clf.transduction_.dtype == object
    assert set(clf.transduction_.tolist()) <= set(clf.classes_.tolist()) | {-1}
    assert clf.predict(X[:2])[0] in clf.classes_


@pytest.mark.parametrize(
    "bad_y, match",
    [
        (lambda y: np.where(y >= 0, np.resize(["a", "b"], len(y)), "-1"), "object"),
        (lambda y: np.full(len(y), -1), "no labeled image"),
    ],
)
def test_bad_labels_leave_unfitted(tiny_params, ssl_data, bad_y, match):
    X, _, y_ssl, _, _, _ = ssl_data
    clf = ULFineClassifier(**_params(tiny_params))
    with pytest.raises(ValueError, match=match):
        clf.fit(X, bad_y(y_ssl))
    assert not hasattr(clf, "classes_")


def test_minus_one_cannot_be_a_class(tiny_params, ssl_data):
    X, _, y_ssl, names, _, _ = ssl_data
    mapping = {i: n for i, n in enumerate(names)} | {-1: "unknown"}
    with pytest.raises(ValueError, match="cannot be a class"):
        ULFineClassifier(**_params(tiny_params)).fit(X, y_ssl, class_names=mapping)


@pytest.mark.parametrize(
    "param, value",
    [("threshold", 1.5), ("unlabeled_ratio", 0), ("paf", 1), ("fusion_weight", -0.1),
     ("ema_momentum", 0.0), ("randaugment_magnitude", 31), ("lr", 0)],
)
def test_parameter_validation(tiny_params, ssl_data, param, value):
    X, _, y_ssl, _, _, _ = ssl_data
    with pytest.raises(ValueError, match=param):
        ULFineClassifier(**_params(tiny_params, **{param: value})).fit(X, y_ssl)


def test_fit_failure_after_success_leaves_unfitted(fitted, ssl_data):
    X, _, y_ssl, _, _, _ = ssl_data
    fitted.set_params(threshold=2.0)
    with pytest.raises(ValueError):
        fitted.fit(X, y_ssl)
    assert not hasattr(fitted, "module_") and not hasattr(fitted, "transduction_")


# ------------------------------------------------------------ end to end
@pytest.mark.skipif(shared_cifar_dir() is None, reason="../shared CIFAR-10 tars not available")
def test_end_to_end_cifar10_lt_ssl(tiny_params, tmp_path_factory):
    from liftlearn.datasets import extract_cifar10_lt
    from liftlearn.datasets._ssl import make_long_tailed_ssl_split

    src = shared_cifar_dir()
    dest = tmp_path_factory.mktemp("cifar_ssl")
    X_pool, y_pool, names = extract_cifar10_lt(src, dest, split="train", imbalance=1, n_max=24)
    Xt, yt, _ = extract_cifar10_lt(src, dest, split="test", n_max=5)
    idx, y_ssl = make_long_tailed_ssl_split(y_pool, 8, 16, 8, 8, reverse_unlabeled=True, random_state=0)
    X = [X_pool[i] for i in idx]
    clf = ULFineClassifier(**_params(tiny_params, epochs=2)).fit(X, y_ssl, class_names=names)
    assert clf.class_counts_[0] == 8 and clf.class_counts_[-1] == 1
    assert len(clf.history_) == 2
    acc = float(np.mean(clf.predict(Xt) == yt))
    assert 0.0 <= acc <= 1.0
    assert clf.transduction_.shape == (len(X),)


def test_compile_option_trains_the_same_model(small, tiny_params):
    pytest.importorskip("torch._dynamo")
    X, y, names, Xt, _ = small
    X, y = X[:40], np.where(np.arange(40) % 2 == 0, y[:40], -1)
    params = {**tiny_params, "epochs": 1, "threshold": 0.2, "tte": False, "class_names": names}
    plain = ULFineClassifier(**params).fit(X, y)
    compiled = ULFineClassifier(**params, compile=True).fit(X, y)
    np.testing.assert_allclose(compiled.history_[0]["loss"], plain.history_[0]["loss"], rtol=1e-4)
    np.testing.assert_allclose(compiled.predict_proba(Xt), plain.predict_proba(Xt), atol=1e-4)
