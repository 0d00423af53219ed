"""The abstract bases of liftlearn's scikit-learn estimators.

- :class:`CLIPEstimator`: what all five share: the backbone and prediction
  parameters with their constraints, the parameter check run once per fit
  (and, for the parameters prediction reads, once per prediction),
  the fitted state (set and reset at once), path input tags, the prediction
  path and loading on another device.
- :class:`CLIPClassifier`: class names (and the guard against a
  cross-validation splitter slicing them), labels, and
  ``decision_function``/``predict_proba``/``predict``/``score``.

Concrete estimators are a constructor, a constraints table and one or two
hooks each.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from abc import ABC
from collections.abc import Mapping
from numbers import Integral

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d

from .._device import PRECISIONS, map_device, resolve_device, resolve_precision
from .._labels import class_names_problem, resolve_labels
from .._logging import verbosity
from .._validation import (
    MAX_TTE_EXPAND, Boolean, Interval, Options, PathLike, Predicate, is_prompt_template, validate_params,
)
from ..image_sources import as_image_source, image_labels
from ..engine.predict import predict_images
from ..exceptions import BadImageError, LiftLearnWarning, UnknownLabelWarning
from ..nn.backbones import BackboneSpec, check_local_dir
from ..nn.timm_backbones import is_timm_name
from ..nn.heads import prompt_templates

__all__ = [
    "CLIPClassifier",
    "CLIPEstimator",
    "fit_context",
    "path_input_tags",
    "prompt_template_constraint",
]


def path_input_tags(tags):
    """scikit-learn tags of an estimator whose X is a sequence of image paths.

    ``two_d_array=False`` stops scikit-learn's common checks from feeding
    numeric matrices (they skip such estimators; liftlearn's own tests run
    path-based versions), and ``string=True`` says X holds strings.
    """
    tags.input_tags.two_d_array = False
    tags.input_tags.string = True
    return tags


def _is_device(value) -> bool:
    return isinstance(value, torch.device) or (isinstance(value, str) and bool(value))


def _is_backbone_name(value) -> bool:
    return isinstance(value, str) and bool(value)


def fit_context(fit):
    """Decorate ``fit``: check the parameters first; on any failure or
    interruption leave the estimator unfitted (no half-fitted state, nor the
    previous fit's state mixed with this one's)."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        try:
            self._validate_params()
            self._check_param_relations()
            self._check_fit_relations()
            with verbosity(self.verbose):  # verbose sets the liftlearn logger's level
                return fit(self, *args, **kwargs)
        except BaseException:
            self._reset_fitted()
            raise

    return wrapper


