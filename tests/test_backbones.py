import os
import time

import pytest
import torch

from liftlearn.nn.backbones import (
    Backbone,
    BackboneSpec,
    get_backbone,
    list_backbones,
)
from liftlearn.exceptions import BackboneError


def test_tiny_model_is_registered():
    assert "liftlearn-tiny-vit" in list_backbones()


def test_local_checkpoint_loads_the_saved_weights(tiny_checkpoint):
    bb = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    saved = torch.load(tiny_checkpoint, weights_only=True)
    for name, tensor in bb.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert bb.kind == "vit" and bb.n_layers == 4 and bb.feature_dim == 64
    assert bb.image_size == 32 and len(bb.mean) == 3


def test_backbone_is_cached_frozen_and_shared(tiny_checkpoint):
    a = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    b = get_backbone(BackboneSpec.create("liftlearn-tiny-vit", tiny_checkpoint), "cpu")
    assert a is b
    assert not any(p.requires_grad for p in a.model.parameters())
    assert not a.model.training


def test_random_weights_do_not_depend_on_the_global_rng():
    from liftlearn.nn.backbones import _build_model

    spec = BackboneSpec.create("liftlearn-tiny-vit", None)
    torch.manual_seed(1)
    m1 = _build_model(spec)
    torch.manual_seed(2)
    m2 = _build_model(spec)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def test_relative_checkpoint_path_is_made_absolute(tiny_checkpoint, monkeypatch):
    monkeypatch.chdir(os.path.dirname(tiny_checkpoint))
    spec = BackboneSpec.create("liftlearn-tiny-vit", os.path.basename(tiny_checkpoint))
    assert spec.pretrained == tiny_checkpoint


def test_unknown_backbone_name():
    with pytest.raises(BackboneError, match="unknown backbone 'ViT-Nope'"):
        get_backbone("ViT-Nope", "cpu")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        get_backbone("liftlearn-tiny-vit", "cpu", pretrained=str(tmp_path / "nope.pt"))


def test_unknown_tag_lists_the_known_ones():
    with pytest.raises(BackboneError, match="Known tags"):
        get_backbone("liftlearn-tiny-vit", "cpu", pretrained="no-such-tag")


def test_offline_tag_without_cache_fails_fast(tmp_path, monkeypatch):
    # A real open_clip tag whose weights are not cached: with HF_HUB_OFFLINE
    # the error must come at once and say what to do.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(BackboneError, match="HF_HUB_OFFLINE"):
        get_backbone("RN50", "cpu", pretrained="openai")
    assert time.perf_counter() - start < 30


def test_bad_spec_values():
    with pytest.raises(ValueError, match="backbone must be"):
        BackboneSpec.create("", None)
    with pytest.raises(ValueError, match="pretrained must be"):
        BackboneSpec.create("liftlearn-tiny-vit", 3)


def test_backbone_pickles_as_its_spec(tiny_checkpoint):
    import pickle

    bb = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    assert len(pickle.dumps(bb)) < 2000
    assert pickle.loads(pickle.dumps(bb)) is bb


def test_text_to_visual_uses_the_transposed_projection(tiny_checkpoint):
    bb = get_backbone("liftlearn-tiny-vit", "cpu", pretrained=tiny_checkpoint)
    t = torch.nn.functional.normalize(torch.randn(3, bb.visual.proj.shape[1]), dim=-1)
    w = bb.text_to_visual(t)
    expected = torch.nn.functional.normalize(t @ bb.visual.proj.T, dim=-1)
    assert torch.allclose(w, expected, atol=1e-6)
    assert isinstance(bb, Backbone)
