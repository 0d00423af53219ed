"""Frozen CLIP image features as a scikit-learn transformer.

``make_pipeline(CLIPFeatures(), LogisticRegression(class_weight="balanced"))``
is the linear-probe baseline in plain scikit-learn; ``CLIPFeatures(adapter_from=
fitted_lift_plus)`` gives the features of a fitted LIFT+ encoder instead.
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._validation import Boolean, Predicate
from ..nn.backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, get_backbone, same_weights
from ..nn.networks import FeatureNetwork
from ..nn.tuners import TUNERS, build_tuner
from ._base import CLIPEstimator, fit_context

__all__ = ["CLIPFeatures"]


def _is_fitted_source(value) -> bool:
    source = getattr(value, "estimator", value)
    return hasattr(source, "fit") and hasattr(source, "get_params")


class CLIPFeatures(TransformerMixin, CLIPEstimator):
    """Image paths -> the CLIP feature that LIFT+ classifies.

    The feature is the pre-projection CLS token after ``ln_post`` (a ViT) or
    the attention-pool output (a ResNet), computed by the frozen encoder or,
    with ``adapter_from``, by the adapted encoder of a fitted
    :class:`~liftlearn.LiftPlusClassifier`.

    Parameters
    ----------
    backbone : str, default="ViT-B-16-quickgelu"
        open_clip model name. Ignored when ``adapter_from`` is given.
    pretrained : str or None, default="openai"
        open_clip tag, checkpoint path, or None for random weights. Ignored
        when ``adapter_from`` is given.
    adapter_from : LiftPlusClassifier, FrozenEstimator or None, default=None
        A fitted estimator whose backbone and adapter produce the features.
        ``clone`` (used by ``cross_validate`` and ``GridSearchCV``) would
        replace a plain fitted estimator by an unfitted copy; wrap it in
        ``sklearn.frozen.FrozenEstimator`` to keep it fitted across clones.
    normalize : bool, default=True
        L2-normalise each feature vector (what a cosine classifier sees).
    tte : bool, default=False
        Average the features of LIFT+'s five test-time crops.
    tte_expand : int, default=24
        With TTE, images are resized to ``resolution + tte_expand`` before
        the five crops (LIFT+'s value).
    batch_size : int, default=128
    device : str or torch.device, default="auto"
        As in :class:`~liftlearn.LiftPlusClassifier`.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        The backbone's compute dtype, as in :class:`~liftlearn.LiftPlusClassifier`.
    num_workers : int or None, default=None
    check_images : {"header", "decode"} or None, default="header"
        Check every image given to :meth:`transform` before any feature is
        computed, as :class:`~liftlearn.LiftPlusClassifier` checks its
        training images: ``"header"`` reads each file's header, ``"decode"``
        decodes it, None checks only that the files exist.
    on_bad_image : {"raise", "skip"}, default="raise"
        ``"raise"``: a :class:`~liftlearn.BadImageError` names the first bad
        image. ``"skip"``: a bad image gets a row of NaN (rows are never
        dropped: row i is image i), with one warning saying how many.
    verbose : int or bool, default=0

    Attributes
    ----------
    module_ : FeatureNetwork
        The torch module: the tuner (``"none"`` or a copy of the fitted
        estimator's, taken by :meth:`fit`) on the shared frozen backbone.
    n_features_out_ : int
        Width of the features.
    tuner_config_ : dict
        The tuner's method, size and blocks (what a model file rebuilds).
    device_ : torch.device

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> probe = make_pipeline(
    ...     CLIPFeatures(backbone="liftlearn-tiny-vit", pretrained=None),
    ...     LogisticRegression(class_weight="balanced", max_iter=1000))
    """

    def __init__(
        self,
        *,
        backbone=DEFAULT_BACKBONE,
        pretrained=DEFAULT_PRETRAINED,
        adapter_from=None,
        normalize=True,
        tte=False,
        tte_expand=24,
        batch_size=128,
        device="auto",
        precision="auto",
        num_workers=None,
        check_images="header",
        on_bad_image="raise",
        verbose=0,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.adapter_from = adapter_from
        self.normalize = normalize
        self.tte = tte
        self.tte_expand = tte_expand
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.check_images = check_images
        self.on_bad_image = on_bad_image
        self.verbose = verbose

    _parameter_constraints: dict = {
        **CLIPEstimator._parameter_constraints,
        "adapter_from": [Predicate(_is_fitted_source, "a fitted liftlearn classifier (or a FrozenEstimator of one)"), None],
        "normalize": [Boolean()],
    }

    _derived_fitted = ("n_features_out_",)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags

    @fit_context
    def fit(self, X=None, y=None):
        """Load the backbone (nothing is learned).

        Parameters
        ----------
        X : ignored
            Accepted so that the transformer fits in a Pipeline.
        y : ignored

        Returns
        -------
        self : CLIPFeatures
        """
        device = self._resolve_device()
        dtype = self._compute_dtype(device)
        if self.adapter_from is not None:
            source = getattr(self.adapter_from, "estimator", self.adapter_from)
            check_is_fitted(source, msg="adapter_from must be a fitted LiftPlusClassifier")
            network = getattr(source, "module_", None)
            if not hasattr(network, "tuner"):
                raise ValueError(
                    f"adapter_from must be a fitted LiftPlusClassifier or ULFineClassifier; "
                    f"a {type(source).__name__} has no adapter"
                )
            # The source's tuner was trained on the weights it holds.
            backbone = same_weights(network.backbone, device, dtype)
            # A copy: the network below is moved to this estimator's device
            # (in place), and the source must keep predicting where it is.
            tuner = copy.deepcopy(network.tuner)
        else:
            backbone = get_backbone(self._backbone_spec(), device, dtype=dtype)
            tuner = build_tuner("none", backbone, n_classes=1)
        self._set_fitted(module_=FeatureNetwork(backbone, tuner, bool(self.normalize)).to(device),
                         device_=device)
        return self

    def _fitted_from_module(self, module) -> dict:
        tuner = module.tuner
        return {
            "n_features_out_": module.backbone.feature_dim,
            # What model files need to rebuild the tuner (stored, not derived).
            "tuner_config_": {
                "adapter": tuner.adapter, "adapter_dim": tuner.adapter_dim,
                "layers": [int(i) for i in tuner.layers],
            },
        }

    def _empty_module(self, backbone, fitted: dict):
        config = fitted["tuner_config_"]
        # An empty list is a tuner without blocks (a whole CLIP ResNet or timm
        # tower, where build_tuner takes no layers): a layered method on a
        # ViT always has at least one block.
        layers = (config["layers"] or None) if TUNERS[config["adapter"]].layered else None
        tuner = build_tuner(config["adapter"], backbone, 1, config["adapter_dim"], layers=layers)
        return FeatureNetwork(backbone, tuner, bool(self.normalize))

    def _upgrade_state(self, state: dict) -> dict:
        # Releases before 0.1 called the fitted module network_.
        if "network_" in state:
            state["module_"] = state.pop("network_")
        return state

    def transform(self, X):
        """Features of the images.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column
            The images (see :mod:`liftlearn.image_sources`). All are checked (``check_images``) before any
            feature is computed.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_), float32
            A row of NaN for an image skipped by ``on_bad_image="skip"``.
        """
        check_is_fitted(self)
        return self._predict_outputs(X).astype(np.float32)

    def _n_outputs(self) -> int:
        return int(self.n_features_out_)

    def get_feature_names_out(self, input_features=None):
        """``clip0 .. clip{D-1}``."""
        check_is_fitted(self)
        return np.asarray([f"clip{i}" for i in range(self.n_features_out_)], dtype=object)
