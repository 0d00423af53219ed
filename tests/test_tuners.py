"""The fine-tuning methods (liftlearn.nn.tuners): the registry, every method,
the ResNet tuner, and compatibility with the code before the registry."""

import copy
import math
import pickle
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from liftlearn.nn.backbones import get_backbone
from liftlearn.nn.tuners import (
    ADAPTERS,
    RESNET_ADAPTERS,
    TUNERS,
    AdaptFormer,
    LoRA,
    ResNetTuner,
    Tuner,
    TunerMethod,
    _auto_size,
    auto_adapter_dim,
    auto_lora_rank,
    auto_prompt_length,
    build_tuner,
    register_tuner,
)
from liftlearn.nn.tuners import _blocks

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = list(TUNERS)  # the registry at collection time
VIT_ADAPTERS = sorted(ADAPTERS)
#: The methods of the code before the registry (the later ones have no
#: pre-registry twin to compare with).
PRE_REGISTRY = ("adaptformer", "adapter", "lora", "vpt", "vpt-shallow", "ssf", "bitfit", "full", "none")

# The last commit with the pre-registry liftlearn/adapters.py.
PRE_REGISTRY_COMMIT = "8126e48e2b85b022d6f701513c0bb205185eee99"


@pytest.fixture(scope="module")
def backbone():
    return get_backbone("liftlearn-tiny-vit", "cpu")


@pytest.fixture(scope="module")
def rn_backbone():
    return get_backbone("liftlearn-tiny-rn", "cpu")


def _frozen_features(visual, images):
    x = visual._embeds(images)
    x = visual.transformer(x)
    return visual._pool(x)[0]


def _perturb(tuner, scale=0.1):
    with torch.no_grad():
        for p in tuner.parameters():
            p.add_(torch.randn_like(p) * scale)


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize(
    "n_classes, n_layers, expected",
    [(1000, 12, 32), (365, 12, 8), (8142, 12, 256), (100, 12, 4), (1000, 24, 16), (10, 4, 1), (2, 12, 1)],
)
def test_auto_adapter_dim(n_classes, n_layers, expected):
    assert auto_adapter_dim(n_classes, n_layers) == expected


def test_auto_sizes():
    assert auto_lora_rank(1000, 12) == 16 and auto_lora_rank(365, 12) == 4
    assert auto_lora_rank(10, 4) == 1
    assert auto_prompt_length(1000, 12) == 64 and auto_prompt_length(100, 12) == 8
    assert auto_prompt_length(2, 12) == 1
    assert _auto_size("adapter", 1000, 12) == 32 and _auto_size("vpt-shallow", 1000, 12) == 64
    assert _auto_size("ssf", 1000, 12) is None and _auto_size("no-such", 1000, 12) is None


@pytest.mark.parametrize(
    "n_classes, expected", [(1000, 617_868), (365, 175_212), (8142, 4_749_324), (100, 101_436)]
)
def test_vit_b16_adaptformer_counts_match_the_reference(n_classes, expected):
    # CLIP ViT-B/16: width 768, 12 blocks (counts from LIFT+'s formulas).
    tuner = Tuner("adaptformer", 768, 12, auto_adapter_dim(n_classes, 12))
    assert sum(p.numel() for p in tuner.parameters()) == expected


def _vit_b16_count(adapter, n_classes):
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


