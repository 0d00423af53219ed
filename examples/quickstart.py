"""Quickstart: LIFT+ on a small long-tailed CIFAR-10 sample.

Runs offline on a CPU in about two minutes of CPU time with the defaults
(the README's "Set-up: the two commands" gives the measured figure): the real images
embedded in liftlearn (CIFAR-10-LT, imbalance 100, 1,236 training and 1,000
test images) and liftlearn's tiny ViT with *random* weights. Random weights
show the mechanics, not the method: for real accuracy use CLIP's weights, e.g.

    python examples/quickstart.py --backbone ViT-B-16-quickgelu --pretrained openai

(downloads about 600 MB once; a GPU makes it fast).
"""

import argparse
import time

from liftlearn import LiftPlusClassifier
from liftlearn.datasets import load_cifar10_lt_sample
from liftlearn.metrics import long_tail_report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="liftlearn-tiny-vit", help="open_clip model name")
    parser.add_argument(
        "--pretrained", default=None,
        help="open_clip tag (e.g. openai) or checkpoint path; default: random weights",
    )
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plot", default="quickstart_per_class.png",
                        help="where to save the per-class accuracy plot ('' to skip)")
    args = parser.parse_args(argv)

    X_train, y_train, class_names = load_cifar10_lt_sample("train")
    X_test, y_test, _ = load_cifar10_lt_sample("test")
    print(f"{len(X_train)} training images, {len(X_test)} test images, "
          f"{len(class_names)} classes")

    clf = LiftPlusClassifier(
        backbone=args.backbone, pretrained=args.pretrained, epochs=args.epochs,
        device=args.device, random_state=0, verbose=1,
    )
    start = time.perf_counter()
    clf.fit(X_train, y_train, class_names=class_names)
    print(f"fit in {time.perf_counter() - start:.1f} s on {clf.device_}; "
          f"{clf.n_trainable_params_:,} trained parameters "
          f"(adapter {clf.n_adapter_params_:,}, bottleneck {clf.adapter_dim_})")

    proba = clf.predict_proba(X_test)  # five-crop test-time ensembling
    y_pred = clf.classes_[proba.argmax(axis=1)]
    print(long_tail_report(y_test, y_pred, clf.class_counts_, labels=clf.classes_,
                           target_names=clf.class_names_, y_proba=proba))
    if args.pretrained is None:
        print("Note: the backbone has random weights, so these figures only show "
              "that the pipeline works; pass --pretrained openai with a CLIP "
              "backbone for real accuracy.")

    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            from liftlearn.metrics import plot_per_class_accuracy
        except ImportError:
            print("matplotlib is not installed (pip install 'liftlearn[plot]'): no plot")
            return
        ax = plot_per_class_accuracy(y_test, y_pred, clf.class_counts_, labels=clf.classes_)
        ax.figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"per-class accuracy plot saved to {args.plot}")


if __name__ == "__main__":
    main()