class CLIPEstimator(BaseEstimator, ABC):
    """Base of every liftlearn estimator: a frozen CLIP backbone, image paths
    in, one row per image out.

    Subclasses declare their constructor (keyword-only, as scikit-learn's
    estimators do), merge ``_parameter_constraints`` and implement ``fit``.
    The fitted network is ``module_`` in every estimator.
    """

    _parameter_constraints: dict = {
        "backbone": [Predicate(_is_backbone_name, "a non-empty open_clip model name")],
        "pretrained": [PathLike(), None],
        "tte": [Boolean()],
        # Images are resized to resolution + tte_expand: a bound keeps a typo
        # (10**6) from allocating gigapixel images.
        "tte_expand": [Interval(Integral, 0, MAX_TTE_EXPAND)],
        "batch_size": [Interval(Integral, 1)],
        "device": [Predicate(_is_device, "'auto', a device name such as 'cpu' or 'cuda:0', or a torch.device")],
        "precision": [Options(PRECISIONS)],
        "num_workers": [Interval(Integral, 0), None],
        "verbose": [Interval(Integral, 0), Boolean()],
        "check_images": [Options(("header", "decode")), None],
        "on_bad_image": [Options(("raise", "skip"))],
    }

    #: Fitted attributes computed from ``module_`` (not stored in model files).
    _derived_fitted: tuple = ()

    def __sklearn_tags__(self):
        return path_input_tags(super().__sklearn_tags__())

    # ------------------------------------------------------------ checking
    def _validate_params(self) -> None:
        """Check every parameter against ``_parameter_constraints``.

        The same contract as scikit-learn's hook of this name: raises
        :class:`~liftlearn._validation.InvalidParameterError` naming the
        parameter, returns None.
        """
        validate_params(self._parameter_constraints, self.get_params(deep=False), type(self).__name__)

    def _check_fit_relations(self) -> None:
        """Rules of parameters that only training reads, checked by ``fit``
        but not when a model file is loaded: a file saved before a rule
        existed still loads and predicts."""

    #: Why the estimator needs CLIP's text encoder (a sentence for the
    #: error), or None where it needs none: a timm backbone, which has no
    #: text encoder, is then refused by its name before anything runs.
    _needs_text_encoder: "str | None" = None

    def _check_param_relations(self) -> None:
        """Rules that tie two parameters together (after the table check)."""
        self._check_text_encoder()
        self._check_image_checks()

    def _check_text_encoder(self) -> None:
        if self._needs_text_encoder is not None and is_timm_name(self.backbone):
            raise ValueError(
                f"{type(self).__name__}: backbone={self.backbone!r} has no text encoder; "
                f"{self._needs_text_encoder}"
            )

    def _check_image_checks(self) -> None:
        if self.on_bad_image == "skip" and self.check_images is None:
            raise ValueError(
                f"{type(self).__name__}: on_bad_image='skip' needs check_images='header' or 'decode'"
            )

    #: Parameters prediction reads: set_params after a fit is their normal
    #: use (TTE on or off, a batch size for another device), so prediction
    #: checks them too.
    _prediction_params: tuple = ("tte", "tte_expand", "batch_size", "num_workers", "verbose",
                                 "check_images", "on_bad_image", "precision")

    def _check_prediction_params(self) -> None:
        """Check the parameters prediction reads, as ``fit`` would, before
        any image is read (``tte="False"``, a str, would otherwise be true)."""
        # An estimator pickled before a parameter existed lacks it.
        names = [name for name in self._prediction_params if hasattr(self, name)]
        validate_params({name: self._parameter_constraints[name] for name in names},
                        {name: getattr(self, name) for name in names}, type(self).__name__)
        self._check_image_checks()

    def _backbone_spec(self) -> BackboneSpec:
        """The backbone a fit loads, with the checks only a fit makes."""
        spec = BackboneSpec.create(self.backbone, self.pretrained)
        check_local_dir(spec)
        return spec

    def _forward_batch_size(self) -> int:
        """Images per forward pass of prediction (what fits device memory)."""
        return int(self.batch_size)

    def _resolve_device(self) -> torch.device:
        return resolve_device(self.device)

    def _compute_dtype(self, device, strict: bool = True) -> torch.dtype:
        """The dtype ``precision`` computes in on ``device`` (estimators
        pickled before ``precision`` existed: "auto"); ``strict=False`` for a
        model loaded on another device (see :func:`resolve_precision`)."""
        return resolve_precision(getattr(self, "precision", "auto"), device, strict)

    # -------------------------------------------------------- fitted state
    def _fitted_from_module(self, module) -> dict:
        """Fitted attributes derived from ``module_`` (see ``_derived_fitted``)."""
        return {}

    def _set_fitted(self, *, module_, device_, **attrs) -> None:
        """Replace the fitted state at once (``fit`` and the model loaders)."""
        self._reset_fitted()
        attrs.update(self._fitted_from_module(module_))
        for name, value in {"module_": module_, "device_": device_, **attrs}.items():
            setattr(self, name, value)
        # A loaded model's network comes on the fp32 backbone: hold it in
        # this estimator's precision (a no-op after fit).
        module_.to_device(device_, self._compute_dtype(device_, strict=False))

    def _reset_fitted(self) -> None:
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)

    def __setstate__(self, state):
        state = self._upgrade_state(dict(state))
        # An estimator pickled before some of its parameters existed
        # (check_images, precision, callbacks, ...): give those the
        # constructor defaults, so get_params, clone and refit work.
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                state.setdefault(name, param.default)
        super().__setstate__(state)
        if "module_" in state:
            # Fitted on a GPU, loaded where there is none: predict on the CPU.
            self.device_ = map_device(self.device_)
            self.module_.to_device(self.device_, self._compute_dtype(self.device_, strict=False))

    def _upgrade_state(self, state: dict) -> dict:
        """Turn a pickled state of an older release into this one's."""
        return state

    # ------------------------------------------------------------ predicting
    def _images(self, X):
        """``X`` (paths, in-memory images, a Dataset, ...) as an image source
        (:func:`liftlearn.image_sources.as_image_source`); missing files are
        named here unless a ``check_images`` pass will report them."""
        return as_image_source(X, must_exist=self.check_images is None)

    def _bad_images(self, images) -> list:
        """The ``(index, reason)`` pairs of the unusable images among
        ``images`` (an image source, per ``check_images``), in index order.

        Raises :class:`~liftlearn.BadImageError` naming the first one unless
        ``on_bad_image="skip"``.
        """
        if not self.check_images:
            return []
        bad = images.problems(self.check_images)
        if bad and self.on_bad_image != "skip":
            i, reason = bad[0]
            more = f" ({len(bad) - 1} more bad image(s) follow)" if len(bad) > 1 else ""
            raise BadImageError(images.name(i), reason + more)
        return bad

    def _n_outputs(self) -> int:
        """Columns of :meth:`_predict_outputs` (for rows of skipped images)."""
        raise NotImplementedError

    def _predict_outputs(self, X) -> np.ndarray:
        """``module_``'s outputs for the images, averaged over TTE views.

        Every image is checked first (``check_images``), so that a bad file
        is named before any prediction time is spent. With
        ``on_bad_image="skip"`` a bad image gets a row of NaN (rows are never
        dropped: row i is image i) and one warning says how many.
        """
        check_is_fitted(self)
        self._check_prediction_params()
        paths = self._images(X)
        bad = self._bad_images(paths)
        keep = np.ones(len(paths), dtype=bool)
        keep[[i for i, _ in bad]] = False
        module = self.module_
        # precision set after the fit applies, as it does once the model is
        # pickled or saved and loaded (those rebuild the backbone from it).
        module.to_device(self.device_, self._compute_dtype(self.device_, strict=False))
        outputs = None
        if keep.any():
            with verbosity(self.verbose):  # verbose sets the liftlearn logger's level
                outputs = predict_images(
                    module, module.backbone, paths[keep], tte=bool(self.tte),
                    tte_expand=int(self.tte_expand), batch_size=self._forward_batch_size(),
                    device=module.device, num_workers=self.num_workers, verbose=int(self.verbose),
                )
        if not bad:
            return outputs
        i, reason = bad[0]
        warnings.warn(
            f"{len(bad)} of {len(paths)} image(s) could not be used and were not "
            f"predicted, e.g. {paths.name(i)!r}: {reason}; {self._skipped_rows_are}",
            LiftLearnWarning, stacklevel=3,
        )
        full = np.full((len(paths), self._n_outputs()), np.nan, dtype=np.float32)
        if outputs is not None:
            full[keep] = outputs
        return full

    #: What the skip warning says skipped images get.
    _skipped_rows_are = "their rows are NaN"


