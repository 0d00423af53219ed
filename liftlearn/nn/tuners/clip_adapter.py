"""CLIP-Adapter (Gao et al., 2021) as LIFT+ runs it: a residual bottleneck
on the image feature, ``f + up(relu(down(LN(f))))``, bottleneck 4.

LIFT+'s ``Adapter`` module: LayerNorm, a Kaiming-uniform down-projection with
zero bias, ReLU and an all-zero up-projection, so the encoder's features are
unchanged at initialisation. Here it acts on the pooled pre-projection
feature, the one liftlearn's classifiers read (see the README's deviations).
"""

from __future__ import annotations

from ._base import TunerMethod, register_tuner
from .adapter import Adapter

__all__ = ["CLIP_ADAPTER_DIM"]

#: LIFT+'s ``clip_adapter_dim``.
CLIP_ADAPTER_DIM = 4


@register_tuner
class CLIPAdapterMethod(TunerMethod):
    name = "clip-adapter"
    description = "CLIP-Adapter: residual bottleneck (width 4) on the pooled image feature"
    sized = True
    fixed_layers = ()
    edits_blocks = False

    def auto_size(self, n_classes, n_layers):
        return CLIP_ADAPTER_DIM

    def build_feature(self, *, width, size, **options):
        return Adapter(width, size)

    def feature(self, module, f):
        return f + module(f)
