"""One battery over every liftlearn estimator (scikit-learn's test_common)."""

from __future__ import annotations

import copy
import inspect
import pickle
import warnings
import re
from numbers import Integral, Real

import joblib
import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils import estimator_checks as ec

import liftlearn
from liftlearn import CLIPFeatures, CoOpClassifier, LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier
from liftlearn._validation import InvalidParameterError
from liftlearn.exceptions import BadImageError, LiftLearnWarning, UnknownLabelWarning

ESTIMATORS = [LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier, CLIPFeatures, CoOpClassifier]
CLASSIFIERS = [LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier, CoOpClassifier]
IDS = [c.__name__ for c in ESTIMATORS]

TINY = dict(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu")
TRAIN = dict(epochs=1, batch_size=16, random_state=0)


def make(cls, **params):
    extra = dict(TRAIN) if cls in (LiftPlusClassifier, ULFineClassifier, CoOpClassifier) else {}
    return cls(**{**TINY, **extra, **params})


def fit(est, X, y, names):
    if isinstance(est, CLIPFeatures):
        return est.fit(X)
    if isinstance(est, ULFineClassifier):
        y = np.where(np.arange(len(y)) % 3 == 0, -1, y)
    return est.set_params(class_names=names).fit(X, y)


def outputs(est, X):
    return est.transform(X) if isinstance(est, CLIPFeatures) else est.predict_proba(X)


@pytest.fixture(scope="module")
def data(small):
    X, y, names, Xt, yt = small
    idx = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(10)])
    return [X[i] for i in idx], y[idx], names, Xt[:6]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, names, _ = data
    return {cls: fit(make(cls), X, y, names) for cls in ESTIMATORS}


