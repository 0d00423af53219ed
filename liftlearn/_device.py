"""Devices: the one place that turns a ``device`` parameter into a torch device."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from .exceptions import LiftLearnWarning

__all__ = [
    "DeviceWarning",
    "PRECISIONS",
    "autocast_for",
    "canonical_device",
    "map_device",
    "network_dtype",
    "resolve_device",
    "resolve_precision",
    "usable_cpus",
]


class DeviceWarning(LiftLearnWarning):
    """A model saved on one device was loaded on another."""


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch reads it.

    Raises
    ------
    ValueError
        For a device torch does not know, one this machine lacks (CUDA or
        MPS where there is none, a CUDA index past its GPUs), or a torch
        device type liftlearn does not run on (anything but cpu, cuda, mps).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device torch knows: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device={str(device)!r} was asked for but MPS is not available")
    elif device.type != "cpu":
        # torch names more device types (meta, xpu, ...) than liftlearn runs
        # on; they would fail deep inside a fit with torch's own message.
        raise ValueError(f"device={str(device)!r}: liftlearn runs on 'cpu', 'cuda' and 'mps' "
                         "devices")
    return device


def canonical_device(device) -> torch.device:
    """One name per device: ``cuda`` -> ``cuda:<current>`` (how the backbone
    cache keys devices and networks compare them)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def map_device(device) -> torch.device:
    """The device to load a saved model onto: the saved one if it exists
    here; else ``cuda:0`` for a GPU index this machine lacks, the CPU for
    the rest (each with a :class:`DeviceWarning`)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        if device.index is not None and device.index >= torch.cuda.device_count():
            warnings.warn(f"the model was fitted on {device}, which this machine does not have; "
                          "it is loaded on cuda:0", DeviceWarning, stacklevel=3)
            return torch.device("cuda", 0)
        return device
    if device.type != "cpu" and not (device.type == "mps" and _mps_available()):
        warnings.warn(
            f"the model was fitted on {device} but {device.type.upper()} is not available "
            "here; it is loaded on the CPU",
            DeviceWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return device


#: The values of the estimators' ``precision`` parameter.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cuda_has_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` computes in bf16 natively.

    ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is only
    emulated (compute capability below 8: T4, V100), slowly and without
    cuDNN's bf16 convolutions, and asks about the current device rather
    than ``device``.
    """
    if torch.version.hip:
        return torch.cuda.is_bf16_supported()
    return torch.cuda.get_device_capability(device)[0] >= 8


def _auto_dtype(device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if _cuda_has_bf16(device) else torch.float16


def resolve_precision(precision, device, strict: bool = True) -> torch.dtype:
    """The compute dtype of ``precision`` on ``device``: the dtype the frozen
    backbone is held in and autocast computes in (the trainable parts stay
    fp32).

    ``"auto"``: bf16 on CUDA GPUs that support it, else fp16 (with a
    gradient scaler) on CUDA, fp32 elsewhere; ``"fp32"``, ``"bf16"``,
    ``"fp16"``: that dtype.

    Raises
    ------
    ValueError
        Naming ``precision`` for ``"fp16"`` on a device other than CUDA (no
        fast fp16 kernels on a CPU, and its gradients need a scaler) and
        for ``"bf16"`` on a GPU without bf16. With ``strict=False`` (a
        model loaded on another device) the ``"auto"`` dtype of ``device``
        is returned instead.
    """
    device = torch.device(device)
    if precision is None or precision == "auto":
        return _auto_dtype(device)
    dtype = _DTYPES[precision]
    problem = None
    if dtype is torch.float16 and device.type != "cuda":
        problem = (f"precision='fp16' needs a CUDA device (device is {str(device)!r}): fp16 has no "
                   "fast CPU kernels and its gradients need a scaler; use 'bf16' or 'fp32'")
    elif dtype is torch.bfloat16 and device.type == "cuda" and not _cuda_has_bf16(device):
        problem = (f"precision='bf16' is not supported natively by this GPU ({str(device)!r}, "
                   "compute capability below 8.0); use 'fp16' or 'fp32'")
    if problem is None:
        return dtype
    if not strict:
        return _auto_dtype(device)
    raise ValueError(problem)


def network_dtype(network):
    """The compute dtype of a network on a frozen backbone (its backbone's
    ``dtype``); None for a network without one."""
    return getattr(getattr(network, "backbone", None), "dtype", None)


def autocast_for(device: torch.device, dtype=None):
    """The autocast context and the gradient scaler (or None) for computing
    in ``dtype`` on ``device``: none for fp32, bf16 autocast (CPU too),
    fp16 autocast with a scaler on CUDA. ``dtype=None``: the ``"auto"``
    precision of ``device``. Returns ``(context, scaler or None)``."""
    if dtype is None:
        dtype = _auto_dtype(device)
    if dtype is torch.float32:
        return contextlib.nullcontext(), None
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    return torch.autocast(device.type, dtype=dtype), scaler


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2