# --------------------------------------------------------------- registry
def test_the_registry_lists_the_lift_plus_methods():
    assert list(ADAPTERS) == [
        "adaptformer", "adapter", "lora", "vpt", "vpt-shallow", "ssf", "bitfit", "full", "none",
        "aft", "clip-adapter",
    ]
    assert BUILT_IN == list(ADAPTERS)
    assert all(ADAPTERS[n] == m.description and m.name == n for n, m in TUNERS.items())
    assert set(RESNET_ADAPTERS) == {"none", "bitfit", "ssf", "full"}
    assert all(isinstance(m, TunerMethod) for m in TUNERS.values())


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_registered_method(backbone, name):
    """Builds, is the identity where it declares so, trains exactly its own
    parameters in its blocks, and takes only the options it declares."""
    method = TUNERS[name]
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    tuner = build_tuner(name, backbone, n_classes=1000)  # a wide bottleneck: no dead ReLU
    assert type(tuner) is Tuner and tuner.method is method and tuner.adapter == name
    with torch.no_grad():
        out = tuner.features(backbone.visual, images)
        expected = _frozen_features(backbone.visual, images)
    assert out.shape == expected.shape
    assert torch.allclose(out, expected, atol=1e-5) == method.identity_at_init

    # Its parameters live in its own attribute, one entry per selected block.
    names = [n for n, _ in tuner.named_parameters()]
    if method.attribute is None:
        # No block modules; at most a module on the pooled feature.
        assert tuner.block_modules() is None
        assert {n.split(".")[0] for n in names} <= {"feature_module"}
        assert bool(names) == (tuner.feature_module is not None)
    else:
        assert names and {n.split(".")[0] for n in names} == {method.attribute}
        assert {n.split(".")[1] for n in names} == {str(i) for i in tuner.layers}
        assert tuner.block_modules() is getattr(tuner, method.attribute)
    _perturb(tuner)
    x = images.clone().requires_grad_(True)  # a graph even where nothing trains
    tuner.features(backbone.visual, x).pow(2).sum().backward()
    for n, p in tuner.named_parameters():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in backbone.model.parameters())

    # Options.
    if method.sized:
        assert build_tuner(name, backbone, 10, adapter_dim=3).adapter_dim == 3
        assert tuner.adapter_dim == method.auto_size(1000, backbone.n_layers)
    else:
        assert tuner.adapter_dim is None
        with pytest.raises(ValueError, match="adapter_dim does not apply"):
            build_tuner(name, backbone, 10, adapter_dim=4)
    if method.layered:
        assert tuner.layers == (0, 1, 2, 3)
        assert build_tuner(name, backbone, 10, layers=1).layers == (3,)
    else:
        assert tuner.layers == tuple(method.fixed_layers)
        with pytest.raises(ValueError, match="adapter_layers does not apply"):
            build_tuner(name, backbone, 10, layers=1)


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_registered_method_on_a_resnet(rn_backbone, name):
    method = TUNERS[name]
    if not method.resnet:
        with pytest.raises(ValueError, match="needs a ViT backbone"):
            build_tuner(name, rn_backbone, 10)
        assert name not in RESNET_ADAPTERS
        return
    assert name in RESNET_ADAPTERS
    tuner = build_tuner(name, rn_backbone, 10)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = tuner.features(rn_backbone.visual, images)
        assert torch.allclose(out, rn_backbone.visual(images), atol=1e-5) == method.identity_at_init
    with pytest.raises(ValueError, match="adapter_layers does not apply to a ResNet"):
        build_tuner(name, rn_backbone, 10, layers=1)


def test_registration_refuses_duplicates_and_contradictions():
    class Dup(TunerMethod):
        name = "adaptformer"

    with pytest.raises(ValueError, match="already registered"):
        register_tuner(Dup)
    assert type(TUNERS["adaptformer"]).__name__ == "AdaptFormerMethod"

    class QKVWithoutFunctionalAttention(TunerMethod):
        name = "test-bad-qkv"

        def qkv(self, module, a, qkv):
            return qkv

    class BadAttribute(TunerMethod):
        name = "test-bad-attribute"
        attribute = "layers"  # a Tuner setting

    class PromptsThatEditBlocks(TunerMethod):
        name = "test-bad-prompts"
        edits_blocks = False
        functional_mlp = True

    class ResNetWithoutAMeaning(TunerMethod):
        name = "test-bad-resnet"
        resnet = True

    class ModuleAttribute(TunerMethod):
        name = "test-bad-module-attribute"
        attribute = "training"  # an nn.Module setting

    bad = (QKVWithoutFunctionalAttention, BadAttribute, PromptsThatEditBlocks, ResNetWithoutAMeaning,
           ModuleAttribute)
    for cls in bad:
        with pytest.raises(TypeError, match=cls.name):
            register_tuner(cls)
        assert cls.name not in TUNERS
    with pytest.raises(TypeError, match="TunerMethod subclass"):
        register_tuner(nn.Linear)


def test_a_method_defined_here_works_end_to_end(backbone, rn_backbone):
    """A new method is one registered class: no existing file changes."""

    class ScaleAfterFC2(TunerMethod):
        name = "test-scale-fc2"
        description = "a learnable per-channel scale of every MLP output"
        attribute = "fc2_scale"
        layered = True

        def build_block(self, *, index, width, mlp_width, size, block):
            return nn.Parameter(torch.ones(width))

        def fc2(self, module, m):
            return m * module

    assert register_tuner(ScaleAfterFC2) is ScaleAfterFC2
    try:
        images = torch.randn(2, 3, 32, 32)
        tuner = build_tuner("test-scale-fc2", backbone, 10, layers=2)
        assert isinstance(tuner.fc2_scale, nn.ParameterDict)
        assert list(tuner.state_dict()) == ["fc2_scale.2", "fc2_scale.3"]
        assert tuner.adaptformer is None  # the other methods' attributes exist, unused
        with torch.no_grad():
            expected = _frozen_features(backbone.visual, images)
            assert torch.allclose(tuner.features(backbone.visual, images), expected, atol=1e-6)

        # Training moves its scales and nothing else.
        opt = torch.optim.SGD(tuner.parameters(), lr=1.0)
        before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
        direction = torch.randn(expected.shape, generator=torch.Generator().manual_seed(0))
        loss = (tuner.features(backbone.visual, images) * direction).sum()
        loss.backward()
        assert all(p.grad is None for p in backbone.model.parameters())
        opt.step()
        assert all(not torch.equal(p, torch.ones_like(p)) for p in tuner.fc2_scale.values())
        assert all(torch.equal(before[k], v) for k, v in backbone.model.state_dict().items())
        with torch.no_grad():
            out = tuner.features(backbone.visual, images)
            assert (out * direction).sum() < loss - 1e-3
            clone = pickle.loads(pickle.dumps(tuner))
            assert torch.equal(clone.features(backbone.visual, images), out)

        # The options it does not declare are refused.
        with pytest.raises(ValueError, match="adapter_dim does not apply"):
            build_tuner("test-scale-fc2", backbone, 10, adapter_dim=4)
        with pytest.raises(ValueError, match="needs a ViT backbone"):
            build_tuner("test-scale-fc2", rn_backbone, 10)
        assert "test-scale-fc2" not in ADAPTERS  # the built-in list
    finally:
        TUNERS.pop("test-scale-fc2", None)
    with pytest.raises(ValueError, match="'test-scale-fc2' is not registered"):
        tuner.features(backbone.visual, images)


