"""No tuning: the frozen encoder, for linear probing of the classifier."""

from __future__ import annotations

from ._base import TunerMethod, register_tuner


@register_tuner
class NoneMethod(TunerMethod):
    name = "none"
    description = "nothing in the encoder: the cosine classifier alone (linear probing)"
    fixed_layers = ()
    resnet = True
    edits_blocks = False
