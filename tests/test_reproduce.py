"""benchmarks/reproduce.py: the table format, and the --smoke run end to end."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, shared_cifar_dir

from liftlearn.datasets import SOURCES

SCRIPT = REPO / "benchmarks" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_numbers(reproduce):
    assert reproduce.PUBLISHED["imagenet-lt"] == 78.3
    assert reproduce.PUBLISHED["places-lt"] == 52.2
    assert reproduce.PUBLISHED["cifar100-lt"] == 81.7
    # The recipe's epochs: the data source's where it names them, else the estimator's.
    assert SOURCES["inat2018"].epochs == 15 and reproduce._DEFAULT_EPOCHS == 5


def test_datasets_are_the_benchmark_sources(reproduce):
    parser = reproduce.build_parser()
    (action,) = [a for a in parser._actions if "--datasets" in a.option_strings]
    benchmarks = [name for name, source in SOURCES.items() if source.benchmark]
    assert list(action.choices) == benchmarks
    assert set(reproduce.PUBLISHED) == set(benchmarks) == set(reproduce.FLAG_STEMS)
    assert set(reproduce.DEFAULT_DATASETS) <= set(benchmarks)
    flags = {flag for a in parser._actions for flag in a.option_strings}
    assert {f"--root-{stem}" for stem in reproduce.FLAG_STEMS.values()} <= flags


def test_load_splits_through_sources(reproduce, tmp_path):
    (tmp_path / "categories.json").write_text(json.dumps([{"id": 0, "name": "a"},
                                                          {"id": 1, "name": "b"}]))
    (tmp_path / "train.txt").write_text("x/0.jpg 0\nx/1.jpg 1\n")
    (tmp_path / "val.txt").write_text("y/1.jpg 1\n")
    args = reproduce.build_parser().parse_args(["--root-inat", str(tmp_path)])
    X, y, Xt, yt, names = reproduce.load_splits("inat2018", args)  # test: the val set
    assert y.tolist() == [0, 1] and yt.tolist() == [1] and names == ["a", "b"]
    with pytest.raises(SystemExit, match="places-lt needs --root-places"):
        reproduce.load_splits("places-lt", args)


def test_markdown_table(reproduce):
    args = argparse.Namespace(backbone="ViT-B-16-quickgelu", pretrained="openai",
                              imbalance=100.0, smoke=False)
    row = dict(dataset="places-lt", n_train=62500, n_test=36500, n_classes=365, epochs=5,
               overall=52.04, many=51.0, medium=53.2, few=float("nan"), published=52.2,
               train_s=9000.0, test_s=60.0, device="cuda:0")
    text = reproduce.markdown_table([row, dict(row, dataset="inat2018", published=None)], args)
    lines = text.splitlines()
    assert "| Places-LT | 365 | 62,500 / 36,500 | 5 | 52.0 | 51.0 | 53.2 | – | 52.2 " \
           "| 2.50 h | cuda:0 |" in lines
    assert any(line.startswith("| iNaturalist 2018 |") and "| n/a |" in line for line in lines)
    # The published CIFAR number is for imbalance 100 only.
    args.imbalance = 50.0
    text = reproduce.markdown_table([dict(row, dataset="cifar100-lt", published=81.7)], args)
    assert "| CIFAR-100-LT (IR 50) |" in text and "| n/a |" in text


def test_missing_root_fails_before_training(tmp_path):
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--datasets", "imagenet-lt", "--out", "r.md"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert res.returncode != 0 and "imagenet-lt needs --root-imagenet" in res.stderr
    assert not (tmp_path / "r.md").exists()


@pytest.mark.skipif(shared_cifar_dir() is None, reason="shared CIFAR-10 JPEGs absent")
def test_smoke_run(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2",
               LIFTLEARN_SHARED_DATA=str(shared_cifar_dir()))
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", "results.md", "--json", "rows.json",
         "--cache-dir", str(tmp_path / "cache"), "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "results.md").read_text()
    assert "| Dataset | Classes | Train / test images | Epochs | Overall | Many | Medium | Few" in text
    row = [line for line in text.splitlines() if line.startswith("| CIFAR-10-LT (IR 10) |")]
    assert len(row) == 1 and "| n/a |" in row[0]
    assert "Smoke run" in text
    (rows,) = json.loads((tmp_path / "rows.json").read_text())
    assert rows["dataset"] == "cifar10-lt" and rows["n_classes"] == 10 and rows["epochs"] == 1
    assert 0 <= rows["overall"] <= 100 and rows["many"] is None  # n_max=50: no many-shot class
    assert rows["train_s"] > 0
