"""The registry of fine-tuning methods and the :class:`Tuner` container.

A fine-tuning method is one :class:`TunerMethod` subclass, in its own module,
registered by name with :func:`register_tuner`. It declares what it accepts
and where it acts as class attributes, builds its module for one block
(:meth:`TunerMethod.build_block`), and overrides the hooks it needs. The
:class:`Tuner` holds the per-block modules of one method and runs the frozen
encoder with them (through :mod:`._blocks`, the only code that knows
open_clip's block internals).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from . import _blocks

__all__ = ["TUNERS", "Tuner", "TunerMethod", "register_tuner"]


def _pow2(x: float) -> int:
    return 2 ** max(0, int(math.log2(x)))


class TunerMethod:
    """One fine-tuning method: what it accepts, what it builds, where it acts.

    Subclass it, set the class attributes, implement :meth:`build_block` (for
    a method with an :attr:`attribute`) and override the hooks at the points
    where the method acts, then register the class with
    :func:`register_tuner`. The hooks get the method's module of the current
    block (``module``; None for a method without an :attr:`attribute`) and
    return the (new) tensor; the defaults change nothing.

    Attributes
    ----------
    name : str
        The value of the estimators' ``adapter`` parameter.
    description : str
        What the method trains (one line; :data:`ADAPTERS` lists them).
    attribute : str or None
        The :class:`Tuner` attribute that holds the per-block modules, a
        ModuleDict (a ParameterDict when :meth:`build_block` returns
        Parameters) keyed by block index str; part of the state-dict keys.
        None for a method without trainable block modules.
    sized : bool
        Takes ``adapter_dim`` (bottleneck width, rank, prompt length, ...).
    layered : bool
        Takes ``adapter_layers`` (which blocks get the module).
    fixed_layers : tuple of int or None
        The blocks of a method that is not ``layered`` (None: every block).
    resnet : bool
        Applies to CLIP ResNets too, through :class:`ResNetTuner`: a method
        that ``replaces_block`` trains the residual stages of a private copy
        of the whole tower, one that ``trains_biases`` their biases, and
        :meth:`build_pooled` may return a module applied to the pooled
        feature.
    needs_blocks : bool
        :func:`build_tuner` passes the frozen block to :meth:`build_block`.
    edits_blocks : bool
        False: the selected blocks run unchanged (as every block without a
        module: open_clip's block computed through the SDPA path); the method
        acts through :meth:`prompts` only (no other hook is called).
    functional_attention : bool
        The :meth:`qkv` hook and the replacement in/out biases and
        projections apply. Every block runs its attention functionally
        (SDPA on the packed projection) either way; open_clip's own
        ``block.attention`` runs only on blocks that path does not support.
    functional_mlp : bool
        Run the MLP functionally so that :meth:`fc1` and the replacement MLP
        biases apply; False runs open_clip's own ``block.mlp``.
    replaces_block : bool
        The block's module replaces the frozen block: :meth:`replace_block`.
    trains_biases : bool
        :meth:`biases` returns replacement biases (needs both functional
        paths).
    identity_at_init : bool
        The encoder computes exactly the frozen features at initialisation.
    options : tuple of str
        Extra keyword options the method takes (resolved by
        :meth:`resolve_options`, passed to :meth:`build_block` and
        :meth:`build_feature`); empty for most methods.
    """

    name: str = ""
    description: str = ""
    attribute: Optional[str] = None
    sized: bool = False
    layered: bool = False
    fixed_layers: Optional[tuple] = None
    resnet: bool = False
    needs_blocks: bool = False
    edits_blocks: bool = True
    functional_attention: bool = False
    functional_mlp: bool = False
    replaces_block: bool = False
    trains_biases: bool = False
    identity_at_init: bool = True
    options: tuple = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -------------------------------------------------------------- building
    def auto_size(self, n_classes: int, n_layers: int) -> Optional[int]:
        """The automatic ``adapter_dim`` for ``n_classes`` on ``n_layers``
        blocks (a ``sized`` method); None: no size."""
        return None

    def max_size(self, width: int) -> Optional[int]:
        """The largest ``adapter_dim`` a caller may ask for on a backbone of
        this ``width`` (None: no bound), checked before anything is
        allocated. By default the width: a bottleneck or a rank above the
        width adds parameters but no capacity (and ``adapter_dim=10**6``
        would ask for gigabytes)."""
        return width if self.sized else None

    def build_block(
        self,
        *,
        index: int,
        width: int,
        mlp_width: int,
        size: Optional[int],
        block: Optional[nn.Module],
    ):
        """The trainable module (or Parameter) of block ``index``.

        ``width``: residual-stream width; ``mlp_width``: the MLP's hidden
        width; ``size``: ``adapter_dim`` (None unless ``sized``); ``block``:
        the frozen block where the caller has it (always from
        :func:`build_tuner` when ``needs_blocks``), else None.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement build_block")

    def build_pooled(self, feature_dim: int) -> Optional[nn.Module]:
        """A module applied to a CLIP ResNet's pooled feature, or None."""
        return None

    def resolve_options(self, options: dict, *, n_classes: int, n_layers: int, width: int,
                        mlp_width: int) -> dict:
        """The method's :attr:`options` with automatic values filled in
        (``n_layers``: the blocks that get the module). Raise ValueError for a
        bad value."""
        return dict(options)

    def build_feature(self, *, width: int, size: Optional[int], **options) -> Optional[nn.Module]:
        """A trainable module applied to a ViT's pooled (pre-projection)
        image feature by :meth:`feature`, or None."""
        return None

    # ----------------------------------------------------------------- hooks
    def prompts(self, module) -> Optional[torch.Tensor]:
        """Tokens (p, width) inserted after CLS before the block, replacing
        those of the previous block; None: no prompts."""
        return None

    def replace_block(self, module, x: torch.Tensor) -> torch.Tensor:
        """The block's output when ``replaces_block`` (an open_clip block
        copy runs through the SDPA path with ``_blocks.block_forward``, as
        "full" does)."""
        return module(x)

    def biases(self, module):
        """Replacement biases by name (``ln_1``, ``in_proj``, ``out_proj``,
        ``ln_2``, ``c_fc``, ``c_proj``; missing ones stay frozen), or None."""
        return None

    def qkv(self, module, a: torch.Tensor, qkv: torch.Tensor) -> torch.Tensor:
        """The packed ``[q, k, v]`` projection of ``a = LN1(x)``
        (``functional_attention`` only)."""
        return qkv

    def attn_out(self, module, o: torch.Tensor) -> torch.Tensor:
        """The attention output (after the output projection)."""
        return o

    def fc1(self, module, m: torch.Tensor) -> torch.Tensor:
        """The MLP's first projection, before the activation
        (``functional_mlp`` only)."""
        return m

    def fc2(self, module, m: torch.Tensor) -> torch.Tensor:
        """The MLP's second projection (the MLP output)."""
        return m

    def mlp_out(self, module, m: torch.Tensor) -> torch.Tensor:
        """The MLP output after :meth:`fc2`, before the layer scale."""
        return m

    def parallel(self, module, h: torch.Tensor) -> Optional[torch.Tensor]:
        """A branch parallel to the MLP, added after its layer scale; ``h``
        is the residual stream after attention. None: no branch."""
        return None

    def projections(self, module, frozen: dict) -> Optional[dict]:
        """Replacement ``(weight, bias)`` pairs of the block's projections by
        name (``in_proj``, ``out_proj``, ``c_fc``, ``c_proj``; missing ones
        stay frozen) given the frozen pairs ``frozen``, or None
        (``functional_attention`` and ``functional_mlp`` only)."""
        return None

    def feature(self, module, f: torch.Tensor) -> torch.Tensor:
        """The pooled image feature after the :meth:`build_feature` module."""
        return f


#: The registered fine-tuning methods by name, in registration order.
TUNERS: Dict[str, TunerMethod] = {}

_BLOCK_HOOKS = ("biases", "qkv", "attn_out", "fc1", "fc2", "mlp_out", "parallel", "replace_block",
                "projections")


def _overrides(method: TunerMethod, hook: str) -> bool:
    return getattr(type(method), hook) is not getattr(TunerMethod, hook)


def _check_method(method: TunerMethod) -> None:
    """Raise TypeError where a method's declarations contradict each other."""
    name = method.name
    problems = []
    if not isinstance(name, str) or not name:
        problems.append("name must be a non-empty str")
    attr = method.attribute
    if attr is not None and (
        not isinstance(attr, str) or not attr.isidentifier() or attr.startswith("_")
        or hasattr(Tuner, attr) or hasattr(nn.Module(), attr) or attr in _TUNER_STATE
    ):
        problems.append(f"attribute={attr!r} must be a public identifier that Tuner does not use")
    if method.layered and method.fixed_layers is not None:
        problems.append("a layered method has no fixed_layers")
    if _overrides(method, "qkv") and not method.functional_attention:
        problems.append("the qkv hook needs functional_attention")
    if _overrides(method, "fc1") and not method.functional_mlp:
        problems.append("the fc1 hook needs functional_mlp")
    if method.trains_biases != _overrides(method, "biases"):
        problems.append("trains_biases and the biases hook go together")
    if _overrides(method, "projections") and not (method.functional_attention and method.functional_mlp):
        problems.append("the projections hook needs functional_attention and functional_mlp")
    if method.trains_biases and not (method.functional_attention and method.functional_mlp):
        problems.append("trains_biases needs functional_attention and functional_mlp")
    if not method.edits_blocks and (
        method.functional_attention or method.functional_mlp or method.replaces_block
        or any(_overrides(method, h) for h in _BLOCK_HOOKS)
    ):
        problems.append("a method with edits_blocks=False has no block hooks")
    if method.resnet and not (
        method.replaces_block or method.trains_biases or _overrides(method, "build_pooled")
        or (method.fixed_layers is not None and len(method.fixed_layers) == 0)
    ):
        problems.append(
            "resnet=True needs replaces_block, trains_biases, build_pooled or no blocks"
        )
    if problems:
        raise TypeError(f"tuner method {name!r}: " + "; ".join(problems))


def register_tuner(cls):
    """Class decorator: register a :class:`TunerMethod` subclass by its name.

    The registry holds one instance of the class; the class is returned
    unchanged. Raises ValueError for a name already registered and TypeError
    for contradictory declarations.
    """
    if not (isinstance(cls, type) and issubclass(cls, TunerMethod)):
        raise TypeError(f"register_tuner takes a TunerMethod subclass, got {cls!r}")
    method = cls()
    _check_method(method)
    if method.name in TUNERS:
        raise ValueError(f"a tuner method named {method.name!r} is already registered")
    TUNERS[method.name] = method
    return cls


def _tuner_method(adapter: str) -> TunerMethod:
    method = TUNERS.get(adapter)
    if method is None:
        raise ValueError(
            f"tuner method {adapter!r} is not registered; import the module that "
            f"registers it (registered: {sorted(TUNERS)})"
        )
    return method


def _auto_size(adapter: str, n_classes: int, n_layers: int) -> Optional[int]:
    """The automatic size of ``adapter`` (None for methods without one)."""
    method = TUNERS.get(adapter)
    return None if method is None else method.auto_size(n_classes, n_layers)


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


# What a Tuner stores itself (also in pickles written before the registry).
_TUNER_STATE = ("adapter", "adapter_dim", "width", "n_layers", "layers", "method")


class Tuner(nn.Module):
    """The trainable modules inside a ViT image encoder, and its forward.

    The method is looked up in :data:`TUNERS` by :attr:`adapter` whenever it
    is needed, so a pickled tuner holds its modules and settings only.

    Parameters
    ----------
    adapter : str
        A registered method (:data:`TUNERS`).
    width : int
        Width of the encoder's residual stream.
    n_layers : int
        Number of transformer blocks.
    adapter_dim : int or None
        The method's size (bottleneck width, LoRA rank, prompt length);
        ignored by methods without one.
    layers : None, int or sequence of int, default=None
        The blocks that get the module: None all, k the last k, or indices
        (methods that are ``layered``).
    mlp_width : int or None, default=None
        Hidden width of the blocks' MLP; None: ``4 * width``.
    blocks : sequence of modules or None
        The frozen blocks, for methods that build from them (e.g. "full"
        copies them and needs them; "bitfit" copies their biases).
    options : dict or None
        The method's resolved :attr:`TunerMethod.options` (see
        :meth:`TunerMethod.resolve_options`).
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
        options: Optional[dict] = None,
    ):
        super().__init__()
        method = TUNERS.get(adapter)
        if method is None:
            raise ValueError(f"unknown adapter {adapter!r}; choose one of {sorted(TUNERS)}")
        fixed = method.fixed_layers
        if layers is not None and not method.layered:
            where = f" (layer {', '.join(map(str, fixed))} only)" if fixed else "; leave it None"
            raise ValueError(f"adapter_layers does not apply to adapter={adapter!r}{where}")
        if fixed is not None:
            layers = fixed
        self.adapter = adapter
        self.adapter_dim = adapter_dim if method.sized else None
        self.width = width
        self.n_layers = n_layers
        self.layers = () if fixed is not None and len(fixed) == 0 else _check_layers(layers, n_layers)
        mlp_width = mlp_width or 4 * width
        keys = [str(i) for i in self.layers]
        self._keys = frozenset(keys)
        for attr in dict.fromkeys(m.attribute for m in TUNERS.values() if m.attribute):
            setattr(self, attr, None)  # as in tuners pickled before the registry
        if method.sized and (adapter_dim is None or adapter_dim < 1):
            raise ValueError(f"adapter={adapter!r} needs a size >= 1, got {adapter_dim!r}")
        extra = dict(options or {})
        if set(extra) - set(method.options):
            raise ValueError(
                f"adapter={adapter!r} takes no option(s) {sorted(set(extra) - set(method.options))}"
            )
        self.options = extra
        # A module on the pooled feature (None for most methods; tuners
        # pickled before this hook have no attribute: read with getattr).
        self.feature_module = method.build_feature(width=width, size=self.adapter_dim, **extra)
        if method.attribute is not None:
            built = {
                k: method.build_block(
                    index=int(k), width=width, mlp_width=mlp_width, size=self.adapter_dim,
                    block=None if blocks is None else blocks[int(k)], **extra,
                )
                for k in keys
            }
            params = bool(built) and all(isinstance(v, nn.Parameter) for v in built.values())
            setattr(self, method.attribute, (nn.ParameterDict if params else nn.ModuleDict)(built))

    @property
    def method(self) -> TunerMethod:
        """The registered :class:`TunerMethod` named :attr:`adapter`."""
        return _tuner_method(self.adapter)

    def block_modules(self):
        """The per-block modules (keyed by block index str), or None."""
        attr = self.method.attribute
        return None if attr is None else getattr(self, attr, None)

    def extra_repr(self) -> str:
        return f"adapter={self.adapter!r}, adapter_dim={self.adapter_dim}, layers={list(self.layers)}"

    def n_trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def features(self, visual, images: torch.Tensor) -> torch.Tensor:
        """Pre-projection image features: ``ln_post`` of the CLS token.

        Parameters
        ----------
        visual : open_clip.transformer.VisionTransformer
            The frozen image tower.
        images : Tensor of shape (n, 3, H, W)
        """
        method = self.method
        f = _blocks.vit_features(visual, images, method, self.block_modules(), self._keys)
        module = getattr(self, "feature_module", None)
        return f if module is None else method.feature(module, f)
