"""ULFine: long-tailed semi-supervised learning on top of LIFT+.

:class:`ULFineClassifier` takes labeled images plus unlabeled ones marked
``y == -1`` (scikit-learn's semi-supervised convention).  It is LIFT+ (same
frozen CLIP image encoder, adapters, semantic-aware initialisation,
minimalist crops for the labeled images, logit adjustment, test-time
ensembling) with three additions, each of which a parameter switches off:

- FixMatch pseudo-labels: the prediction on a weak view (resize + centre
  crop, flip, small translation) of an unlabeled image becomes its hard
  label when confident enough, and the loss is taken on a strong view (the
  weak view + RandAugment with random magnitudes + Cutout);
- Prototype Adaptive Fitting (PAF): a second, gradient-free head of textual
  prototypes, moved towards the visual prototypes of the labeled data with
  a per-class momentum set by the predicted class distribution of the
  unlabeled data, plus an orthogonality constraint;
- Dual Logit Fusion (DLF): predictions and pseudo-labels from the fusion of
  the textual-prototype logits with the (logit-adjusted) linear head's.

ULFine's paper (Zhang, Li, Geng & Chen, 2025) has no public code and only
partly public formulas.  What is known (the abstract; a review's reading of
the PAF update) and what is **liftlearn's reconstruction** is documented
per part in :mod:`liftlearn.nn.ulfine` and in the parameters below; every
reconstructed choice is a parameter.

With ``paf=False, dlf=False`` the class runs FixMatch + lightweight
fine-tuning (``adapter="adaptformer"``), FixMatch + linear probing
(``adapter="none"``) or FixMatch + full fine-tuning (``adapter="full"``,
a private copy of the blocks): the paper's study of LP, LFT and FFT.
``paf=True, dlf=False`` (the PAF-only ablation) predicts from the textual
head, the only head PAF moves.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from .._labels import unlabeled_mask
from .._validation import Boolean, Interval, Options
from ..data import SSLDataset
from ..engine import ULFineTask
from ..nn.backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED
from ..nn.heads import DEFAULT_TEMPLATE, CosineClassifier
from ..nn.networks import ULFineNetwork
from ..transforms import mda_min_scale, strong_transform, train_transform, weak_transform
from ._base import _mark_unpredicted
from ._fine_tuned import FineTunedClassifier

__all__ = ["ULFineClassifier"]


class ULFineClassifier(FineTunedClassifier):
    """ULFine: LIFT+ with unlabeled images, PAF and DLF (long-tailed SSL).

    ``fit(X, y)`` takes unlabeled images marked ``y == -1`` (object dtype
    for string labels, as in :mod:`sklearn.semi_supervised`); ``-1`` is
    never a class.  Everything LIFT+ does, this does too; the parameters
    shared with :class:`~liftlearn.LiftPlusClassifier` mean the same
    (``epochs`` counts passes over the *labeled* images unless
    ``max_steps`` is set; ``batch_size`` labeled images per step, with
    ``unlabeled_ratio`` times as many unlabeled ones).  The parameters below
    marked *ours* are liftlearn's reconstruction of what the paper leaves
    unknown; *paper* marks what its abstract states and *review* what a
    third-party review of it reports (second hand).

    Views: labeled images get LIFT+'s minimalist crop (its schedule over
    ``epochs``). Unlabeled images get FixMatch's two views: the **weak**
    view (the whole image resized to the encoder's resolution, centre
    crop, horizontal flip with probability 1/2, translation by up to
    12.5% of the side with a reflected border: :func:`~liftlearn.transforms.weak_transform`)
    proposes the pseudo-label; the **strong** view (the weak view, then
    ``randaugment_ops`` RandAugment operations each applied with
    probability 1/2 at a random magnitude up to ``randaugment_magnitude``,
    then a ``cutout`` square: :func:`~liftlearn.transforms.strong_transform`)
    takes the loss.

    Running estimates (visual prototypes, ``P_u``, the PAF update and the
    orthogonality step) change once per optimizer step, from the whole
    logical batch, so ``device_batch_size`` does not change the result.

    Parameters
    ----------
    backbone, pretrained, adapter, adapter_dim, adapter_layers, class_names, \
