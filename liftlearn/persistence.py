"""Small, safe model files for every liftlearn estimator.

A fitted model is what was learned (adapter, classifier, class embeddings)
plus the name of the frozen backbone it runs on and a fingerprint of that
backbone's weights. Both ways of storing one keep to that:

- ``joblib.dump`` / ``pickle``: the backbone pickles as its spec and is
  rebuilt from the same source when loaded; the fingerprint is checked then.
- :func:`save` / :func:`load`: one ``.safetensors`` file, tensors plus a JSON
  header. Loading it never executes code from the file and never reaches the
  network unless asked to: the estimator class comes from a fixed registry by
  exact name, every stored value is data checked against a schema and the
  estimator's own parameter validation, sizes are bounded before anything is
  allocated, and the tensors must match the rebuilt network exactly. Every
  malformed file raises one :class:`~liftlearn.exceptions.ModelFileError`
  (a ValueError) naming the file and the field.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import threading
from numbers import Integral, Real

import numpy as np
import torch

from ._device import DeviceWarning, map_device, resolve_device
from ._io import atomic_open
from ._validation import validate_params
from .estimators import (
    CLIPFeatures, CoOpClassifier, LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier,
)
from .exceptions import ModelFileError
from .nn.backbones import BackboneSpec, backbone_fingerprint, get_backbone, check_fingerprint
from .nn.backbones import list_backbones, weights_fingerprint
from .nn.timm_backbones import is_timm_name
from .nn.tuners import TUNERS

__all__ = [
    "DeviceWarning",
    "ESTIMATORS",
    "MAX_CLASSES",
    "MAX_HEADER_BYTES",
    "backbone_fingerprint",
    "load",
    "save",
    "weights_fingerprint",
]

_FORMAT = "liftlearn-model"
# 3: parameters keep their Python type (paths, tuples, numpy values, devices).
_FORMAT_VERSION = 3
_SUFFIX = ".safetensors"

#: The estimators model files may hold, by exact class name.
ESTIMATORS = {
    cls.__name__: cls
    for cls in (LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier, CLIPFeatures, CoOpClassifier)
}

#: Bounds checked before anything is allocated: the JSON header (every
#: parameter, name and history entry; a 1,000-class model needs ~40 KB), the
#: classes (iNaturalist 2018 has 8,142) and any one string.
MAX_HEADER_BYTES = 64 * 2**20
MAX_CLASSES = 100_000
MAX_STRING = 4_096
_MAX_ITEMS = 10_000_000  # entries of a list or an array (skipped images, transduction_)
# Characters a string array may take beyond those its entries hold (padding).
_MAX_STRING_CHARS = 2**20

# Parameters that model files never store: restored from fitted state or
# meaningless outside the process.
_NOT_STORED = {"class_names", "adapter_from", "callbacks"}  # callbacks are code

# The fitted attributes a file must hold. Any other stored attribute is data
# under a plain name (``[a-z][a-z0-9_]*_``) that the class does not define;
# the known ones are checked by _check_fitted.
_FITTED_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}_")
_REQUIRED_FITTED = {
    "LiftPlusClassifier": {"classes_", "class_names_"},
    "CoOpClassifier": {"classes_", "class_names_"},
    "ULFineClassifier": {"classes_", "class_names_"},
    "ZeroShotClassifier": {"classes_", "class_names_"},
    "CLIPFeatures": {"tuner_config_"},
}


# ---------------------------------------------------------------- saving
def _jsonable(value, what: str):
    """A JSON value for data: numbers, str, None, lists and str-keyed dicts."""
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


def _encode_param(value, what: str):
    """A parameter value as JSON that :func:`_decode_param` turns back into
    an equal value of the same type (a dict is always such a tag; a dict
    parameter, such as ``loss_params``, is stored under the ``"dict"`` tag)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return {"numpy": value.item(), "dtype": value.dtype.str}
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, pathlib.PurePath):
        return {"path": os.fspath(value)}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "biuf":
            raise TypeError(f"cannot save {what}: only 1-D numeric arrays are stored")
        return {"ndarray": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, tuple):
        return {"tuple": [_encode_param(v, what) for v in value]}
    if isinstance(value, list):
        return [_encode_param(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode_param(v, what) for k, v in value.items()}}
    raise TypeError(f"cannot save {what}: a {type(value).__name__} is not data")


