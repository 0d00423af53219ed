"""Checkpoints: the state of a fit after its last finished epoch.

Each run (data, labels and parameters, hashed into a key) has its own file,
``<checkpoint_dir>/liftlearn-checkpoint-<first 16 hex digits of the key>.pt``,
so fits sharing a folder (a ``GridSearchCV`` with ``n_jobs=2``, two scripts)
never overwrite or rename each other's files. Files are written atomically
(a temporary file with a unique name, fsync, rename) and read with
``torch.load(weights_only=True)``: a checkpoint holds tensors and plain
data, never code. A file that is torn, foreign or of another run is ignored
with a warning; :func:`clean_checkpoints` removes old ones.
"""

from __future__ import annotations

import datetime
import errno
import glob
import os
import time
import warnings
from numbers import Integral
from typing import List, Optional

import torch

from .._io import TEMP_MARK, atomic_write

__all__ = ["Checkpoint", "clean_checkpoints"]

_PREFIX = "liftlearn-checkpoint"

# What a checkpoint of fit_task holds, and the type of each entry.
_REQUIRED = {"network": dict, "optimizer": dict, "scheduler": dict, "history": list, "seed": Integral}


class _ErrorRecorder:
    """A write-only file that remembers the OSError of a failed write.

    ``torch.save`` turns a failing write into ``RuntimeError: [enforce fail
    at inline_container.cc ...]``; the recorded OSError says what happened
    (``ENOSPC``: the disk is full).
    """

    def __init__(self, file):
        self.file = file
        self.error: Optional[OSError] = None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self):
        self.file.flush()


class Checkpoint:
    """The state of a fit after its last finished epoch, in one file per run.

    ``key`` identifies the run (data, labels and parameters); a file written
    for another run is ignored, so a directory can be shared safely.

    Parameters
    ----------
    directory : str or os.PathLike
    key : str
        Hex digest of the run.
    legacy_key : str or None, default=None
        The run's key as releases before one file per run computed it: their
        single ``liftlearn-checkpoint.pt`` is resumed from when it holds
        this key and is newer than every input (``inputs_mtime_ns``).
    inputs_mtime_ns : int or None, default=None
        The newest modification time of the run's inputs (the images).
    """

    #: The single file of releases before one file per run (still read).
    FILENAME = _PREFIX + ".pt"

    def __init__(self, directory, key: str, *, legacy_key: Optional[str] = None,
                 inputs_mtime_ns: Optional[int] = None):
        self.directory = os.fspath(directory)
        self.key = key
        self.legacy_key = legacy_key
        self.inputs_mtime_ns = inputs_mtime_ns

    @property
    def path(self) -> str:
        """This run's file."""
        return os.path.join(self.directory, f"{_PREFIX}-{self.key[:16]}.pt")

    @property
    def legacy_path(self) -> str:
        return os.path.join(self.directory, self.FILENAME)

    def read(self) -> Optional[dict]:
        """The saved state of this run, or None (read from disk once)."""
        if not hasattr(self, "_state"):
            self._state = self._read()
        return self._state

    def _read(self) -> Optional[dict]:
        state = self._load(self.path, self.key)
        if state is None and self.legacy_key is not None:
            state = self._load(self.legacy_path, self.legacy_key, legacy=True)
        return state

    def _load(self, path: str, key: str, legacy: bool = False) -> Optional[dict]:
        if not os.path.isfile(path):
            return None
        try:
            mtime = os.stat(path).st_mtime_ns
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start afresh
            warnings.warn(f"ignoring unreadable checkpoint {path!r}: {exc}", stacklevel=3)
            return None
        if not isinstance(state, dict):
            warnings.warn(
                f"ignoring checkpoint {path!r}: it holds a {type(state).__name__}, not a "
                "liftlearn checkpoint", stacklevel=3,
            )
            return None
        if state.get("key") != key:
            return None  # another run's file (only the legacy name is shared)
        problems = [name for name, kind in _REQUIRED.items() if not isinstance(state.get(name), kind)]
        if problems:
            warnings.warn(
                f"ignoring checkpoint {path!r}: {', '.join(problems)} missing or malformed",
                stacklevel=3,
            )
            return None
        if legacy and self.inputs_mtime_ns is not None and mtime < self.inputs_mtime_ns:
            # The old key did not cover the images' contents: an image
            # changed after this checkpoint was written, so it is stale.
            return None
        return state

    def write(self, state: dict) -> None:
        """Save atomically: a crash or a full disk while writing never leaves
        a torn file, and the previous epoch's file stays until the new one is
        complete.

        Raises
        ------
        OSError
            If the file cannot be written, naming the file, the reason (errno
            kept: ``ENOSPC`` for a full disk) and the epoch it still holds.
        """
        payload = {**state, "key": self.key}

        def writer(tmp: str) -> None:
            with open(tmp, "wb") as f:
                out = _ErrorRecorder(f)
                try:
                    torch.save(payload, out)
                except RuntimeError:
                    if out.error is not None:
                        raise out.error from None
                    raise

        try:
            os.makedirs(self.directory, exist_ok=True)
            atomic_write(self.path, writer, what="checkpoint")
        except OSError as exc:
            done = len(state.get("history", ()))
            held = (f"it still holds epoch {done - 1}, from which a fit of the same data and "
                    "parameters resumes" if done > 1 else "no epoch was saved")
            raise OSError(
                exc.errno or errno.EIO,
                f"{exc.strerror or exc} (training stopped after epoch {done}; {held})",
            ) from exc


