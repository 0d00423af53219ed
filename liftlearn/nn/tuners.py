"""Lightweight fine-tuning modules that adapt a frozen CLIP image encoder.

A *tuner* owns every trainable module that lives inside the image encoder and
knows how to run the frozen encoder with those modules in place. The frozen
encoder itself is never modified, patched or parametrised: the tuner
re-implements the forward pass of open_clip's ``VisionTransformer`` (or
``ModifiedResNet``) around the frozen sub-modules, so one backbone can serve
any number of estimators at once.

The modules of the LIFT+ study, with their hook points inside a pre-LN block
(``h`` is the residual stream)::

    a = LN1(h); qkv = a W_in + b_in
    q += LoRA_q(a); v += LoRA_v(a)          # "lora"
    qkv = SSF_qkv(qkv)                      # "ssf"
    o = SSF_out(SDPA(q, k, v) W_out + b_out)
    h = h + ls_1(o)
    m = SSF_fc2(fc2(act(SSF_fc1(fc1(LN2(h))))))
    m = m + Adapter(m)                      # "adapter" (sequential)
    m = ls_2(m) + AdaptFormer(h)            # "adaptformer" (LIFT+ default)
    out = h + m

"vpt" inserts learnable prompt tokens right after CLS; "bitfit" trains copies
of the block biases (the frozen weights are used with the tuner's biases);
"full" trains a private deep copy of the selected blocks.
"""

from __future__ import annotations

import copy
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ADAPTERS",
    "RESNET_ADAPTERS",
    "Adapter",
    "AdaptFormer",
    "LoRA",
    "ResNetTuner",
    "SSF",
    "Tuner",
    "auto_adapter_dim",
    "auto_lora_rank",
    "auto_prompt_length",
    "build_tuner",
]

#: The values of the ``adapter`` parameter, with what each trains.
ADAPTERS = {
    "adaptformer": "AdaptFormer bottleneck parallel to the MLP of every block (LIFT+ default)",
    "adapter": "sequential bottleneck adapter on the MLP output of every block",
    "lora": "low-rank updates of the query and value projections (scale 1/r)",
    "vpt": "deep visual prompt tuning: prompts after CLS, replaced in every block",
    "vpt-shallow": "shallow visual prompt tuning: prompts after CLS at the first block",
    "ssf": "scale and shift after qkv, attention out, fc1 and fc2 (ResNet: pooled feature)",
    "bitfit": "the bias parameters of the blocks (LayerNorm biases included)",
    "full": "every parameter of the blocks (a private copy; or of the last k blocks)",
    "none": "nothing in the encoder: the cosine classifier alone (linear probing)",
}

#: The values that make sense on a CLIP ResNet.
RESNET_ADAPTERS = ("none", "bitfit", "ssf", "full")

# Which options each module accepts.
_SIZED = {"adaptformer", "adapter", "lora", "vpt", "vpt-shallow"}
_LAYERED = {"adaptformer", "adapter", "lora", "vpt", "ssf", "bitfit", "full"}
_ATTN_HOOKS = {"lora", "ssf", "bitfit"}
_MLP_HOOKS = {"ssf", "bitfit"}


def _pow2(x: float) -> int:
    return 2 ** max(0, int(math.log2(x)))


def auto_adapter_dim(n_classes: int, n_layers: int) -> int:
    """LIFT+'s automatic bottleneck width, ``2**max(0, int(log2(C / 2L)))``.

    Chosen so that the adapter has about as many parameters as a C-way
    classifier on the same features.
    """
    return _pow2(n_classes / (2 * n_layers))


def auto_lora_rank(n_classes: int, n_layers: int) -> int:
    """LIFT+'s automatic LoRA rank, ``2**max(0, int(log2(C / 4L)))``."""
    return _pow2(n_classes / (4 * n_layers))


def auto_prompt_length(n_classes: int, n_layers: int) -> int:
    """LIFT+'s automatic prompt length, ``2**max(0, int(log2(C / L)))``."""
    return _pow2(n_classes / n_layers)


