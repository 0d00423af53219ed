"""The one module that knows open_clip's ViT internals.

Every fine-tuning method reaches the frozen encoder through the hooks of
:class:`~liftlearn.nn.tuners.TunerMethod`; this module runs open_clip's
``VisionTransformer`` (``_embeds``, the ``resblocks``, ``_pool``) and its
pre-LN ``ResidualAttentionBlock`` around the frozen sub-modules and calls
those hooks at their points (``h`` is the residual stream)::

    x = splice(x, prompts(mod))                 # before the block
    a = LN1(x)                                  # bias replaced by biases(mod)
    qkv = qkv(mod, a, a W_in + b_in)            # functional_attention only
    o = attn_out(mod, SDPA(q, k, v) W_out + b_out)
    h = x + ls_1(o)
    m = fc2(mod, fc2(act(fc1(mod, fc1(LN2(h))))))   # fc1 hook: functional_mlp only
    (W_in, W_out, fc1, fc2 weights and biases replaced by projections(mod, frozen))
    m = mlp_out(mod, m)
    m = ls_2(m) [+ parallel(mod, h)]
    out = h + m

Every block of every method runs its self-attention here, as
:func:`attention` (one ``scaled_dot_product_attention`` on the packed
projection), in training and prediction: the selected blocks, the blocks
without a module, a method that does not edit its blocks (:func:`block_forward`),
the private block copies of "full" and the plain frozen tower
(:func:`image_embedding`). open_clip's ``nn.MultiheadAttention`` takes a
slower path: in training it computes q/k/v with ``bmm`` on a sequence-first
view plus a ``.contiguous()`` copy, and under autocast its fused fast path is
off; the two agree to ~1e-6 (README, deliberate deviations). A block this
path does not support (not open_clip's batch-first fused-qkv
``ResidualAttentionBlock``) runs open_clip's own ``block.attention``.
``functional_attention`` only says whether the method's :meth:`qkv` hook and
replacement in/out projections apply; without ``functional_mlp`` a block
runs open_clip's own ``block.mlp``; a method that replaces its blocks runs
``replace_block(mod, x)``. The frozen encoder itself is never modified,
patched or parametrised.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

#: The biases of a block, by the names the ``biases`` hook uses.
BIAS_NAMES = ("ln_1", "in_proj", "out_proj", "ln_2", "c_fc", "c_proj")


def is_vit(visual) -> bool:
    """Whether ``visual`` is a transformer tower (not a CLIP ResNet)."""
    return hasattr(visual, "transformer")


def vit_blocks(visual) -> list:
    """The frozen blocks of a ViT tower, in order."""
    return list(visual.transformer.resblocks)


def mlp_width(block) -> Optional[int]:
    """Hidden width of a block's MLP, or None where it is not open_clip's."""
    return block.mlp.c_fc.out_features if hasattr(block.mlp, "c_fc") else None


def block_bias_sizes(width: int, mlp_width: int) -> dict:
    """Size of each of a block's biases (see :data:`BIAS_NAMES`)."""
    return {
        "ln_1": width, "in_proj": 3 * width, "out_proj": width,
        "ln_2": width, "c_fc": mlp_width, "c_proj": width,
    }


def frozen_block_biases(block) -> dict:
    """A block's own (frozen) biases, by :data:`BIAS_NAMES`."""
    return {
        "ln_1": block.ln_1.bias, "in_proj": block.attn.in_proj_bias,
        "out_proj": block.attn.out_proj.bias, "ln_2": block.ln_2.bias,
        "c_fc": block.mlp.c_fc.bias, "c_proj": block.mlp.c_proj.bias,
    }


def _unsupported(block) -> Optional[str]:
    """Why :func:`attention` cannot run ``block``, or None."""
    from open_clip.transformer import ResidualAttentionBlock

    if not isinstance(block, ResidualAttentionBlock):
        return f"open_clip's ResidualAttentionBlock; this backbone has {type(block).__name__} blocks"
    attn = block.attn
    if not (getattr(attn, "batch_first", False) and attn._qkv_same_embed_dim
            and attn.bias_k is None and not attn.add_zero_attn and attn.dropout == 0.0
            and not hasattr(block, "ln_1_kv")):
        return "batch-first fused-qkv attention without extra key/value biases or dropout"
    return None


def functional_ok(block) -> bool:
    """Whether ``block`` runs through :func:`attention`."""
    return _unsupported(block) is None


def check_vit_blocks(visual, adapter: str, alternatives) -> None:
    """Raise unless every block supports the functional attention and MLP."""
    for block in visual.transformer.resblocks:
        why = _unsupported(block)
        if why is not None:
            raise ValueError(f"adapter={adapter!r} needs {why} (use one of {list(alternatives)})")


def frozen_block_projections(block) -> dict:
    """A block's own (frozen) projection ``(weight, bias)`` pairs by the names
    of the ``projections`` hook."""
    attn, m = block.attn, block.mlp
    return {
        "in_proj": (attn.in_proj_weight, attn.in_proj_bias),
        "out_proj": (attn.out_proj.weight, attn.out_proj.bias),
        "c_fc": (m.c_fc.weight, m.c_fc.bias),
        "c_proj": (m.c_proj.weight, m.c_proj.bias),
    }


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``ln(x)`` with a replacement bias, in fp32 like open_clip's LayerNorm."""
    out = F.layer_norm(x.float(), ln.normalized_shape, ln.weight.float(), bias.float(), ln.eps)
    return out.to(x.dtype)


