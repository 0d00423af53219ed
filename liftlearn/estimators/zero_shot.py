"""Zero-shot CLIP as a scikit-learn estimator: the no-training baseline."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..image_sources import carried_class_names, image_labels
from ..exceptions import LiftLearnWarning
from ..nn.backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, get_backbone
from ..nn.heads import DEFAULT_TEMPLATE, text_classifier
from ..nn.networks import ZeroShotNetwork
from ._base import CLIPClassifier, fit_context, prompt_template_constraint

__all__ = ["ZeroShotClassifier"]


class ZeroShotClassifier(CLIPClassifier):
    """Zero-shot CLIP: classify by the similarity of image and class-name
    embeddings; nothing is trained.

    The baseline row of the LIFT+ comparison. It uses the same CLIP
    backbones, prompts and test transforms (TTE included) as
    :class:`~liftlearn.LiftPlusClassifier`; the timm backbones, which have no
    text encoder, are refused by ``fit`` before any work.

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
    device : str or torch.device, default="auto"
        As in :class:`~liftlearn.LiftPlusClassifier`.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        The backbone's compute dtype, as in :class:`~liftlearn.LiftPlusClassifier`.
    num_workers : int or None, default=None
    check_images : {"header", "decode"} or None, default="header"
        Check every image given to ``fit`` or to a prediction method before
        any is used, as in :class:`~liftlearn.LiftPlusClassifier`:
        ``"header"`` reads each file's header, ``"decode"`` decodes it, None
        checks only that the files exist.
    on_bad_image : {"raise", "skip"}, default="raise"
        ``"raise"``: a :class:`~liftlearn.BadImageError` names the first bad
        image, before any prediction. ``"skip"``: ``fit`` leaves bad images
        out of ``class_counts_`` (listed in ``skipped_images_``); prediction
        gives a bad image a row of NaN in ``decision_function`` and
        ``predict_proba`` and -1 in ``predict`` (see :meth:`predict`), with
        one warning saying how many; rows are never dropped.
    verbose : int or bool, default=0

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_names_ : list of str
    class_counts_ : ndarray of shape (n_classes,)
        Images per class in the ``y`` given to ``fit``.
    skipped_images_ : list of (str, str)
        Images of ``fit`` left out by ``on_bad_image="skip"``, with the reason.
    module_ : ZeroShotNetwork
        The torch module: the class embeddings on the shared frozen backbone.
    text_embeddings_ : ndarray of shape (n_classes, embed_dim)
        The normalised class embeddings.
    logit_scale_ : float
        The CLIP model's own ``logit_scale.exp()`` (100 for OpenAI CLIP).
    device_ : torch.device
    """

    _needs_text_encoder = ("zero-shot classification needs a CLIP model (it compares images with "
                           "the text embeddings of the class prompts)")

    def __init__(
        self,
        *,
        backbone=DEFAULT_BACKBONE,
        pretrained=DEFAULT_PRETRAINED,
        class_names=None,
        prompt_template=DEFAULT_TEMPLATE,
        tte=True,
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
        self.class_names = class_names
        self.prompt_template = prompt_template
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
        **CLIPClassifier._parameter_constraints,
        "prompt_template": prompt_template_constraint(ensemble=True),
    }

    _derived_fitted = ("text_embeddings_", "logit_scale_")

    @fit_context
    def fit(self, X, y=None, class_names=None):
        """Record the classes and encode their names; nothing is trained.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column
            The images. Not used to train, but validated (they must exist,
            pass ``check_images`` and match ``y`` in length) so that the
            estimator fits where :class:`~liftlearn.LiftPlusClassifier` would.
        y : array-like of shape (n_samples,) or None
            None takes the labels a torch Dataset or ``datasets.Dataset`` ``X``
            carries. Labels: they give ``classes_`` (with ``class_names``) and
            ``class_counts_``.
        class_names : sequence of str, mapping or None
            Overrides the ``class_names`` parameter; as in
            :meth:`LiftPlusClassifier.fit`, one as long as ``X`` is refused.

        Returns
        -------
        self : ZeroShotClassifier
        """
        spec, device = self._backbone_spec(), self._resolve_device()
        dtype = self._compute_dtype(device)
        paths = self._images(X)
        carried = carried_class_names(paths, y)
        y = image_labels(paths, y)
        labels = self._labels(paths, y, self._class_names_for(class_names, len(paths), carried))
        bad = self._bad_images(paths)
        skipped = [(paths.name(i), reason) for i, reason in bad]
        counts = labels.counts
        if bad:
            warnings.warn(
                f"skipping {len(bad)} unusable training image(s), e.g. {skipped[0][0]!r}: "
                f"{skipped[0][1]} (see skipped_images_)", LiftLearnWarning, stacklevel=3,
            )
            # Nothing is trained: the classes stay, only the counts drop them.
            keep = np.ones(len(paths), dtype=bool)
            keep[[i for i, _ in bad]] = False
            counts = np.bincount(labels.y_encoded[keep], minlength=len(labels.classes))
        backbone = get_backbone(spec, device, dtype=dtype)
        text = text_classifier(backbone, labels.names, self.prompt_template)
        scale = float(backbone.model.logit_scale.detach().exp().cpu())
        self._set_fitted(
            classes_=labels.classes, class_names_=list(labels.names), class_counts_=counts,
            module_=ZeroShotNetwork(backbone, text, scale).to(device), device_=device,
            skipped_images_=skipped,
        )
        return self

    def _fitted_from_module(self, module) -> dict:
        return {
            "text_embeddings_": module.text.detach().cpu().numpy(),
            "logit_scale_": float(module.logit_scale),
        }

    def _empty_module(self, backbone, fitted: dict):
        n_classes = len(fitted["class_names_"])
        dim = backbone.model.text_projection.shape[-1] if backbone.model.text_projection is not None \
            else backbone.model.visual.output_dim
        scale = float(backbone.model.logit_scale.detach().exp().cpu())
        return ZeroShotNetwork(backbone, torch.zeros(n_classes, dim), scale)

    def _upgrade_state(self, state: dict) -> dict:
        if "classes_" in state:
            state.setdefault("skipped_images_", [])  # fitted before on_bad_image existed
        # Releases before 0.1 kept the embeddings and the backbone spec, not
        # a module.
        if "module_" not in state and "text_embeddings_" in state:
            backbone = get_backbone(state.pop("backbone_spec_"), "cpu")
            state["module_"] = ZeroShotNetwork(
                backbone, torch.from_numpy(np.asarray(state["text_embeddings_"])), state["logit_scale_"]
            )
        return state
