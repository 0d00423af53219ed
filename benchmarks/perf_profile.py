"""Performance profile of LIFT+: data pipeline, model step, prediction, full fit.

Measures, for one backbone, adapter and batch size:

* ``data``: the training data pipeline alone -- JPEG decode only
  (``liftlearn.data.load_image``), then a DataLoader over
  ``liftlearn.data.TrainDataset`` with ``liftlearn.transforms.train_transform``
  (decode + minimalist crop + normalise) for each ``--workers`` count, in
  images/s in total and per worker;
* ``step``: the model step alone -- forward, logit-adjusted loss, backward and
  SGD step under the training loop's autocast, on random tensors already on
  the device; FLOPs per step (``torch.utils.flop_counter.FlopCounterMode``),
  achieved FLOP/s and, on CUDA, the share of the GPU's peak dense bf16 FLOP/s;
* ``predict``: the network's forward alone on device tensors, one view per
  image and five (TTE), in views/s;
* ``fit``: one epoch of ``LiftPlusClassifier.fit`` from the image files (after
  a warm-up fit that loads the backbone), then ``decision_function`` from the
  same files without and with TTE -- what a user sees end to end;

plus peak host RSS and peak device memory. It prints markdown tables headed
by the machine, torch version and settings and, on CUDA, PASS/FAIL against
the H100 targets of CLIP ViT-B/16 + AdaptFormer.

Examples
--------
CPU, tiny backbone, the embedded CIFAR-10-LT sample::

    python benchmarks/perf_profile.py --backbone liftlearn-tiny-vit --source sample

GPU, CLIP ViT-B/16 with random weights, ImageNet-sized synthetic JPEGs::

    python benchmarks/perf_profile.py --backbone ViT-B-16-quickgelu --source synthetic \\
        --n-images 8192 --batch-size 128 --workers 4 8 12 --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _load_throughput():
    """benchmarks/throughput.py as a module (its helpers, not its main)."""
    spec = importlib.util.spec_from_file_location("_liftlearn_throughput", HERE / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_throughput = _load_throughput()
peak_host_mib = _throughput.peak_host_mib
sample_paths = _throughput.sample_paths
synthetic_jpegs = _throughput.synthetic_jpegs

PARTS = ("data", "step", "predict", "fit")

# Peak dense (no sparsity) bf16 tensor-core FLOP/s, from the vendors' data
# sheets, which quote the 2:4-sparse figure; dense is half of it:
#   H100 SXM5   1,979 TFLOPS sparse -> 989.4  (NVIDIA H100 Tensor Core GPU datasheet)
#   H100 PCIe   1,513 TFLOPS sparse -> 756    (same datasheet)
#   H100 NVL    1,671 TFLOPS sparse -> 835    (same datasheet, per GPU)
#   H200        1,979 TFLOPS sparse -> 989.4  (NVIDIA H200 datasheet; same SMs and clocks as H100 SXM)
#   A100        312 dense                      (NVIDIA A100 datasheet, SXM and PCIe)
#   L40S        733 TFLOPS sparse -> 362      (NVIDIA L40S datasheet)
#   RTX 4090    165.2 dense, fp32 accumulate   (NVIDIA Ada Lovelace architecture whitepaper)
# Boost clocks are assumed; a power- or thermally-capped GPU reaches less, so
# the share is a lower bound on efficiency. Matched in order, on substrings of
# torch.cuda.get_device_name(); --peak-tflops overrides.
PEAK_BF16 = (
    (("H100", "PCIE"), 756e12),
    (("H100", "NVL"), 835e12),
    (("H100",), 989.4e12),
    (("H200",), 989.4e12),
    (("A100",), 312e12),
    (("L40S",), 362e12),
    (("RTX 4090",), 165e12),
)

# The targets, for one H100-class GPU, CLIP ViT-B/16 + AdaptFormer.
TARGETS = {
    "step_share_of_peak": 0.40,
    "fit_images_per_s": 3000.0,
    "tte_views_per_s": 5000.0,
}


def peak_bf16_flops(device_name: str):
    name = device_name.upper()
    for keys, flops in PEAK_BF16:
        if all(k.upper() in name for k in keys):
            return flops
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    cpu = f"{cpu_model()}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} + {cpu}"
    return cpu


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_device_peak(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def device_peak_mib(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None


def fmt(x, digits=1):
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:,.{digits}f}" if abs(x) >= 10 or x == 0 else f"{x:.3g}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------- parts
def profile_data(args, paths, targets, backbone, device) -> dict:
    from torch.utils.data import DataLoader

    from liftlearn.data import TrainDataset, load_image
    from liftlearn.transforms import train_transform

    n_decode = min(len(paths), args.decode_images)
    start = time.perf_counter()
    for p in paths[:n_decode]:
        load_image(p)
    decode_ips = n_decode / (time.perf_counter() - start)

    # min_scale 0.08: the first epoch of the convex schedule, the smallest
    # crops (the resize from a small crop is cheapest; later epochs crop more).
    transform = train_transform(backbone.image_size, 0.08, backbone.mean, backbone.std)
    dataset = TrainDataset(paths, targets, transform, seed=0, epoch=0)
    rows = []
    for workers in args.workers:
        loader = DataLoader(
            dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers,
            pin_memory=device.type == "cuda",
        )
        start = time.perf_counter()
        first = None
        n = 0
        for images, _ in loader:
            if first is None:
                first = time.perf_counter()
            n += len(images)
        end = time.perf_counter()
        total = n / (end - start)
        # Without worker start-up and the first batch (the steady state);
        # only meaningful with several batches.
        n_rest = n - min(args.batch_size, n)
        steady = n_rest / (end - first) if n_rest > 0 and end > first else None
        rows.append({
            "workers": workers, "images": n, "images_per_s": total,
            "images_per_s_per_worker": total / max(workers, 1),
            "steady_images_per_s": steady,
        })
    return {"decode_images": n_decode, "decode_images_per_s": decode_ips, "loaders": rows}


def _build(args, backbone, class_names):
    from liftlearn import LiftPlusClassifier

    clf = LiftPlusClassifier(
        backbone=args.backbone, pretrained=args.pretrained, adapter=args.adapter,
        random_state=0,
    )
    return clf._build_network(backbone, class_names, seed=0)


def profile_step(args, backbone, class_names, device) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from liftlearn.nn.losses import LogitAdjustedLoss
    from liftlearn._device import autocast_for as _autocast

    network = _build(args, backbone, class_names).to(device)
    network.train()
    params = [p for p in network.parameters() if p.requires_grad]
    opt_kwargs = {}
    if args.fused:
        opt_kwargs["fused"] = True
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=5e-4, **opt_kwargs)
    counts = np.arange(len(class_names), 0, -1) * 10  # long-tailed prior
    criterion = LogitAdjustedLoss(counts).to(device)
    autocast, scaler = _autocast(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    size = backbone.image_size
    images = torch.randn(args.batch_size, 3, size, size, generator=g).to(device)
    targets = torch.randint(0, len(class_names), (args.batch_size,), generator=g).to(device)
    model = torch.compile(network) if args.compile else network

    def step():
        with autocast:
            loss = criterion(model(images), targets)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    # FLOPs of forward + backward, counted once on the eager network (the
    # optimiser's elementwise update is negligible and not a matmul).
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast:
            loss = criterion(network(images), targets)
        loss.backward()
    optimizer.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()

    reset_device_peak(device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    if not torch.isfinite(loss.detach().float()):
        raise RuntimeError(f"the step's loss is {float(loss)}")
    achieved = flops / seconds
    peak = None
    if device.type == "cuda":
        peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_bf16_flops(
            torch.cuda.get_device_name(device))
    return {
        "batch_size": args.batch_size, "steps": args.steps, "warmup_steps": args.warmup,
        "warmup_seconds": warmup_s, "compile": bool(args.compile), "fused_sgd": bool(args.fused),
        "autocast": "bf16" if device.type == "cuda" and scaler is None else (
            "fp16" if scaler is not None else "none (fp32)"),
        "seconds_per_step": seconds, "images_per_s": args.batch_size / seconds,
        "gflop_per_step": flops / 1e9, "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12 if peak else None,
        "share_of_peak": achieved / peak if peak else None,
        "trainable_params": sum(p.numel() for p in params),
        "peak_device_mib": device_peak_mib(device),
    }


@torch.no_grad()
def profile_predict(args, backbone, class_names, device) -> dict:
    from liftlearn._device import autocast_for as _autocast

    network = _build(args, backbone, class_names).to(device).eval()
    model = torch.compile(network) if args.compile else network
    autocast, _ = _autocast(device)
    size = backbone.image_size
    g = torch.Generator(device="cpu").manual_seed(1)
    rows = []
    reset_device_peak(device)
    for views in (1, 5):
        x = torch.randn(args.batch_size * views, 3, size, size, generator=g).to(device)
        for _ in range(max(1, args.warmup)):
            with autocast:
                model(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            with autocast:
                logits = model(x)
            logits.float().view(args.batch_size, views, -1).mean(dim=1)
        sync(device)
        seconds = (time.perf_counter() - start) / args.steps
        rows.append({
            "views_per_image": views, "tte": views > 1,
            "images_per_s": args.batch_size / seconds,
            "views_per_s": args.batch_size * views / seconds,
        })
    return {"rows": rows, "peak_device_mib": device_peak_mib(device)}


def profile_fit(args, paths, targets, class_names, device) -> dict:
    from liftlearn import LiftPlusClassifier

    clf = LiftPlusClassifier(
        backbone=args.backbone, pretrained=args.pretrained, adapter=args.adapter,
        epochs=1, batch_size=args.batch_size, device=str(device),
        num_workers=args.fit_workers, random_state=0, class_names=class_names,
    )
    # Load the backbone, build the text head and warm up outside the timing.
    clf.fit(paths[: args.batch_size], targets[: args.batch_size])
    reset_device_peak(device)
    clf.fit(paths, targets)
    fit_s = clf.history_[0]["seconds"]
    out = {"images": len(paths), "num_workers": args.fit_workers,
           "fit_images_per_s": len(paths) / fit_s, "fit_epoch_seconds": fit_s}
    for tte in (False, True):
        clf.set_params(tte=tte)
        start = time.perf_counter()
        clf.decision_function(paths)
        sync(device)
        ips = len(paths) / (time.perf_counter() - start)
        key = "tte" if tte else "plain"
        out[f"{key}_images_per_s"] = ips
        out[f"{key}_views_per_s"] = ips * (5 if tte else 1)
    out["peak_device_mib"] = device_peak_mib(device)
    return out


# --------------------------------------------------------------------- report
def report(res: dict) -> str:
    s = res["settings"]
    out = [
        f"# LIFT+ profile: {s['backbone']} ({s['adapter']}, pretrained={s['pretrained']})",
        "",
        f"- machine: {res['machine']}",
        f"- device: {res['device']}; torch {res['torch']}; python {res['python']}",
        f"- input: {s['n_images']} {s['source']} images, {res['image_size']} px crops; "
        f"batch {s['batch_size']}; steps {s['steps']} (+{s['warmup']} warm-up); "
        f"compile={s['compile']}; fused SGD={s['fused']}",
    ]
    if "data" in res:
        d = res["data"]
        out += ["", "## Data pipeline (decode + minimalist crop)", "",
                f"decode only (load_image, 1 process, {d['decode_images']} images): "
                f"{d['decode_images_per_s']:,.1f} images/s", ""]
        out.append(table(
            ["workers", "images", "images/s (total)", "images/s per worker",
             "steady images/s (after 1st batch)"],
            [[r["workers"], r["images"], r["images_per_s"], r["images_per_s_per_worker"],
              r["steady_images_per_s"]] for r in d["loaders"]]))
    if "step" in res:
        st = res["step"]
        out += ["", "## Model step (forward + loss + backward + SGD, device tensors)", ""]
        out.append(table(
            ["batch", "autocast", "compile", "ms/step", "images/s", "GFLOP/step",
             "achieved GFLOP/s", "peak bf16 TFLOP/s", "share of peak", "peak device MiB"],
            [[st["batch_size"], st["autocast"], st["compile"], st["seconds_per_step"] * 1e3,
              st["images_per_s"], st["gflop_per_step"], st["achieved_tflops"] * 1e3,
              st["peak_tflops"],
              f"{100 * st['share_of_peak']:.1f}%" if st["share_of_peak"] is not None else "n/a",
              st["peak_device_mib"]]]))
        out.append(f"\n{st['trainable_params']:,} trainable parameters; "
                   f"warm-up {st['warmup_seconds']:.2f} s")
    if "predict" in res:
        p = res["predict"]
        out += ["", "## Prediction (network forward only, device tensors)", ""]
        out.append(table(
            ["TTE", "views/image", "images/s", "views/s"],
            [["yes" if r["tte"] else "no", r["views_per_image"], r["images_per_s"],
              r["views_per_s"]] for r in p["rows"]]))
    if "fit" in res:
        f = res["fit"]
        out += ["", "## End to end from image files (LiftPlusClassifier)", ""]
        out.append(table(
            ["images", "num_workers", "fit img/s (1 epoch)", "predict img/s",
             "TTE img/s", "TTE views/s", "peak device MiB"],
            [[f["images"], f["num_workers"] if f["num_workers"] is not None else "auto",
              f["fit_images_per_s"], f["plain_images_per_s"], f["tte_images_per_s"],
              f["tte_views_per_s"], f["peak_device_mib"]]]))
    out += ["", "## Memory", "",
            f"peak host RSS: {res['peak_host_mib']:,.0f} MiB"
            + (f"; peak device memory (max over parts): {res['peak_device_mib']:,.0f} MiB"
               if res.get("peak_device_mib") is not None else "; no device memory (CPU)")]
    out += ["", "## Targets (one H100-class GPU, CLIP ViT-B/16 + AdaptFormer)", ""]
    out += [f"- {line}" for line in res["targets"]]
    return "\n".join(out)


def judge(res: dict, device: torch.device) -> list:
    if device.type != "cuda":
        return ["not judged: the targets are for a GPU (this run is on the CPU)"]
    lines = []
    st, f = res.get("step"), res.get("fit")
    checks = [
        ("model step share of peak bf16 FLOP/s", TARGETS["step_share_of_peak"],
         st["share_of_peak"] if st else None, lambda v: f"{100 * v:.1f}%", "40%"),
        ("whole fit from JPEG files, images/s", TARGETS["fit_images_per_s"],
         f["fit_images_per_s"] if f else None, lambda v: f"{v:,.0f}", "3,000"),
        ("TTE prediction from files, views/s", TARGETS["tte_views_per_s"],
         f["tte_views_per_s"] if f else None, lambda v: f"{v:,.0f}", "5,000"),
    ]
    for name, target, value, show, tshow in checks:
        if value is None:
            lines.append(f"n/a: {name} (part not run, or unknown peak: pass --peak-tflops)")
        else:
            verdict = "PASS" if value >= target else "FAIL"
            lines.append(f"{verdict}: {name} = {show(value)} (target >= {tshow})")
    s = res["settings"]
    if not (s["backbone"].startswith("ViT-B-16") and s["adapter"] == "adaptformer"):
        lines.append(f"note: measured with {s['backbone']} + {s['adapter']}, "
                     "not the targets' ViT-B/16 + AdaptFormer")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="liftlearn-tiny-vit")
    parser.add_argument("--pretrained", default=None, help="default: random weights")
    parser.add_argument("--adapter", default="adaptformer")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--source", choices=["sample", "synthetic"], default="sample",
                        help="sample: the embedded CIFAR-10-LT sample (32 px, repeated); "
                             "synthetic: 500x375 JPEGs written to --data-dir")
    parser.add_argument("--data-dir", type=Path, default=HERE / "_data")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader worker counts for the data part")
    parser.add_argument("--fit-workers", type=int, default=None,
                        help="num_workers of the estimator in the fit part (default: its own)")
    parser.add_argument("--decode-images", type=int, default=256,
                        help="images decoded for the decode-only figure")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (step, predict)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network for the step and predict parts")
    parser.add_argument("--fused", action="store_true",
                        help="fused SGD (torch.optim.SGD(fused=True)) in the step part")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s of the GPU (overrides the table)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")
    if args.steps < 1 or args.batch_size < 1 or args.n_images < 1:
        parser.error("--steps, --batch-size and --n-images must be >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from liftlearn.nn.backbones import get_backbone
    from liftlearn._device import resolve_device

    device = resolve_device(args.device)
    backbone = get_backbone(args.backbone, device, pretrained=args.pretrained)
    if args.source == "sample":
        paths = sample_paths(args.n_images)
    else:
        paths = synthetic_jpegs(args.n_images, args.data_dir)
    targets = np.arange(len(paths)) % args.n_classes
    class_names = [f"class {i}" for i in range(args.n_classes)]

    res = {
        "machine": machine(device), "device": str(device), "torch": torch.__version__,
        "python": platform.python_version(), "image_size": backbone.image_size,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    res["settings"]["parts"] = parts
    device_peaks = []
    if "data" in parts:
        res["data"] = profile_data(args, paths, targets, backbone, device)
    if "step" in parts:
        res["step"] = profile_step(args, backbone, class_names, device)
        device_peaks.append(res["step"]["peak_device_mib"])
    if "predict" in parts:
        res["predict"] = profile_predict(args, backbone, class_names, device)
        device_peaks.append(res["predict"]["peak_device_mib"])
    if "fit" in parts:
        res["fit"] = profile_fit(args, paths, targets, class_names, device)
        device_peaks.append(res["fit"]["peak_device_mib"])
    res["peak_host_mib"] = peak_host_mib()
    peaks = [p for p in device_peaks if p is not None]
    res["peak_device_mib"] = max(peaks) if peaks else None
    res["targets"] = judge(res, device)
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main()
