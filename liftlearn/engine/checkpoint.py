"""Checkpoints: the state of a fit after its last finished epoch."""

from __future__ import annotations

import os
import warnings
from typing import Optional

import torch

__all__ = ["Checkpoint"]


class Checkpoint:
    """The state of a fit after its last finished epoch, in one file.

    ``key`` identifies the run (data, labels and parameters); a file written
    for another run is ignored, so a directory can be reused safely.

    Parameters
    ----------
    directory : str or os.PathLike
    key : str
    """

    FILENAME = "liftlearn-checkpoint.pt"

    def __init__(self, directory, key: str):
        self.directory = os.fspath(directory)
        self.key = key

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.FILENAME)

    def read(self) -> Optional[dict]:
        """The saved state of this run, or None (read from disk once)."""
        if not hasattr(self, "_state"):
            self._state = self._read()
        return self._state

    def _read(self) -> Optional[dict]:
        if not os.path.isfile(self.path):
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start afresh
            warnings.warn(f"ignoring unreadable checkpoint {self.path!r}: {exc}", stacklevel=2)
            return None
        return state if state.get("key") == self.key else None

    def write(self, state: dict) -> None:
        """Save atomically: a crash while writing never leaves a torn file."""
        os.makedirs(self.directory, exist_ok=True)
        tmp = self.path + ".tmp"
        torch.save({**state, "key": self.key}, tmp)
        os.replace(tmp, self.path)
