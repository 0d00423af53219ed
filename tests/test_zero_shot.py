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
