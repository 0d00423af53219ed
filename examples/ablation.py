"""Ablations of the LIFT+ study with scikit-learn's GridSearchCV.

Two searches, each scored on the test split with liftlearn's long-tail
scorers (overall, many-, medium- and few-shot accuracy):

1. classifier x loss x classifier_init (the head, the training loss and the
   head's initialisation, with LIFT+'s AdaptFormer);
2. aft_ratio: arbitrary fine-tuning of a growing share of the projection
   weights (LIFT+'s "heavy fine-tuning hurts the tail" axis).

Each configuration is fitted once on the training split and scored on the test
split (a ``PredefinedSplit``, so GridSearchCV runs the paper's protocol, not a
cross-validation). By default it runs on the CIFAR-10-LT sample embedded in
liftlearn with the tiny ViT and *random* weights: that shows the mechanics,
not the study's numbers. The study itself needs CLIP's weights and a GPU, e.g.

    python examples/ablation.py --backbone ViT-B-16-quickgelu --pretrained openai \\
        --epochs 5 --device cuda

(about 600 MB of weights downloaded once; 4 x 8 x 4 = 128 fits plus 6 AFT fits
on the sample). For a benchmark, pass your own split with the dataset loaders
(``liftlearn.datasets``) in place of ``load_cifar10_lt_sample`` below. ``--smoke``
is a quick check (under a minute on two CPU cores): 107 training and 50 test
images, one epoch, a 2 x 2 x 2 grid and two AFT ratios, no TTE.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from sklearn.model_selection import GridSearchCV, PredefinedSplit

from liftlearn import LiftPlusClassifier
from liftlearn.datasets import load_cifar10_lt_sample
from liftlearn.metrics import long_tail_scoring

#: The study's grids (``--smoke`` keeps the first two values of each).
CLASSIFIERS = ["cosine", "linear", "l2norm", "layernorm"]
LOSSES = ["la", "ce", "focal", "ldam", "cb", "grw", "bs", "lade"]
INITS = ["semantic", "class_mean", "linear_probing", None]
AFT_RATIOS = [0.001, 0.01, 0.03, 0.1, 0.3, 1.0]

COLUMNS = ("accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")


def train_test_search_data(X_train, y_train, X_test, y_test):
    """``X, y, cv`` for a GridSearchCV that fits on the training images and
    scores on the test images, once per configuration."""
    X = list(X_train) + list(X_test)
    y = np.concatenate([np.asarray(y_train), np.asarray(y_test)])
    fold = np.r_[np.full(len(X_train), -1), np.zeros(len(X_test), dtype=int)]
    return X, y, PredefinedSplit(fold)


def ablation_table(search: GridSearchCV, params) -> list:
    """One row per configuration: its parameters and the four accuracies (%)."""
    rows = []
    results = search.cv_results_
    for i, config in enumerate(results["params"]):
        row = {p: config[p] for p in params}
        row.update({c: 100 * float(results[f"mean_test_{c}"][i]) for c in COLUMNS})
        rows.append(row)
    return rows


def format_table(rows, params) -> str:
    """The rows as a markdown table (NaN: no test class in the group)."""
    head = list(params) + ["overall", "many", "medium", "few"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        values = [str(r[p]) for p in params] + [f"{r[c]:.1f}" for c in COLUMNS]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def run(args) -> dict:
    """Both searches; returns ``{"study": rows, "aft": rows}``."""
    X_train, y_train, class_names = load_cifar10_lt_sample("train")
    X_test, y_test, _ = load_cifar10_lt_sample("test")
    many, few = 100, 20  # LIFT+'s shot groups
    if args.smoke:
        # Every 12th training image of each class keeps the long tail
        # (42/25/15/9/6/4/2/2/1/1 images), 5 test images per class; the shot
        # groups scale with it (many > 20, few < 5).
        y_train, y_test = np.asarray(y_train), np.asarray(y_test)
        keep = np.concatenate([np.flatnonzero(y_train == c)[::12] for c in range(10)])
        X_train, y_train = [X_train[i] for i in keep], y_train[keep]
        keep = np.concatenate([np.flatnonzero(y_test == c)[:5] for c in range(10)])
        X_test, y_test = [X_test[i] for i in keep], y_test[keep]
        many, few = 20, 5
    X, y, cv = train_test_search_data(X_train, y_train, X_test, y_test)
    base = LiftPlusClassifier(
        backbone=args.backbone, pretrained=args.pretrained, epochs=args.epochs,
        batch_size=args.batch_size, device=args.device, class_names=list(class_names),
        tte=not args.smoke, random_state=0,
    )
    scoring = long_tail_scoring(many_threshold=many, few_threshold=few)
    grids = {
        "study": {"classifier": CLASSIFIERS, "loss": LOSSES, "classifier_init": INITS},
        "aft": {"adapter": ["aft"], "aft_ratio": AFT_RATIOS},
    }
    if args.smoke:
        grids = {
            "study": {k: v[:2] for k, v in grids["study"].items()},
            "aft": {"adapter": ["aft"], "aft_ratio": [0.01, 0.3]},
        }
    tables = {}
    for name, grid in grids.items():
        n_fits = len(list(itertools.product(*grid.values())))
        print(f"\n## {name}: {n_fits} configurations, {len(X_train)} training and "
              f"{len(X_test)} test images")
        start = time.perf_counter()
        search = GridSearchCV(base, grid, scoring=scoring, cv=cv, refit=False, error_score="raise")
        search.fit(X, y)
        params = [p for p in grid if len(grid[p]) > 1]
        tables[name] = ablation_table(search, params)
        print(format_table(tables[name], params))
        print(f"({time.perf_counter() - start:.1f} s)")
    return tables


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="liftlearn-tiny-vit", help="open_clip model name")
    parser.add_argument("--pretrained", default=None,
                        help="open_clip tag (e.g. openai) or checkpoint path; default: random weights")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true",
                        help="a quick check: 107/50 images, 1 epoch, small grids, no TTE")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 1
    return run(args)


if __name__ == "__main__":
    main()
