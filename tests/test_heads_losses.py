import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from liftlearn.nn.backbones import get_backbone
from liftlearn.nn.heads import CosineClassifier, class_prompts, semantic_init
from liftlearn.nn.losses import LogitAdjustedLoss, log_prior


def test_cosine_classifier_is_scaled_cosine_similarity():
    w = torch.randn(4, 8)
    head = CosineClassifier(w * 3.0, scale=25.0)
    x = torch.randn(5, 8)
    expected = 25.0 * F.cosine_similarity(x[:, None], w[None], dim=-1)
    assert torch.allclose(head(x), expected, atol=1e-5)
    assert torch.allclose(head(x * 7.0), expected, atol=1e-5)  # scale-invariant in x


def test_class_prompts_follow_lift():
    assert class_prompts(["tench", "crane_bird"]) == ["a photo of a tench.", "a photo of a crane bird."]
    assert class_prompts(["x"], "{} photo") == ["x photo"]


def test_untrained_classifier_is_zero_shot_clip(tiny_checkpoint):
    """Head scores = zero-shot CLIP similarity, up to the per-class norm of
    the back-projected text feature and |f| vs |f @ proj| (LIFT+'s SAI)."""
    bb = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    names = ["cat", "dog", "airplane"]
    head = CosineClassifier(semantic_init(bb, names), scale=25.0)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        x = bb.visual._embeds(images)
        f = bb.visual._pool(bb.visual.transformer(x))[0]
        logits = head(f)
        text = bb.encode_text(class_prompts(names))
        img = F.normalize(bb.model.encode_image(images), dim=-1)
        zero_shot = img @ text.T
        proj = bb.visual.proj
        back_norm = (text @ proj.T).norm(dim=-1)  # |proj t_j|
        recovered = logits / 25.0 * back_norm[None] * f.norm(dim=-1, keepdim=True) / (f @ proj).norm(dim=-1, keepdim=True)
    assert torch.allclose(recovered, zero_shot, atol=1e-5)
    # So the ranking for an image can differ only through the per-class norm.
    assert logits.shape == (4, 3)


def test_log_prior_and_zero_counts():
    lp = log_prior([3, 1, 0])
    assert torch.allclose(lp[:2], torch.log(torch.tensor([0.75, 0.25])))
    assert torch.isfinite(lp).all() and lp[2] < -20
    with pytest.raises(ValueError):
        log_prior([0, 0])


@settings(max_examples=30, deadline=None)
@given(
    counts=st.lists(st.integers(1, 1000), min_size=2, max_size=8),
    tau=st.floats(0, 2),
    seed=st.integers(0, 2**16),
)
def test_la_loss_is_ce_on_adjusted_logits(counts, tau, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, len(counts), generator=g)
    target = torch.randint(0, len(counts), (6,), generator=g)
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    expected = F.cross_entropy(logits + tau * torch.log(prior).float(), target)
    assert torch.allclose(LogitAdjustedLoss(counts, tau)(logits, target), expected, atol=1e-5)


def test_la_loss_with_tau_zero_is_plain_ce():
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    assert torch.allclose(LogitAdjustedLoss(np.array([100, 10, 1]), 0.0)(logits, target), F.cross_entropy(logits, target))


# ---------------------------------------------------------------------------
# Issue 18: the classifiers, initialisations and losses of the LIFT+ study,
# each checked against its formula written out by hand.

from liftlearn.nn.heads import (  # noqa: E402
    L2NormClassifier, LayerNormClassifier, LinearClassifier, make_classifier, random_class_vectors,
)
from liftlearn.nn.losses import LOSSES, check_loss_params, make_loss  # noqa: E402

_shapes = st.tuples(st.integers(1, 6), st.integers(2, 5), st.integers(2, 9), st.integers(0, 2**31 - 1))


def _draw(shape):
    n, c, d, seed = shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 3, torch.randn(c, d, generator=g), torch.randn(c, generator=g)


