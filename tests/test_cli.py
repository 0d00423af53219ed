"""The ``liftlearn`` command, run in subprocesses as users run it."""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

from liftlearn.cli import DATA_SOURCES, UserError, _parse_param, build_parser, load_data, main
from liftlearn.datasets import SOURCES

TINY = ["--backbone", "liftlearn-tiny-vit", "--pretrained", "none", "--epochs", "1"]


def run_cli(*args, cwd, timeout=120):
    """Run ``python -m liftlearn ARGS`` offline from the checkout."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    env.pop("LIFTLEARN_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "liftlearn", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model.joblib"
    res = run_cli("fit", "--data", "cifar10-lt-sample", *TINY, "--max-train", 60,
                  "--device", "cpu", "--param", "batch_size=32", "--param", "tte=false",
                  "--out", out, cwd=out.parent)
    assert res.returncode == 0, res.stderr
    assert "model written to" in res.stdout and out.is_file()
    assert "60 training images, 10 classes" in res.stderr
    return out


def test_help_reads_well(tmp_path, capsys):
    res = run_cli("--help", cwd=tmp_path)
    assert res.returncode == 0
    for word in ("fit", "evaluate", "predict", "liftlearn fit --data cifar10-lt-sample"):
        assert word in res.stdout
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    fit_help = capsys.readouterr().out
    assert "--max-train" in fit_help and "--param KEY=VALUE" in fit_help
    assert "(default: ViT-B-16-quickgelu)" in fit_help and "(default: None)" not in fit_help


def test_setup_declares_console_script():
    assert "liftlearn=liftlearn.cli:main" in (REPO / "setup.py").read_text()


def test_fit_evaluate_predict(model_file, tmp_path):
    import joblib

    clf = joblib.load(model_file)
    assert clf.epochs == 1 and clf.batch_size == 32 and clf.tte is False
    assert clf.pretrained is None and len(clf.class_names_) == 10

    res = run_cli("evaluate", "--model", model_file, "--data", "cifar10-lt-sample",
                  "--max-test", 30, "--plot", tmp_path / "p.png", "--json",
                  tmp_path / "r.json", "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "many-shot (>100)" in res.stdout and "few-shot (<20)" in res.stdout
    assert (tmp_path / "p.png").stat().st_size > 1000
    report = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= report["accuracy"] <= 1 and set(report["groups"]) == {"many", "medium", "few"}

    out = tmp_path / "preds.csv"
    res = run_cli("predict", "--model", model_file, "--data", "cifar10-lt-sample",
                  "--max-test", 4, "--all-proba", "--out", out, "-q", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and Path(rows[0]["path"]).is_file()
    assert list(rows[0])[:4] == ["path", "label", "class_name", "probability"]
    assert len(rows[0]) == 4 + 10
    for row in rows:
        probs = [float(row[f"proba_{n}"]) for n in clf.class_names_]
        assert abs(sum(probs) - 1) < 1e-4
        assert float(row["probability"]) == pytest.approx(max(probs), abs=1e-6)
        assert clf.class_names_[int(row["label"])] == row["class_name"]


def test_predict_paths_to_stdout(model_file, capsys):
    from liftlearn.datasets import load_cifar10_lt_sample

    paths = load_cifar10_lt_sample("test")[0][:2]
    assert main(["predict", "--model", str(model_file), *paths, "--out", "-", "-q"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,label,class_name,probability" and len(lines) == 3


def test_user_errors_exit_2_without_traceback(tmp_path):
    res = run_cli("fit", "--data", "imagenet-lt", "--root", tmp_path, "--out", "m.joblib",
                  *TINY, cwd=tmp_path)
    assert res.returncode == 2
    assert "ImageNet_LT_train.txt, train.txt found in" in res.stderr
    assert "Traceback" not in res.stderr


def test_malformed_list_file_names_line(tmp_path, model_file, capsys):
    (tmp_path / "ImageNet_LT_test.txt").write_text("val/a.JPEG 0\nval/b.JPEG\n")
    argv = ["evaluate", "--model", str(model_file), "--data", "imagenet-lt", "--root",
            str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ImageNet_LT_test.txt line 2: expected" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--data", "nope", "--out", "m"], "invalid choice: 'nope'"),
        (["fit", "--data", "cifar10-lt-sample", "--out", "m", "--param", "foo=1"],
         "unknown estimator parameter 'foo'"),
        (["fit", "--data", "cifar10-lt-sample", "--out", "m", "--param", "tau"],
         "expected key=value"),
        (["fit", "--data", "cifar10-lt-sample", "--out", "m", "--epochs", "0"],
         "expected a positive integer"),
        (["evaluate", "--data", "cifar10-lt-sample"], "--model"),
        ([], "COMMAND"),
    ],
)
def test_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--model", "missing.joblib", "--data", "cifar10-lt-sample"],
         "model file not found: missing.joblib"),
        (["fit", "--data", "places-lt", "--out", "m.joblib"], "--data places-lt needs --root"),
        (["fit", "--data", "cifar10-lt-sample", "--out", "m.joblib", "--param",
          "tau=-1", "--max-train", "20", "--backbone", "liftlearn-tiny-vit",
          "--pretrained", "none", "-q"], "tau"),
    ],
)
def test_user_errors_in_process(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_predict_needs_paths_or_data(model_file, capsys):
    assert main(["predict", "--model", str(model_file), "--out", "-"]) == 2
    assert "PATHs or --data" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("tau=1.5", ("tau", 1.5)),
        ("tte=false", ("tte", False)),
        ("adapter_dim=None", ("adapter_dim", None)),
        ("device-batch-size=16", ("device_batch_size", 16)),
        ("prompt_template=a photo of a {}, a type of pet.",
         ("prompt_template", "a photo of a {}, a type of pet.")),
    ],
)
def test_parse_param(text, expected):
    assert _parse_param(text) == expected


def test_load_data_sources(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for name in ("b", "a"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "0.png")
    paths, y, names = load_data("imagefolder", "test", root=str(tmp_path))
    assert names == ["a", "b"] and all("/test/" in p.replace(os.sep, "/") for p in paths)
    (tmp_path / "categories.json").write_text(json.dumps([{"id": 0, "name": "x"}]))
    (tmp_path / "val.txt").write_text("img/0.jpg 0\n")
    assert load_data("inat2018", "test", root=str(tmp_path))[2] == ["x"]  # test -> val
    _, y, names = load_data("cifar10-lt-sample", "test")
    assert len(y) == 1000 and names[0] == "airplane"


def test_safetensors_model_files(tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert main(["fit", "--data", "cifar10-lt-sample", *TINY, "--adapter", "lora", "--max-train", "40",
                 "--device", "cpu", "--param", "batch_size=20", "-q", "--out", str(out)]) == 0
    assert out.is_file() and not out.read_bytes().startswith(b"\x80")
    assert main(["evaluate", "--model", str(out), "--data", "cifar10-lt-sample", "--max-test", "30",
                 "-q"]) == 0
    assert "balanced accuracy" in capsys.readouterr().out


# ------------------------------------------- data sources and parser defaults


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    return action


def test_data_choices_are_the_sources():
    assert DATA_SOURCES == tuple(SOURCES)
    for command, parser in _subcommands().items():
        assert list(_option(parser, "--data").choices) == list(SOURCES), command


def test_load_data_needs_root_and_maps_val():
    for name in SOURCES:
        if SOURCES[name].needs_root:
            with pytest.raises(UserError, match=f"^--data {name} needs --root$"):
                load_data(name, "train")
    assert load_data("cifar10-lt-sample", "val")[0] == load_data("cifar10-lt-sample", "test")[0]


FIT_OPTIONS = [("--backbone", "backbone"), ("--pretrained", "pretrained"),
               ("--adapter", "adapter"), ("--epochs", "epochs"),
               ("--batch-size", "batch_size"), ("--lr", "lr"), ("--device", "device")]


@pytest.mark.parametrize("flag, param", FIT_OPTIONS)
def test_fit_defaults_are_the_estimators(flag, param):
    from liftlearn.estimators import LiftPlusClassifier

    default = inspect.signature(LiftPlusClassifier.__init__).parameters[param].default
    fit = _subcommands()["fit"]
    assert _option(fit, flag).default == default
    args = build_parser().parse_args(["fit", "--data", "cifar10-lt-sample", "--out", "m"])
    assert getattr(args, param) == default and args.seed == 0


def test_adapter_choices_are_the_tuners():
    from liftlearn.nn.tuners import ADAPTERS

    assert _option(_subcommands()["fit"], "--adapter").choices == sorted(ADAPTERS)
