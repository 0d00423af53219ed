"""The one training loop of liftlearn, driven by a task object.

The loop owns what every fit shares: micro-batches and gradient
accumulation, autocast and the gradient scaler, SGD with its per-epoch
cosine schedule, ``torch.compile``, one host sync per epoch, the
finite-loss check, the history, checkpoint write and resume, and progress.
A :class:`~liftlearn.engine.tasks.TrainingTask` supplies only what differs
between objectives (its batches for an epoch, its step, what happens after a
backward pass or an optimizer step, its extra state for checkpoints).

An optional *monitor* watches the fit from outside (the estimators pass one
for ``validation_data`` and ``callbacks``; the engine computes no metric
itself). After each epoch the loop calls ``monitor.evaluate(record)`` (extra
history entries, e.g. validation scores), logs the epoch line with
``monitor.describe(record)`` appended, then ``monitor.epoch_end(record)``:
True stops the fit after this epoch (the learning-rate schedule stays the one
planned for ``config.epochs``). ``monitor.state_dict()`` is saved with each
checkpoint and handed back to ``monitor.load_state_dict`` on resume; a
checkpoint of a stopped fit resumes as finished when ``load_state_dict``
accepts the state (returns anything but False: the same callbacks), else the
fit trains on to ``config.epochs``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import List, Optional

import torch

from .._device import autocast_for, network_dtype
from .._logging import get_logger
from ..exceptions import TrainingError
from ._loading import make_loader, progress
from .checkpoint import Checkpoint

__all__ = [
    "TrainConfig",
    "history_keys",
    "backward",
    "check_finite_loss",
    "check_trained_network",
    "fit_task",
    "make_optimizer",
    "optimizer_step",
]

_log = get_logger("engine")


@dataclass
class TrainConfig:
    """The optimisation settings of one fit (LIFT+ defaults)."""

    epochs: int = 5
    batch_size: int = 128
    device_batch_size: Optional[int] = None
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    num_workers: Optional[int] = None
    verbose: int = 0
    compile: bool = False

    @property
    def micro_batch_size(self) -> int:
        return self.device_batch_size or self.batch_size


def make_optimizer(network: torch.nn.Module, config: TrainConfig, device: torch.device):
    """LIFT+'s SGD over every trainable parameter and its per-epoch cosine schedule."""
    params = [p for p in network.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the network has no trainable parameters")
    # One fused kernel per update on CUDA; the CPU keeps the default path.
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        **fused,
    )
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)


def backward(loss: torch.Tensor, scaler) -> None:
    """``loss.backward()``, through the fp16 gradient scaler when there is one."""
    (scaler.scale(loss) if scaler is not None else loss).backward()


def optimizer_step(optimizer, scaler) -> None:
    """Step (unscaling fp16 gradients first when needed) and clear the gradients."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def check_finite_loss(loss: float, epoch: int, lr: float) -> None:
    """Stop a diverged fit with advice (checked once per epoch, not per step)."""
    if not math.isfinite(loss):
        raise TrainingError(
            f"the training loss became {loss} in epoch {epoch + 1}; try a smaller lr "
            f"(now {lr}), check the images for extreme values, or train in fp32 "
            "(device='cpu') to rule out mixed precision"
        )


def _probe_images(network: torch.nn.Module, device: torch.device) -> Optional[torch.Tensor]:
    """Two fixed random images for the end-of-epoch check (None: the network
    has no backbone to say their size). Drawn from their own generator, so
    the caller's random state is untouched."""
    backbone = getattr(network, "backbone", None)
    size = getattr(backbone, "image_size", None)
    if not isinstance(size, int):
        return None
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, size, size, generator=generator).to(device)


