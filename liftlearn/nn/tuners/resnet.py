"""The tuner of a CLIP ``ModifiedResNet`` tower: the one module that knows
open_clip's ResNet internals.

A method applies to ResNets where it declares ``resnet = True``; what it
trains there follows from its other declarations (see
:class:`~liftlearn.nn.tuners.TunerMethod`): ``replaces_block`` trains the
residual stages of a private copy of the whole tower, ``trains_biases``
trains the biases of the residual stages, and ``build_pooled`` may give a module
applied to the pooled feature.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._base import TUNERS, Tuner


def _resnet_names() -> list:
    return [name for name, m in TUNERS.items() if m.resnet]


def full_tuning_parts(tower) -> list:
    """The modules of a whole-tower copy that "full" trains, as LIFT+'s
    ``unfreeze_params`` (``models/models.py``): a timm ViT's ``blocks``
    (``PEFT_ViT`` leaves the patch embedding, CLS token, position embedding
    and final LayerNorm frozen, as liftlearn's CLIP ViT tuner does), a
    ResNet's residual stages ``layer1`` .. ``layer4`` (``PEFT_RN`` leaves the
    stem and the pooling, CLIP's attention pool included, frozen)."""
    blocks = getattr(tower, "blocks", None)
    if blocks is not None:
        return [blocks]
    return [getattr(tower, f"layer{i}") for i in range(1, 5)]


class ResNetTuner(Tuner):
    """The trainable modules for a CLIP ``ModifiedResNet`` image tower.

    "none": the frozen tower; "ssf": a scale and shift of the attention-pool
    output; "bitfit": copies of every bias of the tower (BatchNorm and
    attention pool; the convolutions have none), of which those of the
    residual stages train, run functionally with the frozen weights;
    "full": a private deep copy of the whole tower, of which
    :func:`full_tuning_parts` train (the residual stages; a timm ViT's
    blocks). The BatchNorm statistics stay frozen (eval mode) in every case.
    """

    def __init__(self, adapter: str, visual=None, feature_dim: Optional[int] = None):
        nn.Module.__init__(self)
        method = TUNERS.get(adapter)
        if method is None or not method.resnet:
            raise ValueError(
                f"adapter={adapter!r} does not apply to a CLIP ResNet; choose one "
                f"of {_resnet_names()}"
            )
        self.adapter = adapter
        self.adapter_dim = None
        self.layers = ()
        self._keys = frozenset()
        # The attribute names are those of model files written before the
        # registry ("pooled_ssf" holds any method's pooled-feature module).
        self.pooled_ssf = method.build_pooled(feature_dim)
        self.tower = None
        self.biases = None
        if method.replaces_block:
            # The whole tower is copied (model files hold it whole), but
            # only LIFT+'s parts of it train; in fp32 (see full.py).
            self.tower = copy.deepcopy(visual).float().requires_grad_(False)
            for part in full_tuning_parts(self.tower):
                part.requires_grad_(True)
            self.tower.eval()
        elif method.trains_biases:
            # Every bias of the tower has its copy (model files hold them
            # all), but only those of the residual stages train, as LIFT+'s
            # unfreeze_bias (PEFT_RN: self.blocks, layer1 .. layer4); the
            # stem's and the attention pool's stay the pretrained values.
            self.biases = nn.ParameterDict(
                {
                    name.replace(".", "__"): nn.Parameter(p.detach().clone().float(),
                                                          requires_grad=name.startswith("layer"))
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
            x, bn.running_mean, bn.running_var, bn.weight, self._bias(name).to(bn.weight.dtype),
            False, 0.0, bn.eps,  # one dtype: the frozen tower's (fp32 bias, bf16 backbone)
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
