import pytest
import torch

from liftlearn.adapters import AdaptFormer, Tuner, auto_adapter_dim, build_tuner
from liftlearn.backbones import get_backbone


@pytest.mark.parametrize(
    "n_classes, n_layers, expected",
    [(1000, 12, 32), (365, 12, 8), (8142, 12, 256), (100, 12, 4), (1000, 24, 16), (10, 4, 1), (2, 12, 1)],
)
def test_auto_adapter_dim(n_classes, n_layers, expected):
    assert auto_adapter_dim(n_classes, n_layers) == expected


@pytest.mark.parametrize(
    "n_classes, expected", [(1000, 617_868), (365, 175_212), (8142, 4_749_324), (100, 101_436)]
)
def test_vit_b16_adaptformer_counts_match_the_reference(n_classes, expected):
    # CLIP ViT-B/16: width 768, 12 blocks (counts from LIFT+'s formulas).
    tuner = Tuner("adaptformer", 768, 12, auto_adapter_dim(n_classes, 12))
    assert sum(p.numel() for p in tuner.parameters()) == expected


def test_adaptformer_outputs_zero_at_init():
    af = AdaptFormer(16, 4)
    assert torch.count_nonzero(af(torch.randn(2, 5, 16))) == 0
    assert af.scale.item() == 1.0


@pytest.fixture
def backbone(tiny_checkpoint):
    return get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)


def _frozen_features(visual, images):
    x = visual._embeds(images)
    x = visual.transformer(x)
    return visual._pool(x)[0]


def test_adapted_encoder_is_the_frozen_encoder_at_init(backbone):
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = _frozen_features(backbone.visual, images)
        for adapter in ("adaptformer", "none"):
            tuner = build_tuner(adapter, backbone, n_classes=10)
            assert torch.allclose(tuner.features(backbone.visual, images), expected, atol=1e-5)
        # ... and that feature is the pre-projection one: projecting it gives
        # open_clip's own image embedding.
        assert torch.allclose(expected @ backbone.visual.proj, backbone.visual(images), atol=1e-5)


def test_gradients_reach_the_adapter_and_nothing_frozen(backbone):
    torch.manual_seed(0)
    tuner = build_tuner("adaptformer", backbone, n_classes=10, adapter_dim=8)
    # Make the up-projections non-zero so that every adapter weight gets a gradient.
    with torch.no_grad():
        for m in tuner.adaptformer.values():
            m.up.weight.normal_(0, 0.1)
    out = tuner.features(backbone.visual, torch.randn(2, 3, 32, 32))
    out.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tuner.parameters())
    assert all(p.grad is None for p in backbone.model.parameters())


def test_adapter_dim_override_and_errors(backbone):
    assert build_tuner("adaptformer", backbone, 10, adapter_dim=7).adapter_dim == 7
    with pytest.raises(ValueError, match="adapter_dim does not apply"):
        build_tuner("none", backbone, 10, adapter_dim=4)
    with pytest.raises(ValueError, match="unknown adapter 'lora2'"):
        Tuner("lora2", 8, 2, 1)


# --------------------------------------------------------------------------
# Every fine-tuning strategy of the LIFT+ study.
import math
import pickle

from liftlearn.adapters import (
    ADAPTERS,
    RESNET_ADAPTERS,
    LoRA,
    ResNetTuner,
    auto_lora_rank,
    auto_prompt_length,
)

VIT_ADAPTERS = sorted(ADAPTERS)


def test_auto_sizes():
    assert auto_lora_rank(1000, 12) == 16 and auto_lora_rank(365, 12) == 4
    assert auto_lora_rank(10, 4) == 1
    assert auto_prompt_length(1000, 12) == 64 and auto_prompt_length(100, 12) == 8
    assert auto_prompt_length(2, 12) == 1


def _vit_b16_count(adapter, n_classes):
    from liftlearn.adapters import _auto_size

    return Tuner(adapter, 768, 12, _auto_size(adapter, n_classes, 12), mlp_width=3072).n_trainable_params()


