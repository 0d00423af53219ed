import os
import threading
import time

import pytest
import torch
from conftest import run_in_threads

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


def test_seeded_global_rng_leaves_the_cuda_generators_alone():
    # torch.manual_seed seeds every CUDA generator too, at once or, before
    # CUDA starts, queued for when it does; fork_rng(devices=[]) puts back
    # the CPU generator only. A seeded block must touch the CPU one alone.
    from liftlearn._random import seeded_global_rng

    queued = list(torch.cuda._lazy_seed_tracker.get_calls())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    cpu_state = torch.get_rng_state()
    with seeded_global_rng(123):
        drawn = torch.rand(4)
    assert list(torch.cuda._lazy_seed_tracker.get_calls()) == queued
    if torch.cuda.is_initialized():
        after = torch.cuda.get_rng_state_all()
        assert all(torch.equal(a, b) for a, b in zip(cuda_states, after))
    assert torch.equal(torch.get_rng_state(), cpu_state)
    # The CPU stream is the one torch.manual_seed(123) gives: the weights
    # seeded blocks build are unchanged.
    assert torch.equal(drawn, torch.rand(4, generator=torch.Generator().manual_seed(123)))


def test_loading_weights_leaves_the_global_rng_alone(tiny_checkpoint):
    # open_clip initialises the model at random before loading the weights
    # over it: that draw must not move the caller's generator.
    from liftlearn.nn.backbones import _build_model

    state = torch.get_rng_state()
    model = _build_model(BackboneSpec.create("liftlearn-tiny-vit", tiny_checkpoint))
    assert torch.equal(torch.get_rng_state(), state)
    saved = torch.load(tiny_checkpoint, weights_only=True)
    assert all(torch.equal(t, saved[k]) for k, t in model.state_dict().items())


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


# ------------------------------------------------ supported backbones only


def test_list_backbones_lists_only_supported_towers():
    import open_clip

    from liftlearn.nn.backbones import unsupported_reason

    names = list_backbones()
    for name in ("ViT-B-16-quickgelu", "ViT-L-14", "RN50", "liftlearn-tiny-vit", "liftlearn-tiny-rn"):
        assert name in names
    for name in ("ViT-B-16-SigLIP", "ViT-SO400M-14-SigLIP", "coca_ViT-B-32", "EVA02-B-16",
                 "convnext_base", "ViT-L-14-CLIPA", "MobileCLIP-S1"):
        assert name not in names
    assert all(unsupported_reason(open_clip.get_model_config(n)) is None for n in names)
    assert len(names) < len(open_clip.list_models())


@pytest.fixture
def no_building(monkeypatch):
    """Record every call of open_clip.create_model (there should be none)."""
    import open_clip

    calls = []

    def create_model(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("open_clip.create_model was called")

    monkeypatch.setattr(open_clip, "create_model", create_model)
    return calls


@pytest.mark.parametrize(
    "name, pretrained, reason",
    [
        ("ViT-B-16-SigLIP", "webli", "a SigLIP model"),
        ("EVA02-B-16", None, "a timm image tower: eva02_base_patch16_clip_224"),
        ("coca_ViT-B-32", None, "a CoCa model"),
        ("ViT-L-14-CLIPA", None, "'avg'-pooled image features"),
    ],
)
def test_unsupported_backbones_are_refused_before_building(name, pretrained, reason, no_building):
    start = time.perf_counter()
    with pytest.raises(BackboneError, match=f"backbone '{name}' is not supported") as exc:
        get_backbone(name, "cpu", pretrained=pretrained)
    assert reason in str(exc.value) and "list_backbones()" in str(exc.value)
    assert no_building == [] and time.perf_counter() - start < 5


def test_local_dir_with_an_unsupported_config_is_refused(tmp_path, no_building):
    import json

    import open_clip

    cfg = {"model_cfg": open_clip.get_model_config("EVA02-B-16")}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BackboneError, match="a timm image tower"):
        get_backbone(f"local-dir:{tmp_path}", "cpu")
    assert no_building == []


def _local_dir(folder, weights: bool):
    import json

    import open_clip

    from liftlearn.nn.backbones import _open_clip

    _open_clip()
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": open_clip.get_model_config("liftlearn-tiny-vit"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    if weights == "real":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.save(open_clip.create_model("liftlearn-tiny-vit").state_dict(),
                       folder / "open_clip_pytorch_model.bin")
    elif weights:
        (folder / "open_clip_pytorch_model.bin").write_bytes(b"not read by the checks")
    return folder


@pytest.mark.parametrize("case, match", [
    ("no_weights", "has no weights file open_clip loads"),
    ("pretrained_file", "does not apply to backbone 'local-dir:"),
    ("missing", "does not exist"),
    ("colon", "unknown backbone 'ViT-B-16:openai'"),
    ("empty", "needs the folder after 'local-dir:'"),
])
def test_local_dir_and_schema_mistakes_are_named_before_building(tmp_path, no_building, case, match):
    from liftlearn.nn.backbones import BackboneSpec, check_backbone, check_local_dir

    def check(spec):  # what a fit checks first
        check_local_dir(spec)
        check_backbone(spec)

    name, pretrained = f"local-dir:{tmp_path / 'bb'}", None
    if case == "no_weights":
        _local_dir(tmp_path / "bb", weights=False)
    elif case == "pretrained_file":
        _local_dir(tmp_path / "bb", weights=True)
        pretrained = str(_local_dir(tmp_path / "other", weights=True) / "open_clip_pytorch_model.bin")
    elif case == "colon":
        name = "ViT-B-16:openai"  # meant: backbone="ViT-B-16", pretrained="openai"
    elif case == "empty":
        name = "local-dir:"
    with pytest.raises((BackboneError, ValueError), match=match):
        check(BackboneSpec.create(name, pretrained))
    assert no_building == []


