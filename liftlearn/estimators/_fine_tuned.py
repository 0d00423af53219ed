"""The abstract base of the classifiers that fine-tune CLIP (LIFT+, ULFine)."""

from __future__ import annotations

import hashlib
import os
import warnings
from abc import abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import check_random_state

from .._io import check_writable_dir
from .._random import seeded_global_rng
from .._validation import Boolean, Constraint, Interval, IntSequence, Options, PathLike, Predicate
from ..engine import Checkpoint, TrainConfig, fit_task, history_keys
from ..engine._loading import clamp_workers
from ..image_sources import PathSource, _file_signature, _utf8, carried_class_names, image_labels
from ..exceptions import LiftLearnWarning
from ..nn.backbones import _source_signature, get_backbone
from ..engine import predict_images
from ..nn.heads import CosineClassifier, make_classifier, random_class_vectors, semantic_init
from ..nn.networks import FeatureNetwork, LiftNetwork
from ..nn.timm_backbones import is_timm_name
from ..nn.tuners import TUNERS, build_tuner, check_timm_adapter, weights_source
from ..transforms import MDA_SCHEDULES
from ._base import CLIPClassifier, fit_context
from ._watch import (
    FitWatcher, check_callbacks, encode_validation, holdout_mask, is_callback_list, picklable_callbacks,
    split_labels, validation_source,
)

__all__ = ["FineTunedClassifier", "data_init_rows"]

#: LIFT+ computes data-based classifier initialisations on at most this many
#: training images per class (its ``DownSampler(n_max=100)``).
_INIT_MAX_PER_CLASS = 100


def data_init_rows(init: str, features, y, n_classes: int):
    """Classifier rows from training features, as LIFT+ computes them.

    ``"class_mean"``: the mean feature of each class; ``"linear_probing"``:
    the coefficients of a logistic regression (lbfgs, 100 iterations, L2,
    ``class_weight="balanced"``) on the raw features. Rows are L2-normalised.

    Parameters
    ----------
    init : {"class_mean", "linear_probing"}
    features : ndarray of shape (n_samples, dim)
    y : ndarray of shape (n_samples,)
        Encoded labels in ``0..n_classes-1``.
    n_classes : int

    Returns
    -------
    rows : ndarray of shape (n_classes, dim)
        Zero rows for the classes returned as missing.
    missing : list of int
        Classes without a row (no training feature; every class when fewer
        than two classes have features for the logistic regression).
    """
    features = np.asarray(features, dtype=np.float64)
    y = np.asarray(y)
    present = np.unique(y)
    rows = np.zeros((n_classes, features.shape[1]))
    if init == "class_mean":
        for c in present:
            rows[c] = features[y == c].mean(axis=0)
    elif init == "linear_probing":
        if len(present) < 2:
            return rows, list(range(n_classes))
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(solver="lbfgs", max_iter=100, class_weight="balanced")
        with warnings.catch_warnings():
            # 100 iterations is LIFT+'s budget, converged or not.
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*(converge|ITERATIONS).*")
            lr.fit(features, y)
        coef = lr.coef_
        if coef.shape[0] == 1:
            # Binary: sklearn keeps one vector w (logit of the second class);
            # the softmax pair (-w/2, w/2) has the same probabilities.
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        rows[lr.classes_] = coef
    else:
        raise ValueError(f"classifier_init={init!r} is not computed from data")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    rows = np.where(norms > 0, rows / np.where(norms > 0, norms, 1), rows)
    missing = sorted(set(range(n_classes)) - set(int(c) for c in present))
    return rows, missing


class _RegisteredTuner(Constraint):
    """The name of a registered fine-tuning method (read when checked, so a
    method registered after import is accepted)."""

    def is_satisfied_by(self, value):
        return isinstance(value, str) and value in TUNERS

    def __str__(self):
        return "one of the fine-tuning methods " + ", ".join(repr(n) for n in TUNERS)


def _is_random_state(value) -> bool:
    return isinstance(value, np.random.RandomState) or (
        isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))
        and 0 <= value < 2**32
    )


