"""Zero-shot CLIP as a scikit-learn estimator: the no-training baseline."""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._labels import resolve_labels
from .backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, BackboneSpec, get_backbone
from .data import check_paths, path_input_tags
from .estimators import _check_predict_params
from .heads import DEFAULT_TEMPLATE, class_prompts
from .network import predict_images
from .training import resolve_device

__all__ = ["ZeroShotClassifier", "text_classifier"]


def _templates(prompt_template) -> list:
    if isinstance(prompt_template, str):
        templates = [prompt_template]
    elif isinstance(prompt_template, (list, tuple)):
        templates = list(prompt_template)
    else:
        templates = []
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise ValueError(
            f"prompt_template={prompt_template!r} must be a str with one '{{}}' where "
            "the class name goes, or a non-empty list of such str (a prompt ensemble)"
        )
    return templates


def text_classifier(backbone, class_names, prompt_template=DEFAULT_TEMPLATE) -> torch.Tensor:
    """Joint-space class embeddings from CLIP's text encoder.

    With several templates (a prompt ensemble) each prompt's embedding is
    L2-normalised, the templates are averaged per class, and the mean is
    normalised again.

    Returns
    -------
    embeddings : Tensor of shape (n_classes, embed_dim), fp32 on the CPU
    """
    per_template = [
        backbone.encode_text(class_prompts(class_names, t)) for t in _templates(prompt_template)
    ]
    return F.normalize(torch.stack(per_template).mean(dim=0), dim=-1)


class _ZeroShotNetwork(nn.Module):
    """Image batch -> ``logit_scale * cos(image embedding, class embedding)``."""

    def __init__(self, backbone, text: torch.Tensor, logit_scale: float):
        super().__init__()
        self.backbone = backbone  # plain attribute: the shared frozen model
        self.register_buffer("text", text)
        self.logit_scale = float(logit_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.backbone.visual(images).float(), dim=-1)
        return self.logit_scale * image @ self.text.T


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """Zero-shot CLIP: classify by the similarity of image and class-name
    embeddings; nothing is trained.

    The baseline row of the LIFT+ comparison. It uses the same backbones,
    prompts and test transforms (TTE included) as
    :class:`~liftlearn.LiftPlusClassifier`.

    Parameters
    ----------
    backbone : str, default="ViT-B-16-quickgelu"
    pretrained : str or None, default="openai"
    class_names : sequence of str, mapping or None, default=None
        As in :class:`~liftlearn.LiftPlusClassifier`; a zero-shot model needs
        real names to be useful.
    prompt_template : str or list of str, default="a photo of a {}."
        A template, or a list of templates whose normalised text embeddings
        are averaged per class (a prompt ensemble).
    tte : bool, default=True
        Test-time ensembling over five crops.
    tte_expand : int, default=24
    batch_size : int, default=128
        Images per forward pass.
    device : str, default="auto"
    num_workers : int or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_names_ : list of str
    class_counts_ : ndarray of shape (n_classes,)
        Images per class in the ``y`` given to ``fit``.
    text_embeddings_ : ndarray of shape (n_classes, embed_dim)
        The normalised class embeddings.
    logit_scale_ : float
        The CLIP model's own ``logit_scale.exp()`` (100 for OpenAI CLIP).
    backbone_spec_ : BackboneSpec
        The backbone the embeddings came from (used by ``predict``).
    device_ : torch.device
    """

    def __init__(
        self,
        backbone=DEFAULT_BACKBONE,
        pretrained=DEFAULT_PRETRAINED,
        class_names=None,
        prompt_template=DEFAULT_TEMPLATE,
        tte=True,
        tte_expand=24,
        batch_size=128,
        device="auto",
        num_workers=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.class_names = class_names
        self.prompt_template = prompt_template
        self.tte = tte
        self.tte_expand = tte_expand
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.verbose = verbose

    def __sklearn_tags__(self):
        return path_input_tags(super().__sklearn_tags__())

    def _validate_params(self):
        _templates(self.prompt_template)
        _check_predict_params(self)
        return BackboneSpec.create(self.backbone, self.pretrained), resolve_device(self.device)

    def fit(self, X, y, class_names=None):
        """Record the classes and encode their names; nothing is trained.

        Parameters
        ----------
        X : sequence of str or os.PathLike
            Image files. Not used to train, but validated (they must exist and
            match ``y`` in length) so that the estimator fits where
            :class:`~liftlearn.LiftPlusClassifier` would.
        y : array-like of shape (n_samples,)
            Labels: they give ``classes_`` (with ``class_names``) and
            ``class_counts_``.
        class_names : sequence of str, mapping or None
            Overrides the ``class_names`` parameter.

        Returns
        -------
        self : ZeroShotClassifier
        """
        spec, device = self._validate_params()
        paths = check_paths(X)
        labels = resolve_labels(y, class_names if class_names is not None else self.class_names)
        if len(labels.y_encoded) != len(paths):
            raise ValueError(
                f"X has {len(paths)} images but y has {len(labels.y_encoded)} labels"
            )
        backbone = get_backbone(spec, device)
        text = text_classifier(backbone, labels.names, self.prompt_template)
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)
        self.classes_ = labels.classes
        self.class_names_ = labels.names
        self.class_counts_ = labels.counts
        self.text_embeddings_ = text.numpy()
        self.logit_scale_ = float(backbone.model.logit_scale.detach().exp().cpu())
        self.backbone_spec_ = spec
        self.device_ = device
        return self

    def decision_function(self, X):
        """``logit_scale_`` times the cosine similarity of each image with each
        class embedding (averaged over the TTE views when ``tte`` is on).

        Returns
        -------
        logits : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        paths = check_paths(X)
        backbone = get_backbone(self.backbone_spec_, self.device_)
        network = _ZeroShotNetwork(
            backbone, torch.from_numpy(self.text_embeddings_), self.logit_scale_
        ).to(self.device_)
        return predict_images(
            network, backbone, paths, tte=bool(self.tte), tte_expand=int(self.tte_expand),
            batch_size=int(self.batch_size), device=self.device_,
            num_workers=self.num_workers, verbose=int(self.verbose),
        )

    def predict_proba(self, X):
        """Softmax of :meth:`decision_function`, columns in ``classes_`` order."""
        check_is_fitted(self)
        return softmax(self.decision_function(X).astype(np.float64), axis=1)

    def predict(self, X):
        """The class whose name embedding is most similar to each image."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
