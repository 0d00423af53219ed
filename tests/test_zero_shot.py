import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError

from liftlearn import BadImageError
from liftlearn.nn.backbones import get_backbone
from liftlearn.data import load_image
from liftlearn.nn.heads import class_prompts
from liftlearn.transforms import eval_transform
from liftlearn import ZeroShotClassifier
from liftlearn.nn.heads import text_classifier


@pytest.fixture(scope="module")
def data(small):
    X, y, names, Xt, yt = small
    return X[::4], y[::4], names, Xt[:10]


def _params(tiny_checkpoint, **kw):
    return dict(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, device="cpu", batch_size=8, **kw)


def test_is_a_classifier():
    assert is_classifier(ZeroShotClassifier())


def test_predicts_the_argmax_of_clip_similarities(data, tiny_checkpoint):
    X, y, names, Xt = data
    clf = ZeroShotClassifier(**_params(tiny_checkpoint, tte=False)).fit(X, y, class_names=names)
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.class_names_ == names
    np.testing.assert_array_equal(clf.class_counts_, np.bincount(y, minlength=10))

    # The same thing computed by hand with open_clip's own encoders.
    backbone = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    model = backbone.model
    import open_clip

    tokens = open_clip.get_tokenizer("liftlearn-tiny-vit")(class_prompts(names))
    transform = eval_transform(backbone.image_size, backbone.mean, backbone.std)
    images = torch.cat([transform(load_image(p)) for p in Xt])
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens), dim=-1)
        image = F.normalize(model.encode_image(images), dim=-1)
        expected = (model.logit_scale.exp() * image @ text.T).numpy()
    logits = clf.decision_function(Xt)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(clf.predict(Xt), expected.argmax(axis=1))
    proba = clf.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.logit_scale_ == pytest.approx(float(model.logit_scale.exp()))


def test_tte_and_pickle(data, tiny_checkpoint):
    X, y, names, Xt = data
    clf = ZeroShotClassifier(**_params(tiny_checkpoint)).fit(X, y, class_names=names)
    pred = clf.predict(Xt)
    assert pred.shape == (len(Xt),)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(Xt), pred)


def test_prompt_ensemble(tiny_checkpoint):
    backbone = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    names = ["cat", "dog", "ship"]
    templates = ["a photo of a {}.", "a drawing of a {}."]
    ens = text_classifier(backbone, names, templates)
    a, b = (backbone.encode_text(class_prompts(names, t)) for t in templates)
    torch.testing.assert_close(ens, F.normalize(a + b, dim=-1))
    torch.testing.assert_close(ens.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_classifier(backbone, names, templates[0]), a)


def test_string_labels_and_resnet(data):
    X, y, names, Xt = data
    labels = np.array(names)[y]
    clf = ZeroShotClassifier(backbone="liftlearn-tiny-rn", pretrained=None, device="cpu", tte=False)
    clf.fit(X, labels)
    assert set(clf.predict(Xt)) <= set(names)
    assert clf.text_embeddings_.shape == (10, 32)


@pytest.mark.parametrize(
    "params, match",
    [(dict(prompt_template="no slot"), "prompt_template"), (dict(prompt_template=[]), "prompt_template"),
     (dict(tte="yes"), "tte"), (dict(batch_size=0), "batch_size")],
)
def test_invalid_params(data, tiny_checkpoint, params, match):
    X, y, names, _ = data
    with pytest.raises(ValueError, match=match):
        ZeroShotClassifier(**{**_params(tiny_checkpoint), **params}).fit(X, y, class_names=names)


def test_fit_validates_x(data, tiny_checkpoint, tmp_path):
    X, y, names, Xt = data
    clf = ZeroShotClassifier(**_params(tiny_checkpoint))
    with pytest.raises(ValueError, match="labels"):
        clf.fit(X[:-1], y, class_names=names)
    with pytest.raises(BadImageError, match="no such file"):
        clf.fit([str(tmp_path / "missing.jpg")] + list(X[1:]), y, class_names=names)
    with pytest.raises(NotFittedError):
        clone(clf).predict(Xt)


