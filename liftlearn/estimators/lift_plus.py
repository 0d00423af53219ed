"""scikit-learn estimators for long-tailed classification with CLIP."""

from __future__ import annotations

import hashlib
import os
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .adapters import ADAPTERS, build_tuner
from .backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, BackboneSpec, get_backbone
from .data import TrainDataset, check_paths, find_bad_images, path_input_tags
from .exceptions import BadImageError, LiftLearnWarning
from .heads import DEFAULT_TEMPLATE, CosineClassifier, semantic_init
from .network import LiftNetwork, predict_images
from .training import Checkpoint, TrainConfig, resolve_device, train
from .transforms import mda_min_scale, train_transform
from ._labels import resolve_labels

__all__ = ["LiftPlusClassifier"]

_MDA_SCHEDULES = ("convex", "linear", "concave", "min", "max")


def _check_number(est, name, kind, low=None, high=None, low_open=False, allow_none=False):
    value = getattr(est, name)
    if value is None and allow_none:
        return
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = []
        if low is not None:
            rng.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            rng.append(f"<= {high}")
        what = "an int" if kind is Integral else "a number"
        none = " or None" if allow_none else ""
        raise ValueError(
            f"{type(est).__name__}: parameter {name}={value!r} must be {what}"
            f" {' and '.join(rng)}{none}".rstrip()
        )


def _check_predict_params(est):
    """The prediction settings every path-input classifier shares."""
    _check_number(est, "batch_size", Integral, low=1)
    _check_number(est, "tte_expand", Integral, low=0)
    _check_number(est, "num_workers", Integral, low=0, allow_none=True)
    _check_number(est, "verbose", Integral, low=0)
    if not isinstance(est.tte, (bool, np.bool_)):
        raise ValueError(f"tte={est.tte!r} must be True or False")