def _auto_size(adapter: str, n_classes: int, n_layers: int) -> Optional[int]:
    if adapter in ("adaptformer", "adapter"):
        return auto_adapter_dim(n_classes, n_layers)
    if adapter == "lora":
        return auto_lora_rank(n_classes, n_layers)
    if adapter in ("vpt", "vpt-shallow"):
        return auto_prompt_length(n_classes, n_layers)
    return None


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``ln(x)`` with a replacement bias, in fp32 like open_clip's LayerNorm."""
    out = F.layer_norm(x.float(), ln.normalized_shape, ln.weight.float(), bias.float(), ln.eps)
    return out.to(x.dtype)


class AdaptFormer(nn.Module):
    """Parallel bottleneck adapter: ``s * up(relu(down(LN(h))))``.

    Parameters
    ----------
    dim : int
        Width of the residual stream.
    bottleneck : int
        Width of the hidden layer.
    scale : float or None, default=1.0
        Initial value of the learnable output scale ``s``; None for no scale
        (the sequential :class:`Adapter`).
    """

    def __init__(self, dim: int, bottleneck: int, scale: Optional[float] = 1.0):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.scale = None if scale is None else nn.Parameter(torch.tensor(float(scale)))
        # LIFT+: down-projection Kaiming-uniform(a=sqrt(5)) (torch's Linear
        # default) with zero bias; up-projection all zeros, so the module
        # outputs exactly 0 until trained.
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # The adapter's LayerNorm runs in fp32 like open_clip's own norms;
        # under autocast the linear layers then run in low precision.
        z = self.ln(h.float()).to(h.dtype) if h.dtype != torch.float32 else self.ln(h)
        out = self.up(torch.relu(self.down(z)))
        return out if self.scale is None else out * self.scale


