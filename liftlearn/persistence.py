"""Small, safe model files.

A fitted model is what was learned (adapter and classifier) plus the name of
the frozen backbone it runs on and a fingerprint of that backbone's weights.
Both ways of storing one keep to that:

- ``joblib.dump`` / ``pickle``: the backbone pickles as its spec and is
  rebuilt from the same source when loaded; the fingerprint is checked then.
- :func:`save` / :func:`load`: one ``.safetensors`` file, tensors plus a JSON
  header. Loading it never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Optional

import numpy as np
import torch

from .exceptions import BackboneError, LiftLearnWarning

__all__ = ["DeviceWarning", "backbone_fingerprint", "load", "save", "weights_fingerprint"]

_FORMAT = "liftlearn-model"
_FORMAT_VERSION = 1


class DeviceWarning(LiftLearnWarning):
    """A model saved on one device was loaded on another."""


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every tensor's name, dtype, shape and bytes, in order."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            # Raw bytes through a uint8 view: works for every dtype (bf16
            # has no numpy type) without copying the tensor.
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def backbone_fingerprint(backbone) -> str:
    """The weights fingerprint of a backbone, computed once per object."""
    fp = getattr(backbone, "_fingerprint", None)
    if fp is None:
        fp = weights_fingerprint(backbone.model)
        backbone._fingerprint = fp
    return fp


def check_fingerprint(backbone, expected: Optional[str]) -> None:
    """Refuse a backbone whose weights differ from the ones a model was fitted on."""
    if expected is None:
        return
    actual = backbone_fingerprint(backbone)
    if actual != expected:
        raise BackboneError(
            f"the backbone {backbone.spec.name!r} (pretrained={backbone.spec.pretrained!r}) "
            f"loaded here has weights fingerprint {actual}, but the model was fitted on "
            f"{expected}: the checkpoint or tag now points to different weights. Load "
            "the model where the original weights are available."
        )


def map_device(device) -> torch.device:
    """The device to load onto: the saved one if it exists here, else the CPU."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"the model was fitted on {device} but CUDA is not available here; "
            "it is loaded on the CPU",
            DeviceWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        return torch.device("cuda", 0)
    return device


def _jsonable_params(estimator) -> dict:
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key == "class_names":
            continue  # restored from class_names_ / classes_
        if key == "random_state" and not isinstance(value, (int, type(None))):
            value = None  # a RandomState has done its job by now
        json.dumps(value)  # fail here, naming nothing obscure later
        params[key] = value
    return params


# Fitted attributes that save() stores in their own fields or derives again.
_CORE_FITTED = {
    "classes_", "class_names_", "class_counts_", "module_", "adapter_dim_",
    "n_adapter_params_", "trainable_fraction_", "n_trainable_params_", "history_", "device_",
}


def _encode_extra(estimator) -> dict:
    """The estimator's other fitted attributes (e.g. ULFine's transduction_)."""
    extra = {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_") or name in _CORE_FITTED:
            continue
        if isinstance(value, np.ndarray):
            extra[name] = {"array": value.tolist(), "dtype": value.dtype.str if value.dtype != object else "object"}
        elif isinstance(value, list) and all(isinstance(v, tuple) for v in value):
            extra[name] = {"tuples": [list(v) for v in value]}  # e.g. skipped_images_
            json.dumps(extra[name])
        elif isinstance(value, (int, float, str, bool, type(None))) or isinstance(value, np.generic):
            extra[name] = {"value": value.item() if isinstance(value, np.generic) else value}
        else:
            raise TypeError(f"cannot save fitted attribute {name} of type {type(value).__name__}")
    return extra


def _decode_extra(extra: dict) -> dict:
    out = {}
    for name, item in extra.items():
        if "array" in item:
            dtype = object if item["dtype"] == "object" else np.dtype(item["dtype"])
            arr = np.empty(len(item["array"]), dtype=object) if dtype is object else None
            if arr is not None:
                arr[:] = item["array"]
                out[name] = arr
            else:
                out[name] = np.asarray(item["array"], dtype=dtype)
        elif "tuples" in item:
            out[name] = [tuple(v) for v in item["tuples"]]
        else:
            out[name] = item["value"]
    return out


def save(estimator, path) -> None:
    """Write a fitted estimator to a single ``.safetensors`` file.

    Parameters
    ----------
    estimator : LiftPlusClassifier
        Fitted.
    path : str or os.PathLike
    """
    from safetensors.torch import save_file
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    network = estimator.module_
    classes = estimator.classes_
    meta = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "params": _jsonable_params(estimator),
        "classes": classes.tolist(),
        "classes_kind": "str" if classes.dtype.kind in "UO" else "int",
        "class_names": list(estimator.class_names_),
        "class_counts": [int(c) for c in estimator.class_counts_],
        "history": estimator.history_,
        "extra": _encode_extra(estimator),
        "backbone": {
            "name": network.backbone.spec.name,
            "pretrained": network.backbone.spec.pretrained,
            "fingerprint": backbone_fingerprint(network.backbone),
        },
        "device": str(estimator.device_),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={"liftlearn": json.dumps(meta)})


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
    estimator : LiftPlusClassifier
        Fitted, predicting like the saved one.
    """
    from safetensors import safe_open

    from . import estimators
    from .backbones import BackboneSpec, get_backbone

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
    from . import semi_supervised

    cls = getattr(estimators, meta["estimator"], None) or getattr(semi_supervised, meta["estimator"], None)
    if cls is None:
        raise ValueError(f"{path!r} holds an unknown estimator {meta['estimator']!r}")
    estimator = cls(**meta["params"])
    target = map_device(meta["device"]) if device is None else torch.device(device)
    spec = BackboneSpec(meta["backbone"]["name"], meta["backbone"]["pretrained"])
    backbone = get_backbone(spec, target)
    check_fingerprint(backbone, meta["backbone"]["fingerprint"])
    classes = np.asarray(meta["classes"], dtype=str if meta["classes_kind"] == "str" else np.int64)
    network = estimator._build_network(backbone, meta["class_names"], seed=0)
    network.load_state_dict(tensors)
    estimator._set_fitted(
        classes=classes,
        names=meta["class_names"],
        counts=np.asarray(meta["class_counts"], dtype=np.int64),
        network=network.to(target),
        history=meta["history"],
        device=target,
        **_decode_extra(meta.get("extra", {})),
    )
    return estimator
