"""ULFine: long-tailed semi-supervised learning on top of LIFT+.

:class:`ULFineClassifier` takes labeled images plus unlabeled ones marked
``y == -1`` (scikit-learn's semi-supervised convention).  It is LIFT+ (same
frozen CLIP image encoder, adapters, semantic-aware initialisation,
minimalist crops, logit adjustment, test-time ensembling) with three
additions, each of which a parameter switches off:

- FixMatch-style pseudo-labels: the prediction on a weak view (the LIFT+
  crop) of an unlabeled image becomes its hard label when confident enough,
  and the loss is taken on a strong view (crop + RandAugment);
- Prototype Adaptive Fitting (PAF): a second, gradient-free head of textual
  prototypes, moved towards the visual prototypes of the labeled data with
  a per-class momentum set by the predicted class distribution of the
  unlabeled data, plus an orthogonality term;
- Dual Logit Fusion (DLF): predictions and pseudo-labels from the fusion of
  the textual-prototype logits with the (logit-adjusted) linear head's.

ULFine's paper (Zhang, Li, Geng & Chen, 2025) has no public code and only
partly public formulas.  What is known and what is **liftlearn's
reconstruction** is documented in :mod:`liftlearn.ulfine_math` and in the
parameters below; every reconstructed choice is a parameter.

With ``paf=False, dlf=False`` the class runs FixMatch + lightweight
fine-tuning (``adapter="adaptformer"``), FixMatch + linear probing
(``adapter="none"``) or FixMatch + full fine-tuning (``adapter="full"``,
where the installed :mod:`liftlearn.adapters` provides it): the paper's
study of LP, LFT and FFT.
"""

from __future__ import annotations

import time
from numbers import Integral, Real
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import check_random_state
from torch.utils.data import Dataset, RandomSampler

from .backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, get_backbone
from .data import _as_path_list, load_image
from .estimators import LiftPlusClassifier, _check_number
from .heads import DEFAULT_TEMPLATE, CosineClassifier
from .losses import log_prior
from .network import LiftNetwork
from .training import (
    TrainConfig, _autocast, _loader, _progress, backward, check_finite_loss, make_optimizer,
    optimizer_step,
)
from .transforms import mda_min_scale, strong_transform, train_transform
from . import ulfine_math as um

__all__ = ["SSLDataset", "ULFineClassifier", "ULFineNetwork"]


class ULFineNetwork(LiftNetwork):
    """LIFT+'s network with a second head of textual prototypes.

    ``head`` is the trained (linear-probing) cosine classifier; the textual
    prototypes are a buffer, moved only by PAF, never by gradients.
    ``forward`` returns the logits used for pseudo-labels and predictions:
    the DLF fusion of both heads, or the linear head's alone when ``dlf`` is
    off.  Pickles like :class:`LiftNetwork` (the backbone as its spec).

    Parameters
    ----------
    backbone, tuner, head
        As in :class:`~liftlearn.network.LiftNetwork`.
    text_prototypes : Tensor of shape (n_classes, dim)
        Initial textual prototypes (the semantic-aware initialisation).
    dlf : bool
        Fuse the two heads (else the textual head is unused).
    fusion_weight : float
        Weight of the linear head in the fusion.
    """

    def __init__(self, backbone, tuner, head: CosineClassifier, text_prototypes: torch.Tensor,
                 dlf: bool, fusion_weight: float):
        super().__init__(backbone, tuner, head)
        self.register_buffer("text_prototypes", F.normalize(text_prototypes.detach().float(), dim=-1))
        self.dlf = bool(dlf)
        self.fusion_weight = float(fusion_weight)

    def text_logits(self, features: torch.Tensor) -> torch.Tensor:
        # Same scale as the linear head, so that the fusion weight compares
        # like with like.
        f = F.normalize(features.float(), dim=-1)
        return self.head.scale * f @ self.text_prototypes.T

    def fused_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Prediction logits from pre-computed features (see class doc)."""
        linear = self.head(features)
        if not self.dlf:
            return linear.float()
        return um.dual_logit_fusion(self.text_logits(features), linear, self.fusion_weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fused_logits(self.features(images))


class SSLDataset(Dataset):
    """Images with a weak view and, for unlabeled ones, a strong view.

    Item ``i`` draws all its randomness from
    ``numpy.random.default_rng([seed, epoch, index[i]])``, where ``index``
    is the image's position in the ``X`` given to ``fit``: as in
    :class:`~liftlearn.data.TrainDataset`, results do not depend on workers
    or sampling order (an unlabeled image drawn twice in one epoch gets the
    same views both times).  Yields ``(weak, target, index)`` without a strong
    transform and ``(weak, strong, index)`` with one.
    """

    def __init__(self, paths: Sequence, targets, index, weak: Callable, strong: Optional[Callable],
                 seed: int, epoch: int):
        self.paths = _as_path_list(paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.index = np.asarray(index, dtype=np.int64)
        self.weak, self.strong = weak, strong
        self.seed, self.epoch = int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(self.index[i])])
        img = load_image(self.paths[i])
        weak = self.weak(img, rng)
        if self.strong is None:
            return weak, int(self.targets[i]), int(self.index[i])
        # FixMatch draws the two views independently; both come from rng.
        return weak, self.strong(img, rng), int(self.index[i])


class ULFineClassifier(LiftPlusClassifier):
    """ULFine: LIFT+ with unlabeled images, PAF and DLF (long-tailed SSL).

    ``fit(X, y)`` takes unlabeled images marked ``y == -1`` (object dtype
    for string labels, as in :mod:`sklearn.semi_supervised`); ``-1`` is
    never a class.  Everything LIFT+ does, this does too; the parameters
    shared with :class:`~liftlearn.LiftPlusClassifier` mean the same
    (``epochs`` counts passes over the *labeled* images; ``batch_size``
    labeled images per step, with ``unlabeled_ratio`` times as many
    unlabeled ones).  The parameters below marked *ours* are liftlearn's
    reconstruction of what the paper leaves unknown.

    Parameters
    ----------
    backbone, pretrained, adapter, adapter_dim, adapter_layers, class_names, \
