"""The ``precision`` parameter: the frozen backbone held once per process in
the compute dtype, trainable parts in fp32, bf16 on the CPU against fp32."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

from liftlearn import CLIPFeatures, LiftPlusClassifier, ZeroShotClassifier, load, save
from liftlearn._device import autocast_for, resolve_precision
from liftlearn.nn.backbones import backbone_fingerprint, get_backbone

#: The stated bf16-versus-fp32 tolerance of predict_proba on the tiny model
#: (README, "precision"; measured: at most 0.0083 over adaptformer, full and
#: vpt fits, 0.0052 zero-shot).
BF16_PROBA_ATOL = 0.02


def _params(**kw):
    return {**dict(backbone="liftlearn-tiny-vit", pretrained=None, epochs=2, batch_size=32,
                   device="cpu", random_state=0, tte=False), **kw}


def test_resolve_precision_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is torch.float32
    assert resolve_precision("fp32", cpu) is torch.float32
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        resolve_precision("fp16", cpu)
    # A model fitted with fp16 on a GPU, loaded on a CPU: the CPU's "auto".
    assert resolve_precision("fp16", cpu, strict=False) is torch.float32
    assert autocast_for(cpu, torch.float32)[1] is None


@pytest.mark.parametrize("capability, auto", [((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                               ((9, 0), torch.bfloat16)])
def test_auto_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, capability, auto):
    # torch.cuda.is_bf16_supported() also says yes where bf16 is emulated
    # (T4: 7.5, V100: 7.0): "auto" must fall back to fp16 there, and "bf16"
    # be refused before anything runs. Simulated: this machine has no GPU.
    asked = []
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: asked.append(device) or capability)
    gpu = torch.device("cuda", 1)
    assert resolve_precision("auto", gpu) is auto
    assert asked[-1] == gpu  # the device asked about, not the current one
    if auto is torch.float16:
        with pytest.raises(ValueError, match="precision='bf16' is not supported natively"):
            resolve_precision("bf16", gpu)
    else:
        assert resolve_precision("bf16", gpu) is torch.bfloat16


def test_the_low_precision_backbone_is_cast_once_and_names_the_fp32_weights():
    fp32 = get_backbone("liftlearn-tiny-vit", "cpu")
    bf16 = get_backbone("liftlearn-tiny-vit", "cpu", dtype=torch.bfloat16)
    assert bf16 is get_backbone("liftlearn-tiny-vit", "cpu", dtype=torch.bfloat16)  # cached
    assert bf16 is not fp32 and fp32.dtype is torch.float32 and bf16.dtype is torch.bfloat16
    assert bf16.visual.conv1.weight.dtype is torch.bfloat16
    assert fp32.visual.conv1.weight.dtype is torch.float32  # the fp32 one untouched
    # CLIP's logit scale stays fp32 (a bf16 one would move zero-shot logits).
    assert bf16.model.logit_scale.dtype is torch.float32
    assert backbone_fingerprint(bf16) == backbone_fingerprint(fp32)


def test_bf16_fit_and_predict_proba_on_the_cpu_match_fp32(small, tmp_path):
    X, y, names, Xt, _ = small
    X, y = X[::2], y[::2]  # 6 images per class
    proba = {}
    for precision in ("fp32", "bf16"):
        clf = LiftPlusClassifier(**_params(class_names=names, precision=precision)).fit(X, y)
        proba[precision] = clf.predict_proba(Xt)
        backbone = clf.module_.backbone
        assert backbone.dtype is (torch.bfloat16 if precision == "bf16" else torch.float32)
        assert all(p.dtype is torch.float32 for p in clf.module_.parameters())  # trainable: fp32
    assert np.abs(proba["bf16"] - proba["fp32"]).max() <= BF16_PROBA_ATOL
    assert not np.array_equal(proba["bf16"], proba["fp32"])  # bf16 did run

    # A clone (GridSearchCV) shares the same bf16 backbone, cast once.
    again = clone(clf).set_params(epochs=1).fit(X[::2], y[::2])
    assert again.module_.backbone is clf.module_.backbone

    # Pickled, or saved to a model file, and loaded: the same precision,
    # backbone and predictions.
    path = tmp_path / "bf16.safetensors"
    save(clf, path)
    for loaded in (pickle.loads(pickle.dumps(clf)), load(path)):
        assert loaded.precision == "bf16" and loaded.module_.backbone is clf.module_.backbone
        assert np.array_equal(loaded.predict_proba(Xt), proba["bf16"])


def test_bf16_zero_shot_and_features_match_fp32(small):
    X, y, names, Xt, _ = small
    out = {}
    for precision in ("fp32", "bf16"):
        zs = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, class_names=names,
                                device="cpu", tte=False, precision=precision).fit(X, y)
        feats = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                             precision=precision).fit()
        out[precision] = (zs.predict_proba(Xt), feats.transform(Xt))
    for a, b in zip(out["fp32"], out["bf16"]):
        assert np.abs(a - b).max() <= BF16_PROBA_ATOL


def test_auto_on_the_cpu_is_the_fp32_backbone(small):
    X, y, names, _, _ = small
    clf = LiftPlusClassifier(**_params(class_names=names, epochs=1)).fit(X[::4], y[::4])
    assert clf.precision == "auto"
    assert clf.module_.backbone is get_backbone("liftlearn-tiny-vit", "cpu")


@pytest.mark.parametrize("cls", [LiftPlusClassifier, ZeroShotClassifier, CLIPFeatures])
def test_fp16_on_the_cpu_is_refused_before_anything_runs(small, cls):
    X, y, names, _, _ = small
    est = cls(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
        est.fit(X, y) if cls is not CLIPFeatures else est.fit()
    assert not hasattr(est, "module_")


def test_an_unknown_precision_is_refused_by_name(small):
    X, y, names, _, _ = small
    with pytest.raises(ValueError, match="precision"):
        LiftPlusClassifier(**_params(class_names=names, precision="fp8")).fit(X, y)


def _methods():
    from liftlearn.nn.tuners import RESNET_ADAPTERS, TUNERS

    return [("liftlearn-tiny-vit", a) for a in TUNERS] + [("liftlearn-tiny-rn", a) for a in RESNET_ADAPTERS]


@pytest.mark.parametrize("name, adapter", _methods())
def test_every_method_trains_in_fp32_on_a_bf16_backbone(name, adapter):
    """Trainable parts fp32 (also "full"'s copies), features within bf16's
    precision of the fp32 backbone's, gradients reach every trained
    parameter."""
    from liftlearn.nn.tuners import build_tuner

    bf16 = get_backbone(name, "cpu", dtype=torch.bfloat16)
    fp32 = get_backbone(name, "cpu")
    tuners = []
    for bb in (bf16, fp32):
        torch.manual_seed(0)
        tuners.append(build_tuner(adapter, bb, 10))
    assert all(p.dtype is torch.float32 for p in tuners[0].parameters())
    x = torch.randn(2, 3, bf16.image_size, bf16.image_size)
    autocast, scaler = autocast_for(torch.device("cpu"), torch.bfloat16)
    assert scaler is None
    with autocast:
        low = tuners[0].features(bf16.visual, x.clone().requires_grad_(True))  # a graph even for "none"
    low.float().square().sum().backward()
    with torch.no_grad():
        full = tuners[1].features(fp32.visual, x)
    assert (low.float() - full).abs().max() <= 0.02 * full.abs().max()
    trained = [p for p in tuners[0].parameters() if p.requires_grad]
    assert (trained or adapter == "none") and all(p.grad is not None for p in trained)


def test_precision_set_after_the_fit_applies_to_prediction_as_to_a_saved_copy(small, tmp_path):
    # The live model and its pickled or saved copy predict alike: the copies
    # build the backbone from the parameter, so prediction reads it too.
    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(**_params(precision="bf16", epochs=1)).fit(X[:40], y[:40])
    bf16 = clf.predict_proba(Xt[:6])
    clf.set_params(precision="fp32")
    live = clf.predict_proba(Xt[:6])
    assert clf.module_.backbone.dtype is torch.float32
    assert not np.array_equal(live, bf16)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(Xt[:6]), live)
    save(clf, tmp_path / "m.safetensors")
    np.testing.assert_array_equal(load(tmp_path / "m.safetensors").predict_proba(Xt[:6]), live)
    np.testing.assert_array_equal(clf.set_params(precision="bf16").predict_proba(Xt[:6]), bf16)


def test_the_fitted_module_is_callable_and_copyable_in_bf16(small):
    # module_ is documented as the torch module: a caller (a callback, a
    # user) gives it fp32 images without opening an autocast of its own.
    import copy

    from liftlearn.data import load_image
    from liftlearn.engine import DeviceImages
    from liftlearn.transforms import eval_transform

    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(**_params(precision="bf16", epochs=1)).fit(X[:40], y[:40])
    module = clf.module_
    transform = eval_transform(module.backbone.image_size)
    images = DeviceImages.of(module, torch.device("cpu"))(
        torch.cat([transform(load_image(x)) for x in Xt[:4]]))
    with torch.no_grad():
        logits = module(images).float()
    np.testing.assert_allclose(logits.numpy(), clf.decision_function(Xt[:4]), rtol=1e-5, atol=1e-5)
    # A deep copy (a callback keeping the best module) keeps device and
    # dtype and shares the frozen backbone; only what was learned is copied.
    best = copy.deepcopy(module)
    assert best.backbone is module.backbone and best.backbone.dtype is torch.bfloat16
    assert best.head is not module.head and best.head.weight.device == module.head.weight.device
    with torch.no_grad():
        assert torch.equal(best(images), module(images))


def test_bf16_features_are_unit_rows_to_float32_precision(small):
    X = small[0][:6]
    features = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                            precision="bf16").fit()
    rows = features.transform(X)
    assert np.abs(np.linalg.norm(rows, axis=1) - 1).max() < 1e-6  # was 8.5e-4


def test_switching_precision_refuses_weights_replaced_since_the_fit(small, replaceable_weights):
    # The cast copy is built from the file as it is now: a network trained
    # on other weights refuses it, as a pickled copy does.
    from liftlearn.exceptions import BackboneError

    X, y, _, Xt, _ = small
    clf = LiftPlusClassifier(**_params(pretrained=replaceable_weights.path, epochs=1)).fit(
        X[:40], y[:40])
    before = clf.predict_proba(Xt[:4])
    replaceable_weights.replace()
    with pytest.raises(BackboneError, match="weights fingerprint"):
        clf.set_params(precision="bf16").predict_proba(Xt[:4])
    np.testing.assert_array_equal(clf.set_params(precision="fp32").predict_proba(Xt[:4]), before)
