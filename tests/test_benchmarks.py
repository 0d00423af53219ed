"""The benchmark scripts run end to end and print every section of their reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "benchmarks" / "perf_profile.py"


def _run(tmp_path, *extra):
    out = tmp_path / "profile.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, str(PROFILE), "--backbone", "liftlearn-tiny-vit", "--source", "sample",
        "--device", "cpu", "--n-images", "32", "--batch-size", "8", "--workers", "0", "1",
        "--decode-images", "16", "--steps", "1", "--warmup", "1", "--threads", "1",
        "--json", str(out), *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_profile_reports_every_part(tmp_path):
    text, res = _run(tmp_path)
    for heading in (
        "# LIFT+ profile: liftlearn-tiny-vit (adaptformer, pretrained=None)",
        "- machine: ",
        "torch " + __import__("torch").__version__,
        "## Data pipeline (decode + minimalist crop)",
        "decode only (load_image",
        "## Model step (forward + loss + backward + SGD, device tensors)",
        "## Prediction (network forward only, device tensors)",
        "## End to end from image files (LiftPlusClassifier)",
        "## Memory",
        "peak host RSS: ",
        "## Targets (one H100-class GPU, CLIP ViT-B/16 + AdaptFormer)",
        "not judged: the targets are for a GPU",
    ):
        assert heading in text, heading
    assert res["device"] == "cpu"
    assert [r["workers"] for r in res["data"]["loaders"]] == [0, 1]
    assert all(r["images"] == 32 and r["images_per_s"] > 0 for r in res["data"]["loaders"])
    assert res["data"]["decode_images_per_s"] > 0
    step = res["step"]
    assert step["gflop_per_step"] > 0 and step["images_per_s"] > 0
    assert step["share_of_peak"] is None  # CPU: FLOP/s only
    assert [r["views_per_image"] for r in res["predict"]["rows"]] == [1, 5]
    fit = res["fit"]
    assert fit["images"] == 32 and fit["fit_images_per_s"] > 0
    assert fit["tte_views_per_s"] > 0 and fit["plain_views_per_s"] > 0
    assert res["peak_host_mib"] > 0 and res["peak_device_mib"] is None


def test_profile_runs_a_subset(tmp_path):
    text, res = _run(tmp_path, "--parts", "step", "--fused")
    assert "## Model step" in text
    assert "## Data pipeline" not in text and "## End to end" not in text
    assert "data" not in res and "fit" not in res and "predict" not in res
    assert res["step"]["fused_sgd"] is True


def test_peak_table_and_targets():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_liftlearn_profile", PROFILE)
    profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile)
    assert profile.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert profile.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert profile.peak_bf16_flops("NVIDIA H200") == 989.4e12
    assert profile.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert profile.peak_bf16_flops("NVIDIA L40S") == 362e12
    assert profile.peak_bf16_flops("NVIDIA GeForce RTX 4090") == 165e12
    assert profile.peak_bf16_flops("Tesla T4") is None

    import torch

    res = {
        "settings": {"backbone": "ViT-B-16-quickgelu", "adapter": "adaptformer"},
        "step": {"share_of_peak": 0.45},
        "fit": {"fit_images_per_s": 2500.0, "tte_views_per_s": 6000.0},
    }
    lines = profile.judge(res, torch.device("cuda"))
    assert lines[0].startswith("PASS: model step")
    assert lines[1].startswith("FAIL: whole fit")
    assert lines[2].startswith("PASS: TTE prediction")
    assert profile.judge(res, torch.device("cpu"))[0].startswith("not judged")


def test_ulfine_vs_lift_benchmark_runs(tmp_path):
    from conftest import shared_cifar_dir

    source = shared_cifar_dir()
    if source is None:
        pytest.skip("../shared/data/cifar10-jpg not found")
    script = ROOT / "benchmarks" / "ulfine_vs_lift.py"
    out = subprocess.run(
        [sys.executable, str(script), "--source", str(source), "--dest", str(tmp_path),
         "--backbone", "liftlearn-tiny-vit", "--pretrained", "none", "--n-max-labeled", "20",
         "--n-max-unlabeled", "40", "--imbalance-labeled", "10", "--imbalance-unlabeled", "10",
         "--n-test", "5", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
         "--many-threshold", "10", "--few-threshold", "4"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for row in ("| LIFT+ (labeled only) |", "| FixMatch + LFT |", "| ULFine |"):
        assert row in out.stdout
    assert "| method | overall | many | medium | few | fit s |" in out.stdout