# ----------------------------------------------------------- the modules
def test_adaptformer_outputs_zero_at_init():
    af = AdaptFormer(16, 4)
    assert torch.count_nonzero(af(torch.randn(2, 5, 16))) == 0
    assert af.scale.item() == 1.0


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
    with pytest.raises(ValueError, match="unknown adapter 'lora2'"):
        build_tuner("lora2", backbone, 10)
    with pytest.raises(ValueError, match="needs a size >= 1"):
        Tuner("lora", 8, 2, 0)
    with pytest.raises(ValueError, match="needs the backbone's blocks"):
        Tuner("full", 8, 2, None)


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
    bias_in, bias_out = block.attn.in_proj_bias, block.attn.out_proj.bias
    with torch.no_grad():
        ours = _blocks.attention(TUNERS["none"], None, block, a, bias_in, bias_out)
        lora_zero = _blocks.attention(tuner.method, tuner.lora["1"], block, a, bias_in, bias_out)
        theirs = block.attention(q_x=a)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(lora_zero, theirs, atol=1e-5)


def test_lora_scale():
    torch.manual_seed(0)
    lora = LoRA(16, 4)
    assert torch.count_nonzero(lora.q_up.weight) == 0 and torch.count_nonzero(lora.v_up.weight) == 0
    a, qkv = torch.randn(2, 3, 16), torch.randn(2, 3, 48)
    with torch.no_grad():
        lora.q_up.weight.fill_(1.0)
    out = lora(a, qkv)
    expected_q = qkv[..., :16] + lora.q_up(lora.q_down(a)) / 4
    assert torch.allclose(out[..., :16], expected_q, atol=1e-6)
    assert torch.equal(out[..., 16:], qkv[..., 16:])  # k untouched, v update is zero


@pytest.mark.parametrize("dim, rank", [(768, 4), (512, 16), (2048, 1)])
def test_lora_down_projection_init_follows_lift_plus(dim, rank):
    # LIFT+'s A is a (dim, rank) Parameter under kaiming_uniform_(a=sqrt(5)):
    # its fan-in is the rank.
    reference = torch.empty(dim, rank)
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(reference)
    assert fan_in == rank
    std = nn.init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(fan_in)
    bound = math.sqrt(3.0) * std
    assert bound == pytest.approx(1 / math.sqrt(rank))
    torch.manual_seed(0)
    lora = LoRA(dim, rank)
    for down in (lora.q_down, lora.v_down):
        w = down.weight
        assert w.shape == (rank, dim)  # nn.Linear(dim, rank): same modules as before
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.95 * bound > 1 / math.sqrt(dim)  # not the Linear's own fan-in
        assert w.std().item() == pytest.approx(std, rel=0.06)
        assert abs(w.mean().item()) < 4 * std / math.sqrt(w.numel())