# ------------------------------------------------------------------- API
@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize(
    "check",
    [
        "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
        "check_estimator_repr", "check_no_attributes_set_in_init",
        "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
        "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    ],
)
def test_sklearn_api_checks(cls, check):
    getattr(ec, check)(cls.__name__, cls())


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_kind(cls):
    assert is_classifier(cls()) == (cls in CLASSIFIERS)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_constructor_is_keyword_only(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert params and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params)
    with pytest.raises(TypeError):
        cls("liftlearn-tiny-vit")


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_constraints_table_covers_exactly_the_constructor(cls):
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(cls._parameter_constraints) == params


def _documented(doc: str) -> set:
    """Names in the numpydoc Parameters section (entries at 4 spaces;
    ``a, b, c`` lines name several)."""
    section = doc.split("Parameters\n    ----------\n", 1)[1].split("\n    Attributes\n", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            names.update(n.strip() for n in line.strip().split(" : ")[0].split(","))
    return names


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_every_parameter_is_documented(cls):
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    missing = params - _documented(cls.__doc__)
    assert not missing, f"{cls.__name__} docstring lacks {sorted(missing)}"


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_clone_get_set_params(cls):
    est = cls(verbose=1)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert twin.set_params(verbose=0) is twin and twin.verbose == 0
    with pytest.raises(ValueError):
        twin.set_params(no_such_parameter=1)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_pickles_from_before_a_parameter_existed_get_its_default(cls, fitted):
    """An estimator pickled before, e.g., ``precision`` or ``callbacks``
    existed unpickles with their constructor defaults: get_params, clone,
    repr and predictions work."""
    import pickle

    from sklearn.base import clone

    est = fitted[cls]
    state = dict(est.__getstate__())
    missing = [k for k in ("precision", "callbacks", "validation_fraction", "check_images")
               if k in state]
    for k in missing:
        del state[k]
    old = cls.__new__(cls)
    old.__setstate__(state)
    defaults = cls().get_params(deep=False)
    assert {k: old.get_params(deep=False)[k] for k in missing} == {k: defaults[k] for k in missing}
    assert clone(old).get_params(deep=False) == clone(est).get_params(deep=False) | {
        k: defaults[k] for k in missing}
    repr(old)
    pickle.loads(pickle.dumps(old))


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_defaults_pass_validation(cls):
    cls()._validate_params()


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_numpy_scalars_are_accepted_wherever_numbers_are(cls):
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()
                if k != "self"}
    numeric = {
        k: (np.int64(v) if isinstance(v, Integral) else np.float64(v))
        for k, v in defaults.items()
        if isinstance(v, Real) and not isinstance(v, bool)
    }
    assert numeric
    cls(**numeric)._validate_params()


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_numpy_strings_and_bool_verbose_are_accepted_as_sklearn_does(cls):
    # np.str_ is what an array of options gives GridSearchCV's grid.
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()
                if k != "self"}
    strings = {k: np.str_(v) for k, v in defaults.items() if type(v) is str}
    assert strings
    cls(**strings, verbose=True)._validate_params()
    with pytest.raises(InvalidParameterError, match="parameter precision="):
        cls(precision=np.str_("fp64"))._validate_params()


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize(
    "name, value",
    [("batch_size", 0), ("batch_size", 2.0), ("verbose", -1), ("tte", "yes"),
     ("num_workers", -2), ("backbone", ""), ("pretrained", 3), ("tte_expand", -1)],
)
def test_bad_shared_parameters_are_named(cls, name, value, data):
    X, y, names, _ = data
    est = make(cls, **{name: value})
    with pytest.raises(InvalidParameterError, match=rf"{cls.__name__}: parameter {name}="):
        fit(est, X, y, names)
    assert not hasattr(est, "module_")


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize("device", ["meta", "xpu", "mps", "cuda:7"])
def test_devices_this_machine_cannot_run_are_named_before_any_work(cls, device, data,
                                                                    monkeypatch):
    # torch names them all; each failed deep inside the fit with torch's
    # own message (or, for meta, a NotImplementedError in the head).
    from liftlearn.estimators import _base

    X, y, names, _ = data
    monkeypatch.setattr(_base.CLIPEstimator, "_images", lambda *a: pytest.fail("images read"))
    monkeypatch.setattr(_base, "as_image_source", lambda *a, **k: pytest.fail("images read"))
    with pytest.raises(ValueError, match=rf"device='{device}'"):
        fit(make(cls, device=device), X, y, names)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_a_failed_refit_leaves_the_estimator_unfitted(cls, data):
    X, y, names, Xt = data
    est = fit(make(cls), X, y, names)
    assert hasattr(est, "module_")
    est.set_params(batch_size=0)
    with pytest.raises(InvalidParameterError):
        fit(est, X, y, names)
    assert not [a for a in vars(est) if a.endswith("_")]
    with pytest.raises(NotFittedError):
        outputs(est, Xt)


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_unfitted_estimators_refuse_to_predict(cls, data):
    with pytest.raises(NotFittedError):
        outputs(cls(), data[3])


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_module_is_the_fitted_network(cls, fitted):
    est = fitted[cls]
    assert isinstance(est.module_, liftlearn.nn.networks.SharedBackboneNetwork)
    assert str(est.device_) == "cpu"


# ----------------------------------------------------------- persistence
@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize("how", ["joblib", "pickle", "safetensors"])
def test_save_load_round_trip(cls, how, fitted, data, tmp_path):
    est, Xt = fitted[cls], data[3]
    path = tmp_path / f"model.{how}"
    if how == "joblib":
        joblib.dump(est, path)
        back = joblib.load(path)
    elif how == "pickle":
        back = pickle.loads(pickle.dumps(est))
    else:
        liftlearn.save(est, path)
        back = liftlearn.load(path)
    assert type(back) is cls
    np.testing.assert_array_equal(outputs(back, Xt), outputs(est, Xt))
    assert back.get_params(deep=False).keys() == est.get_params(deep=False).keys()


def test_adapted_features_round_trip(fitted, data, tmp_path):
    features = CLIPFeatures(adapter_from=fitted[LiftPlusClassifier], device="cpu").fit()
    liftlearn.save(features, tmp_path / "f.safetensors")
    back = liftlearn.load(tmp_path / "f.safetensors")
    np.testing.assert_array_equal(back.transform(data[3]), features.transform(data[3]))


