"""Callbacks: watch, log and stop a fit of LiftPlusClassifier, ULFineClassifier
or CoOpClassifier.

A callback is any object with some of these methods (skorch's convention,
kept minimal); pass a list of them as the estimator's ``callbacks``:

- ``on_fit_begin(estimator)``: before the first epoch;
- ``on_epoch_end(estimator, record) -> bool``: after each epoch, with that
  epoch's ``history_`` entry (``epoch``, ``loss``, ``lr``, ``seconds``, the
  objective's own entries and, with validation, ``val_accuracy``,
  ``val_balanced_accuracy``, ``val_many_shot_accuracy``,
  ``val_medium_shot_accuracy``, ``val_few_shot_accuracy``). Returning True
  stops the fit after this epoch; the learning-rate schedule stays the
  cosine planned for ``epochs``, so a stopped fit is a truncated one, not a
  shorter schedule;
- ``on_fit_end(estimator)``: after the last epoch, the estimator fitted.

A subclass of :class:`Callback` may also define ``check(history_keys)``:
``fit`` calls it when it starts, before any image is read or the backbone
loads, with the entries this fit's history will have; raise there for a
configuration that cannot work (:class:`EarlyStopping`: a ``monitor`` the
history will not have; :class:`CSVLogger`: a path that cannot be written),
so that no training time is spent first.

During the fit ``estimator.module_`` is the network being trained (and
``classes_`` are set), so a callback can save or inspect it. A callback that
raises fails the fit, which leaves the estimator unfitted. A callback may
also have ``state_dict()`` and ``load_state_dict(state)`` (tensors and plain
data only): with ``checkpoint_dir`` its state is saved after every epoch and
restored on resume.

Callbacks pickle with the estimator; one that cannot be pickled is dropped
with a warning. Model files (:func:`liftlearn.save`) never store callbacks:
they are code.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import os
import secrets
import threading
from numbers import Integral, Real
from typing import Iterator

from ._io import atomic_open, check_writable, create_new

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "HOOKS"]

#: The methods that make an object a callback.
HOOKS = ("on_fit_begin", "on_epoch_end", "on_fit_end")


class Callback:
    """Base class with every hook a no-op (subclassing it is optional)."""

    def check(self, history_keys) -> None:
        """Called when ``fit`` starts, before any work; raise ValueError for
        a configuration that cannot work (``history_keys``: the entries of
        this fit's history records)."""

    def on_fit_begin(self, estimator) -> None:
        """Called before the first epoch."""

    def on_epoch_end(self, estimator, record: dict) -> bool:
        """Called after each epoch; True stops the fit."""
        return False

    def on_fit_end(self, estimator) -> None:
        """Called once the estimator is fitted."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_")
                         and not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class EarlyStopping(Callback):
    """Stop when a history entry has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default="val_balanced_accuracy"
        The ``history_`` entry to watch. The ``val_*`` entries need
        ``validation_data`` in ``fit`` or ``validation_fraction``.
    patience : int, default=3
        Epochs without improvement before stopping.
    mode : {"auto", "max", "min"}, default="auto"
        Whether larger is better; ``"auto"`` is ``"min"`` for an entry whose
        name contains ``"loss"``, else ``"max"``.
    min_delta : float, default=0.0
        The least change that counts as an improvement.
    restore_best : bool, default=True
        When the fit ends, put back the trained weights (tuner and head,
        and ULFine's textual prototypes) of the best epoch. ``history_``
        keeps every epoch; ULFine's ``transduction_`` and estimated priors
        stay those of the last epoch trained.

    Attributes
    ----------
    best_ : float or None
        The best value seen.
    best_epoch_ : int or None
        Its epoch (1-based, as in ``history_``).
    stopped_epoch_ : int or None
        The epoch after which this callback stopped the fit, None if it did
        not.
    """

    def __init__(self, monitor="val_balanced_accuracy", patience=3, *, mode="auto",
                 min_delta=0.0, restore_best=True):
        self.monitor = monitor
        self.patience = patience
        self.mode = mode
        self.min_delta = min_delta
        self.restore_best = restore_best

    def _check(self) -> None:
        if not isinstance(self.monitor, str) or not self.monitor:
            raise ValueError(f"EarlyStopping: monitor={self.monitor!r} must be a history entry name")
        if isinstance(self.patience, bool) or not isinstance(self.patience, Integral) \
                or self.patience < 1:
            raise ValueError(f"EarlyStopping: patience={self.patience!r} must be an int >= 1")
        if self.mode not in ("auto", "max", "min"):
            raise ValueError(f"EarlyStopping: mode={self.mode!r} must be 'auto', 'max' or 'min'")
        if isinstance(self.min_delta, bool) or not isinstance(self.min_delta, Real) \
                or not self.min_delta >= 0:
            raise ValueError(f"EarlyStopping: min_delta={self.min_delta!r} must be a number >= 0")

    def check(self, history_keys) -> None:
        self._check()
        if self.monitor in history_keys:
            return
        if self.monitor.startswith("val_") and not any(k.startswith("val_") for k in history_keys):
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which needs "
                             "validation_data in fit or validation_fraction")
        raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this fit's history "
                         f"does not have; its entries: {', '.join(history_keys)}")

    def _maximize(self) -> bool:
        return self.mode == "max" or (self.mode == "auto" and "loss" not in self.monitor)

    def on_fit_begin(self, estimator) -> None:
        self._check()  # before any epoch is spent
        self.best_, self.best_epoch_, self.stopped_epoch_ = None, None, None
        self._wait, self._best_state = 0, None

    def on_epoch_end(self, estimator, record: dict) -> bool:
        if self.monitor not in record:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which the history does not have "
                f"(it has {sorted(record)}); the val_* entries need validation_data in fit "
                "or validation_fraction"
            )
        value = float(record[self.monitor])
        sign = 1.0 if self._maximize() else -1.0
        improved = not math.isnan(value) and (
            self.best_ is None or sign * (value - self.best_) > float(self.min_delta)
        )
        if improved:
            self.best_, self.best_epoch_, self._wait = value, int(record["epoch"]), 0
            if self.restore_best:
                self._best_state = {k: v.detach().clone() for k, v in estimator.module_.state_dict().items()}
            return False
        self._wait += 1
        if self._wait >= self.patience:
            self.stopped_epoch_ = int(record["epoch"])
            return True
        return False

    def on_fit_end(self, estimator) -> None:
        if self.restore_best and self._best_state is not None:
            estimator.module_.load_state_dict(self._best_state)
        self._best_state = None  # a copy of the weights has no use after the fit

    def state_dict(self) -> dict:
        return {"best": self.best_, "best_epoch": self.best_epoch_, "wait": self._wait,
                "stopped_epoch": self.stopped_epoch_, "best_state": self._best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best_, self.best_epoch_ = state["best"], state["best_epoch"]
        self._wait, self.stopped_epoch_ = int(state["wait"]), state["stopped_epoch"]
        self._best_state = state["best_state"]


#: The CSVLogger families (see ``CSVLogger.__init__``) whose ``path`` a fit
#: in this process has taken.
_TAKEN: dict = {}
_TAKEN_LOCK = threading.Lock()


def _numbered(path) -> Iterator[str]:
    """``<stem>-2<suffix>``, ``<stem>-3<suffix>``, ... next to ``path``."""
    stem, suffix = os.path.splitext(os.fspath(path))
    return (f"{stem}-{n}{suffix}" for n in itertools.count(2))


class CSVLogger(Callback):
    """Write ``history_`` to a CSV file after every epoch.

    The file is rewritten whole and atomically each epoch (a crash leaves
    the previous epoch's file, never a torn one); columns are the history
    entries in the order they first appear.

    Every fit has a file of its own, so no fit's log replaces another's.
    Which one is decided when the fit's first epoch ends:

    - the first fit of this logger (or of a copy of it) in the process
      that made it writes ``path``, replacing a file of an earlier session
      as any explicitly named output does;
    - every other fit writes the first of ``<stem>-2<suffix>``,
      ``<stem>-3<suffix>``, ... that does not exist yet (``fit-2.csv`` for
      ``fit.csv``), created atomically, so that fits running at the same
      time in threads or processes never share one, and files of earlier
      sessions are kept. Such are a second fit of the same estimator, the
      fits of ``GridSearchCV`` or ``cross_validate`` (they fit copies of
      the estimator, and with it of its callbacks), and every fit in
      another process (``n_jobs`` workers, an unpickled estimator);
    - a fit resumed from a checkpoint (``checkpoint_dir``) goes on in the
      file the stopped fit was writing, which then holds the whole run.

    ``GridSearchCV(cv=2)`` over two candidates, with ``n_jobs=1``, thus
    writes ``fit.csv``, ``fit-2.csv``, ``fit-3.csv`` and ``fit-4.csv`` in
    the order of its fits (candidate by candidate, fold by fold) when no
    numbered file is there yet; ``refit`` adds ``fit-5.csv``.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file; checked writable when ``fit`` starts.

    Attributes
    ----------
    path_ : str or None
        The file this object's last fit wrote (None until its first epoch
        ends).
    """

    def __init__(self, path):
        self.path = path
        # What makes this object and its copies (clone and GridSearchCV
        # deep-copy callbacks; pickles carry it to worker processes) one
        # logger, whose fits must not share a file; the pid names the one
        # process that may give ``path`` to one of them.
        self._family = (os.getpid(), secrets.token_hex(8))

    def check(self, history_keys) -> None:
        check_writable(self.path, "CSVLogger path")

    def on_fit_begin(self, estimator) -> None:
        check_writable(self.path, "CSVLogger path")
        self._rows = []
        self.path_ = None
        self._resumed_path = self._resumed_run = self._run = None

    def _own_name(self, name) -> bool:
        """Whether ``name`` is ``path`` or one of its numbered names (a name
        read from a checkpoint is written to only then)."""
        if not isinstance(name, str):
            return False
        path = os.fspath(self.path)
        stem, suffix = os.path.splitext(path)
        return name == path or (name.startswith(stem + "-") and name.endswith(suffix)
                                and name[len(stem) + 1:len(name) - len(suffix)].isdigit())

    def _take_path(self, run: str) -> bool:
        """Whether the fit of ``run`` writes ``path``: the first run of the
        logger's family in the process that made the logger takes it, and
        keeps it when resumed there; one run at most does."""
        family = getattr(self, "_family", None)
        if family is None:  # unpickled from before families: a logger of its own
            family = self._family = (os.getpid(), secrets.token_hex(8))
        pid, token = family
        # In another process the other copies' fits cannot be seen (a
        # GridSearchCV worker's sibling may be writing path right now).
        if pid != os.getpid():
            return False
        with _TAKEN_LOCK:
            holder = _TAKEN.setdefault(token, run)
            return holder == run

    def on_epoch_end(self, estimator, record: dict) -> bool:
        self._rows.append(dict(record))
        columns = list(dict.fromkeys(k for row in self._rows for k in row))
        claimed = None
        if self.path_ is None:
            # Decided at the first write, not when the fit starts: a fit
            # that fails before its first epoch (or a resumed one with no
            # epoch left) neither takes path nor leaves an empty log. A
            # resumed fit goes on in the file it wrote before the stop.
            resumed = getattr(self, "_resumed_path", None)
            run = getattr(self, "_resumed_run", None)
            self._run = run if isinstance(run, str) else secrets.token_hex(8)
            if self._own_name(resumed) and resumed != os.fspath(self.path):
                self.path_ = resumed  # a numbered name: created for this run
            elif self._take_path(self._run):
                self.path_ = os.fspath(self.path)
            else:
                self.path_ = claimed = create_new(_numbered(self.path))
        try:
            with atomic_open(self.path_, "w", what="CSV log", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self._rows)
        except BaseException:
            if claimed is not None:  # the empty file is this fit's, nobody else's
                with contextlib.suppress(OSError):
                    os.remove(claimed)
                self.path_ = None
            raise
        return False

    def state_dict(self) -> dict:
        # The run's name for its file: a resumed fit keeps path only if no
        # other run of the logger took it meanwhile.
        return {"rows": list(self._rows), "path": self.path_, "run": getattr(self, "_run", None)}

    def load_state_dict(self, state: dict) -> None:
        self._rows = list(state["rows"])
        self._resumed_path = state.get("path")
        self._resumed_run = state.get("run")
