"""The long-tailed semi-supervised comparison table: ULFine, its ablations and baselines.

Reproduces the shape of the tables of the long-tailed semi-supervised (LTSSL)
literature (DARP, DASO, ACR, ULFine) with liftlearn's estimators:

Settings (labeled N_1 / unlabeled M_1 head-class counts, imbalance g; the
public LTSSL conventions of :func:`liftlearn.datasets.make_long_tailed_ssl_split`),
each with **consistent** (g_u = g_l), **uniform** (g_u = 1) and **reversed**
(g_u = g_l, tail classes most frequent) unlabeled data:

- CIFAR-10-LT: N_1=1500, M_1=3000, g=100 and N_1=500, M_1=4000, g=100, from
  the CIFAR-10 JPEG tars (``--source``);
- CIFAR-100-LT: N_1=150, M_1=300, g=10, from your CIFAR-100 files
  (``--cifar100-root``: the python pickles ``cifar-100-python/`` or image
  folders ``train/<class>/``, ``test/<class>/``, as
  :func:`liftlearn.datasets.load_cifar100_lt` reads them);
- STL-10-LT: N_1=450, g_l=10 drawn from STL-10's labeled training images,
  plus its unlabeled split (of unknown class distribution), from your files
  (``--stl10-root``: image folders ``train/<class>/``, ``test/<class>/`` and
  ``unlabeled/`` holding any images; ``--stl10-max-unlabeled`` caps the
  100,000 unlabeled images).

Settings whose files are absent are skipped with a message saying which flag
to pass.

Rows: zero-shot CLIP (:class:`~liftlearn.ZeroShotClassifier`), LIFT+ on the
labeled part, FixMatch + LP (``adapter="none"``), FixMatch + LFT
(AdaptFormer), FixMatch + FFT (``adapter="full"`` with its own learning rate,
``--fft-lr``), ULFine, and the PAF-only (``dlf=False``) and DLF-only
(``paf=False``) ablations. The FixMatch rows are
:class:`~liftlearn.ULFineClassifier` with ``paf=False, dlf=False``.

Columns: single-view top-1 accuracy on the balanced test set (the
literature's number), the same with test-time ensembling (TTE, an extra
column: LIFT+'s five crops), many / medium / few-shot class means (single
view; groups by labeled count: > ``--many-threshold``, < ``--few-threshold``),
and fit seconds; each as mean +- sample standard deviation over the seeds
(``--seeds``, default 0 1 2: the split and the estimator's ``random_state``).

No result is claimed: the numbers mean something only with real CLIP
weights on a GPU, and this script has not been run that way yet.

Examples
--------
The full table on one GPU with CLIP ViT-B/16 (OpenAI weights; the paper's
training length is not public, ``--epochs``/``--max-steps`` set it)::

    python benchmarks/ulfine_vs_lift.py --device cuda \\
        --cifar100-root /data/cifar100 --stl10-root /data/stl10 --json ltssl.json

One setting, two methods::

    python benchmarks/ulfine_vs_lift.py --device cuda \\
        --settings cifar10-n1500-m3000-uniform --methods "FixMatch + LFT" ULFine

The check the tests run (tiny random-weight backbone, a few images, CPU; the
numbers only show that everything runs)::

    python benchmarks/ulfine_vs_lift.py --smoke --dest /tmp/ltssl-smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


@dataclass(frozen=True)
class Setting:
    """One LTSSL setting: where the data come from and how it is split."""

    dataset: str  # "cifar10", "cifar100" or "stl10"
    n1: int  # labeled images of the head class
    m1: int  # unlabeled images of the most frequent unlabeled class (0: STL-10's own set)
    g_labeled: float
    g_unlabeled: float
    reverse: bool
    distribution: str  # "consistent", "uniform", "reversed" or "unknown"


def _three(dataset, n1, m1, g):
    """The consistent, uniform and reversed variants of one setting."""
    name = f"{dataset}-n{n1}-m{m1}"
    return {
        f"{name}-consistent": Setting(dataset, n1, m1, g, g, False, "consistent"),
        f"{name}-uniform": Setting(dataset, n1, m1, g, 1, False, "uniform"),
        f"{name}-reversed": Setting(dataset, n1, m1, g, g, True, "reversed"),
    }


SETTINGS = {
    **_three("cifar10", 1500, 3000, 100),
    **_three("cifar10", 500, 4000, 100),
    **_three("cifar100", 150, 300, 10),
    "stl10-n450-g10": Setting("stl10", 450, 0, 10, 1, False, "unknown"),
}

# --smoke: every kind of setting shrunk to a few images per class (CIFAR-100
# and STL-10 only where their files are given). By default it fits the
# consistent CIFAR-10 setting only and skips the others with a message;
# ``--settings`` picks others.
SMOKE_SETTINGS = {
    **{f"{name} (smoke)": Setting(s.dataset, 6, 12, 3, min(s.g_unlabeled, 3), s.reverse, s.distribution)
       for name, s in _three("cifar10", 1500, 3000, 100).items()},
    "cifar100-n150-m300-consistent (smoke)": Setting("cifar100", 3, 3, 3, 3, False, "consistent"),
    "stl10-n450-g10 (smoke)": Setting("stl10", 6, 0, 3, 1, False, "unknown"),
}
SMOKE_DEFAULT = ("cifar10-n1500-m3000-consistent (smoke)", "cifar100-n150-m300-consistent (smoke)",
                 "stl10-n450-g10 (smoke)")

METHODS = (
    "zero-shot CLIP",
    "LIFT+ (labeled only)",
    "FixMatch + LP",
    "FixMatch + LFT",
    "FixMatch + FFT",
    "ULFine",
    "ULFine: PAF only",
    "ULFine: DLF only",
)


def make_estimator(method: str, common: dict, args):
    """The estimator of one row, and whether it trains on the labeled part only."""
    from liftlearn import LiftPlusClassifier, ULFineClassifier, ZeroShotClassifier

    ssl = dict(common, max_steps=args.max_steps)
    if method == "zero-shot CLIP":
        keep = {k: common[k] for k in ("backbone", "pretrained", "batch_size", "device", "num_workers")}
        return ZeroShotClassifier(**keep), True
    if method == "LIFT+ (labeled only)":
        return LiftPlusClassifier(**common), True
    if method == "FixMatch + LP":
        return ULFineClassifier(**ssl, adapter="none", paf=False, dlf=False), False
    if method == "FixMatch + LFT":
        return ULFineClassifier(**ssl, paf=False, dlf=False), False
    if method == "FixMatch + FFT":
        return ULFineClassifier(**{**ssl, "lr": args.fft_lr}, adapter="full", paf=False, dlf=False), False
    if method == "ULFine":
        return ULFineClassifier(**ssl), False
    if method == "ULFine: PAF only":
        return ULFineClassifier(**ssl, dlf=False), False
    if method == "ULFine: DLF only":
        return ULFineClassifier(**ssl, paf=False), False
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def default_source() -> str:
    env = os.environ.get("LIFTLEARN_SHARED_DATA")
    return env or str(HERE.parent.parent / "shared" / "data" / "cifar10-jpg")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=default_source(), help="folder with the CIFAR-10 train.tar/test.tar")
    p.add_argument("--cifar100-root", help="CIFAR-100 pickles or image folders (load_cifar100_lt)")
    p.add_argument("--stl10-root", help="STL-10 image folders: train/<class>/, test/<class>/, unlabeled/")
    p.add_argument("--stl10-max-unlabeled", type=int, default=None,
                   help="use the first N unlabeled STL-10 images (sorted by path)")
    p.add_argument("--dest", default=os.path.join(tempfile.gettempdir(), "liftlearn-ltssl"),
                   help="where extracted images are written")
    p.add_argument("--settings", nargs="+", metavar="NAME", help=f"default: all of {list(SETTINGS)}")
    p.add_argument("--methods", nargs="+", metavar="NAME", help=f"default: all of {list(METHODS)}")
    p.add_argument("--seeds", nargs="+", type=int, help="default 0 1 2 (smoke: 0 1)")
    p.add_argument("--backbone", default="ViT-B-16-quickgelu")
    p.add_argument("--pretrained", default="openai", help="'none' for random weights")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=None, help="ULFine/FixMatch rows: a step budget")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--fft-lr", type=float, default=0.001,
                   help="FixMatch + FFT's learning rate (LIFT+'s best FFT lr on ImageNet-LT)")
    p.add_argument("--n-test", type=int, default=None, help="test images per class (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--many-threshold", type=int, default=100)
    p.add_argument("--few-threshold", type=int, default=20)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; --smoke: 1, which is fastest for tiny "
                        "models on a shared machine)")
    p.add_argument("--json", help="write every seed's numbers here")
    p.add_argument("--smoke", action="store_true",
                   help="tiny backbone, random weights, a few CIFAR-10 images, 2 seeds, CPU")
    args = p.parse_args(argv)
    if args.smoke:
        args.backbone, args.pretrained, args.device = "liftlearn-tiny-vit", "none", "cpu"
        args.epochs, args.batch_size, args.n_test = 1, 16, 2
        args.many_threshold, args.few_threshold = 4, 3
        args.threads = args.threads or 1
        if args.stl10_max_unlabeled is None:
            args.stl10_max_unlabeled = 24
    if args.seeds is None:
        args.seeds = [0, 1] if args.smoke else [0, 1, 2]
    table = SMOKE_SETTINGS if args.smoke else SETTINGS
    args.settings = args.settings or list(SMOKE_DEFAULT if args.smoke else table)
    for name in args.settings:
        if name not in table:
            p.error(f"unknown setting {name!r}; choose from {list(table)}")
    args.methods = args.methods or list(METHODS)
    for name in args.methods:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; choose from {list(METHODS)}")
    args.table = table
    return args


# ------------------------------------------------------------------ data
def _cap_per_class(paths, y, n):
    """The first ``n`` images of each class (all with None)."""
    y = np.asarray(y)
    if n is None:
        return list(paths), y
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)])
    keep.sort()
    return [paths[i] for i in keep], y[keep]


def _missing(dataset, args):
    """Why ``dataset``'s files are unavailable (None when they are there)."""
    if dataset == "cifar10":
        if not (Path(args.source) / "train.tar").is_file():
            return f"no CIFAR-10 train.tar/test.tar in {args.source}; pass --source"
    elif dataset == "cifar100":
        if not args.cifar100_root:
            return "pass --cifar100-root (CIFAR-100 pickles or image folders) to run the CIFAR-100-LT settings"
        if not Path(args.cifar100_root).is_dir():
            return f"--cifar100-root {args.cifar100_root} is not a folder"
    elif dataset == "stl10":
        if not args.stl10_root:
            return "pass --stl10-root (train/<class>/, test/<class>/, unlabeled/) to run the STL-10-LT setting"
        root = Path(args.stl10_root)
        absent = [d for d in ("train", "test", "unlabeled") if not (root / d).is_dir()]
        if absent:
            return f"--stl10-root {root} lacks the folder(s) {absent}"
    return None


