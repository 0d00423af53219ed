"""The ``liftlearn`` command: fit, evaluate and predict from a terminal.

Examples
--------
Fit on the sample shipped with liftlearn, then evaluate and predict::

    liftlearn fit --data cifar10-lt-sample --backbone liftlearn-tiny-vit \\
        --pretrained none --epochs 1 --out model.safetensors
    liftlearn evaluate --model model.safetensors --data cifar10-lt-sample --plot per_class.png
    liftlearn predict --model model.safetensors --data cifar10-lt-sample --out preds.csv

On a benchmark (CLIP ViT-B/16, the LIFT+ recipe)::

    liftlearn fit --data imagenet-lt --root /data/imagenet --list-dir /data/ImageNet_LT \\
        --out imagenet_lt.safetensors
    liftlearn evaluate --model imagenet_lt.safetensors --data imagenet-lt --root /data/imagenet \\
        --list-dir /data/ImageNet_LT --split test --json report.json
"""

# Only the standard library is imported here: ``liftlearn --help`` and
# ``--version`` build the parser and exit, so torch, open_clip, scikit-learn
# and numpy are imported by the commands that use them (tests/test_cli.py
# checks sys.modules after --help).
from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import io
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import __version__

__all__ = [
    "DATA_SOURCES",
    "ESTIMATORS",
    "MODEL_SUFFIXES",
    "load_data",
    "load_model",
    "main",
    "save_model",
]

#: ``--estimator`` names and the estimator class each one fits.
ESTIMATORS = {
    "lift-plus": "LiftPlusClassifier",
    "ulfine": "ULFineClassifier",
    "zero-shot": "ZeroShotClassifier",
}

#: Model file suffixes and their format: ``.safetensors`` is liftlearn's
#: pickle-free format (safe to share); ``.joblib`` and ``.pkl`` are pickles.
MODEL_SUFFIXES = {".safetensors": "safetensors", ".joblib": "joblib", ".pkl": "joblib"}

#: The folder of an ``imagefolder`` training split that holds unlabeled
#: images (``--estimator ulfine``); it is not a class.
UNLABELED_FOLDER = "unlabeled"

_log = logging.getLogger("liftlearn.cli")