@settings(max_examples=25, deadline=None)
@given(shape=_shapes)
def test_linear_l2norm_layernorm_heads_follow_their_formulas(shape):
    x, w, b = _draw(shape)
    lin = LinearClassifier(w, b)
    expected = torch.stack([torch.stack([(xi * wj).sum() + bj for wj, bj in zip(w, b)]) for xi in x])
    assert torch.allclose(lin(x), expected, atol=1e-4)
    assert torch.equal(LinearClassifier(w).bias, torch.zeros(len(w)))  # LIFT+ zeroes the bias

    unit = w / w.norm(dim=1, keepdim=True)
    assert torch.allclose(L2NormClassifier(w * 5)(x), x @ unit.T, atol=1e-4)

    mu = x.mean(dim=1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=1, keepdim=True)  # biased, as LayerNorm
    ln = (x - mu) / torch.sqrt(var + 1e-12)
    assert torch.allclose(LayerNormClassifier(w)(x), ln @ unit.T, atol=1e-3)
    assert not list(LayerNormClassifier(w).buffers())  # no affine parameters, nothing else
    assert [n for n, _ in LayerNormClassifier(w).named_parameters()] == ["weight"]


def test_make_classifier_kinds_and_scale():
    w = torch.randn(3, 4)
    x = torch.randn(2, 4)
    cos = make_classifier("cosine", w, scale=7.0)
    assert torch.allclose(cos(x), 7.0 * F.cosine_similarity(x[:, None], w[None], dim=-1), atol=1e-5)
    assert isinstance(make_classifier("linear", w), LinearClassifier)
    with pytest.raises(ValueError, match="classifier='bogus'"):
        make_classifier("bogus", w)


def test_random_init_is_lift_renormalised_uniform():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ours = random_class_vectors(5, 16, g1)
    lift = torch.empty(5, 16).uniform_(-1, 1, generator=g2).renorm_(2, 0, 1e-5).mul_(1e5)
    assert torch.allclose(ours, lift, atol=1e-6)
    assert torch.allclose(ours.norm(dim=1), torch.ones(5), atol=1e-6)


_counts_st = st.lists(st.integers(1, 500), min_size=2, max_size=6)


def _batch(counts, seed, n=7):
    g = torch.Generator().manual_seed(seed)
    c = len(counts)
    return torch.randn(n, c, generator=g) * 4, torch.randint(0, c, (n,), generator=g)


def _ce_rows(z, y):
    """Per-sample cross-entropy written out: logsumexp_j z_ij - z_iy."""
    return torch.stack([torch.log(torch.exp(zi).sum()) - zi[yi] for zi, yi in zip(z.double(), y)])