@pytest.mark.parametrize("n_classes", [1000, 365, 100])
def test_vit_b16_counts_follow_the_formulas(n_classes):
    D, L, M = 768, 12, 3072
    r = auto_adapter_dim(n_classes, L)
    assert _vit_b16_count("adaptformer", n_classes) == L * (2 * D + D * r + r + r * D + D + 1)
    assert _vit_b16_count("adapter", n_classes) == L * (2 * D + D * r + r + r * D + D)
    rank = auto_lora_rank(n_classes, L)
    assert _vit_b16_count("lora", n_classes) == L * 4 * D * rank
    p = auto_prompt_length(n_classes, L)
    assert _vit_b16_count("vpt", n_classes) == L * p * D
    assert _vit_b16_count("vpt-shallow", n_classes) == p * D
    assert _vit_b16_count("ssf", n_classes) == L * 2 * (3 * D + D + M + D)
    assert _vit_b16_count("bitfit", n_classes) == L * (D + 3 * D + D + D + M + D)
    assert _vit_b16_count("none", n_classes) == 0


def test_vit_b16_full_counts_one_block():
    from open_clip.transformer import ResidualAttentionBlock

    block = ResidualAttentionBlock(768, 12)
    tuner = Tuner("full", 768, 12, None, layers=1, blocks=[block] * 12)
    assert tuner.n_trainable_params() == 7_087_872 == sum(p.numel() for p in block.parameters())
    assert tuner.layers == (11,)


@pytest.mark.parametrize("adapter", VIT_ADAPTERS)
def test_each_module_on_the_tiny_vit(backbone, adapter):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = _frozen_features(backbone.visual, images)
        tuner = build_tuner(adapter, backbone, n_classes=10)
        out = tuner.features(backbone.visual, images)
    assert out.shape == expected.shape
    identity = adapter not in ("ssf", "vpt", "vpt-shallow")  # SSF: N(1, 0.02); prompts add tokens
    assert torch.allclose(out, expected, atol=1e-5) == identity


def test_attention_reimplementation_equals_open_clip(backbone):
    tuner = build_tuner("lora", backbone, n_classes=10)
    block = backbone.visual.transformer.resblocks[1]
    a = block.ln_1(torch.randn(3, 17, 64))
    with torch.no_grad():
        ours = Tuner._attention(
            Tuner("none", 64, 4, None), "1", block, a, block.attn.in_proj_bias, block.attn.out_proj.bias
        )
        lora_zero = tuner._attention("1", block, a, block.attn.in_proj_bias, block.attn.out_proj.bias)
        theirs = block.attention(q_x=a)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(lora_zero, theirs, atol=1e-5)


def test_lora_init_and_scale():
    torch.manual_seed(0)
    lora = LoRA(16, 4)
    assert torch.count_nonzero(lora.q_up.weight) == 0 and torch.count_nonzero(lora.v_up.weight) == 0
    bound = 1 / math.sqrt(16)  # kaiming_uniform(a=sqrt(5)) on fan_in 16
    assert lora.q_down.weight.abs().max() <= bound
    a, qkv = torch.randn(2, 3, 16), torch.randn(2, 3, 48)
    with torch.no_grad():
        lora.q_up.weight.fill_(1.0)
    out = lora(a, qkv)
    expected_q = qkv[..., :16] + lora.q_up(lora.q_down(a)) / 4
    assert torch.allclose(out[..., :16], expected_q, atol=1e-6)
    assert torch.equal(out[..., 16:], qkv[..., 16:])  # k untouched, v update is zero


def _perturb(tuner):
    with torch.no_grad():
        for p in tuner.parameters():
            p.add_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize(
    "adapter, layers, keys",
    [(a, None, {"0", "1", "2", "3"}) for a in VIT_ADAPTERS if a not in ("none", "vpt-shallow")]
    + [("vpt-shallow", None, {"0"}), ("adaptformer", 2, {"2", "3"}), ("lora", [0, -1], {"0", "3"}),
       ("vpt", [1], {"1"}), ("full", 1, {"3"}), ("bitfit", [2], {"2"}), ("ssf", [0, 3], {"0", "3"})],
)
def test_gradients_reach_exactly_the_module(backbone, adapter, layers, keys):
    torch.manual_seed(0)
    # A wide bottleneck: with width 1 the single ReLU unit may be dead for CLS.
    tuner = build_tuner(adapter, backbone, n_classes=1000, layers=layers)
    _perturb(tuner)  # make zero-initialised up-projections non-zero
    names = [n for n, _ in tuner.named_parameters()]
    assert names and {n.split(".")[1] for n in names} == keys
    out = tuner.features(backbone.visual, torch.randn(2, 3, 32, 32))
    out.pow(2).sum().backward()
    for n, p in tuner.named_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in backbone.model.parameters())


