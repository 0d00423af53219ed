"""One battery over every liftlearn estimator (scikit-learn's test_common)."""

from __future__ import annotations

import inspect
import pickle
import re
from numbers import Integral, Real

import joblib
import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as ec

import liftlearn
from liftlearn import CLIPFeatures, CoOpClassifier, LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier
from liftlearn._validation import InvalidParameterError

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
    Xt = data[3]
    with pytest.raises(ValueError, match="not fitted with: 99"):
        fitted[cls].score(Xt, [99] * len(Xt))


@pytest.mark.parametrize("cls", CLASSIFIERS, ids=[c.__name__ for c in CLASSIFIERS])
def test_classifier_outputs_agree(cls, fitted, data):
    est, Xt = fitted[cls], data[3]
    proba = est.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(est.predict(Xt), est.classes_[proba.argmax(axis=1)])
    np.testing.assert_array_equal(est.classes_, np.arange(10))