def _misfit(saved: dict, network: torch.nn.Module, optimizer) -> Optional[str]:
    """Why a checkpoint's network and optimizer states do not fit these, or
    None: the same tensors by name and shape, the same parameter groups, a
    momentum buffer of each parameter's shape."""
    own = network.state_dict()
    theirs = saved["network"]
    if own.keys() != theirs.keys():
        return "its network has other tensors"
    shapes = [name for name, t in own.items()
              if not isinstance(theirs[name], torch.Tensor) or theirs[name].shape != t.shape]
    if shapes:
        return f"its network's {shapes[0]} has another shape"
    groups = saved["optimizer"].get("param_groups") or []
    if [len(g.get("params", ())) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        return "its optimiser trains other parameters"
    state = saved["optimizer"].get("state") or {}
    ids = [i for g in groups for i in g["params"]]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in zip(ids, params):
        buffer = (state.get(i) or {}).get("momentum_buffer")
        if buffer is not None and tuple(buffer.shape) != tuple(p.shape):
            return "its optimiser trains other parameters"
    return None


@torch.no_grad()
def _health(network: torch.nn.Module, params, probe: Optional[torch.Tensor], autocast) -> torch.Tensor:
    """On the device, without a sync: ``[trained parameters finite, logits of
    the probe images finite]`` as a float tensor of 0/1.

    The loss is computed before each step, so the last step of an epoch (or
    the only one) can leave NaN or infinite weights that no loss shows; a
    forward in eval mode (as prediction runs) catches weights that are
    finite but overflow.
    """
    params_ok = torch.stack([torch.isfinite(p).all() for p in params]).all()
    if probe is None:
        return torch.stack([params_ok, params_ok]).double()
    was_training = network.training
    network.eval()
    try:
        with autocast:
            logits = network(probe)
    finally:
        network.train(was_training)
    return torch.stack([params_ok, torch.isfinite(logits).all()]).double()


def check_trained_network(params_ok: bool, logits_ok: bool, epoch: int, lr: float) -> None:
    """Stop a fit whose network stopped being finite (checked once per epoch)."""
    if params_ok and logits_ok:
        return
    what = ("the trained parameters are no longer finite (NaN or inf)" if not params_ok
            else "the network's logits are no longer finite (NaN or inf) although its weights are")
    raise TrainingError(
        f"after epoch {epoch + 1} {what}: the optimisation diverged; try a smaller lr "
        f"(now {lr}), check the images for extreme values, or train in fp32 "
        "(device='cpu') to rule out mixed precision"
    )


def history_keys(task_type: type) -> tuple:
    """The entries of every history record a fit of ``task_type`` writes
    (a monitor adds its own, e.g. the validation scores)."""
    return ("epoch", "loss", *task_type.RECORD_KEYS, "lr", "seconds")


def fit_task(
    task,
    config: TrainConfig,
    device: torch.device,
    checkpoint: Optional[Checkpoint] = None,
    monitor=None,
) -> List[dict]:
    """Train ``task.network``'s trainable parameters as ``task`` says.

    SGD with momentum and weight decay on every trainable parameter, cosine
    learning-rate schedule stepped per epoch, and gradient accumulation when
    ``device_batch_size < batch_size``: each micro-batch's loss is weighted
    by its share of the logical batch, so the update equals the one a single
    full batch would give.

    Parameters
    ----------
    task : TrainingTask
        Its network already on ``device``.
    config : TrainConfig
    device : torch.device
    checkpoint : Checkpoint or None
        Saved after every epoch; a saved state of the same run is resumed
        from (network, optimiser, schedule, history and the task's own
        state), which gives the same result as an uninterrupted run because
        the task's batches depend only on the seed, the epoch and the image.
    monitor : object or None
        Watches and may stop the fit (see the module docstring).

    Returns
    -------
    history : list of dict
        One entry per epoch: ``epoch``, ``loss`` (mean over the epoch's
        items), the task's own entries, ``lr``, ``seconds``.

    Raises
    ------
    TrainingError
        If the loss, the trained parameters or the logits of a fixed probe
        batch stop being finite (checked at the end of every epoch, before
        the checkpoint is written).
    """
    network = task.network
    micro = config.micro_batch_size
    accum = config.batch_size // micro
    optimizer, scheduler = make_optimizer(network, config, device)
    autocast, scaler = autocast_for(device, network_dtype(network))  # the backbone's precision
    if config.compile:
        # The compiled callables share the parameters: optimiser, checkpoints
        # and the fitted network are untouched; only the training forward is
        # traced.
        task.compile(torch.compile)
    history: List[dict] = []
    stopped = False
    saved = checkpoint.read() if checkpoint is not None else None
    if saved is not None:
        problem = _misfit(saved, network, optimizer)
        if problem is not None:
            # Same key, other trainable parts: written by a liftlearn that
            # trained other parameters for these settings. Checked before
            # anything is loaded, so the fit starts afresh, untouched.
            warnings.warn(f"ignoring checkpoint {checkpoint.path!r}: {problem} (written by "
                          "another liftlearn version?); training from the start", stacklevel=3)
            saved = None
    if saved is not None:
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        task.load_state_dict(saved.get("task", {}))
        history = list(saved["history"])
        # A stop was the saved monitor's decision: it holds only for the same
        # monitor (load_state_dict returns False for another one), otherwise
        # the fit trains on to config.epochs.
        matched = monitor is not None and monitor.load_state_dict(saved.get("monitor", {})) is not False
        stopped = bool(saved.get("stopped", False)) and matched
    loader = partial(make_loader, device=device, num_workers=config.num_workers)
    trained = [p for p in network.parameters() if p.requires_grad]
    probe = _probe_images(network, device)
    network.train()
    for epoch in range(len(history), config.epochs):
        if stopped:
            break
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        batches, n = task.epoch_batches(epoch, micro, loader)
        total_loss = torch.zeros((), device=device)
        optimizer.zero_grad(set_to_none=True)
        shown = progress(batches, config.verbose, f"epoch {epoch + 1}/{config.epochs}", len(batches))
        for j, batch in enumerate(shown):
            step = j // accum
            logical = min(config.batch_size, n - step * config.batch_size)
            with autocast:
                loss, size = task.training_step(batch)
            backward(loss * (size / logical), scaler)
            total_loss += loss.detach() * size
            task.after_backward()
            if (j + 1) % accum == 0 or (j + 1) == len(batches):
                optimizer_step(optimizer, scaler)
                task.after_optimizer_step()
        scheduler.step()
        # One host sync per epoch (the loss and the network's health
        # together): checking every step would stall the GPU.
        health = _health(network, trained, probe, autocast)
        loss_sum, params_ok, logits_ok = torch.cat([total_loss.reshape(1).double(), health]).tolist()
        mean_loss = loss_sum / max(n, 1)
        check_finite_loss(mean_loss, epoch, config.lr)
        check_trained_network(bool(params_ok), bool(logits_ok), epoch, config.lr)
        # The entries history_keys names.
        record = {"epoch": epoch + 1, "loss": mean_loss}
        record.update(task.epoch_end(n))
        record.update({"lr": lr, "seconds": time.perf_counter() - start})
        if monitor is not None:
            record.update(monitor.evaluate(record))
        history.append(record)
        if config.verbose:
            # Through the liftlearn logger (the estimator's verbose sets its
            # level), so scripts and log files get whole lines, not prints.
            suffix = monitor.describe(record) if monitor is not None else ""
            _log.info(task.describe(record, config.epochs) + suffix)
        if monitor is not None:
            stopped = bool(monitor.epoch_end(record))
        if checkpoint is not None:
            checkpoint.write({
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "history": history,
                "seed": int(task.seed),
                "task": task.state_dict(),
                "monitor": monitor.state_dict() if monitor is not None else {},
                "stopped": stopped,
            })
    network.eval()
    return history