def test_local_dir_paths_are_made_absolute(tmp_path, monkeypatch):
    from liftlearn.nn.backbones import BackboneSpec, check_backbone

    _local_dir(tmp_path / "bb", weights="real")
    monkeypatch.chdir(tmp_path)
    spec = BackboneSpec.create("local-dir:bb", "openai")  # a tag is ignored there, as by open_clip
    assert spec.name == f"local-dir:{tmp_path / 'bb'}"
    check_backbone(spec)
    # A spec made before (a model file, a pickle) with the relative name is
    # the same backbone: one cache entry.
    assert get_backbone(BackboneSpec("local-dir:bb", None)).spec == BackboneSpec(spec.name, None)
    # A tag that is also a name in the working folder stays a tag in a spec
    # read back (only the local-dir folder is made absolute).
    (tmp_path / "openai").mkdir()
    with pytest.raises(BackboneError, match="'openai' is neither a pretrained tag"):
        get_backbone(BackboneSpec("liftlearn-tiny-vit", "openai"))


# ------------------------------------------ weights offline: fail fast, once


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_offline_missing_weights_one_error_no_build(empty_hf_cache, no_building, caplog):
    # HF_HUB_OFFLINE set (conftest) and nothing cached: an error at once,
    # built from the cache check, without open_clip trying (and logging on
    # root) first; the advice does not tell the user to set what is set.
    with pytest.raises(BackboneError) as exc:
        get_backbone("RN50", "cpu", pretrained="openai")
    msg = str(exc.value)
    assert "HF_HUB_OFFLINE is set" in msg and "HF_HUB_OFFLINE=1" not in msg
    assert str(empty_hf_cache) in msg and ".." not in msg
    assert exc.value.missing_weights and exc.value.summary in msg
    assert no_building == [] and not caplog.records


def test_online_unreachable_hub_fails_at_once_without_retries(empty_hf_cache, no_building,
                                                              monkeypatch, caplog):
    # No HF_HUB_OFFLINE and no network (here: an endpoint nobody listens on):
    # one quick request instead of five retries per file (about a minute).
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(BackboneError, match="http://127.0.0.1:9 cannot be reached") as exc:
        get_backbone("RN50", "cpu", pretrained="openai")
    assert time.perf_counter() - start < 10
    assert "HF_HUB_OFFLINE" not in str(exc.value)
    assert no_building == [] and not [r for r in caplog.records if "Retry" in r.getMessage()]


def test_cached_weights_pass_the_check(empty_hf_cache):
    # A tag whose weights are in the Hugging Face cache passes the check
    # offline, and is loaded without a network request.
    from liftlearn.nn.backbones import check_backbone

    snapshot = empty_hf_cache / "models--timm--resnet50_clip.openai" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    refs = empty_hf_cache / "models--timm--resnet50_clip.openai" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    found = check_backbone(BackboneSpec.create("RN50", "openai"))
    assert found == str(snapshot / "open_clip_pytorch_model.bin")


@pytest.fixture
def liftlearn_records():
    """What liftlearn's logger receives at DEBUG, with root at logging's
    default WARNING level; both loggers restored after. (A test empties
    root's handlers itself: pytest adds its own after fixtures run.)"""
    import logging

    root = logging.getLogger()
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("liftlearn")
    old_levels = logger.level, root.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    root.setLevel(logging.WARNING)  # logging's default (conftest raises it)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_levels[0])
        root.setLevel(old_levels[1])


def test_open_clip_log_lines_go_to_liftlearns_logger(liftlearn_records, monkeypatch):
    # open_clip logs on the root logger, whose first logging.info() call
    # installs a stderr handler on root for the whole process. Building a
    # backbone and its tokenizer must leave root as it was, and say what
    # open_clip said on liftlearn's logger ("initialized randomly" is news
    # only at INFO with pretrained=None).
    import logging

    from liftlearn.nn.backbones import clear_backbone_cache

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a process that configured none
    records = liftlearn_records
    clear_backbone_cache()
    bb = get_backbone("liftlearn-tiny-vit", "cpu")
    bb.encode_text(["a photo of a cat."])
    assert root.handlers == []
    (note,) = [r for r in records if "initialized randomly" in r.getMessage()]
    assert note.name == "liftlearn.backbones" and note.levelno == logging.INFO


def test_open_clip_logs_in_overlapping_threads(liftlearn_records, monkeypatch):
    # Two builds in threads: A enters, B enters and builds, A leaves, B
    # builds again and leaves. What B's builds log is B's (re-logged at
    # INFO, as B expects it), and root keeps no handler: logging.warning
    # on a root without one installs a stderr handler for good.
    import logging

    from liftlearn.nn.backbones import _open_clip, _open_clip_logs

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a process that configured none
    records = liftlearn_records
    a_in, b_built, a_out = threading.Event(), threading.Event(), threading.Event()

    def build():
        with torch.random.fork_rng(devices=[]):
            _open_clip().create_model("liftlearn-tiny-vit", pretrained=None)

    def build_a():
        with _open_clip_logs():
            a_in.set()
            assert b_built.wait(30)
        a_out.set()

    def build_b():
        assert a_in.wait(30)
        with _open_clip_logs(("initialized randomly",)):
            build()
            b_built.set()
            assert a_out.wait(30)
            build()

    run_in_threads(build_a, build_b)
    assert root.handlers == [] and root.filters == []
    notes = [r for r in records if "initialized randomly" in r.getMessage()]
    assert len(notes) == 2
    assert all(r.name == "liftlearn.backbones" and r.levelno == logging.INFO for r in notes)