@settings(max_examples=25, deadline=None)
@given(counts=_counts_st, seed=st.integers(0, 2**31 - 1), gamma=st.floats(0, 4))
def test_ce_focal_bs_follow_their_formulas(counts, seed, gamma):
    z, y = _batch(counts, seed)
    n = torch.tensor(counts, dtype=torch.float64)
    assert torch.allclose(make_loss("ce", counts)(z, y).double(), _ce_rows(z, y).mean(), atol=1e-4)
    ce = _ce_rows(z, y)
    focal = ((1 - torch.exp(-ce)) ** gamma * ce).mean()
    got = make_loss("focal", counts, loss_params={"gamma": gamma})(z, y).double()
    assert torch.allclose(got, focal, atol=1e-4)
    bs = _ce_rows(z.double() + torch.log(n / n.sum()), y).mean()
    assert torch.allclose(make_loss("bs", counts)(z, y).double(), bs, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(counts=_counts_st, seed=st.integers(0, 2**31 - 1), max_m=st.floats(0.05, 1.0),
       s=st.floats(1.0, 40.0))
def test_ldam_follows_its_formula(counts, seed, max_m, s):
    z, y = _batch(counts, seed)
    n = torch.tensor(counts, dtype=torch.float64)
    m = n ** -0.25
    m = m * max_m / m.max()
    zm = z.double().clone()
    for i, yi in enumerate(y):
        zm[i, yi] -= s * m[yi]
    got = make_loss("ldam", counts, loss_params={"max_m": max_m, "s": s})(z, y).double()
    assert torch.allclose(got, _ce_rows(zm, y).mean(), atol=1e-3)


def test_ldam_s_defaults_to_the_classifier_scale():
    assert make_loss("ldam", [5, 1], scale=25.0).s == 25.0
    assert make_loss("ldam", [5, 1], scale=11.0).s == 11.0
    assert make_loss("ldam", [5, 1], scale=11.0, loss_params={"s": 3}).s == 3.0


@settings(max_examples=25, deadline=None)
@given(counts=_counts_st, seed=st.integers(0, 2**31 - 1), beta=st.floats(0.5, 0.9999),
       exp_scale=st.floats(0, 2))
def test_class_balanced_and_grw_are_weighted_means(counts, seed, beta, exp_scale):
    z, y = _batch(counts, seed)
    n = torch.tensor(counts, dtype=torch.float64)
    ce = _ce_rows(z, y)
    for loss, w in (
        ("cb", (1 - beta) / (1 - beta ** n)),
        ("grw", 1.0 / (n / n.sum()) ** exp_scale),
    ):
        w = w / w.mean()
        expected = (w[y] * ce).sum() / w[y].sum()
        params = {"beta": beta} if loss == "cb" else {"exp_scale": exp_scale}
        got = make_loss(loss, counts, loss_params=params)(z, y).double()
        assert torch.allclose(got, expected, atol=1e-4), loss


@settings(max_examples=25, deadline=None)
@given(counts=_counts_st, seed=st.integers(0, 2**31 - 1), lam=st.floats(0, 1), wt=st.floats(0, 1))
def test_lade_follows_its_formula(counts, seed, lam, wt):
    z, y = _batch(counts, seed)
    z64 = z.double()
    n = torch.tensor(counts, dtype=torch.float64)
    prior = n / n.sum()
    c, N = len(counts), len(y)
    bs = _ce_rows(z64 + torch.log(prior), y).mean()
    total = 0.0
    for j in range(c):
        rows = [i for i in range(N) if y[i] == j]
        first = sum(float(z64[i, j]) for i in rows) / (len(rows) + 1e-8)
        spread = z64[:, j] - torch.log(prior[j] + 1e-9) + np.log(1.0 / c + 1e-9)
        second = float(torch.logsumexp(spread, 0)) - np.log(N)
        total += float(prior[j]) * (first - second - lam * second ** 2)
    expected = float(bs) - wt * total
    got = make_loss("lade", counts, loss_params={"remine_lambda": lam, "estim_loss_weight": wt})(z, y)
    assert abs(float(got) - expected) < 1e-3 * max(1.0, abs(expected))


def test_losses_stay_finite_with_classes_without_images():
    counts = [9, 3, 0]
    z = torch.randn(4, 3, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0])
    for loss in LOSSES:
        value = make_loss(loss, counts)(z, y)
        assert torch.isfinite(value), loss
        (g,) = torch.autograd.grad(value, z)
        assert torch.isfinite(g).all(), loss


def test_loss_params_are_checked_per_loss():
    assert check_loss_params("focal", {"gamma": np.float64(1.5)}) == {"gamma": 1.5}
    with pytest.raises(ValueError, match="'beta' does not apply to loss='focal'"):
        check_loss_params("focal", {"beta": 0.9})
    with pytest.raises(ValueError, match="set tau itself"):
        check_loss_params("la", {"tau": 2})
    with pytest.raises(ValueError, match="finite real number"):
        check_loss_params("cb", {"beta": "0.9"})
    la = make_loss("la", [3, 1], tau=0.5)
    assert isinstance(la, LogitAdjustedLoss) and la.tau == 0.5