class FineTunedClassifier(CLIPClassifier):
    """Base of the estimators that train a tuner and a cosine head with the
    engine's one training loop.

    Subclasses give the task (:meth:`_make_task`) and, where they differ, the
    network (:meth:`_build_network`) and the extra fitted state
    (:meth:`_task_results`).
    """

    _parameter_constraints: dict = {
        **CLIPClassifier._parameter_constraints,
        "adapter": [_RegisteredTuner()],
        "adapter_dim": [Interval(Integral, 1), None],
        "adapter_layers": [Interval(Integral, 1), IntSequence(), None],
        "epochs": [Interval(Integral, 1)],
        "device_batch_size": [Interval(Integral, 1), None],
        "lr": [Interval(Real, 0, closed="neither")],
        "momentum": [Interval(Real, 0, 1)],
        "weight_decay": [Interval(Real, 0)],
        "tau": [Interval(Real, 0)],
        "scale": [Interval(Real, 0, closed="neither")],
        "mda_schedule": [Options(MDA_SCHEDULES)],
        "compile": [Boolean()],
        "check_images": [Options(("header", "decode")), None],
        "on_bad_image": [Options(("raise", "skip"))],
        "checkpoint_dir": [PathLike(), None],
        "random_state": [Predicate(_is_random_state, "an int in [0, 2**32), a RandomState"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "callbacks": [Predicate(is_callback_list, "a list of callbacks (objects with on_fit_begin, "
                                                  "on_epoch_end or on_fit_end)"), None],
    }

    _derived_fitted = ("adapter_dim_", "n_adapter_params_", "trainable_fraction_", "n_trainable_params_")

    #: Whether ``y == -1`` marks unlabeled images (semi-supervised).
    _allow_unlabeled = False

    # -------------------------------------------------------------- checks
    def _check_param_relations(self) -> None:
        method = TUNERS[self.adapter]
        name = type(self).__name__
        if self.adapter_dim is not None and not method.sized:
            raise ValueError(
                f"{name}: adapter_dim does not apply to adapter={self.adapter!r}; leave it None"
            )
        if self.adapter_layers is not None and not method.layered:
            raise ValueError(
                f"{name}: adapter_layers does not apply to adapter={self.adapter!r}; leave it None"
            )
        if self.device_batch_size is not None and self.batch_size % self.device_batch_size:
            raise ValueError(
                f"{name}: device_batch_size={self.device_batch_size} must divide "
                f"batch_size={self.batch_size} (gradient accumulation)"
            )
        # Last, as before: the tuner's rules are named first.
        super()._check_param_relations()
        if is_timm_name(self.backbone):
            # What build_tuner would refuse after the images are checked and
            # the backbone is built; the name alone decides it.
            try:
                check_timm_adapter(self.backbone, self.adapter, self.adapter_layers, self.adapter_dim)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

    # ----------------------------------------------------------------- fit
    @fit_context
    def fit(self, X, y=None, class_names=None, *, validation_data=None):
        """Fit the adapter and classifier on images.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column
            The images (see :mod:`liftlearn.image_sources`).
        y : array-like of shape (n_samples,) or None
            Integer or string labels. None takes the labels a torch Dataset
            or ``datasets.Dataset`` ``X`` carries.
        class_names : sequence of str, mapping or None
            Overrides the ``class_names`` parameter (see there). Note that
            ``GridSearchCV`` slices fit arguments whose length equals the
            number of samples; prefer the constructor parameter there.
        validation_data : (X_val, y_val) or None
            Images and labels predicted after every epoch (without TTE):
            ``history_`` then records ``val_accuracy``,
            ``val_balanced_accuracy`` and ``val_many_shot_accuracy``,
            ``val_medium_shot_accuracy``, ``val_few_shot_accuracy`` (groups
            by the training counts; NaN for a group without validation
            images). Its labels must be classes of ``y``. Not with
            ``validation_fraction``.

        Returns
        -------
        self : estimator
            The fitted estimator. If fitting fails or is interrupted, the
            estimator is left unfitted.
        """
        spec, device = self._backbone_spec(), self._resolve_device()
        dtype = self._compute_dtype(device)  # an impossible precision fails before anything runs
        # Before the image check: a checkpoint_dir that cannot be written
        # must not cost a training run first.
        self._check_checkpoint_dir()
        # And callbacks that cannot work (a monitor with a typo, an
        # unwritable log), before the images are checked or the backbone loads.
        check_callbacks(self.callbacks, history_keys(self._task_type),
                        validation_data is not None or self.validation_fraction is not None)
        config = self._train_config()
        X = self._images(X)
        carried = carried_class_names(X, y)
        y = image_labels(X, y)  # a Dataset's own labels when y is None
        self._check_y(y)
        paths, labels, skipped, kept = self._training_images(X, y, class_names, carried)
        self._check_labels(labels)
        paths, labels, kept, validation = self._validation(paths, labels, kept, validation_data)
        # Held-out images (validation_fraction) are already out of the
        # hashed training images; validation_data is keyed on its own.
        checkpoint = self._checkpoint(paths, labels, spec,
                                      validation if validation_data is not None else None)
        seed = self._seed()
        if checkpoint is not None and checkpoint.read() is not None:
            seed = int(checkpoint.read()["seed"])

        backbone = get_backbone(spec, device, dtype=dtype)
        network = self._build_network(backbone, labels.names, seed).to(device)
        task = self._make_task(network, backbone, paths, labels, seed, device)
        watcher = FitWatcher(self, network, backbone, validation, labels.counts, self.callbacks, device,
                             config.num_workers)
        # During the fit, callbacks see the network being trained as module_.
        self._set_fitted(classes_=labels.classes, class_names_=list(labels.names),
                         class_counts_=labels.counts, module_=network, device_=device)
        watcher.fit_begin()
        history = fit_task(task, config, device, checkpoint, monitor=watcher)
        self._set_fitted(
            classes_=labels.classes, class_names_=list(labels.names), class_counts_=labels.counts,
            module_=network, history_=history, device_=device, skipped_images_=skipped,
            **self._task_results(task, labels, kept),
        )
        watcher.fit_end()
        return self

    def _validation(self, images, labels, kept, validation_data):
        """The training images, labels and mask over ``X`` less the images
        ``validation_fraction`` holds out, and the validation ``(images,
        encoded labels)`` (None without validation)."""
        name = type(self).__name__
        if validation_data is not None and self.validation_fraction is not None:
            raise ValueError(f"{name}: pass validation_data to fit or set validation_fraction, "
                             "not both")
        if validation_data is not None:
            val_images, y_val = validation_source(self, validation_data)
            y_enc = encode_validation(y_val, labels.classes)
            usable = np.ones(len(val_images), dtype=bool)
            usable[[i for i, _ in self._bad_images(val_images)]] = False  # raises unless skip
            return images, labels, kept, (val_images[usable], y_enc[usable])
        if self.validation_fraction is None:
            return images, labels, kept, None
        held = holdout_mask(labels.y_encoded, float(self.validation_fraction))
        if not held.any():
            raise ValueError(
                f"{name}: validation_fraction={self.validation_fraction} holds out no image "
                "(each class keeps at least one training image); raise it or pass "
                "validation_data to fit"
            )
        kept = kept.copy()
        kept[np.flatnonzero(kept)[held]] = False
        return images[~held], split_labels(labels, ~held), kept, (images[held], labels.y_encoded[held])

    def __getstate__(self):
        # A copy: object.__getstate__ returns the instance's own __dict__,
        # and pickling must not drop callbacks from the live estimator.
        state = dict(super().__getstate__())
        state["callbacks"] = picklable_callbacks(state.get("callbacks"), type(self).__name__)
        return state

    def _check_y(self, y) -> None:
        """Checks of ``y`` before the labels are resolved."""

    def _check_labels(self, labels) -> None:
        """Checks of the resolved labels."""

    #: The engine task class _make_task builds (its history entries are
    #: known before the fit).
    _task_type: type

    @abstractmethod
    def _make_task(self, network, backbone, paths, labels, seed: int, device):
        """The engine task that trains ``network`` (a ``_task_type``)."""

    def _task_results(self, task, labels, kept) -> dict:
        """Extra fitted attributes from the finished task."""
        return {}

    def _seed(self) -> int:
        if self.random_state is None:
            # Fresh entropy without drawing from (and so advancing) numpy's
            # global generator.
            return int(np.random.default_rng().integers(np.iinfo(np.int32).max))
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _training_images(self, X, y, class_names, carried=None):
        """Validated paths and labels, bad images handled per ``on_bad_image``.

        Returns the kept paths and their labels, the skipped ``(path,
        reason)`` pairs and the boolean mask of kept images over ``X``.
        """
        allow_unlabeled = self._allow_unlabeled
        # With a check pass, it reports missing files too, in index order.
        paths = self._images(X)
        names_arg = self._class_names_for(class_names, len(paths), carried)
        labels = self._labels(paths, y, names_arg, allow_unlabeled=allow_unlabeled)
        bad = self._bad_images(paths)
        skipped = [(paths.name(i), reason) for i, reason in bad]
        keep = np.ones(len(paths), dtype=bool)
        if skipped and len(skipped) == len(paths):
            raise ValueError(
                f"no usable training image is left: all {len(paths)} are unusable (e.g. "
                f"{skipped[0][0]!r}: {skipped[0][1]}), and on_bad_image='skip' leaves them out"
            )
        if skipped:
            keep[[i for i, _ in bad]] = False
            lost = [(paths.name(i), reason) for i, reason in bad if labels.y_encoded[i] >= 0]
            if lost and not (labels.y_encoded[keep] >= 0).any():
                raise ValueError(
                    f"no labeled training image is left: all {len(lost)} are unusable (e.g. "
                    f"{lost[0][0]!r}: {lost[0][1]}), and on_bad_image='skip' leaves them out"
                )
            warnings.warn(
                f"skipping {len(skipped)} unusable training image(s), e.g. "
                f"{skipped[0][0]!r}: {skipped[0][1]} (see skipped_images_)",
                LiftLearnWarning, stacklevel=5,
            )
            paths = paths[keep]
            # The classes stay those of y (as ZeroShotClassifier's do): a
            # class whose only image is unusable keeps its column and name.
            labels = split_labels(labels, keep)
        return paths, labels, skipped, keep

    _prediction_params = (*CLIPClassifier._prediction_params, "device_batch_size")

    def _forward_batch_size(self) -> int:
        # device_batch_size is what fits the device: prediction, validation
        # and the data-based initialisation keep to it too.
        return int(self.batch_size if self.device_batch_size is None else self.device_batch_size)

    def _check_checkpoint_dir(self) -> None:
        """Refuse a ``checkpoint_dir`` that is a file or cannot be written
        (creating it if needed), naming the parameter."""
        if self.checkpoint_dir is not None:
            check_writable_dir(self.checkpoint_dir, f"{type(self).__name__}: checkpoint_dir")

    def _checkpoint(self, paths, labels, spec=None, validation=None):
        """This run's checkpoint, keyed as build tools key their targets: the
        estimator, its parameters, every image's path, size and modification
        time (so changed contents under the same names start a new run), the
        backbone's weight files likewise (the pretrained file, the files of
        a ``local-dir:`` folder), the labels and the class names, and the
        ``validation_data`` images and labels (whose scores the history
        holds)."""
        if self.checkpoint_dir is None:
            return None
        # The held-out images already change the hashed training images;
        # callbacks watch the run without changing it.
        ignore = {"verbose", "num_workers", "device", "checkpoint_dir", "check_images", "on_bad_image",
                  "validation_fraction", "callbacks"}
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in ignore}
        if not isinstance(params.get("random_state"), Integral):
            params.pop("random_state", None)  # resume whatever run was saved
        h = hashlib.sha256(b"liftlearn checkpoint key 2\0")
        h.update(_utf8(type(self).__name__))
        h.update(_utf8(repr(sorted((k, repr(v)) for k, v in params.items()))))
        if isinstance(self.pretrained, (str, os.PathLike)) and os.path.isfile(self.pretrained):
            h.update(repr(_file_signature(self.pretrained)).encode())
        # Added only where they apply, so that the keys of runs without them
        # stay those earlier releases wrote (and their checkpoints resume).
        if spec is not None and spec.name.startswith("local-dir:"):
            h.update(b"\0local-dir\0" + repr(_source_signature(spec)).encode())
        # Files: each path, size and mtime; images in memory: their pixels.
        paths.update_key(h)
        h.update(labels.y_encoded.tobytes())
        h.update(_utf8("\0".join(labels.names)))
        if validation is not None:
            val_images, y_val = validation
            h.update(b"\0validation\0")
            val_images.update_key(h)
            h.update(np.asarray(y_val, dtype=np.int64).tobytes())
        if not isinstance(paths, PathSource):
            return Checkpoint(self.checkpoint_dir, h.hexdigest())
        newest = max((mtime for _, mtime in paths.signatures()), default=0)
        return Checkpoint(self.checkpoint_dir, h.hexdigest(),
                          legacy_key=self._legacy_checkpoint_key(params, paths.paths, labels),
                          inputs_mtime_ns=newest)

    def _legacy_checkpoint_key(self, params, paths, labels):
        """The key of releases that hashed paths only (None where those
        releases could not hash the names), so their checkpoints resume."""
        h = hashlib.sha256()
        try:
            h.update(type(self).__name__.encode())
            h.update(repr(sorted((k, repr(v)) for k, v in params.items())).encode())
            h.update("\0".join(map(str, paths)).encode())
            h.update(labels.y_encoded.tobytes())
            h.update("\0".join(labels.names).encode())
        except UnicodeEncodeError:
            return None
        return h.hexdigest()

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=int(self.epochs),
            batch_size=int(self.batch_size),
            device_batch_size=None if self.device_batch_size is None else int(self.device_batch_size),
            lr=float(self.lr),
            momentum=float(self.momentum),
            weight_decay=float(self.weight_decay),
            # More workers than CPUs: warned about once, here, and clamped.
            num_workers=clamp_workers(None if self.num_workers is None else int(self.num_workers)),
            verbose=int(self.verbose),
            compile=bool(self.compile),
        )

    # ------------------------------------------------------------- network
    def _build_network(self, backbone, class_names, seed: int) -> LiftNetwork:
        """The untrained network for these parameters: tuner seeded by
        ``seed``, head of kind ``classifier`` (cosine where the estimator has
        no such parameter) initialised per ``classifier_init`` (semantic
        rows until :meth:`_init_head_from_data` replaces them)."""
        tuner = self._build_tuner(backbone, len(class_names), seed)
        return LiftNetwork(backbone, tuner, self._build_head(backbone, class_names, seed))

    def _classifier_init(self, backbone) -> "str | None":
        """``classifier_init`` with "auto" resolved for ``backbone``: the
        semantic rows where there is a text encoder, else the class means
        (LIFT+'s choice for its non-CLIP backbones). Semantic where the
        estimator has no such parameter."""
        init = getattr(self, "classifier_init", "semantic")
        if init == "auto":
            return "class_mean" if backbone.kind == "timm" else "semantic"
        return init

    def _build_head(self, backbone, class_names, seed: int):
        kind = getattr(self, "classifier", "cosine")
        init = self._classifier_init(backbone)
        if kind == "cosine" and init == "semantic":
            # LIFT+'s default, exactly as before the other heads existed.
            return CosineClassifier(self._semantic_init(backbone, class_names), scale=float(self.scale))
        if init is None or backbone.kind == "timm":
            # Random rows (seeded); without a text encoder they are also the
            # rows of classes without training images under the data inits.
            generator = torch.Generator().manual_seed(int(seed))
            weight = random_class_vectors(len(class_names), backbone.feature_dim, generator)
        else:
            # "class_mean" and "linear_probing" start from the semantic rows:
            # they stay for classes without training images.
            weight = F.normalize(self._semantic_init(backbone, class_names).float(), dim=-1)
        return make_classifier(kind, weight, scale=float(self.scale))

    def _init_head_from_data(self, network, backbone, paths, labels, seed: int, device) -> None:
        """Replace the head's rows by ``classifier_init="class_mean"`` or
        ``"linear_probing"`` rows computed from the training images.

        As LIFT+ does: at most 100 images per class (a seeded draw), the
        evaluation transform, the features of the network at initialisation
        (the frozen encoder with the untrained tuner), rows normalised.
        Classes without training images keep their semantic row (with a
        warning); so do all classes when fewer than two have images for the
        logistic regression.
        """
        init = self._classifier_init(backbone)
        if init not in ("class_mean", "linear_probing"):
            return
        y = np.asarray(labels.y_encoded)
        n_classes = len(labels.names)
        rng = np.random.default_rng([int(seed), 2])
        chosen = np.sort(np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[:_INIT_MAX_PER_CLASS] for c in range(n_classes)]
        ).astype(np.int64))
        features = predict_images(
            FeatureNetwork(backbone, network.tuner, normalize=False), backbone,
            paths[chosen], tte=False, tte_expand=0,
            batch_size=min(64, self._forward_batch_size()), device=device,
            num_workers=None if self.num_workers is None else int(self.num_workers),
        )
        rows, missing = data_init_rows(init, features, y[chosen], n_classes)
        if missing:
            names = [labels.names[c] for c in missing[:5]]
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            warnings.warn(
                f"classifier_init={init!r}: {len(missing)} class(es) without a row from the "
                f"training images (no image, or fewer than two classes with images) "
                f"keep their initial row (semantic; random without a text encoder): "
                f"({', '.join(map(repr, names))}{more})",
                LiftLearnWarning, stacklevel=4,
            )
        with torch.no_grad():
            weight = network.head.weight
            keep = torch.as_tensor([c in set(missing) for c in range(n_classes)])
            new = torch.as_tensor(rows, dtype=weight.dtype, device=weight.device)
            weight.copy_(torch.where(keep.to(weight.device)[:, None], weight, new))

    def _build_tuner(self, backbone, n_classes: int, seed: int):
        layers = self.adapter_layers
        if isinstance(layers, Integral):
            layers = int(layers)
        elif layers is not None:
            layers = [int(i) for i in layers]
        dim = None if self.adapter_dim is None else int(self.adapter_dim)
        # The weights a method copies (their fp32 values), looked up before
        # the lock below: the lookup may build a backbone, under the backbone
        # cache's lock, which a thread building a backbone holds while it
        # waits for the lock below.
        source = weights_source(self.adapter, backbone)
        # nn.Linear and friends initialise from torch's global generator:
        # seed it under the process-wide lock, so that fits in other threads
        # neither perturb nor see this draw, and restore the caller's state.
        options = self._tuner_options()
        with seeded_global_rng(seed):
            if options:
                return build_tuner(self.adapter, backbone, n_classes, dim, layers=layers,
                                   method_options=options, source=source)
            return build_tuner(self.adapter, backbone, n_classes, dim, layers=layers, source=source)

    def _tuner_options(self) -> dict:
        """The fine-tuning method's own options (e.g. "aft"'s ratio); none
        here."""
        return {}

    def _semantic_init(self, backbone, class_names):
        return semantic_init(backbone, class_names, self.prompt_template)

    def _fitted_from_module(self, module) -> dict:
        tuner = module.tuner
        n_adapter = tuner.n_trainable_params()
        return {
            "adapter_dim_": tuner.adapter_dim,
            "n_adapter_params_": n_adapter,
            "trainable_fraction_": n_adapter / sum(
                p.numel() for p in module.backbone.visual.parameters()
            ),
            "n_trainable_params_": module.n_trainable_params(),
        }

    def _empty_module(self, backbone, fitted: dict):
        """An untrained network of the fitted shape, for model files."""
        return self._build_network(backbone, fitted["class_names_"], seed=0)
