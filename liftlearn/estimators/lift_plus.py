"""LIFT+ as a scikit-learn classifier."""

from __future__ import annotations

from numbers import Real

from .._validation import Interval, Options, Predicate
from ..data import TrainDataset
from ..engine import LiftPlusTask
from ..nn.backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED
from ..nn.heads import CLASSIFIERS, DEFAULT_TEMPLATE
from ..nn.timm_backbones import is_timm_name
from ..nn.losses import LOSSES, check_loss_params, make_loss
from ..transforms import mda_min_scale, train_transform
from ._fine_tuned import FineTunedClassifier

__all__ = ["LiftPlusClassifier"]


class LiftPlusClassifier(FineTunedClassifier):
    """LIFT+: lightweight fine-tuning of CLIP for long-tailed classification.

    A frozen CLIP image encoder with a lightweight adapter (AdaptFormer by
    default), a cosine classifier initialised from the text encoder and the
    class names, logit-adjusted cross-entropy, minimalist data augmentation
    and test-time ensembling (Shi, Wei & Li, 2025). The defaults are the
    paper's recipe for CLIP ViT-B/16.

    Parameters
    ----------
    backbone : str, default="ViT-B-16-quickgelu"
        open_clip model name. The default is CLIP ViT-B/16 with QuickGELU, as
        OpenAI trained it. ``"liftlearn-tiny-vit"`` is a tiny model for tests.
        The study's non-CLIP backbones (timm, no text encoder; ``classifier_init``
        "auto" means "class_mean" for them, "semantic" is refused; they
        take ``adapter`` "none" or "full", ResNets also "ssf"):
        ``"IN21K-ViT-B/16"``, ``"IN21K-ViT-B/16@384px"``,
        ``"IN21K-ViT-L/16"``, ``"IN1K-RN50"``, ``"IN1K-RN101"``,
        ``"IN1K-RN152"`` (``"liftlearn-tiny-timm-vit"`` and
        ``"liftlearn-tiny-timm-resnet"`` for tests).
    pretrained : str or None, default="openai"
        open_clip pretrained tag, path of a local checkpoint file, or None for
        random weights (fixed by a seed; useful only for tests and demos).
    adapter : str, default="adaptformer"
        The module trained inside the encoder (the fine-tuning strategies of
        the LIFT+ study): ``"adaptformer"`` (parallel bottleneck, LIFT+'s
        default), ``"adapter"`` (sequential bottleneck on the MLP output),
        ``"lora"`` (low-rank q and v updates, scale 1/r), ``"vpt"`` (deep
        prompts after CLS, replaced in every block), ``"vpt-shallow"``
        (prompts at the first block only), ``"ssf"`` (scale and shift after
        qkv, attention out, fc1 and fc2), ``"bitfit"`` (block biases),
        ``"full"`` (every parameter of the blocks, trained in a private
        copy), ``"aft"`` (arbitrary fine-tuning: a seeded random
        ``aft_ratio`` of the projection weights), ``"clip-adapter"``
        (CLIP-Adapter's residual bottleneck on the image feature),
        ``"none"`` (the classifier alone: linear probing). CLIP ResNets
        take ``"none"``, ``"bitfit"``, ``"ssf"`` (on the pooled feature)
        and ``"full"``.
    adapter_dim : int or None, default=None
        Bottleneck width ("adaptformer", "adapter"), LoRA rank or prompt
        length ("vpt", "vpt-shallow"); None uses LIFT+'s automatic sizes
        ``2**max(0, int(log2(C / 2L)))``, ``2**max(0, int(log2(C / 4L)))``
        and ``2**max(0, int(log2(C / L)))`` for C classes and L blocks;
        4 for "clip-adapter" (LIFT+'s ``clip_adapter_dim``). An error for
        the modules without a size.
    adapter_layers : None, int or list of int, default=None
        The blocks that get the module: None all, an int k the last k blocks,
        a list the block indices. An error for "none", "vpt-shallow" and
        ResNets.
    aft_ratio : float in (0, 1] or None, default=None
        ``adapter="aft"`` only: the fraction of the entries of every chosen
        projection weight and bias that is trained (a random mask drawn
        from ``random_state``). None: LIFT+'s automatic ratio, about as
        many trained entries as a C-way classifier, ``C / (L (12D + 9))``
        for ``aft_loc="all"`` (``4D + 4`` "attn", ``8D + 5`` "mlp"), D the
        width and L the blocks in ``adapter_layers``.
    aft_loc : {"all", "attn", "mlp"}, default="all"
        ``adapter="aft"`` only: the projections trained, attention
        (``in_proj``, ``out_proj``), MLP (``c_fc``, ``c_proj``) or both.
    class_names : sequence of str, mapping or None, default=None
        A sequence of C names (classes ``0..C-1``) or a mapping label -> name.
        Every named class is a column of ``predict_proba``, including classes
        without training images. None: the labels seen in ``y``, named
        ``str(label)``. A ``class_names`` passed to :meth:`fit` wins.
    epochs : int, default=5
    batch_size : int, default=128
        Images per optimiser step.
    device_batch_size : int or None, default=None
        Images per forward pass; must divide ``batch_size``. Smaller values
        save device memory through gradient accumulation without changing
        the result (``loss`` "cb", "grw" and "lade", computed from the whole
        batch, refuse them); prediction, validation and the data-based
        classifier initialisation keep to it too. None means ``batch_size``.
    lr : float, default=0.02
    momentum : float, default=0.9
    weight_decay : float, default=5e-4
    tau : float, default=1.0
        Strength of the logit adjustment of ``loss="la"`` (0 gives plain
        cross-entropy). An error with another loss unless left at 1.0.
    scale : float, default=25.0
        Logit scale of the cosine classifier (and the default margin scale
        ``s`` of ``loss="ldam"``, as in LIFT+).
    classifier : {"cosine", "linear", "l2norm", "layernorm"}, default="cosine"
        The head on the image feature ``x``, as in LIFT+'s study:
        ``"cosine"`` ``scale * cos(x, w_j)``; ``"linear"`` ``x @ W.T + b``
        (bias from zero); ``"l2norm"`` ``x @ normalize(W).T``;
        ``"layernorm"`` ``LN(x) @ normalize(W).T`` (LayerNorm without affine
        parameters). ``scale`` applies to "cosine" only.
    classifier_init : {"auto", "semantic", "class_mean", "linear_probing"} or None, \
default="auto"
        The head's initial class vectors (normalised): ``"auto"`` is
        ``"semantic"`` on a CLIP backbone and ``"class_mean"`` on one without
        a text encoder (the study's timm backbones), as LIFT+ chooses them;
        ``"semantic"`` from
        the text encoder and the class names; ``"class_mean"`` the mean
        feature of each class's training images (at most 100 per class, a
        seeded draw, evaluation transform, the untrained network);
        ``"linear_probing"`` the coefficients of a logistic regression
        (lbfgs, 100 iterations, balanced class weights) on those features;
        None random unit vectors (seeded). Classes without training images
        keep the semantic row under "class_mean" and "linear_probing" (with
        a warning).
    loss : {"la", "ce", "focal", "ldam", "cb", "grw", "bs", "lade"}, default="la"
        Training loss: logit-adjusted (``tau``), cross-entropy, focal,
        LDAM, class-balanced, generalised re-weighting, Balanced Softmax or
        LADE, each as LIFT+ computes it (:mod:`liftlearn.nn.losses`).
    loss_params : dict or None, default=None
        The loss's hyper-parameters, overriding LIFT+'s defaults:
        ``{"gamma": 2.0}`` (focal), ``{"max_m": 0.5, "s": scale}`` (ldam),
        ``{"beta": 0.9999}`` (cb), ``{"exp_scale": 1.0}`` (grw),
        ``{"remine_lambda": 0.1, "estim_loss_weight": 0.1}`` (lade); "la",
        "ce" and "bs" take none. An unknown key is an error.
    prompt_template : str, default="a photo of a {}."
        Text prompt for each class name in the classifier's initialisation.
    mda_schedule : {"convex", "linear", "concave", "min", "max"}, default="convex"
        How the minimum crop scale of the minimalist augmentation grows from
        0.08 to 1 over the epochs.
    tte : bool, default=True
        Test-time ensembling: average the logits of five crops.
    tte_expand : int, default=24
        With TTE, images are resized to ``resolution + tte_expand`` before
        the five crops.
    device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA when available; else ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``. Resolved in ``fit``, never earlier, so
        that parallel workers can each pick their own GPU; a device this
        machine lacks, or a torch device type liftlearn does not run on
        (``"meta"``, ``"xpu"``), is refused by name before any work.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Compute dtype of the frozen backbone, which is held in it once per
        process, device and dtype (trainable parts stay fp32; autocast runs
        the mixed operations). ``"auto"``: bf16 on CUDA GPUs that compute it
        natively (compute capability 8.0 and up), else fp16 with a gradient
        scaler on CUDA, fp32 on the CPU (the exact fp32 numbers). ``"bf16"``
        also runs on the CPU (``predict_proba`` within 0.02 of fp32 on the
        tiny test model; ``fit`` refuses it on a GPU below compute
        capability 8.0); ``"fp16"`` needs CUDA (refused by ``fit`` on a CPU:
        no fast fp16 kernels there). Prediction reads it too: set after a fit, it
        applies to the next prediction, as to a pickled or saved copy (where
        the model's device cannot compute in it, e.g. ``"fp16"`` on a CPU or
        a model fitted on a GPU and loaded on a CPU, the device's
        ``"auto"``).
    num_workers : int or None, default=None
        DataLoader worker processes; None: 0 on CPU, on CUDA one per usable
        CPU but one, at most 16.
    compile : bool, default=False
        Train through ``torch.compile``: faster steps after a compilation of
        tens of seconds, worth it for long fits, mainly on a GPU. The fitted
        module and predictions do not use the compiled module.
    check_images : {"header", "decode"} or None, default="header"
        Check every training image before any training time is spent, and
        every image given to a prediction method before any is predicted:
        ``"header"`` opens each file and reads its header (fast; misses a
        truncated image body), ``"decode"`` decodes every image fully, None
        checks only that the files exist.
    on_bad_image : {"raise", "skip"}, default="raise"
        What to do with images the check finds unusable: raise a
        :class:`~liftlearn.BadImageError` naming the first, or skip them with
        one warning: ``fit`` leaves them out (listed in
        ``skipped_images_``); prediction keeps their rows (row i is image i)
        but gives them NaN in ``decision_function`` and ``predict_proba``
        and -1 in ``predict`` (see :meth:`predict`), and ``score`` counts
        them as errors.
    checkpoint_dir : str, os.PathLike or None, default=None
        Save the fit's state after every epoch to
        ``checkpoint_dir/liftlearn-checkpoint-<run key>.pt`` (one file per
        run: parameters, labels, image paths, sizes and modification times);
        a later fit of the same data with the same parameters resumes from
        the last finished epoch and gives the same model as an uninterrupted
        fit. Checked writable when ``fit`` starts; see
        :func:`liftlearn.engine.checkpoint.clean_checkpoints`.
    validation_fraction : float in (0, 1) or None, default=None
        Hold out this share of each class's training images (at least one
        image of each class stays in training; a fixed seed, so every fit
        of the same labels holds out the same images) and score them after
        every epoch, as ``validation_data`` in :meth:`fit` does; the model
        is not trained on them. Not with ``validation_data``.
    callbacks : list or None, default=None
        Objects with ``on_fit_begin(estimator)``, ``on_epoch_end(estimator,
        record)`` (True stops the fit after that epoch; the learning-rate
        schedule stays the one planned for ``epochs``) and/or
        ``on_fit_end(estimator)``; see :mod:`liftlearn.callbacks`, which
        ships :class:`~liftlearn.callbacks.EarlyStopping` and
        :class:`~liftlearn.callbacks.CSVLogger`. A callback that raises
        fails the fit (the estimator stays unfitted). Their state is saved
        with ``checkpoint_dir``; they pickle with the estimator (or are left
        out with a warning), and model files never store them.
    random_state : int, RandomState instance or None, default=None
        Seeds the adapter initialisation, the shuffling and the crops.
    verbose : int or bool, default=0
        Progress bars and a line per epoch when > 0.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, the column order of :meth:`predict_proba`.
    class_names_ : list of str
    class_counts_ : ndarray of shape (n_classes,)
        Training images per class (for many/medium/few-shot metrics).
    module_ : LiftNetwork
        The torch module: trainable tuner and head, plus the shared frozen
        backbone.
    n_trainable_params_ : int
        Trained parameters (adapter and classifier).
    n_adapter_params_ : int
        Trained parameters of the adapter alone.
    trainable_fraction_ : float
        ``n_adapter_params_`` over the parameters of the frozen image tower.
    adapter_dim_ : int or None
        The bottleneck width, LoRA rank or prompt length used (None for the
        modules without a size).
    history_ : list of dict
        Per epoch: ``epoch``, ``loss``, ``lr``, ``seconds`` and, with
        validation, ``val_accuracy``, ``val_balanced_accuracy``,
        ``val_many_shot_accuracy``, ``val_medium_shot_accuracy`` and
        ``val_few_shot_accuracy``. ``pandas.DataFrame(history_)`` reads it.
    device_ : torch.device
        Where the model was fitted and predicts.
    skipped_images_ : list of (str, str)
        Training images left out by ``on_bad_image="skip"``, with the reason.

    Examples
    --------
    >>> from liftlearn import LiftPlusClassifier
    >>> from liftlearn.datasets import load_cifar10_lt_sample
    >>> X, y, names = load_cifar10_lt_sample("train")
    >>> clf = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=None,
    ...                          epochs=1, random_state=0)
    >>> clf.fit(X[:64], y[:64], class_names=names).predict(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        *,
        backbone=DEFAULT_BACKBONE,
        pretrained=DEFAULT_PRETRAINED,
        adapter="adaptformer",
        adapter_dim=None,
        adapter_layers=None,
        aft_ratio=None,
        aft_loc="all",
        class_names=None,
        epochs=5,
        batch_size=128,
        device_batch_size=None,
        lr=0.02,
        momentum=0.9,
        weight_decay=5e-4,
        tau=1.0,
        scale=25.0,
        classifier="cosine",
        classifier_init="auto",
        loss="la",
        loss_params=None,
        prompt_template=DEFAULT_TEMPLATE,
        mda_schedule="convex",
        tte=True,
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
        self.adapter = adapter
        self.adapter_dim = adapter_dim
        self.adapter_layers = adapter_layers
        self.aft_ratio = aft_ratio
        self.aft_loc = aft_loc
        self.class_names = class_names
        self.epochs = epochs
        self.batch_size = batch_size
        self.device_batch_size = device_batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.tau = tau
        self.scale = scale
        self.classifier = classifier
        self.classifier_init = classifier_init
        self.loss = loss
        self.loss_params = loss_params
        self.prompt_template = prompt_template
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
        **FineTunedClassifier._parameter_constraints,
        "classifier": [Options(tuple(CLASSIFIERS))],
        "classifier_init": [Options(("auto", "semantic", "class_mean", "linear_probing")), None],
        "loss": [Options(tuple(LOSSES))],
        "loss_params": [Predicate(lambda v: isinstance(v, dict), "a dict"), None],
        "aft_ratio": [Interval(Real, 0, 1, closed="right"), None],
        "aft_loc": [Options(("all", "attn", "mlp"))],
    }

    def _check_param_relations(self) -> None:
        super()._check_param_relations()
        name = type(self).__name__
        try:
            check_loss_params(self.loss, self.loss_params)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if is_timm_name(self.backbone) and self.classifier_init == "semantic":
            raise ValueError(
                f"{name}: backbone={self.backbone!r} has no text encoder, so "
                "classifier_init='semantic' does not apply; use 'auto' (the default: "
                "'class_mean', the LIFT+ study's choice for these backbones), "
                "'class_mean', 'linear_probing' or None"
            )
        if self.adapter != "aft" and (self.aft_ratio is not None or self.aft_loc != "all"):
            raise ValueError(
                f"{name}: aft_ratio and aft_loc apply to adapter='aft' only; leave them "
                f"None and 'all' with adapter={self.adapter!r}"
            )
        if self.loss != "la" and self.tau != 1.0:
            raise ValueError(
                f"{name}: tau={self.tau!r} applies to loss='la' only; leave it 1.0 "
                f"with loss={self.loss!r}"
            )

    def _check_fit_relations(self) -> None:
        super()._check_fit_relations()
        name = type(self).__name__
        if self.classifier != "cosine" and self.loss != "ldam" and self.scale != 25.0:
            raise ValueError(
                f"{name}: scale={self.scale!r} scales the cosine classifier's logits (and "
                f"LDAM's margins); leave it 25.0 with classifier={self.classifier!r}"
            )
        accumulating = self.device_batch_size is not None and self.device_batch_size < self.batch_size
        if accumulating and getattr(LOSSES[self.loss][0], "batch_statistics", False):
            raise ValueError(
                f"{name}: loss={self.loss!r} is computed from statistics of the whole batch, "
                f"so splitting it into device batches of {self.device_batch_size} would change "
                "the fit; leave device_batch_size None (or choose another loss)"
            )

    def _tuner_options(self) -> dict:
        if self.adapter != "aft":
            return {}
        ratio = None if self.aft_ratio is None else float(self.aft_ratio)
        return {"ratio": ratio, "loc": self.aft_loc}

    def _make_task(self, network, backbone, paths, labels, seed, device):
        size = backbone.image_size
        epochs, schedule = int(self.epochs), self.mda_schedule

        def dataset_for_epoch(epoch):
            # uint8 crops; the task normalises them on the device.
            min_scale = mda_min_scale(epoch, epochs, schedule=schedule)
            return TrainDataset(
                paths, labels.y_encoded, train_transform(size, min_scale), seed, epoch
            )

        self._init_head_from_data(network, backbone, paths, labels, seed, device)
        criterion = make_loss(
            self.loss, labels.counts, tau=float(self.tau), scale=float(self.scale),
            loss_params=self.loss_params,
        )
        return LiftPlusTask(network, dataset_for_epoch, criterion, seed, device)
