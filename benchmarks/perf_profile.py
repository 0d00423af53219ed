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
import inspect
import json
import os
import platform
import re
import socket
import statistics
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
photo_jpegs = _throughput.photo_jpegs

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

# The issue's targets, for one H100-class GPU, CLIP ViT-B/16 + AdaptFormer.
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


def _autocast_for(device):
    """The training loop's autocast context and scaler, whatever the
    library's helper is called with (it may take a precision)."""
    from liftlearn._device import autocast_for

    try:
        return autocast_for(device)
    except TypeError:
        return autocast_for(device, "auto")


def _cast_frozen(network, device) -> str:
    """On CUDA with a library that has issue 14's ``precision`` parameter,
    keep the frozen parameters in bf16 (trainable ones in fp32), as its
    "auto" precision does; otherwise leave the network as built."""
    from liftlearn import LiftPlusClassifier

    if device.type != "cuda" or "precision" not in LiftPlusClassifier().get_params():
        return "as built"
    from liftlearn._device import resolve_precision  # exists wherever precision does

    if resolve_precision("auto", device) is not torch.bfloat16:
        return "as built (no native bf16)"
    for p in network.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    return "frozen parameters bf16 (benchmark cast, as precision='auto')"


def _make_step(args, backbone, class_names, device):
    """The library's network step (forward, logit-adjusted loss, backward,
    SGD step under the loop's autocast) on random device tensors."""
    from liftlearn.nn.losses import LogitAdjustedLoss

    network = _build(args, backbone, class_names).to(device)
    frozen = _cast_frozen(network, device)
    network.train()
    params = [p for p in network.parameters() if p.requires_grad]
    opt_kwargs = {}
    if args.fused:
        opt_kwargs["fused"] = True
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=5e-4, **opt_kwargs)
    counts = np.arange(len(class_names), 0, -1) * 10  # long-tailed prior
    criterion = LogitAdjustedLoss(counts).to(device)
    autocast, scaler = _autocast_for(device)
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

    kind = getattr(autocast, "fast_dtype", None) if hasattr(autocast, "fast_dtype") else None
    info = {
        "autocast": "bf16" if kind == torch.bfloat16 else ("fp16" if kind == torch.float16
                                                           else "none (fp32)"),
        "frozen": frozen, "params": params, "optimizer": optimizer, "criterion": criterion,
        "autocast_ctx": autocast, "images": images, "targets": targets,
    }
    return step, network, info


def profile_step(args, backbone, class_names, device) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    step, network, info = _make_step(args, backbone, class_names, device)
    params, optimizer, criterion = info["params"], info["optimizer"], info["criterion"]
    autocast, images, targets = info["autocast_ctx"], info["images"], info["targets"]

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
        "autocast": info["autocast"], "frozen_weights": info["frozen"],
        "seconds_per_step": seconds, "images_per_s": args.batch_size / seconds,
        "gflop_per_step": flops / 1e9, "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12 if peak else None,
        "share_of_peak": achieved / peak if peak else None,
        "trainable_params": sum(p.numel() for p in params),
        "peak_device_mib": device_peak_mib(device),
    }


@torch.no_grad()
def profile_predict(args, backbone, class_names, device) -> dict:
    network = _build(args, backbone, class_names).to(device).eval()
    _cast_frozen(network, device)
    model = torch.compile(network) if args.compile else network
    autocast, _ = _autocast_for(device)
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


# ------------------------------------------- issue 14's CPU targets (ratios)
#
# Each check times the library's path (A) against a reference written here
# (B) in interleaved rounds (A B, B A, A B, ...: drift in the machine's load
# falls on both sides alike) and reports the median of each side. They are
# written to run against the library before and after issue 14's changes:
# anything the changed library may do differently is feature-detected.

CPU_TARGETS = {
    "step_over_tower": 1.10,  # AdaptFormer step <= 1.10x the bare tower's fwd+bwd
    "tte_over_plain": 5.3,    # TTE prediction <= 5.3x the plain one, per image
    "data_over_pil": 1.15,    # data pipeline <= 1.15x its PIL-only part, per image
    "text_speedup": 4.0,      # text init >= 4x faster than the full-context one
    "text_second_share": 0.05,  # a second fit's text init <= 5% of the first one's
}
TARGET_PARTS = ("baseline", "tte", "pipeline", "text")

# Prompt templates of the same token count (each differs in one one-token
# word), one per text round: the text-feature cache of the changed library is
# keyed by template, so every round's first call is a cold one.
_ROUND_TEMPLATES = (
    "a photo of a {}.", "a photo of the {}.", "a photo of my {}.", "a photo of one {}.",
    "a photo of this {}.", "a photo of that {}.", "a photo of our {}.", "a photo of your {}.",
)
_WARMUP_TEMPLATE = "a photo of his {}."


# On the CPU the target parts time this process's CPU time (all its threads;
# with one torch thread, the work itself): on a shared machine a busy
# neighbour stretches wall time, not CPU time. On a GPU, wall time.
_CLOCK = {"name": "wall", "fn": time.perf_counter}


def use_cpu_time(on: bool) -> None:
    _CLOCK.update(name="CPU (process time)", fn=time.process_time) if on else _CLOCK.update(
        name="wall", fn=time.perf_counter)


def clock() -> float:
    return _CLOCK["fn"]()


