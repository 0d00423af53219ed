"""liftlearn's logger and how an estimator's ``verbose`` drives it.

Everything liftlearn reports while it works (epoch lines, what open_clip says
while it builds a backbone) goes through the ``liftlearn`` logger and its
children, never ``print``; configure it like any other library's logger::

    import logging
    logging.getLogger("liftlearn").setLevel(logging.INFO)

An estimator's ``verbose`` lowers the logger's level for the duration of one
``fit`` or prediction (1: INFO, the epoch lines; 2 or more: DEBUG) and, when
nothing in the process would show the records, adds a handler on stderr for
that call; ``verbose=0`` leaves the logging configuration as the user set it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, Callable, Hashable, Iterator, Optional

__all__ = ["LOGGER_NAME", "SharedChange", "get_logger", "level_for", "verbosity"]

LOGGER_NAME = "liftlearn"


class SharedChange:
    """A change to process-wide logging state that overlapping blocks share.

    Logging's configuration belongs to the process, and fits in threads (a
    grid search on joblib's threading backend) enter and leave their blocks
    in any order: a block that saved the state on entry and put it back on
    exit would, leaving first, undo the change under a block still running,
    or, leaving last, "restore" the other block's change. Here the first
    block to enter saves the state, the last to leave restores it, and in
    between the change follows the requests of the blocks still inside.

    Parameters
    ----------
    start : callable
        ``start() -> saved``, run when a block enters and none is inside:
        saves what ``finish`` needs and makes the changes that do not
        depend on the requests.
    finish : callable
        ``finish(saved)``, run when the last block inside leaves.
    update : callable, optional
        ``update(saved, requests)``, run whenever a block enters or leaves
        and some remain, with the requests of the blocks inside, in the
        order they entered.
    """

    def __init__(self, start: Callable[[], Any], finish: Callable[[Any], None],
                 update: Optional[Callable[[Any, list], None]] = None) -> None:
        self._start = start
        self._finish = finish
        self._update = update
        self._lock = threading.Lock()
        self._requests: list = []
        self._saved: Any = None

    @contextlib.contextmanager
    def hold(self, request: Hashable = None) -> Iterator[None]:
        """Keep the change made for the block, following ``request`` too.

        Parameters
        ----------
        request : hashable, optional
            What this block asks of the change (for :func:`verbosity`, its
            level); passed to ``update`` among the others while the block
            is inside.

        Yields
        ------
        None
        """
        with self._lock:
            if not self._requests:
                self._saved = self._start()
            self._requests.append(request)
            if self._update is not None:
                self._update(self._saved, list(self._requests))
        try:
            yield
        finally:
            with self._lock:
                # Equal requests are interchangeable: which one goes is moot.
                self._requests.remove(request)
                if not self._requests:
                    saved, self._saved = self._saved, None
                    self._finish(saved)
                elif self._update is not None:
                    self._update(self._saved, list(self._requests))


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``liftlearn`` logger, or its child ``liftlearn.<name>``."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def level_for(verbose) -> int:
    """The logging level ``verbose`` asks for: 0 -> WARNING, 1 -> INFO, 2+ -> DEBUG."""
    try:
        verbose = int(verbose)
    except (TypeError, ValueError):
        verbose = 0
    if verbose <= 0:
        return logging.WARNING
    return logging.INFO if verbose == 1 else logging.DEBUG


@contextlib.contextmanager
def verbosity(verbose) -> Iterator[logging.Logger]:
    """Show liftlearn's records down to the level ``verbose`` asks for, for one call.

    Parameters
    ----------
    verbose : int
        An estimator's ``verbose``. 0 changes nothing (the user's logging
        configuration decides); 1 or more lowers the ``liftlearn`` logger's
        level to INFO (DEBUG for 2+) where it is higher, and adds a plain
        stderr handler where no handler of the process would show the
        records. Both are undone when the block ends, so an estimator never
        leaves the process's logging changed. Blocks overlapping in threads
        share the change (the level is the most verbose one asked for by a
        block still running) and the last to end undoes it.

    Yields
    ------
    logger : logging.Logger
        The ``liftlearn`` logger.
    """
    wanted = level_for(verbose)
    if wanted >= logging.WARNING:
        yield get_logger()
        return
    with _verbose_logging.hold(wanted):
        yield get_logger()


def _start_verbose_logging() -> tuple:
    logger = get_logger()
    handler = None
    if not logger.hasHandlers():
        # Nothing configured (no handler on liftlearn's loggers nor on
        # root): logging's last resort shows WARNING and above only, so
        # the INFO lines verbose asked for need a handler of their own.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger.level, logger.getEffectiveLevel(), handler


def _update_verbose_logging(saved: tuple, levels: list) -> None:
    level, effective, _ = saved
    # The most verbose block inside wins; a level the user set lower stays.
    wanted = min(levels)
    get_logger().setLevel(wanted if wanted < effective else level)


def _finish_verbose_logging(saved: tuple) -> None:
    level, _, handler = saved
    logger = get_logger()
    logger.setLevel(level)
    if handler is not None:
        logger.removeHandler(handler)


_verbose_logging = SharedChange(_start_verbose_logging, _finish_verbose_logging,
                                _update_verbose_logging)