def _params(estimator) -> dict:
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        if key in _NOT_STORED:
            continue
        if key == "random_state" and not isinstance(value, (Integral, type(None))):
            value = None  # a RandomState has done its job by now
        params[key] = _encode_param(value, f"parameter {key}")
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


def save(estimator, path) -> None:
    """Write a fitted estimator to a single ``.safetensors`` file.

    The file is written atomically (a temporary file in the same folder,
    synced, then renamed over ``path``): a full disk or an interruption
    leaves any previous file as it was. It gets the permissions of any new
    file (``0644`` under the usual umask), so others can read a file that is
    safe to share.

    Parameters
    ----------
    estimator : LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier or CLIPFeatures
        Fitted.
    path : str or os.PathLike
        Ends in ``.safetensors``. For a pickle use ``joblib.dump``.

    Raises
    ------
    ValueError
        For another suffix, or a model too large for :func:`load` to accept
        (see :data:`MAX_HEADER_BYTES`, :data:`MAX_CLASSES`).
    OSError
        If the file cannot be written (naming it, and why).
    """
    from safetensors.torch import save as to_bytes
    from sklearn.utils.validation import check_is_fitted

    name = type(estimator).__name__
    if ESTIMATORS.get(name) is not type(estimator):
        raise TypeError(f"save writes liftlearn's estimators ({', '.join(ESTIMATORS)}), not {name}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1]
    if suffix.lower() != _SUFFIX:
        got = f"ends in {suffix!r}" if suffix else "has no suffix"
        raise ValueError(
            f"save writes safetensors files and {path!r} {got}: name it '*.safetensors' "
            "(or use joblib.dump for a pickle, which only trusted files should be)"
        )
    check_is_fitted(estimator)
    classes = getattr(estimator, "classes_", ())
    if len(classes) > MAX_CLASSES:
        raise ValueError(f"cannot save a model of {len(classes)} classes: load reads at most {MAX_CLASSES}")
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
    try:
        # load's own checks, so that a model load would refuse is refused
        # now, while its training can still be redone or its labels changed.
        _decode_fitted(json.loads(json.dumps(meta["fitted"])), type(estimator))
        # Parameters changed since the fit (set_params) no longer describe
        # the model.
        _check_params_describe(type(estimator), estimator.get_params(deep=False),
                               module.backbone.spec, getattr(module, "normalize", None))
    except _Malformed as exc:
        hint = "; set it back or refit" if str(exc.field).startswith("params.") else ""
        raise ValueError(f"cannot save this {name}: load would refuse its {exc.field}: "
                         f"{exc.reason}{hint}") from None
    header = json.dumps(meta)
    if len(header.encode("utf-8", "surrogatepass")) > MAX_HEADER_BYTES - 2**20:
        raise ValueError(
            f"cannot save: the model's header would exceed {MAX_HEADER_BYTES} bytes, more than "
            "load accepts (a long skipped_images_ or history_?)"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    data = to_bytes(tensors, metadata={"liftlearn": header})
    with atomic_open(path, "wb", what="model file") as f:
        f.write(data)


# --------------------------------------------------------------- loading
class _Malformed(Exception):
    """A field of the file is malformed (becomes a ModelFileError)."""

    def __init__(self, field, reason):
        super().__init__(field, reason)
        self.field, self.reason = field, reason


def _fail(field, reason):
    raise _Malformed(field, reason)


@contextlib.contextmanager
def _field(field: str):
    """Report any error of reading ``field`` as that field being malformed."""
    try:
        yield
    except _Malformed:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
            RecursionError, UnicodeError, RuntimeError) as exc:
        raise _Malformed(field, f"{type(exc).__name__}: {exc}") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short_str(v, limit: int = MAX_STRING) -> bool:
    return isinstance(v, str) and len(v) <= limit


def _header_size(path: str) -> int:
    """The JSON header's length from the file's first 8 bytes, bounded."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        _fail("header", f"the file has {size} bytes, too few for a safetensors file")
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES:
        _fail("header", f"the header claims {n} bytes; liftlearn reads at most {MAX_HEADER_BYTES}")
    if 8 + n > size:
        _fail("header", f"the header claims {n} bytes but the file has {size}")
    return n


def _read(path: str):
    """The liftlearn header (parsed JSON) and the tensors of a file."""
    from safetensors import safe_open

    _header_size(path)
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors name no field
        _fail("header", f"not a readable safetensors file: {type(exc).__name__}: {exc}")
    if "liftlearn" not in header:
        _fail(None, "not a liftlearn model file (no liftlearn header)")
    with _field("header.liftlearn"):
        meta = json.loads(header["liftlearn"])
    if not isinstance(meta, dict):
        _fail("header.liftlearn", f"a {type(meta).__name__}, not an object")
    return meta, tensors


def _decode_param(value, field: str, depth: int = 0):
    """A stored parameter value back as the value ``save`` saw."""
    if depth > 4:
        _fail(field, "nested too deeply")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            _fail(field, f"a string of {len(value)} characters (at most {MAX_STRING})")
        return value
    if isinstance(value, list):
        if len(value) > 4096:
            _fail(field, f"a list of {len(value)} entries")
        return [_decode_param(v, f"{field}[{i}]", depth + 1) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        _fail(field, f"a {type(value).__name__} is not a parameter value")
    kind = set(value)
    if kind == {"path"} and _short_str(value["path"]):
        return pathlib.Path(value["path"])
    if kind == {"device"} and _short_str(value["device"], 64):
        with _field(field):
            return torch.device(value["device"])
    if kind == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(_decode_param(value["tuple"], field, depth + 1))
    if kind == {"numpy", "dtype"} and isinstance(value["dtype"], str):
        with _field(field):
            dtype = np.dtype(value["dtype"])
        if dtype.kind not in "biuf" or not isinstance(value["numpy"], (bool, int, float)):
            _fail(field, f"numpy value of dtype {value['dtype']!r}")
        with _field(field):
            return dtype.type(value["numpy"])
    if kind == {"ndarray", "dtype"}:
        return _array(value["ndarray"], value["dtype"], field, "biuf", max_len=4096)
    if kind == {"dict"} and isinstance(value["dict"], dict) and len(value["dict"]) <= 64:
        if not all(_short_str(k, 64) for k in value["dict"]):
            _fail(field, "a dict parameter with a key that is not a short str")
        return {k: _decode_param(v, f"{field}.{k}", depth + 1) for k, v in value["dict"].items()}
    _fail(field, f"an object with keys {sorted(map(str, kind))[:5]} is not a parameter value")


_DTYPE = re.compile(r"[<>|=]?(?:[iu][1248]|f[248]|b1|U\d{1,5})")


def _array(values, dtype, field: str, kinds: str, *, max_len: int = _MAX_ITEMS) -> np.ndarray:
    """A 1-D array of ``kinds`` (numpy kind letters, ``O`` for object) from
    its JSON list, every entry checked first."""
    if not isinstance(values, list):
        _fail(field, f"a {type(values).__name__}, not a list")
    if len(values) > max_len:
        _fail(field, f"{len(values)} entries (at most {max_len})")
    if dtype == "object":
        if "O" not in kinds:
            _fail(field, "an object array")
        if not all(_short_str(v) or _is_int(v) for v in values):
            _fail(field, "an object array of other than str and int")
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr
    if not isinstance(dtype, str) or not _DTYPE.fullmatch(dtype):
        _fail(field, f"dtype {dtype!r} is not one liftlearn writes")
    dt = np.dtype(dtype)
    if dt.kind not in kinds:
        _fail(field, f"dtype {dtype!r} (expected kind {kinds!r})")
    if dt.kind == "U" and dt.itemsize // 4 > MAX_STRING:
        _fail(field, f"dtype {dtype!r}: liftlearn keeps strings of at most {MAX_STRING} characters")
    check = {"i": _is_int, "u": _is_int, "f": _is_number, "b": lambda v: isinstance(v, bool),
             "U": _short_str}[dt.kind]
    if not all(check(v) for v in values):
        _fail(field, f"entries that are not of dtype {dtype!r}")
    if dt.kind == "U":
        # Every entry takes the declared width (4 bytes a character): a
        # width far above the longest entry would let a small file claim
        # gigabytes. Such arrays are kept at their longest entry's width,
        # which holds the same strings.
        width = dt.itemsize // 4
        longest = max((len(v) for v in values), default=0)
        if len(values) * width > _MAX_STRING_CHARS and width > longest:
            dt = np.dtype(f"{dt.byteorder if dt.byteorder in '<>' else ''}U{max(longest, 1)}")
    with _field(field):
        return np.asarray(values, dtype=dt)


def _decode_fitted(fitted: dict, cls) -> dict:
    """The fitted attributes, each checked (see :func:`_check_fitted`)."""
    if not isinstance(fitted, dict):
        _fail("fitted", f"a {type(fitted).__name__}, not an object")
    estimator_name = cls.__name__
    never = {"module_", "device_", *cls._derived_fitted}
    for name in fitted:
        # A name the class defines (a method, a property) must not be
        # shadowed by data from a file.
        if not _FITTED_NAME.fullmatch(name) or name in never or hasattr(cls, name):
            _fail(f"fitted.{str(name)[:64]}", f"not a fitted attribute of {estimator_name}")
    missing = _REQUIRED_FITTED[estimator_name] - set(fitted)
    if missing:
        _fail("fitted", f"missing {sorted(missing)}")
    out = {}
    for name, item in fitted.items():
        field = f"fitted.{name}"
        if not isinstance(item, dict) or len(item) not in (1, 2):
            _fail(field, "expected {'value': ...}, {'array': ..., 'dtype': ...} or {'tuples': ...}")
        if set(item) == {"array", "dtype"}:
            out[name] = _array(item["array"], item["dtype"], field, "biufUO")
        elif set(item) == {"tuples"}:
            rows = item["tuples"]
            if not isinstance(rows, list) or len(rows) > _MAX_ITEMS or not all(
                    isinstance(r, list) and len(r) == 2 and all(_short_str(v) for v in r) for r in rows):
                _fail(field, "expected a list of [str, str] pairs")
            out[name] = [tuple(r) for r in rows]
        elif set(item) == {"value"}:
            out[name] = item["value"]
        else:
            _fail(field, f"unknown encoding {sorted(item)}")
    with _field("fitted"):  # any check a malformed value trips up names the section
        _check_fitted(out)
    return out


def _check_fitted(f: dict) -> None:
    """The meaning of each fitted attribute: shapes, ranges, agreement."""
    n = None
    for name in ("classes_", "class_counts_", "unlabeled_prior_", "class_prior_", "transduction_"):
        if name in f and not isinstance(f[name], np.ndarray):
            _fail(f"fitted.{name}", "expected an array")
    if "classes_" in f:
        classes = f["classes_"]
        if classes.dtype.kind not in "biuUO":
            _fail("fitted.classes_", f"dtype {classes.dtype} (expected bool, int or str labels)")
        n = len(classes)
        if not 2 <= n <= MAX_CLASSES:
            _fail("fitted.classes_", f"{n} classes (expected 2 to {MAX_CLASSES})")
        if len({(type(c).__name__, c) for c in classes.tolist()}) != n:
            _fail("fitted.classes_", "repeated labels")
        names = f.get("class_names_")
        if not (isinstance(names, list) and len(names) == n and all(_short_str(v) for v in names)):
            _fail("fitted.class_names_", f"expected a list of {n} strings of at most {MAX_STRING} characters")
    if "class_counts_" in f:
        counts = f["class_counts_"]
        if counts.dtype.kind not in "iu" or len(counts) != n or (counts < 0).any():
            _fail("fitted.class_counts_", f"expected {n} non-negative integers")
    for name in ("unlabeled_prior_", "class_prior_"):
        if name in f:
            v = f[name]
            if v.dtype.kind != "f" or len(v) != n or not np.isfinite(v).all():
                _fail(f"fitted.{name}", f"expected {n} finite floats")
    if "transduction_" in f:
        v = f["transduction_"]
        if v.dtype.kind not in "biuUO":
            _fail("fitted.transduction_", "expected an array of labels")
    if "n_unlabeled_" in f and not (_is_int(f["n_unlabeled_"]) and f["n_unlabeled_"] >= 0):
        _fail("fitted.n_unlabeled_", "expected a non-negative int")
    if "history_" in f:
        history = f["history_"]
        if not isinstance(history, list) or len(history) > 100_000 or not all(
                isinstance(h, dict) and all(_short_str(k, 64) and (v is None or _is_number(v) or isinstance(v, bool)
                                                                    or _short_str(v)) for k, v in h.items())
                for h in history):
            _fail("fitted.history_", "expected a list of {name: number} records")
    if "skipped_images_" in f:
        v = f["skipped_images_"]
        if not (isinstance(v, list) and all(isinstance(r, tuple) for r in v)):
            _fail("fitted.skipped_images_", "expected a list of (path, reason) pairs")
    if "tuner_config_" in f:
        config = f["tuner_config_"]
        if not isinstance(config, dict) or set(config) != {"adapter", "adapter_dim", "layers"}:
            _fail("fitted.tuner_config_", "expected {'adapter', 'adapter_dim', 'layers'}")
        if not (isinstance(config["adapter"], str) and config["adapter"] in TUNERS):
            _fail("fitted.tuner_config_", f"unknown adapter {str(config['adapter'])[:64]!r}")
        if not (config["adapter_dim"] is None or (_is_int(config["adapter_dim"]) and config["adapter_dim"] >= 1)):
            _fail("fitted.tuner_config_", "adapter_dim must be None or an int >= 1")
        layers = config["layers"]
        if not (isinstance(layers, list) and len(layers) <= 4096 and all(_is_int(i) and i >= 0 for i in layers)):
            _fail("fitted.tuner_config_", "layers must be a list of block indices")


def _fitted_v1(meta: dict) -> dict:
    """The fitted section of a format-1 file (LiftPlus and ULFine only)."""
    kind = meta["classes_kind"]
    if kind not in ("str", "int"):
        _fail("classes_kind", f"{str(kind)[:64]!r} is not 'str' or 'int'")
    fitted = {
        "classes_": {"array": meta["classes"],
                     "dtype": np.dtype(str).str if kind == "str" else "<i8"},
        "class_names_": {"value": meta["class_names"]},
        "class_counts_": {"array": meta["class_counts"], "dtype": "<i8"},
        "history_": {"value": meta["history"]},
    }
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        _fail("extra", "not an object")
    fitted.update(extra)
    return fitted


def _decode_params(cls, stored) -> dict:
    """Constructor arguments from the stored parameters, each checked by the
    estimator's own constraints table."""
    if not isinstance(stored, dict):
        _fail("params", f"a {type(stored).__name__}, not an object")
    known = set(cls().get_params(deep=False)) - _NOT_STORED
    params = {}
    for key, value in stored.items():
        if key not in known:
            _fail(f"params.{str(key)[:64]}", f"not a stored parameter of {cls.__name__}")
        params[key] = _decode_param(value, f"params.{key}")
    for key in params:
        with _field(f"params.{key}"):
            validate_params(cls._parameter_constraints, params, cls.__name__, only=[key])
    return params


def _check_backbone_section(section):
    """``(spec, fingerprint)`` from the file's backbone section."""
    if not isinstance(section, dict) or not {"name", "pretrained", "fingerprint"} <= set(section):
        _fail("backbone", "expected {'name', 'pretrained', 'fingerprint'}")
    name, pretrained, fingerprint = section["name"], section["pretrained"], section["fingerprint"]
    if not (_short_str(name, 512) and name):
        _fail("backbone.name", "expected a model name")
    if not (pretrained is None or (_short_str(pretrained) and pretrained)):
        _fail("backbone.pretrained", "expected None, a tag or a path")
    if not (isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-f]{8,128}", fingerprint)):
        # Without one, a model could run on other weights than it was
        # fitted on and predict nonsense without an error.
        _fail("backbone.fingerprint", "expected the hex fingerprint of the backbone's weights")
    if ":" not in name and name not in list_backbones() and not is_timm_name(name):
        _fail("backbone.name", f"{name[:64]!r} is not a backbone this liftlearn can build")
    return BackboneSpec(name, pretrained), fingerprint


def _check_params_describe(cls: type, params: dict, spec: BackboneSpec,
                           normalized: bool | None = None) -> None:
    """The parameters describe the model a file holds (save and load).

    ``normalized`` is whether fitted :class:`CLIPFeatures` normalise their
    output (save knows it; load builds the features from the parameter).
    """
    if cls is not CLIPFeatures:
        _check_backbone_params(params, spec)
    elif normalized is not None and bool(params.get("normalize", True)) != normalized:
        # A CLIPFeatures backbone comes from adapter_from, when given: the
        # parameters need not name it.
        _fail("params.normalize", f"{params.get('normalize')!r}, but the fitted features are "
                                  f"{'' if normalized else 'not '}normalised")


def _check_backbone_params(params: dict, spec: BackboneSpec) -> None:
    """The stored ``backbone`` and ``pretrained`` parameters name the
    backbone the network is built on (else the estimator would report, and
    a clone of it train, another one)."""
    stored_name = params.get("backbone", spec.name)
    local = "local-dir:"
    same_name = stored_name == spec.name
    if not same_name and isinstance(stored_name, str) and stored_name.startswith(local) \
            and spec.name.startswith(local):
        # The spec keeps the folder absolute; the parameter keeps it as
        # given. An absolute one must be that folder; a relative one was
        # relative to a working folder that cannot be known here.
        folder = os.path.expanduser(stored_name[len(local):])
        same_name = not os.path.isabs(folder) or \
            os.path.normpath(folder) == os.path.normpath(spec.name[len(local):])
    if not same_name:
        _fail("params.backbone", f"{str(stored_name)[:64]!r}, but the model runs on "
                                 f"backbone {spec.name[:64]!r}")
    if "pretrained" not in params:
        return
    stored = params["pretrained"]
    stored = os.fspath(stored) if isinstance(stored, os.PathLike) else stored
    # save keeps the parameter as given and the section's path absolute (as
    # it was then): a path agrees by its file name.
    same = (stored == spec.pretrained or (
        isinstance(stored, str) and spec.pretrained is not None
        and os.path.basename(stored) == os.path.basename(spec.pretrained)))
    if not same:
        _fail("params.pretrained", f"{str(stored)[:64]!r}, but the model runs on pretrained="
                                   f"{str(spec.pretrained)[:64]!r}")


def _network_reason(spec: BackboneSpec):
    """Why loading ``spec`` could reach the network, or None if it cannot."""
    name = spec.name
    if ":" in name and not name.startswith("local-dir:"):
        return f"backbone {name!r} is downloaded by name"
    if spec.pretrained is None or os.sep in spec.pretrained or (os.altsep and os.altsep in spec.pretrained):
        return None  # random weights or a local file
    from open_clip.pretrained import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, spec.pretrained)
    if cfg and cfg.get("url") and not cfg.get("hf_hub") and not cfg.get("file"):
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if not os.path.isfile(target):
            return f"pretrained={spec.pretrained!r} of {name!r} is not cached and would be downloaded"
    return None  # Hugging Face downloads are switched off by _offline


