"""The ``liftlearn`` command: fit, evaluate and predict from a terminal.

Examples
--------
Fit on the sample shipped with liftlearn, then evaluate and predict::

    liftlearn fit --data cifar10-lt-sample --backbone liftlearn-tiny-vit \\
        --pretrained none --epochs 1 --out model.joblib
    liftlearn evaluate --model model.joblib --data cifar10-lt-sample --plot per_class.png
    liftlearn predict --model model.joblib --data cifar10-lt-sample --out preds.csv

On a benchmark (CLIP ViT-B/16, the LIFT+ recipe)::

    liftlearn fit --data imagenet-lt --root /data/imagenet --list-dir /data/ImageNet_LT \\
        --out imagenet_lt.joblib
    liftlearn evaluate --model imagenet_lt.joblib --data imagenet-lt --root /data/imagenet \\
        --list-dir /data/ImageNet_LT --split test --json report.json
"""

from __future__ import annotations

import argparse
import ast
import csv
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .datasets import SOURCES, load_source

__all__ = ["DATA_SOURCES", "load_data", "load_model", "main", "save_model"]

#: The names ``--data`` accepts: the keys of :data:`liftlearn.datasets.SOURCES`.
DATA_SOURCES = tuple(SOURCES)


class UserError(Exception):
    """A problem with the command's input, reported without a traceback."""


# ------------------------------------------------------------ model files


def save_model(estimator: Any, path: str | os.PathLike) -> None:
    """Write a fitted estimator to ``path``.

    A ``.safetensors`` path gets liftlearn's pickle-free format
    (:func:`liftlearn.persistence.save`); anything else a joblib file.

    Parameters
    ----------
    estimator : LiftPlusClassifier
        The fitted estimator.
    path : str or os.PathLike
        Output file; its folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from .persistence import save

        save(estimator, path)
        return
    import joblib

    joblib.dump(estimator, path)


def load_model(path: str | os.PathLike) -> Any:
    """Read an estimator written by :func:`save_model`.

    Only load joblib model files you trust: they can run code when loaded.
    ``.safetensors`` files cannot.
    """
    import joblib

    from .persistence import load

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        return load(path) if path.suffix == ".safetensors" else joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise UserError(f"cannot read model file {path}: {exc}") from None


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
) -> tuple[list[str], np.ndarray, list[str]]:
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
    """
    spec = SOURCES.get(source)
    if spec is None:
        raise UserError(f"unknown data source {source!r}")
    if spec.needs_root and root is None:
        raise UserError(f"--data {source} needs --root")
    return load_source(source, split, root=root, list_dir=list_dir, imbalance=imbalance,
                       n_max=n_max, cache_dir=cache_dir, seed=seed)


def _subset(paths, y, n: int | None, seed: int):
    """A seeded random subset of ``n`` items, kept in their original order."""
    if n is None or n >= len(paths):
        return list(paths), np.asarray(y)
    idx = np.sort(np.random.default_rng(seed).choice(len(paths), size=n, replace=False))
    return [paths[i] for i in idx], np.asarray(y)[idx]


# ------------------------------------------------------------ parameters


def _estimator_params() -> dict[str, inspect.Parameter]:
    from .estimators import LiftPlusClassifier

    sig = inspect.signature(LiftPlusClassifier.__init__)
    return {k: v for k, v in sig.parameters.items() if k != "self"}


def _estimator_defaults() -> dict[str, Any]:
    """The defaults of LiftPlusClassifier's parameters, by parameter name."""
    return {name: p.default for name, p in _estimator_params().items()}


def _parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, Python value); raises ArgumentTypeError."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    params = _estimator_params()
    if key not in params:
        raise argparse.ArgumentTypeError(
            f"unknown estimator parameter {key!r}; choose from {', '.join(params)}"
        )
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


def _pretrained(text: str) -> str | None:
    return None if text.lower() in ("none", "random", "") else text


