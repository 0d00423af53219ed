"""Small, safe model files for every liftlearn estimator.

A fitted model is what was learned (adapter, classifier, class embeddings)
plus the name of the frozen backbone it runs on and a fingerprint of that
backbone's weights. Both ways of storing one keep to that:

- ``joblib.dump`` / ``pickle``: the backbone pickles as its spec and is
  rebuilt from the same source when loaded; the fingerprint is checked then.
- :func:`save` / :func:`load`: one ``.safetensors`` file, tensors plus a JSON
  header. Loading it never executes code from the file: the estimator class
  comes from a fixed registry by exact name, and every stored value is data.
"""

from __future__ import annotations

import json
import os
from numbers import Integral, Real

import numpy as np
import torch

from ._device import DeviceWarning, map_device
from .estimators import (
    CLIPFeatures, CoOpClassifier, LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier,
)
from .nn.backbones import BackboneSpec, backbone_fingerprint, get_backbone, check_fingerprint
from .nn.backbones import weights_fingerprint

__all__ = ["DeviceWarning", "ESTIMATORS", "backbone_fingerprint", "load", "save", "weights_fingerprint"]

_FORMAT = "liftlearn-model"
_FORMAT_VERSION = 2

#: The estimators model files may hold, by exact class name.
ESTIMATORS = {
    cls.__name__: cls
    for cls in (LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier, CLIPFeatures, CoOpClassifier)
}

# Parameters that model files never store: restored from fitted state or
# meaningless outside the process.
_NOT_STORED = {"class_names", "adapter_from"}


def _jsonable(value, what: str):
    """A JSON value for ``value`` (numpy scalars and arrays, paths, tuples)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return [_jsonable(v, what) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, what) for k, v in value.items()}
    raise TypeError(f"cannot save {what}: a {type(value).__name__} is not data")


def _params(estimator) -> dict:
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key in _NOT_STORED:
            continue
        if key == "random_state" and not isinstance(value, (Integral, type(None))):
            value = None  # a RandomState has done its job by now
        params[key] = _jsonable(value, f"parameter {key}")
    return params


def _encode_fitted(estimator) -> dict:
    """Every fitted attribute but the module and the derived ones, as data."""
    skip = {"module_", "device_", *estimator._derived_fitted}
    out = {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_") or name in skip:
            continue
        if isinstance(value, np.ndarray):
            kind = "object" if value.dtype == object else value.dtype.str
            out[name] = {"array": _jsonable(value, name), "dtype": kind}
        elif isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
            out[name] = {"tuples": _jsonable(value, name)}  # e.g. skipped_images_
        else:
            out[name] = {"value": _jsonable(value, name)}
    return out


def _decode_fitted(fitted: dict) -> dict:
    out = {}
    for name, item in fitted.items():
        if "array" in item:
            if item["dtype"] == "object":
                arr = np.empty(len(item["array"]), dtype=object)
                arr[:] = item["array"]
                out[name] = arr
            else:
                out[name] = np.asarray(item["array"], dtype=np.dtype(item["dtype"]))
        elif "tuples" in item:
            out[name] = [tuple(v) for v in item["tuples"]]
        else:
            out[name] = item["value"]
    return out


def save(estimator, path) -> None:
    """Write a fitted estimator to a single ``.safetensors`` file.

    Parameters
    ----------
    estimator : LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier or CLIPFeatures
        Fitted.
    path : str or os.PathLike
    """
    from safetensors.torch import save_file
    from sklearn.utils.validation import check_is_fitted

    name = type(estimator).__name__
    if ESTIMATORS.get(name) is not type(estimator):
        raise TypeError(f"save writes liftlearn's estimators ({', '.join(ESTIMATORS)}), not {name}")
    check_is_fitted(estimator)
    module = estimator.module_
    meta = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "estimator": name,
        "params": _params(estimator),
        "fitted": _encode_fitted(estimator),
        "backbone": {
            "name": module.backbone.spec.name,
            "pretrained": module.backbone.spec.pretrained,
            "fingerprint": backbone_fingerprint(module.backbone),
        },
        "device": str(estimator.device_),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={"liftlearn": json.dumps(meta)})


def _fitted_v1(meta: dict) -> dict:
    """The fitted section of a format-1 file (LiftPlus and ULFine only)."""
    fitted = {
        "classes_": {"array": meta["classes"],
                     "dtype": np.dtype(str).str if meta["classes_kind"] == "str" else "<i8"},
        "class_names_": {"value": meta["class_names"]},
        "class_counts_": {"array": meta["class_counts"], "dtype": "<i8"},
        "history_": {"value": meta["history"]},
    }
    for name, item in meta.get("extra", {}).items():
        fitted[name] = item
    return fitted


def load(path, device=None):
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
    device : str or None, default=None
        Where to load it; None: where it was fitted if that device exists
        here, else the CPU (with a :class:`DeviceWarning`).

    Returns
    -------
    estimator : LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier or CLIPFeatures
        Fitted, predicting like the saved one.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    with safe_open(path, framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "liftlearn" not in header:
        raise ValueError(f"{path!r} is not a liftlearn model file (no liftlearn header)")
    meta = json.loads(header["liftlearn"])
    if meta.get("format") != _FORMAT or meta.get("format_version", 0) > _FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has model format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this liftlearn reads {_FORMAT!r} <= {_FORMAT_VERSION}"
        )
    cls = ESTIMATORS.get(meta.get("estimator"))
    if cls is None:
        raise ValueError(f"{path!r} holds an unknown estimator {meta.get('estimator')!r}")
    estimator = cls(**meta["params"])
    estimator._validate_params()
    fitted_meta = meta["fitted"] if meta["format_version"] >= 2 else _fitted_v1(meta)
    fitted = _decode_fitted(fitted_meta)
    target = map_device(meta["device"]) if device is None else torch.device(device)
    spec = BackboneSpec(meta["backbone"]["name"], meta["backbone"]["pretrained"])
    backbone = get_backbone(spec, target)
    check_fingerprint(backbone, meta["backbone"]["fingerprint"])
    module = estimator._empty_module(backbone, fitted)
    module.load_state_dict(tensors)
    estimator._set_fitted(module_=module.to(target), device_=target, **fitted)
    return estimator