@pytest.mark.parametrize(
    "adapter, layers, keys",
    [(a, None, {"0", "1", "2", "3"}) for a in VIT_ADAPTERS if a not in ("none", "vpt-shallow", "clip-adapter")]
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
    with pytest.raises(ValueError, match=r"adapter='vpt-shallow' \(layer 0 only\)"):
        build_tuner("vpt-shallow", backbone, 10, layers=1)
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
            expected = tuner.features(backbone.visual, images)
            assert torch.equal(clone.features(backbone.visual, images), expected)
        assert len(pickle.dumps(tuner)) < 200_000


# ---------------------------------------------------------------- ResNets
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
    trained = [p for p in tuner.parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained), adapter
    assert all(p.grad is None for p in tuner.parameters() if not p.requires_grad)
    assert all(p.grad is None for p in rn_backbone.model.parameters())
    if adapter == "full":
        assert not tuner.tower.training  # BatchNorm statistics stay frozen


@pytest.mark.parametrize("name, trained", [
    ("liftlearn-tiny-rn", ("layer1.", "layer2.", "layer3.", "layer4.")),  # CLIP ResNet
    ("liftlearn-tiny-timm-resnet", ("layer1.", "layer2.", "layer3.", "layer4.")),
    ("liftlearn-tiny-timm-vit", ("blocks.",)),
])
def test_full_on_a_whole_tower_trains_what_lift_plus_trains(name, trained):
    """LIFT+'s full fine-tuning (``unfreeze_params`` in its models/models.py)
    trains a ResNet's residual stages (``PEFT_RN.blocks``: not the stem or the
    pooling) and a ViT's blocks (``PEFT_ViT``: not the embeddings or the
    final norm), as liftlearn's CLIP ViT tuner already did."""
    bb = get_backbone(name, "cpu")
    tuner = build_tuner("full", bb, 10)
    names = {n[len("tower."):]: p.requires_grad for n, p in tuner.named_parameters()}
    assert names.keys() == {n for n, _ in bb.visual.named_parameters()}  # the whole tower is copied
    assert {n for n, t in names.items() if t} == {n for n in names if n.startswith(trained)}
    assert tuner.n_trainable_params() == sum(
        p.numel() for n, p in bb.visual.named_parameters() if n.startswith(trained))


def test_resnet_bitfit_and_ssf_sizes(rn_backbone):
    # LIFT+'s unfreeze_bias (PEFT_RN) trains the biases of self.blocks, the
    # residual stages: not the stem's BatchNorms nor the attention pool's.
    n_bias = sum(p.numel() for n, p in rn_backbone.visual.named_parameters()
                 if n.endswith("bias") and n.startswith("layer"))
    assert n_bias < sum(p.numel() for n, p in rn_backbone.visual.named_parameters()
                        if n.endswith("bias"))
    assert build_tuner("bitfit", rn_backbone, 10).n_trainable_params() == n_bias
    assert build_tuner("ssf", rn_backbone, 10).n_trainable_params() == 2 * 32


@pytest.mark.parametrize("adapter", sorted(set(ADAPTERS) - set(RESNET_ADAPTERS)))
def test_resnet_refuses_vit_modules(rn_backbone, adapter):
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        build_tuner(adapter, rn_backbone, 10)
    with pytest.raises(ValueError, match="does not apply to a CLIP ResNet"):
        ResNetTuner(adapter, rn_backbone.visual, 32)


def test_resnet_refuses_layer_selection(rn_backbone):
    with pytest.raises(ValueError, match="adapter_layers does not apply to a ResNet"):
        build_tuner("full", rn_backbone, 10, layers=1)


# ------------------------------------------------- one attention path
class _AtenOps(TorchDispatchMode):
    """The aten ops dispatched inside the block (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


_BMM = {"bmm", "baddbmm"}


def _step_and_predict_ops(network, images, n_classes):
    """The aten ops of a training step (forward, loss, backward) and of a
    prediction (eval, no grad; and under CPU bf16 autocast, where
    nn.MultiheadAttention's fused fast path is off)."""
    network.train()
    with _AtenOps() as step:
        x = images.clone().requires_grad_(True)  # a backward even where nothing trains
        out = network(x)
        loss = out.float().square().mean() if n_classes is None else torch.nn.functional.cross_entropy(
            out.float(), torch.arange(len(images)) % n_classes)
        loss.backward()
    network.eval()
    with _AtenOps() as predict, torch.no_grad():
        network(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            network(images)
    return step.ops, predict.ops


def test_open_clip_s_own_attention_dispatches_bmm_in_training(backbone):
    """What the next test looks for is there in open_clip's own block."""
    block = backbone.visual.transformer.resblocks[0]
    with _AtenOps() as rec:
        block(torch.randn(2, 5, 64, requires_grad=True)).sum().backward()
    assert rec.ops & _BMM


@pytest.mark.parametrize("name", BUILT_IN + ["zero-shot", "features"])
def test_no_bmm_in_training_or_prediction_of_any_method(backbone, name):
    """Every block of every method (unselected ones, VPT's, "full"'s
    copies) and the plain frozen tower run one SDPA attention: no bmm from
    nn.MultiheadAttention in a training step or a prediction."""
    from liftlearn.nn.heads import CosineClassifier
    from liftlearn.nn.networks import FeatureNetwork, LiftNetwork, ZeroShotNetwork

    images = torch.randn(2, 3, 32, 32)
    n_classes = 3
    if name == "zero-shot":
        text = torch.nn.functional.normalize(torch.randn(n_classes, backbone.visual.output_dim), dim=-1)
        network = ZeroShotNetwork(backbone, text, 100.0)
    elif name == "features":
        network, n_classes = FeatureNetwork(backbone, build_tuner("none", backbone, 2), True), None
    else:
        layers = 2 if TUNERS[name].layered else None  # blocks without a module too
        tuner = build_tuner(name, backbone, n_classes, layers=layers)
        network = LiftNetwork(backbone, tuner, CosineClassifier(torch.randn(n_classes, backbone.feature_dim)))
    step, predict = _step_and_predict_ops(network, images, n_classes)
    assert not step & _BMM and not predict & _BMM, (step | predict) & _BMM
    assert any("scaled_dot_product" in op for op in step)
    assert any("scaled_dot_product" in op for op in predict)


def _features_and_grads(tuner, visual, images):
    tuner.train()
    x = images.clone().requires_grad_(True)
    out = tuner.features(visual, x)
    out.square().sum().backward()
    grads = [x.grad] + [p.grad for p in tuner.parameters()]
    tuner.zero_grad(set_to_none=True)
    tuner.eval()
    with torch.no_grad():
        predicted = tuner.features(visual, images)
    return [out.detach(), predicted] + grads


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_method_equals_open_clip_s_own_blocks(backbone, name, monkeypatch):
    """The SDPA path against open_clip's own modules run directly (its
    ``block(x)``, ``block.attention`` and ``visual(images)``): features and
    every gradient to 1e-5, in training and prediction, trained modules
    perturbed, on the selected and the unselected blocks."""
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layers = [1, 3] if TUNERS[name].layered else None
    torch.manual_seed(0)
    tuner = build_tuner(name, backbone, 1000, layers=layers)
    _perturb(tuner)
    ours = _features_and_grads(tuner, backbone.visual, images)
    with monkeypatch.context() as m:
        # Every block the method does not reach into runs open_clip's own
        # module (a method's qkv hook or replaced projections keep SDPA,
        # checked against block.attention above).
        m.setattr(_blocks, "functional_ok", lambda block: False)
        theirs = _features_and_grads(tuner, backbone.visual, images)
        with torch.no_grad():
            tower = backbone.visual(images)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).abs().max() <= 1e-5
    with torch.no_grad():
        assert (_blocks.image_embedding(backbone.visual, images) - tower).abs().max() <= 1e-5



# ------------------------------------------------- mixed precision
@pytest.mark.parametrize("name", ["liftlearn-tiny-vit", "liftlearn-tiny-timm-vit", "liftlearn-tiny-rn"])
def test_full_under_bf16_starts_from_the_fp32_weights(name):
    """precision="bf16" holds the frozen backbone in bf16; the trainable
    copy must start from the fp32 weights (LIFT+ under AMP trains fp32
    master weights), not from their bf16 rounding."""
    fp32 = get_backbone(name, "cpu")
    tuner = build_tuner("full", get_backbone(name, "cpu", dtype=torch.bfloat16), n_classes=10)
    if fp32.kind == "vit":
        pairs = [(tuner.blocks[str(i)], b) for i, b in enumerate(_blocks.vit_blocks(fp32.visual))]
    else:  # a whole-tower copy (CLIP ResNet, timm)
        pairs = [(tuner.tower, fp32.visual)]
    for copied, original in pairs:
        ours, theirs = copied.state_dict(), original.state_dict()
        assert ours.keys() == theirs.keys()
        for k in ours:
            assert ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]), (name, k)


