"""LiftPlusClassifier inside scikit-learn's model selection tools."""

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict, cross_validate

from liftlearn import LiftPlusClassifier, ZeroShotClassifier
from liftlearn.exceptions import UnknownLabelWarning
from liftlearn.metrics import UndefinedClassWarning, few_shot_scorer, long_tail_scoring


@pytest.fixture(scope="module")
def data(sample):
    X, y, names, Xt, yt = sample
    # 8 images per class except a 4-image tail, so 2-fold CV keeps every
    # class in every training fold except where we drop it on purpose.
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[: (4 if c >= 8 else 8)] for c in range(10)])
    return [X[i] for i in idx], y[idx], names


def test_grid_search_over_adapter_settings_with_liftlearn_scorers(data, tiny_checkpoint):
    X, y, names = data
    est = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
        batch_size=16, device="cpu", random_state=0, class_names=names,
    )
    search = GridSearchCV(
        est,
        {"adapter": ["adaptformer", "none"], "lr": [0.02, 0.05]},
        scoring=long_tail_scoring(many_threshold=3, few_threshold=3),  # 4 vs 2 images a class per fold
        refit="balanced_accuracy",
        cv=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absent-class / non-finite score warnings
        search.fit(X, y)
    # sklearn sees a classifier, so cv=2 is stratified.
    assert isinstance(search.cv, int)
    assert search.best_estimator_.classes_.tolist() == list(range(10))
    assert set(search.cv_results_["param_adapter"]) == {"adaptformer", "none"}
    for key in ("mean_test_balanced_accuracy", "mean_test_few_shot_accuracy", "mean_test_many_shot_accuracy"):
        assert np.isfinite(search.cv_results_[key]).all(), key
    # The few-shot scorer reads the training counts of the fitted estimator.
    assert 0.0 <= few_shot_scorer(search.best_estimator_, X, y) <= 1.0 or np.isnan(
        few_shot_scorer(search.best_estimator_, X, y)
    )


def test_folds_without_tail_classes_keep_all_columns(data, tiny_checkpoint):
    X, y, names = data
    # A fold whose training part has no image of class 9 still predicts 10 columns.
    est = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
        batch_size=16, device="cpu", random_state=0, class_names=names,
    )
    order = np.argsort(y == 9, kind="stable")  # class 9 last
    X2, y2 = [X[i] for i in order], y[order]
    train, test = np.flatnonzero(y2 != 9), np.flatnonzero(y2 == 9)
    fitted = est.fit([X2[i] for i in train], y2[train])
    assert fitted.class_counts_[9] == 0
    assert fitted.predict_proba([X2[i] for i in test]).shape == (4, 10)
    proba = cross_val_predict(est, X2, y2, cv=StratifiedKFold(2, shuffle=True, random_state=0), method="predict_proba")
    assert proba.shape == (len(X2), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)


def test_calibrated_classifier_on_a_fitted_model(data, tiny_checkpoint):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    X, y, names = data
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
        batch_size=16, device="cpu", random_state=0, class_names=names, tte=False,
    ).fit(X, y)
    calibrated = CalibratedClassifierCV(FrozenEstimator(clf), method="temperature").fit(X, y)
    proba = calibrated.predict_proba(X[:5])
    assert proba.shape == (5, 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    # Temperature scaling keeps the ranking of the classes.
    np.testing.assert_array_equal(proba.argmax(1), clf.predict_proba(X[:5]).argmax(1))


def test_set_params_is_validated_at_fit(data, tiny_checkpoint):
    from sklearn.base import clone

    X, y, names = data
    est = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, class_names=names)
    est.set_params(adapter="lorax")  # no error until fit, as in scikit-learn
    with pytest.raises(ValueError, match="parameter adapter='lorax'"):
        est.fit(X, y)
    with pytest.raises(ValueError, match="Invalid parameter 'adaptor'"):
        est.set_params(adaptor="lora")
    assert clone(est).get_params()["adapter"] == "lorax"


