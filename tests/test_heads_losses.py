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
