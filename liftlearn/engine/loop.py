"""The training and prediction loops shared by liftlearn's estimators."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .exceptions import TrainingError
from .losses import LogitAdjustedLoss

__all__ = ["Checkpoint", "TrainConfig", "predict_logits", "resolve_device", "train"]


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device torch knows: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available")
    return device


def _autocast(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16); fp32 elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def make_optimizer(network: torch.nn.Module, config: "TrainConfig", device: torch.device):
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


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def _loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers, sampler=None):
    if num_workers is None:
        # Decoding JPEGs is what starves a GPU (one process decodes and crops
        # about 260 ImageNet-sized JPEGs/s: benchmarks/perf_profile.py); on a
        # CPU the model needs the cores more than the loader does.
        num_workers = min(16, max(1, _usable_cpus() - 1)) if device.type == "cuda" else 0
    extra = {}
    if num_workers > 0:
        # Loaders are rebuilt every epoch (the epoch is a dataset argument),
        # so persistent workers would buy nothing; a deeper queue evens out
        # slow files without changing which crops are drawn.
        extra["prefetch_factor"] = 4
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=False,
        **extra,
    )


def _progress(iterable, verbose: int, desc: str, total: int):
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


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
            import warnings

            warnings.warn(f"ignoring unreadable checkpoint {self.path!r}: {exc}", stacklevel=2)
            return None
        return state if state.get("key") == self.key else None

    def write(self, state: dict) -> None:
        """Save atomically: a crash while writing never leaves a torn file."""
        os.makedirs(self.directory, exist_ok=True)
        tmp = self.path + ".tmp"
        torch.save({**state, "key": self.key}, tmp)
        os.replace(tmp, self.path)


@dataclass
class TrainConfig:
    """The optimisation settings of one fit (LIFT+ defaults)."""

    epochs: int = 5
    batch_size: int = 128
    device_batch_size: Optional[int] = None
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    tau: float = 1.0
    num_workers: Optional[int] = None
    verbose: int = 0
    compile: bool = False


def train(
    network: torch.nn.Module,
    dataset_for_epoch: Callable[[int], Dataset],
    class_counts,
    config: TrainConfig,
    seed: int,
    device: torch.device,
    checkpoint: Optional[Checkpoint] = None,
) -> List[dict]:
    """Run LIFT+'s optimisation of ``network``'s trainable parameters.

    SGD with momentum and weight decay on every trainable parameter, cosine
    learning-rate schedule stepped per epoch, logit-adjusted cross-entropy,
    and gradient accumulation when ``device_batch_size < batch_size``: each
    micro-batch's loss is weighted by its share of the logical batch, so the
    update equals the one a single full batch would give.

    Parameters
    ----------
    network : LiftNetwork
        Already on ``device``.
    dataset_for_epoch : callable
        ``epoch -> Dataset`` of ``(image, target)``; the epoch is passed
        explicitly so the augmentation schedule never relies on worker state.
    class_counts : array-like of shape (n_classes,)
    config : TrainConfig
    seed : int
        Seeds the shuffling (per epoch).
    device : torch.device
    checkpoint : Checkpoint or None
        Saved after every epoch; a saved state of the same run is resumed
        from (network, optimiser, schedule and history), which gives the
        same result as an uninterrupted run because the shuffling and the
        crops depend only on the seed, the epoch and the image.

    Returns
    -------
    history : list of dict
        One entry per epoch: ``epoch``, ``loss`` (mean over images), ``lr``,
        ``seconds``.

    Raises
    ------
    TrainingError
        If the loss stops being finite.
    """
    micro = config.device_batch_size or config.batch_size
    accum = config.batch_size // micro
    optimizer, scheduler = make_optimizer(network, config, device)
    criterion = LogitAdjustedLoss(class_counts, tau=config.tau).to(device)
    autocast, scaler = _autocast(device)
    # The compiled module shares the parameters: optimiser, checkpoints and
    # the fitted network are untouched; only the training forward is traced.
    model = torch.compile(network) if config.compile else network
    history = []
    saved = checkpoint.read() if checkpoint is not None else None
    if saved is not None:
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        history = list(saved["history"])
    network.train()
    for epoch in range(len(history), config.epochs):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        dataset = dataset_for_epoch(epoch)
        n = len(dataset)
        generator = torch.Generator().manual_seed(int(seed) + epoch)
        loader = _loader(dataset, micro, device, config.num_workers, RandomSampler(dataset, generator=generator))
        total_loss = torch.zeros((), device=device)
        optimizer.zero_grad(set_to_none=True)
        batches = _progress(loader, config.verbose, f"epoch {epoch + 1}/{config.epochs}", len(loader))
        for j, (images, targets) in enumerate(batches):
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            step = j // accum
            logical = min(config.batch_size, n - step * config.batch_size)
            with autocast:
                loss = criterion(model(images), targets)
            backward(loss * (len(targets) / logical), scaler)
            total_loss += loss.detach() * len(targets)
            if (j + 1) % accum == 0 or (j + 1) == len(loader):
                optimizer_step(optimizer, scaler)
        scheduler.step()
        # One host sync per epoch: checking every step would stall the GPU.
        mean_loss = float(total_loss) / max(n, 1)
        check_finite_loss(mean_loss, epoch, config.lr)
        history.append(
            {"epoch": epoch + 1, "loss": mean_loss, "lr": lr, "seconds": time.perf_counter() - start}
        )
        if config.verbose:
            print(f"epoch {epoch + 1}/{config.epochs}: loss {mean_loss:.4f}, lr {lr:.5f}")
        if checkpoint is not None:
            checkpoint.write({
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "history": history,
                "seed": int(seed),
            })
    network.eval()
    return history


@torch.no_grad()
def predict_logits(
    network: torch.nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    num_workers=None,
    verbose: int = 0,
) -> np.ndarray:
    """Logits averaged over each image's views.

    ``dataset`` yields tensors of shape ``(n_views, 3, H, W)`` (1 view without
    TTE, 5 with); all views of a batch run through the network together.

    Returns
    -------
    logits : ndarray of shape (n_images, n_classes), float32
    """
    network.eval()
    autocast, _ = _autocast(device)
    loader = _loader(dataset, batch_size, device, num_workers)
    out = []
    for views in _progress(loader, verbose, "predict", len(loader)):
        b, v = views.shape[:2]
        views = views.to(device, non_blocking=True).flatten(0, 1)
        with autocast:
            logits = network(views)
        # Stay on the device: a copy per batch would be a host sync per batch.
        out.append(logits.float().view(b, v, -1).mean(dim=1))
    return torch.cat(out).cpu().numpy()
