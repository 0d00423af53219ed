"""The one place where liftlearn uses torch's global random generator.

Everything random in a fit has its own generator: the crops draw from
``numpy.random.default_rng([seed, epoch, image])``, the shuffling from a
``torch.Generator`` per epoch, DataLoaders get their own ``generator=``.
Module construction is the exception: ``nn.Linear`` and open_clip's models
initialise their parameters from torch's process-wide generator and take no
generator. :func:`seeded_global_rng` runs such a construction seeded, under
one process-wide lock, and puts the caller's generator state back, so that

- a fit never changes the caller's ``torch.get_rng_state()`` (nor any CUDA
  generator's state: those are left alone), and
- two fits in two threads cannot interleave their seeded draws (each
  initialisation sees exactly the stream its seed gives, as in a sequential
  run).

The lock cannot stop code outside liftlearn from drawing from the global
generator in another thread during the milliseconds of an initialisation;
such code should use its own ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

__all__ = ["GLOBAL_RNG_LOCK", "seeded_global_rng"]

#: Held while liftlearn seeds and draws from torch's global CPU generator.
GLOBAL_RNG_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded by ``seed``.

    The generator's previous state is restored afterwards, and the block
    runs under :data:`GLOBAL_RNG_LOCK`, so concurrent seeded blocks (in
    other threads) run one after the other. The CUDA (and other
    accelerators') generators are neither seeded nor restored.

    Parameters
    ----------
    seed : int
        The seed; the block draws the stream ``torch.manual_seed(seed)``
        gives on the CPU.

    Yields
    ------
    None
    """
    import torch

    # Only the CPU generator: torch.manual_seed would also seed every CUDA
    # generator (or queue that seeding for when CUDA starts), which nothing
    # here restores, so the caller's CUDA random stream would be reset.
    generator = torch.default_generator
    with GLOBAL_RNG_LOCK:
        state = generator.get_state()
        generator.manual_seed(int(seed))
        try:
            yield
        finally:
            generator.set_state(state)
