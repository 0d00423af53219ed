"""The benchmark scripts run end to end and print every section of their reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import checkout_env

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "benchmarks" / "perf_profile.py"


def _run(tmp_path, *extra):
    out = tmp_path / "profile.json"
    env = checkout_env(HF_HUB_OFFLINE="1")
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


def _script(name: str, path: Path):
    """A benchmark script as a module (loaded once per test session)."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # Dataclasses look their module up while the class is created.
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _profile_module():
    return _script("_liftlearn_profile_test", PROFILE)


def test_cpu_targets_smoke(tmp_path):
    # Issue 14's CPU target parts on the tiny backbone, in this process: every
    # check is measured, judged and written, the baselines are asserted equal
    # to the library's results.
    profile = _profile_module()
    res = profile.main([
        "--parts", "targets", "--device", "cpu", "--source", "synthetic", "--data-dir",
        str(tmp_path / "jpegs"), "--n-images", "4", "--batch-size", "4", "--rounds", "1",
        "--warmup", "0", "--n-names", "12", "--pipeline-images", "4", "--pipeline-rounds", "1",
        "--results-dir", str(tmp_path / "results"), "--tag", "smoke",
    ])
    names = [line[1] for line in res["cpu_targets"]]
    assert names == [
        "AdaptFormer training step / bare tower fwd+bwd",
        "TTE prediction / no-TTE prediction, per image",
        "train data pipeline, full / PIL-only, per image",
        "TTE data pipeline, full / PIL-only, per image",
        "text init speed-up over full context (12 names)",
        "second fit's text init / first fit's",
    ]
    assert all(line[0] in ("PASS", "FAIL") and line[2] > 0 for line in res["cpu_targets"])
    assert res["clock"] == "CPU (process time)"
    assert res["baseline"]["tower_max_abs_diff"] <= 1e-5
    assert res["text"]["max_abs_diff"] <= 1e-4 and res["text"]["n_names"] == 12
    assert len(res["text"]["times"]["library_second"]) == 1
    assert res["pipeline"]["image_size_px"] == "500x375"
    assert set(res["pipeline"]["loader_dtype"]) == {"train", "tte"}
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert [f.rsplit(".", 1)[1] for f in files] == ["json", "md"] and files[0].startswith("smoke-")
    md = (tmp_path / "results" / files[1]).read_text()
    assert "## Issue 14's CPU targets (medians of interleaved rounds)" in md
    assert "| check | A | B | A/B | target | verdict |" in md and "- command: `python" in md
    assert json.loads((tmp_path / "results" / files[0]).read_text())["cpu_targets"]


def test_pipeline_part_takes_the_loaders_uint8_batches(tmp_path):
    # The loaders ship uint8 images, normalised where they reach the device:
    # the pipeline part builds them as the estimators do and normalises
    # them with the library's own DeviceImages before the clock stops.
    import argparse

    import numpy as np
    import torch

    from liftlearn.nn.backbones import get_backbone

    profile = _profile_module()
    jpegs = profile.synthetic_jpegs(2, tmp_path)
    args = argparse.Namespace(batch_size=2, pipeline_images=2, rounds=1, pipeline_rounds=1,
                              pipeline_jpegs="synthetic")
    res = profile.target_pipeline(args, get_backbone("liftlearn-tiny-vit", "cpu"),
                                  torch.device("cpu"), jpegs, np.arange(2))
    assert res["loader_dtype"] == {"train": "uint8", "tte": "uint8"}
    assert res["device_normaliser"] == "liftlearn.engine.DeviceImages"
    assert res["train_ratio"] > 0 and res["tte_ratio"] > 0
    assert res["jpegs"] == "synthetic" and res["mean_file_kb"] > 0


def test_photo_jpegs_are_reproducible_crops_of_the_sample_photos(tmp_path):
    from PIL import Image

    profile = _profile_module()
    a = profile.photo_jpegs(3, tmp_path / "a")
    b = profile.photo_jpegs(3, tmp_path / "b")
    assert [Path(p).read_bytes() for p in a] == [Path(p).read_bytes() for p in b]
    for path in a:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (500, 375) and img.mode == "RGB"
    # Files already there are reused, not rewritten.
    before = [os.stat(p).st_mtime_ns for p in a]
    assert profile.photo_jpegs(3, tmp_path / "a") == a
    assert [os.stat(p).st_mtime_ns for p in a] == before
    assert not list((tmp_path / "a").glob("*.tmp"))
    with pytest.raises(ValueError, match="larger than the sample photos"):
        profile.photo_jpegs(1, tmp_path / "c", size=(700, 375))


