"""Watching a fit: validation scores per epoch and the callbacks.

:class:`FitWatcher` is the *monitor* :func:`liftlearn.engine.fit_task`
calls after each epoch (the engine computes no metric itself: the metrics
import scikit-learn, which the engine never does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import warnings

import numpy as np

from ..callbacks import HOOKS, Callback
from ..engine import predict_images
from ..exceptions import LiftLearnWarning
from ..image_sources import as_image_source
from ..metrics import UndefinedClassWarning, balanced_accuracy, shot_accuracy

__all__ = ["FitWatcher", "check_callbacks", "holdout_mask", "is_callback_list", "picklable_callbacks"]

#: The seed of ``validation_fraction``'s split: the same split every fit.
HOLDOUT_SEED = 0

#: History entries of a validated epoch.
VAL_KEYS = ("val_accuracy", "val_balanced_accuracy", "val_many_shot_accuracy",
            "val_medium_shot_accuracy", "val_few_shot_accuracy")


def is_callback_list(value) -> bool:
    """A list or tuple of objects with at least one callback hook."""
    return isinstance(value, (list, tuple)) and all(
        any(callable(getattr(cb, h, None)) for h in HOOKS) for cb in value
    )


def picklable_callbacks(callbacks, owner: str):
    """``callbacks`` if they pickle, else None with a warning."""
    if not callbacks:
        return callbacks
    try:
        pickle.dumps(callbacks)
    except Exception as exc:  # noqa: BLE001 - any pickling failure
        warnings.warn(
            f"{owner}: callbacks={callbacks!r} cannot be pickled ({type(exc).__name__}: {exc}); "
            "they are left out of the pickle (callbacks=None there)",
            LiftLearnWarning, stacklevel=3,
        )
        return None
    return callbacks


def holdout_mask(y_encoded: np.ndarray, fraction: float) -> np.ndarray:
    """A stratified validation mask over the labeled images (``y >= 0``).

    Each class holds out ``round(fraction * n_c)`` of its ``n_c`` images,
    but keeps at least one for training (so every class is still trained
    on); drawn with a fixed seed, so every fit of the same labels holds out
    the same images.
    """
    y = np.asarray(y_encoded)
    rng = np.random.default_rng(HOLDOUT_SEED)
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y[y >= 0]):
        members = np.flatnonzero(y == c)
        n_out = min(int(round(fraction * len(members))), len(members) - 1)
        mask[rng.permutation(members)[:n_out]] = True
    return mask


def split_labels(labels, mask: np.ndarray):
    """``labels`` (a LabelInfo) restricted to ``mask``, counts recounted."""
    enc = labels.y_encoded[mask]
    counts = np.bincount(enc[enc >= 0], minlength=len(labels.classes))
    return dataclasses.replace(labels, y_encoded=enc, counts=counts)


def encode_validation(y_val, classes: np.ndarray) -> np.ndarray:
    """``y_val`` as indices into ``classes``; unknown labels are refused."""
    index = {c: i for i, c in enumerate(classes.tolist())}
    values = np.asarray(y_val, dtype=object).reshape(-1).tolist()
    unknown = sorted({repr(v) for v in values if v not in index})
    if unknown:
        raise ValueError(
            f"validation_data has label(s) that are not classes of the training data: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
        )
    return np.asarray([index[v] for v in values], dtype=np.int64)


def validation_source(estimator, validation_data):
    """``(images, y)`` of a ``validation_data`` fit argument, checked."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError(
            f"validation_data must be a pair (X_val, y_val), got {type(validation_data).__name__}"
        )
    X_val, y_val = validation_data
    images = as_image_source(X_val, name="validation_data[0]",
                             must_exist=estimator.check_images is None)
    if y_val is None:
        y_val = images.labels()
    if y_val is None or len(y_val) != len(images):
        raise ValueError(
            f"validation_data has {len(images)} images but "
            f"{'no' if y_val is None else len(y_val)} labels"
        )
    return images, y_val


def check_callbacks(callbacks, keys: tuple, validated: bool) -> None:
    """What can be known of ``callbacks`` before a fit: each
    :class:`~liftlearn.callbacks.Callback`'s ``check`` with the history
    entries ``keys`` (and ``VAL_KEYS`` when the fit is ``validated``).

    Other objects are callbacks by their hooks alone, so their attributes
    are their own business, but for one rule of every release: a string
    ``monitor`` naming a validation score needs validation.
    """
    if validated:
        keys = (*keys, *VAL_KEYS)
    for cb in callbacks or ():
        if isinstance(cb, Callback):
            cb.check(keys)
            continue
        monitor = getattr(cb, "monitor", None)
        if not validated and isinstance(monitor, str) and monitor in VAL_KEYS:
            raise ValueError(f"{type(cb).__name__} monitors {monitor!r}, which needs "
                             "validation_data in fit or validation_fraction")