_offline_lock = threading.Lock()


@contextlib.contextmanager
def _offline():
    """Hugging Face downloads off for the block (cached files still load).

    huggingface_hub reads its offline flag at each call; the environment
    variable is set too for code that reads it (liftlearn's backbone
    loader). Both are restored afterwards.
    """
    with _offline_lock:
        try:
            from huggingface_hub import constants
        except ImportError:  # pragma: no cover - open_clip depends on it
            constants = None
        old_flag = getattr(constants, "HF_HUB_OFFLINE", None)
        old_env = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        if constants is not None:
            constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            if constants is not None:
                constants.HF_HUB_OFFLINE = old_flag
            if old_env is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old_env


def _check_tensors(tensors: dict, expected: dict) -> None:
    """The file's tensors are exactly the rebuilt network's, and finite."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        _fail("tensors", f"missing {missing[:5]}, unexpected {[k[:64] for k in extra[:5]]}")
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(want.shape):
            _fail(f"tensors.{key}", f"shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        if want.is_floating_point():
            if not got.is_floating_point():
                _fail(f"tensors.{key}", f"dtype {got.dtype}, expected floating point")
            if not bool(torch.isfinite(got).all()):
                _fail(f"tensors.{key}", "holds NaN or infinite values")
        elif got.dtype != want.dtype:
            _fail(f"tensors.{key}", f"dtype {got.dtype}, expected {want.dtype}")


def load(path, device=None, *, allow_network: bool = False):
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
    device : str, torch.device or None, default=None
        Where to load it (``"cpu"``, ``"cuda:0"``, ``"mps"``, or ``"auto"``:
        CUDA where available); None: where it was fitted if that device
        exists here, else the CPU (with a :class:`DeviceWarning`).
    allow_network : bool, default=False
        Let loading download the backbone the file names (a ``hf-hub:``
        backbone, or pretrained weights not yet in the local cache). By
        default nothing is fetched: a file cannot make this process reach
        the network, and weights must be cached or local files.

    Returns
    -------
    estimator : LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier or CLIPFeatures
        Fitted, predicting like the saved one.

    Raises
    ------
    ModelFileError
        A ValueError naming the file and the field, for a file that is not a
        liftlearn model, is malformed, holds out-of-bounds sizes or invalid
        parameters, or names a backbone that would be downloaded without
        ``allow_network``.
    BackboneError
        If the backbone cannot be loaded here, or its weights differ from
        the ones the model was fitted on.
    ValueError
        For a ``device`` torch does not know or this machine does not have
        (before the file is read).
    """
    path = os.fspath(path)
    # A wrong argument is named before the file is read.
    target = None if device is None else _load_device(device)
    try:
        return _load(path, target, allow_network)
    except _Malformed as exc:
        raise ModelFileError(path, exc.field, exc.reason) from None