def interleaved(fns: dict, rounds: int, warmup: int = 1) -> dict:
    """Seconds (``clock``) of each callable in ``fns`` over ``rounds``
    interleaved rounds, after ``warmup`` untimed calls of each; the order
    flips every round. Wall seconds go to ``<name>_wall``."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    times.update({f"{name}_wall": [] for name in names})
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            wall, start = time.perf_counter(), clock()
            fns[name]()
            times[name].append(clock() - start)
            times[f"{name}_wall"].append(time.perf_counter() - wall)
    return times


def _median(xs):
    return statistics.median(xs)


class FrozenTower:
    """open_clip's pre-LN ViT image tower written with plain torch ops on the
    same weights: the fastest form of the frozen backbone, for the baseline.

    Per block: LayerNorm, one packed q/k/v ``F.linear``,
    ``F.scaled_dot_product_attention`` on (batch, heads, tokens, head dim),
    the out projection, LayerNorm, MLP. Weights are detached copies in
    ``dtype`` on the tower's device (the library's network is not touched).
    """

    def __init__(self, visual, dtype=torch.float32):
        problems = []
        if getattr(visual, "attn_pool", None) is not None:
            problems.append("attentional pooling")
        if getattr(visual, "final_ln_after_pool", False):
            problems.append("final_ln_after_pool")
        if getattr(visual, "pool_type", "tok") != "tok":
            problems.append(f"pool_type={visual.pool_type!r}")
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            problems.append("not an open_clip VisionTransformer")
        if problems:
            raise ValueError(f"the bare-tower baseline supports CLS-token ViTs only: {problems}")

        def w(t):
            return None if t is None else t.detach().to(dtype).clone()

        self.dtype = dtype
        self.patch = visual.conv1.weight.shape[-1]
        self.conv_w, self.conv_b = w(visual.conv1.weight), w(visual.conv1.bias)
        self.cls = w(visual.class_embedding)
        self.pos = w(visual.positional_embedding)
        self.ln_pre = (w(visual.ln_pre.weight), w(visual.ln_pre.bias), visual.ln_pre.eps)
        self.ln_post = (w(visual.ln_post.weight), w(visual.ln_post.bias), visual.ln_post.eps)
        self.proj = w(visual.proj)
        self.blocks = []
        for blk in visual.transformer.resblocks:
            attn = blk.attn
            # Any module with nn.MultiheadAttention's packed weights will do
            # (the library may wrap or replace open_clip's).
            if getattr(attn, "in_proj_weight", None) is None or not hasattr(attn, "out_proj"):
                raise ValueError(f"unsupported attention module {type(attn).__name__}")
            if hasattr(blk, "ln_attn") and not isinstance(blk.ln_attn, nn.Identity):
                raise ValueError("blocks with an inner attention LayerNorm are not supported")
            self.blocks.append({
                "heads": attn.num_heads,
                "ln_1": (w(blk.ln_1.weight), w(blk.ln_1.bias), blk.ln_1.eps),
                "qkv": (w(attn.in_proj_weight), w(attn.in_proj_bias)),
                "out": (w(attn.out_proj.weight), w(attn.out_proj.bias)),
                "ls_1": w(getattr(blk.ls_1, "gamma", None)),
                "ln_2": (w(blk.ln_2.weight), w(blk.ln_2.bias), blk.ln_2.eps),
                "fc": (w(blk.mlp.c_fc.weight), w(blk.mlp.c_fc.bias)),
                "act": blk.mlp.gelu,  # nn.GELU or open_clip's QuickGELU: no weights
                "proj": (w(blk.mlp.c_proj.weight), w(blk.mlp.c_proj.bias)),
                "ls_2": w(getattr(blk.ls_2, "gamma", None)),
            })

    def embed(self, images):
        import torch.nn.functional as F

        x = F.conv2d(images.to(self.dtype), self.conv_w, self.conv_b, stride=self.patch)
        x = x.flatten(2).transpose(1, 2)
        cls = self.cls.view(1, 1, -1).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.pos

    def blocks_forward(self, x):
        import torch.nn.functional as F

        n, length, width = x.shape
        for b in self.blocks:
            h = F.layer_norm(x, (width,), *b["ln_1"])
            heads = b["heads"]
            qkv = F.linear(h, *b["qkv"]).view(n, length, 3, heads, width // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v)
            a = F.linear(a.transpose(1, 2).reshape(n, length, width), *b["out"])
            x = x + (a * b["ls_1"] if b["ls_1"] is not None else a)
            h = F.layer_norm(x, (width,), *b["ln_2"])
            m = F.linear(b["act"](F.linear(h, *b["fc"])), *b["proj"])
            x = x + (m * b["ls_2"] if b["ls_2"] is not None else m)
        return x

    def features(self, tokens):
        """The pre-projection CLS feature from embedded tokens (what the
        library's head classifies)."""
        import torch.nn.functional as F

        width = tokens.shape[-1]
        x = F.layer_norm(tokens, (width,), *self.ln_pre)
        x = self.blocks_forward(x)
        return F.layer_norm(x[:, 0], (width,), *self.ln_post)

    def forward_backward(self, images):
        """Forward through every block and backward to the embedded tokens
        (the input requiring grad), as a training step of a frozen backbone
        with trainable parts in every block needs at most."""
        with torch.no_grad():
            tokens = self.embed(images)
        tokens.requires_grad_(True)
        feats = self.features(tokens)
        # A fixed random output gradient (a plain sum would back-propagate
        # zeros: the features leave a LayerNorm).
        if getattr(self, "_grad_out", None) is None or self._grad_out.shape != feats.shape:
            g = torch.Generator(device="cpu").manual_seed(5)
            self._grad_out = torch.randn(feats.shape, generator=g).to(feats.device, feats.dtype)
        feats.backward(self._grad_out)
        return tokens.grad


def check_tower(tower: FrozenTower, visual, size: int, device) -> float:
    """Assert the baseline computes open_clip's image features (fp32, two
    images, to 1e-5); returns the largest absolute difference."""
    g = torch.Generator(device="cpu").manual_seed(3)
    images = torch.randn(2, 3, size, size, generator=g).to(device)
    import copy

    # In fp32 on both sides: a visual whose frozen weights were cast (bf16 on
    # a GPU) is compared through an fp32 copy of those same weights.
    if any(p.dtype != torch.float32 for p in visual.parameters()):
        visual = copy.deepcopy(visual).float()
    ref_tower = tower if tower.dtype == torch.float32 else FrozenTower(visual, torch.float32)
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    was_training = visual.training
    try:
        visual.eval()
        with torch.no_grad():
            ref = visual(images).float()
            ours = ref_tower.features(ref_tower.embed(images))
            ours = (ours @ ref_tower.proj if ref_tower.proj is not None else ours).float()
    finally:
        visual.train(was_training)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    diff = float((ours - ref).abs().max())
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5,
                               msg=lambda m: f"the bare-tower baseline differs from open_clip: {m}")
    return diff