@pytest.mark.parametrize(
    "make_y, dtype",
    [(lambda labels: list(labels), "<U"),                             # numpy makes <U of a list
     (lambda labels: np.asarray(labels, dtype=object), "object"),     # kept as given
     (lambda labels: np.asarray(labels), "<U")],
)
def test_classes_keep_the_dtype_label_encoder_gives(data, tiny_checkpoint, make_y, dtype):
    from sklearn.preprocessing import LabelEncoder

    X, y, names, Xt = data
    y_str = make_y([names[v] for v in y])
    clf = ZeroShotClassifier(**_params(tiny_checkpoint, tte=False)).fit(X, y_str)
    expected = LabelEncoder().fit(y_str).classes_
    assert clf.classes_.dtype == expected.dtype and clf.classes_.dtype.str.startswith(
        "|O" if dtype == "object" else "<U")
    assert clf.classes_.tolist() == expected.tolist()
    assert clf.predict(Xt[:2]).dtype == expected.dtype
    # The same with names from a mapping (classes from its keys).
    mapped = ZeroShotClassifier(**_params(tiny_checkpoint, tte=False)).fit(
        X, y_str, class_names={n: n.upper() for n in names})
    assert mapped.classes_.dtype == expected.dtype


def test_cross_val_score_with_a_rare_class_only_in_a_test_fold(data, tiny_checkpoint):
    # Long-tailed labels without constructor class_names: class 9 has one
    # image, so one fold tests it without having seen it. Like scikit-learn's
    # accuracy, score counts it as an error (a number, not nan) and warns.
    import warnings

    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from liftlearn.exceptions import UnknownLabelWarning

    X, y, names, _ = data
    y = np.where(np.arange(len(y)) == 0, 9, np.minimum(y, 8))  # class 9: image 0 only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = cross_val_score(ZeroShotClassifier(**_params(tiny_checkpoint, tte=False)),
                                 X, y, cv=StratifiedKFold(2, shuffle=True, random_state=0),
                                 error_score="raise")
    assert np.isfinite(scores).all() and ((0 <= scores) & (scores <= 1)).all()
    unknown = [w for w in caught if issubclass(w.category, UnknownLabelWarning)]
    assert len(unknown) == 1 and "9" in str(unknown[0].message)
    assert not [w for w in caught if "Scoring failed" in str(w.message)]


def test_skipped_images_with_string_classes(data, tiny_checkpoint, tmp_path):
    import warnings

    from liftlearn.exceptions import LiftLearnWarning

    X, y, names, Xt = data
    y_str = np.asarray([names[v] for v in y], dtype=object)
    clf = ZeroShotClassifier(**_params(tiny_checkpoint, tte=False, on_bad_image="skip"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with pytest.warns(LiftLearnWarning, match="skipping 1 unusable training image"):
        clf.fit(list(X) + [str(corrupt)], np.r_[y_str, ["cat"]])
    assert clf.skipped_images_ == [(str(corrupt), clf.skipped_images_[0][1])]
    # The class counts leave the skipped image out; the classes keep its label.
    np.testing.assert_array_equal(clf.class_counts_, np.unique(y_str, return_counts=True)[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y_pred = clf.predict([Xt[0], str(corrupt)])
    assert len(caught) == 1 and "1 of 2 image(s)" in str(caught[0].message)
    assert y_pred.dtype == object and y_pred[1] == -1 and y_pred[0] in clf.classes_


def test_a_template_with_an_indexed_field_is_accepted_as_lift_plus_accepts_it():
    from liftlearn import LiftPlusClassifier

    for cls in (ZeroShotClassifier, LiftPlusClassifier):
        cls(prompt_template="a photo of {0}.")._validate_params()
    ZeroShotClassifier(prompt_template=["a photo of {0}.", "a {}."])._validate_params()
