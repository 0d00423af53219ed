"""CoOp prompt learning (issue 18): the prompt learner against CLIP's own
text encoder, and CoOpClassifier on the tiny model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from liftlearn import CoOpClassifier
from liftlearn.nn.backbones import get_backbone
from liftlearn.nn.coop import CoOpNetwork, PromptLearner, context_template
from liftlearn.nn.tuners import build_tuner

NAMES = ["cat", "sea_lion", "pickup truck"]


@pytest.fixture(scope="module")
def bb():
    return get_backbone("liftlearn-tiny-vit", "cpu", pretrained=None)


def test_photo_context_reproduces_clip_text_embeddings_exactly(bb):
    prompts = PromptLearner.build(bb, NAMES, 4, "end", "a photo of a {}.")
    assert prompts.context.shape[0] == 5  # "a photo of a" and the final "."
    with torch.no_grad():
        ours = F.normalize(prompts.text_features(bb.model), dim=-1)
    expected = bb.encode_text([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("position, template, locations", [
    ("end", "X X X X {}.", [0, 1, 2, 3]),
    ("middle", "X X {} X X.", [0, 1, -3, -2]),
    ("front", "{} X X X X.", [-5, -4, -3, -2]),
])
def test_class_positions_put_the_context_where_lift_plus_does(bb, position, template, locations):
    assert context_template(4, position) == (template, locations)
    prompts = PromptLearner.build(bb, NAMES, 4, position, None, torch.Generator().manual_seed(0))
    x_token = 343  # "x" in CLIP's vocabulary
    for tokens, index in zip(prompts.tokens, prompts.index):
        assert (tokens[index] == x_token).all()
        assert (tokens == x_token).sum() == 4  # every "X" is context, nothing else
    assert prompts.context.std().item() == pytest.approx(0.02, rel=0.3)


def test_random_context_replaces_the_placeholder_embeddings(bb):
    prompts = PromptLearner.build(bb, NAMES, 4, "end", None, torch.Generator().manual_seed(0))
    model = bb.model
    with torch.no_grad():
        prompts.context.copy_(model.token_embedding.weight[343].expand(4, -1))
        same = F.normalize(prompts.text_features(model), dim=-1)
    # With the placeholder's own embedding as context: the plain template.
    expected = bb.encode_text([f"X X X X {n.replace('_', ' ')}." for n in NAMES])
    assert torch.allclose(same, expected, atol=1e-6)


def test_network_scores_are_clip_logits(bb):
    tuner = build_tuner("none", bb, len(NAMES))
    net = CoOpNetwork(bb, tuner, PromptLearner.build(bb, NAMES, 4, "end", "a photo of a {}."))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image = F.normalize(bb.model.encode_image(images), dim=-1)
        text = bb.encode_text([f"a photo of a {n.replace('_', ' ')}." for n in NAMES])
        expected = bb.model.logit_scale.exp() * image @ text.T
        assert torch.allclose(net(images), expected, atol=1e-4)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["prompts.context"]


def test_defaults_are_the_study_coop_schedule():
    clf = CoOpClassifier()
    assert (clf.epochs, clf.batch_size, clf.lr, clf.n_ctx, clf.class_position) == (50, 32, 0.002, 4, "end")
    assert clf.mda_schedule == "min" and clf.adapter == "none" and clf.context_init is None


def test_fit_trains_only_the_context_and_predicts(small):
    X, y, names, Xt, _ = small
    bb = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=None)
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    clf = CoOpClassifier(backbone="liftlearn-tiny-vit", pretrained=None, epochs=1, batch_size=40,
                         device="cpu", random_state=0, class_names=names,
                         context_init="a photo of a {}.")
    clf.fit(X[::2], y[::2])
    init = PromptLearner.build(bb, names, 4, "end", "a photo of a {}.").context
    assert not torch.equal(clf.module_.prompts.context.detach(), init)  # the context moved
    assert clf.n_trainable_params_ == 5 * bb.model.token_embedding.weight.shape[1]
    assert all(torch.equal(before[k], v) for k, v in bb.model.state_dict().items())
    assert clf.predict_proba(Xt[:4]).shape == (4, 10)


def test_template_and_random_context_options_are_not_mixed(small):
    X, y, names, _, _ = small
    clf = CoOpClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                         class_names=names, context_init="a photo of a {}.", n_ctx=8)
    with pytest.raises(ValueError, match="n_ctx and class_position apply to random context"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="context_init"):
        CoOpClassifier(context_init="no placeholder").fit(X, y)


def test_a_context_template_with_a_named_field_is_refused_before_any_work(small):
    from liftlearn._validation import InvalidParameterError

    X, y, names, _, _ = small
    with pytest.raises(InvalidParameterError, match="context_init"):
        CoOpClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                       context_init="a {x} photo of {}.").fit(X, y, class_names=names)


@pytest.mark.parametrize("position", ["front", "middle", "end"])
def test_a_prompt_cut_at_the_context_length_is_refused(bb, position):
    # The tiny model's context is 16 tokens: a long name would be cut, and
    # the context positions would land on the name's tokens.
    long_name = " ".join(["dog"] * 40)
    with pytest.raises(ValueError, match="fills the text encoder's context"):
        PromptLearner.build(bb, ["cat", long_name], 4, position, None)
    PromptLearner.build(bb, ["cat", "dog"], 4, position, None)