epochs, batch_size, device_batch_size, lr, momentum, weight_decay, tau, scale, \
prompt_template, mda_schedule, tte, tte_expand, device, precision, num_workers, compile, \
check_images, on_bad_image, checkpoint_dir, validation_fraction, callbacks, \
random_state, verbose
        As in :class:`~liftlearn.LiftPlusClassifier`, on the same training
        engine (CLIP backbones only: its textual prototypes need a text
        encoder, so a timm backbone is refused before any work). ``tau`` also applies to the unlabeled loss, with the prior of
        labeled plus pseudo-labeled images. ``compile`` compiles the encoder's
        forward; ``checkpoint_dir`` also saves the pseudo-label statistics and
        prototypes, so a resumed fit ends with the same model. ``validation_fraction``
        holds out labeled images only (``transduction_`` gives them -1).

        Training length: the paper's is not public. The default, 5 epochs
        over the labeled images, is LIFT+'s; on the standard CIFAR-10-LT
        split (N_1=1500, imbalance 100: 3,720 labeled images) it is about
        150 optimizer steps of 128, and PAF's effect grows with the number
        of updates. ``max_steps`` sets the length as a step budget instead.
    max_steps : int or None, default=None
        *Ours*: total optimizer steps, spread evenly over the ``epochs``
        (each epoch then draws ``batch_size`` labeled images per step, in
        shuffled passes over the labeled set, each draw with fresh views);
        ``epochs`` still sets the stages of the cosine learning-rate and
        crop schedules. Must be at least ``epochs``. To count epochs over
        the unlabeled set instead, use
        ``max_steps = E * ceil(n_unlabeled / (unlabeled_ratio * batch_size))``.
        None: ``epochs`` passes over the labeled images.
    pseudo_label : bool, default=True
        Train on confident pseudo-labels of the unlabeled images (FixMatch).
        False ignores the unlabeled images.
    threshold : float, default=0.7
        Confidence (softmax of the weak view's prediction logits) a
        pseudo-label needs. *Ours*: public LTSSL codebases use 0.95
        (FixMatch, DASO, ACR: models trained from scratch) and 0.6 (LoFT,
        CLIP-based); 0.7 is our choice between them, not a published value.
    unlabeled_ratio : int, default=2
        Unlabeled images per labeled image in a step (FixMatch's mu).
        DASO's CIFAR-LT configurations use 2.
    unlabeled_weight : float, default=1.0
        Weight of the unlabeled loss (FixMatch's lambda_u; DASO's 1).
    randaugment_ops : int, default=2
        RandAugment operations drawn per strong view, each applied with
        probability 1/2 (FixMatch's ``RandAugmentMC(n=2)``).
    randaugment_magnitude : int, default=27
        Largest RandAugment magnitude, 1..30 (torchvision's scale); each
        operation draws its own magnitude uniformly from
        ``1..randaugment_magnitude`` (FixMatch draws 1..9 of 10: the default
        spans the same range).
    cutout : float, default=0.5
        Side of the strong view's Cutout square as a fraction of the image
        side (FixMatch's 16 of 32 pixels); 0 disables it.
    paf : bool, default=True
        Prototype Adaptive Fitting of the textual prototypes (*review*: the
        update ``c_t <- (1 - a_k) c_t + a_k c_v``, ``a_k = m P_u[k] / max P_u``,
        every step). False keeps them at the semantic-aware (zero-shot)
        initialisation.
    paf_momentum : float, default=0.01
        PAF's base momentum m (*ours*: the paper's value is unknown).
    ema_momentum : float, default=0.1
        *Ours*: weight of each optimizer step's batch in the moving averages
        of the visual prototypes and of the unlabeled class prior ``P_u``
        (the histogram of confident pseudo-labels).
    orthogonality_target : {"text", "linear"}, default="text"
        Where PAF's orthogonality constraint acts. *Review*: the paper lists
        it under PAF, with the textual prototypes, so ``"text"`` is the
        default: after each PAF update, a gradient-free step
        :func:`~liftlearn.nn.ulfine.orthogonality_step` of rate
        ``orthogonality_weight`` pushes the textual prototypes apart.
        ``"linear"`` instead adds ``orthogonality_weight`` times the mean
        squared cosine similarity of the linear head's class vectors to the
        loss (liftlearn's earlier reading). Both formulas are *ours*: the
        paper's is unknown. Applies only with ``paf=True``.
    orthogonality_weight : float, default=0.01
        *Ours*: the step rate (``"text"``; the default equals
        ``paf_momentum``'s, so that neither update overrides the other) or
        the loss weight (``"linear"``). 0 switches the constraint off.
    dlf : bool, default=True
        Dual Logit Fusion. False predicts and pseudo-labels with one head:
        the textual one when ``paf=True`` (the PAF-only ablation: the
        linear head still trains the adapter, but PAF acts on predictions
        only through the textual head), the linear one when ``paf=False``.
    fusion_weight : float, default=0.5
        *Ours*: DLF logits are ``(1 - w) * textual + w * linear``.

    Attributes
    ----------
    classes_, class_names_, module_, adapter_dim_, n_adapter_params_, \
trainable_fraction_, n_trainable_params_, device_
        As in :class:`~liftlearn.LiftPlusClassifier`; ``module_`` is a
        :class:`ULFineNetwork`.
    class_counts_ : ndarray of shape (n_classes,)
        Labeled training images per class.
    n_unlabeled_ : int
    transduction_ : ndarray of shape (n_samples,)
        The label each training image had at the end: its own for labeled
        images; for unlabeled ones the pseudo-label from the last time the
        image was drawn if it was confident, else -1; -1 also for images
        left out of training (skipped by ``on_bad_image="skip"``, held out by
        ``validation_fraction``). Object dtype with string classes.
    unlabeled_prior_ : ndarray of shape (n_classes,)
        Estimated class distribution of the unlabeled data (``P_u``, the
        moving average of the confident pseudo-labels' histogram); uniform
        when no pseudo-label was ever kept.
    class_prior_ : ndarray of shape (n_classes,)
        The prior of labeled plus pseudo-labeled images used by the logit
        adjustment in the last epoch.
    history_ : list of dict
        Per epoch: ``epoch``, ``loss``, ``loss_labeled``, ``loss_unlabeled``,
        ``n_pseudo_labels`` (confident pseudo-labels drawn),
        ``pseudo_label_rate`` (their share of unlabeled draws),
        ``labeled_accuracy`` (prediction logits on the labeled training
        crops),
        ``lr``, ``seconds`` and the validation entries of
        :class:`~liftlearn.LiftPlusClassifier`.

    Examples
    --------
    >>> import numpy as np
    >>> from liftlearn.semi_supervised import ULFineClassifier
    >>> from liftlearn.datasets import load_cifar10_lt_sample
    >>> X, y, names = load_cifar10_lt_sample("train")
    >>> y_ssl = np.where(np.arange(len(y)) % 2 == 0, y, -1)
    >>> clf = ULFineClassifier(backbone="liftlearn-tiny-vit", pretrained=None,
    ...                        epochs=1, random_state=0)
    >>> clf.fit(X[::10], y_ssl[::10], class_names=names).predict(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        *,
        backbone=DEFAULT_BACKBONE,
        pretrained=DEFAULT_PRETRAINED,
        adapter="adaptformer",
        adapter_dim=None,
        adapter_layers=None,
        class_names=None,
        epochs=5,
        batch_size=128,
        device_batch_size=None,
        lr=0.02,
        momentum=0.9,
        weight_decay=5e-4,
        tau=1.0,
        scale=25.0,
        prompt_template=DEFAULT_TEMPLATE,
        mda_schedule="convex",
        tte=True,
        tte_expand=24,
        device="auto",
        precision="auto",
        num_workers=None,
        compile=False,
        check_images="header",
        on_bad_image="raise",
        checkpoint_dir=None,
        validation_fraction=None,
        callbacks=None,
        random_state=None,
        verbose=0,
        pseudo_label=True,
        threshold=0.7,
        unlabeled_ratio=2,
        unlabeled_weight=1.0,
        randaugment_ops=2,
        randaugment_magnitude=27,
        cutout=0.5,
        paf=True,
        paf_momentum=0.01,
        ema_momentum=0.1,
        orthogonality_target="text",
        orthogonality_weight=0.01,
        dlf=True,
        fusion_weight=0.5,
        max_steps=None,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.adapter = adapter
        self.adapter_dim = adapter_dim
        self.adapter_layers = adapter_layers
        self.class_names = class_names
        self.epochs = epochs
        self.batch_size = batch_size
        self.device_batch_size = device_batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.tau = tau
        self.scale = scale
        self.prompt_template = prompt_template
        self.mda_schedule = mda_schedule
        self.tte = tte
        self.tte_expand = tte_expand
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.compile = compile
        self.check_images = check_images
        self.on_bad_image = on_bad_image
        self.checkpoint_dir = checkpoint_dir
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose
        self.pseudo_label = pseudo_label
        self.threshold = threshold
        self.unlabeled_ratio = unlabeled_ratio
        self.unlabeled_weight = unlabeled_weight
        self.randaugment_ops = randaugment_ops
        self.randaugment_magnitude = randaugment_magnitude
        self.cutout = cutout
        self.paf = paf
        self.paf_momentum = paf_momentum
        self.ema_momentum = ema_momentum
        self.orthogonality_target = orthogonality_target
        self.orthogonality_weight = orthogonality_weight
        self.dlf = dlf
        self.fusion_weight = fusion_weight
        self.max_steps = max_steps

    _task_type = ULFineTask

    _needs_text_encoder = ("ULFine needs a CLIP model (its textual prototypes and semantic "
                           "initialisation come from the text encoder)")

    _parameter_constraints: dict = {
        **FineTunedClassifier._parameter_constraints,
        "pseudo_label": [Boolean()],
        "threshold": [Interval(Real, 0, 1)],
        "unlabeled_ratio": [Interval(Integral, 1)],
        "unlabeled_weight": [Interval(Real, 0)],
        "randaugment_ops": [Interval(Integral, 0)],
        "randaugment_magnitude": [Interval(Integral, 1, 30)],
        "cutout": [Interval(Real, 0, 1)],
        "paf": [Boolean()],
        "paf_momentum": [Interval(Real, 0, 1)],
        "ema_momentum": [Interval(Real, 0, 1, closed="right")],
        "orthogonality_target": [Options(("text", "linear"))],
        "orthogonality_weight": [Interval(Real, 0)],
        "dlf": [Boolean()],
        "fusion_weight": [Interval(Real, 0, 1)],
        "max_steps": [Interval(Integral, 1), None],
    }

    _allow_unlabeled = True

    def fit(self, X, y=None, class_names=None, *, validation_data=None):
        """Fit on labeled images and unlabeled ones marked ``y == -1``.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column
            The images (see :mod:`liftlearn.image_sources`).
        y : array-like of shape (n_samples,)
            Integer or string labels; -1 marks an unlabeled image (use an
            object array for string labels). At least one image must be
            labeled.
        class_names : sequence of str, mapping or None
            As in :meth:`LiftPlusClassifier.fit`; -1 may not be a class.
        validation_data : (X_val, y_val) or None
            Labeled images scored after every epoch, as in
            :meth:`LiftPlusClassifier.fit`.

        Returns
        -------
        self : ULFineClassifier
            The fitted estimator; left unfitted if fitting fails.
        """
        return super().fit(X, y, class_names, validation_data=validation_data)

    def _check_param_relations(self) -> None:
        super()._check_param_relations()
        if self.max_steps is not None and self.max_steps < self.epochs:
            raise ValueError(
                f"ULFineClassifier: max_steps={self.max_steps} must be at least "
                f"epochs={self.epochs} (every epoch takes at least one optimizer step)"
            )

    def _steps_per_epoch(self) -> list | None:
        """Optimizer steps of each epoch under ``max_steps`` (None without)."""
        if self.max_steps is None:
            return None
        epochs, total = int(self.epochs), int(self.max_steps)
        return [total // epochs + (1 if e < total % epochs else 0) for e in range(epochs)]

    def score(self, X, y=None, sample_weight=None):
        """Accuracy on the labeled images of ``X``.

        As :meth:`LiftPlusClassifier.score`, except that images with
        ``y == -1`` are left out: an unlabeled image carries no truth to
        score against (scikit-learn's semi-supervised estimators count them
        as errors, so a fold's score would fall with its share of unlabeled
        images). ``cross_val_score`` and ``GridSearchCV`` on
        semi-supervised data thus score the labeled images of each fold.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column
        y : array-like of shape (n_samples,) or None
            True labels, -1 for unlabeled images; None takes the labels a
            torch Dataset or ``datasets.Dataset`` ``X`` carries.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float

        Raises
        ------
        ValueError
            If every image of ``X`` is unlabeled.
        """
        return super().score(X, y, sample_weight)

    def _scored_samples(self, y_true):
        labeled = ~unlabeled_mask(y_true)
        if not labeled.any():
            raise ValueError("score needs labeled images: every label in y is -1 (unlabeled)")
        return None if labeled.all() else labeled

    def _check_y(self, y) -> None:
        # np.array(["cat", -1]) silently turns -1 into the string "-1"; like
        # sklearn.semi_supervised, ask for the integer instead of treating
        # "-1" as a class (in whatever container the strings come).
        values = np.asarray(y, dtype=object).ravel().tolist()
        if any(isinstance(v, (str, bytes)) and v in ("-1", b"-1") for v in values):
            raise ValueError(
                "y contains the string '-1'; mark unlabeled images with the integer -1 "
                "in an object array or list, e.g. np.array(['cat', -1], dtype=object)"
            )
        if values and unlabeled_mask(values).all():
            raise ValueError("y has no labeled image (all are -1); at least one is needed")

    def _check_labels(self, labels) -> None:
        if labels.classes.dtype.kind in "iuf" and (labels.classes == -1).any():
            raise ValueError("-1 marks unlabeled images and cannot be a class of class_names")
        if not (labels.y_encoded >= 0).any():
            raise ValueError("y has no labeled image (all are -1); at least one is needed")

    def _build_network(self, backbone, class_names, seed: int) -> ULFineNetwork:
        init = self._semantic_init(backbone, class_names)
        return ULFineNetwork(
            backbone, self._build_tuner(backbone, len(class_names), seed),
            CosineClassifier(init, scale=float(self.scale)), init,
            dlf=bool(self.dlf), fusion_weight=float(self.fusion_weight),
            text_only=bool(self.paf) and not bool(self.dlf),
        )

    def _make_task(self, network, backbone, paths, labels, seed, device):
        size = backbone.image_size
        epochs, schedule = int(self.epochs), self.mda_schedule
        enc = labels.y_encoded
        is_labeled = enc >= 0
        lab_idx, unl_idx = np.flatnonzero(is_labeled), np.flatnonzero(~is_labeled)
        if not self.pseudo_label:
            unl_idx = unl_idx[:0]
        # FixMatch's views of unlabeled images do not follow the crop
        # schedule: the weak one must stay weak in every epoch.
        # uint8 views; the task normalises them on the device.
        weak = weak_transform(size)
        strong = strong_transform(size, num_ops=int(self.randaugment_ops),
                                  max_magnitude=int(self.randaugment_magnitude),
                                  cutout=float(self.cutout))

        def datasets_for_epoch(epoch):
            crop = train_transform(size, mda_min_scale(epoch, epochs, schedule=schedule))
            labeled = SSLDataset(paths[lab_idx], enc[lab_idx], lab_idx, crop, None, seed, epoch)
            unlabeled = SSLDataset(paths[unl_idx], enc[unl_idx], unl_idx, weak, strong, seed, epoch)
            return labeled, unlabeled

        steps = self._steps_per_epoch()
        options = dict(
            threshold=float(self.threshold), ratio=int(self.unlabeled_ratio),
            unlabeled_weight=float(self.unlabeled_weight), paf=bool(self.paf),
            paf_momentum=float(self.paf_momentum), ema=float(self.ema_momentum),
            orthogonality_target=str(self.orthogonality_target),
            orthogonality_weight=float(self.orthogonality_weight) if self.paf else 0.0,
            labeled_draws=None if steps is None else [k * int(self.batch_size) for k in steps],
        )
        return ULFineTask(network, datasets_for_epoch, labels.counts, len(paths),
                          float(self.tau), options, seed, device)

    def _task_results(self, task, labels, kept) -> dict:
        state = task.results()
        enc = labels.y_encoded
        is_labeled = enc >= 0
        # Over every image of X: skipped images have no label (-1).
        transduction_enc = np.full(len(kept), -1, dtype=np.int64)
        transduction_enc[kept] = np.where(is_labeled, enc, state["pseudo"])
        # -1 where there is no label, as predict marks skipped images: in
        # the classes' dtype where it holds -1 (signed integers), else object.
        transduction = _mark_unpredicted(labels.classes[np.maximum(transduction_enc, 0)],
                                         transduction_enc < 0, labels.classes)
        return {
            "n_unlabeled_": int((~is_labeled).sum()),
            "transduction_": transduction,
            "unlabeled_prior_": state["unlabeled_prior"],
            "class_prior_": state["class_prior"],
        }
