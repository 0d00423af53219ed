import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from liftlearn import LiftPlusClassifier
from liftlearn.data import ImageDataset
from liftlearn import CLIPFeatures
from liftlearn.transforms import eval_transform


def test_linear_probe_pipeline(small, tiny_checkpoint):
    X, y, names, Xt, yt = small
    probe = make_pipeline(
        CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, device="cpu"),
        LogisticRegression(class_weight="balanced", max_iter=2000),
    )
    probe.fit(X, y)
    assert probe.predict_proba(Xt).shape == (len(Xt), 10)
    scores = cross_val_score(probe, X, y, cv=2)
    assert np.all((0 <= scores) & (scores <= 1))


def test_features_are_the_normalised_pre_projection_cls(small, tiny_checkpoint):
    X = small[0][:3]
    feats = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, device="cpu").fit().transform(X)
    ext = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, device="cpu").fit()
    bb = ext.module_.backbone
    images = torch.cat([eval_transform(bb.image_size, bb.mean, bb.std)(ImageDataset(X, lambda im: im)[i]) for i in range(3)])
    with torch.no_grad():
        ref = bb.visual._pool(bb.visual.transformer(bb.visual._embeds(images)))[0]
    np.testing.assert_allclose(feats, torch.nn.functional.normalize(ref, dim=-1).numpy(), atol=1e-5)
    assert feats.shape == (3, 64) and ext.get_feature_names_out()[0] == "clip0"


def test_features_through_a_fitted_adapter(small, tiny_params):
    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1, "lr": 0.5}, class_names=names).fit(X, y)
    ext = CLIPFeatures(adapter_from=FrozenEstimator(clf), normalize=False, device="cpu")
    adapted = ext.fit().transform(Xt[:4])
    frozen = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=tiny_params["pretrained"], normalize=False, device="cpu").fit().transform(Xt[:4])
    assert not np.allclose(adapted, frozen)
    assert clone(ext).fit().transform(Xt[:4]).shape == adapted.shape
    with pytest.raises(Exception, match="fitted"):
        CLIPFeatures(adapter_from=LiftPlusClassifier()).fit()


def test_changed_normalize_is_refused_by_save_and_foreign_sources_by_fit(tmp_path):
    from liftlearn import save

    features = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu").fit()
    features.set_params(normalize=False)  # takes effect at the next fit, not in a file
    with pytest.raises(ValueError, match="params.normalize.*set it back or refit"):
        save(features, tmp_path / "f.safetensors")
    other = LogisticRegression().fit(np.eye(2), [0, 1])
    with pytest.raises(ValueError, match="a LogisticRegression has no adapter"):
        CLIPFeatures(adapter_from=other, device="cpu").fit()


@pytest.mark.parametrize("backbone, adapter", [
    ("liftlearn-tiny-timm-vit", "full"),
    ("liftlearn-tiny-timm-resnet", "ssf"),
    ("liftlearn-tiny-rn", "full"),  # a CLIP ResNet
])
def test_adapted_features_of_a_whole_tower_tuner_survive_a_model_file(small, tmp_path, backbone, adapter):
    """Tuners without blocks (ResNets, timm towers) store no layers; the
    file must load (it was refused) and give the same features."""
    from liftlearn import load, save

    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(backbone=backbone, pretrained=None, adapter=adapter, epochs=1,
                             batch_size=40, device="cpu", random_state=0, class_names=names,
                             tte=False).fit(X[::2], y[::2])
    features = CLIPFeatures(adapter_from=clf, device="cpu").fit()
    save(features, tmp_path / "features.safetensors")
    loaded = load(tmp_path / "features.safetensors")
    np.testing.assert_array_equal(loaded.transform(Xt[:4]), features.transform(Xt[:4]))


def test_features_leave_the_source_estimators_modules_alone(small, tiny_params):
    """fit copies the source's tuner: moving the features to another device
    must not move the source's (on a CPU-only machine the move is made by
    hand, to "meta", which holds no data)."""
    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(**{**tiny_params, "epochs": 1}, class_names=names).fit(X, y)
    before = clf.predict_proba(Xt[:4])
    features = CLIPFeatures(adapter_from=clf, device="cpu").fit()
    own = {id(p) for p in features.module_.tuner.parameters()}
    assert own and not own & {id(p) for p in clf.module_.parameters()}
    features.module_.tuner.to("meta")
    np.testing.assert_array_equal(clf.predict_proba(Xt[:4]), before)


def test_features_refuse_weights_replaced_since_the_source_was_fitted(small, replaceable_weights):
    # The source's tuner was trained on the weights it holds; the cache
    # reloads the file as it is now.
    from liftlearn.exceptions import BackboneError

    X, y, names, _, _ = small
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=replaceable_weights.path,
                             epochs=1, batch_size=40, device="cpu", random_state=0,
                             class_names=names, tte=False).fit(X[::2], y[::2])
    replaceable_weights.replace()
    with pytest.raises(BackboneError, match="weights fingerprint"):
        CLIPFeatures(adapter_from=clf, device="cpu").fit()
