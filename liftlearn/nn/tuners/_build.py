"""build_tuner: the tuner of a registered method on a backbone."""

from __future__ import annotations

from ..backbones import fp32_backbone
from ..timm_backbones import timm_name_kind
from . import _blocks
from ._base import TUNERS, Tuner
from .resnet import ResNetTuner, _resnet_names


#: The methods a timm backbone of the study takes, by its kind (under "full"
#: the whole tower is a private copy whose blocks or residual stages train;
#: "ssf" scales and shifts a ResNet's pooled feature, as LIFT+ does).
TIMM_ADAPTERS = {"vit": ("none", "full"), "resnet": ("none", "ssf", "full")}


def weights_source(adapter: str, backbone):
    """The backbone whose weights :func:`build_tuner` copies for ``adapter``.

    A method that copies the frozen weights into trainable ones
    (``needs_blocks``: "full", "bitfit", "aft") copies their fp32 values
    whatever dtype ``backbone`` is held in
    (:func:`~liftlearn.nn.backbones.fp32_backbone`, which may build the fp32
    copy); other methods get ``backbone`` itself.

    Parameters
    ----------
    adapter : str
    backbone : Backbone

    Returns
    -------
    source : Backbone
    """
    method = TUNERS.get(adapter)
    return fp32_backbone(backbone) if method is not None and method.needs_blocks else backbone


def _source_visual(adapter: str, backbone, source):
    return (weights_source(adapter, backbone) if source is None else source).visual


def check_timm_adapter(name: str, adapter: str, layers=None, adapter_dim=None) -> None:
    """Raise ValueError unless the timm backbone ``name`` takes ``adapter``
    (:data:`TIMM_ADAPTERS`) without ``layers`` and ``adapter_dim``.

    Decided from the name alone, so that the estimators refuse a setting
    before anything runs, with the words :func:`build_tuner` uses.

    Parameters
    ----------
    name : str
        A name of :data:`~liftlearn.nn.timm_backbones.TIMM_BACKBONES`.
    adapter : str
    layers, adapter_dim : object or None
        The ``adapter_layers`` and ``adapter_dim`` asked for (None: not).

    Raises
    ------
    ValueError
    """
    allowed = TIMM_ADAPTERS[timm_name_kind(name)]
    if adapter not in allowed:
        raise ValueError(
            f"adapter={adapter!r} needs an open_clip CLIP tower; the timm backbone "
            f"{name!r} takes {list(allowed)}"
        )
    if layers is not None or adapter_dim is not None:
        raise ValueError("adapter_layers and adapter_dim do not apply to a timm backbone; leave them None")


def _timm_tuner(adapter: str, backbone, layers, adapter_dim, source) -> Tuner:
    check_timm_adapter(backbone.spec.name, adapter, layers, adapter_dim)
    return ResNetTuner(adapter, _source_visual(adapter, backbone, source), backbone.feature_dim)


def build_tuner(adapter: str, backbone, n_classes: int, adapter_dim=None, **options) -> Tuner:
    """The tuner for ``adapter`` on ``backbone``, sized for ``n_classes``.

    Parameters
    ----------
    adapter : str
        A registered method (:data:`TUNERS`; on a ResNet, one that declares
        ``resnet``, :data:`RESNET_ADAPTERS` for the built-in ones).
    backbone : Backbone
    n_classes : int
    adapter_dim : int or None
        Bottleneck width, LoRA rank or prompt length; None uses the method's
        automatic size (LIFT+'s :func:`auto_adapter_dim`,
        :func:`auto_lora_rank`, :func:`auto_prompt_length`, with L the number
        of blocks). Raises for methods without a size.
    layers : None, int or sequence of int
        Keyword option: the blocks that get the module (None all, k the last
        k, or indices). Raises for methods that do not take it ("none",
        "vpt-shallow") and ResNets.
    method_options : dict or None
        Keyword option: the method's own options (its
        :attr:`~TunerMethod.options`, e.g. "aft"'s ``ratio`` and ``loc``),
        resolved by :meth:`~TunerMethod.resolve_options`.
    source : Backbone or None
        Keyword option: :func:`weights_source` of ``adapter`` and
        ``backbone``, looked up by the caller; None looks it up here. A
        caller under :func:`~liftlearn._random.seeded_global_rng` passes it:
        the lookup may build a backbone, which takes the backbone cache's
        lock, and taking that one while holding the global generator's lock
        could deadlock with a thread building a backbone.
    """
    layers = options.pop("layers", None)
    method_options = options.pop("method_options", None) or {}
    source = options.pop("source", None)
    if options:
        raise TypeError(f"build_tuner got unexpected options {sorted(options)}")
    method = TUNERS.get(adapter)
    if method is None:
        raise ValueError(f"unknown adapter {adapter!r}; choose one of {sorted(TUNERS)}")
    if adapter_dim is not None and not method.sized:
        sized = sorted(name for name, m in TUNERS.items() if m.sized)
        raise ValueError(
            f"adapter_dim does not apply to adapter={adapter!r}; leave it None "
            f"(it sizes {sized})"
        )
    if adapter_dim is not None:
        # Before anything is allocated (auto sizes are LIFT+'s own and left alone).
        limit = method.max_size(backbone.feature_dim)
        if limit is not None and adapter_dim > limit:
            raise ValueError(
                f"adapter_dim={adapter_dim} is too large for adapter={adapter!r} on "
                f"{backbone.spec.name!r} (width {backbone.feature_dim}): at most {limit}"
            )
    if backbone.kind == "timm":
        return _timm_tuner(adapter, backbone, layers, adapter_dim, source)
    if backbone.kind != "vit":
        if not method.resnet:
            raise ValueError(
                f"adapter={adapter!r} needs a ViT backbone; {backbone.spec.name!r} "
                f"is a ResNet (use one of {_resnet_names()})"
            )
        if layers is not None:
            raise ValueError("adapter_layers does not apply to a ResNet backbone; leave it None")
        return ResNetTuner(adapter, _source_visual(adapter, backbone, source), backbone.feature_dim)
    visual = backbone.visual
    if method.functional_attention or method.functional_mlp:
        native = [n for n, m in TUNERS.items() if not (m.functional_attention or m.functional_mlp)]
        _blocks.check_vit_blocks(visual, adapter, native)
    if adapter_dim is None:
        adapter_dim = method.auto_size(n_classes, backbone.n_layers)
    blocks = _blocks.vit_blocks(visual)
    if method.options:
        chosen = method.fixed_layers if method.fixed_layers is not None else layers
        n_chosen = len(chosen) if chosen is not None and not isinstance(chosen, int) else (
            chosen or backbone.n_layers)
        method_options = method.resolve_options(
            method_options, n_classes=n_classes, n_layers=n_chosen,
            width=backbone.feature_dim, mlp_width=_blocks.mlp_width(blocks[0]),
        )
    elif method_options:
        raise ValueError(f"adapter={adapter!r} takes no method options {sorted(method_options)}")
    return Tuner(
        adapter,
        backbone.feature_dim,
        backbone.n_layers,
        None if adapter_dim is None else int(adapter_dim),
        layers=layers,
        mlp_width=_blocks.mlp_width(blocks[0]),
        blocks=_blocks.vit_blocks(_source_visual(adapter, backbone, source)) if method.needs_blocks else None,
        options=method_options or None,
    )
