"""CoOp: learnable context tokens in CLIP's text prompts (Zhou et al., 2022),
as LIFT+'s code runs it.

The prompt of class j is a template whose context tokens are replaced by
learned vectors shared by all classes; the class token sits at the front,
in the middle or at the end (``"X X X X {}."`` with ``end``), or the context
starts from the token embeddings of a template such as ``"a photo of a {}."``
(whose context is then ``a photo of a`` and the final ``.``). Logits are
CLIP's: ``exp(logit_scale) * cos(image embedding, text embedding)``, with the
text embeddings recomputed through the frozen text tower in every forward.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, _open_clip, _pooled_length, encode_tokens
from .networks import SharedBackboneNetwork
from .tuners import Tuner

__all__ = ["CLASS_POSITIONS", "CoOpNetwork", "PromptLearner", "context_template"]

CLASS_POSITIONS = ("end", "middle", "front")


def context_template(n_ctx: int, class_position: str):
    """LIFT+'s random-context template and the context's relative locations.

    Locations count text tokens between the start and end tokens: ``k >= 0``
    from the first, ``k < 0`` from the last (``-1`` is the final ``.``).
    """
    if class_position == "front":
        return "{}" + " X" * n_ctx + ".", list(range(-n_ctx - 1, -1))
    if class_position == "middle":
        left, right = n_ctx // 2, (n_ctx + 1) // 2
        return "X " * left + "{}" + " X" * right + ".", list(range(left)) + list(range(-right - 1, -1))
    if class_position == "end":
        return "X " * n_ctx + "{}.", list(range(n_ctx))
    raise ValueError(f"class_position={class_position!r} must be one of {CLASS_POSITIONS}")


def _tokenize(backbone: Backbone, texts):
    return _open_clip().get_tokenizer(backbone.spec.name)(list(texts))


def _n_text_tokens(backbone: Backbone, text: str) -> int:
    tokens = _tokenize(backbone, [text])[0]
    return int(tokens.argmax()) - 1  # between the start and end tokens


def _init_locations(backbone: Backbone, template: str) -> list:
    """Context locations of an initialisation template: every token but the
    class name's (``"a photo of a {}."`` gives ``[0, 1, 2, 3, -1]``)."""
    prefix, _, suffix = template.partition("{}")
    n_prefix = _n_text_tokens(backbone, prefix.strip()) if prefix.strip() else 0
    n_suffix = _n_text_tokens(backbone, suffix.strip()) if suffix.strip() else 0
    return list(range(n_prefix)) + list(range(-n_suffix, 0))


def _absolute(tokens: torch.Tensor, locations) -> torch.Tensor:
    """Token positions of the relative ``locations`` in each tokenised prompt."""
    n_text = tokens.argmax(dim=-1, keepdim=True) - 1  # start token at 0, end at argmax
    loc = torch.as_tensor(locations, dtype=torch.int64)[None]
    return loc % n_text + 1


class PromptLearner(nn.Module):
    """The learned context and the tokenised prompts of every class.

    Parameters
    ----------
    tokens : LongTensor of shape (n_classes, context_length)
        The tokenised prompts (a buffer).
    index : LongTensor of shape (n_classes, n_ctx)
        Where the context goes in each prompt (a buffer).
    context : Tensor of shape (n_ctx, width)
        Initial context vectors (the only trainable parameter).
    """

    def __init__(self, tokens: torch.Tensor, index: torch.Tensor, context: torch.Tensor):
        super().__init__()
        self.register_buffer("tokens", tokens.long())
        self.register_buffer("index", index.long())
        self.context = nn.Parameter(context.detach().clone().float())

    def text_features(self, model) -> torch.Tensor:
        """Joint-space text embeddings (not normalised) through the frozen
        text tower of the open_clip ``model``: ``model.encode_text`` with the
        context vectors in place of the context tokens' embeddings, cut to
        the longest prompt as :func:`~liftlearn.nn.backbones.encode_tokens`
        cuts every text encoding."""
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(self.tokens).to(cast)
        rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(self.index)
        ctx = self.context.to(x.dtype)[None].expand(x.shape[0], -1, -1)
        x = x.index_put((rows, self.index), ctx)  # out of place: autograd reaches ctx
        # The prompts' length is found once (a device sync), not every step.
        length = getattr(self, "_length", None)
        if length is None:
            length = self._length = _pooled_length(model, self.tokens) or self.tokens.shape[1]
        return encode_tokens(model, self.tokens, embedded=x, length=length)

    @classmethod
    def build(cls, backbone: Backbone, class_names: Sequence[str], n_ctx: int,
              class_position: str, init_template: Optional[str], generator=None) -> "PromptLearner":
        """LIFT+'s ``add_learnable_context``: random N(0, 0.02) context of
        ``n_ctx`` tokens around the class name at ``class_position``, or (with
        ``init_template``) the template's own token embeddings as context."""
        names = [str(n).replace("_", " ") for n in class_names]
        model = backbone.model
        width = model.token_embedding.weight.shape[1]
        if init_template is None:
            template, locations = context_template(n_ctx, class_position)
            context = torch.randn(len(locations), width, generator=generator) * 0.02
        else:
            template, locations = init_template, _init_locations(backbone, init_template)
            if not locations:
                raise ValueError(f"context_init={init_template!r} has no context tokens")
            init_tokens = _tokenize(backbone, [template])
            with torch.no_grad():
                emb = model.token_embedding(init_tokens.to(backbone.device))[0].float().cpu()
            context = emb[_absolute(init_tokens, locations)[0]]
        tokens = _tokenize(backbone, [template.format(n) for n in names])
        # The tokenizer cuts a prompt longer than the context and ends it
        # there; the context positions, counted from the end token, would
        # then land on the class name's tokens.
        cut = (tokens.argmax(dim=-1) == tokens.shape[1] - 1).nonzero().flatten().tolist()
        if cut:
            raise ValueError(
                f"the prompt of class {class_names[cut[0]]!r} fills the text encoder's context of "
                f"{tokens.shape[1]} tokens, so the learned context would overwrite the class name; "
                "shorten the name (or the context)"
            )
        return cls(tokens, _absolute(tokens, locations), context)


class CoOpNetwork(SharedBackboneNetwork):
    """Image batch -> CLIP logits against the learned prompts.

    Parameters
    ----------
    backbone : Backbone
    tuner : Tuner
        The image encoder's tuner ("none": the frozen encoder, CoOp's default).
    prompts : PromptLearner
    """

    def __init__(self, backbone: Backbone, tuner: Tuner, prompts: PromptLearner):
        super().__init__(backbone)
        self.tuner = tuner
        self.prompts = prompts
        self.logit_scale = float(backbone.model.logit_scale.detach().exp())

    @property
    def device(self) -> torch.device:
        return self.prompts.context.device

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        f = self.tuner.features(self.backbone.visual, images)
        if self.backbone.kind == "vit":
            f = f @ self.backbone.visual.proj.to(f.dtype)
        return f

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_embeddings(images).float(), dim=-1)
        text = F.normalize(self.prompts.text_features(self.backbone.model).float(), dim=-1)
        return self.logit_scale * image @ text.T
