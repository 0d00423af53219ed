"""Training and prediction throughput of LiftPlusClassifier.

Prints images/s for one training epoch of the full fit loop (JPEG decode,
minimalist crop, forward, backward, optimiser step), prediction images/s and
views/s with and without test-time ensembling, and peak host and device
memory, as one markdown table row per run.

Examples
--------
CPU, tiny backbone, the embedded CIFAR-10-LT sample::

    python benchmarks/throughput.py --backbone liftlearn-tiny-vit --n-images 1236

GPU, CLIP ViT-B/16 (random weights are fine for speed), ImageNet-sized JPEGs::

    python benchmarks/throughput.py --backbone ViT-B-16-quickgelu --source synthetic \
        --n-images 4096 --device cuda
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _write_jpeg(job) -> None:
    from PIL import Image

    path, i, (w, h), seed = job
    # Each image from its own generator: the files do not depend on how
    # many processes write them.
    rng = np.random.default_rng([seed, i])
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    noise = rng.integers(-20, 20, (h, w, 3))
    _save_jpeg(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8), path)


def _save_jpeg(pixels: np.ndarray, path) -> None:
    """``pixels`` (H, W, 3) uint8 as a quality-90 JPEG at ``path``."""
    from PIL import Image

    tmp = f"{path}.{os.getpid()}.tmp"
    Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="JPEG", quality=90)
    os.replace(tmp, path)  # a killed run leaves no half-written JPEG behind


def _write_jpegs(jobs) -> None:
    for job in jobs:
        _write_jpeg(job)


def synthetic_jpegs(n: int, folder: Path, size=(500, 375), seed: int = 0, jobs: int = 1) -> list:
    """``n`` ImageNet-sized JPEGs (smooth random colour fields plus noise),
    written by ``jobs`` processes; files already there are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = [folder / f"{w}x{h}_{i:06d}.jpg" for i in range(n)]
    todo = [(str(p), i, size, seed) for i, p in enumerate(paths) if not p.exists()]
    import multiprocessing

    if jobs > 1 and len(todo) > 1 and "fork" in multiprocessing.get_all_start_methods():
        # Forked processes, one slice each (this module may be loaded from
        # its file, not importable by name, so nothing is pickled).
        context = multiprocessing.get_context("fork")
        procs = [context.Process(target=_write_jpegs, args=(todo[k::jobs],)) for k in range(jobs)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        failed = [proc.exitcode for proc in procs if proc.exitcode != 0]
        if failed:
            raise RuntimeError(f"writing synthetic JPEGs failed in {len(failed)} process(es)")
    else:
        _write_jpegs(todo)
    return [str(p) for p in paths]


def photo_jpegs(n: int, folder: Path, size=(500, 375), seed: int = 0) -> list:
    """``n`` JPEGs of photographic content: ``size`` crops (random place,
    random horizontal flip) of scikit-learn's two sample photographs
    (640x427), re-encoded at quality 90; files already there are reused.

    To check the synthetic colour fields against photographic content in
    the pipeline part (the report gives the files' mean size)."""
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = [folder / f"photo-{w}x{h}_{i:06d}.jpg" for i in range(n)]
    todo = [(i, p) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        photos = load_sample_images().images
        if any(w > photo.shape[1] or h > photo.shape[0] for photo in photos):
            raise ValueError(f"{w}x{h} is larger than the sample photos")
        for i, path in todo:
            rng = np.random.default_rng([seed, i])
            photo = photos[i % len(photos)]
            top = int(rng.integers(0, photo.shape[0] - h + 1))
            left = int(rng.integers(0, photo.shape[1] - w + 1))
            crop = photo[top:top + h, left:left + w]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            _save_jpeg(crop, path)
    return [str(p) for p in paths]


def sample_paths(n: int) -> list:
    """The first ``n`` images of the embedded CIFAR-10-LT sample (repeated if needed)."""
    from liftlearn.datasets import load_cifar10_lt_sample

    X, _, _ = load_cifar10_lt_sample("train")
    reps = -(-n // len(X))
    return (list(X) * reps)[:n]


def peak_host_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="liftlearn-tiny-vit")
    parser.add_argument("--pretrained", default=None, help="default: random weights")
    parser.add_argument("--adapter", default="adaptformer")
    parser.add_argument("--source", choices=["sample", "synthetic"], default="sample")
    parser.add_argument("--n-images", type=int, default=1236)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device-batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from liftlearn import LiftPlusClassifier

    if args.source == "sample":
        paths = sample_paths(args.n_images)
    else:
        paths = synthetic_jpegs(args.n_images, HERE / "_data")
    y = np.arange(len(paths)) % args.n_classes
    names = [f"class {i}" for i in range(args.n_classes)]

    clf = LiftPlusClassifier(
        backbone=args.backbone, pretrained=args.pretrained, adapter=args.adapter,
        epochs=1, batch_size=args.batch_size, device_batch_size=args.device_batch_size,
        device=args.device, num_workers=args.num_workers, random_state=0,
        class_names=names,
    )
    # Load the backbone (and warm up) outside the timed fit.
    clf.set_params(epochs=1).fit(paths[: args.batch_size], y[: args.batch_size])
    device = clf.device_
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    clf.fit(paths, y)
    train_ips = len(paths) / clf.history_[0]["seconds"]

    results = {}
    for tte in (False, True):
        clf.set_params(tte=tte)
        start = time.perf_counter()
        clf.decision_function(paths)
        if device.type == "cuda":
            torch.cuda.synchronize()
        results[tte] = len(paths) / (time.perf_counter() - start)

    device_mem = (
        f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if device.type == "cuda" else "n/a"
    )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"# {args.backbone} ({args.adapter}), {len(paths)} {args.source} images, "
          f"batch {args.batch_size}, on {device} [{where}], torch {torch.__version__}")
    print("| backbone | device | train img/s | predict img/s | TTE img/s (views/s) "
          "| peak host MiB | peak device MiB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.backbone} | {device.type} | {train_ips:.1f} | {results[False]:.1f} | "
          f"{results[True]:.1f} ({5 * results[True]:.1f}) | {peak_host_mib():.0f} | {device_mem} |")


if __name__ == "__main__":
    main()
