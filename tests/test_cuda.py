"""The estimators on a CUDA device, against the same fits on the CPU.

Skipped where there is no CUDA device, as in CI: these run on a machine lent
a GPU (``bash benchmarks/gpu_suite.sh --tests``), where one pass has to
check what no CPU test can: each precision's training and prediction on the
GPU, the pinned and packed transfers of the loaders, models moving between
the GPU and the CPU.

``LIFTLEARN_TEST_ACCELERATOR=cpu`` runs them on the CPU instead (the
comparisons are then CPU against CPU): to check the tests themselves on a
machine without a GPU.
"""

import os

import joblib
import numpy as np
import pytest
import torch

from liftlearn import CLIPFeatures, LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier
from liftlearn import load, save

ACCELERATOR = os.environ.get("LIFTLEARN_TEST_ACCELERATOR", "cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ACCELERATOR == "cuda" and not torch.cuda.is_available(), reason="needs CUDA"),
]

#: Probabilities of the same fit on the accelerator and on the CPU. bf16 and
#: fp16 as in tests/test_precision.py; fp32 too, since cuDNN may run the patch
#: convolution in TF32 and reductions run in another order.
PROBA_ATOL = 0.02


def _params(**kw):
    return {**dict(backbone="liftlearn-tiny-vit", pretrained=None, epochs=1, batch_size=16,
                   random_state=0, tte=False), **kw}


@pytest.fixture(scope="module")
def data(small):
    X, y, names, Xt, _ = small
    return X[::2], y[::2], names, Xt[:12]


@pytest.fixture(scope="module")
def cpu_fit(data):
    X, y, names, _ = data
    return LiftPlusClassifier(**_params(class_names=names, device="cpu")).fit(X, y)


def _precisions():
    # fp16 needs CUDA (refused on the CPU, tested in test_precision.py).
    return ["auto", "fp32", "bf16"] + (["fp16"] if ACCELERATOR == "cuda" else [])


@pytest.mark.parametrize("precision", _precisions())
def test_lift_plus_fits_and_predicts_on_the_accelerator_like_on_the_cpu(data, cpu_fit, precision):
    X, y, names, Xt = data
    clf = LiftPlusClassifier(**_params(class_names=names, device=ACCELERATOR,
                                       precision=precision)).fit(X, y)
    assert clf.device_.type == ACCELERATOR
    backbone = clf.module_.backbone
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if expected is None:  # auto: bf16 where the GPU has it, fp16 on others, fp32 on the CPU
        expected = (torch.float32 if ACCELERATOR == "cpu" else
                    # native bf16 (compute capability 8+), not emulated
                    torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8
                    else torch.float16)
    assert backbone.dtype is expected
    trainable = [p for p in clf.module_.parameters() if p.requires_grad]
    assert trainable and all(p.dtype is torch.float32 and p.device.type == ACCELERATOR
                             for p in trainable)
    assert all(np.isfinite(h["loss"]) for h in clf.history_)
    proba = clf.predict_proba(Xt)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    # Inference: the same fitted model on the CPU (in fp32 but for bf16,
    # which the CPU computes in too).
    assert np.abs(proba - load_into(clf, "cpu").predict_proba(Xt)).max() <= PROBA_ATOL
    if precision != "fp16":
        # Training: the same fit on the CPU. (fp16's gradient scaler may skip
        # the first steps of so short a fit while it finds its scale.)
        assert np.abs(proba - cpu_fit.predict_proba(Xt)).max() <= PROBA_ATOL


def test_tte_through_workers_and_pinned_memory_matches_the_cpu(data, cpu_fit):
    """TTE's packed resized images (pinned by the loader on CUDA, cut into
    views on the device) and plain prediction, with worker processes."""
    _, _, _, Xt = data
    moved = load_into(cpu_fit, ACCELERATOR)  # "auto": bf16 on a GPU that has it
    for tte in (False, True):
        moved.set_params(tte=tte, num_workers=2)
        cpu_fit.set_params(tte=tte)
        try:
            got = moved.predict_proba(Xt)
            assert np.abs(got - cpu_fit.predict_proba(Xt)).max() <= PROBA_ATOL
            moved.set_params(num_workers=0)
            # Workers or not, the same input reaches the network.
            np.testing.assert_allclose(moved.predict_proba(Xt), got, atol=1e-5)
        finally:
            cpu_fit.set_params(tte=False)