# ---------------------------------------------------------------- parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows "(default: X)" only where there is a meaningful default."""

    def _get_help_string(self, action):
        text = action.help or ""
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
    g.add_argument(
        "--data", choices=DATA_SOURCES, required=required, default=None, metavar="SOURCE",
        help="one of: " + ", ".join(DATA_SOURCES) + ". cifar10-lt-sample is the "
             "sample shipped with liftlearn (no --root); imagefolder reads "
             "root/<split>/<class>/<image> or root/<class>/<image>",
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``liftlearn`` command."""
    from . import __version__
    from .nn.tuners import ADAPTERS

    default = _estimator_defaults()  # the fit options' defaults are the estimator's

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
        "fit", help="train LIFT+ on a data source and write a model file",
        description="Train LiftPlusClassifier on one split of a data source and "
                    "write the fitted model. Defaults are the LIFT+ "
                    "recipe for CLIP ViT-B/16 (5 epochs, AdaptFormer).",
        formatter_class=_Formatter,
    )
    _add_data_args(fit, "train")
    fit.add_argument("--max-train", type=_positive_int, metavar="N",
                     help="train on a seeded random subset of N images (quick runs)")
    m = fit.add_argument_group("model")
    m.add_argument("--backbone", default=default["backbone"], help="open_clip model name")
    m.add_argument("--pretrained", type=_pretrained, default=default["pretrained"],
                   help="open_clip tag, checkpoint file, or 'none' for random weights")
    m.add_argument("--adapter", default=default["adapter"], choices=sorted(ADAPTERS),
                   help="module trained inside the encoder")
    m.add_argument("--epochs", type=_positive_int, default=default["epochs"],
                   help="training epochs")
    m.add_argument("--batch-size", type=_positive_int, default=default["batch_size"],
                   help="SGD batch size")
    m.add_argument("--lr", type=float, default=default["lr"], help="learning rate")
    m.add_argument("--device", default=default["device"],
                   help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    m.add_argument("--seed", type=int, default=0, help="random_state, also of --max-train")
    m.add_argument("--param", type=_parse_param, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="any other LiftPlusClassifier parameter, e.g. tau=1.5 or "
                        "tte=false (repeatable)")
    fit.add_argument("--out", required=True,
                     help="model file to write: .safetensors (safe to share) or .joblib")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    ev = sub.add_parser(
        "evaluate", help="print the long-tail report of a model on a split",
        description="Predict a split with a fitted model and print the long-tail "
                    "report (overall, many/medium/few-shot and more).",
        formatter_class=_Formatter,
    )
    ev.add_argument("--model", required=True, help="model file written by 'fit'")
    _add_data_args(ev, "test")
    ev.add_argument("--max-test", type=_positive_int, metavar="N",
                    help="evaluate on a seeded random subset of N images")
    ev.add_argument("--seed", type=int, default=0, help="seed of --max-test")
    ev.add_argument("--plot", help="save the per-class accuracy plot here (PNG, needs matplotlib)")
    ev.add_argument("--json", help="also write the report as JSON here")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    pr = sub.add_parser(
        "predict", help="write a CSV of predicted labels and probabilities",
        description="Predict image files with a fitted model and write a CSV with "
                    "the columns path, label, class_name, probability (of the "
                    "predicted class) and, with --all-proba, one column per class.",
        formatter_class=_Formatter,
    )
    pr.add_argument("--model", required=True, help="model file written by 'fit'")
    pr.add_argument("paths", nargs="*", metavar="PATH", help="image files to predict")
    _add_data_args(pr, "test", required=False)
    pr.add_argument("--max-test", type=_positive_int, metavar="N",
                    help="predict a seeded random subset of N images of --data")
    pr.add_argument("--seed", type=int, default=0, help="seed of --max-test")
    pr.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")
    pr.add_argument("--all-proba", action="store_true",
                    help="add a probability column per class")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


# --------------------------------------------------------------- commands


def _data(args, split_default=None):
    return load_data(
        args.data, args.split or split_default, root=args.root, list_dir=args.list_dir,
        imbalance=args.imbalance, n_max=args.n_max, cache_dir=args.cache_dir,
    )


def _set_verbose(model: Any, quiet: bool) -> None:
    if hasattr(model, "set_params"):
        try:
            model.set_params(verbose=0 if quiet else 1)
        except ValueError:
            pass


def _log(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def cmd_fit(args) -> int:
    from .estimators import LiftPlusClassifier

    params = dict(
        backbone=args.backbone, pretrained=args.pretrained, adapter=args.adapter,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
        random_state=args.seed, verbose=0 if args.quiet else 1,
    )
    params.update(dict(args.param))
    _log(args, f"loading {args.data} ({args.split}) ...")
    X, y, names = _data(args)
    X, y = _subset(X, y, args.max_train, args.seed)
    _log(args, f"{len(X)} training images, {len(names)} classes")
    clf = LiftPlusClassifier(**params)
    start = time.perf_counter()
    clf.set_params(class_names=names).fit(X, y)
    _log(args, f"fit in {time.perf_counter() - start:.1f} s on {clf.device_}; "
               f"{clf.n_trainable_params_:,} trained parameters")
    save_model(clf, args.out)
    print(f"model written to {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from .metrics import long_tail_report

    clf = load_model(args.model)
    _set_verbose(clf, args.quiet)
    X, y, _ = _data(args)
    X, y = _subset(X, y, args.max_test, args.seed)
    _log(args, f"evaluating on {len(X)} images ...")
    proba = clf.predict_proba(X)
    y_pred = clf.classes_[proba.argmax(axis=1)]
    kwargs = dict(labels=clf.classes_, target_names=clf.class_names_)
    print(long_tail_report(y, y_pred, clf.class_counts_, y_proba=proba, **kwargs))
    if args.json:
        report = long_tail_report(y, y_pred, clf.class_counts_, y_proba=proba,
                                  output_dict=True, **kwargs)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            # NaN (an empty shot group) is written as null, valid JSON.
            json.dump(_nan_to_none(report), f, indent=2)
        print(f"report written to {args.json}")
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install 'liftlearn[plot]'") from None
        from .metrics import plot_per_class_accuracy

        ax = plot_per_class_accuracy(y, y_pred, clf.class_counts_, labels=clf.classes_)
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"plot written to {args.plot}")
    return 0


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def cmd_predict(args) -> int:
    if bool(args.paths) == bool(args.data):
        raise UserError("predict needs image PATHs or --data, not both")
    clf = load_model(args.model)
    _set_verbose(clf, args.quiet)
    if args.data:
        X, y = _subset(*_data(args)[:2], args.max_test, args.seed)
    else:
        X = list(args.paths)
    proba = clf.predict_proba(X)
    best = proba.argmax(axis=1)
    names = list(clf.class_names_)
    header = ["path", "label", "class_name", "probability"]
    if args.all_proba:
        header += [f"proba_{n}" for n in names]
    out = sys.stdout if args.out == "-" else None
    if out is None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out = open(args.out, "w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(out)
        writer.writerow(header)
        for path, row, k in zip(X, proba, best):
            line = [path, clf.classes_[k], names[k], f"{row[k]:.6f}"]
            if args.all_proba:
                line += [f"{p:.6f}" for p in row]
            writer.writerow(line)
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out != "-":
        print(f"{len(X)} predictions written to {args.out}")
    return 0


_COMMANDS = {"fit": cmd_fit, "evaluate": cmd_evaluate, "predict": cmd_predict}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``liftlearn`` command; returns the exit status.

    User errors (missing or malformed files, bad parameter values, backbones
    that cannot be loaded) are printed on stderr as ``liftlearn: error: ...``
    and give exit status 2, without a traceback (set ``LIFTLEARN_DEBUG=1`` to
    get the traceback).
    """
    from .exceptions import BackboneError, BadImageError, TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (UserError, FileNotFoundError, ValueError, TypeError, BadImageError,
            BackboneError, TrainingError, OSError) as exc:
        if os.environ.get("LIFTLEARN_DEBUG"):
            raise
        print(f"liftlearn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("liftlearn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