def test_pipeline_part_on_photos_says_so(tmp_path):
    profile = _profile_module()
    res = profile.main([
        "--parts", "pipeline", "--device", "cpu", "--source", "sample", "--n-images", "2",
        "--data-dir", str(tmp_path / "jpegs"), "--pipeline-jpegs", "photos",
        "--pipeline-images", "2", "--pipeline-rounds", "1", "--rounds", "1", "--batch-size", "2",
        "--results-dir", str(tmp_path / "results"), "--tag", "photos",
    ])
    assert res["pipeline"]["jpegs"] == "photos" and res["pipeline"]["images"] == 2
    assert sorted(p.name for p in (tmp_path / "jpegs").iterdir()) == [
        "photo-500x375_000000.jpg", "photo-500x375_000001.jpg"]
    md = next((tmp_path / "results").glob("photos-*.md")).read_text()
    assert "2 500x375 photos JPEGs (mean " in md


def test_bare_tower_matches_open_clip_and_the_check_bites():
    import copy

    import torch

    from liftlearn.nn.backbones import get_backbone

    profile = _profile_module()
    backbone = get_backbone("liftlearn-tiny-vit", "cpu")
    tower = profile.FrozenTower(backbone.visual)
    assert profile.check_tower(tower, backbone.visual, backbone.image_size, "cpu") <= 1e-5
    grad = tower.forward_backward(torch.randn(2, 3, backbone.image_size, backbone.image_size))
    assert grad.shape[0] == 2 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    wrong = copy.copy(tower)
    wrong.blocks = [dict(b) for b in tower.blocks]
    w, bias = wrong.blocks[-1]["out"]
    wrong.blocks[-1]["out"] = (w * 1.01, bias)
    with pytest.raises(AssertionError, match="differs from open_clip"):
        profile.check_tower(wrong, backbone.visual, backbone.image_size, "cpu")


