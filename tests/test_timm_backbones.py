"""The LIFT+ study's non-CLIP backbones through timm (issue 18), on tiny
random configurations and local weight files only."""

import numpy as np
import pytest
import torch

from liftlearn import CoOpClassifier, LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier
from liftlearn.exceptions import BackboneError
from liftlearn.nn.backbones import BackboneSpec, check_backbone, get_backbone
from liftlearn.nn.timm_backbones import TIMM_BACKBONES

VIT, RN = "liftlearn-tiny-timm-vit", "liftlearn-tiny-timm-resnet"


def test_the_study_backbones_use_their_own_normalisation():
    for name in ("IN21K-ViT-B/16", "IN21K-ViT-B/16@384px", "IN21K-ViT-L/16"):
        assert TIMM_BACKBONES[name][3:] == ((0.5,) * 3, (0.5,) * 3)
    for name in ("IN1K-RN50", "IN1K-RN101", "IN1K-RN152"):
        assert TIMM_BACKBONES[name][3:] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert TIMM_BACKBONES["IN21K-ViT-B/16@384px"][:3:2] == ("vit_base_patch16_384", 384)


def test_tiny_vit_feature_is_the_normalised_cls_token():
    bb = get_backbone(VIT, "cpu")
    assert (bb.kind, bb.feature_dim, bb.n_layers, bb.image_size) == ("timm", 32, 2, 32)
    assert bb.mean == (0.5, 0.5, 0.5)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cls = bb.visual.forward_features(images)[:, 0]  # after the final LayerNorm
        assert torch.allclose(bb.visual(images), cls, atol=1e-6)
    with pytest.raises(BackboneError, match="no text encoder"):
        bb.encode_text(["a photo of a cat."])


def test_weights_come_from_a_local_file_only(tmp_path):
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=7,
                              img_size=32, embed_dim=32, depth=2, num_heads=2)
    path = tmp_path / "tiny_vit.pth"
    torch.save(model.state_dict(), path)
    bb = get_backbone(VIT, "cpu", pretrained=str(path))
    assert torch.equal(bb.visual.patch_embed.proj.weight, model.patch_embed.proj.weight)
    assert torch.equal(bb.visual.norm.weight, model.norm.weight)
    with pytest.raises(BackboneError, match="downloads no timm weights"):
        check_backbone(BackboneSpec.create(VIT, "augreg_in21k"))
    with pytest.raises(BackboneError, match="is not a file"):
        get_backbone(VIT, "cpu", pretrained=str(tmp_path / "missing.pth"))



def _tiny_timm_vit(**overrides):
    import timm

    arch, extra = TIMM_BACKBONES[VIT][:2]
    return timm.create_model(arch, pretrained=False, num_classes=0, **{**extra, **overrides})


def test_timm_weights_are_drawn_under_the_lock_and_leave_the_callers_generator(monkeypatch, tmp_path):
    """Random timm weights are those of seed 0 (as before), drawn under
    GLOBAL_RNG_LOCK (so a seeded tuner init in another thread neither
    perturbs nor sees them), and a pretrained file, which timm also
    initialises randomly first, leaves the caller's generator alone."""
    import timm

    from conftest import lock_is_free

    from liftlearn._random import GLOBAL_RNG_LOCK
    from liftlearn.nn.backbones import weights_fingerprint
    from liftlearn.nn.timm_backbones import build_timm_model

    torch.manual_seed(0)
    expected = weights_fingerprint(_tiny_timm_vit())
    path = tmp_path / "tiny_vit.pth"
    torch.save(_tiny_timm_vit().state_dict(), path)

    held = []
    create = timm.create_model

    def spy(*args, **kwargs):
        held.append(not lock_is_free(GLOBAL_RNG_LOCK))
        return create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    random = build_timm_model(BackboneSpec.create(VIT, None))
    assert weights_fingerprint(random.visual) == expected
    build_timm_model(BackboneSpec.create(VIT, str(path)))
    assert torch.equal(torch.get_rng_state(), state)
    assert held == [True, True]


