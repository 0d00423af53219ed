"""The engine: one training loop driven by task objects, prediction, checkpoints.

- :func:`fit_task` (:mod:`liftlearn.engine.loop`): the one training loop.
- :class:`LiftPlusTask`, :class:`ULFineTask` (:mod:`liftlearn.engine.tasks`):
  what differs between objectives.
- :func:`predict_images`, :func:`predict_logits`
  (:mod:`liftlearn.engine.predict`): prediction with and without TTE.
- :class:`Checkpoint` (:mod:`liftlearn.engine.checkpoint`).
- :class:`DeviceImages` (:mod:`liftlearn.engine._loading`): uint8 batches
  become normalised network input on the device, in training and prediction;
  :class:`PackedImages`: a batch of images of different sizes (TTE's resized
  images, cut into views on the device).

The engine imports torch and :mod:`liftlearn.nn`, never scikit-learn.
"""

from ._loading import DeviceImages, PackedImages
from .checkpoint import Checkpoint
from .loop import TrainConfig, fit_task, history_keys
from .predict import predict_images, predict_logits
from .tasks import LiftPlusTask, TrainingTask, ULFineTask

__all__ = [
    "Checkpoint",
    "DeviceImages",
    "LiftPlusTask",
    "PackedImages",
    "TrainConfig",
    "TrainingTask",
    "ULFineTask",
    "fit_task",
    "history_keys",
    "predict_images",
    "predict_logits",
]
