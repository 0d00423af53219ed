"""Frozen CLIP image features as a scikit-learn transformer.

``make_pipeline(CLIPFeatures(), LogisticRegression(class_weight="balanced"))``
is the linear-probe baseline in plain scikit-learn; ``CLIPFeatures(adapter_from=
fitted_lift_plus)`` gives the features of a fitted LIFT+ encoder instead.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .adapters import build_tuner
from .backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, BackboneSpec, get_backbone
from .data import check_paths, path_input_tags
from .network import predict_images
from .training import resolve_device

__all__ = ["CLIPFeatures"]


class _FeatureNetwork(torch.nn.Module):
    """Images -> (optionally normalised) pre-projection features."""

    def __init__(self, backbone, tuner, normalize: bool):
        super().__init__()
        self.backbone = backbone
        self.tuner = tuner
        self.normalize = normalize

    def forward(self, images):
        f = self.tuner.features(self.backbone.visual, images)
        return F.normalize(f, dim=-1) if self.normalize else f


class CLIPFeatures(TransformerMixin, BaseEstimator):
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
    batch_size : int, default=128
    device : str, default="auto"
    num_workers : int or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    n_features_out_ : int
        Width of the features.
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
        backbone=DEFAULT_BACKBONE,
        pretrained=DEFAULT_PRETRAINED,
        adapter_from=None,
        normalize=True,
        tte=False,
        batch_size=128,
        device="auto",
        num_workers=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.adapter_from = adapter_from
        self.normalize = normalize
        self.tte = tte
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = path_input_tags(super().__sklearn_tags__())
        tags.requires_fit = True
        return tags

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
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} must be a positive int")
        device = resolve_device(self.device)
        if self.adapter_from is not None:
            source = getattr(self.adapter_from, "estimator", self.adapter_from)
            check_is_fitted(source, msg="adapter_from must be a fitted LiftPlusClassifier")
            network = source.module_
            backbone = get_backbone(network.backbone.spec, device)
            tuner = network.tuner
        else:
            backbone = get_backbone(BackboneSpec.create(self.backbone, self.pretrained), device)
            tuner = build_tuner("none", backbone, n_classes=1)
        self.network_ = _FeatureNetwork(backbone, tuner, bool(self.normalize)).to(device)
        self.n_features_out_ = backbone.feature_dim
        self.device_ = device
        return self

    def transform(self, X):
        """Features of the images.

        Parameters
        ----------
        X : sequence of str or os.PathLike
            Image files.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_), float32
        """
        check_is_fitted(self)
        return predict_images(
            self.network_, self.network_.backbone, check_paths(X), tte=bool(self.tte),
            tte_expand=24, batch_size=int(self.batch_size), device=self.device_,  # LIFT+ TTE
            num_workers=self.num_workers, verbose=int(self.verbose),
        ).astype(np.float32)

    def get_feature_names_out(self, input_features=None):
        """``clip0 .. clip{D-1}``."""
        check_is_fitted(self)
        return np.asarray([f"clip{i}" for i in range(self.n_features_out_)], dtype=object)
