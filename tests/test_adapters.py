"""LiftPlusClassifier with every fine-tuning method (the tuner modules
themselves are tested in test_tuners.py)."""

import pytest
import torch

from liftlearn.nn.backbones import get_backbone
from liftlearn.nn.tuners import ADAPTERS, RESNET_ADAPTERS

VIT_ADAPTERS = sorted(ADAPTERS)


# --------------------------------------------------------------- backbones
@pytest.fixture(scope="module")
def rn_backbone():
    return get_backbone("liftlearn-tiny-rn", "cpu")


def test_tiny_resnet_backbone(rn_backbone):
    assert rn_backbone.kind == "resnet" and rn_backbone.feature_dim == 32


def test_non_native_towers_are_refused():
    from liftlearn.nn.backbones import Backbone, BackboneSpec
    from liftlearn.exceptions import BackboneError

    class FakeTimmClip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = torch.nn.Linear(2, 2)

    with pytest.raises(BackboneError, match="not timm"):
        Backbone(BackboneSpec("fake-timm", None), FakeTimmClip(), torch.device("cpu"))


# ------------------------------------------------- through LiftPlusClassifier
from liftlearn import LiftPlusClassifier


@pytest.fixture(scope="module")
def tiny_data(small):
    X, y, names, Xt, yt = small
    idx = [i for i in range(len(y)) if i % 3 == 0]  # 40 images, every class
    return [X[i] for i in idx], y[idx], names, Xt[:8]


def _snapshot(backbone):
    return {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}


@pytest.mark.parametrize(
    "adapter, layers", [(a, None) for a in VIT_ADAPTERS] + [("full", 1), ("lora", [0, 2])]
)
def test_each_option_fits_and_predicts(tiny_data, tiny_checkpoint, adapter, layers):
    X, y, names, Xt = tiny_data
    shared = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    before = _snapshot(shared)
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, adapter=adapter,
        adapter_layers=layers, epochs=1, batch_size=20, tte=False, device="cpu", random_state=0,
    ).fit(X, y, class_names=names)
    assert clf.predict(Xt).shape == (len(Xt),)
    assert clf.module_.backbone is shared
    n_visual = sum(p.numel() for p in shared.visual.parameters())
    assert clf.n_trainable_params_ == clf.n_adapter_params_ + 10 * 64
    assert clf.trainable_fraction_ == pytest.approx(clf.n_adapter_params_ / n_visual)
    assert (clf.n_adapter_params_ == 0) == (adapter == "none")
    after = shared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-for-bit
    if adapter == "full":
        trained = clf.module_.tuner.blocks
        assert any(
            not torch.equal(p, shared.visual.transformer.resblocks[int(k)].state_dict()[n])
            for k in trained for n, p in trained[k].state_dict().items()
        )


@pytest.mark.parametrize("adapter", RESNET_ADAPTERS)
def test_resnet_options_fit_and_predict(tiny_data, adapter):
    X, y, names, Xt = tiny_data
    shared = get_backbone("liftlearn-tiny-rn", "cpu")
    before = _snapshot(shared)
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-rn", pretrained=None, adapter=adapter, epochs=1,
        batch_size=20, tte=False, device="cpu", random_state=0,
    ).fit(X, y, class_names=names)
    assert clf.predict_proba(Xt).shape == (len(Xt), 10)
    assert clf.n_trainable_params_ == clf.n_adapter_params_ + 10 * 32
    after = shared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(adapter="lora"), "needs a ViT backbone"),
        (dict(adapter="full", adapter_layers=2), "adapter_layers does not apply to a ResNet"),
    ],
)
def test_resnet_refusals_through_the_estimator(tiny_data, params, match):
    X, y, names, _ = tiny_data
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-rn", pretrained=None, epochs=1, device="cpu", **params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y, class_names=names)
    assert not hasattr(clf, "module_")


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(adapter="ssf", adapter_dim=4), "adapter_dim does not apply"),
        (dict(adapter="none", adapter_layers=2), "adapter_layers does not apply"),
        (dict(adapter="vpt-shallow", adapter_layers=[1]), "adapter_layers does not apply"),
        (dict(adapter_layers=0), "adapter_layers=0"),
        (dict(adapter_layers=[1.5]), "adapter_layers"),
        (dict(adapter_layers=9), "adapter_layers=9"),
    ],
)
def test_invalid_settings_raise_clearly(tiny_data, tiny_checkpoint, params, match):
    X, y, names, _ = tiny_data
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1, device="cpu", **params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y, class_names=names)


def test_grid_search_over_the_adapter(tiny_data, tiny_checkpoint):
    from sklearn.model_selection import GridSearchCV

    X, y, names, _ = tiny_data
    est = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, class_names=names,
        epochs=1, batch_size=20, tte=False, device="cpu", random_state=0,
    )
    grid = GridSearchCV(est, {"adapter": ["lora", "bitfit"]}, cv=2).fit(X, y)
    assert grid.best_params_["adapter"] in ("lora", "bitfit")
