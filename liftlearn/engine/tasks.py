"""Training tasks: what differs between liftlearn's objectives.

:func:`~liftlearn.engine.loop.fit_task` runs any task (the shape of
open_clip's and timm's ``task`` objects). A task supplies:

- ``network``: the module whose trainable parameters are optimised and whose
  ``state_dict`` is checkpointed;
- ``epoch_batches(epoch, micro_batch_size, loader)``: the epoch's batches and
  the number of items the loss is averaged over;
- ``training_step(batch)``: the forward and the loss of one micro-batch (run
  under the loop's autocast), as ``(loss, n_items)``;
- optional hooks: ``after_backward`` (per micro-batch),
  ``after_optimizer_step``, ``epoch_end(n)`` (extra history entries),
  ``compile(compiler)``, ``describe(record, epochs)`` (the verbose line) and
  ``state_dict``/``load_state_dict`` (state carried across epochs, for
  checkpoints).
"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import RandomSampler

from ..nn import ulfine as um
from ..nn.losses import log_prior
from ._loading import DeviceImages

__all__ = ["LiftPlusTask", "TrainingTask", "ULFineTask"]


class TrainingTask:
    """Base class: the hooks of a task, each a no-op where that makes sense.

    Parameters
    ----------
    network : torch.nn.Module
        Already on ``device``.
    seed : int
        Seeds the epoch's shuffling (and is saved with checkpoints).
    device : torch.device
    """

    def __init__(self, network: torch.nn.Module, seed: int, device: torch.device):
        self.network = network
        self.seed = int(seed)
        self.device = device
        self.forward = network
        # The loaders' uint8 pixels become network input on the device.
        self.images = DeviceImages.of(network, device)

    def compile(self, compiler: Callable) -> None:
        """Route the training forward through ``compiler(...)``."""
        self.forward = compiler(self.network)

    def _sampler(self, dataset, epoch: int) -> RandomSampler:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return RandomSampler(dataset, generator=generator)

    def epoch_batches(self, epoch: int, micro_batch_size: int, loader: Callable) -> Tuple:
        raise NotImplementedError

    def training_step(self, batch) -> Tuple[torch.Tensor, int]:
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called after each micro-batch's backward pass."""

    def after_optimizer_step(self) -> None:
        """Called after each optimizer step."""

    #: The history entries :meth:`epoch_end` adds (what callbacks may
    #: monitor is checked against them before a fit starts).
    RECORD_KEYS: Tuple[str, ...] = ()

    def epoch_end(self, n_items: int) -> dict:
        """Extra history entries of the epoch (host values): ``RECORD_KEYS``."""
        return {}

    def describe(self, record: dict, epochs: int) -> str:
        return f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}, lr {record['lr']:.5f}"

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LiftPlusTask(TrainingTask):
    """LIFT+: a long-tail criterion (logit-adjusted cross-entropy by default)
    on the minimalist crops.

    Parameters
    ----------
    network : LiftNetwork
    dataset_for_epoch : callable
        ``epoch -> Dataset`` of ``(image, target)``; the epoch is passed
        explicitly so the augmentation schedule never relies on worker state.
    criterion : torch.nn.Module
        ``(logits, targets) -> loss``, built by the estimator (for example
        :func:`liftlearn.nn.losses.make_loss`); moved to ``device``.
    seed : int
    device : torch.device
    """

    def __init__(self, network, dataset_for_epoch: Callable, criterion: torch.nn.Module,
                 seed: int, device: torch.device):
        super().__init__(network, seed, device)
        self.dataset_for_epoch = dataset_for_epoch
        self.criterion = criterion.to(device)

    def epoch_batches(self, epoch, micro_batch_size, loader):
        dataset = self.dataset_for_epoch(epoch)
        return loader(dataset, micro_batch_size, sampler=self._sampler(dataset, epoch)), len(dataset)

    def training_step(self, batch):
        images, targets = batch
        images = self.images(images)
        targets = targets.to(self.device, non_blocking=True)
        return self.criterion(self.forward(images), targets), len(targets)