def test_bitfit_under_bf16_starts_from_the_fp32_biases():
    """The same for every method that copies pretrained values (BitFit here)."""
    fp32 = get_backbone("liftlearn-tiny-vit", "cpu")
    tuner = build_tuner("bitfit", get_backbone("liftlearn-tiny-vit", "cpu", dtype=torch.bfloat16), 10)
    for i, block in enumerate(_blocks.vit_blocks(fp32.visual)):
        for k, bias in _blocks.frozen_block_biases(block).items():
            assert torch.equal(tuner.bitfit[str(i)][k], bias), (i, k)


def test_the_fp32_weights_are_looked_up_outside_the_global_rng_lock(small, monkeypatch):
    """Looking them up may build a backbone under the cache's lock; a thread
    building a backbone holds that lock and waits for GLOBAL_RNG_LOCK, so
    the fit must not look them up while holding GLOBAL_RNG_LOCK."""
    import liftlearn.nn.backbones as backbones
    from liftlearn import LiftPlusClassifier
    from liftlearn._random import GLOBAL_RNG_LOCK
    from conftest import lock_is_free

    calls = []
    lookup = backbones.get_backbone

    def spy(spec, device="cpu", pretrained=None, dtype=torch.float32):
        calls.append((dtype, lock_is_free(GLOBAL_RNG_LOCK)))
        return lookup(spec, device, pretrained, dtype)

    monkeypatch.setattr(backbones, "get_backbone", spy)
    X, y, names, _, _ = small
    LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=None, adapter="full", precision="bf16",
                       epochs=1, batch_size=40, device="cpu", random_state=0, tte=False,
                       class_names=names).fit(X[::3], y[::3])
    assert (torch.float32, True) in calls  # the fp32 copy was looked up
    assert all(free for _, free in calls)


# ------------------------------------------- the code before the registry
def _pre_registry_source():
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "show", f"{PRE_REGISTRY_COMMIT}:liftlearn/adapters.py"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("the pre-registry liftlearn/adapters.py is not in this checkout's git history")