# ----------------------------------------------------------- classifiers
@pytest.mark.parametrize("cls", CLASSIFIERS, ids=[c.__name__ for c in CLASSIFIERS])
def test_class_names_as_long_as_x_are_refused_in_fit(cls, data):
    X, y, names, _ = data
    per_sample = [names[v] for v in y]
    with pytest.raises(ValueError, match="as many entries as X"):
        make(cls).fit(X, y, class_names=per_sample)


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=[c.__name__ for c in CLASSIFIERS])
def test_score_refuses_labels_outside_the_model(cls, fitted, data):
    # Now: scikit-learn's accuracy, where such samples count as errors, with
    # one warning naming the labels.
    est, Xt = fitted[cls], data[3]
    y_pred = est.predict(Xt)
    y = [99, 98] + y_pred[2:].tolist()  # two unknown labels, the rest right
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = est.score(Xt, y)
    unknown = [w for w in caught if issubclass(w.category, UnknownLabelWarning)]
    assert len(unknown) == 1 and "98, 99" in str(unknown[0].message)
    assert issubclass(UnknownLabelWarning, LiftLearnWarning)
    assert score == pytest.approx((len(Xt) - 2) / len(Xt))
    weights = np.r_[0.0, 0.0, np.ones(len(Xt) - 2)]  # sample_weight as in accuracy_score
    with pytest.warns(UnknownLabelWarning):
        assert est.score(Xt, y, sample_weight=weights) == 1.0
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.score(Xt, y[:-1])


# ------------------------------------------------------- targets and images
@pytest.mark.parametrize("cls", CLASSIFIERS, ids=[c.__name__ for c in CLASSIFIERS])
def test_continuous_targets_and_missing_y_are_refused(cls, data):
    X, y, names, _ = data
    y_cont = np.random.default_rng(0).normal(size=len(X))
    if cls is ULFineClassifier:
        y_cont[::3] = -1  # the -1 marks are not what is refused
    est = make(cls)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        est.fit(X, y_cont)
    with pytest.raises(ValueError, match="requires y to be passed"):
        est.fit(X, None)
    assert not [a for a in vars(est) if a.endswith("_")]


@settings(max_examples=15, deadline=None)
@given(values=st.lists(st.floats(-5, 5, allow_nan=False).filter(lambda v: v != round(v)),
                       min_size=1, max_size=4),
       container=st.sampled_from(["array", "list", "object"]))
def test_any_non_integral_float_label_is_refused(data, values, container):
    # Property: one non-integral float among integer labels makes y a
    # regression target, whatever the container.
    y = [0, 1, 2] * 3
    y[: len(values)] = values
    y = {"array": np.asarray(y, dtype=float), "list": y,
         "object": np.asarray(y, dtype=object)}[container]
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        make(LiftPlusClassifier).fit(data[0][: len(y)], y)


@pytest.mark.parametrize("cls", [ULFineClassifier, ZeroShotClassifier],
                         ids=["ULFineClassifier", "ZeroShotClassifier"])
def test_ulfine_marks_and_integral_floats_still_fit(cls, data):
    X, y, names, _ = data
    y = y.astype(float)  # 0.0, 1.0, ... are classes, not a regression target
    if cls is ULFineClassifier:
        y[::3] = -1
    est = make(cls, class_names=names).fit(X, y)
    assert est.classes_.tolist() == list(range(10))


def _corrupt(tmp_path):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return str(path)