def draw_order(n_images: int, n_draws: int, seed: int, epoch: int, stream: int) -> list:
    """Which images an epoch draws: shuffled passes, cut at ``n_draws``.

    Pass ``k`` (from 0) is a fresh permutation whose items are offset by
    ``k * n_images``, which :class:`~liftlearn.data.SSLDataset` reads as the
    ``k``-th redraw of the image (fresh random views). ``stream`` keeps the
    labeled (0) and unlabeled (1) orders independent.
    """
    rng = np.random.default_rng([seed, epoch, stream])
    passes = -(-n_draws // n_images)
    order = np.concatenate([rng.permutation(n_images) + k * n_images for k in range(passes)])
    return order[:n_draws].tolist()


def unlabeled_order(n_unlabeled: int, n_draws: int, seed: int, epoch: int) -> list:
    """The unlabeled images an epoch draws (:func:`draw_order`, stream 1)."""
    return draw_order(n_unlabeled, n_draws, seed, epoch, stream=1)


class _PairedBatches:
    """Each labeled micro-batch with its unlabeled partner (or None)."""

    def __init__(self, labeled_loader, unlabeled_loader):
        self.labeled_loader = labeled_loader
        self.unlabeled_loader = unlabeled_loader

    def __len__(self) -> int:
        return len(self.labeled_loader)

    def __iter__(self):
        unlabeled = iter(self.unlabeled_loader) if self.unlabeled_loader is not None else None
        for batch in self.labeled_loader:
            yield batch, (next(unlabeled) if unlabeled is not None else None)


class ULFineTask(TrainingTask):
    """ULFine: LIFT+ plus FixMatch pseudo-labels, PAF and DLF.

    Each micro-batch pairs labeled training crops with ``ratio`` times as
    many unlabeled (weak, strong) view pairs. The running estimates (visual
    prototypes, ``P_u``) and, with PAF, the textual prototypes (PAF update,
    then the orthogonality step) change once per optimizer step, from the
    whole logical batch: :meth:`after_backward` only collects the
    micro-batch's labeled features and pseudo-labels, and
    :meth:`after_optimizer_step` applies them. The pseudo-labels of a
    logical batch all come from the same model (nothing changes between its
    micro-batches), so the fit does not depend on ``device_batch_size``.

    Parameters
    ----------
    network : ULFineNetwork
    datasets_for_epoch : callable
        ``epoch -> (labeled, unlabeled)`` datasets of
        :class:`~liftlearn.data.SSLDataset`.
    labeled_counts : array-like of shape (n_classes,)
    n_total : int
        Images in ``X`` (the size of the pseudo-label record).
    tau : float
    options : dict
        ``threshold``, ``ratio``, ``unlabeled_weight``, ``paf``,
        ``paf_momentum``, ``ema``, ``orthogonality_weight``,
        ``orthogonality_target`` (``"text"`` or ``"linear"``) and
        ``labeled_draws`` (None: each epoch is one pass over the labeled
        images; else a list with each epoch's number of labeled draws, a
        multiple of the batch size: the step budget).
    seed : int
    device : torch.device
    """

    def __init__(self, network, datasets_for_epoch: Callable, labeled_counts, n_total: int,
                 tau: float, options: dict, seed: int, device: torch.device):
        super().__init__(network, seed, device)
        self.datasets_for_epoch = datasets_for_epoch
        self.tau = float(tau)
        self.options = {"orthogonality_target": "text", "labeled_draws": None, **options}
        self.features = network.features
        n_classes, dim = network.text_prototypes.shape
        self.counts = np.asarray(labeled_counts, dtype=np.float64)
        self.unlabeled_prior = torch.full((n_classes,), 1.0 / n_classes, device=device)
        self.visual = torch.zeros(n_classes, dim, device=device)
        self.seen = torch.zeros(n_classes, dtype=torch.bool, device=device)
        self.pseudo = np.full(int(n_total), -1, dtype=np.int64)
        self.n_pseudo_prev = 0
        self.prior_counts = self.counts.copy()
        self._clear_step()

    def _clear_step(self) -> None:
        # What the current optimizer step's micro-batches have contributed.
        self._step_features, self._step_targets = [], []
        self._step_plabels, self._step_masks = [], []

    def compile(self, compiler):
        self.features = compiler(self.network.features)

    def epoch_batches(self, epoch, micro_batch_size, loader):
        # The logit adjustment's prior: labeled counts plus last epoch's
        # confident pseudo-labels spread as P_u (ours).
        self.prior_counts = self.counts + self.n_pseudo_prev * self.unlabeled_prior.cpu().double().numpy()
        self.adjust = self.tau * log_prior(self.prior_counts).to(self.device)
        labeled, unlabeled = self.datasets_for_epoch(epoch)
        draws = self.options["labeled_draws"]
        if draws is None:
            n = len(labeled)
            labeled_loader = loader(labeled, micro_batch_size, sampler=self._sampler(labeled, epoch))
        else:
            # A step budget: as many labeled draws as the epoch's steps need,
            # in shuffled passes over the labeled images.
            n = int(draws[epoch])
            labeled_loader = loader(labeled, micro_batch_size,
                                    sampler=draw_order(len(labeled), n, self.seed, epoch, stream=0))
        ratio = self.options["ratio"]
        self.use_unlabeled = len(unlabeled) > 0
        unlabeled_loader = None
        if self.use_unlabeled:
            order = unlabeled_order(len(unlabeled), ratio * n, self.seed, epoch)
            unlabeled_loader = loader(unlabeled, ratio * micro_batch_size, sampler=order)
        zero = lambda: torch.zeros((), device=self.device)  # noqa: E731
        self.sums = {"loss_labeled": zero(), "loss_unlabeled": zero()}
        self.n_correct, self.n_pseudo, self.n_drawn = zero(), zero(), 0
        self._clear_step()
        return _PairedBatches(labeled_loader, unlabeled_loader), n

    def training_step(self, batch):
        (xl, yl, _), unlabeled = batch
        network, opts, device = self.network, self.options, self.device
        xl, yl = self.images(xl), yl.to(device, non_blocking=True)
        self._mask = None
        if unlabeled is not None:
            xw, xs, iu = unlabeled
            xw, xs = self.images(xw), self.images(xs)
            with torch.no_grad():
                # FixMatch: the weak view only proposes the label.
                plabel, mask = um.pseudo_labels(network.fused_logits(self.features(xw)), opts["threshold"])
            feats = self.features(torch.cat([xl, xs]))
            f_l, f_s = feats[: len(yl)], feats[len(yl):]
            per_image = F.cross_entropy(network.head(f_s).float() + self.adjust, plabel, reduction="none")
            loss_u = um.masked_mean(per_image, mask)
            self._plabel, self._mask, self._iu = plabel, mask, iu
        else:
            f_l = self.features(xl)
            loss_u = torch.zeros((), device=device)
        loss_x = F.cross_entropy(network.head(f_l).float() + self.adjust, yl)
        loss = loss_x + opts["unlabeled_weight"] * loss_u
        if opts["orthogonality_target"] == "linear" and opts["orthogonality_weight"] > 0:
            # The loop weights each micro-batch's loss by its share of the
            # logical batch, so the penalty counts once per step.
            loss = loss + opts["orthogonality_weight"] * um.orthogonality_penalty(network.head.weight)
        self._f_l, self._yl, self._loss_x, self._loss_u = f_l, yl, loss_x, loss_u
        return loss, len(yl)

    @torch.no_grad()
    def after_backward(self):
        network = self.network
        f_l, yl, n = self._f_l.detach(), self._yl, len(self._yl)
        self.sums["loss_labeled"] += self._loss_x.detach() * n
        self.sums["loss_unlabeled"] += self._loss_u.detach() * n
        self.n_correct += (network.fused_logits(f_l).argmax(1) == yl).sum()
        self._step_features.append(f_l)
        self._step_targets.append(yl)
        if self._mask is not None:
            mask, plabel = self._mask, self._plabel
            self.n_pseudo += mask.sum()
            self.n_drawn += len(mask)
            self._step_plabels.append(plabel)
            self._step_masks.append(mask)
            self.pseudo[self._iu.numpy()] = torch.where(mask, plabel, -1).cpu().numpy()
        # Drop the step's tensors: they hold the micro-batch's activations.
        self._f_l = self._loss_x = self._loss_u = self._mask = self._plabel = None

    @torch.no_grad()
    def after_optimizer_step(self):
        network, opts = self.network, self.options
        if self._step_features:
            um.update_visual_prototypes(self.visual, self.seen, torch.cat(self._step_features),
                                        torch.cat(self._step_targets), opts["ema"])
        if self._step_plabels:
            self.unlabeled_prior = um.ema_class_histogram(
                self.unlabeled_prior, torch.cat(self._step_plabels), torch.cat(self._step_masks),
                opts["ema"])
        if opts["paf"]:
            text = um.paf_update(network.text_prototypes, self.visual, self.seen,
                                 self.unlabeled_prior, opts["paf_momentum"])
            if opts["orthogonality_target"] == "text" and opts["orthogonality_weight"] > 0:
                text = um.orthogonality_step(text, opts["orthogonality_weight"])
            network.text_prototypes.copy_(text)
        self._clear_step()

    RECORD_KEYS = ("loss_labeled", "loss_unlabeled", "n_pseudo_labels", "pseudo_label_rate",
                   "labeled_accuracy")

    def epoch_end(self, n_items):
        record = {k: float(v) / max(n_items, 1) for k, v in self.sums.items()}
        self.n_pseudo_prev = int(self.n_pseudo)
        record.update({
            "n_pseudo_labels": self.n_pseudo_prev,
            "pseudo_label_rate": self.n_pseudo_prev / self.n_drawn if self.n_drawn else 0.0,
            "labeled_accuracy": float(self.n_correct) / max(n_items, 1),
        })
        return record

    def describe(self, record, epochs):
        return (f"epoch {record['epoch']}/{epochs}: loss {record['loss']:.4f}, "
                f"pseudo-labels {record['n_pseudo_labels']}, "
                f"labeled acc {record['labeled_accuracy']:.3f}")

    def results(self) -> dict:
        """What the fit keeps: pseudo-labels, ``P_u`` and the last prior."""
        return {
            "pseudo": self.pseudo,
            "unlabeled_prior": self.unlabeled_prior.cpu().double().numpy(),
            "class_prior": self.prior_counts / self.prior_counts.sum(),
        }

    def state_dict(self) -> dict:
        # Saved after an epoch, when no step is half-collected.
        return {
            "unlabeled_prior": self.unlabeled_prior,
            "visual": self.visual,
            "seen": self.seen,
            "pseudo": torch.from_numpy(self.pseudo),
            "n_pseudo_prev": int(self.n_pseudo_prev),
            "prior_counts": torch.from_numpy(np.asarray(self.prior_counts, dtype=np.float64)),
        }

    def load_state_dict(self, state):
        if not state:
            return
        self.unlabeled_prior = state["unlabeled_prior"].to(self.device)
        self.visual = state["visual"].to(self.device)
        self.seen = state["seen"].to(self.device)
        self.pseudo = state["pseudo"].numpy().copy()
        self.n_pseudo_prev = int(state["n_pseudo_prev"])
        self.prior_counts = state["prior_counts"].numpy().copy()