def _cases():
    # LoRA apart: its initial A changed on purpose (see the next test).
    vit = [(a, "vit", None) for a in PRE_REGISTRY if a != "lora"]
    vit += [("adaptformer", "vit", 2), ("vpt", "vit", [1]), ("full", "vit", 1),
            ("bitfit", "vit", [2]), ("ssf", "vit", [0, 3]), ("adapter", "vit", [1, 2])]
    return vit + [(a, "rn", None) for a in ("none", "bitfit", "ssf", "full")]


def _record(tuner, visual, images):
    """Features and every gradient (tuner parameters and the input), at
    init and after a seeded perturbation, in train and eval mode."""
    rec = {"state": {k: v.clone() for k, v in tuner.state_dict().items()}}
    for phase in ("init", "perturbed"):
        if phase == "perturbed":
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for p in tuner.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for train in (True, False):
            tuner.train(train)
            tuner.zero_grad(set_to_none=True)
            x = images.clone().requires_grad_(True)
            out = tuner.features(visual, x)
            out.square().sum().backward()
            rec[phase, train, "features"] = out.detach()
            rec[phase, train, "grad_images"] = x.grad
            for n, p in tuner.named_parameters():
                rec[phase, train, n] = p.grad
    return rec


def test_numerics_match_the_pre_registry_code(backbone, rn_backbone, monkeypatch):
    """Same parameters drawn, same features and gradients, bit for bit,
    where the blocks run open_clip's own attention as the pre-registry code
    did (the SDPA path that replaced it is checked against open_clip by
    test_every_method_equals_open_clip_s_own_blocks)."""
    monkeypatch.setattr(_blocks, "functional_ok", lambda block: False)
    old = types.ModuleType("_liftlearn_pre_registry_adapters")
    exec(compile(_pre_registry_source(), "pre-registry adapters.py", "exec"), old.__dict__)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(123))
    for adapter, kind, layers in _cases():
        bb = backbone if kind == "vit" else rn_backbone
        records = []
        for module in (old, sys.modules["liftlearn.nn.tuners"]):
            torch.manual_seed(0)
            records.append(_record(module.build_tuner(adapter, bb, 10, layers=layers), bb.visual, images))
        theirs, ours = records
        assert ours.keys() == theirs.keys() and ours["state"].keys() == theirs["state"].keys()
        for k in ours["state"]:
            assert torch.equal(ours["state"][k], theirs["state"][k]), (adapter, layers, k)
        # "full" on a ResNet trained the whole tower copy; it now trains the
        # residual stages only (LIFT+'s PEFT_RN): the stem and attention
        # pool of the copy get no gradient, everything else is unchanged.
        frozen = {n for n, p in build_tuner(adapter, bb, 10, layers=layers).named_parameters()
                  if not p.requires_grad}
        for k in ours:
            if k != "state" and k[-1] in frozen:
                assert ours[k] is None, (adapter, layers, k)
            elif k != "state":
                assert (ours[k] is None) == (theirs[k] is None), (adapter, layers, k)
                assert ours[k] is None or torch.equal(ours[k], theirs[k]), (adapter, layers, k)


def test_lora_numerics_match_the_pre_registry_code_given_the_same_weights(backbone, monkeypatch):
    monkeypatch.setattr(_blocks, "functional_ok", lambda block: False)  # as in the test above
    old = types.ModuleType("_liftlearn_pre_registry_adapters")
    exec(compile(_pre_registry_source(), "pre-registry adapters.py", "exec"), old.__dict__)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(123))
    theirs = old.build_tuner("lora", backbone, 1000, layers=[0, -1])
    ours = build_tuner("lora", backbone, 1000, layers=[0, -1])
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    a, b = _record(theirs, backbone.visual, images), _record(ours, backbone.visual, images)
    assert all(a[k] is None and b[k] is None or torch.equal(a[k], b[k]) for k in a if k != "state")


_OLD_PICKLER = textwrap.dedent(
    """
    import pickle, sys, types
    import torch
    import liftlearn
    old = types.ModuleType("liftlearn.adapters")
    sys.modules["liftlearn.adapters"] = liftlearn.adapters = old
    exec(compile(open(sys.argv[1]).read(), "liftlearn/adapters.py", "exec"), old.__dict__)
    from liftlearn.nn.backbones import get_backbone
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    out = {"images": images, "towers": {}, "tuners": {}}
    for kind, name, adapters in (("vit", "liftlearn-tiny-vit", old.ADAPTERS),
                                 ("rn", "liftlearn-tiny-rn", old.RESNET_ADAPTERS)):
        bb = get_backbone(name, "cpu")
        out["towers"][kind] = bb.visual.state_dict()
        for adapter in adapters:
            torch.manual_seed(0)
            tuner = old.build_tuner(adapter, bb, 10)
            with torch.no_grad():
                for p in tuner.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
                tuner.eval()
                out["tuners"][kind, adapter] = (pickle.dumps(tuner), tuner.features(bb.visual, images))
    torch.save(out, sys.argv[2])
    """
)