def __getattr__(name: str):
    # DATA_SOURCES is read on first use: liftlearn.datasets imports numpy.
    if name == "DATA_SOURCES":
        from .datasets import SOURCES

        return tuple(SOURCES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UserError(Exception):
    """A problem with the command's input, reported without a traceback."""


# ------------------------------------------------------------ model files


def _model_format(path: str | os.PathLike, option: str = "--out") -> str:
    """The format a model file's suffix asks for; refuses any other suffix."""
    suffix = Path(path).suffix.lower()
    fmt = MODEL_SUFFIXES.get(suffix)
    if fmt is None:
        got = f"suffix {suffix!r}" if suffix else "no suffix"
        raise UserError(
            f"{option} {_shown(path)}: {got}; a model file ends in .safetensors (safe to "
            "share), .joblib or .pkl (pickles: load only files you trust)"
        )
    return fmt


def save_model(estimator: Any, path: str | os.PathLike) -> None:
    """Write a fitted estimator to ``path``, in the format its suffix names.

    ``.safetensors``: liftlearn's pickle-free format
    (:func:`liftlearn.persistence.save`); ``.joblib`` or ``.pkl``: a joblib
    pickle. Any other suffix is refused (a ``.pt`` file would otherwise be a
    pickle under a misleading name). The file is written atomically: a
    temporary file in the same folder, synced, then renamed over ``path``,
    so a failed or interrupted write leaves any previous file intact.

    Parameters
    ----------
    estimator : LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier or CLIPFeatures
        The fitted estimator.
    path : str or os.PathLike
        Output file; its folder is created.

    Raises
    ------
    UserError
        For a suffix other than ``.safetensors``, ``.joblib`` or ``.pkl``.
    """
    from ._io import atomic_write

    fmt = _model_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from .persistence import save

        atomic_write(path, lambda tmp: save(estimator, tmp), what="model file")
        return
    import joblib

    atomic_write(path, lambda tmp: joblib.dump(estimator, tmp), what="model file")


# First bytes of the files joblib writes: a pickle (protocol >= 2) or one of
# its compressors (zlib, gzip, bz2, xz, lzma, lz4).
_JOBLIB_MAGIC = (b"\x80", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00", b"\x04\x22\x4d\x18")


def _sniff_model_file(path: Path) -> str:
    """``"safetensors"`` or ``"joblib"`` from a file's first bytes.

    Raises :class:`UserError` for anything else (an empty or text file is
    never handed to the unpickler).
    """
    with open(path, "rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if not head:
        raise UserError(f"{_shown(path)} is not a liftlearn model file: it is empty")
    # safetensors: an 8-byte little-endian header length, then a JSON object.
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    if head.startswith(_JOBLIB_MAGIC):
        return "joblib"
    raise UserError(
        f"{_shown(path)} is not a liftlearn model file: neither a .safetensors nor a "
        "joblib file (write one with 'liftlearn fit --out')"
    )


def load_model(path: str | os.PathLike, *, classifier: bool = True) -> Any:
    """Read an estimator written by :func:`save_model` (or ``joblib.dump``).

    The format is read from the file's first bytes. Only load joblib model
    files you trust: they can run code when loaded. ``.safetensors`` files
    cannot.

    Parameters
    ----------
    path : str or os.PathLike
    classifier : bool, default=True
        Require a fitted classifier (``evaluate`` and ``predict`` need one).

    Raises
    ------
    UserError
        In one line, when the file is missing, empty, not a model file, or
        holds something other than a fitted liftlearn estimator (a dict, an
        unfitted estimator, a transformer where a classifier is needed).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {_shown(path)}")
    kind = _sniff_model_file(path)
    try:
        if kind == "safetensors":
            from .persistence import load

            model = load(path)
        else:
            import joblib

            model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        from .exceptions import BackboneError

        if isinstance(exc, BackboneError):
            raise  # the backbone, not the file: main() gives advice
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "not a liftlearn model file" not in reason:  # persistence.load says it already
            reason = f"{_shown(path)} is not a readable liftlearn model file: {reason}"
        raise UserError(reason) from None
    from .persistence import ESTIMATORS as REGISTRY

    if type(model) not in REGISTRY.values():
        raise UserError(
            f"{_shown(path)} is not a liftlearn model file: it holds a {type(model).__name__}, "
            f"not one of {', '.join(REGISTRY)}"
        )
    if not hasattr(model, "module_"):
        raise UserError(f"{_shown(path)} holds an unfitted {type(model).__name__}")
    if classifier and not hasattr(model, "classes_"):
        raise UserError(
            f"{_shown(path)} holds a {type(model).__name__}, which does not classify; "
            "evaluate and predict need a classifier"
        )
    return model


# ------------------------------------------------------------------ data


def load_data(
    source: str,
    split: str,
    *,
    root: str | None = None,
    list_dir: str | None = None,
    imbalance: float = 100.0,
    n_max: int | None = None,
    cache_dir: str | None = None,
    seed: int = 0,
):
    """Load ``(paths, y, class_names)`` of one split of a data source.

    Parameters
    ----------
    source : str
        One of :data:`DATA_SOURCES`.
    split : str
        ``"train"``, ``"val"`` or ``"test"``, mapped as
        :func:`liftlearn.datasets.load_source` says (CIFAR-LT and the sample:
        val -> test; inat2018: test -> val; ``imagefolder``: the sub-folder
        ``root/<split>`` when it exists, else ``root`` itself).
    root, list_dir, imbalance, n_max, cache_dir, seed
        Options of :func:`liftlearn.datasets.load_source`; each source uses
        those it needs. ``seed`` is the CIFAR-LT subset's (0: the papers'
        subset).

    Returns
    -------
    paths : list of str
    y : numpy.ndarray of int64
        Indices into ``class_names``.
    class_names : list of str
    """
    from .datasets import load_source

    _check_source(source, root)
    return load_source(source, split, root=root, list_dir=list_dir, imbalance=imbalance,
                       n_max=n_max, cache_dir=cache_dir, seed=seed)


def _check_source(source: str, root: str | None) -> None:
    """The options a data source needs are there (checked before any work)."""
    from .datasets import SOURCES

    spec = SOURCES.get(source)
    if spec is None:
        raise UserError(f"unknown data source {source!r}")
    if spec.needs_root and root is None:
        raise UserError(f"--data {source} needs --root")


def _subset(paths, y, n: int | None, seed: int):
    """A seeded random subset of ``n`` items, kept in their original order."""
    import numpy as np

    if n is None or n >= len(paths):
        return list(paths), np.asarray(y)
    idx = np.sort(np.random.default_rng(seed).choice(len(paths), size=n, replace=False))
    return [paths[i] for i in idx], np.asarray(y)[idx]


def _quoted(names, limit: int = 12) -> str:
    shown = ", ".join(repr(str(n)) for n in list(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _to_model_labels(model, y, names, source: str):
    """The data's labels as the model's, matched by class NAME.

    A data source numbers its classes its own way (an image folder by the
    sorted folders it has), so label ``k`` of the data is the model's class
    whose name is ``names[k]``. A class of the data (that has images) naming
    no class of the model is refused, naming it and the model's classes.
    """
    import numpy as np

    model_names = [str(n) for n in model.class_names_]
    position: dict = {}
    for i, name in enumerate(model_names):
        position.setdefault(name, i)
    y = np.asarray(y)
    present = np.unique(y).tolist()
    unknown = [str(names[k]) for k in present if str(names[k]) not in position]
    if unknown:
        what = "class folder(s)" if source == "imagefolder" else "class(es)"
        raise UserError(
            f"--data {source}: {what} {_quoted(unknown)} name no class of the model; "
            f"the model's classes are {_quoted(model_names)}"
        )
    pos = np.array([position.get(str(n), -1) for n in names], dtype=np.int64)
    return np.asarray(model.classes_)[pos[y]]


def _split_unlabeled(y, names, source: str, estimator: str):
    """Training labels for ``estimator``: an image folder's ``unlabeled/``
    folder becomes ``y == -1`` for ULFine and is refused for the others."""
    import numpy as np

    names = list(names)
    if source != "imagefolder" or UNLABELED_FOLDER not in names:
        return np.asarray(y), names
    if estimator != "ulfine":
        raise UserError(
            f"--data imagefolder: the folder {UNLABELED_FOLDER!r} holds unlabeled images, "
            "which only --estimator ulfine learns from; move it out of the class folders "
            "or add --estimator ulfine"
        )
    k = names.index(UNLABELED_FOLDER)
    y = np.asarray(y).copy()
    unlabeled = y == k
    y[y > k] -= 1
    y[unlabeled] = -1
    del names[k]
    return y, names


# ------------------------------------------------------------ parameters


def _estimator_class(name: str):
    from . import estimators

    return getattr(estimators, ESTIMATORS[name])


def _estimator_params(name: str = "lift-plus") -> dict[str, inspect.Parameter]:
    sig = inspect.signature(_estimator_class(name).__init__)
    return {k: v for k, v in sig.parameters.items() if k != "self"}


def _estimator_defaults(name: str = "lift-plus") -> dict[str, Any]:
    """The defaults of an estimator's parameters, by parameter name."""
    return {key: p.default for key, p in _estimator_params(name).items()}


def _parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, Python value); raises ArgumentTypeError.

    The key is checked against the chosen estimator's parameters when the
    command runs (``--estimator`` may come after ``--param``).
    """
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return key, None
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw  # a plain string


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (liftlearn's one integer check)."""
    from ._validation import check_int

    try:
        return check_int(int(text), "value", 1)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def _seed(text: str) -> int:
    """argparse type: a seed, an integer >= 0 (numpy refuses negative ones)."""
    from ._validation import check_int

    try:
        return check_int(int(text), "value", 0)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None


def _pretrained(text: str) -> str | None:
    return None if text.lower() in ("none", "random", "") else text


# ---------------------------------------------------------------- parser


class _LazyChoices:
    """argparse ``choices`` read on first use (a registry that imports torch
    or numpy): parsing a command that does not use the option, and --help,
    never read them."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load = load
        self._items: tuple | None = None

    def _get(self) -> tuple:
        if self._items is None:
            self._items = tuple(self._load())
        return self._items

    def __contains__(self, item) -> bool:
        return item in self._get()

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _source_names() -> tuple:
    from .datasets import SOURCES

    return tuple(SOURCES)


def _adapter_names() -> list:
    from .nn.tuners import ADAPTERS

    return sorted(ADAPTERS)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows "(default: X)" only where there is a meaningful default.

    Options may carry ``lazy_help`` (a callable giving the help text) and
    ``estimator_default`` (the LiftPlusClassifier parameter whose default
    is shown): both are read only when that help is printed, so building
    the parser imports nothing heavy. (argparse prints only options with a
    help text, so a lazy one has a short plain one too.)
    """

    def _get_help_string(self, action):
        lazy = getattr(action, "lazy_help", None)
        text = lazy().replace("%", "%%") if lazy is not None else action.help or ""
        param = getattr(action, "estimator_default", None)
        if param is not None:
            default = _estimator_defaults()[param]
            if default is not None:
                return f"{text} (default: {str(default).replace('%', '%%')})"
            return text
        default = action.default
        if (
            "%(default)" not in text
            and default is not None
            and default is not False
            and default != []
            and default != argparse.SUPPRESS
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def _add_data_args(p: argparse.ArgumentParser, default_split: str, required: bool = True) -> None:
    g = p.add_argument_group("data")
    data = g.add_argument(
        "--data", choices=_LazyChoices(_source_names), required=required, default=None,
        metavar="SOURCE", help="the data source (listed by --help)",
    )
    data.lazy_help = lambda: (
        "one of: " + ", ".join(_source_names()) + ". cifar10-lt-sample is the "
        "sample shipped with liftlearn (no --root); imagefolder reads "
        "root/<split>/<class>/<image> or root/<class>/<image>"
    )
    g.add_argument("--root", help="dataset root: image root of the list files, "
                   "CIFAR pickles or image folders")
    g.add_argument("--list-dir", help="folder with the split list files "
                   "(ImageNet_LT_train.txt or train.txt, ...) or the file itself; "
                   "for inat2018 the JSON/list file; default: --root")
    g.add_argument("--split", default=default_split, choices=("train", "val", "test"),
                   help="which split to read")
    g.add_argument("--imbalance", type=float, default=100.0,
                   help="CIFAR-LT imbalance ratio n_max / n_min")
    g.add_argument("--n-max", type=_positive_int, default=None,
                   help="CIFAR-LT images of the head class (default 5000 / 500)")
    g.add_argument("--cache-dir", help="where CIFAR pickles are written as PNG files "
                   "(default $LIFTLEARN_CACHE or ~/.cache/liftlearn)")


#: fit's model options: (flag, estimator parameter, argparse type, metavar, help).
#: Their defaults are the chosen estimator's (shown from LiftPlusClassifier's
#: signature in ``fit --help``); an option the estimator lacks is refused.
FIT_OPTIONS = (
    ("--backbone", "backbone", str, "NAME", "open_clip model name"),
    ("--pretrained", "pretrained", _pretrained, "TAG_OR_FILE",
     "open_clip tag, checkpoint file, or 'none' for random weights"),
    ("--adapter", "adapter", str, "METHOD", "module trained inside the encoder"),
    ("--epochs", "epochs", _positive_int, "N", "training epochs"),
    ("--batch-size", "batch_size", _positive_int, "N",
     "SGD batch size (zero-shot: images per forward pass)"),
    ("--lr", "lr", float, "LR", "learning rate"),
    ("--device", "device", str, "DEVICE", "'auto', 'cpu', 'cuda', 'cuda:1', ..."),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``liftlearn`` command.

    Building it imports nothing beyond the standard library: data sources,
    fine-tuning methods and the estimators' defaults are read when an
    option needs them (parsing its value, or printing ``fit --help``).
    """
    parser = argparse.ArgumentParser(
        prog="liftlearn",
        description="Long-tailed image classification with CLIP (LIFT+): fit a "
                    "model, evaluate it with the long-tail report, predict files.",
        epilog="Run 'liftlearn <command> --help' for the options of a command.\n\n"
               + __doc__.split("Examples\n--------\n", 1)[1],
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"liftlearn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = sub.add_parser(
        "fit", help="train a model on a data source and write a model file",
        description="Train an estimator (LIFT+ by default) on one split of a data "
                    "source and write the fitted model. Defaults are the "
                    "estimator's: the LIFT+ recipe for CLIP ViT-B/16 (5 epochs, "
                    "AdaptFormer). Options an estimator does not have (--epochs "
                    "for zero-shot) are refused.\n\n"
                    "--estimator ulfine also learns from unlabeled images: with "
                    "--data imagefolder, put them in a folder named 'unlabeled' "
                    "beside the class folders (root/train/unlabeled/...).",
        formatter_class=_Formatter,
    )
    _add_data_args(fit, "train")
    fit.add_argument("--max-train", type=_positive_int, metavar="N",
                     help="train on a seeded random subset of N images (quick runs)")
    m = fit.add_argument_group("model")
    m.add_argument("--estimator", choices=tuple(ESTIMATORS), default="lift-plus",
                   help="lift-plus (LiftPlusClassifier), ulfine (ULFineClassifier: "
                        "semi-supervised) or zero-shot (ZeroShotClassifier: trains nothing)")
    for flag, param, kind, metavar, text in FIT_OPTIONS:
        extra = {"choices": _LazyChoices(_adapter_names)} if param == "adapter" else {}
        action = m.add_argument(flag, dest=param, type=kind, metavar=metavar,
                                default=argparse.SUPPRESS, help=text, **extra)
        action.estimator_default = param
        if param == "adapter":
            action.lazy_help = lambda: ("module trained inside the encoder: "
                                        + ", ".join(_adapter_names()))
    m.add_argument("--seed", type=_seed, default=0, help="random_state, also of --max-train")
    m.add_argument("--param", type=_parse_param, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="any other parameter of the estimator, e.g. tau=1.5 or "
                        "tte=false (repeatable)")
    fit.add_argument("--out", required=True,
                     help="model file to write: .safetensors (safe to share), .joblib "
                          "or .pkl (pickles); written only when the fit succeeded")
    fit.add_argument("-q", "--quiet", action="store_true",
                     help="only errors: no progress lines or bars, no open_clip notes")

    ev = sub.add_parser(
        "evaluate", help="print the long-tail report of a model on a split",
        description="Predict a split with a fitted model and print the long-tail "
                    "report (overall, many/medium/few-shot and more). The data's "
                    "classes are matched to the model's by name; a class (an "
                    "image folder) the model does not know is refused.",
        formatter_class=_Formatter,
    )
    ev.add_argument("--model", required=True, help="model file written by 'fit'")
    _add_data_args(ev, "test")
    ev.add_argument("--max-test", type=_positive_int, metavar="N",
                    help="evaluate on a seeded random subset of N images")
    ev.add_argument("--seed", type=_seed, default=0, help="seed of --max-test")
    ev.add_argument("--plot", help="save the per-class accuracy plot here (PNG, needs matplotlib)")
    ev.add_argument("--json", help="also write the report as JSON here")
    ev.add_argument("-q", "--quiet", action="store_true", help="only the report and errors")

    pr = sub.add_parser(
        "predict", help="write a CSV of predicted labels and probabilities",
        description="Predict image files with a fitted model and write a CSV with "
                    "the columns path, label, class_name, probability (of the "
                    "predicted class) and, with --all-proba, one column per class. "
                    "Paths are written as the file system names them (bytes that "
                    "are not UTF-8 are kept as they are).",
        formatter_class=_Formatter,
    )
    pr.add_argument("--model", required=True, help="model file written by 'fit'")
    pr.add_argument("paths", nargs="*", metavar="PATH", help="image files to predict")
    _add_data_args(pr, "test", required=False)
    pr.add_argument("--max-test", type=_positive_int, metavar="N",
                    help="predict a seeded random subset of N images of --data")
    pr.add_argument("--seed", type=_seed, default=0, help="seed of --max-test")
    pr.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")
    pr.add_argument("--all-proba", action="store_true",
                    help="add a probability column per class")
    pr.add_argument("-q", "--quiet", action="store_true", help="only errors")
    return parser


# --------------------------------------------------------------- outputs


def _shown(path) -> str:
    """A path for messages: bytes that are not UTF-8 as ``\\xNN`` escapes."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _check_output(path: str, option: str, *, inputs: Sequence[tuple[str, str]] = ()) -> None:
    """Before any work: ``path`` can be written and is none of ``inputs``.

    ``inputs`` are ``(option, path)`` pairs of files the command reads
    (``--model``): writing over one would destroy it.
    """
    from ._io import check_writable

    for other_option, other in inputs:
        same = os.path.realpath(path) == os.path.realpath(other)
        if not same and os.path.exists(path) and os.path.exists(other):
            same = os.path.samefile(path, other)
        if same:
            raise UserError(
                f"{option} {_shown(path)} is the file given to {other_option}; writing it "
                "would destroy it: choose another file"
            )
    folder = Path(path).parent
    if not folder.is_dir():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{option} {_shown(path)}: cannot create the folder {_shown(folder)}: "
                f"{exc.strerror or exc}"
            ) from None
    try:
        check_writable(path, option)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@contextlib.contextmanager
def _csv_stream(out: str) -> Iterator[Any]:
    """A text stream for the CSV: stdout (``-``) or a file written atomically.

    Paths that are not valid UTF-8 reach Python as surrogate escapes; they
    are written back as the original bytes (``surrogateescape``), so each
    row names the file exactly as the file system does.
    """
    if out != "-":
        from ._io import atomic_open

        with atomic_open(out, "w", newline="", encoding="utf-8", errors="surrogateescape",
                         what="predictions file") as f:
            yield f
        return
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text-only stream (a notebook's): it takes any str
        yield stream
        return
    stream.flush()
    wrapper = io.TextIOWrapper(buffer, encoding=stream.encoding or "utf-8",
                               errors="surrogateescape", newline="", write_through=True)
    try:
        yield wrapper
    finally:
        wrapper.flush()
        wrapper.detach()  # leave sys.stdout's buffer open


# --------------------------------------------------------------- commands


def _data(args):
    return load_data(
        args.data, args.split, root=args.root, list_dir=args.list_dir,
        imbalance=args.imbalance, n_max=args.n_max, cache_dir=args.cache_dir,
    )


def _set_verbose(model: Any, quiet: bool) -> None:
    if hasattr(model, "set_params"):
        try:
            model.set_params(verbose=0 if quiet else 1)
        except ValueError:
            pass


def _fit_params(args, estimator: str) -> dict:
    """The estimator's parameters from the options given; refuses options
    and ``--param`` keys the estimator does not have."""
    params = _estimator_params(estimator)
    name = ESTIMATORS[estimator]
    out: dict = {}
    for flag, param, *_ in FIT_OPTIONS:
        if hasattr(args, param):
            if param not in params:
                raise UserError(
                    f"{flag} does not apply to --estimator {estimator} ({name} has no "
                    f"{param!r} parameter)"
                )
            out[param] = getattr(args, param)
    if "random_state" in params:
        out["random_state"] = args.seed
    out["verbose"] = 0 if args.quiet else 1
    for key, value in args.param:
        if key not in params:
            raise UserError(
                f"--param {key}: unknown {name} parameter; choose from {', '.join(params)}"
            )
        if key == "class_names":
            raise UserError("--param class_names: the class names come from --data (its "
                            "folder names or names file), matched to its labels")
        out[key] = value
    return out


def cmd_fit(args) -> int:
    from .nn.backbones import check_backbone

    # Everything that can be checked is checked before any data is read or
    # any training time is spent: the output file, the parameters, and
    # whether the backbone's weights can be had.
    _check_source(args.data, args.root)
    _model_format(args.out)
    params = _fit_params(args, args.estimator)
    pretrained = params.get("pretrained")
    _check_output(args.out, "--out", inputs=[("--pretrained", pretrained)]
                  if isinstance(pretrained, str) and os.path.isfile(pretrained) else ())
    clf = _estimator_class(args.estimator)(**params)
    clf._validate_params()
    clf._check_param_relations()
    clf._check_fit_relations()
    clf._resolve_device()  # e.g. --device cuda without a GPU, before the data loads
    check_backbone(clf._backbone_spec())

    _log.info("loading %s (%s) ...", args.data, args.split)
    X, y, names = _data(args)
    y, names = _split_unlabeled(y, names, args.data, args.estimator)
    X, y = _subset(X, y, args.max_train, args.seed)
    n_unlabeled = int((y == -1).sum())
    if args.estimator == "ulfine":
        _log.info("%d training images (%d unlabeled), %d classes", len(X), n_unlabeled, len(names))
        if not n_unlabeled:
            _log.warning("no unlabeled images: ULFine learns from the labeled ones alone "
                         "(with --data imagefolder, unlabeled images go in root/<split>/%s/)",
                         UNLABELED_FOLDER)
    else:
        _log.info("%d training images, %d classes", len(X), len(names))
    start = time.perf_counter()
    clf.set_params(class_names=names).fit(X, y)
    trained = getattr(clf, "n_trainable_params_", 0)
    _log.info("fit in %.1f s on %s; %s trained parameters",
              time.perf_counter() - start, clf.device_, f"{trained:,}")
    save_model(clf, args.out)
    print(f"model written to {_shown(args.out)}")
    return 0


def _plot_format(path: str) -> str:
    """The image format of ``--plot`` from its suffix, checked before any
    work (matplotlib present, the format one it writes)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'liftlearn[plot]'") from None
    fmt = Path(path).suffix[1:].lower() or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if fmt not in formats:
        raise UserError(f"--plot {_shown(path)}: matplotlib does not write {fmt!r} files; "
                        f"use one of {', '.join(sorted(formats))}")
    return fmt


def cmd_evaluate(args) -> int:
    fmt = _plot_format(args.plot) if args.plot else None
    written = [("--model", args.model)]
    for option in ("--json", "--plot"):
        target = getattr(args, option[2:])
        if target:
            _check_output(target, option, inputs=written)
            written.append((option, target))
    clf = load_model(args.model)
    _set_verbose(clf, args.quiet)
    X, y, names = _data(args)
    y = _to_model_labels(clf, y, names, args.data)
    X, y = _subset(X, y, args.max_test, args.seed)
    _log.info("evaluating on %d images ...", len(X))
    import numpy as np

    from .metrics import UndefinedClassWarning

    proba = clf.predict_proba(X)
    skipped = _skipped_rows(proba)
    if skipped.any():
        # A model fitted with on_bad_image="skip" gives unreadable images a NaN
        # row; argmax would call them class 0. They are left out, and said so.
        _log.warning("%d of %d images could not be read and are left out of the report, "
                     "e.g. %s", int(skipped.sum()), len(X), os.fspath(X[int(skipped.argmax())]))
        keep = ~skipped
        X = [x for x, k in zip(X, keep) if k]
        y, proba = np.asarray(y)[keep], proba[keep]
    y_pred = clf.classes_[proba.argmax(axis=1)]
    kwargs = dict(labels=clf.classes_, target_names=clf.class_names_)
    with warnings.catch_warnings():
        # The report, the JSON and the plot would each say the same: once,
        # and not at all with --quiet.
        warnings.simplefilter("ignore" if args.quiet else "once", UndefinedClassWarning)
        _write_reports(args, clf, y, y_pred, proba, skipped, kwargs, fmt)
    return 0


def _write_reports(args, clf, y, y_pred, proba, skipped, kwargs, fmt) -> None:
    from .metrics import long_tail_report

    print(long_tail_report(y, y_pred, clf.class_counts_, y_proba=proba, **kwargs))
    if args.json:
        from ._io import atomic_open

        report = long_tail_report(y, y_pred, clf.class_counts_, y_proba=proba,
                                  output_dict=True, **kwargs)
        report["skipped_images"] = int(skipped.sum())
        with atomic_open(args.json, "w", encoding="utf-8", what="report") as f:
            # NaN (an empty shot group) is written as null, valid JSON.
            json.dump(_nan_to_none(report), f, indent=2)
        print(f"report written to {_shown(args.json)}")
    if args.plot:
        from ._io import atomic_path
        from .metrics import plot_per_class_accuracy

        ax = plot_per_class_accuracy(y, y_pred, clf.class_counts_, **kwargs)
        with atomic_path(args.plot, what="plot") as tmp:
            ax.figure.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        print(f"plot written to {_shown(args.plot)}")


def _skipped_rows(proba):
    """Rows of images that a model with ``on_bad_image="skip"`` left unpredicted."""
    import numpy as np

    return np.isnan(proba).any(axis=1)


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


#: predict's options that only mean something with --data.
_DATA_ONLY = ("root", "list_dir", "split", "imbalance", "n_max", "cache_dir", "max_test", "seed")


def cmd_predict(args) -> int:
    import csv

    if args.paths and args.data:
        raise UserError("predict takes image PATHs or --data, not both")
    if not args.paths and not args.data:
        raise UserError("predict needs image PATHs or --data")
    if args.paths:
        defaults = build_parser().parse_args(["predict", "--model", "m", "--out", "-"])
        given = [f"--{dest.replace('_', '-')}" for dest in _DATA_ONLY
                 if getattr(args, dest) != getattr(defaults, dest)]
        if given:
            raise UserError(f"{', '.join(given)} {'selects' if len(given) == 1 else 'select'} "
                            "images of --data; with image PATHs every one of them is predicted")
    if args.out != "-":
        _check_output(args.out, "--out", inputs=[("--model", args.model)]
                      + [("an image PATH", path) for path in args.paths])
    clf = load_model(args.model)
    _set_verbose(clf, args.quiet)
    if args.data:
        X, y, names = _data(args)
        y = _to_model_labels(clf, y, names, args.data)  # refuses unknown classes
        X, y = _subset(X, y, args.max_test, args.seed)
    else:
        X = list(args.paths)
    proba = clf.predict_proba(X)
    skipped = _skipped_rows(proba)
    best = proba.argmax(axis=1)  # rows of skipped images are written empty below
    names = list(clf.class_names_)
    header = ["path", "label", "class_name", "probability"]
    if args.all_proba:
        header += [f"proba_{n}" for n in names]
    with _csv_stream(args.out) as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for path, row, k, skip in zip(X, proba, best, skipped):
            if skip:
                # An unreadable image skipped by the model: no prediction.
                writer.writerow([os.fspath(path), "", "", ""] + [""] * len(names) * bool(args.all_proba))
                continue
            line = [os.fspath(path), clf.classes_[k], names[k], f"{row[k]:.6f}"]
            if args.all_proba:
                line += [f"{p:.6f}" for p in row]
            writer.writerow(line)
    if skipped.any():
        _log.warning("%d of %d images could not be read: their rows have empty label, "
                     "class_name and probability", int(skipped.sum()), len(X))
    if args.out != "-":
        print(f"{len(X)} predictions written to {_shown(args.out)}")
    return 0


_COMMANDS = {"fit": cmd_fit, "evaluate": cmd_evaluate, "predict": cmd_predict}


def _backbone_message(exc, command: str) -> str:
    """A BackboneError in the command's terms: advice as options, not Python."""
    if not getattr(exc, "missing_weights", False):
        return str(exc)
    if command == "fit":
        advice = ("Run once with network access to download them, or give --pretrained "
                  "/path/to/file (a local checkpoint) or --backbone local-dir:/path (a "
                  "folder with open_clip_config.json)")
    else:
        advice = ("The model file names its backbone: run once with network access to "
                  "download the weights, or point HF_HOME at a cache that holds them")
    return f"{exc.summary}. {advice}."


@contextlib.contextmanager
def _cli_logging(quiet: bool) -> Iterator[None]:
    """The command's log lines: liftlearn's logger on stderr, plain text.

    INFO and up (the progress lines and open_clip's notes), only errors with
    ``-q``. Undone at the end, so calling :func:`main` from Python leaves
    the process's logging as it was.
    """
    logger = logging.getLogger("liftlearn")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.INFO)
    logger.propagate = False  # one line per record, whatever root has
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.propagate = old[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``liftlearn`` command; returns the exit status.

    User errors (missing or malformed files, bad parameter values, backbones
    that cannot be loaded, outputs that cannot be written) are printed on
    stderr as one line ``liftlearn <command>: error: ...`` and give exit
    status 2, without a traceback (set ``LIFTLEARN_DEBUG=1`` to get the
    traceback).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    with _cli_logging(getattr(args, "quiet", False)):
        try:
            return _COMMANDS[args.command](args)
        except KeyboardInterrupt:
            print("liftlearn: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - sorted below
            from .exceptions import BackboneError, BadImageError, TrainingError

            known = (UserError, ValueError, TypeError, BadImageError, BackboneError,
                     TrainingError, OSError)
            if os.environ.get("LIFTLEARN_DEBUG") or not isinstance(exc, known):
                raise
            text = _backbone_message(exc, args.command) if isinstance(exc, BackboneError) \
                else str(exc)
            text = " ".join(text.split()) or type(exc).__name__
            print(f"liftlearn {args.command}: error: {text}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