# ----------------------------------------------------------- data-based init

from liftlearn.estimators._fine_tuned import data_init_rows  # noqa: E402


def test_class_mean_rows_are_normalised_class_means_and_report_missing():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(9, 4))
    y = np.array([0, 0, 0, 2, 2, 2, 2, 0, 2])
    rows, missing = data_init_rows("class_mean", f, y, 3)
    for c in (0, 2):
        m = f[y == c].mean(axis=0)
        assert np.allclose(rows[c], m / np.linalg.norm(m))
    assert missing == [1] and np.all(rows[1] == 0)


def test_linear_probing_rows_are_normalised_logistic_regression_coefficients():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    f = rng.normal(size=(30, 5))
    y = np.repeat([0, 1, 3], 10)
    rows, missing = data_init_rows("linear_probing", f, y, 4)
    lr = LogisticRegression(solver="lbfgs", max_iter=100, class_weight="balanced").fit(f, y)
    expected = lr.coef_ / np.linalg.norm(lr.coef_, axis=1, keepdims=True)
    assert np.allclose(rows[[0, 1, 3]], expected, atol=1e-6)
    assert missing == [2]
    # Binary: the softmax pair (-w/2, w/2), normalised.
    rows2, _ = data_init_rows("linear_probing", f[:20], y[:20], 2)
    lr2 = LogisticRegression(solver="lbfgs", max_iter=100, class_weight="balanced").fit(f[:20], y[:20])
    w = lr2.coef_[0] / np.linalg.norm(lr2.coef_[0])
    assert np.allclose(rows2, np.vstack([-w, w]), atol=1e-6)


# ------------------------------------------------------------ the estimator

from liftlearn import LiftPlusClassifier  # noqa: E402
from liftlearn.exceptions import LiftLearnWarning  # noqa: E402


def _fast(small, **kw):
    X, y, names = small[0], small[1], small[2]
    params = dict(backbone="liftlearn-tiny-vit", pretrained=None, epochs=1, batch_size=40,
                  device="cpu", random_state=0, class_names=names, tte=False)
    params.update(kw)
    return LiftPlusClassifier(**params), X, y


@pytest.mark.parametrize("loss,classifier,init", [
    ("ce", "linear", "semantic"), ("focal", "l2norm", None), ("ldam", "layernorm", "class_mean"),
    ("cb", "cosine", "linear_probing"), ("grw", "linear", None), ("bs", "l2norm", "semantic"),
    ("lade", "layernorm", None),
])
def test_every_loss_and_head_fits_and_predicts(small, loss, classifier, init):
    clf, X, y = _fast(small, loss=loss, classifier=classifier, classifier_init=init)
    clf.fit(X, y)
    assert np.isfinite(clf.history_[-1]["loss"])
    head = clf.module_.head
    assert type(head).__name__.lower() == classifier + "classifier"
    assert clf.predict_proba(small[3][:3]).shape == (3, 10)


def test_class_mean_init_sets_the_normalised_class_means(small):
    from liftlearn.engine import predict_images
    from liftlearn.nn.backbones import get_backbone
    from liftlearn.nn.networks import FeatureNetwork

    X, y, names = small[0], small[1], small[2]
    keep = y != 3  # class 3 gets no training image: keeps its semantic row
    X, y = [x for x, k in zip(X, keep) if k], y[keep]
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=None, class_names=names,
                             classifier="l2norm", classifier_init="class_mean", device="cpu",
                             random_state=0)
    bb = get_backbone(clf._backbone_spec(), torch.device("cpu"))
    net = clf._build_network(bb, names, seed=5)
    semantic = F.normalize(semantic_init(bb, names), dim=-1)
    assert torch.allclose(net.head.weight, semantic, atol=1e-6)
    labels = clf._labels(np.asarray(X), y, names, allow_unlabeled=False)
    with pytest.warns(LiftLearnWarning, match="1 class"):
        clf._init_head_from_data(net, bb, np.asarray(X), labels, 5, torch.device("cpu"))
    feats = predict_images(FeatureNetwork(bb, net.tuner, False), bb, X, tte=False, tte_expand=0,
                           batch_size=64, device=torch.device("cpu"))
    for c in (0, 4, 9):
        m = torch.as_tensor(feats[y == c].mean(axis=0))
        assert torch.allclose(net.head.weight[c], m / m.norm(), atol=1e-5)
    assert torch.allclose(net.head.weight[3], semantic[3])