def _network_dtype_note(clf) -> str:
    return "precision parameter: " + (
        repr(clf.get_params()["precision"]) if "precision" in clf.get_params() else "absent")


def target_baseline(args, backbone, class_names, device) -> dict:
    """The library's AdaptFormer training step against the bare frozen tower's
    forward + backward, same batch, dtype, threads and weights."""
    from liftlearn import LiftPlusClassifier

    step, network, info = _make_step(args, backbone, class_names, device)
    dtype = torch.bfloat16 if info["autocast"] == "bf16" else (
        torch.float16 if info["autocast"] == "fp16" else torch.float32)
    tower = FrozenTower(backbone.visual, dtype)
    diff = check_tower(tower, backbone.visual, backbone.image_size, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randn(args.batch_size, 3, backbone.image_size, backbone.image_size,
                         generator=g).to(device)

    def baseline():
        tower.forward_backward(images)
        sync(device)

    def library():
        step()
        sync(device)

    times = interleaved({"library": library, "baseline": baseline}, args.rounds, args.warmup)
    lib, base = _median(times["library"]), _median(times["baseline"])
    clf = LiftPlusClassifier(backbone=args.backbone, adapter=args.adapter)
    return {
        "batch_size": args.batch_size, "dtype": str(dtype).replace("torch.", ""),
        "library_step_seconds": lib, "baseline_seconds": base, "ratio": lib / base,
        "times": times, "tower_max_abs_diff": diff, "note": _network_dtype_note(clf),
    }


def _names_with_longest(n: int, tokenizer, template: str) -> list:
    """``n`` (<= 1,000) ImageNet class names spread over the 1,000, with the
    one of the longest prompt among them: the truncated length is then that
    of all 1,000, so the speed-up per name is the one of the full list."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(IMAGENET_CLASSNAMES)
    lengths = (tokenizer([template.format(c) for c in names]) != 0).sum(dim=1)
    longest = int(lengths.argmax())
    picks = sorted(set(np.linspace(0, len(names) - 1, n).round().astype(int).tolist()))
    if longest not in picks:
        picks[int(np.abs(np.array(picks) - longest).argmin())] = longest
    return [names[i] for i in sorted(set(picks))]


def target_text(args, backbone, device) -> dict:
    """The library's text initialisation (whatever ``_build_network`` does)
    against the full-context one (open_clip's ``encode_text`` on the 77-token
    prompts), and a second call with the same names and template."""
    import torch.nn.functional as F
    from sklearn.base import clone

    from liftlearn import LiftPlusClassifier
    from liftlearn.nn.backbones import _open_clip

    tokenizer = _open_clip().get_tokenizer(backbone.spec.name)
    names = _names_with_longest(args.n_names, tokenizer, _ROUND_TEMPLATES[0])
    model = backbone.model
    chunk = 1000  # the library's chunk (iNaturalist's 8,142 names)

    @torch.no_grad()
    def full_context(template, names=names):
        prompts = [template.format(str(c).replace("_", " ")) for c in names]
        out = []
        for start in range(0, len(prompts), chunk):
            tokens = tokenizer(prompts[start : start + chunk]).to(device)
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out)

    def library(template, names=names):
        clf = LiftPlusClassifier(backbone=args.backbone, pretrained=args.pretrained,
                                 adapter=args.adapter, prompt_template=template, random_state=0)
        network = clone(clf)._build_network(backbone, list(names), seed=0)
        weight = getattr(getattr(network, "head", None), "weight", None)
        return None if weight is None else weight.detach()

    # Warm-up (tokenizer, allocator) on other names and another template.
    few = names[:8]
    full_context(_WARMUP_TEMPLATE, few)
    library(_WARMUP_TEMPLATE, few)
    rounds = args.text_rounds or args.rounds
    if rounds > len(_ROUND_TEMPLATES):
        raise ValueError(f"--text-rounds: at most {len(_ROUND_TEMPLATES)}")
    times = {"full_context": [], "library_first": [], "library_second": []}
    diff = 0.0
    for r in range(rounds):
        template = _ROUND_TEMPLATES[r]
        results = {}

        def timed(key, fn):
            start = clock()
            results[key] = fn(template)
            times[key].append(clock() - start)

        order = ["full_context", "library_first", "library_second"]
        if r % 2:
            order = ["library_first", "library_second", "full_context"]
        for key in order:
            timed(key, full_context if key == "full_context" else library)
        rows = backbone.text_to_visual(results["full_context"])
        for key in ("library_first", "library_second"):
            if results[key] is None:  # a head without rows: nothing to compare
                diff = float("nan")
            elif diff == diff:
                diff = max(diff, float((results[key].float().cpu() - rows).abs().max()))
    if diff > 1e-4:
        raise AssertionError(f"the library's text classifier differs from the full-context one by {diff:.3g}")
    lengths = (tokenizer([_ROUND_TEMPLATES[0].format(c) for c in names]) != 0).sum(dim=1)
    full, first, second = (_median(times[k]) for k in ("full_context", "library_first", "library_second"))
    return {
        "n_names": len(names), "rounds": rounds, "longest_prompt_tokens": int(lengths.max()),
        "context_length": int(tokenizer([""]).shape[1]),
        "full_context_seconds": full, "library_first_seconds": first,
        "library_second_seconds": second, "speedup": full / first,
        "second_share": second / first, "times": times, "max_abs_diff": diff,
    }


def target_tte(args, backbone, class_names, device, paths, targets) -> dict:
    """Prediction with TTE against without, per image, from the same files
    through the public ``decision_function`` (data included: the TTE views
    are made, batched and run exactly as a user's call does)."""
    from liftlearn import LiftPlusClassifier

    n = args.tte_images or args.batch_size
    clf = LiftPlusClassifier(
        backbone=args.backbone, pretrained=args.pretrained, adapter=args.adapter, epochs=1,
        batch_size=args.batch_size, device=str(device), num_workers=args.tte_workers,
        random_state=0, class_names=class_names,
    )
    clf.fit(paths[: args.batch_size], targets[: args.batch_size])
    files = (list(paths) * (-(-n // len(paths))))[:n]

    def predict(tte):
        def run():
            clf.set_params(tte=tte)
            clf.decision_function(files)
            sync(device)
        return run

    times = interleaved({"tte": predict(True), "plain": predict(False)}, args.rounds, args.warmup)
    tte, plain = _median(times["tte"]), _median(times["plain"])
    return {
        "images": n, "batch_size": args.batch_size, "num_workers": args.tte_workers,
        "tte_seconds_per_image": tte / n, "plain_seconds_per_image": plain / n,
        "ratio": tte / plain, "times": times, "note": _network_dtype_note(clf),
    }


def _library_normalises_on_device() -> bool:
    """Whether the library's loaders ship uint8 and normalise on the device
    (its transforms then take mean and std as optional)."""
    try:
        from liftlearn.engine import DeviceImages  # noqa: F401
    except ImportError:
        return False
    return True


def _device_normaliser(backbone, device):
    """``batch -> model-ready tensor`` for what the library's loader yields:
    float32 batches are ready; uint8 batches (the changed library ships
    uint8 CHW and normalises on the device) go through the library's own
    function where one is found, else through the same arithmetic here."""
    try:
        # The library's own: where batches reach the device in training and prediction.
        from liftlearn.engine import DeviceImages

        return DeviceImages(backbone, device), "liftlearn.engine.DeviceImages"
    except ImportError:
        pass
    import liftlearn.transforms as T

    for name in ("normalize_batch", "normalize_on_device", "to_model_input", "device_normalize"):
        fn = getattr(T, name, None)
        if callable(fn):
            params = inspect.signature(fn).parameters
            if {"mean", "std"} <= set(params):
                return (lambda b: fn(b, mean=backbone.mean, std=backbone.std)), f"liftlearn.transforms.{name}"
            return fn, f"liftlearn.transforms.{name}"
    mean = torch.tensor(backbone.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(backbone.std, device=device).view(1, -1, 1, 1)

    def fallback(batch):
        return batch.float().div_(255).sub_(mean).div_(std)

    return fallback, "benchmark's (x / 255 - mean) / std"


def target_pipeline(args, backbone, device, paths, targets) -> dict:
    """Per-image cost of the data pipeline (loader over the library's
    datasets and transforms, batches, to the device, normalised) against its
    PIL-only part (decode + crop + resize), train and TTE paths."""
    from torch.utils.data import DataLoader
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from liftlearn.data import ImageDataset, TrainDataset, load_image
    from liftlearn.transforms import MinimalistCrop, train_transform, tte_transform

    def plain_loader(dataset):
        return DataLoader(dataset, batch_size=args.batch_size, num_workers=0)

    loader, loader_name = plain_loader, "torch DataLoader (0 workers)"
    try:
        # The library's loader (its collation and pinning policy), where it
        # still has this form.
        from liftlearn.engine._loading import make_loader

        make_loader([torch.zeros(1)], args.batch_size, device, num_workers=0)
        loader = lambda dataset: make_loader(dataset, args.batch_size, device,  # noqa: E731
                                             num_workers=0)
        loader_name = "liftlearn.engine._loading.make_loader (0 workers)"
    except (ImportError, TypeError):
        pass

    size, mean, std, expand, min_scale = backbone.image_size, backbone.mean, backbone.std, 24, 0.08
    files = paths[: args.pipeline_images]
    crop = MinimalistCrop(size, min_scale)
    if _library_normalises_on_device():
        # What the estimators build: uint8 pixels, normalised on the device.
        mean = std = None
    train_set = TrainDataset(files, targets[: len(files)], train_transform(size, min_scale, mean, std),
                             seed=0, epoch=0)
    tte_set = ImageDataset(files, tte_transform(size, mean, std, expand=expand))
    normalise, normaliser = _device_normaliser(backbone, device)
    seen = {}

    def model_ready(batch, key):
        batch = batch.to(device, non_blocking=True)
        seen[key] = str(batch.dtype).replace("torch.", "")
        if batch.dtype == torch.uint8:
            batch = normalise(batch)
        sync(device)
        return batch

    def pil_train():
        for i, p in enumerate(files):
            crop(load_image(p), np.random.default_rng([0, 0, i]))

    def full_train():
        for images, _ in loader(train_set):
            model_ready(images, "train")

    def pil_tte():
        for p in files:
            img = TF.resize(load_image(p), [size + expand], interpolation=InterpolationMode.BICUBIC,
                            antialias=True)
            TF.five_crop(img, [size])

    library_tte = _library_tte_inputs(backbone, device, files, args.batch_size, expand)

    def full_tte():
        if library_tte is not None:
            # The library's own prediction data path (prediction_data +
            # input_batches: what predict_logits feeds the network).
            for _, _, inputs in library_tte():
                for _ in inputs:
                    sync(device)
            # prediction_data's loader ships the resized images as uint8
            # (tests/test_transforms.py::test_tte_halves_make_the_whole_transform).
            seen["tte"] = "uint8"
            return
        # Before input_batches: the views of a batch reach the device once and
        # become network input in forward batches of at most batch_size views.
        for views in loader(tte_set):
            for chunk in views.flatten(0, 1).split(args.batch_size):
                model_ready(chunk, "tte")

    rounds = max(args.rounds, args.pipeline_rounds)
    times = interleaved({"train_full": full_train, "train_pil": pil_train,
                         "tte_full": full_tte, "tte_pil": pil_tte}, rounds, 1)
    n = len(files)
    med = {k: _median(v) / n for k, v in times.items()}
    return {
        "images": n, "image_size_px": _image_size(files[0]), "rounds": rounds,
        "jpegs": args.pipeline_jpegs,
        "mean_file_kb": float(np.mean([os.path.getsize(f) for f in files])) / 1024,
        "loader": loader_name, "loader_dtype": seen, "device_normaliser": normaliser,
        "tte_path": ("liftlearn.engine.predict: prediction_data + input_batches (resized images "
                     "packed, five views cut on the device)") if library_tte is not None
        else "tte_transform views, flattened and split",
        "train_full_s_per_image": med["train_full"], "train_pil_s_per_image": med["train_pil"],
        "train_ratio": med["train_full"] / med["train_pil"],
        "tte_full_s_per_image": med["tte_full"], "tte_pil_s_per_image": med["tte_pil"],
        "tte_ratio": med["tte_full"] / med["tte_pil"], "times": times,
        # The spread of the paired per-round ratios, to judge the noise by.
        "round_ratio_quartiles": {
            k: [float(np.percentile(np.divide(times[f"{k}_full"], times[f"{k}_pil"]), q))
                for q in (25, 50, 75)] for k in ("train", "tte")},
    }


def _library_tte_inputs(backbone, device, files, batch_size, expand):
    """``() -> iterator of (n_images, n_views, inputs)``: the library's TTE
    prediction data path for ``files``, or None where it has no
    ``prediction_data``/``input_batches`` (before issue 14's last change)."""
    try:
        from liftlearn.engine import DeviceImages
        from liftlearn.engine.predict import input_batches, prediction_data
    except ImportError:
        return None
    dataset, views = prediction_data(backbone, files, tte=True, tte_expand=expand)
    def run():
        try:
            # As predict_logits: its buffers live as long as one prediction.
            images = DeviceImages(backbone, device, reuse_buffers=True)
        except TypeError:
            images = DeviceImages(backbone, device)
        return input_batches(dataset, images, batch_size, num_workers=0, views=views)

    return run


def _image_size(path) -> str:
    from PIL import Image

    with Image.open(path) as img:
        return f"{img.width}x{img.height}"


def judge_cpu_targets(res: dict, device: torch.device) -> list:
    """PASS/FAIL lines of issue 14's CPU targets, with the ratios."""
    checks = []
    b, t, p, x = (res.get(k) for k in TARGET_PARTS)
    if b:
        checks.append(("AdaptFormer training step / bare tower fwd+bwd", b["ratio"], "<=",
                       CPU_TARGETS["step_over_tower"]))
    if t:
        checks.append(("TTE prediction / no-TTE prediction, per image", t["ratio"], "<=",
                       CPU_TARGETS["tte_over_plain"]))
    if p:
        checks.append(("train data pipeline, full / PIL-only, per image", p["train_ratio"], "<=",
                       CPU_TARGETS["data_over_pil"]))
        checks.append(("TTE data pipeline, full / PIL-only, per image", p["tte_ratio"], "<=",
                       CPU_TARGETS["data_over_pil"]))
    if x:
        checks.append((f"text init speed-up over full context ({x['n_names']} names)", x["speedup"],
                       ">=", CPU_TARGETS["text_speedup"]))
        checks.append(("second fit's text init / first fit's", x["second_share"], "<=",
                       CPU_TARGETS["text_second_share"]))
    lines = []
    for name, value, op, target in checks:
        ok = value <= target if op == "<=" else value >= target
        verdict = "PASS" if ok else "FAIL"
        if device.type != "cpu":
            verdict = "n/a (CPU target, run on " + device.type + ")"
        lines.append((verdict, name, value, f"{op} {target:g}x"))
    return lines


def cpu_targets_report(res: dict) -> list:
    out = ["", "## Issue 14's CPU targets (medians of interleaved rounds)", "",
           f"A is the library's path, B the reference; times are {res['clock']} seconds.", ""]
    rows = []
    b, t, p, x = (res.get(k) for k in TARGET_PARTS)
    if b:
        rows.append(["AdaptFormer step vs bare tower fwd+bwd (s/batch)", b["library_step_seconds"],
                     b["baseline_seconds"]])
    if t:
        rows.append(["TTE vs no-TTE prediction (ms/image)", 1e3 * t["tte_seconds_per_image"],
                     1e3 * t["plain_seconds_per_image"]])
    if p:
        rows.append(["train data: full vs PIL-only (ms/image)", 1e3 * p["train_full_s_per_image"],
                     1e3 * p["train_pil_s_per_image"]])
        rows.append(["TTE data: full vs PIL-only (ms/image)", 1e3 * p["tte_full_s_per_image"],
                     1e3 * p["tte_pil_s_per_image"]])
    if x:
        rows.append([f"text init, {x['n_names']} names: full context vs library (s)",
                     x["full_context_seconds"], x["library_first_seconds"]])
        rows.append(["text init, second fit vs first fit (s)", x["library_second_seconds"],
                     x["library_first_seconds"]])
    verdicts = res["cpu_targets"]
    out.append(table(["check", "A", "B", "A/B", "target", "verdict"],
                     [r + [f"{v[2]:.3g}x", v[3], v[0]] for r, v in zip(rows, verdicts)]))
    notes = []
    if b:
        notes.append(f"baseline: {b['dtype']}, batch {b['batch_size']}; bare tower = open_clip's "
                     f"features to {b['tower_max_abs_diff']:.2g} (asserted <= 1e-5); {b['note']}")
    if t:
        notes.append(f"TTE: decision_function on {t['images']} files, batch {t['batch_size']}, "
                     f"num_workers={t['num_workers']}")
    if p:
        notes.append(f"data: {p['images']} {p['image_size_px']} {p.get('jpegs', 'synthetic')} "
                     f"JPEGs (mean {p.get('mean_file_kb', float('nan')):.0f} KB), {p['rounds']} rounds, "
                     f"{p['loader']}, loader yields {p['loader_dtype']}, device normaliser "
                     f"(for uint8 only): {p['device_normaliser']}; TTE path: "
                     f"{p.get('tte_path', 'tte_transform views')}; per-round ratios, "
                     "quartiles: " + ", ".join(
                         f"{k} " + "/".join(f"{v:.3f}" for v in q)
                         for k, q in p.get("round_ratio_quartiles", {}).items()))
    if x:
        notes.append(f"text: longest prompt {x['longest_prompt_tokens']} of "
                     f"{x['context_length']} tokens, {x['rounds']} rounds (one template each), "
                     f"library = full context to {x['max_abs_diff']:.2g}")
    notes += [f"part '{k}' failed, no figure: {v}" for k, v in res.get("errors", {}).items()]
    out += [""] + [f"- {n}" for n in notes]
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
        f"compile={s['compile']}; fused SGD={s['fused']}; rounds {s['rounds']}",
        f"- load average (1, 5, 15 min): {res['load_average_start']} at the start, "
        f"{res['load_average_end']} at the end; run {res['wall_seconds']:.0f} s "
        f"({res['started_utc']})",
        f"- library: {res['library']}",
        f"- command: `{res['command']}`",
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
    if any(k in res for k in TARGET_PARTS) or res.get("errors"):
        out += cpu_targets_report(res)
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


def _library_description() -> str:
    """Which liftlearn ran (path, commit where known, feature-detected traits)."""
    import subprocess

    import liftlearn
    from liftlearn import LiftPlusClassifier

    root = Path(liftlearn.__file__).resolve().parents[1]

    def git(*argv):
        try:
            return subprocess.run(["git", "-C", str(root), *argv], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if commit:
        # Local edits of the benchmarks do not make the library a different one.
        edited = git("status", "--porcelain", "--", "liftlearn")
        commit += " + uncommitted changes in liftlearn/" if edited else ", liftlearn/ as committed"
    params = LiftPlusClassifier().get_params()
    traits = "precision parameter" if "precision" in params else "no precision parameter"
    return f"{root} ({commit or 'commit unknown'}; {traits})"


def _write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, never replacing a file: the
    text goes to a temporary file in the same folder, which is then linked
    to ``path`` (an error if ``path`` exists). Where the file system has no
    hard links, the file is created exclusively instead (never replacing
    one, though a reader could then see it half written)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            with open(path, "x") as f:
                f.write(text)
    finally:
        os.unlink(tmp)


def write_results(folder: Path, prefix: str, res: dict, markdown: str,
                  extra: dict | None = None) -> tuple:
    """``<prefix>-<UTC time>-<host>-<pid>[-n].json`` and ``.md`` in
    ``folder``, and ``<same name>.<key>`` for each ``key: text`` of
    ``extra`` (logs): new names for every run, written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    base = f"{prefix}-{stamp}-{host}-{os.getpid()}"
    extra = extra or {}
    for n in range(1000):
        name = base if n == 0 else f"{base}-{n}"
        json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
        others = {folder / f"{name}.{key}": text for key, text in extra.items()}
        if any(p.exists() for p in (json_path, md_path, *others)):
            continue
        try:
            # The JSON claims the name; the rest follow it.
            _write_new(json_path, json.dumps(res, indent=2, default=str) + "\n")
        except FileExistsError:
            continue
        _write_new(md_path, markdown + "\n")
        for path, text in others.items():
            _write_new(path, text)
        return json_path, md_path
    raise FileExistsError(f"no free result name for {base} in {folder}")


def tests_outcome(status: str, log: str) -> dict:
    """The test suite's outcome from gpu_suite.sh's ``tests.status`` line
    (``rc=<exit status or skipped> seconds=<s> limit=<s>``) and pytest's log."""
    fields = dict(part.split("=", 1) for part in status.split() if "=" in part)
    rc = fields.get("rc", "?")
    lines = [line.strip("= ") for line in log.splitlines() if line.strip()]
    # pytest's last line: "3 passed, 1 skipped in 2.0s" (or an error).
    summary = next((line for line in reversed(lines)
                    if re.search(r"\b(passed|failed|errors?|skipped|no tests ran)\b", line)),
                   lines[-1] if lines else "no output")
    if rc == "skipped":
        verdict = "not run"
    elif rc == "none-passed":
        verdict = "FAILED (none passed: all skipped on a GPU machine?)"
    elif rc == "0":
        verdict = "passed"
    elif rc == "5":
        verdict = "none collected"
    elif rc in ("124", "137"):
        verdict = f"ran out of its {fields.get('limit', '?')} s"
    else:
        verdict = f"FAILED (pytest exit {rc})"
    return {"rc": rc, "verdict": verdict, "summary": summary,
            "seconds": fields.get("seconds"), "limit_s": fields.get("limit")}


def suite_summary(runs: dict, dry_run: bool, tests: dict | None = None) -> tuple:
    """benchmarks/gpu_suite.sh's result: the runs' JSON (``{name: result or
    None}``, None where a run failed or timed out) and a markdown report with
    the GPU targets' table first, then every run's own report; ``tests``
    (``{"cuda" or "other": tests_outcome(...)}``) where the test suite ran
    after them, the tests marked cuda first."""
    eager, compiled = runs.get("eager") or {}, runs.get("compile") or {}
    any_run = eager or runs.get("fit") or compiled
    device = any_run.get("device", "n/a")
    on_gpu = device.startswith("cuda")
    step, cstep = eager.get("step") or {}, compiled.get("step") or {}
    fit = next((r["fit"] for r in runs.values() if r and "fit" in r), {})
    pred = eager.get("predict") or {}
    data, base = eager.get("data") or {}, eager.get("baseline") or {}

    def verdict(value, target):
        if value is None:
            return "n/a (not measured)"
        if not on_gpu:
            return "not judged (no GPU: dry run)"
        return "PASS" if value >= target else "FAIL"

    def pct(v):
        return None if v is None else f"{100 * v:.1f}%"

    best_loader = max((r["images_per_s"] for r in data.get("loaders", [])), default=None)
    tte_tensor = next((r["views_per_s"] for r in pred.get("rows", []) if r["tte"]), None)
    rows = [
        ["model step, eager: share of peak bf16 FLOP/s", pct(step.get("share_of_peak")),
         ">= 40%", verdict(step.get("share_of_peak"), TARGETS["step_share_of_peak"])],
        ["model step, torch.compile: share of peak bf16 FLOP/s", pct(cstep.get("share_of_peak")),
         ">= 40%", verdict(cstep.get("share_of_peak"), TARGETS["step_share_of_peak"])],
        ["whole fit from JPEG files, images/s", fit.get("fit_images_per_s"), ">= 3,000",
         verdict(fit.get("fit_images_per_s"), TARGETS["fit_images_per_s"])],
        ["TTE prediction from files, views/s", fit.get("tte_views_per_s"), ">= 5,000",
         verdict(fit.get("tte_views_per_s"), TARGETS["tte_views_per_s"])],
        ["model step eager / compiled, images/s",
         f"{fmt(step.get('images_per_s'))} / {fmt(cstep.get('images_per_s'))}", "-", "-"],
        ["TTE prediction on device tensors, views/s", tte_tensor, "-", "-"],
        ["data pipeline alone, best worker count, images/s", best_loader, "-", "-"],
        ["library step / bare tower fwd+bwd (same dtype)", base.get("ratio"), "-", "-"],
    ]
    head = [
        "# GPU suite (benchmarks/gpu_suite.sh)" + (" -- DRY RUN on the CPU, tiny sizes" if dry_run
                                                    else ""),
        "",
        f"- machine: {any_run.get('machine', 'n/a')}; torch {any_run.get('torch', 'n/a')}",
        f"- library: {any_run.get('library', 'n/a')}",
        f"- started: {any_run.get('started_utc', 'n/a')}",
        "- runs: " + ", ".join(f"{k}: {'ok' if v else 'NOT FINISHED (failed, timed out or skipped)'}"
                               for k, v in runs.items()),
    ]
    for phase, outcome in (tests or {}).items():
        which = "marked cuda" if phase == "cuda" else "the others"
        head.append(f"- tests {which} (pytest, on this machine): {outcome['verdict']}: "
                    f"{outcome['summary']} ({outcome['seconds']} s of at most "
                    f"{outcome['limit_s']} s)")
    head += [
        "",
        table(["check", "value", "target (H100-class)", "verdict"], rows),
    ]
    text = "\n".join(head)
    for name, res in runs.items():
        if res:
            body = report(res).replace("\n# ", "\n### ").replace("\n## ", "\n#### ")
            text += f"\n\n## Run '{name}'\n\n" + body.replace("# LIFT+ profile", "### LIFT+ profile", 1)
    summary = {"dry_run": dry_run, "device": device, "table": rows, "runs": runs, "tests": tests}
    return summary, text


def main(argv=None):
    started = time.perf_counter()
    started_utc = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_start = os.getloadavg()
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
                        help=f"comma-separated subset of {','.join(PARTS + TARGET_PARTS)}; "
                             f"'targets' = {','.join(TARGET_PARTS)} (issue 14's CPU targets)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved A/B rounds of the target parts (medians)")
    parser.add_argument("--n-names", type=int, default=1000,
                        help="class names (of ImageNet's 1,000) for the text part")
    parser.add_argument("--text-rounds", type=int, default=None,
                        help=f"rounds of the text part (default --rounds; at most "
                             f"{len(_ROUND_TEMPLATES)})")
    parser.add_argument("--tte-images", type=int, default=None,
                        help="files predicted per round in the tte part (default --batch-size)")
    parser.add_argument("--tte-workers", type=int, default=0,
                        help="num_workers of the estimator in the tte part")
    parser.add_argument("--pipeline-jpegs", choices=["synthetic", "photos"], default="synthetic",
                        help="JPEGs of the pipeline part: synthetic colour fields (the judged "
                             "default) or crops of scikit-learn's two sample photographs")
    parser.add_argument("--pipeline-images", type=int, default=64,
                        help="500x375 JPEGs per round in the pipeline part")
    parser.add_argument("--pipeline-rounds", type=int, default=21,
                        help="rounds of the pipeline part (at least --rounds); its ratios "
                             "are a few tenths of a millisecond on ~3 ms, so on a shared "
                             "machine one round's ratio swings by +-10%%: the median needs "
                             "many")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the network for the step and predict parts")
    parser.add_argument("--fused", action="store_true",
                        help="fused SGD (torch.optim.SGD(fused=True)) in the step part")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s of the GPU (overrides the table)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="also write <tag>-<UTC time>-<host>-<pid>.json and .md here "
                             "(new names every run; e.g. benchmarks/results)")
    parser.add_argument("--tag", default="perf_profile", help="name prefix for --results-dir")
    args = parser.parse_args(argv)

    parts = []
    for p in (p.strip() for p in args.parts.split(",")):
        parts += list(TARGET_PARTS) if p == "targets" else ([p] if p else [])
    unknown = sorted(set(parts) - set(PARTS + TARGET_PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS + TARGET_PARTS)}")
    for name in ("steps", "batch_size", "n_images", "rounds", "pipeline_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 1 <= args.n_names <= 1000:
        parser.error("--n-names must be in 1..1000 (ImageNet's class names)")
    if args.text_rounds is not None and not 1 <= args.text_rounds <= len(_ROUND_TEMPLATES):
        parser.error(f"--text-rounds must be in 1..{len(_ROUND_TEMPLATES)}")
    if "text" in parts and args.text_rounds is None and args.rounds > len(_ROUND_TEMPLATES):
        parser.error(f"the text part runs at most {len(_ROUND_TEMPLATES)} rounds: "
                     "pass --text-rounds")

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
        paths = synthetic_jpegs(args.n_images, args.data_dir, jobs=os.cpu_count() or 1)
    targets = np.arange(len(paths)) % args.n_classes
    class_names = [f"class {i}" for i in range(args.n_classes)]

    res = {
        "machine": machine(device), "device": str(device), "torch": torch.__version__,
        "python": platform.python_version(), "image_size": backbone.image_size,
        "started_utc": started_utc, "load_average_start": [round(x, 2) for x in load_start],
        "library": _library_description(),
        "command": " ".join(["python", "benchmarks/perf_profile.py",
                             *(argv if argv is not None else __import__("sys").argv[1:])]),
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
    use_cpu_time(device.type == "cpu")
    res["clock"] = _CLOCK["name"]
    jpegs = []
    if "pipeline" in parts:
        jpegs = (photo_jpegs(args.pipeline_images, args.data_dir) if args.pipeline_jpegs == "photos"
                 else synthetic_jpegs(args.pipeline_images, args.data_dir, jobs=os.cpu_count() or 1))
    target_runs = {
        "baseline": lambda: target_baseline(args, backbone, class_names, device),
        "tte": lambda: target_tte(args, backbone, class_names, device, paths, targets),
        "pipeline": lambda: target_pipeline(args, backbone, device, jpegs,
                                            np.arange(len(jpegs)) % args.n_classes),
        "text": lambda: target_text(args, backbone, device),
    }
    res["errors"] = {}
    for part in TARGET_PARTS:
        if part in parts:
            try:
                res[part] = target_runs[part]()
            except AssertionError:
                raise  # a reference that disagrees with the library: never a figure
            except Exception as exc:  # noqa: BLE001 - reported, the other parts still run
                import traceback

                res["errors"][part] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
    res["peak_host_mib"] = peak_host_mib()
    peaks = [p for p in device_peaks if p is not None]
    res["peak_device_mib"] = max(peaks) if peaks else None
    res["targets"] = judge(res, device)
    res["cpu_targets"] = judge_cpu_targets(res, device)
    res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["wall_seconds"] = time.perf_counter() - started
    text = report(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    if args.results_dir:
        json_path, md_path = write_results(args.results_dir, args.tag, res, text)
        print(f"\nwrote {json_path} and {md_path}")
    if res.get("errors"):
        raise SystemExit(f"parts that failed: {res['errors']}")
    return res


if __name__ == "__main__":
    main()