def _is_class_names(value) -> bool:
    # Sized and iterable (a generator would be used up by the check), and
    # ordered, distinct, non-blank names (see class_names_problem).
    return (
        hasattr(value, "__len__")
        and hasattr(value, "__iter__")
        and class_names_problem(value) is None
    )


class CLIPClassifier(ClassifierMixin, CLIPEstimator):
    """Base of the classifiers: class names, labels, predict and score."""

    _parameter_constraints: dict = {
        **CLIPEstimator._parameter_constraints,
        "class_names": [
            Predicate(_is_class_names, "a non-empty list (ordered: not a set) of distinct, "
                                       "non-blank names or a mapping label -> name"),
            None,
        ],
        "prompt_template": [Predicate(
            is_prompt_template, "a str with exactly one '{}' where the class name goes",
        )],
    }

    def _class_names_for(self, class_names, n_samples: int, carried=None):
        """The fit argument if given, else the parameter, else ``carried``
        (the names an input that brings its own labels carries, see
        :func:`carried_class_names`).

        scikit-learn's cross-validation tools slice every fit argument whose
        length equals the number of samples, so a fit argument of that
        length may be a fold's slice rather than the names: refuse it rather
        than train on the wrong names.
        """
        if class_names is None:
            return self.class_names if self.class_names is not None else carried
        if not isinstance(class_names, (str, bytes)) and hasattr(class_names, "__len__") \
                and len(class_names) == n_samples:
            raise ValueError(
                f"class_names passed to fit has as many entries as X ({n_samples}); "
                "GridSearchCV and cross_validate slice such fit arguments per fold, so "
                "they cannot be told apart from a slice. Pass class_names to the "
                f"constructor instead: {type(self).__name__}(class_names=...)"
            )
        return class_names

    def _labels(self, paths, y, names, *, allow_unlabeled: bool = False):
        """Classes, names, encoded targets and counts of ``y`` (checked
        against ``X``'s length); ``names`` as :meth:`_class_names_for`
        returned them."""
        if y is None:
            # scikit-learn's wording (BaseEstimator._validate_data).
            raise ValueError(
                f"This {type(self).__name__} estimator requires y to be passed, but the "
                "target y is None: fit learns the classes from the labels"
            )
        # scikit-learn's target check (continuous y and friends) runs in there.
        labels = resolve_labels(y, names, allow_unlabeled=allow_unlabeled)
        if len(labels.y_encoded) != len(paths):
            raise ValueError(
                f"X has {len(paths)} images but y has {len(labels.y_encoded)} labels"
            )
        return labels

    def _n_outputs(self) -> int:
        return len(self.classes_)

    _skipped_rows_are = (
        "their rows of decision_function and predict_proba are NaN and predict "
        "gives them -1 (see the on_bad_image parameter)"
    )

    def decision_function(self, X):
        """Class logits, averaged over the TTE views when ``tte`` is on.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column
            The images (see :mod:`liftlearn.image_sources`). All are checked (``check_images``) before any is
            predicted.

        Returns
        -------
        logits : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            A row of NaN for an image skipped by ``on_bad_image="skip"``.
            With two classes, scikit-learn's binary form (what its
            ``roc_auc`` and ``average_precision`` scorers read): the logit
            of ``classes_[1]`` less that of ``classes_[0]``, positive where
            ``classes_[1]`` is predicted.
        """
        logits = self._predict_outputs(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities: the softmax of the class logits (what
        :meth:`decision_function` returns with more than two classes).

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; a row of NaN for an image
            skipped by ``on_bad_image="skip"``.
        """
        return softmax(self._predict_outputs(X).astype(np.float64), axis=1)

    def _predict_with_mask(self, X):
        """Predicted labels and the mask of skipped images."""
        scores = self._predict_outputs(X)
        skipped = np.isnan(scores).any(axis=1)
        y_pred = self.classes_[np.argmax(scores, axis=1)]
        if skipped.any():
            y_pred = _mark_unpredicted(y_pred, skipped, self.classes_)
        return y_pred, skipped

    def predict(self, X):
        """Most likely class of each image.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``. An image skipped by
            ``on_bad_image="skip"`` gets -1, scikit-learn's mark for "no
            label" (as in ``ULFineClassifier.transduction_``); the array then
            has object dtype unless the classes are signed integers, and
            holds None instead if -1 is itself a class.
        """
        check_is_fitted(self)
        return self._predict_with_mask(X)[0]

    def _scored_samples(self, y_true: np.ndarray):
        """The samples ``score`` scores: a boolean mask over ``y_true``, or
        None for all of them."""
        return None

    def score(self, X, y, sample_weight=None):
        """Accuracy, as ``sklearn.metrics.accuracy_score``.

        Parameters
        ----------
        X : image paths, PIL images, uint8 array(s), torch Dataset or datasets column
        y : array-like of shape (n_samples,) or None
            None takes the labels a torch Dataset or ``datasets.Dataset`` ``X``
            carries.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
            The (weighted) share of images predicted correctly. Images
            skipped by ``on_bad_image="skip"`` count as errors.

        Warns
        -----
        UnknownLabelWarning
            Once, naming the labels of ``y`` the model was not fitted with:
            they can never be predicted and count as errors, as in
            scikit-learn's accuracy. ``cross_val_score`` on long-tailed data
            meets them when a rare class falls only in a test fold.
        """
        check_is_fitted(self)
        # X's shape first (its own message for a single path), no file access yet.
        images = as_image_source(X, must_exist=False)
        y = image_labels(images, y)  # a Dataset's own labels when y is None
        if y is None:
            raise ValueError("score needs y (X carries no labels)")
        y_true = column_or_1d(np.asarray(y, dtype=object), warn=True)
        check_consistent_length(np.empty(len(images)), y_true, sample_weight)
        scored = self._scored_samples(y_true)
        if scored is not None:
            X, y_true = images[scored], y_true[scored]
            sample_weight = None if sample_weight is None else np.asarray(sample_weight)[scored]
        known = set(self.classes_.tolist())
        unknown = sorted({repr(v) for v in y_true.tolist() if v not in known})
        if unknown:
            warnings.warn(
                f"y has {len(unknown)} label(s) the model was not fitted with: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; they "
                "can never be predicted and count as errors. Name every class with "
                "class_names in the constructor to give each one a column in every "
                f"fold (known classes: {self.classes_.tolist()[:10]}"
                f"{' ...' if len(self.classes_) > 10 else ''})",
                UnknownLabelWarning, stacklevel=2,
            )
        y_pred, skipped = self._predict_with_mask(X)
        # Compared as Python objects: no dtype casting between y and classes_
        # (np.asarray would turn [0, "cat"] into strings).
        correct = np.equal(np.asarray(y_pred, dtype=object), y_true).astype(bool) & ~skipped
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return float(np.average(correct, weights=weights))


def _mark_unpredicted(y_pred: np.ndarray, skipped: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``y_pred`` with -1 (None if -1 is a class) where ``skipped``."""
    minus_one_is_class = -1 in classes.tolist()
    if classes.dtype.kind == "i" and not minus_one_is_class:
        out = y_pred.copy()
    else:
        out = y_pred.astype(object)
    out[skipped] = None if minus_one_is_class else -1
    return out


def prompt_template_constraint(ensemble: bool) -> list:
    """The ``prompt_template`` constraint: one template, or also a list."""
    if not ensemble:
        return CLIPClassifier._parameter_constraints["prompt_template"]

    def ok(value):
        return all(is_prompt_template(t) for t in prompt_templates(value))

    return [Predicate(ok, "a str with exactly one '{}' where the class name goes, or a "
                          "non-empty list of such str (a prompt ensemble)")]