def load_stl10(root, max_unlabeled=None):
    """STL-10 from image folders: labeled train, test and the unlabeled split.

    Returns
    -------
    (train_paths, train_y, names), (test_paths, test_y), unlabeled_paths
    """
    from liftlearn.datasets import IMAGE_EXTENSIONS, load_image_folder

    root = Path(root)
    train, y_train, names = load_image_folder(root / "train")
    test, y_test, test_names = load_image_folder(root / "test", class_names=names)
    unlabeled = sorted(str(p) for p in (root / "unlabeled").rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if max_unlabeled is not None:
        unlabeled = unlabeled[:max_unlabeled]
    if not unlabeled:
        raise FileNotFoundError(f"no images in {root / 'unlabeled'}")
    return (train, np.asarray(y_train), list(names)), (test, np.asarray(y_test)), unlabeled


class DataCache:
    """Each dataset's pool and test set, read once."""

    def __init__(self, args):
        self.args = args
        self.cache = {}

    def get(self, dataset, pool_size):
        if dataset not in self.cache:
            self.cache[dataset] = self._load(dataset, pool_size)
        return self.cache[dataset]

    def _load(self, dataset, pool_size):
        args = self.args
        dest = Path(args.dest)
        if dataset == "cifar10":
            from liftlearn.datasets import extract_cifar10_lt

            # A balanced pool big enough for every class's labeled + unlabeled draw.
            X, y, names = extract_cifar10_lt(args.source, dest / "cifar10", split="train", imbalance=1,
                                             n_max=min(5000, pool_size), random_state=0)
            Xt, yt, _ = extract_cifar10_lt(args.source, dest / "cifar10", split="test",
                                           n_max=args.n_test or 1000)
            return {"pool": (list(X), np.asarray(y)), "test": (list(Xt), np.asarray(yt)), "names": list(names)}
        if dataset == "cifar100":
            from liftlearn.datasets import load_cifar100_lt

            X, y, names = load_cifar100_lt(args.cifar100_root, "train", imbalance=1, n_max=500,
                                           cache_dir=dest / "cifar100")
            Xt, yt, _ = load_cifar100_lt(args.cifar100_root, "test", cache_dir=dest / "cifar100")
            return {"pool": (list(X), np.asarray(y)), "test": _cap_per_class(Xt, yt, args.n_test),
                    "names": list(names)}
        if dataset == "stl10":
            (X, y, names), (Xt, yt), unlabeled = load_stl10(args.stl10_root, args.stl10_max_unlabeled)
            return {"pool": (X, y), "test": _cap_per_class(Xt, yt, args.n_test), "names": names,
                    "unlabeled": unlabeled}
        raise ValueError(dataset)


def make_split(data, setting: Setting, seed: int):
    """``(X, y_ssl)`` of one seed: labeled draws plus unlabeled images (-1)."""
    from liftlearn.datasets import make_long_tailed_ssl_split

    X_pool, y_pool = data["pool"]
    idx, y_ssl = make_long_tailed_ssl_split(
        y_pool, setting.n1, setting.m1, setting.g_labeled, setting.g_unlabeled, setting.reverse,
        random_state=seed,
    )
    X = [X_pool[i] for i in idx]
    if setting.dataset == "stl10":
        # STL-10's own unlabeled split: its class distribution is unknown.
        X += data["unlabeled"]
        y_ssl = np.concatenate([y_ssl, np.full(len(data["unlabeled"]), -1, dtype=y_ssl.dtype)])
    return X, y_ssl


# ------------------------------------------------------------- running
def run_one(method, setting, data, seed, args):
    """Fit one row on one seed; its numbers."""
    from liftlearn.metrics import shot_accuracy

    X, y_ssl = make_split(data, setting, seed)
    names = data["names"]
    labeled = y_ssl != -1
    counts = np.bincount(y_ssl[labeled].astype(int), minlength=len(names))
    common = dict(
        backbone=args.backbone,
        pretrained=None if args.pretrained.lower() == "none" else args.pretrained,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
        num_workers=args.num_workers, random_state=seed,
    )
    clf, labeled_only = make_estimator(method, common, args)
    clf.set_params(class_names=names)
    start = time.perf_counter()
    if labeled_only:
        clf.fit([x for x, m in zip(X, labeled) if m], y_ssl[labeled].astype(int))
    else:
        clf.fit(X, y_ssl)
    seconds = time.perf_counter() - start
    X_test, y_test = data["test"]
    row = {"fit_seconds": seconds, "n_labeled": int(labeled.sum()), "n_unlabeled": int((~labeled).sum())}
    for tte in (False, True):
        clf.set_params(tte=tte)
        pred = clf.predict(X_test)
        row["acc_tte" if tte else "acc"] = float(np.mean(pred == y_test))
        if not tte:
            shots = shot_accuracy(y_test, pred, counts, labels=np.arange(len(names)),
                                  many_threshold=args.many_threshold, few_threshold=args.few_threshold)
            row.update({k: float(shots[k]) for k in ("many", "medium", "few")})
    return row


COLUMNS = (("acc", "acc"), ("acc (TTE)", "acc_tte"), ("many", "many"), ("medium", "medium"),
           ("few", "few"), ("fit s", "fit_seconds"))


def mean_std(values, percent=True):
    """``"mean +- std"`` (sample std over the seeds; ``n/a`` where undefined)."""
    v = np.asarray([x for x in values if not np.isnan(x)], dtype=float)
    if len(v) == 0:
        return "n/a"
    scale = 100.0 if percent else 1.0
    mean = scale * v.mean()
    if len(v) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {scale * v.std(ddof=1):.2f}"


def describe(name, s: Setting, data):
    counts = f"N_1={s.n1}, g_l={s.g_labeled:g}"
    unlabeled = (f"STL-10 unlabeled split ({len(data['unlabeled'])} images, unknown distribution)"
                 if s.dataset == "stl10" else f"M_1={s.m1}, g_u={s.g_unlabeled:g} ({s.distribution})")
    return f"### {name}: {s.dataset}, {counts}, {unlabeled}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cache = DataCache(args)
    pool_size = max(s.n1 + s.m1 for s in args.table.values())
    results = {}
    skipped = {}
    print(f"# LTSSL comparison: {args.backbone} ({args.pretrained}), seeds {args.seeds}, "
          f"epochs {args.epochs}, max_steps {args.max_steps}, batch {args.batch_size}, "
          f"lr {args.lr} (FFT {args.fft_lr})")
    print("Cells: mean ± sample std over the seeds, accuracy in %; many/medium/few on the "
          "single view. No claim: see the script's docstring.")
    for name in args.settings:
        setting = args.table[name]
        why = _missing(setting.dataset, args)
        if why is not None:
            skipped[name] = why
            print(f"\nskipped {name}: {why}", flush=True)
            continue
        data = cache.get(setting.dataset, pool_size)
        print("\n" + describe(name, setting, data))
        print("\n| method | " + " | ".join(c for c, _ in COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 1) + "|")
        results[name] = {"setting": asdict(setting), "methods": {}}
        for method in args.methods:
            rows = [run_one(method, setting, data, seed, args) for seed in args.seeds]
            results[name]["methods"][method] = rows
            cells = [mean_std([r[k] for r in rows], percent=(k != "fit_seconds")) for _, k in COLUMNS]
            print(f"| {method} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        payload = {"args": {k: v for k, v in vars(args).items() if k != "table"},
                   "seeds": args.seeds, "results": results, "skipped": skipped}
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    if not results:
        print("\nno setting could run: every dataset's files are missing (see above)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