def load_into(clf, device):
    """``clf`` written to a model file in a temporary folder and read onto ``device``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save(clf, path)
        loaded = load(path, device=device)
    assert loaded.device_.type == device
    return loaded


def test_a_model_fitted_on_the_accelerator_moves_to_the_cpu(data, tmp_path, monkeypatch):
    """A model file and a joblib pickle of a GPU fit predict on the CPU
    like on the GPU (where the fit was in fp32, and cuDNN may not run the
    patch convolution in TF32)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    X, y, names, Xt = data
    clf = LiftPlusClassifier(**_params(class_names=names, device=ACCELERATOR,
                                       precision="fp32", num_workers=2)).fit(X, y)
    on_device = clf.predict_proba(Xt)
    on_cpu = load_into(clf, "cpu")
    assert next(on_cpu.module_.parameters()).device.type == "cpu"
    np.testing.assert_allclose(on_cpu.predict_proba(Xt), on_device, atol=1e-4)
    joblib.dump(clf, tmp_path / "clf.joblib")
    again = joblib.load(tmp_path / "clf.joblib")
    assert again.device_ == clf.device_
    np.testing.assert_allclose(again.predict_proba(Xt), on_device, atol=1e-6)


def test_an_interrupted_fit_on_the_accelerator_resumes_from_its_checkpoint(data, tmp_path,
                                                                            monkeypatch):
    from liftlearn.engine import Checkpoint

    # fp32 without TF32: what is compared is the resumption, not rounding.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    X, y, names, Xt = data
    params = _params(class_names=names, device=ACCELERATOR, epochs=2, precision="fp32",
                     checkpoint_dir=str(tmp_path / "ck"))
    clf = LiftPlusClassifier(**params)
    real = Checkpoint.write

    def write_then_stop(checkpoint, state):
        real(checkpoint, state)
        raise KeyboardInterrupt  # after the first epoch's checkpoint

    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "write", write_then_stop)
        with pytest.raises(KeyboardInterrupt):
            clf.fit(X, y)
    assert not hasattr(clf, "classes_")
    resumed = clf.fit(X, y)
    assert [h["epoch"] for h in resumed.history_] == [1, 2]
    reference = LiftPlusClassifier(**{**params, "checkpoint_dir": None}).fit(X, y)
    # Not bit for bit: some GPU kernels' backward sums in no fixed order.
    np.testing.assert_allclose(resumed.predict_proba(Xt), reference.predict_proba(Xt), atol=1e-4)


def test_ulfine_fits_on_the_accelerator_like_on_the_cpu(data, monkeypatch):
    # Without TF32, so that no near-tie of two classes flips a pseudo-label.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    X, y, names, Xt = data
    y_ssl = np.where(np.arange(len(y)) % 3 == 0, y, -1)
    proba = {}
    for device in ("cpu", ACCELERATOR):
        clf = ULFineClassifier(**_params(device=device, precision="fp32", threshold=0.0,
                                         max_steps=3))
        clf.fit(X, y_ssl, class_names=names)
        assert clf.device_.type == device and np.isfinite(clf.history_[-1]["loss"])
        proba[device] = clf.predict_proba(Xt)
    assert np.abs(proba[ACCELERATOR] - proba["cpu"]).max() <= PROBA_ATOL


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_zero_shot_and_features_on_the_accelerator_match_the_cpu(data, precision):
    X, y, names, Xt = data
    out = {}
    for device in ("cpu", ACCELERATOR):
        zs = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=None, class_names=names,
                                device=device, precision=precision).fit(X, y)
        feats = CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None, device=device,
                             precision=precision, tte=True).fit()
        out[device] = (zs.predict_proba(Xt), feats.transform(Xt))
    for got, expected in zip(out[ACCELERATOR], out["cpu"]):
        assert np.abs(got - expected).max() <= PROBA_ATOL
