"""The abstract bases of liftlearn's scikit-learn estimators.

- :class:`CLIPEstimator`: what all four share: the backbone and prediction
  parameters with their constraints, the parameter check run once per fit,
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
from abc import ABC
from collections.abc import Mapping
from numbers import Integral

import numpy as np
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .._device import map_device, resolve_device
from .._labels import resolve_labels
from .._logging import verbosity
from .._validation import Boolean, Interval, PathLike, Predicate, validate_params
from ..data import check_paths
from ..engine.predict import predict_images
from ..nn.backbones import BackboneSpec
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
        "tte_expand": [Interval(Integral, 0)],
        "batch_size": [Interval(Integral, 1)],
        "device": [Predicate(_is_device, "'auto', a device name such as 'cpu' or 'cuda:0', or a torch.device")],
        "num_workers": [Interval(Integral, 0), None],
        "verbose": [Interval(Integral, 0)],
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

    def _check_param_relations(self) -> None:
        """Rules that tie two parameters together (after the table check)."""

    def _backbone_spec(self) -> BackboneSpec:
        return BackboneSpec.create(self.backbone, self.pretrained)

    def _resolve_device(self) -> torch.device:
        return resolve_device(self.device)

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

    def _reset_fitted(self) -> None:
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)

    def __setstate__(self, state):
        state = self._upgrade_state(dict(state))
        super().__setstate__(state)
        if "module_" in state:
            # Fitted on a GPU, loaded where there is none: predict on the CPU.
            self.device_ = map_device(self.device_)
            self.module_.to_device(self.device_)

    def _upgrade_state(self, state: dict) -> dict:
        """Turn a pickled state of an older release into this one's."""
        return state

    # ------------------------------------------------------------ predicting
    def _predict_outputs(self, X) -> np.ndarray:
        """``module_``'s outputs for the images, averaged over TTE views."""
        check_is_fitted(self)
        module = self.module_
        with verbosity(self.verbose):  # verbose sets the liftlearn logger's level
            return predict_images(
                module, module.backbone, check_paths(X), tte=bool(self.tte),
                tte_expand=int(self.tte_expand), batch_size=int(self.batch_size),
                device=module.device, num_workers=self.num_workers, verbose=int(self.verbose),
            )


def _is_class_names(value) -> bool:
    if isinstance(value, Mapping):
        return len(value) > 0
    return (
        not isinstance(value, (str, bytes))
        and hasattr(value, "__len__")
        and hasattr(value, "__iter__")
        and len(value) > 0
    )


class CLIPClassifier(ClassifierMixin, CLIPEstimator):
    """Base of the classifiers: class names, labels, predict and score."""

    _parameter_constraints: dict = {
        **CLIPEstimator._parameter_constraints,
        "class_names": [
            Predicate(_is_class_names, "a non-empty sequence of names or a mapping label -> name"),
            None,
        ],
        "prompt_template": [Predicate(
            lambda v: isinstance(v, str) and "{}" in v,
            "a str with one '{}' where the class name goes",
        )],
    }

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

    def _labels(self, paths, y, names, *, allow_unlabeled: bool = False):
        """Classes, names, encoded targets and counts of ``y`` (checked
        against ``X``'s length); ``names`` as :meth:`_class_names_for`
        returned them."""
        labels = resolve_labels(y, names, allow_unlabeled=allow_unlabeled)
        if len(labels.y_encoded) != len(paths):
            raise ValueError(
                f"X has {len(paths)} images but y has {len(labels.y_encoded)} labels"
            )
        return labels

    def decision_function(self, X):
        """Class logits, averaged over the TTE views when ``tte`` is on.

        Parameters
        ----------
        X : sequence of str or os.PathLike
            Image files.

        Returns
        -------
        logits : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        return self._predict_outputs(X)

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


def prompt_template_constraint(ensemble: bool) -> list:
    """The ``prompt_template`` constraint: one template, or also a list."""
    if not ensemble:
        return CLIPClassifier._parameter_constraints["prompt_template"]

    def ok(value):
        prompt_templates(value)
        return True

    return [Predicate(ok, "a str with one '{}' where the class name goes, or a "
                          "non-empty list of such str (a prompt ensemble)")]
