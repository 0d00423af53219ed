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
from typing import Iterator

__all__ = ["LOGGER_NAME", "get_logger", "level_for", "verbosity"]

LOGGER_NAME = "liftlearn"

_lock = threading.Lock()


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
        leaves the process's logging changed.

    Yields
    ------
    logger : logging.Logger
        The ``liftlearn`` logger.
    """
    logger = get_logger()
    wanted = level_for(verbose)
    if wanted >= logging.WARNING:
        yield logger
        return
    with _lock:
        old_level = logger.level
        handler = None
        if logger.getEffectiveLevel() > wanted:
            logger.setLevel(wanted)
        if not logger.hasHandlers():
            # Nothing configured (no handler on liftlearn's loggers nor on
            # root): logging's last resort shows WARNING and above only, so
            # the INFO lines verbose asked for need a handler of their own.
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
    try:
        yield logger
    finally:
        with _lock:
            logger.setLevel(old_level)
            if handler is not None:
                logger.removeHandler(handler)