def test_layer_selection_and_errors(backbone):
    assert build_tuner("adaptformer", backbone, 10, layers=2).layers == (2, 3)
    assert build_tuner("lora", backbone, 10, layers=[3, -4]).layers == (0, 3)
    assert build_tuner("vpt-shallow", backbone, 10).layers == (0,)
    assert build_tuner("lora", backbone, 10, adapter_dim=3).adapter_dim == 3
    assert build_tuner("vpt", backbone, 10, adapter_dim=5).prompts["0"].shape == (5, 64)
    for layers in (0, 5, [4], [1, 1], [], "1", [0.5], True):
        with pytest.raises(ValueError, match="adapter_layers"):
            build_tuner("adaptformer", backbone, 10, layers=layers)
    for adapter in ("none", "vpt-shallow"):
        with pytest.raises(ValueError, match="adapter_layers does not apply"):
            build_tuner(adapter, backbone, 10, layers=1)
    for adapter in ("ssf", "bitfit", "full", "none"):
        with pytest.raises(ValueError, match="adapter_dim does not apply"):
            build_tuner(adapter, backbone, 10, adapter_dim=4)
    with pytest.raises(TypeError, match="unexpected options"):
        build_tuner("lora", backbone, 10, rank=4)


def test_tuners_pickle_without_the_backbone(backbone):
    for adapter in ("lora", "bitfit", "vpt"):
        tuner = build_tuner(adapter, backbone, 10)
        clone = pickle.loads(pickle.dumps(tuner))
        images = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(clone.features(backbone.visual, images), tuner.features(backbone.visual, images))
        assert len(pickle.dumps(tuner)) < 200_000


# ---------------------------------------------------------------- ResNets
@pytest.fixture(scope="module")
def rn_backbone():
    return get_backbone("liftlearn-tiny-rn", "cpu")


def test_tiny_resnet_backbone(rn_backbone):
    assert rn_backbone.kind == "resnet" and rn_backbone.feature_dim == 32


@pytest.mark.parametrize("adapter", RESNET_ADAPTERS)
def test_resnet_modules(rn_backbone, adapter):
    torch.manual_seed(0)
    visual = rn_backbone.visual
    images = torch.randn(2, 3, 32, 32)
    tuner = build_tuner(adapter, rn_backbone, 10)
    assert isinstance(tuner, ResNetTuner) and isinstance(tuner, Tuner)
    with torch.no_grad():
        out = tuner.features(visual, images)
        assert torch.allclose(out, visual(images), atol=1e-5) == (adapter != "ssf")
    if adapter == "none":
        assert tuner.n_trainable_params() == 0
        return
    tuner.train()
    _perturb(tuner)
    tuner.features(visual, images).pow(2).sum().backward()
    grads = [p.grad is not None for p in tuner.parameters()]
    assert all(grads), adapter
    assert all(p.grad is None for p in rn_backbone.model.parameters())
    if adapter == "full":
        assert not tuner.tower.training  # BatchNorm statistics stay frozen


def test_resnet_bitfit_and_ssf_sizes(rn_backbone):
    n_bias = sum(p.numel() for n, p in rn_backbone.visual.named_parameters() if n.endswith("bias"))
    assert build_tuner("bitfit", rn_backbone, 10).n_trainable_params() == n_bias
    assert build_tuner("ssf", rn_backbone, 10).n_trainable_params() == 2 * 32


@pytest.mark.parametrize("adapter", sorted(set(ADAPTERS) - set(RESNET_ADAPTERS)))
def test_resnet_refuses_vit_modules(rn_backbone, adapter):
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        build_tuner(adapter, rn_backbone, 10)


def test_resnet_refuses_layer_selection(rn_backbone):
    with pytest.raises(ValueError, match="adapter_layers does not apply to a ResNet"):
        build_tuner("full", rn_backbone, 10, layers=1)