def _load_device(device) -> torch.device:
    """``load``'s ``device`` argument, as a device a model can run on here."""
    try:
        target = resolve_device(device)
    except ValueError as exc:
        raise ValueError(f"load: {exc}") from None
    if target.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"load: device={device!r} is not one liftlearn runs models on "
                         "('cpu', 'cuda', 'cuda:<n>', 'mps' or 'auto')")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"load: device={device!r} was asked for but MPS is not available")
    return target


def _load(path: str, target, allow_network: bool):
    meta, tensors = _read(path)
    version = meta.get("format_version")
    if meta.get("format") != _FORMAT or not _is_int(version) or not 1 <= version <= _FORMAT_VERSION:
        _fail("format", (
            f"model format {str(meta.get('format'))[:64]!r} version {str(version)[:16]}; "
            f"this liftlearn reads {_FORMAT!r} 1 to {_FORMAT_VERSION}"
        ))
    name = meta.get("estimator")
    cls = ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        _fail("estimator", f"{str(name)[:64]!r} is not one of {', '.join(ESTIMATORS)}")
    params = _decode_params(cls, meta.get("params"))
    estimator = cls(**params)
    with _field("params"):
        estimator._validate_params()
        estimator._check_param_relations()
    with _field("header"):
        fitted_meta = meta["fitted"] if version >= 2 else _fitted_v1(meta)
    fitted = _decode_fitted(fitted_meta, cls)
    spec, fingerprint = _check_backbone_section(meta.get("backbone"))
    _check_params_describe(cls, params, spec)
    if not allow_network:
        reason = _network_reason(spec)
        if reason is not None:
            _fail("backbone", f"{reason}; pass allow_network=True to load it from the network")
    saved_device = meta.get("device")
    if not (isinstance(saved_device, str) and re.fullmatch(r"(cpu|cuda|mps)(:\d{1,3})?", saved_device)):
        _fail("device", f"{str(saved_device)[:64]!r} is not a device liftlearn fits on")
    if target is None:  # where it was fitted, if that device is here
        if saved_device.startswith("mps") and not torch.backends.mps.is_available():
            import warnings

            warnings.warn(f"the model was fitted on {saved_device}, which is not available "
                          "here; it is loaded on the CPU", DeviceWarning, stacklevel=3)
            target = torch.device("cpu")
        else:
            target = map_device(saved_device)
    with (contextlib.nullcontext() if allow_network else _offline()):
        backbone = get_backbone(spec, target)
        check_fingerprint(backbone, fingerprint)
        with _field("fitted.tuner_config_" if name == "CLIPFeatures" else "params"):
            # Sizes (adapter_dim, layers, classes) were bounded above, and
            # build_tuner bounds adapter_dim by the backbone's width before
            # allocating.
            module = estimator._empty_module(backbone, fitted)
    _check_tensors(tensors, module.state_dict())
    with _field("tensors"):
        module.load_state_dict(tensors)
    estimator._set_fitted(module_=module.to(target), device_=target, **fitted)
    return estimator