def test_random_init_is_seeded_and_differs_from_semantic(small):
    from liftlearn.nn.backbones import get_backbone

    clf, _, _ = _fast(small, classifier_init=None)
    bb = get_backbone(clf._backbone_spec(), torch.device("cpu"))
    a = clf._build_network(bb, small[2], seed=1).head.weight
    b = clf._build_network(bb, small[2], seed=1).head.weight
    c = clf._build_network(bb, small[2], seed=2).head.weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.norm(dim=1), torch.ones(10), atol=1e-6)


@pytest.mark.parametrize("kw,match", [
    (dict(loss="ce", tau=0.5), "tau=0.5 applies to loss='la' only"),
    (dict(loss="focal", loss_params={"beta": 0.9}), "'beta' does not apply to loss='focal'"),
    (dict(loss_params=[1]), "loss_params"),
    (dict(classifier="cos"), "classifier"),
    (dict(classifier_init="mean"), "classifier_init"),
    (dict(loss="LA"), "loss"),
])
def test_bad_study_parameters_are_named_before_training(small, kw, match):
    clf, X, y = _fast(small, **kw)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "module_")


def test_study_parameters_survive_a_model_file(small, tmp_path):
    """loss_params (a dict), the new head and AFT's masks round-trip through
    liftlearn.save/load and predict the same."""
    import liftlearn

    X, y, names, Xt, _ = small
    clf, _, _ = _fast(small, classifier="linear", loss="ldam", loss_params={"max_m": 0.3},
                      adapter="aft", aft_ratio=0.1)
    clf.fit(X[::3], y[::3])
    path = tmp_path / "model.safetensors"
    liftlearn.save(clf, path)
    back = liftlearn.load(path)
    assert back.get_params()["loss_params"] == {"max_m": 0.3}
    assert np.allclose(back.predict_proba(Xt[:4]), clf.predict_proba(Xt[:4]), atol=1e-5)


# --- text features: cut to the prompts' length, kept per process -----------------


PROMPTS = ["a photo of a cat.", "x.", "a photo of a very large long-tailed crane bird.", "dog"]


def _tokens(bb, prompts):
    from open_clip import get_tokenizer

    return get_tokenizer(bb.spec.name)(prompts)