def test_tuners_pickled_by_the_pre_registry_code_still_load(tmp_path, backbone, rn_backbone, monkeypatch):
    # Bit for bit with open_clip's own attention, as the old code ran it.
    monkeypatch.setattr(_blocks, "functional_ok", lambda block: False)
    source = tmp_path / "adapters.py"
    source.write_text(_pre_registry_source())
    script = tmp_path / "pickle_old.py"
    script.write_text(_OLD_PICKLER)
    result = tmp_path / "old.pt"
    subprocess.run([sys.executable, str(script), str(source), str(result)], cwd=REPO, check=True)
    saved = torch.load(result, weights_only=False)
    towers = {}
    for kind, bb in (("vit", backbone), ("rn", rn_backbone)):
        towers[kind] = copy.deepcopy(bb.visual)
        towers[kind].load_state_dict(saved["towers"][kind])
    assert {a for k, a in saved["tuners"] if k == "vit"} == set(PRE_REGISTRY)
    for (kind, adapter), (blob, expected) in saved["tuners"].items():
        assert b"liftlearn.adapters" in blob
        tuner = pickle.loads(blob)  # through the liftlearn.adapters shim
        assert type(tuner) is (ResNetTuner if kind == "rn" else Tuner)
        assert tuner.method is TUNERS[adapter]
        with torch.no_grad():
            assert torch.equal(tuner.features(towers[kind], saved["images"]), expected), (kind, adapter)
            again = pickle.loads(pickle.dumps(tuner))
            assert torch.equal(again.features(towers[kind], saved["images"]), expected)


def test_the_old_module_path_reexports_the_tuners():
    import liftlearn.adapters as shim
    import liftlearn.nn.tuners as tuners

    for name in ("Tuner", "ResNetTuner", "AdaptFormer", "Adapter", "LoRA", "SSF", "_BlockSSF",
                 "ADAPTERS", "RESNET_ADAPTERS", "build_tuner", "auto_adapter_dim",
                 "auto_lora_rank", "auto_prompt_length", "_auto_size"):
        assert getattr(shim, name) is getattr(tuners, name), name