def test_results_are_new_files_written_whole(tmp_path):
    profile = _profile_module()
    first = profile.write_results(tmp_path, "x", {"a": 1}, "# a")
    second = profile.write_results(tmp_path, "x", {"a": 2}, "# b")
    assert first != second and all(p.exists() for p in first + second)
    assert json.loads(first[0].read_text()) == {"a": 1} and second[1].read_text() == "# b\n"
    with pytest.raises(FileExistsError):
        profile._write_new(first[0], "overwrite")
    assert json.loads(first[0].read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_results_are_written_where_hard_links_are_not_allowed(tmp_path, monkeypatch):
    profile = _profile_module()

    def no_links(src, dst):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(profile.os, "link", no_links)
    json_path, md_path = profile.write_results(tmp_path, "x", {"a": 1}, "# a", extra={"l.log": "x"})
    assert json.loads(json_path.read_text()) == {"a": 1} and md_path.read_text() == "# a\n"
    assert (tmp_path / f"{json_path.stem}.l.log").read_text() == "x"
    with pytest.raises(FileExistsError):
        profile._write_new(json_path, "overwrite")
    assert json.loads(json_path.read_text()) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 3  # no temporary file left


def test_gpu_suite_summary_judges_the_gpu_targets(monkeypatch):
    profile = _profile_module()
    gpu = {"device": "cuda", "machine": "NVIDIA H100", "torch": "x", "library": "y",
           "started_utc": "now", "settings": {}}
    runs = {
        "eager": dict(gpu, step={"share_of_peak": 0.45, "images_per_s": 7000.0}),
        "fit": dict(gpu, fit={"fit_images_per_s": 2500.0, "tte_views_per_s": 6000.0}),
        "compile": None,
    }
    monkeypatch.setattr(profile, "report", lambda res: "# LIFT+ profile: stub")  # partial runs
    summary, text = profile.suite_summary(runs, dry_run=False)
    verdicts = [row[3] for row in summary["table"][:4]]
    assert verdicts == ["PASS", "n/a (not measured)", "FAIL", "PASS"]
    assert "compile: NOT FINISHED (failed, timed out or skipped)" in text


def _suite(*args, timeout=240, env=None):
    env = checkout_env(HF_HUB_OFFLINE="1", PYTHON=sys.executable, **(env or {}))
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_gpu_suite_dry_run_writes_its_results(tmp_path):
    proc = _suite("--dry-run", "--results-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("gpu_suite-dryrun-") for f in files)
    summary = json.loads((tmp_path / files[0]).read_text())
    assert summary["dry_run"] is True and summary["device"] == "cpu"
    res = summary["runs"]["eager"]
    assert {"data", "step", "predict", "baseline", "fit"} <= set(res)
    assert res["baseline"]["tower_max_abs_diff"] <= 1e-5
    md = (tmp_path / files[1]).read_text()
    assert "# GPU suite (benchmarks/gpu_suite.sh) -- DRY RUN" in md
    for check in ("model step, eager: share of peak bf16 FLOP/s",
                  "whole fit from JPEG files, images/s", "TTE prediction from files, views/s"):
        assert f"| {check} |" in md
    assert "not judged (no GPU: dry run)" in md and md.strip() in proc.stdout


def test_gpu_suite_refuses_a_machine_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = _suite("--results-dir", str(tmp_path), timeout=60)
    assert proc.returncode == 3
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    assert _suite("--bogus").returncode == 2


def _wheel(folder, name, version, files):
    """A minimal pure-Python wheel of ``files`` ({path: text})."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = {f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            f"{dist}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    entries = {**files, **meta}
    record = "".join(f"{k},,\n" for k in entries) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in {**entries, f"{dist}/RECORD": record}.items():
            z.writestr(k, v)
    return path


def test_gpu_suite_installs_missing_wheels_runs_the_tests_and_reports_them(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # One package the machine lacks, one it has newer: only the first is installed.
    _wheel(wheels, "llprobe", "1.2", {"llprobe/__init__.py": "VERSION = '1.2'\n"})
    _wheel(wheels, "joblib", "0.0.1", {"joblib/__init__.py": "raise ImportError('old')\n"})
    # A fallback newer than the machine's, which is new enough for liftlearn: kept.
    _wheel(wheels, "scikit_learn", "99.0", {"sklearn/__init__.py": "raise ImportError('fake')\n"})
    tests = tmp_path / "t"
    tests.mkdir()
    (tests / "test_ok.py").write_text("import joblib, llprobe\n\n"
                                      "def test_ok():\n    assert llprobe.VERSION == '1.2'\n")
    (tests / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    results = tmp_path / "results"
    proc = _suite("--dry-run", "--wheels", str(wheels), "--tests", "--results-dir", str(results),
                  env={"GPU_SUITE_TESTS": f"{tests / 'test_ok.py'} {tests / 'test_bad.py'}"})
    assert proc.returncode == 1, proc.stderr[-3000:]  # a test failed; the runs did not
    assert "llprobe 1.2: installing" in proc.stderr and "joblib 0.0.1: " in proc.stderr
    for wheel in ("joblib 0.0.1: ", "scikit_learn 99.0: "):
        assert "is here" in proc.stderr.split(wheel)[1].splitlines()[0]
    files = sorted(p.name for p in results.iterdir())
    stem = files[0][: -len(".json")]
    assert files == [f"{stem}.json", f"{stem}.md", f"{stem}.tests-cuda.log", f"{stem}.tests-other.log"]
    summary = json.loads((results / files[0]).read_text())
    assert summary["runs"]["eager"] is not None
    assert summary["tests"]["cuda"]["verdict"] == "none collected"  # no test marked cuda here
    other = summary["tests"]["other"]
    assert other["verdict"] == "FAILED (pytest exit 1)"
    assert other["summary"].startswith("1 failed, 1 passed")  # test_ok: the wheel was there
    md = (results / files[1]).read_text()
    assert "- runs: eager: ok" in md and "- tests the others (pytest, on this machine): FAILED" in md
    log = (results / files[3]).read_text()
    assert "test_bad.py::test_bad FAILED" in log and "test_ok.py::test_ok PASSED" in log


def test_gpu_suite_skips_what_its_budget_leaves_no_time_for(tmp_path):
    proc = _suite("--dry-run", "--tests", "--budget", "25", "--results-dir", str(tmp_path),
                  timeout=60)
    assert proc.returncode == 1 and "run 'eager' skipped" in proc.stderr
    names = sorted(p.name.split(".", 1)[1] for p in tmp_path.iterdir())
    assert names == ["eager.log", "json", "md", "tests-cuda.log", "tests-other.log"]
    summary = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert summary["runs"] == {"eager": None}
    assert {t["verdict"] for t in summary["tests"].values()} == {"not run"}
    assert "budget left" in next(tmp_path.glob("*.eager.log")).read_text()


def test_tests_outcome_reads_pytest_and_the_time_limit():
    outcome = _profile_module().tests_outcome
    assert outcome("rc=0 seconds=70 limit=300", "...\n== 12 passed, 2 skipped in 69.1s ==\n") == {
        "rc": "0", "verdict": "passed", "summary": "12 passed, 2 skipped in 69.1s",
        "seconds": "70", "limit_s": "300"}
    assert outcome("rc=124 seconds=90 limit=90", "....F..")["verdict"] == "ran out of its 90 s"
    assert outcome("rc=2 seconds=3 limit=90", "ERROR: file not found: tests/x.py")["summary"] \
        == "ERROR: file not found: tests/x.py"
    assert outcome("rc=5 seconds=1 limit=240", "== 9 deselected in 0.1s ==")["verdict"] \
        == "none collected"
    assert outcome("rc=none-passed seconds=9 limit=240", "== 14 skipped in 8s ==")["verdict"] \
        .startswith("FAILED (none passed")
    skipped = outcome("rc=skipped seconds=0 limit=12", "skipped: only 12 s of the 570 s budget left")
    assert skipped["verdict"] == "not run" and "12 s" in skipped["summary"]


def test_gpu_suite_checks_its_wheels_and_imports_before_any_run(tmp_path):
    proc = _suite("--dry-run", "--wheels", str(tmp_path / "absent"), timeout=60)
    assert proc.returncode == 2 and "gpu_wheels.sh" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = _suite("--dry-run", "--wheels", str(tmp_path / "empty"), timeout=60)
    assert proc.returncode == 2 and "no .whl file" in proc.stderr
    # A machine whose open_clip does not import (as on a GPU machine without
    # its dependencies): one clear error, exit 4, nothing run or written.
    fake = tmp_path / "site" / "open_clip"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ftfy'\")\n")
    results = tmp_path / "results"
    proc = _suite("--dry-run", "--results-dir", str(results), timeout=60,
                  env={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path / 'site'}"})
    assert proc.returncode == 4
    assert "No module named 'ftfy'" in proc.stderr and "gpu_wheels.sh" in proc.stderr
    assert "run 'eager'" not in proc.stderr and not results.exists()


def test_gpu_wheels_checks_its_arguments():
    script = ROOT / "benchmarks" / "gpu_wheels.sh"
    proc = subprocess.run(["bash", str(script), "--python-version", "3"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "X.Y" in proc.stderr
    helped = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True,
                            timeout=30)
    assert helped.returncode == 0 and "gpu_suite.sh --wheels .whl" in helped.stdout


ULFINE_BENCH = ROOT / "benchmarks" / "ulfine_vs_lift.py"


def _ulfine_bench():
    return _script("_liftlearn_ulfine_bench", ULFINE_BENCH)


def _run_ulfine_bench(tmp_path, *extra):
    out = subprocess.run(
        [sys.executable, str(ULFINE_BENCH), "--smoke", "--dest", str(tmp_path / "data"),
         "--json", str(tmp_path / "res.json"), *extra],
        capture_output=True, text=True, timeout=300,
        env=checkout_env(HF_HUB_OFFLINE="1"),
    )
    return out


def test_ulfine_vs_lift_smoke_prints_the_ltssl_table(tmp_path):
    from conftest import shared_cifar_dir

    source = shared_cifar_dir()
    if source is None:
        pytest.skip("../shared/data/cifar10-jpg not found")
    out = _run_ulfine_bench(tmp_path, "--source", str(source))
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "| method | acc | acc (TTE) | many | medium | few | fit s |" in text
    bench = _ulfine_bench()
    for method in bench.METHODS:
        assert f"| {method} | " in text, method
    assert "### cifar10-n1500-m3000-consistent (smoke): cifar10" in text
    # Absent user files: a clear message naming the flag, not a crash.
    assert "skipped cifar100-n150-m300-consistent (smoke): pass --cifar100-root" in text
    assert "skipped stl10-n450-g10 (smoke): pass --stl10-root" in text
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["seeds"] == [0, 1]
    rows = res["results"]["cifar10-n1500-m3000-consistent (smoke)"]["methods"]
    assert list(rows) == list(bench.METHODS)
    for method, seeds in rows.items():
        assert len(seeds) == 2
        for r in seeds:
            assert 0 <= r["acc"] <= 1 and 0 <= r["acc_tte"] <= 1 and r["fit_seconds"] > 0
            assert {"many", "medium", "few"} <= set(r)
            assert r["n_labeled"] > 0 and r["n_unlabeled"] > 0  # the split's sizes
    assert set(res["skipped"]) == {"cifar100-n150-m300-consistent (smoke)", "stl10-n450-g10 (smoke)"}


def test_ulfine_vs_lift_settings_and_splits():
    bench = _ulfine_bench()
    names = set(bench.SETTINGS)
    for group in ("cifar10-n1500-m3000", "cifar10-n500-m4000", "cifar100-n150-m300"):
        assert {f"{group}-{d}" for d in ("consistent", "uniform", "reversed")} <= names
    s = bench.SETTINGS["cifar10-n1500-m3000-reversed"]
    assert (s.n1, s.m1, s.g_labeled, s.g_unlabeled, s.reverse) == (1500, 3000, 100, 100, True)
    s = bench.SETTINGS["cifar100-n150-m300-uniform"]
    assert (s.n1, s.m1, s.g_labeled, s.g_unlabeled) == (150, 300, 10, 1)
    # The splits: consistent, uniform and reversed unlabeled profiles.
    import numpy as np

    y = np.repeat(np.arange(10), 60)
    data = {"pool": ([f"img{i}.png" for i in range(len(y))], y)}
    profiles = {}
    for dist in ("consistent", "uniform", "reversed"):
        setting = bench.SMOKE_SETTINGS[f"cifar10-n1500-m3000-{dist} (smoke)"]
        X, y_ssl = bench.make_split(data, setting, seed=0)
        assert len(X) == len(y_ssl)
        unl = np.array([int(p[3:-4]) for p, v in zip(X, y_ssl) if v == -1])
        profiles[dist] = np.bincount(y[unl], minlength=10)
    assert profiles["consistent"][0] > profiles["consistent"][-1]
    assert len(set(profiles["uniform"])) == 1
    assert profiles["reversed"][0] < profiles["reversed"][-1]
    for dist, p in profiles.items():
        np.testing.assert_array_equal(sorted(p), sorted(profiles["consistent"]) if dist != "uniform" else p)


def test_ulfine_vs_lift_stl10_layout(tmp_path):
    # STL-10's files as image folders: labeled train/test per class plus an
    # unlabeled folder; the unlabeled images join the split as -1.
    import numpy as np
    from PIL import Image

    root = tmp_path / "stl10"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for c in ("bird", "cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    (root / "unlabeled" / "part0").mkdir(parents=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "unlabeled" / "part0" / f"u{i}.png")
    bench = _ulfine_bench()
    (X, y, names), (Xt, yt), unlabeled = bench.load_stl10(root, max_unlabeled=3)
    assert names == ["bird", "cat", "dog"] and len(X) == 12 and len(Xt) == 6 and len(unlabeled) == 3
    setting = bench.Setting("stl10", 4, 0, 4, 1, False, "unknown")
    Xs, y_ssl = bench.make_split({"pool": (X, y), "unlabeled": unlabeled}, setting, seed=0)
    assert (y_ssl == -1).sum() == 3 and Xs[-3:] == unlabeled
    assert np.bincount(y_ssl[y_ssl >= 0]).tolist() == [4, 2, 1]
    args = bench.parse_args(["--smoke", "--stl10-root", str(tmp_path / "nowhere")])
    assert "lacks the folder(s)" in bench._missing("stl10", args)