def test_a_vit_file_of_another_resolution_is_refused(tmp_path):
    """timm would interpolate its position embeddings silently."""
    path = tmp_path / "vit64.pth"
    torch.save(_tiny_timm_vit(img_size=64).state_dict(), path)
    with pytest.raises(BackboneError, match=r"pretrained=.*vit64\.pth.*pos_embed of shape \(1, 17, 32\)"
                                            r".*pos_embed of shape \(1, 5, 32\)"):
        get_backbone(VIT, "cpu", pretrained=str(path))


@pytest.mark.parametrize("backbone, adapter", [(VIT, "none"), (VIT, "full"), (RN, "ssf")])
def test_fit_and_predict_with_class_mean_init(small, backbone, adapter):
    X, y, names, Xt, _ = small
    bb = get_backbone(backbone, "cpu")
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    clf = LiftPlusClassifier(backbone=backbone, pretrained=None, adapter=adapter,
                             classifier_init="class_mean", epochs=1, batch_size=40, device="cpu",
                             random_state=0, class_names=names, tte=False)
    clf.fit(X[::2], y[::2])
    assert np.isfinite(clf.history_[-1]["loss"])
    assert clf.predict_proba(Xt[:3]).shape == (3, 10)
    assert all(torch.equal(before[k], v) for k, v in bb.model.state_dict().items())


def test_auto_init_is_class_mean_without_a_text_encoder(small):
    """The default classifier_init="auto" is the study's choice per backbone:
    class means on a timm backbone (the same model as asking for them)."""
    X, y, names, Xt, _ = small
    kw = dict(backbone=VIT, pretrained=None, adapter="none", epochs=1, batch_size=40,
              device="cpu", random_state=0, class_names=names, tte=False)
    auto = LiftPlusClassifier(**kw)
    assert auto.classifier_init == "auto"
    auto.fit(X[::2], y[::2])
    explicit = LiftPlusClassifier(classifier_init="class_mean", **kw).fit(X[::2], y[::2])
    np.testing.assert_array_equal(auto.predict_proba(Xt[:3]), explicit.predict_proba(Xt[:3]))
    unset = LiftPlusClassifier(classifier_init=None, **kw).fit(X[::2], y[::2])
    assert not np.array_equal(auto.predict_proba(Xt[:3]), unset.predict_proba(Xt[:3]))


def test_what_does_not_apply_is_refused_before_anything_runs(small, tmp_path, capsys, monkeypatch):
    """The backbone name alone decides these: each is refused before the
    images are checked or the backbone is built (by the estimators and by
    the ``liftlearn fit`` command before it loads data)."""
    import liftlearn.nn.backbones as backbones
    from liftlearn import cli

    X, y, names, _, _ = small
    monkeypatch.setattr(backbones, "_build_model", lambda spec: pytest.fail("backbone built first"))
    monkeypatch.setattr(cli, "_data", lambda *a, **k: pytest.fail("data loaded first"))
    kw = dict(pretrained=None, device="cpu", class_names=names)
    cases = [
        (LiftPlusClassifier(backbone=VIT, adapter="none", classifier_init="semantic", **kw),
         "has no text encoder.*'auto'"),
        (LiftPlusClassifier(backbone=VIT, **kw), r"adapter='adaptformer'.*takes \['none', 'full'\]"),
        (LiftPlusClassifier(backbone=RN, adapter="full", adapter_layers=1, **kw),
         "adapter_layers and adapter_dim do not apply to a timm backbone"),
        (CoOpClassifier(backbone=RN, **kw), "backbone=.*has no text encoder; CoOp needs a CLIP model"),
        (ZeroShotClassifier(backbone=RN, **kw), "backbone=.*has no text encoder"),
        (ULFineClassifier(backbone=RN, adapter="none", **kw), "backbone=.*has no text encoder"),
    ]
    for estimator, match in cases:
        with pytest.raises(ValueError, match=match):
            estimator.fit(X, y)
    for argv, match in [([], "adapter='adaptformer'"), (["--estimator", "zero-shot"], "no text encoder")]:
        assert cli.main(["fit", "--data", "cifar10-lt-sample", "--backbone", RN, "--pretrained", "none",
                         *argv, "--out", str(tmp_path / "m.safetensors"), "-q"]) == 2
        assert match in capsys.readouterr().err