#: How long clean_checkpoints leaves a temporary file alone (a checkpoint
#: write takes seconds; one untouched for this long was interrupted).
_TEMP_GRACE_S = 3600.0


def _as_seconds(older_than) -> Optional[float]:
    if older_than is None:
        return None
    if isinstance(older_than, datetime.timedelta):
        return older_than.total_seconds()
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) or older_than < 0:
        raise ValueError(
            f"older_than={older_than!r} must be None, a number of seconds >= 0 or a timedelta"
        )
    return float(older_than)


def clean_checkpoints(directory, older_than=None) -> List[str]:
    """Remove liftlearn's checkpoint files from a folder.

    Every fit with ``checkpoint_dir`` leaves one file per run (its data,
    labels and parameters); a finished search leaves one per candidate and
    fold. Nothing else in the folder is touched.

    Parameters
    ----------
    directory : str or os.PathLike
        The ``checkpoint_dir``.
    older_than : float, datetime.timedelta or None, default=None
        Remove only files last written more than this many seconds ago
        (runs that stopped long ago); None removes all of them, which would
        make a fit still running in that folder start afresh if interrupted.
        Temporary files of interrupted writes go too, but only once
        untouched for an hour (and for ``older_than``, if longer): a write
        in progress is left alone whatever ``older_than`` says.

    Returns
    -------
    removed : list of str
        The files removed, sorted.
    """
    seconds = _as_seconds(older_than)
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"checkpoint folder {directory!r} does not exist")
    pattern = glob.escape(directory)
    checkpoints = set(glob.glob(os.path.join(pattern, _PREFIX + "*.pt")))
    temporary = set(glob.glob(os.path.join(pattern, "." + _PREFIX + "*" + TEMP_MARK + "*.pt")))
    now = time.time()
    removed = []
    for path in sorted(checkpoints | temporary):
        # A temporary file may belong to a write in progress in another
        # process: removing it would fail that fit's next save.
        keep_for = max(seconds or 0.0, _TEMP_GRACE_S) if path in temporary else seconds
        try:
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            if keep_for is not None and now - os.stat(path).st_mtime <= keep_for:
                continue
            os.remove(path)
        except FileNotFoundError:
            continue  # removed meanwhile (another clean-up, a finished write)
        removed.append(path)
    return removed