def test_non_native_towers_are_refused():
    from liftlearn.backbones import Backbone, BackboneSpec
    from liftlearn.exceptions import BackboneError

    class FakeTimmClip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = torch.nn.Linear(2, 2)

    with pytest.raises(BackboneError, match="not timm"):
        Backbone(BackboneSpec("fake-timm", None), FakeTimmClip(), torch.device("cpu"))


# ------------------------------------------------- through LiftPlusClassifier
from liftlearn import LiftPlusClassifier


@pytest.fixture(scope="module")
def tiny_data(small):
    X, y, names, Xt, yt = small
    idx = [i for i in range(len(y)) if i % 3 == 0]  # 40 images, every class
    return [X[i] for i in idx], y[idx], names, Xt[:8]


def _snapshot(backbone):
    return {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}


@pytest.mark.parametrize(
    "adapter, layers", [(a, None) for a in VIT_ADAPTERS] + [("full", 1), ("lora", [0, 2])]
)
def test_each_option_fits_and_predicts(tiny_data, tiny_checkpoint, adapter, layers):
    X, y, names, Xt = tiny_data
    shared = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    before = _snapshot(shared)
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, adapter=adapter,
        adapter_layers=layers, epochs=1, batch_size=20, tte=False, device="cpu", random_state=0,
    ).fit(X, y, class_names=names)
    assert clf.predict(Xt).shape == (len(Xt),)
    assert clf.module_.backbone is shared
    n_visual = sum(p.numel() for p in shared.visual.parameters())
    assert clf.n_trainable_params_ == clf.n_adapter_params_ + 10 * 64
    assert clf.trainable_fraction_ == pytest.approx(clf.n_adapter_params_ / n_visual)
    assert (clf.n_adapter_params_ == 0) == (adapter == "none")
    after = shared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-for-bit
    if adapter == "full":
        trained = clf.module_.tuner.blocks
        assert any(
            not torch.equal(p, shared.visual.transformer.resblocks[int(k)].state_dict()[n])
            for k in trained for n, p in trained[k].state_dict().items()
        )


@pytest.mark.parametrize("adapter", RESNET_ADAPTERS)
def test_resnet_options_fit_and_predict(tiny_data, adapter):
    X, y, names, Xt = tiny_data
    shared = get_backbone("liftlearn-tiny-rn", "cpu")
    before = _snapshot(shared)
    clf = LiftPlusClassifier(
        backbone="liftlearn-tiny-rn", pretrained=None, adapter=adapter, epochs=1,
        batch_size=20, tte=False, device="cpu", random_state=0,
    ).fit(X, y, class_names=names)
    assert clf.predict_proba(Xt).shape == (len(Xt), 10)
    assert clf.n_trainable_params_ == clf.n_adapter_params_ + 10 * 32
    after = shared.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(adapter="lora"), "needs a ViT backbone"),
        (dict(adapter="full", adapter_layers=2), "adapter_layers does not apply to a ResNet"),
    ],
)
def test_resnet_refusals_through_the_estimator(tiny_data, params, match):
    X, y, names, _ = tiny_data
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-rn", pretrained=None, epochs=1, device="cpu", **params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y, class_names=names)
    assert not hasattr(clf, "module_")


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(adapter="ssf", adapter_dim=4), "adapter_dim does not apply"),
        (dict(adapter="none", adapter_layers=2), "adapter_layers does not apply"),
        (dict(adapter="vpt-shallow", adapter_layers=[1]), "adapter_layers does not apply"),
        (dict(adapter_layers=0), "adapter_layers=0"),
        (dict(adapter_layers=[1.5]), "adapter_layers"),
        (dict(adapter_layers=9), "adapter_layers=9"),
    ],
)
def test_invalid_settings_raise_clearly(tiny_data, tiny_checkpoint, params, match):
    X, y, names, _ = tiny_data
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, epochs=1, device="cpu", **params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y, class_names=names)


def test_grid_search_over_the_adapter(tiny_data, tiny_checkpoint):
    from sklearn.model_selection import GridSearchCV

    X, y, names, _ = tiny_data
    est = LiftPlusClassifier(
        backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint, class_names=names,
        epochs=1, batch_size=20, tte=False, device="cpu", random_state=0,
    )
    grid = GridSearchCV(est, {"adapter": ["lora", "bitfit"]}, cv=2).fit(X, y)
    assert grid.best_params_["adapter"] in ("lora", "bitfit")