class LiftPlusClassifier(ClassifierMixin, BaseEstimator):
    """LIFT+: lightweight fine-tuning of CLIP for long-tailed classification.

    A frozen CLIP image encoder with a lightweight adapter (AdaptFormer by
    default), a cosine classifier initialised from the text encoder and the
    class names, logit-adjusted cross-entropy, minimalist data augmentation
    and test-time ensembling (Shi, Wei & Li, 2025). The defaults are the
    paper's recipe for CLIP ViT-B/16.

    Parameters
    ----------
    backbone : str, default="ViT-B-16-quickgelu"
        open_clip model name. The default is CLIP ViT-B/16 with QuickGELU, as
        OpenAI trained it. ``"liftlearn-tiny-vit"`` is a tiny model for tests.
    pretrained : str or None, default="openai"
        open_clip pretrained tag, path of a local checkpoint file, or None for
        random weights (fixed by a seed; useful only for tests and demos).
    adapter : str, default="adaptformer"
        The module trained inside the encoder (the fine-tuning strategies of
        the LIFT+ study): ``"adaptformer"`` (parallel bottleneck, LIFT+'s
        default), ``"adapter"`` (sequential bottleneck on the MLP output),
        ``"lora"`` (low-rank q and v updates, scale 1/r), ``"vpt"`` (deep
        prompts after CLS, replaced in every block), ``"vpt-shallow"``
        (prompts at the first block only), ``"ssf"`` (scale and shift after
        qkv, attention out, fc1 and fc2), ``"bitfit"`` (block biases),
        ``"full"`` (every parameter of the blocks, trained in a private
        copy), ``"none"`` (the classifier alone: linear probing). CLIP
        ResNets take ``"none"``, ``"bitfit"``, ``"ssf"`` (on the pooled
        feature) and ``"full"``.
    adapter_dim : int or None, default=None
        Bottleneck width ("adaptformer", "adapter"), LoRA rank or prompt
        length ("vpt", "vpt-shallow"); None uses LIFT+'s automatic sizes
        ``2**max(0, int(log2(C / 2L)))``, ``2**max(0, int(log2(C / 4L)))``
        and ``2**max(0, int(log2(C / L)))`` for C classes and L blocks. An
        error for the modules without a size.
    adapter_layers : None, int or list of int, default=None
        The blocks that get the module: None all, an int k the last k blocks,
        a list the block indices. An error for "none", "vpt-shallow" and
        ResNets.
    class_names : sequence of str, mapping or None, default=None
        A sequence of C names (classes ``0..C-1``) or a mapping label -> name.
        Every named class is a column of ``predict_proba``, including classes
        without training images. None: the labels seen in ``y``, named
        ``str(label)``. A ``class_names`` passed to :meth:`fit` wins.
    epochs : int, default=5
    batch_size : int, default=128
        Images per optimiser step.
    device_batch_size : int or None, default=None
        Images per forward pass; must divide ``batch_size``. Smaller values
        save device memory through gradient accumulation without changing
        the result. None means ``batch_size``.
    lr : float, default=0.02
    momentum : float, default=0.9
    weight_decay : float, default=5e-4
    tau : float, default=1.0
        Strength of the logit adjustment of the training loss (0 gives plain
        cross-entropy).
    scale : float, default=25.0
        Logit scale of the cosine classifier.
    prompt_template : str, default="a photo of a {}."
        Text prompt for each class name in the classifier's initialisation.
    mda_schedule : {"convex", "linear", "concave", "min", "max"}, default="convex"
        How the minimum crop scale of the minimalist augmentation grows from
        0.08 to 1 over the epochs.
    tte : bool, default=True
        Test-time ensembling: average the logits of five crops.
    tte_expand : int, default=24
        With TTE, images are resized to ``resolution + tte_expand`` before
        the five crops.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available. Resolved in ``fit``, never
        earlier, so that parallel workers can each pick their own GPU.
    num_workers : int or None, default=None
        DataLoader worker processes; None: 0 on CPU, on CUDA one per usable
        CPU but one, at most 16.
    compile : bool, default=False
        Train through ``torch.compile``: faster steps after a compilation of
        tens of seconds, worth it for long fits, mainly on a GPU. The fitted
        module and predictions do not use the compiled module.
    check_images : {"header", "decode"} or None, default="header"
        Check every training image before any training time is spent:
        ``"header"`` opens each file and reads its header (fast; misses a
        truncated image body), ``"decode"`` decodes every image fully, None
        checks only that the files exist.
    on_bad_image : {"raise", "skip"}, default="raise"
        What to do with training images the check finds unusable: raise a
        :class:`~liftlearn.BadImageError` naming the first, or leave them out
        of the fit (with a warning) and list them in ``skipped_images_``.
        Prediction always raises on a bad image: it owes one row per image.
    checkpoint_dir : str, os.PathLike or None, default=None
        Save the fit's state after every epoch to
        ``checkpoint_dir/liftlearn-checkpoint.pt``; a later fit of the same
        data with the same parameters resumes from the last finished epoch
        and gives the same model as an uninterrupted fit.
    random_state : int, RandomState instance or None, default=None
        Seeds the adapter initialisation, the shuffling and the crops.
    verbose : int, default=0
        Progress bars and a line per epoch when > 0.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, the column order of :meth:`predict_proba`.
    class_names_ : list of str
    class_counts_ : ndarray of shape (n_classes,)
        Training images per class (for many/medium/few-shot metrics).
    module_ : LiftNetwork
        The torch module: trainable tuner and head, plus the shared frozen
        backbone.
    n_trainable_params_ : int
        Trained parameters (adapter and classifier).
    n_adapter_params_ : int
        Trained parameters of the adapter alone.
    trainable_fraction_ : float
        ``n_adapter_params_`` over the parameters of the frozen image tower.
    adapter_dim_ : int or None
        The bottleneck width, LoRA rank or prompt length used (None for the
        modules without a size).
    history_ : list of dict
        Per epoch: ``epoch``, ``loss``, ``lr``, ``seconds``.
    device_ : torch.device
        Where the model was fitted and predicts.
    skipped_images_ : list of (str, str)
        Training images left out by ``on_bad_image="skip"``, with the reason.

    Examples
    --------
    >>> from liftlearn import LiftPlusClassifier
    >>> from liftlearn.datasets import load_cifar10_lt_sample
    >>> X, y, names = load_cifar10_lt_sample("train")
    >>> clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=None,
    ...                          epochs=1, random_state=0)
    >>> clf.fit(X[:64], y[:64], class_names=names).predict(X[:2]).shape
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
        self.num_workers = num_workers
        self.compile = compile
        self.check_images = check_images
        self.on_bad_image = on_bad_image
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        return path_input_tags(super().__sklearn_tags__())

    # ------------------------------------------------------------------ checks
    def _validate_params(self):
        if self.adapter not in ADAPTERS:
            raise ValueError(
                f"{type(self).__name__}: unknown adapter={self.adapter!r}; "
                f"choose one of {sorted(ADAPTERS)}"
            )
        _check_number(self, "adapter_dim", Integral, low=1, allow_none=True)
        layers = self.adapter_layers
        if not (
            layers is None
            or (isinstance(layers, Integral) and not isinstance(layers, bool) and layers >= 1)
            or (
                isinstance(layers, (list, tuple, np.ndarray))
                and len(layers) > 0
                and all(isinstance(i, Integral) and not isinstance(i, bool) for i in layers)
            )
        ):
            raise ValueError(
                f"{type(self).__name__}: adapter_layers={layers!r} must be None, an "
                "int k >= 1 (the last k blocks) or a non-empty list of block indices"
            )
        if self.adapter_dim is not None and self.adapter in ("ssf", "bitfit", "full", "none"):
            raise ValueError(
                f"{type(self).__name__}: adapter_dim does not apply to "
                f"adapter={self.adapter!r}; leave it None"
            )
        if layers is not None and self.adapter in ("none", "vpt-shallow"):
            raise ValueError(
                f"{type(self).__name__}: adapter_layers does not apply to "
                f"adapter={self.adapter!r}; leave it None"
            )
        _check_number(self, "epochs", Integral, low=1)
        _check_predict_params(self)
        _check_number(self, "device_batch_size", Integral, low=1, allow_none=True)
        if self.device_batch_size is not None and self.batch_size % self.device_batch_size:
            raise ValueError(
                f"device_batch_size={self.device_batch_size} must divide "
                f"batch_size={self.batch_size} (gradient accumulation)"
            )
        _check_number(self, "lr", Real, low=0, low_open=True)
        _check_number(self, "momentum", Real, low=0, high=1)
        _check_number(self, "weight_decay", Real, low=0)
        _check_number(self, "tau", Real, low=0)
        _check_number(self, "scale", Real, low=0, low_open=True)
        if not isinstance(self.prompt_template, str) or "{}" not in self.prompt_template:
            raise ValueError(
                f"prompt_template={self.prompt_template!r} must be a str with one "
                "'{}' where the class name goes"
            )
        if self.mda_schedule not in _MDA_SCHEDULES:
            raise ValueError(
                f"mda_schedule={self.mda_schedule!r}; choose one of {list(_MDA_SCHEDULES)}"
            )
        if not isinstance(self.compile, (bool, np.bool_)):
            raise ValueError(f"compile={self.compile!r} must be True or False")
        if self.check_images not in ("header", "decode", None):
            raise ValueError(
                f"check_images={self.check_images!r}; choose 'header', 'decode' or None"
            )
        if self.on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image={self.on_bad_image!r}; choose 'raise' or 'skip'")
        if self.on_bad_image == "skip" and self.check_images is None:
            raise ValueError("on_bad_image='skip' needs check_images='header' or 'decode'")
        if self.checkpoint_dir is not None and not isinstance(self.checkpoint_dir, (str, os.PathLike)):
            raise ValueError(f"checkpoint_dir={self.checkpoint_dir!r} must be a path or None")
        spec = BackboneSpec.create(self.backbone, self.pretrained)
        device = resolve_device(self.device)
        return spec, device

    # --------------------------------------------------------------------- fit
    def fit(self, X, y, class_names=None):
        """Fit the adapter and classifier on images.

        Parameters
        ----------
        X : sequence of str or os.PathLike
            Image files.
        y : array-like of shape (n_samples,)
            Integer or string labels.
        class_names : sequence of str, mapping or None
            Overrides the ``class_names`` parameter (see there). Note that
            ``GridSearchCV`` slices fit arguments whose length equals the
            number of samples; prefer the constructor parameter there.

        Returns
        -------
        self : LiftPlusClassifier
            The fitted estimator. If fitting fails or is interrupted, the
            estimator is left unfitted.
        """
        try:
            return self._fit(X, y, class_names)
        except BaseException:
            # A failed or interrupted fit must leave no half-fitted state, nor
            # the previous fit's state mixed with this one's.
            self._reset_fitted()
            raise

    def _class_names_for(self, class_names, n_samples: int):
        """The fit argument if given, else the parameter.

        scikit-learn's cross-validation tools slice every fit argument whose
        length equals the number of samples, so a fit argument of that
        length may be a fold's slice rather than the names: refuse it rather
        than train on the wrong names.
        """
        if class_names is None:
            return self.class_names
        if not isinstance(class_names, (str, bytes)) and hasattr(class_names, "__len__") \
                and len(class_names) == n_samples:
            raise ValueError(
                f"class_names passed to fit has as many entries as X ({n_samples}); "
                "GridSearchCV and cross_validate slice such fit arguments per fold, so "
                "they cannot be told apart from a slice. Pass class_names to the "
                f"constructor instead: {type(self).__name__}(class_names=...)"
            )
        return class_names

    def _training_images(self, X, y, class_names, allow_unlabeled=False):
        """Validated paths and labels, bad images handled per ``on_bad_image``.

        Returns the kept paths and their labels, the skipped ``(path,
        reason)`` pairs and the boolean mask of kept images over ``X``.
        """
        skip = self.on_bad_image == "skip"
        # With a check pass, it reports missing files too, in index order.
        paths = check_paths(X, must_exist=self.check_images is None)
        names_arg = self._class_names_for(class_names, len(paths))
        labels = resolve_labels(y, names_arg, allow_unlabeled=allow_unlabeled)
        if len(labels.y_encoded) != len(paths):
            raise ValueError(
                f"X has {len(paths)} images but y has {len(labels.y_encoded)} labels"
            )
        bad = find_bad_images(paths, mode=self.check_images) if self.check_images else []
        if bad and not skip:
            i, reason = bad[0]
            more = f" ({len(bad) - 1} more bad image(s) follow)" if len(bad) > 1 else ""
            raise BadImageError(paths[i], reason + more)
        skipped = [(str(paths[i]), reason) for i, reason in bad]
        keep = np.ones(len(paths), dtype=bool)
        if skipped:
            warnings.warn(
                f"skipping {len(skipped)} unusable training image(s), e.g. "
                f"{skipped[0][0]!r}: {skipped[0][1]} (see skipped_images_)",
                LiftLearnWarning, stacklevel=4,
            )
            keep[[i for i, _ in bad]] = False
            y_kept = [v for v, k in zip(y, keep) if k] if isinstance(y, (list, tuple)) else np.asarray(y)[keep]
            paths = paths[keep]
            labels = resolve_labels(y_kept, names_arg, allow_unlabeled=allow_unlabeled)
        return paths, labels, skipped, keep

    def _checkpoint(self, paths, labels):
        if self.checkpoint_dir is None:
            return None
        h = hashlib.sha256()
        ignore = {"verbose", "num_workers", "device", "checkpoint_dir", "check_images", "on_bad_image"}
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in ignore}
        if not isinstance(params.get("random_state"), Integral):
            params.pop("random_state", None)  # resume whatever run was saved
        h.update(repr(sorted((k, repr(v)) for k, v in params.items())).encode())
        h.update("\0".join(map(str, paths)).encode())
        h.update(labels.y_encoded.tobytes())
        h.update("\0".join(labels.names).encode())
        return Checkpoint(self.checkpoint_dir, h.hexdigest())

    def _fit(self, X, y, class_names):
        spec, device = self._validate_params()
        paths, labels, skipped, _ = self._training_images(X, y, class_names)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        checkpoint = self._checkpoint(paths, labels)
        if checkpoint is not None and checkpoint.read() is not None:
            seed = int(checkpoint.read()["seed"])

        backbone = get_backbone(spec, device)
        network = self._build_network(backbone, labels.names, seed).to(device)

        size, mean, std = backbone.image_size, backbone.mean, backbone.std
        epochs, schedule = int(self.epochs), self.mda_schedule

        def dataset_for_epoch(epoch):
            min_scale = mda_min_scale(epoch, epochs, schedule=schedule)
            return TrainDataset(
                paths, labels.y_encoded, train_transform(size, min_scale, mean, std), seed, epoch
            )

        config = self._train_config()
        history = train(network, dataset_for_epoch, labels.counts, config, seed, device, checkpoint)

        self._set_fitted(
            classes=labels.classes, names=labels.names, counts=labels.counts,
            network=network, history=history, device=device, skipped_images_=skipped,
        )
        return self

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            device_batch_size=self.device_batch_size,
            lr=float(self.lr),
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
            tau=float(self.tau),
            num_workers=self.num_workers,
            verbose=int(self.verbose),
            compile=bool(self.compile),
        )

    def _build_network(self, backbone, class_names, seed: int) -> LiftNetwork:
        """The untrained network for these parameters: tuner seeded by
        ``seed``, cosine head initialised from the class names' prompts."""
        return LiftNetwork(
            backbone, self._build_tuner(backbone, len(class_names), seed),
            CosineClassifier(self._semantic_init(backbone, class_names), scale=self.scale),
        )

    def _build_tuner(self, backbone, n_classes: int, seed: int):
        layers = self.adapter_layers
        if isinstance(layers, np.ndarray):
            layers = layers.tolist()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_tuner(self.adapter, backbone, n_classes, self.adapter_dim, layers=layers)

    def _semantic_init(self, backbone, class_names):
        return semantic_init(backbone, class_names, self.prompt_template)

    def _set_fitted(self, *, classes, names, counts, network, history, device, **extra):
        """Replace the fitted state at once (fit and the model loaders)."""
        self._reset_fitted()
        self.classes_ = classes
        self.class_names_ = list(names)
        self.class_counts_ = counts
        self.module_ = network
        tuner = network.tuner
        self.adapter_dim_ = tuner.adapter_dim
        self.n_adapter_params_ = tuner.n_trainable_params()
        self.trainable_fraction_ = self.n_adapter_params_ / sum(
            p.numel() for p in network.backbone.visual.parameters()
        )
        self.n_trainable_params_ = network.n_trainable_params()
        self.history_ = history
        self.device_ = device
        for name, value in extra.items():
            setattr(self, name, value)

    def _reset_fitted(self):
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)

    # ----------------------------------------------------------------- predict
    def decision_function(self, X):
        """Class logits (cosine similarity times ``scale``), averaged over the
        TTE views when ``tte`` is on.

        Parameters
        ----------
        X : sequence of str or os.PathLike

        Returns
        -------
        logits : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        network = self.module_
        return predict_images(
            network, network.backbone, check_paths(X), tte=bool(self.tte),
            tte_expand=int(self.tte_expand), batch_size=int(self.batch_size),
            device=network.device, num_workers=self.num_workers, verbose=int(self.verbose),
        )

    # ------------------------------------------------------------ persistence
    def __setstate__(self, state):
        super().__setstate__(state)
        if "module_" in state:
            # Fitted on a GPU, loaded where there is none: predict on the CPU.
            from .persistence import map_device

            self.device_ = map_device(self.device_)
            self.module_.to_device(self.device_)

    def predict_proba(self, X):
        """Class probabilities: the softmax of :meth:`decision_function`.

        Parameters
        ----------
        X : sequence of str or os.PathLike

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        return softmax(self.decision_function(X).astype(np.float64), axis=1)

    def score(self, X, y, sample_weight=None):
        """Accuracy on images whose labels are among ``classes_``.

        Parameters
        ----------
        X : sequence of str or os.PathLike
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float

        Raises
        ------
        ValueError
            If ``y`` holds a label the model does not know: it could never be
            predicted, so the accuracy would silently count it as an error.
        """
        check_is_fitted(self)
        y_arr = np.asarray(y, dtype=object).ravel()
        known = set(self.classes_.tolist())
        unknown = sorted({repr(v) for v in y_arr.tolist() if v not in known})
        if unknown:
            raise ValueError(
                f"y has {len(unknown)} label(s) the model was not fitted with: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; "
                f"known classes: {self.classes_.tolist()[:10]}"
            )
        return super().score(X, y, sample_weight=sample_weight)

    def predict(self, X):
        """Most likely class of each image.

        Parameters
        ----------
        X : sequence of str or os.PathLike

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]