def test_class_names_through_search_fit(data, tiny_checkpoint):
    X, y, names = data
    est = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
                             batch_size=16, device="cpu", random_state=0)
    search = GridSearchCV(est, {"lr": [0.02]}, cv=2, scoring="balanced_accuracy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y, class_names=names)
    assert search.best_estimator_.class_names_ == names
    # A fit argument as long as X would be sliced per fold: refused, clearly.
    with pytest.raises(ValueError, match="pass class_names to the constructor|Pass class_names to the"):
        est.fit(X[:10], y[:10] % 10, class_names=names)


def test_score_counts_unknown_labels_as_errors(data, tiny_checkpoint):
    X, y, names = data
    keep = y < 5
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1,
                             batch_size=16, device="cpu", random_state=0, tte=False).fit(
        [x for x, k in zip(X, keep) if k], y[keep])
    y_pred = clf.predict(X[-3:])
    with pytest.warns(UnknownLabelWarning, match="not fitted with: 7"):
        # 7 can never be predicted: an error, as in accuracy_score.
        assert clf.score(X[-3:], [7, *y_pred[1:]]) == pytest.approx(2 / 3)
    assert 0 <= clf.score([x for x, k in zip(X, keep) if k][:4], y[keep][:4]) <= 1


@pytest.mark.parametrize("calibration", [False, True])
def test_long_tail_scoring_predicts_each_fold_once(data, tiny_checkpoint, monkeypatch, calibration):
    # Every long-tail metric of a fold from ONE decision_function (a full
    # TTE pass), not one per metric (9, or 10 with calibration, before).
    X, y, names = data
    calls = []
    real = ZeroShotClassifier._predict_outputs

    def counting(self, X):
        calls.append(len(X))
        return real(self, X)

    monkeypatch.setattr(ZeroShotClassifier, "_predict_outputs", counting)
    est = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint,
                             device="cpu", tte=True, class_names=names)
    scoring = long_tail_scoring(many_threshold=3, few_threshold=3, calibration=calibration)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cross_validate(est, X, y, cv=2, scoring=scoring)
    assert calls == [len(X) // 2] * 2
    assert len([w for w in caught if issubclass(w.category, UndefinedClassWarning)]) <= 2
    assert set(result) >= {f"test_{name}" for name in scoring}
    assert np.isfinite(result["test_balanced_accuracy"]).all()


def test_pipeline_with_the_classifier_last(data, tiny_checkpoint):
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y, names = data
    # e.g. a step that maps relative names to files; here the identity.
    pipe = Pipeline([
        ("paths", FunctionTransformer(lambda paths: list(paths))),
        ("lift", LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint,
                                    epochs=1, batch_size=16, device="cpu", random_state=0,
                                    class_names=names)),
    ])
    scores = cross_val_score(pipe, X, y, cv=2, scoring="balanced_accuracy")
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    pipe.set_params(lift__adapter="none").fit(X, y)
    assert pipe.named_steps["lift"].n_adapter_params_ == 0
    assert pipe.predict_proba(X[:3]).shape == (3, 10)


def test_binary_decision_function_is_what_sklearn_scorers_read(data, tiny_checkpoint):
    # scikit-learn's binary contract: one score per image, > 0 for
    # classes_[1]; roc_auc and average_precision read it.
    from sklearn.model_selection import cross_val_score

    X, y, names = data
    keep = np.flatnonzero(y < 2)
    X2, y2 = [X[i] for i in keep], y[keep]
    est = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint,
                             device="cpu", tte=False, class_names=["cat", "dog"])
    fitted = est.fit(X2, y2)
    scores = fitted.decision_function(X2)
    proba = fitted.predict_proba(X2)
    assert scores.shape == (len(X2),) and proba.shape == (len(X2), 2)
    # The logit difference: the log-odds of the softmax.
    np.testing.assert_allclose(scores, np.log(proba[:, 1] / proba[:, 0]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(fitted.predict(X2), (scores > 0).astype(int))
    for scoring in ("roc_auc", "average_precision"):
        result = cross_val_score(est, X2, y2, cv=2, scoring=scoring)
        assert np.isfinite(result).all() and ((0 <= result) & (result <= 1)).all(), scoring
