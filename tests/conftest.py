"""Shared fixtures: a tiny CLIP checkpoint, real image files, offline mode."""

import os

# Must happen before huggingface_hub is imported anywhere: tests never touch
# the network, and a cache miss must fail at once rather than retry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


def checkout_env(**extra) -> dict:
    """``os.environ`` for a subprocess that must import this checkout first:
    the repository ahead of the caller's ``PYTHONPATH``, whose folders (the
    dependencies ``benchmarks/gpu_suite.sh --wheels`` installs, say) stay
    importable; then ``extra``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_in_threads(*targets, timeout: float = 60.0) -> None:
    """Run each callable in a thread of its own, wait for all, and raise the
    first exception one of them raised (in a thread, a failed assert would
    only be printed)."""
    errors: list = []

    def run(target):
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread is still running"
    if errors:
        raise errors[0]


def lock_is_free(lock) -> bool:
    """Whether another thread could take ``lock`` now (the caller's own
    RLock would let the caller re-enter)."""
    free = []

    def attempt():
        free.append(lock.acquire(blocking=False))
        if free[0]:
            lock.release()

    other = threading.Thread(target=attempt)
    other.start()
    other.join()
    return free[0]


def stop_after_epochs(fit, after_epochs: int = 1) -> None:
    """Run ``fit()`` as Ctrl-C would stop it right after the checkpoint of
    epoch ``after_epochs`` is written (the fit raises KeyboardInterrupt)."""
    from liftlearn.engine import Checkpoint

    real = Checkpoint.write

    def write(checkpoint, state):
        real(checkpoint, state)
        if len(state["history"]) == after_epochs:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Checkpoint, "write", write)
        with pytest.raises(KeyboardInterrupt):
            fit()


class _ReplaceableWeights:
    """A tiny CLIP weights file (``path``) that ``replace()`` overwrites with
    other weights and a later modification time (whatever the clock)."""

    def __init__(self, path):
        import copy

        from liftlearn.nn.backbones import get_backbone

        self.path = str(path)
        self.model = copy.deepcopy(get_backbone("liftlearn-tiny-vit", "cpu").model)
        torch.save(self.model.state_dict(), self.path)

    def replace(self) -> None:
        import time

        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(0.1)
        torch.save(self.model.state_dict(), self.path)
        os.utime(self.path, ns=(time.time_ns() + 10**9,) * 2)


@pytest.fixture
def replaceable_weights(tmp_path):
    return _ReplaceableWeights(tmp_path / "w.pt")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cuda: needs a CUDA device (skipped without one; benchmarks/gpu_suite.sh --tests runs "
        "these first)",
    )


def shared_cifar_dir():
    """The CIFAR-10 JPEG tars in ../shared, or None where absent."""
    env = os.environ.get("LIFTLEARN_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "cifar10-jpg")
    for c in candidates:
        if (c / "train.tar").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The tiny ViT's weights saved as a local checkpoint file.

    Loading it goes through open_clip's real ``pretrained=<file>`` path.
    """
    import open_clip

    from liftlearn.nn.backbones import _open_clip

    _open_clip()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = open_clip.create_model("liftlearn-tiny-vit")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="session")
def sample():
    """The embedded real CIFAR-10-LT sample: (X, y, names, X_test, y_test)."""
    from liftlearn.datasets import load_cifar10_lt_sample

    X, y, names = load_cifar10_lt_sample("train")
    Xt, yt, _ = load_cifar10_lt_sample("test")
    return list(X), np.asarray(y), list(names), list(Xt), np.asarray(yt)


@pytest.fixture(scope="session")
def small(sample):
    """A small stratified subset (10 to 12 images per class) for fast fits."""
    X, y, names, Xt, yt = sample
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:12] for c in range(10)])
    tidx = np.concatenate([np.flatnonzero(yt == c)[:4] for c in range(10)])
    return [X[i] for i in idx], y[idx], names, [Xt[i] for i in tidx], yt[tidx]


@pytest.fixture
def tiny_params(tiny_checkpoint):
    """Constructor parameters for a fast LiftPlusClassifier."""
    return dict(
        backbone="liftlearn-tiny-vit",
        pretrained=tiny_checkpoint,
        epochs=2,
        batch_size=32,
        device="cpu",
        random_state=0,
    )