class Adapter(AdaptFormer):
    """Sequential bottleneck adapter ``up(relu(down(LN(m))))`` (no scale),
    added to the MLP output: ``m = m + Adapter(m)``."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__(dim, bottleneck, scale=None)


class LoRA(nn.Module):
    """Low-rank updates of the query and value projections.

    ``q += B_q A_q a / r`` and ``v += B_v A_v a / r``; A is Kaiming-uniform
    (a=sqrt(5)), B is zero, so the update is 0 at initialisation.
    """

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.rank = rank
        self.q_down = nn.Linear(dim, rank, bias=False)
        self.q_up = nn.Linear(rank, dim, bias=False)
        self.v_down = nn.Linear(dim, rank, bias=False)
        self.v_up = nn.Linear(rank, dim, bias=False)
        for down, up in ((self.q_down, self.q_up), (self.v_down, self.v_up)):
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            nn.init.zeros_(up.weight)

    def forward(self, a: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv.chunk(3, dim=-1)
        q = q + self.q_up(self.q_down(a)) / self.rank
        v = v + self.v_up(self.v_down(a)) / self.rank
        return torch.cat([q, k, v], dim=-1)


class SSF(nn.Module):
    """Scale and shift of the last dimension: ``x * scale + shift``.

    scale ~ N(1, 0.02), shift ~ N(0, 0.02): not the identity at init.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(dim).normal_(1.0, 0.02))
        self.shift = nn.Parameter(torch.empty(dim).normal_(0.0, 0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


class _BlockSSF(nn.Module):
    def __init__(self, dim: int, mlp_width: int):
        super().__init__()
        self.qkv = SSF(3 * dim)
        self.out = SSF(dim)
        self.fc1 = SSF(mlp_width)
        self.fc2 = SSF(dim)


def _block_biases(dim: int, mlp_width: int) -> nn.ParameterDict:
    """Zero-filled placeholders for a block's biases (overwritten by
    :func:`build_tuner` with the pretrained values)."""
    sizes = {
        "ln_1": dim, "in_proj": 3 * dim, "out_proj": dim,
        "ln_2": dim, "c_fc": mlp_width, "c_proj": dim,
    }
    return nn.ParameterDict({k: nn.Parameter(torch.zeros(n)) for k, n in sizes.items()})


def _frozen_block_biases(block) -> dict:
    return {
        "ln_1": block.ln_1.bias, "in_proj": block.attn.in_proj_bias,
        "out_proj": block.attn.out_proj.bias, "ln_2": block.ln_2.bias,
        "c_fc": block.mlp.c_fc.bias, "c_proj": block.mlp.c_proj.bias,
    }


def _check_layers(layers, n_layers: int) -> tuple:
    """None -> all blocks; int k -> the last k; sequence -> those indices."""
    if layers is None:
        return tuple(range(n_layers))
    if isinstance(layers, bool):
        raise ValueError(f"adapter_layers={layers!r} must be None, an int or a list of ints")
    if isinstance(layers, int):
        if not 1 <= layers <= n_layers:
            raise ValueError(
                f"adapter_layers={layers} (the last k blocks) must be in 1..{n_layers}"
            )
        return tuple(range(n_layers - layers, n_layers))
    try:
        idx = [int(i) for i in layers]
        if any(isinstance(i, bool) or int(i) != i for i in layers):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(
            f"adapter_layers={layers!r} must be None, an int or a list of ints"
        ) from None
    idx = [i + n_layers if i < 0 else i for i in idx]
    if not idx or any(not 0 <= i < n_layers for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(
            f"adapter_layers={layers!r} must be distinct block indices in "
            f"0..{n_layers - 1} (negative counts from the end)"
        )
    return tuple(sorted(idx))


class Tuner(nn.Module):
    """The trainable modules inside a ViT image encoder, and its forward.

    Parameters
    ----------
    adapter : str
        One of :data:`ADAPTERS`.
    width : int
        Width of the encoder's residual stream.
    n_layers : int
        Number of transformer blocks.
    adapter_dim : int or None
        Bottleneck width ("adaptformer", "adapter"), LoRA rank ("lora") or
        prompt length ("vpt", "vpt-shallow"); unused by the others.
    layers : None, int or sequence of int, default=None
        The blocks that get the module: None all, k the last k, or indices.
    mlp_width : int or None, default=None
        Hidden width of the blocks' MLP ("ssf", "bitfit"); None: ``4 * width``.
    blocks : sequence of modules or None
        The frozen blocks; "full" trains a private deep copy of the selected
        ones (required for "full").
    """

    def __init__(
        self,
        adapter: str,
        width: int,
        n_layers: int,
        adapter_dim: Optional[int],
        layers=None,
        mlp_width: Optional[int] = None,
        blocks: Optional[Sequence[nn.Module]] = None,
    ):
        super().__init__()
        if adapter not in ADAPTERS:
            raise ValueError(
                f"unknown adapter {adapter!r}; choose one of {sorted(ADAPTERS)}"
            )
        if adapter == "vpt-shallow":
            if layers is not None:
                raise ValueError("adapter_layers does not apply to adapter='vpt-shallow' (layer 0 only)")
            layers = [0]
        elif layers is not None and adapter not in _LAYERED:
            raise ValueError(f"adapter_layers does not apply to adapter={adapter!r}; leave it None")
        self.adapter = adapter
        self.adapter_dim = adapter_dim if adapter in _SIZED else None
        self.width = width
        self.n_layers = n_layers
        self.layers = _check_layers(layers, n_layers) if adapter != "none" else ()
        mlp_width = mlp_width or 4 * width
        keys = [str(i) for i in self.layers]
        self._keys = frozenset(keys)
        self.adaptformer: Optional[nn.ModuleDict] = None
        self.seq_adapter: Optional[nn.ModuleDict] = None
        self.lora: Optional[nn.ModuleDict] = None
        self.ssf: Optional[nn.ModuleDict] = None
        self.bitfit: Optional[nn.ModuleDict] = None
        self.prompts: Optional[nn.ParameterDict] = None
        self.blocks: Optional[nn.ModuleDict] = None
        if adapter in _SIZED and (adapter_dim is None or adapter_dim < 1):
            raise ValueError(f"adapter={adapter!r} needs a size >= 1, got {adapter_dim!r}")
        if adapter == "adaptformer":
            self.adaptformer = nn.ModuleDict({k: AdaptFormer(width, adapter_dim) for k in keys})
        elif adapter == "adapter":
            self.seq_adapter = nn.ModuleDict({k: Adapter(width, adapter_dim) for k in keys})
        elif adapter == "lora":
            self.lora = nn.ModuleDict({k: LoRA(width, adapter_dim) for k in keys})
        elif adapter == "ssf":
            self.ssf = nn.ModuleDict({k: _BlockSSF(width, mlp_width) for k in keys})
        elif adapter == "bitfit":
            self.bitfit = nn.ModuleDict({k: _block_biases(width, mlp_width) for k in keys})
            if blocks is not None:
                with torch.no_grad():
                    for k in keys:
                        for name, b in _frozen_block_biases(blocks[int(k)]).items():
                            self.bitfit[k][name].copy_(b.detach().float())
        elif adapter in ("vpt", "vpt-shallow"):
            self.prompts = nn.ParameterDict(
                {k: nn.Parameter(torch.empty(adapter_dim, width).normal_(0.0, 0.02)) for k in keys}
            )
        elif adapter == "full":
            if blocks is None:
                raise ValueError("adapter='full' needs the backbone's blocks to copy")
            self.blocks = nn.ModuleDict({k: copy.deepcopy(blocks[int(k)]) for k in keys})
            self.blocks.requires_grad_(True)

    def extra_repr(self) -> str:
        return f"adapter={self.adapter!r}, adapter_dim={self.adapter_dim}, layers={list(self.layers)}"

    def n_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------- block parts
    def _attention(self, key, block, a, in_bias, out_bias):
        attn = block.attn
        qkv = F.linear(a, attn.in_proj_weight, in_bias)
        if self.lora is not None:
            qkv = self.lora[key](a, qkv)
        if self.ssf is not None:
            qkv = self.ssf[key].qkv(qkv)
        n, length, dim = a.shape
        heads = attn.num_heads
        q, k, v = qkv.view(n, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        o = o.transpose(1, 2).reshape(n, length, dim)
        o = F.linear(o, attn.out_proj.weight, out_bias)
        if self.ssf is not None:
            o = self.ssf[key].out(o)
        return o

    def _mlp(self, key, block, m, fc1_bias, fc2_bias):
        mlp = block.mlp
        m = F.linear(m, mlp.c_fc.weight, fc1_bias)
        if self.ssf is not None:
            m = self.ssf[key].fc1(m)
        m = mlp.gelu(m)
        m = F.linear(m, mlp.c_proj.weight, fc2_bias)
        if self.ssf is not None:
            m = self.ssf[key].fc2(m)
        return m

    def _block(self, i: int, block, x: torch.Tensor) -> torch.Tensor:
        key = str(i)
        if key not in self._keys or self.adapter in ("none", "vpt", "vpt-shallow"):
            return block(x)
        if self.blocks is not None:
            return self.blocks[key](x)
        hooked = self.adapter in _ATTN_HOOKS
        if self.bitfit is not None:
            b = self.bitfit[key]
            a = _layer_norm(block.ln_1, x, b["ln_1"])
        else:
            b = _frozen_block_biases(block) if hooked else None
            a = block.ln_1(x)
        if hooked:
            o = self._attention(key, block, a, b["in_proj"], b["out_proj"])
        else:
            o = block.attention(q_x=a)
        h = x + block.ls_1(o)
        if self.bitfit is not None:
            m = self._mlp(key, block, _layer_norm(block.ln_2, h, b["ln_2"]), b["c_fc"], b["c_proj"])
        elif self.adapter in _MLP_HOOKS:
            m = self._mlp(key, block, block.ln_2(h), b["c_fc"], b["c_proj"])
        else:
            m = block.mlp(block.ln_2(h))
        if self.seq_adapter is not None:
            m = m + self.seq_adapter[key](m)
        m = block.ls_2(m)
        if self.adaptformer is not None:
            m = m + self.adaptformer[key](h)
        return h + m

    def features(self, visual, images: torch.Tensor) -> torch.Tensor:
        """Pre-projection image features: ``ln_post`` of the CLS token.

        Parameters
        ----------
        visual : open_clip.transformer.VisionTransformer
            The frozen image tower.
        images : Tensor of shape (n, 3, H, W)
        """
        if not hasattr(visual, "transformer"):
            # A CLIP ResNet: the attention-pool output is the feature.
            return visual(images)
        x = visual._embeds(images)
        n_prompts = 0
        for i, block in enumerate(visual.transformer.resblocks):
            if self.prompts is not None and str(i) in self.prompts:
                # LIFT+'s VPT: [CLS, prompts, patches]; a layer with its own
                # prompts drops the previous layer's.
                p = self.prompts[str(i)].to(x.dtype).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], p, x[:, 1 + n_prompts:]], dim=1)
                n_prompts = p.shape[1]
            x = self._block(i, block, x)
        pooled, _ = visual._pool(x)
        return pooled


class ResNetTuner(Tuner):
    """The trainable modules for a CLIP ``ModifiedResNet`` image tower.

    "none": the frozen tower; "ssf": a scale and shift of the attention-pool
    output; "bitfit": trainable copies of every bias of the tower (BatchNorm
    and attention pool; the convolutions have none), run functionally with
    the frozen weights; "full": a private deep copy of the whole tower. The
    BatchNorm statistics stay frozen (eval mode) in every case.
    """

    def __init__(self, adapter: str, visual=None, feature_dim: Optional[int] = None):
        nn.Module.__init__(self)
        if adapter not in RESNET_ADAPTERS:
            raise ValueError(
                f"adapter={adapter!r} does not apply to a CLIP ResNet; choose one "
                f"of {list(RESNET_ADAPTERS)}"
            )
        self.adapter = adapter
        self.adapter_dim = None
        self.layers = ()
        self._keys = frozenset()
        self.pooled_ssf = SSF(feature_dim) if adapter == "ssf" else None
        self.tower = None
        self.biases = None
        if adapter == "full":
            self.tower = copy.deepcopy(visual)
            self.tower.requires_grad_(True)
            self.tower.eval()
        elif adapter == "bitfit":
            self.biases = nn.ParameterDict(
                {
                    name.replace(".", "__"): nn.Parameter(p.detach().clone().float())
                    for name, p in visual.named_parameters()
                    if name.endswith("bias")
                }
            )

    def train(self, mode: bool = True):
        super().train(mode)
        if self.tower is not None:
            self.tower.eval()  # BatchNorm statistics stay those of the pretrained tower
        return self

    def _bias(self, module_name: str):
        return self.biases[f"{module_name}.bias".replace(".", "__")]

    def _bn(self, name, bn, x):
        return F.batch_norm(
            x, bn.running_mean, bn.running_var, bn.weight, self._bias(name), False, 0.0, bn.eps
        )

    def _bitfit_forward(self, visual, x):
        x = x.to(visual.conv1.weight.dtype)
        for j in (1, 2, 3):
            x = getattr(visual, f"conv{j}")(x)
            x = getattr(visual, f"act{j}")(self._bn(f"bn{j}", getattr(visual, f"bn{j}"), x))
        x = visual.avgpool(x)
        for s in (1, 2, 3, 4):
            for b, blk in enumerate(getattr(visual, f"layer{s}")):
                pre = f"layer{s}.{b}."
                out = blk.act1(self._bn(pre + "bn1", blk.bn1, blk.conv1(x)))
                out = blk.act2(self._bn(pre + "bn2", blk.bn2, blk.conv2(out)))
                out = self._bn(pre + "bn3", blk.bn3, blk.conv3(blk.avgpool(out)))
                identity = x
                if blk.downsample is not None:
                    ds = blk.downsample
                    identity = self._bn(pre + "downsample.1", ds[2], ds[1](ds[0](x)))
                x = blk.act3(out + identity)
        pool = visual.attnpool
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(2, 0, 1)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + pool.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1],
            num_heads=pool.num_heads,
            q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self._bias(f"attnpool.{p}") for p in ("q_proj", "k_proj", "v_proj")]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=pool.c_proj.weight, out_proj_bias=self._bias("attnpool.c_proj"),
            use_separate_proj_weight=True, training=False, need_weights=False,
        )
        return x[0]

    def features(self, visual, images: torch.Tensor) -> torch.Tensor:
        """The attention-pool output (already in the joint space)."""
        if self.tower is not None:
            return self.tower(images)
        if self.biases is not None:
            return self._bitfit_forward(visual, images)
        out = visual(images)
        return out if self.pooled_ssf is None else self.pooled_ssf(out)