epochs, batch_size, device_batch_size, lr, momentum, weight_decay, tau, scale, \
prompt_template, mda_schedule, tte, tte_expand, device, num_workers, \
random_state, verbose
        As in :class:`~liftlearn.LiftPlusClassifier`.  ``adapter`` is passed
        to :func:`~liftlearn.adapters.build_tuner` as is. ``tau`` also
        applies to the unlabeled loss, with the prior of labeled plus
        pseudo-labeled images.
    pseudo_label : bool, default=True
        Train on confident pseudo-labels of the unlabeled images (FixMatch).
        False ignores the unlabeled images.
    threshold : float, default=0.7
        Confidence (softmax of the weak view's logits) a pseudo-label needs.
        *Ours*: 0.7, as CLIP-based SSL codebases use, not FixMatch's 0.95.
    unlabeled_ratio : int, default=2
        Unlabeled images per labeled image in a step (FixMatch's mu).
        *Ours*: 2, the unlabeled-to-labeled ratio of the CIFAR-LT LTSSL
        benchmarks, so an epoch sees about every unlabeled image once.
    unlabeled_weight : float, default=1.0
        Weight of the unlabeled loss (FixMatch's lambda_u).
    randaugment_ops : int, default=2
    randaugment_magnitude : int, default=9
        The strong view's RandAugment (FixMatch's settings).
    paf : bool, default=True
        Prototype Adaptive Fitting of the textual prototypes. False keeps
        them at the semantic-aware (zero-shot) initialisation.
    paf_momentum : float, default=0.01
        PAF's base momentum m (*ours*: the paper's value is unknown).
    ema_momentum : float, default=0.1
        *Ours*: weight of each batch in the moving averages of the visual
        prototypes and of the unlabeled class prior ``P_u``.
    orthogonality_weight : float, default=0.1
        *Ours*: weight of the mean squared cosine similarity between the
        linear head's class vectors (PAF's orthogonality term; formula
        unknown). Applies only with ``paf=True``.
    dlf : bool, default=True
        Dual Logit Fusion; False predicts and pseudo-labels with the linear
        head alone.
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
        image was drawn if it was confident, else -1 (object dtype with
        string classes).
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
        ``labeled_accuracy`` (prediction logits on the labeled weak views),
        ``lr``, ``seconds``.

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
        num_workers=None,
        compile=False,
        check_images="header",
        on_bad_image="raise",
        checkpoint_dir=None,
        random_state=None,
        verbose=0,
        pseudo_label=True,
        threshold=0.7,
        unlabeled_ratio=2,
        unlabeled_weight=1.0,
        randaugment_ops=2,
        randaugment_magnitude=9,
        paf=True,
        paf_momentum=0.01,
        ema_momentum=0.1,
        orthogonality_weight=0.1,
        dlf=True,
        fusion_weight=0.5,
    ):
        super().__init__(
            backbone=backbone, pretrained=pretrained, adapter=adapter, adapter_dim=adapter_dim,
            adapter_layers=adapter_layers, class_names=class_names, epochs=epochs, batch_size=batch_size,
            device_batch_size=device_batch_size, lr=lr, momentum=momentum,
            weight_decay=weight_decay, tau=tau, scale=scale, prompt_template=prompt_template,
            mda_schedule=mda_schedule, tte=tte, tte_expand=tte_expand, device=device,
            num_workers=num_workers, compile=compile, check_images=check_images,
            on_bad_image=on_bad_image,
            checkpoint_dir=checkpoint_dir, random_state=random_state, verbose=verbose,
        )
        self.pseudo_label = pseudo_label
        self.threshold = threshold
        self.unlabeled_ratio = unlabeled_ratio
        self.unlabeled_weight = unlabeled_weight
        self.randaugment_ops = randaugment_ops
        self.randaugment_magnitude = randaugment_magnitude
        self.paf = paf
        self.paf_momentum = paf_momentum
        self.ema_momentum = ema_momentum
        self.orthogonality_weight = orthogonality_weight
        self.dlf = dlf
        self.fusion_weight = fusion_weight

    # ------------------------------------------------------------------ checks
    def _validate_params(self):
        spec, device = super()._validate_params()
        for name in ("pseudo_label", "paf", "dlf"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{type(self).__name__}: {name}={getattr(self, name)!r} must be True or False")
        _check_number(self, "threshold", Real, low=0, high=1)
        _check_number(self, "unlabeled_ratio", Integral, low=1)
        _check_number(self, "unlabeled_weight", Real, low=0)
        _check_number(self, "randaugment_ops", Integral, low=0)
        _check_number(self, "randaugment_magnitude", Integral, low=0, high=30)
        _check_number(self, "paf_momentum", Real, low=0, high=1)
        _check_number(self, "ema_momentum", Real, low=0, low_open=True, high=1)
        _check_number(self, "orthogonality_weight", Real, low=0)
        _check_number(self, "fusion_weight", Real, low=0, high=1)
        return spec, device

    @staticmethod
    def _check_ssl_labels(y) -> None:
        # np.array(["cat", -1]) silently turns -1 into the string "-1"; like
        # sklearn.semi_supervised, ask for object dtype instead of treating
        # "-1" as a class.
        arr = np.asarray(y) if not isinstance(y, (list, tuple)) else None
        if arr is not None and arr.dtype.kind in "US" and (arr.astype(str) == "-1").any():
            raise ValueError(
                "y has string dtype and contains '-1'; mark unlabeled images with the "
                "integer -1 in an object array, e.g. np.array(['cat', -1], dtype=object)"
            )
        values = np.asarray(y, dtype=object).ravel().tolist()
        if values and all(isinstance(v, Integral) and not isinstance(v, bool) and v == -1 for v in values):
            raise ValueError("y has no labeled image (all are -1); at least one is needed")

    # --------------------------------------------------------------------- fit
    def fit(self, X, y, class_names=None):
        """Fit on labeled images and unlabeled ones marked ``y == -1``.

        Parameters
        ----------
        X : sequence of str or os.PathLike
            Image files.
        y : array-like of shape (n_samples,)
            Integer or string labels; -1 marks an unlabeled image (use an
            object array for string labels). At least one image must be
            labeled.
        class_names : sequence of str, mapping or None
            As in :meth:`LiftPlusClassifier.fit`; -1 may not be a class.

        Returns
        -------
        self : ULFineClassifier
            The fitted estimator; left unfitted if fitting fails.
        """
        return super().fit(X, y, class_names)

    def _fit(self, X, y, class_names):
        spec, device = self._validate_params()
        if self.compile:
            raise ValueError("ULFineClassifier does not support compile=True yet; leave it False")
        if self.checkpoint_dir is not None:
            raise ValueError(
                "ULFineClassifier does not support checkpoint_dir yet (its state "
                "includes the prototypes and pseudo-label statistics); leave it None"
            )
        self._check_ssl_labels(y)
        paths, labels, skipped, kept = self._training_images(X, y, class_names, allow_unlabeled=True)
        if labels.classes.dtype.kind in "iuf" and (labels.classes == -1).any():
            raise ValueError("-1 marks unlabeled images and cannot be a class of class_names")
        enc = labels.y_encoded
        is_labeled = enc >= 0
        if not is_labeled.any():
            raise ValueError("y has no labeled image (all are -1); at least one is needed")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

        backbone = get_backbone(spec, device)
        network = self._build_network(backbone, labels.names, seed).to(device)

        size, mean, std = backbone.image_size, backbone.mean, backbone.std
        epochs, schedule = int(self.epochs), self.mda_schedule
        lab_idx, unl_idx = np.flatnonzero(is_labeled), np.flatnonzero(~is_labeled)
        if not self.pseudo_label:
            unl_idx = unl_idx[:0]
        ra_ops, ra_mag = int(self.randaugment_ops), int(self.randaugment_magnitude)

        def datasets_for_epoch(epoch):
            min_scale = mda_min_scale(epoch, epochs, schedule=schedule)
            weak = train_transform(size, min_scale, mean, std)
            strong = strong_transform(size, min_scale, mean, std, ra_ops, ra_mag)
            labeled = SSLDataset(paths[lab_idx], enc[lab_idx], lab_idx, weak, None, seed, epoch)
            unlabeled = SSLDataset(paths[unl_idx], enc[unl_idx], unl_idx, weak, strong, seed, epoch)
            return labeled, unlabeled

        config = self._train_config()
        state = _train_ulfine(network, datasets_for_epoch, labels.counts, len(paths), config,
                              self._ssl_options(), seed, device)

        # Over every image of X: skipped images have no label (-1).
        transduction_enc = np.full(len(kept), -1, dtype=np.int64)
        transduction_enc[kept] = np.where(is_labeled, enc, state["pseudo"])
        if labels.classes.dtype.kind in "iu":
            transduction = np.where(transduction_enc >= 0, labels.classes[np.maximum(transduction_enc, 0)], -1)
        else:
            transduction = np.empty(len(enc), dtype=object)
            transduction[:] = [labels.classes[e] if e >= 0 else -1 for e in transduction_enc]

        self._set_fitted(
            classes=labels.classes, names=labels.names, counts=labels.counts,
            network=network, history=state["history"], device=device,
            n_unlabeled_=int((~is_labeled).sum()), transduction_=transduction,
            unlabeled_prior_=state["unlabeled_prior"], class_prior_=state["class_prior"],
            skipped_images_=skipped,
        )
        return self

    def _build_network(self, backbone, class_names, seed: int) -> "ULFineNetwork":
        init = self._semantic_init(backbone, class_names)
        return ULFineNetwork(
            backbone, self._build_tuner(backbone, len(class_names), seed),
            CosineClassifier(init, scale=self.scale), init,
            dlf=self.dlf, fusion_weight=self.fusion_weight,
        )

    def _ssl_options(self) -> dict:
        return dict(
            threshold=float(self.threshold), ratio=int(self.unlabeled_ratio),
            unlabeled_weight=float(self.unlabeled_weight), paf=bool(self.paf),
            paf_momentum=float(self.paf_momentum), ema=float(self.ema_momentum),
            orthogonality_weight=float(self.orthogonality_weight) if self.paf else 0.0,
        )


def _unlabeled_order(n_unlabeled: int, n_draws: int, seed: int, epoch: int) -> list:
    """Which unlabeled images an epoch draws: shuffled passes, cut at ``n_draws``."""
    rng = np.random.default_rng([seed, epoch, 1])
    passes = -(-n_draws // n_unlabeled)
    return np.concatenate([rng.permutation(n_unlabeled) for _ in range(passes)])[:n_draws].tolist()


def _train_ulfine(network: ULFineNetwork, datasets_for_epoch, labeled_counts, n_total: int,
                  config: TrainConfig, ssl: dict, seed: int, device: torch.device) -> dict:
    """The ULFine training loop: LIFT+'s optimiser and schedule, plus SSL.

    Same SGD, cosine schedule and gradient accumulation as
    :func:`liftlearn.training.train`.  Each micro-batch pairs labeled weak
    views with ``ratio`` times as many unlabeled (weak, strong) pairs; the
    visual prototypes, ``P_u`` and (with PAF) the textual prototypes are
    updated after every micro-batch.
    """
    micro = config.device_batch_size or config.batch_size
    accum = config.batch_size // micro
    optimizer, scheduler = make_optimizer(network, config, device)
    autocast, scaler = _autocast(device)

    n_classes, dim = network.text_prototypes.shape
    counts_np = np.asarray(labeled_counts, dtype=np.float64)
    unlabeled_prior = torch.full((n_classes,), 1.0 / n_classes, device=device)
    visual = torch.zeros(n_classes, dim, device=device)
    seen = torch.zeros(n_classes, dtype=torch.bool, device=device)
    pseudo = np.full(n_total, -1, dtype=np.int64)
    n_pseudo_prev = 0
    history: List[dict] = []
    network.train()
    for epoch in range(config.epochs):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        # The logit adjustment's prior: labeled counts plus last epoch's
        # confident pseudo-labels spread as P_u (ours).
        prior_counts = counts_np + n_pseudo_prev * unlabeled_prior.cpu().double().numpy()
        adjust = config.tau * log_prior(prior_counts).to(device)
        labeled, unlabeled = datasets_for_epoch(epoch)
        n = len(labeled)
        generator = torch.Generator().manual_seed(int(seed) + epoch)
        lab_loader = _loader(labeled, micro, device, config.num_workers,
                             RandomSampler(labeled, generator=generator))
        use_unlabeled = len(unlabeled) > 0
        if use_unlabeled:
            order = _unlabeled_order(len(unlabeled), ssl["ratio"] * n, seed, epoch)
            unl_iter = iter(_loader(unlabeled, ssl["ratio"] * micro, device, config.num_workers, order))
        sums = {"loss": torch.zeros((), device=device), "loss_labeled": torch.zeros((), device=device),
                "loss_unlabeled": torch.zeros((), device=device)}
        n_correct = torch.zeros((), device=device)
        n_pseudo = torch.zeros((), device=device)
        n_drawn = 0
        optimizer.zero_grad(set_to_none=True)
        batches = _progress(lab_loader, config.verbose, f"epoch {epoch + 1}/{config.epochs}", len(lab_loader))
        for j, (xl, yl, _) in enumerate(batches):
            xl, yl = xl.to(device, non_blocking=True), yl.to(device, non_blocking=True)
            step = j // accum
            logical = min(config.batch_size, n - step * config.batch_size)
            with autocast:
                if use_unlabeled:
                    xw, xs, iu = next(unl_iter)
                    xw, xs = xw.to(device, non_blocking=True), xs.to(device, non_blocking=True)
                    with torch.no_grad():
                        # FixMatch: the weak view only proposes the label.
                        plabel, mask = um.pseudo_labels(network(xw), ssl["threshold"])
                    feats = network.features(torch.cat([xl, xs]))
                    f_l, f_s = feats[: len(yl)], feats[len(yl):]
                    per_image = F.cross_entropy(network.head(f_s).float() + adjust, plabel, reduction="none")
                    loss_u = um.masked_mean(per_image, mask)
                else:
                    f_l = network.features(xl)
                    loss_u = torch.zeros((), device=device)
                loss_x = F.cross_entropy(network.head(f_l).float() + adjust, yl)
                loss = loss_x + ssl["unlabeled_weight"] * loss_u
                if ssl["orthogonality_weight"] > 0:
                    loss = loss + ssl["orthogonality_weight"] * um.orthogonality_penalty(network.head.weight)
            backward(loss * (len(yl) / logical), scaler)
            with torch.no_grad():
                sums["loss"] += loss.detach() * len(yl)
                sums["loss_labeled"] += loss_x.detach() * len(yl)
                sums["loss_unlabeled"] += loss_u.detach() * len(yl)
                n_correct += (network.fused_logits(f_l.detach()).argmax(1) == yl).sum()
                um.update_visual_prototypes(visual, seen, f_l, yl, ssl["ema"])
                if use_unlabeled:
                    n_pseudo += mask.sum()
                    n_drawn += len(mask)
                    unlabeled_prior = um.ema_class_histogram(unlabeled_prior, plabel, mask, ssl["ema"])
                    pseudo[iu.numpy()] = torch.where(mask, plabel, -1).cpu().numpy()
                if ssl["paf"]:
                    network.text_prototypes.copy_(um.paf_update(
                        network.text_prototypes, visual, seen, unlabeled_prior, ssl["paf_momentum"]))
            if (j + 1) % accum == 0 or (j + 1) == len(lab_loader):
                optimizer_step(optimizer, scaler)
        scheduler.step()
        # One host sync per epoch, as in training.train.
        record = {"epoch": epoch + 1}
        record.update({k: float(v) / max(n, 1) for k, v in sums.items()})
        check_finite_loss(record["loss"], epoch, config.lr)
        n_pseudo_prev = int(n_pseudo)
        record.update({
            "n_pseudo_labels": n_pseudo_prev,
            "pseudo_label_rate": n_pseudo_prev / n_drawn if n_drawn else 0.0,
            "labeled_accuracy": float(n_correct) / max(n, 1),
            "lr": lr,
            "seconds": time.perf_counter() - start,
        })
        history.append(record)
        if config.verbose:
            print(f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}, "
                  f"pseudo-labels {n_pseudo_prev}/{n_drawn}, labeled acc {record['labeled_accuracy']:.3f}")
    network.eval()
    return {
        "history": history,
        "pseudo": pseudo,
        "unlabeled_prior": unlabeled_prior.cpu().double().numpy(),
        "class_prior": prior_counts / prior_counts.sum(),
    }
