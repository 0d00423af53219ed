"""Trainable parameters of every ``adapter`` option, as in the README table.

Builds each tuner on a random-weight backbone (the counts do not depend on
the weights) for C = 1000, 365 and 100 classes and prints a markdown table.

    python benchmarks/param_counts.py                      # ViT-B/16 and RN50
    python benchmarks/param_counts.py --backbones ViT-L-14-quickgelu
"""

import argparse
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.disable(logging.WARNING)  # open_clip's "initialized randomly"

from liftlearn.nn.tuners import ADAPTERS, RESNET_ADAPTERS, build_tuner  # noqa: E402
from liftlearn.nn.backbones import get_backbone  # noqa: E402

CLASSES = (1000, 365, 100)


def _size(tuner) -> str:
    """The size column: adapter_dim, or "aft"'s automatic ratio."""
    ratio = getattr(tuner, "options", {}).get("ratio")
    if ratio is not None:
        return f"r={ratio:.2e}"
    return str(tuner.adapter_dim) if tuner.adapter_dim is not None else "-"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["ViT-B-16-quickgelu", "RN50"])
    args = parser.parse_args(argv)
    for name in args.backbones:
        bb = get_backbone(name, "cpu", pretrained=None)
        tower = sum(p.numel() for p in bb.visual.parameters())
        print(f"\n## {name}: image tower {tower:,} parameters, feature {bb.feature_dim}-d")
        print("| adapter | size (C=1000/365/100) | C=1000 | C=365 | C=100 | % of tower, C=1000 |")
        print("|---|---|---|---|---|---|")
        for adapter in ADAPTERS:
            if bb.kind == "resnet" and adapter not in RESNET_ADAPTERS:
                continue
            tuners = [build_tuner(adapter, bb, c) for c in CLASSES]
            sizes = "/".join(_size(t) for t in tuners)
            counts = [t.n_trainable_params() for t in tuners]
            print(f"| {adapter} | {sizes} | " + " | ".join(f"{n:,}" for n in counts)
                  + f" | {100 * counts[0] / tower:.3f} |")
        print("classifier (C x D, counted separately): "
              + " / ".join(f"{c * bb.feature_dim:,}" for c in CLASSES))


if __name__ == "__main__":
    main()