def test_truncated_text_encoding_matches_the_full_context():
    """Causal attention + the end-of-text feature: the cut tower gives the
    full context's features, for prompts of different lengths in one chunk."""
    from liftlearn.nn.backbones import _pooled_length, encode_tokens

    bb = get_backbone("liftlearn-tiny-vit", "cpu")
    tokens = _tokens(bb, PROMPTS)
    n = _pooled_length(bb.model, tokens)
    assert n == int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]
    with torch.no_grad():
        full = bb.model.encode_text(tokens)
        cut = encode_tokens(bb.model, tokens)
        alone = torch.cat([encode_tokens(bb.model, tokens[i:i + 1]) for i in range(len(PROMPTS))])
    torch.testing.assert_close(cut, full, atol=2e-6, rtol=0)
    torch.testing.assert_close(alone, full, atol=2e-6, rtol=0)
    torch.testing.assert_close(bb.encode_text(PROMPTS), F.normalize(full, dim=-1), atol=1e-6, rtol=0)
    # Several chunks: encoded sorted by length, returned in the given order.
    torch.testing.assert_close(bb.encode_text(PROMPTS, chunk_size=2), F.normalize(full, dim=-1),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("change", ["last_pool", "no_causal_mask"])
def test_text_towers_that_need_the_whole_context_get_it(change):
    import copy

    from liftlearn.nn.backbones import _pooled_length, encode_tokens

    bb = get_backbone("liftlearn-tiny-vit", "cpu")
    model = copy.deepcopy(bb.model)  # never change the shared backbone
    if change == "last_pool":
        model.text_pool_type = "last"
    else:
        model.attn_mask = torch.zeros_like(model.attn_mask)
    tokens = _tokens(bb, PROMPTS)
    assert _pooled_length(model, tokens) is None
    with torch.no_grad():
        assert torch.equal(encode_tokens(model, tokens), model.encode_text(tokens))


@pytest.fixture
def count_text_encodes(monkeypatch):
    from liftlearn.nn import backbones, heads

    heads.clear_text_cache()
    calls = []
    real = backbones.Backbone.encode_text
    monkeypatch.setattr(backbones.Backbone, "encode_text",
                        lambda self, texts, *a, **k: calls.append(len(texts)) or real(self, texts, *a, **k))
    yield calls
    heads.clear_text_cache()


def test_text_features_are_encoded_once_and_handed_out_as_copies(count_text_encodes):
    from liftlearn.nn.heads import encode_prompts, text_classifier

    bb = get_backbone("liftlearn-tiny-vit", "cpu")
    names = ["cat", "dog", "crane_bird"]
    a = semantic_init(bb, names)
    a_direct = bb.text_to_visual(bb.encode_text(class_prompts(names)))
    count_text_encodes.clear()
    b = semantic_init(bb, names)
    assert count_text_encodes == [] and torch.equal(a, b) and torch.equal(a, a_direct)
    first = encode_prompts(bb, class_prompts(names))
    first.mul_(0)  # a caller changing its copy changes nothing cached
    assert torch.equal(semantic_init(bb, names), a)
    # Another template or other names are other features.
    text_classifier(bb, names, ["a photo of a {}.", "art of the {}."])
    semantic_init(bb, names[:2])
    assert count_text_encodes == [3, 2]


def test_text_cache_is_bounded(count_text_encodes, monkeypatch):
    from liftlearn.nn import heads

    bb = get_backbone("liftlearn-tiny-vit", "cpu")
    one = heads.encode_prompts(bb, ["a."])
    monkeypatch.setattr(heads, "TEXT_CACHE_BYTES", 2 * one.numel() * one.element_size())
    for name in ("b.", "c.", "d."):
        heads.encode_prompts(bb, [name])
    assert len(heads._text_cache) == 2  # the two most recent
    heads.encode_prompts(bb, ["a."])  # evicted: encoded again
    assert count_text_encodes == [1, 1, 1, 1, 1]


def test_a_second_fit_with_the_same_names_encodes_no_text(small, count_text_encodes):
    from sklearn.base import clone

    clf, X, y = _fast(small, batch_size=64)
    X, y = X[::2], y[::2]
    clf.fit(X, y)
    assert count_text_encodes == [10]
    clone(clf).fit(X, y)
    assert count_text_encodes == [10]


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_batch_statistics_says_which_losses_accumulation_cannot_split(loss):
    # Gradient accumulation sums micro-batch losses weighted by their share
    # of the batch: exact for a mean over items, not for the flagged losses.
    counts = np.array([50, 20, 5, 1])
    criterion = make_loss(loss, counts)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 4, generator=g)
    target = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0])
    whole = criterion(logits, target)
    split = sum(criterion(logits[i:i + 4], target[i:i + 4]) * 0.5 for i in (0, 4))
    flagged = getattr(LOSSES[loss][0], "batch_statistics", False)
    assert torch.isclose(whole, split, rtol=1e-5, atol=1e-6).item() is not flagged
