"""Devices: the one place that turns a ``device`` parameter into a torch device."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

from .exceptions import LiftLearnWarning

__all__ = [
    "DeviceWarning",
    "autocast_for",
    "canonical_device",
    "map_device",
    "resolve_device",
    "usable_cpus",
]


class DeviceWarning(LiftLearnWarning):
    """A model saved on one device was loaded on another."""


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch reads it.

    Raises
    ------
    ValueError
        For a device torch does not know, or CUDA asked for where there is none.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device torch knows: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available")
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
    here, else the CPU (with a :class:`DeviceWarning`)."""
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


def autocast_for(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a
    gradient scaler); fp32 elsewhere. Returns ``(context, scaler or None)``."""
    if device.type != "cuda":
        return contextlib.nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2