def _check_vit_blocks(visual, adapter):
    from open_clip.transformer import ResidualAttentionBlock

    for block in visual.transformer.resblocks:
        if not isinstance(block, ResidualAttentionBlock):
            raise ValueError(
                f"adapter={adapter!r} needs open_clip's ResidualAttentionBlock; this "
                f"backbone has {type(block).__name__} blocks (use 'adaptformer', "
                "'vpt', 'full' or 'none')"
            )
        if not getattr(block.attn, "batch_first", False) or not block.attn._qkv_same_embed_dim:
            raise ValueError(f"adapter={adapter!r} needs batch-first fused-qkv attention")


def build_tuner(adapter: str, backbone, n_classes: int, adapter_dim=None, **options) -> Tuner:
    """The tuner for ``adapter`` on ``backbone``, sized for ``n_classes``.

    Parameters
    ----------
    adapter : str
        One of :data:`ADAPTERS` (on a ResNet, one of :data:`RESNET_ADAPTERS`).
    backbone : Backbone
    n_classes : int
    adapter_dim : int or None
        Bottleneck width, LoRA rank or prompt length; None uses LIFT+'s
        automatic size (:func:`auto_adapter_dim`, :func:`auto_lora_rank`,
        :func:`auto_prompt_length`, with L the number of blocks). Raises for
        modules without a size.
    layers : None, int or sequence of int
        Keyword option: the blocks that get the module (None all, k the last
        k, or indices). Raises for "none", "vpt-shallow" and ResNets.
    """
    layers = options.pop("layers", None)
    if options:
        raise TypeError(f"build_tuner got unexpected options {sorted(options)}")
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; choose one of {sorted(ADAPTERS)}")
    if adapter_dim is not None and adapter not in _SIZED:
        raise ValueError(
            f"adapter_dim does not apply to adapter={adapter!r}; leave it None "
            f"(it sizes {sorted(_SIZED)})"
        )
    if backbone.kind != "vit":
        if adapter not in RESNET_ADAPTERS:
            raise ValueError(
                f"adapter={adapter!r} needs a ViT backbone; {backbone.spec.name!r} "
                f"is a ResNet (use one of {list(RESNET_ADAPTERS)})"
            )
        if layers is not None:
            raise ValueError("adapter_layers does not apply to a ResNet backbone; leave it None")
        return ResNetTuner(adapter, backbone.visual, backbone.feature_dim)
    visual = backbone.visual
    if adapter in _ATTN_HOOKS:
        _check_vit_blocks(visual, adapter)
    if adapter_dim is None:
        adapter_dim = _auto_size(adapter, n_classes, backbone.n_layers)
    blocks = list(visual.transformer.resblocks)
    mlp_width = blocks[0].mlp.c_fc.out_features if hasattr(blocks[0].mlp, "c_fc") else None
    return Tuner(
        adapter,
        backbone.feature_dim,
        backbone.n_layers,
        None if adapter_dim is None else int(adapter_dim),
        layers=layers,
        mlp_width=mlp_width,
        blocks=blocks if adapter in ("full", "bitfit") else None,
    )
