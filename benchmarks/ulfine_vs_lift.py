"""ULFineClassifier against LiftPlusClassifier on a CIFAR-10-LT SSL split.

Builds a long-tailed semi-supervised split of CIFAR-10 with the public LTSSL
conventions (:func:`liftlearn.datasets._ssl.make_long_tailed_ssl_split`),
then fits and scores on the balanced test set:

- ``LIFT+ (labeled only)``: LiftPlusClassifier on the labeled part;
- ``FixMatch + LFT``: ULFineClassifier with ``paf=False, dlf=False``;
- ``ULFine``: ULFineClassifier with its defaults.

Prints one markdown row per method: overall top-1 accuracy and the
many/medium/few-shot class means (groups by labeled count), fit seconds.

Examples
--------
The usual CIFAR-10-LT setting (N_1=1500, M_1=3000, g=100) with CLIP
ViT-B/16 on a GPU::

    python benchmarks/ulfine_vs_lift.py --device cuda

A quick CPU run with the tiny test backbone (random weights: the numbers
only show that everything runs)::

    python benchmarks/ulfine_vs_lift.py --backbone liftlearn-tiny-vit \
        --pretrained none --n-max-labeled 40 --n-max-unlabeled 80 \
        --imbalance-labeled 10 --imbalance-unlabeled 10 --n-test 20 \
        --epochs 2 --batch-size 32 --many-threshold 20 --few-threshold 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def default_source() -> str:
    env = os.environ.get("LIFTLEARN_SHARED_DATA")
    return env or str(HERE.parent.parent / "shared" / "data" / "cifar10-jpg")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=default_source(), help="folder with CIFAR-10 train.tar/test.tar")
    p.add_argument("--dest", default=os.path.join(tempfile.gettempdir(), "liftlearn-cifar10-ssl"))
    p.add_argument("--backbone", default="ViT-B-16-quickgelu")
    p.add_argument("--pretrained", default="openai", help="'none' for random weights")
    p.add_argument("--n-max-labeled", type=int, default=1500)
    p.add_argument("--n-max-unlabeled", type=int, default=3000)
    p.add_argument("--imbalance-labeled", type=float, default=100.0)
    p.add_argument("--imbalance-unlabeled", type=float, default=100.0)
    p.add_argument("--reverse-unlabeled", action="store_true")
    p.add_argument("--n-test", type=int, default=1000, help="test images per class")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--many-threshold", type=int, default=100)
    p.add_argument("--few-threshold", type=int, default=20)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from liftlearn import LiftPlusClassifier
    from liftlearn.datasets import extract_cifar10_lt
    from liftlearn.datasets._ssl import make_long_tailed_ssl_split
    from liftlearn.metrics import shot_accuracy
    from liftlearn import ULFineClassifier

    if not (Path(args.source) / "train.tar").is_file():
        sys.exit(f"no CIFAR-10 tars in {args.source}; pass --source")
    # A balanced pool big enough for every class's labeled + unlabeled draw.
    pool_size = min(5000, args.n_max_labeled + args.n_max_unlabeled)
    X_pool, y_pool, names = extract_cifar10_lt(
        args.source, args.dest, split="train", imbalance=1, n_max=pool_size, random_state=args.seed
    )
    X_test, y_test, _ = extract_cifar10_lt(args.source, args.dest, split="test", n_max=args.n_test)
    idx, y_ssl = make_long_tailed_ssl_split(
        y_pool, args.n_max_labeled, args.n_max_unlabeled, args.imbalance_labeled,
        args.imbalance_unlabeled, args.reverse_unlabeled, random_state=args.seed,
    )
    X = [X_pool[i] for i in idx]
    labeled = y_ssl != -1
    counts = np.bincount(y_ssl[labeled].astype(int), minlength=10)
    print(f"labeled per class {counts.tolist()}, unlabeled {int((~labeled).sum())}, "
          f"test {len(X_test)}; backbone {args.backbone} ({args.pretrained})")

    common = dict(
        backbone=args.backbone,
        pretrained=None if args.pretrained.lower() == "none" else args.pretrained,
        epochs=args.epochs, batch_size=args.batch_size, device=args.device,
        random_state=args.seed,
    )
    runs = [
        ("LIFT+ (labeled only)", LiftPlusClassifier(**common), "labeled"),
        ("FixMatch + LFT", ULFineClassifier(**common, paf=False, dlf=False), "all"),
        ("ULFine", ULFineClassifier(**common), "all"),
    ]
    print("\n| method | overall | many | medium | few | fit s |")
    print("|---|---|---|---|---|---|")
    for name, clf, data in runs:
        start = time.perf_counter()
        clf.set_params(class_names=names)
        if data == "labeled":
            clf.fit([x for x, m in zip(X, labeled) if m], y_ssl[labeled].astype(int))
        else:
            clf.fit(X, y_ssl)
        seconds = time.perf_counter() - start
        pred = clf.predict(X_test)
        shots = shot_accuracy(y_test, pred, counts, labels=np.arange(10),
                              many_threshold=args.many_threshold, few_threshold=args.few_threshold)
        cells = [f"{100 * np.mean(pred == y_test):.2f}"]
        cells += ["n/a" if np.isnan(shots[k]) else f"{100 * shots[k]:.2f}" for k in ("many", "medium", "few")]
        print(f"| {name} | " + " | ".join(cells) + f" | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
