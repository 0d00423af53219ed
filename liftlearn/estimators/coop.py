"""CoOp prompt learning as a scikit-learn classifier (the LIFT+ study's
text-side baseline)."""

from __future__ import annotations

from numbers import Integral

import torch

from .._validation import Interval, Options, Predicate, is_prompt_template
from ..data import TrainDataset
from ..engine import LiftPlusTask
from ..nn.backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED
from ..nn.coop import CLASS_POSITIONS, CoOpNetwork, PromptLearner
from ..nn.losses import LogitAdjustedLoss
from ..transforms import mda_min_scale, train_transform
from ._fine_tuned import FineTunedClassifier

__all__ = ["CoOpClassifier"]


def _is_context_template(value) -> bool:
    # One replacement field, written "{}": the context tokens are those
    # around it (a named field would fail in format).
    return is_prompt_template(value) and "{}" in value


class CoOpClassifier(FineTunedClassifier):
    """CoOp: CLIP with learned prompt context, trained on long-tailed data.

    The prompt of every class is a template whose context tokens are learned
    vectors shared by all classes (Zhou et al., 2022); images are scored by
    CLIP's ``exp(logit_scale) * cos(image, text)`` against the prompts, whose
    embeddings go through the frozen text tower at every step. The defaults
    are the LIFT+ study's CoOp run: 4 random context tokens before the class
    name, 50 epochs, batch 32, lr 0.002, logit-adjusted loss, no minimalist
    augmentation schedule, the image encoder frozen.

    Parameters
    ----------
    backbone : str, default="ViT-B-16-quickgelu"
        open_clip model name (a CLIP model with a text tower; the timm
        backbones, which have none, are refused before any work).
    pretrained : str or None, default="openai"
        open_clip pretrained tag, path of a local checkpoint file, or None for
        random weights.
    n_ctx : int, default=4
        Number of learned context tokens (with ``context_init=None``).
    class_position : {"end", "middle", "front"}, default="end"
        Where the class name sits among the random context tokens:
        ``"X X X X {}."``, ``"X X {} X X."`` or ``"{} X X X X."``.
    context_init : str or None, default=None
        None: random context, N(0, 0.02). A template with one ``{}`` (e.g.
        ``"a photo of a {}."``): its tokens other than the class name are the
        context, initialised with their token embeddings (``n_ctx`` and
        ``class_position`` then do not apply).
    adapter : str, default="none"
        A fine-tuning method trained jointly in the image encoder (see
        :class:`LiftPlusClassifier`); "none" keeps it frozen, as CoOp does.
    adapter_dim : int or None, default=None
        As in :class:`LiftPlusClassifier`.
    adapter_layers : None, int or list of int, default=None
        As in :class:`LiftPlusClassifier`.
    class_names : sequence of str, mapping or None, default=None
        The names put into the prompts (see :class:`LiftPlusClassifier`).
    epochs : int, default=50
    batch_size : int, default=32
    device_batch_size : int or None, default=None
        Images per forward pass; must divide ``batch_size``.
    lr : float, default=0.002
    momentum : float, default=0.9
    weight_decay : float, default=5e-4
    tau : float, default=1.0
        Logit adjustment of the training loss (LIFT+'s default loss).
    mda_schedule : {"min", "convex", "linear", "concave", "max"}, default="min"
        Minimum crop scale schedule; ``"min"`` keeps random crops of scale
        0.08 to 1 throughout (no minimalist schedule, as the study's CoOp).
    tte : bool, default=False
        Test-time ensembling (five crops); off in the study's CoOp run.
    tte_expand : int, default=24
    device : str or torch.device, default="auto"
        As in :class:`~liftlearn.LiftPlusClassifier`.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        The backbone's compute dtype, as in :class:`~liftlearn.LiftPlusClassifier`.
    num_workers : int or None, default=None
    compile : bool, default=False
    check_images : {"header", "decode"} or None, default="header"
    on_bad_image : {"raise", "skip"}, default="raise"
    checkpoint_dir : str, os.PathLike or None, default=None
    validation_fraction : float in (0, 1) or None, default=None
        As in :class:`LiftPlusClassifier`.
    callbacks : list or None, default=None
        As in :class:`LiftPlusClassifier`.
    random_state : int, RandomState instance or None, default=None
        Seeds the context initialisation, the shuffling and the crops.
    verbose : int or bool, default=0

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    class_names_ : list of str
    class_counts_ : ndarray of shape (n_classes,)
    module_ : CoOpNetwork
    n_trainable_params_ : int
        The context vectors plus any image-encoder tuner.
    n_adapter_params_ : int
    trainable_fraction_ : float
    adapter_dim_ : int or None
    history_ : list of dict
        As :class:`~liftlearn.LiftPlusClassifier`'s.
    device_ : torch.device
    skipped_images_ : list of (str, str)

    Examples
    --------
    >>> from liftlearn.estimators import CoOpClassifier
    >>> clf = CoOpClassifier(backbone="liftlearn-tiny-vit", pretrained=None, epochs=1)
    """

    def __init__(
        self,
        *,
        backbone=DEFAULT_BACKBONE,
        pretrained=DEFAULT_PRETRAINED,
        n_ctx=4,
        class_position="end",
        context_init=None,
        adapter="none",
        adapter_dim=None,
        adapter_layers=None,
        class_names=None,
        epochs=50,
        batch_size=32,
        device_batch_size=None,
        lr=0.002,
        momentum=0.9,
        weight_decay=5e-4,
        tau=1.0,
        mda_schedule="min",
        tte=False,
        tte_expand=24,
        device="auto",
        precision="auto",
        num_workers=None,
        compile=False,
        check_images="header",
        on_bad_image="raise",
        checkpoint_dir=None,
        validation_fraction=None,
        callbacks=None,
        random_state=None,
        verbose=0,
    ):
        self.backbone = backbone
        self.pretrained = pretrained
        self.n_ctx = n_ctx
        self.class_position = class_position
        self.context_init = context_init
        self.adapter = adapter
        self.adapter_dim = adapter_dim
        self.adapter_layers = adapter_layers
        self.class_names = class_names
        self.epochs = epochs
        self.batch_size = batch_size
        self.device_batch_size = device_batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.tau = tau
        self.mda_schedule = mda_schedule
        self.tte = tte
        self.tte_expand = tte_expand
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.compile = compile
        self.check_images = check_images
        self.on_bad_image = on_bad_image
        self.checkpoint_dir = checkpoint_dir
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose

    _task_type = LiftPlusTask

    _parameter_constraints: dict = {
        **{k: v for k, v in FineTunedClassifier._parameter_constraints.items()
           if k not in ("scale", "prompt_template")},
        "n_ctx": [Interval(Integral, 1)],
        "class_position": [Options(CLASS_POSITIONS)],
        "context_init": [Predicate(_is_context_template, "a str with one '{}' for the class name"), None],
    }

    _needs_text_encoder = "CoOp needs a CLIP model (its learned context runs through the text encoder)"

    def _check_param_relations(self) -> None:
        super()._check_param_relations()
        if self.context_init is not None and (
            self.n_ctx != 4 or self.class_position != "end"
        ):
            raise ValueError(
                f"{type(self).__name__}: n_ctx and class_position apply to random context "
                "(context_init=None); the template gives the context otherwise"
            )

    def _build_network(self, backbone, class_names, seed: int) -> CoOpNetwork:
        tuner = self._build_tuner(backbone, len(class_names), seed)
        # The context's own generator: the global one is never touched.
        generator = torch.Generator().manual_seed(int(seed))
        prompts = PromptLearner.build(
            backbone, class_names, int(self.n_ctx), self.class_position, self.context_init,
            generator=generator,
        )
        return CoOpNetwork(backbone, tuner, prompts)

    def _make_task(self, network, backbone, paths, labels, seed, device):
        size = backbone.image_size
        epochs, schedule = int(self.epochs), self.mda_schedule

        def dataset_for_epoch(epoch):
            # uint8 crops; the task normalises them on the device.
            min_scale = mda_min_scale(epoch, epochs, schedule=schedule)
            return TrainDataset(
                paths, labels.y_encoded, train_transform(size, min_scale), seed, epoch
            )

        criterion = LogitAdjustedLoss(labels.counts, tau=float(self.tau))
        return LiftPlusTask(network, dataset_for_epoch, criterion, seed, device)
