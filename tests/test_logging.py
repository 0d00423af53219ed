"""liftlearn reports through the ``liftlearn`` logger; progress bars only on a terminal."""

from __future__ import annotations

import io
import logging
import threading

import pytest
from conftest import run_in_threads

from liftlearn._logging import get_logger, level_for, verbosity
from liftlearn.engine._loading import progress


def bare_logging(monkeypatch):
    """No handler anywhere, as in a plain script: root's handlers removed.

    Called in the test body: pytest adds its capture handlers to root when
    the test starts, after the fixtures ran.
    """
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    logger = get_logger()
    assert not logger.handlers and logger.level == logging.NOTSET
    return logger


@pytest.mark.parametrize("verbose, level", [(0, logging.WARNING), (1, logging.INFO),
                                            (2, logging.DEBUG), (5, logging.DEBUG)])
def test_level_for(verbose, level):
    assert level_for(verbose) == level


def test_verbosity_shows_info_lines_for_one_call_only(monkeypatch, capsys):
    logger = bare_logging(monkeypatch)
    log = get_logger("engine")
    log.info("before")
    with verbosity(1):
        log.info("epoch 1/1: during")
        log.debug("not at verbose=1")
    log.info("after")
    err = capsys.readouterr().err
    assert err == "epoch 1/1: during\n"
    # Nothing is left behind: the user's configuration is untouched.
    assert not logger.handlers and logger.level == logging.NOTSET


def test_verbosity_zero_leaves_the_users_configuration(monkeypatch):
    logger = bare_logging(monkeypatch)
    logger.setLevel(logging.INFO)
    try:
        with verbosity(0):
            assert logger.level == logging.INFO
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(logging.NOTSET)
    assert not logger.handlers


def test_nested_verbosity_restores_each_level_and_survives_errors(monkeypatch):
    logger = bare_logging(monkeypatch)
    with verbosity(1):
        (handler,) = logger.handlers
        with pytest.raises(KeyboardInterrupt):
            with verbosity(2):
                assert logger.level == logging.DEBUG and logger.handlers == [handler]
                raise KeyboardInterrupt
        assert logger.level == logging.INFO and logger.handlers == [handler]
    assert not logger.handlers and logger.level == logging.NOTSET


def test_verbosity_in_overlapping_threads(monkeypatch, capsys):
    # Two fits in threads (GridSearchCV on joblib's threading backend): A
    # enters, B enters, A leaves while B still runs. B's lines must still
    # show, and once both left the user's level and handlers are as before.
    logger = bare_logging(monkeypatch)
    log = get_logger("engine")
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def fit_a():
        with verbosity(1):
            a_in.set()
            assert b_in.wait(10)
            log.info("A: epoch 1/1")
        a_out.set()

    def fit_b():
        assert a_in.wait(10)
        with verbosity(2):
            b_in.set()
            assert a_out.wait(10)
            log.info("B: epoch 1/1")
            log.debug("B: detail")

    run_in_threads(fit_a, fit_b)
    assert capsys.readouterr().err == "A: epoch 1/1\nB: epoch 1/1\nB: detail\n"
    assert not logger.handlers and logger.level == logging.NOTSET


def test_verbosity_in_threads_restores_the_users_level(monkeypatch):
    # The level follows the blocks still inside, whichever left first, and
    # the user's own level comes back once the last one leaves.
    logger = bare_logging(monkeypatch)
    logger.setLevel(logging.ERROR)
    try:
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def fit_a():
            with verbosity(1):
                assert logger.level == logging.INFO
                a_in.set()
                assert b_in.wait(10)
            a_out.set()

        def fit_b():
            assert a_in.wait(10)
            with verbosity(2):
                assert logger.level == logging.DEBUG
                b_in.set()
                assert a_out.wait(10)
                assert logger.level == logging.DEBUG

        run_in_threads(fit_a, fit_b)
        assert logger.level == logging.ERROR and not logger.handlers
    finally:
        logger.setLevel(logging.NOTSET)


def test_verbosity_uses_a_configured_handler(caplog):
    # With logging configured (pytest's caplog handler on root), records go
    # there and verbosity adds no handler of its own.
    get_logger("engine").info("not shown: the level is WARNING")
    with verbosity(1):
        get_logger("engine").info("epoch 2/5")
        assert not get_logger().handlers
    assert [r.getMessage() for r in caplog.records] == ["epoch 2/5"]


def test_fit_logs_epoch_lines_instead_of_printing(tiny_params, small, capsys, caplog):
    from liftlearn import LiftPlusClassifier

    X, y, names, _, _ = small
    params = dict(tiny_params, epochs=1, tte=False, verbose=1)
    LiftPlusClassifier(**params).fit(X[:40], y[:40], class_names=names)
    assert "epoch" not in capsys.readouterr().out
    (line,) = [r for r in caplog.records if r.getMessage().startswith("epoch 1/1")]
    assert line.name == "liftlearn.engine" and line.levelno == logging.INFO
    assert get_logger().level == logging.NOTSET  # verbose set it for the fit only


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal(monkeypatch):
    items = range(3)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file or a pipe
    assert progress(items, 1, "epoch 1/1", 3) is items
    monkeypatch.setattr("sys.stderr", _Terminal())
    bar = progress(items, 1, "epoch 1/1", 3)
    assert bar is not items and list(bar) == [0, 1, 2]
    assert progress(items, 0, "epoch 1/1", 3) is items  # verbose=0: never