def _prediction_methods(est):
    if isinstance(est, CLIPFeatures):
        return {"transform": est.transform}
    return {"decision_function": est.decision_function, "predict_proba": est.predict_proba,
            "predict": est.predict, "score": lambda X: est.score(X, [0] * len(X))}


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_prediction_checks_every_image_before_predicting_any(cls, fitted, data, tmp_path,
                                                             monkeypatch):
    from liftlearn.estimators import _base

    est, Xt = fitted[cls], data[3]
    assert est.get_params()["check_images"] == "header"
    calls = []
    real = _base.predict_images
    monkeypatch.setattr(_base, "predict_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    X_bad = list(Xt[:3]) + [_corrupt(tmp_path)] + list(Xt[3:])
    for name, method in _prediction_methods(est).items():
        with pytest.raises(BadImageError, match="corrupt.jpg") as info:
            method(X_bad)
        assert info.value.path.endswith("corrupt.jpg"), name
    assert calls == []  # not one image was predicted
    outputs(est, Xt)
    assert calls == [1]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
@pytest.mark.parametrize("params, culprit", [
    ({"tte": "False"}, "tte"),  # a str: true, TTE silently on
    ({"tte_expand": 5000}, "tte_expand"),  # past the bound that guards memory
    ({"tte_expand": 2.9}, "tte_expand"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"num_workers": -1}, "num_workers"),
    ({"check_images": "full"}, "check_images"),
    ({"check_images": None, "on_bad_image": "skip"}, "on_bad_image='skip' needs"),
])
def test_prediction_checks_the_parameters_it_reads(cls, fitted, data, params, culprit,
                                                   monkeypatch):
    # set_params after a fit is how TTE is turned off or a batch size set
    # for another device: prediction checks them, before reading an image.
    from liftlearn.estimators import _base

    est = copy.deepcopy(fitted[cls]).set_params(**params)
    monkeypatch.setattr(_base.CLIPEstimator, "_images",
                        lambda *a: pytest.fail("an image was read"))
    for name, method in _prediction_methods(est).items():
        with pytest.raises(ValueError, match=culprit):
            method(data[3])


@pytest.mark.parametrize("cls", ESTIMATORS, ids=IDS)
def test_skipped_images_get_nan_rows_and_one_warning(cls, fitted, data, tmp_path):
    est, Xt = copy.deepcopy(fitted[cls]).set_params(on_bad_image="skip"), data[3]
    good = outputs(est, Xt[:3])
    X_bad = [Xt[0], _corrupt(tmp_path), Xt[1], str(tmp_path / "gone.png"), Xt[2]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = outputs(est, X_bad)
    assert [str(w.message)[:22] for w in caught] == ["2 of 5 image(s) could "]
    assert out.shape == (5, good.shape[1])  # rows are never dropped
    assert np.isnan(out[[1, 3]]).all()
    np.testing.assert_allclose(out[[0, 2, 4]], good, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LiftLearnWarning)
        assert np.isnan(outputs(est, [_corrupt(tmp_path)])).all()  # all skipped: NaN too
        if isinstance(est, CLIPFeatures):
            return
        y_pred = est.predict(X_bad)
        assert y_pred.tolist() == [*est.predict(Xt[:1]), -1, *est.predict(Xt[1:2]), -1,
                                   *est.predict(Xt[2:3])]
        # A skipped image counts as an error, whatever its label (-1 would
        # mark an unlabeled image for ULFine, whose score leaves those out).
        y = [y_pred[0], est.classes_[0], y_pred[2], y_pred[2], y_pred[4]]
        assert est.score(X_bad, y) == pytest.approx(3 / 5)
        assert np.isnan(est.decision_function(X_bad)[1]).all()


@pytest.mark.parametrize("cls", [ZeroShotClassifier, CLIPFeatures],
                         ids=["ZeroShotClassifier", "CLIPFeatures"])
def test_bad_image_parameters_are_checked(cls, data):
    X, y, names, _ = data
    with pytest.raises(InvalidParameterError, match="check_images"):
        fit(make(cls, check_images="full"), X, y, names)
    with pytest.raises(ValueError, match="on_bad_image='skip' needs check_images"):
        fit(make(cls, check_images=None, on_bad_image="skip"), X, y, names)


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=[c.__name__ for c in CLASSIFIERS])
def test_classifier_outputs_agree(cls, fitted, data):
    est, Xt = fitted[cls], data[3]
    proba = est.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(est.predict(Xt), est.classes_[proba.argmax(axis=1)])
    np.testing.assert_array_equal(est.classes_, np.arange(10))