def attention(method, module, block, a, in_bias, out_bias, proj=None) -> torch.Tensor:
    """open_clip's self-attention re-implemented on the packed projection
    (SDPA), with the method's ``qkv`` and ``attn_out`` hooks (none for
    ``method=None``); ``proj``: replacement ``(weight, bias)`` pairs of the
    ``projections`` hook."""
    attn = block.attn
    proj = proj or {}
    w_in, in_bias = proj.get("in_proj", (attn.in_proj_weight, in_bias))
    w_out, out_bias = proj.get("out_proj", (attn.out_proj.weight, out_bias))
    qkv = F.linear(a, w_in, in_bias)
    if method is not None:
        qkv = method.qkv(module, a, qkv)
    n, length, dim = a.shape
    heads = attn.num_heads
    q, k, v = qkv.view(n, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(q, k, v)
    o = o.transpose(1, 2).reshape(n, length, dim)
    o = F.linear(o, w_out, out_bias)
    return o if method is None else method.attn_out(module, o)


def mlp(method, module, block, z, fc1_bias, fc2_bias, proj=None) -> torch.Tensor:
    """open_clip's MLP run functionally, with the ``fc1`` and ``fc2`` hooks;
    ``proj`` as in :func:`attention`."""
    proj = proj or {}
    w1, fc1_bias = proj.get("c_fc", (block.mlp.c_fc.weight, fc1_bias))
    w2, fc2_bias = proj.get("c_proj", (block.mlp.c_proj.weight, fc2_bias))
    m = F.linear(z, w1, fc1_bias)
    m = method.fc1(module, m)
    m = block.mlp.gelu(m)
    m = F.linear(m, w2, fc2_bias)
    return method.fc2(module, m)


def block_forward(block, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` of an open_clip block through :func:`attention`: the
    blocks without a module, the methods that do not edit their blocks and
    the private block copies of "full"."""
    if not functional_ok(block):
        return block(x)
    attn = block.attn
    h = x + block.ls_1(attention(None, None, block, block.ln_1(x), attn.in_proj_bias, attn.out_proj.bias))
    return h + block.ls_2(block.mlp(block.ln_2(h)))


def run_block(method, module, block, x: torch.Tensor) -> torch.Tensor:
    """One frozen block with ``method``'s module ``module`` in place."""
    if not method.edits_blocks:
        return block_forward(block, x)
    if method.replaces_block:
        return method.replace_block(module, x)
    functional = method.functional_attention or method.functional_mlp
    frozen = frozen_block_biases(block) if functional else None
    new = method.biases(module)
    b = frozen if new is None else {**(frozen or {}), **new}
    proj = method.projections(module, frozen_block_projections(block)) if functional else None
    if new is not None and "ln_1" in new:
        a = _layer_norm(block.ln_1, x, new["ln_1"])
    else:
        a = block.ln_1(x)
    if method.functional_attention:
        o = attention(method, module, block, a, b["in_proj"], b["out_proj"], proj)
    elif functional_ok(block):
        o = attention(method, module, block, a, block.attn.in_proj_bias, block.attn.out_proj.bias)
    else:
        o = method.attn_out(module, block.attention(q_x=a))
    h = x + block.ls_1(o)
    if method.functional_mlp:
        if new is not None and "ln_2" in new:
            z = _layer_norm(block.ln_2, h, new["ln_2"])
        else:
            z = block.ln_2(h)
        m = mlp(method, module, block, z, b["c_fc"], b["c_proj"], proj)
    else:
        m = method.fc2(module, block.mlp(block.ln_2(h)))
    m = method.mlp_out(module, m)
    m = block.ls_2(m)
    p = method.parallel(module, h)
    if p is not None:
        m = m + p
    return h + m


def vit_features(visual, images: torch.Tensor, method, modules, keys) -> torch.Tensor:
    """Pre-projection image features (``ln_post`` of the CLS token) of the
    frozen tower ``visual`` with ``method``'s per-block ``modules`` (keyed by
    block index str; None where the method has none) in the blocks ``keys``.
    A CLIP ResNet tower is run as is."""
    if not is_vit(visual):
        # A CLIP ResNet: the attention-pool output is the feature.
        return visual(images)
    x = visual._embeds(images)
    n_prompts = 0
    for i, block in enumerate(visual.transformer.resblocks):
        key = str(i)
        if key not in keys:
            x = block_forward(block, x)
            continue
        module = None if modules is None else modules[key]
        prompts = method.prompts(module)
        if prompts is not None:
            # LIFT+'s VPT: [CLS, prompts, patches]; a layer with its own
            # prompts drops the previous layer's.
            p = prompts.to(x.dtype).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], p, x[:, 1 + n_prompts:]], dim=1)
            n_prompts = p.shape[1]
        x = run_block(method, module, block, x)
    pooled, _ = visual._pool(x)
    return pooled  # the Tuner applies the method's feature hook after this


def image_embedding(visual, images: torch.Tensor) -> torch.Tensor:
    """``visual(images)`` of the frozen tower (open_clip's image embedding,
    after the projection) with every block through :func:`attention`; a
    CLIP ResNet is run as is."""
    if not is_vit(visual):
        return visual(images)
    pooled = vit_features(visual, images, None, None, frozenset())
    return pooled if visual.proj is None else pooled @ visual.proj