class FitWatcher:
    """The engine's monitor for one fit: validation scores and callbacks.

    Parameters
    ----------
    estimator : FineTunedClassifier
    network, backbone
        What is trained, and the backbone giving the evaluation transform.
    validation : tuple or None
        ``(images, y_encoded)`` to predict after every epoch (without TTE).
    class_counts : ndarray
        Training images per class (the many/medium/few-shot groups).
    callbacks : list
    device : torch.device
    num_workers : int or None
        The fit's (already clamped to the CPUs) loader workers.
    """

    def __init__(self, estimator, network, backbone, validation, class_counts, callbacks, device,
                 num_workers=None):
        self.estimator, self.network, self.backbone = estimator, network, backbone
        self.validation, self.class_counts = validation, np.asarray(class_counts)
        self.callbacks, self.device, self.num_workers = list(callbacks or []), device, num_workers
        # Taken before any hook runs: a callback's repr may show what it
        # records during a fit.
        self._callback_reprs = [f"{type(cb).__module__}.{type(cb).__qualname__}:{cb!r}"
                                for cb in self.callbacks]
        self._identity_key = None

    def _call(self, hook: str, *args):
        results = []
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if callable(method):
                results.append(method(self.estimator, *args))
        return results

    def fit_begin(self) -> None:
        self._call("on_fit_begin")

    def fit_end(self) -> None:
        self._call("on_fit_end")

    def evaluate(self, record: dict) -> dict:
        if self.validation is None:
            return {}
        images, y_true = self.validation
        est, was_training = self.estimator, self.network.training
        try:
            logits = predict_images(
                self.network, self.backbone, images, tte=False, tte_expand=0,
                batch_size=est._forward_batch_size(), device=self.device, num_workers=self.num_workers,
            )
        finally:
            self.network.train(was_training)  # prediction switched it to eval
        y_pred = logits.argmax(axis=1)
        labels = np.arange(len(self.class_counts))
        with warnings.catch_warnings():
            # A class without validation images is left out of the means;
            # saying so every epoch would drown the log.
            warnings.simplefilter("ignore", UndefinedClassWarning)
            shots = shot_accuracy(y_true, y_pred, self.class_counts, labels=labels)
            balanced = balanced_accuracy(y_true, y_pred, labels=labels)
        return dict(zip(VAL_KEYS, (
            float(np.mean(y_pred == y_true)), float(balanced),
            float(shots["many"]), float(shots["medium"]), float(shots["few"]),
        )))

    def describe(self, record: dict) -> str:
        if "val_accuracy" not in record:
            return ""
        return (f", val acc {record['val_accuracy']:.3f}, "
                f"val bal acc {record['val_balanced_accuracy']:.3f} (many "
                f"{record['val_many_shot_accuracy']:.3f}, medium "
                f"{record['val_medium_shot_accuracy']:.3f}, few "
                f"{record['val_few_shot_accuracy']:.3f})")

    def epoch_end(self, record: dict) -> bool:
        was_training = self.network.training
        try:
            return any(bool(r) for r in self._call("on_epoch_end", record))
        finally:
            # A callback that predicts switches the network to eval mode.
            self.network.train(was_training)

    def _identity(self) -> str:
        """What the saved callback states and a saved stop belong to: each
        callback's class and repr (its settings) and the validation data.
        Computed on first use (only fits with checkpoints need it), then kept:
        in-memory validation images would be read again at every epoch."""
        if self._identity_key is None:
            h = hashlib.sha256("\0".join(self._callback_reprs).encode("utf-8", "replace"))
            if self.validation is not None:
                images, y = self.validation
                images.update_key(h)
                h.update(np.asarray(y, dtype=np.int64).tobytes())
            self._identity_key = h.hexdigest()
        return self._identity_key

    def state_dict(self) -> dict:
        return {"identity": self._identity(),
                "callbacks": [cb.state_dict() if callable(getattr(cb, "state_dict", None)) else {}
                              for cb in self.callbacks]}

    def load_state_dict(self, state: dict) -> bool:
        """Restore the callbacks' states; False (nothing restored, with a
        warning) when the checkpoint was written by a fit watched by other
        callbacks or on other validation data: their states, and a stop
        they made, do not belong to this fit."""
        if not state.get("callbacks") and not self.callbacks:
            return True
        if state.get("identity") != self._identity():
            warnings.warn(
                f"{type(self.estimator).__name__}: the checkpoint was written by a fit with other "
                "callbacks or validation data; their state is not restored, and the fit goes on "
                "to the last epoch if they had stopped it", LiftLearnWarning, stacklevel=2,
            )
            return False
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            if cb_state and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(cb_state)
        return True