def test_the_torch_layer_imports_no_upper_layer():
    code = textwrap.dedent(
        """
        import sys
        import liftlearn.nn.tuners, liftlearn.adapters
        upper = ("engine", "estimators", "persistence", "cli", "metrics", "datasets")
        bad = [m for m in sys.modules
               if m.split(".")[0] == "sklearn"
               or (m.startswith("liftlearn.") and m.split(".")[1] in upper)]
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ------------------------------------------------- issue 18: AFT, CLIP-Adapter

from liftlearn.nn.tuners.aft import auto_aft_ratio  # noqa: E402


@pytest.mark.parametrize("loc, names", [
    ("attn", ("in_proj", "out_proj")), ("mlp", ("c_fc", "c_proj")),
    ("all", ("in_proj", "out_proj", "c_fc", "c_proj")),
])
@pytest.mark.parametrize("ratio", [0.05, 0.5])
def test_aft_trains_that_fraction_of_the_chosen_weights_and_leaves_the_backbone(backbone, loc, names, ratio):
    from liftlearn.nn.tuners._blocks import frozen_block_projections

    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    torch.manual_seed(0)
    tuner = build_tuner("aft", backbone, 10, layers=[1, 3], method_options={"ratio": ratio, "loc": loc})
    blocks = list(backbone.visual.transformer.resblocks)
    n_chosen = 0
    for i in (1, 3):
        frozen = frozen_block_projections(blocks[i])
        module = tuner.aft[str(i)]
        for name in names:
            for part, tensor in zip(("weight", "bias"), frozen[name]):
                mask = getattr(module, f"{name}_{part}_mask")
                assert mask.shape == tensor.shape and int(mask.sum()) == int(tensor.numel() * ratio)
                n_chosen += tensor.numel()
    assert {k.split(".")[1] for k, _ in tuner.named_parameters()} == {"1", "3"}
    assert tuner.n_trainable_params() == sum(int(n * ratio) for n in [
        t.numel() for i in (1, 3) for nm in names for t in frozen_block_projections(blocks[i])[nm]])
    assert abs(tuner.n_trainable_params() / n_chosen - ratio) < 0.01

    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(tuner.features(backbone.visual, images),
                              _frozen_features(backbone.visual, images), atol=1e-5)
    # Train a few SGD steps: only the masked entries move, in the tuner's copy.
    opt = torch.optim.SGD(tuner.parameters(), lr=1.0)
    for _ in range(3):
        opt.zero_grad()
        tuner.features(backbone.visual, images).pow(2).sum().backward()
        opt.step()
    after = backbone.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # shared backbone untouched
    assert all(p.grad is None for p in backbone.model.parameters())
    frozen3 = frozen_block_projections(blocks[3])
    new = tuner.aft["3"].replacements(frozen3)
    for name in names:
        w_old, w_new = frozen3[name][0], new[name][0]
        mask = getattr(tuner.aft["3"], f"{name}_weight_mask")
        assert torch.equal(w_old[~mask], w_new[~mask])  # unmasked entries: frozen values
        assert not torch.equal(w_old[mask], w_new[mask])  # masked entries trained
    with torch.no_grad():
        assert not torch.allclose(tuner.features(backbone.visual, images),
                                  _frozen_features(backbone.visual, images), atol=1e-5)


def test_aft_block_equals_the_block_with_the_replaced_weights(backbone):
    """The functional block with AFT's projections equals open_clip's block
    whose weights were overwritten with them (on a private deep copy)."""
    from liftlearn.nn.tuners._blocks import frozen_block_projections, run_block

    torch.manual_seed(1)
    tuner = build_tuner("aft", backbone, 10, layers=[0], method_options={"ratio": 0.3, "loc": "all"})
    _perturb(tuner)
    block = backbone.visual.transformer.resblocks[0]
    new = tuner.aft["0"].replacements(frozen_block_projections(block))
    twin = copy.deepcopy(block)
    with torch.no_grad():
        twin.attn.in_proj_weight.copy_(new["in_proj"][0]); twin.attn.in_proj_bias.copy_(new["in_proj"][1])
        twin.attn.out_proj.weight.copy_(new["out_proj"][0]); twin.attn.out_proj.bias.copy_(new["out_proj"][1])
        twin.mlp.c_fc.weight.copy_(new["c_fc"][0]); twin.mlp.c_fc.bias.copy_(new["c_fc"][1])
        twin.mlp.c_proj.weight.copy_(new["c_proj"][0]); twin.mlp.c_proj.bias.copy_(new["c_proj"][1])
        x = torch.randn(2, 5, backbone.feature_dim)
        assert torch.allclose(run_block(tuner.method, tuner.aft["0"], block, x), twin(x), atol=1e-5)


def test_aft_automatic_ratio_is_lift_plus_formula(backbone):
    assert auto_aft_ratio(100, 12, 768, "all") == pytest.approx(100 / (12 * (768 * 12 + 9)))
    assert auto_aft_ratio(100, 12, 768, "attn") == pytest.approx(100 / (12 * (768 * 4 + 4)))
    assert auto_aft_ratio(100, 12, 768, "mlp") == pytest.approx(100 / (12 * (768 * 8 + 5)))
    t = build_tuner("aft", backbone, 1000, layers=2)
    assert t.options == {"ratio": pytest.approx(1000 / (2 * (64 * 12 + 9))), "loc": "all"}
    with pytest.raises(ValueError, match="aft_ratio=1.5"):
        build_tuner("aft", backbone, 10, method_options={"ratio": 1.5})
    with pytest.raises(ValueError, match="takes no method options"):
        build_tuner("lora", backbone, 10, method_options={"ratio": 0.1})


def test_clip_adapter_is_a_residual_bottleneck_on_the_pooled_feature(backbone):
    torch.manual_seed(0)
    tuner = build_tuner("clip-adapter", backbone, 10)
    assert tuner.adapter_dim == 4 and tuner.layers == ()
    _perturb(tuner)
    m = tuner.feature_module
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f = _frozen_features(backbone.visual, images)
        mu, var = f.mean(-1, keepdim=True), f.var(-1, unbiased=False, keepdim=True)
        z = (f - mu) / torch.sqrt(var + 1e-5) * m.ln.weight + m.ln.bias
        expected = f + torch.relu(z @ m.down.weight.T + m.down.bias) @ m.up.weight.T + m.up.bias
        assert torch.allclose(tuner.features(backbone.visual, images), expected, atol=1e-5)
    assert tuner.n_trainable_params() == 2 * 64 + (64 * 4 + 4) + (4 * 64 + 64)


@pytest.mark.parametrize("kw", [dict(adapter="aft", aft_ratio=0.2, aft_loc="attn"),
                                dict(adapter="clip-adapter")])
def test_new_methods_fit_and_predict_on_the_tiny_model(small, kw):
    from liftlearn import LiftPlusClassifier

    X, y, names, Xt, _ = small
    clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=None, epochs=1, batch_size=40,
                             device="cpu", random_state=0, class_names=names, tte=False, **kw)
    clf.fit(X[::2], y[::2])
    assert clf.module_.tuner.adapter == kw["adapter"]
    assert clf.predict_proba(Xt[:3]).shape == (3, 10)
    assert 0 < clf.n_adapter_params_ < clf.n_trainable_params_


def test_aft_parameters_are_refused_for_other_methods(small):
    from liftlearn import LiftPlusClassifier

    X, y, names, _, _ = small
    for kw in (dict(aft_ratio=0.1), dict(aft_loc="mlp")):
        clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu",
                                 class_names=names, **kw)
        with pytest.raises(ValueError, match="apply to adapter='aft' only"):
            clf.fit(X, y)
        assert not hasattr(clf, "module_")
