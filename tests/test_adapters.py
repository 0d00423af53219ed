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
        for m in tuner.adaptformer:
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
