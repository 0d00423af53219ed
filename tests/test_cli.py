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

from conftest import REPO, checkout_env

from liftlearn import cli
from liftlearn.cli import DATA_SOURCES, UserError, _parse_param, build_parser, load_data, main
from liftlearn.datasets import SOURCES

TINY = ["--backbone", "liftlearn-tiny-vit", "--pretrained", "none", "--epochs", "1"]


def run_cli(*args, cwd, timeout=120):
    """Run ``python -m liftlearn ARGS`` offline from the checkout."""
    env = checkout_env(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
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
    # Progress goes through the liftlearn logger to stderr (stdout holds only
    # the result), as whole lines: no progress bar when stderr is not a terminal.
    assert res.stdout.strip().splitlines() == [f"model written to {out}"]
    assert "epoch 1/1: loss" in res.stderr and "\r" not in res.stderr
    # open_clip's note on random weights: once, through liftlearn's logger.
    assert res.stderr.count("initialized randomly") == 1 and "WARNING:root" not in res.stderr
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


def test_predict_leaves_skipped_images_unpredicted(model_file, tmp_path, capsys):
    """A model fitted with on_bad_image="skip" gives an unreadable image a NaN
    row: the CSV says nothing of it rather than "class 0"."""
    import joblib

    from liftlearn.datasets import load_cifar10_lt_sample

    clf = joblib.load(model_file).set_params(on_bad_image="skip", check_images="header")
    skipping = tmp_path / "skipping.joblib"
    joblib.dump(clf, skipping)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    good = load_cifar10_lt_sample("test")[0][0]
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(skipping), str(broken), good, "--out", str(out),
            "--all-proba"]
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert main(argv) == 0
    rows = list(csv.reader(out.open()))
    assert rows[1][0] == str(broken) and set(rows[1][1:]) == {""}
    assert rows[2][1] != "" and float(rows[2][3]) > 0
    assert "1 of 2 images could not be read" in capsys.readouterr().err


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
        (["fit", "--data", "cifar10-lt-sample", "--out", "m", "--param", "tau"],
         "expected key=value"),
        (["fit", "--data", "cifar10-lt-sample", "--out", "m", "--epochs", "0"],
         "expected a positive integer"),
        (["evaluate", "--data", "cifar10-lt-sample"], "--model"),
        (["evaluate", "--model", "m", "--data", "cifar10-lt-sample", "--seed", "-1"],
         "argument --seed: expected an integer >= 0"),
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
        (["fit", "--data", "cifar10-lt-sample", "--out", "m.joblib", "--param", "foo=1"],
         "--param foo: unknown LiftPlusClassifier parameter"),
        (["fit", "--data", "cifar10-lt-sample", "--out", "m.joblib", "--estimator",
          "zero-shot", "--param", "tau=1.5"], "--param tau: unknown ZeroShotClassifier parameter"),
        (["fit", "--data", "cifar10-lt-sample", "--out", "m.joblib", "--param",
          "class_names=['x', 'y']"], "--param class_names: the class names come from --data"),
    ],
)
def test_user_errors_in_process(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_predict_needs_paths_or_data(model_file, capsys):
    assert main(["predict", "--model", str(model_file), "--out", "-"]) == 2
    assert "predict needs image PATHs or --data" in capsys.readouterr().err
    from liftlearn.datasets import load_cifar10_lt_sample

    path = load_cifar10_lt_sample("test")[0][0]
    assert main(["predict", "--model", str(model_file), path, "--data", "cifar10-lt-sample",
                 "--out", "-"]) == 2
    assert "PATHs or --data, not both" in capsys.readouterr().err
    # Options that select images of --data would be ignored with PATHs.
    assert main(["predict", "--model", str(model_file), path, "--max-test", "1", "--split",
                 "val", "--out", "-"]) == 2
    assert "--split, --max-test select images of --data" in capsys.readouterr().err


def test_outputs_never_overwrite_inputs_or_each_other(model_file, tiny_checkpoint, tmp_path, capsys,
                                                      monkeypatch):
    import shutil

    image = tmp_path / "photo.png"
    from liftlearn.datasets import load_cifar10_lt_sample

    shutil.copy(load_cifar10_lt_sample("test")[0][0], image)
    before = image.read_bytes()
    assert main(["predict", "--model", str(model_file), str(image), "--out", str(image), "-q"]) == 2
    assert "is the file given to an image PATH" in capsys.readouterr().err
    assert image.read_bytes() == before
    report = str(tmp_path / "same.png")
    assert main(["evaluate", "--model", str(model_file), "--data", "cifar10-lt-sample",
                 "--json", report, "--plot", report, "-q"]) == 2
    assert "--plot" in capsys.readouterr().err and not os.path.exists(report)
    weights = tmp_path / "w.joblib"  # a suffix both a checkpoint and a model file may have
    shutil.copy(tiny_checkpoint, weights)
    assert main(["fit", "--data", "cifar10-lt-sample", "--backbone", "liftlearn-tiny-vit",
                 "--pretrained", str(weights), "--out", str(weights), "-q"]) == 2
    assert "is the file given to --pretrained" in capsys.readouterr().err


def test_evaluate_checks_the_plot_before_any_work(model_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("model loaded first"))
    assert main(["evaluate", "--model", str(model_file), "--data", "cifar10-lt-sample",
                 "--plot", str(tmp_path / "p.txt"), "--json", str(tmp_path / "r.json"), "-q"]) == 2
    assert "matplotlib does not write 'txt' files" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_fit_refuses_an_unavailable_device_before_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_data", lambda *a, **k: pytest.fail("data loaded first"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["fit", "--data", "cifar10-lt-sample", "--backbone", "liftlearn-tiny-vit",
                 "--pretrained", "none", "--device", "cuda", "--out", str(tmp_path / "m.joblib"),
                 "-q"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


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
    # safetensors: an 8-byte header length, then the JSON header (no pickle).
    assert out.is_file() and out.read_bytes()[8:9] == b"{"
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
def test_fit_defaults_are_the_estimators(flag, param, capsys):
    from liftlearn.cli import FIT_OPTIONS as TABLE, _fit_params
    from liftlearn.estimators import LiftPlusClassifier

    assert (flag, param) in [row[:2] for row in TABLE]
    default = inspect.signature(LiftPlusClassifier.__init__).parameters[param].default
    # --help shows the estimator's default, read from its signature ...
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {default})" in help_text.rsplit(flag, 1)[1].split(" --", 1)[0]
    # ... and an option not given is not passed: the estimator's default applies.
    args = build_parser().parse_args(["fit", "--data", "cifar10-lt-sample", "--out", "m"])
    assert not hasattr(args, param) and args.seed == 0
    assert param not in _fit_params(args, "lift-plus")
    args = build_parser().parse_args(["fit", "--data", "cifar10-lt-sample", "--out", "m", flag,
                                      {"epochs": "3", "batch_size": "3", "lr": "0.5", "adapter": "lora"}.get(param, "x")])
    assert param in _fit_params(args, "lift-plus")


def test_adapter_choices_are_the_tuners():
    from liftlearn.nn.tuners import ADAPTERS

    assert list(_option(_subcommands()["fit"], "--adapter").choices) == sorted(ADAPTERS)


# ------------------------------------------------------ a fast start (issue 13)


def test_help_and_version_import_nothing_heavy(tmp_path):
    # --help and --version build the parser and exit: no torch, open_clip,
    # scikit-learn or numpy (about 7 s of imports), nor the data sources.
    # evaluate/predict --help list the data sources (numpy), never torch.
    code = (
        "import sys\n"
        "from liftlearn.cli import main\n"
        "heavy = ('torch', 'open_clip', 'sklearn', 'numpy', 'PIL', 'liftlearn.datasets',\n"
        "         'liftlearn.estimators')\n"
        "for argv in (['--help'], ['--version'], ['evaluate', '--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
        "    print(argv[0], sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    env = checkout_env()
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[:2] == ["--help []", "--version []"]
    assert all("torch" not in line and "open_clip" not in line for line in lines[2:]), lines
    assert "liftlearn 0." in res.stdout and "liftlearn fit --data cifar10-lt-sample" in res.stdout
    assert "cifar100-lt" in res.stdout  # evaluate --help lists the sources


# ------------------------------------- evaluation data matched to the model by name


def _image_tree(root: Path, folders: dict) -> None:
    """``root/<folder>/<i>.png`` for each ``folder: n_images``."""
    from PIL import Image

    for folder, n in folders.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i % 255, 90, 160)).save(root / folder / f"{i}.png")


@pytest.fixture
def four_class_model(tmp_path, tiny_checkpoint):
    """A fitted zero-shot model (fast: nothing trains) of four named classes."""
    import joblib

    from liftlearn import ZeroShotClassifier

    _image_tree(tmp_path / "train", {"airplane": 2, "cat": 2, "dog": 2, "ship": 2})
    X, y, names = load_data("imagefolder", "train", root=str(tmp_path))
    clf = ZeroShotClassifier(backbone="liftlearn-tiny-vit", pretrained=tiny_checkpoint,
                             device="cpu", tte=False, batch_size=8).fit(X, y, class_names=names)
    assert clf.class_names_ == ["airplane", "cat", "dog", "ship"]
    path = tmp_path / "four.joblib"
    joblib.dump(clf, path)
    return path


def test_evaluate_matches_image_folders_to_the_model_by_name(four_class_model, tmp_path, capsys):
    # Trained on {airplane, cat, dog, ship}; the test folder has only cat/ and
    # ship/: its cat images are the model's "cat", not its first class.
    _image_tree(tmp_path / "test", {"cat": 2, "ship": 1})
    report = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(four_class_model), "--data", "imagefolder",
                 "--root", str(tmp_path), "--json", str(report), "-q"]) == 0, capsys.readouterr().err
    support = {name: c["support"] for name, c in json.loads(report.read_text())["classes"].items()}
    assert support == {"airplane": 0, "cat": 2, "dog": 0, "ship": 1}


def test_evaluate_leaves_skipped_images_out_of_the_report(four_class_model, tmp_path, capsys):
    import joblib

    clf = joblib.load(four_class_model).set_params(on_bad_image="skip", check_images="header")
    joblib.dump(clf, four_class_model)
    _image_tree(tmp_path / "test", {"cat": 2, "ship": 1})
    (tmp_path / "test" / "dog").mkdir()
    (tmp_path / "test" / "dog" / "broken.png").write_bytes(b"not a png")
    report = tmp_path / "r.json"
    with pytest.warns(UserWarning, match="broken.png"):
        assert main(["evaluate", "--model", str(four_class_model), "--data", "imagefolder",
                     "--root", str(tmp_path), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    # Not counted as a "dog" predicted as class 0 ("airplane"): left out, and said so.
    assert result["skipped_images"] == 1 and result["classes"]["dog"]["support"] == 0
    assert "1 of 4 images could not be read" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_test_folder_naming_no_class_is_refused_before_predicting(
    command, four_class_model, tmp_path, capsys, monkeypatch
):
    from liftlearn import ZeroShotClassifier

    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before the data was checked")

    monkeypatch.setattr(ZeroShotClassifier, "predict_proba", no_prediction)
    _image_tree(tmp_path / "test", {"cat": 1, "horse": 1})
    argv = [command, "--model", str(four_class_model), "--data", "imagefolder", "--root",
            str(tmp_path)] + (["--out", str(tmp_path / "p.csv")] if command == "predict" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "class folder(s) 'horse' name no class of the model" in err
    assert "'airplane', 'cat', 'dog', 'ship'" in err
    assert not (tmp_path / "p.csv").exists()


# ----------------------------------------------------------- backbone errors


def test_default_backbone_offline_fails_fast_once_with_cli_advice(tmp_path):
    # The default backbone (CLIP ViT-B/16, OpenAI weights) with nothing cached
    # and HF_HUB_OFFLINE=1: one error line, before any data is read, with
    # the command's advice (options, not Python keywords).
    env = checkout_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
                       HF_HUB_CACHE=str(tmp_path / "hf" / "hub"))
    env.pop("LIFTLEARN_DEBUG", None)
    res = subprocess.run(
        [sys.executable, "-m", "liftlearn", "fit", "--data", "cifar10-lt-sample",
         "--out", str(tmp_path / "m.safetensors")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr  # no copy from open_clip's root logger, no "loading"
    (line,) = lines
    assert line.startswith("liftlearn fit: error: the weights of backbone 'ViT-B-16-quickgelu'")
    assert "HF_HUB_OFFLINE is set" in line and "HF_HUB_OFFLINE=1" not in line
    assert "--pretrained /path/to/file" in line and "pretrained='" not in line
    assert ".." not in line
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backbone", "ViT-B-16-SigLIP", "--pretrained", "none"],
         "backbone 'ViT-B-16-SigLIP' is not supported (a SigLIP model)"),
        (["--backbone", "EVA02-B-16", "--pretrained", "none"], "a timm image tower"),
        (["--backbone", "liftlearn-tiny-vit", "--pretrained", "no-such-tag"],
         "Known tags for 'liftlearn-tiny-vit'"),
    ],
)
def test_backbone_problems_are_named_before_any_data(argv, message, tmp_path, capsys, monkeypatch):
    import liftlearn.cli as cli

    monkeypatch.setattr(cli, "load_data", lambda *a, **k: pytest.fail("data loaded first"))
    assert main(["fit", "--data", "cifar10-lt-sample", *argv, "--out",
                 str(tmp_path / "m.joblib")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- model files


def test_out_suffix_picks_the_format_or_is_refused(tmp_path, capsys, monkeypatch):
    import liftlearn.cli as cli

    monkeypatch.setattr(cli, "load_data", lambda *a, **k: pytest.fail("data loaded first"))
    assert main(["fit", "--data", "cifar10-lt-sample", *TINY, "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "suffix '.pt'" in err
    assert ".safetensors" in err and ".joblib" in err and ".pkl" in err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(UserError, match="no suffix"):
        cli.save_model(object(), tmp_path / "model")


@pytest.mark.parametrize("out", ["/proc/liftlearn-no-such-dir/m.joblib", "/proc/m.joblib"])
def test_out_is_checked_writable_before_training(out, capsys, monkeypatch):
    import liftlearn.cli as cli

    monkeypatch.setattr(cli, "load_data", lambda *a, **k: pytest.fail("data loaded first"))
    assert main(["fit", "--data", "cifar10-lt-sample", *TINY, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("liftlearn fit: error: --out") and out in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_model_file_is_written_atomically(model_file, tmp_path, monkeypatch):
    import joblib

    import liftlearn.cli as cli

    clf = joblib.load(model_file)
    target = tmp_path / "model.joblib"
    target.write_bytes(b"the previous model")

    def dies_half_way(obj, path):
        Path(path).write_bytes(b"half a pickle")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(joblib, "dump", dies_half_way)
    with pytest.raises(OSError) as exc:
        cli.save_model(clf, target)
    assert target.read_bytes() == b"the previous model"
    assert "model file" in str(exc.value) and exc.value.errno == 28
    assert [p.name for p in tmp_path.iterdir()] == ["model.joblib"]  # no temporary left


def test_predict_out_may_not_be_the_model(model_file, tmp_path, capsys):
    model = tmp_path / "m.joblib"
    model.write_bytes(model_file.read_bytes())
    before = model.read_bytes()
    from liftlearn.datasets import load_cifar10_lt_sample

    path = load_cifar10_lt_sample("test")[0][0]
    for out in (str(model), str(tmp_path / "." / "m.joblib")):
        assert main(["predict", "--model", str(model), path, "--out", out, "-q"]) == 2
        assert "is the file given to --model" in capsys.readouterr().err
    assert model.read_bytes() == before


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "it holds a dict"),
        (b"", "it is empty"),
        (b"path,label\na.png,0\n", "neither a .safetensors nor a joblib file"),
        (b"\x80\x04garbage", "is not a readable liftlearn model file"),
    ],
)
def test_predict_with_a_file_that_is_no_model(content, message, tmp_path, capsys):
    import joblib

    model = tmp_path / "model.joblib"
    if content is None:
        joblib.dump({"classes": [0, 1]}, model)
    else:
        model.write_bytes(content)
    assert main(["predict", "--model", str(model), "a.png", "--out", "-"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "liftlearn predict: error:" in err and message in err
    if content is None:
        assert "is not a liftlearn model file" in err


def test_predict_non_utf8_file_names(model_file, tmp_path, capsysbinary):
    # A file name that is not UTF-8 (Latin-1 'é') reaches Python as a
    # surrogate escape; the CSV names the file with its own bytes.
    from liftlearn.datasets import load_cifar10_lt_sample

    src = load_cifar10_lt_sample("test")[0][0]
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(src, "rb") as f, open(raw, "wb") as g:
        g.write(f.read())
    name = os.fsdecode(raw)
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(model_file), name, "--out", str(out), "-q"]) == 0
    data = out.read_bytes()
    assert raw in data and data.startswith(b"path,label,class_name,probability")
    capsysbinary.readouterr()
    assert main(["predict", "--model", str(model_file), name, "--out", "-", "-q"]) == 0
    assert raw in capsysbinary.readouterr().out


# --------------------------------------------------------------- estimators


def test_fit_zero_shot(tmp_path, capsys):
    import liftlearn

    out = tmp_path / "zs.safetensors"
    assert main(["fit", "--estimator", "zero-shot", "--data", "cifar10-lt-sample", "--backbone",
                 "liftlearn-tiny-vit", "--pretrained", "none", "--max-train", "30",
                 "--device", "cpu", "--param", "tte=false", "-q", "--out", str(out)]) == 0
    clf = liftlearn.load(out)
    assert type(clf).__name__ == "ZeroShotClassifier" and len(clf.class_names_) == 10
    assert main(["evaluate", "--model", str(out), "--data", "cifar10-lt-sample",
                 "--max-test", "20", "-q"]) == 0
    assert "balanced accuracy" in capsys.readouterr().out
    # Options of the trained estimators do not apply.
    assert main(["fit", "--estimator", "zero-shot", "--data", "cifar10-lt-sample",
                 "--epochs", "3", "--out", str(out)]) == 2
    assert "--epochs does not apply to --estimator zero-shot" in capsys.readouterr().err


def test_fit_ulfine_reads_the_unlabeled_folder(tmp_path, capsys, monkeypatch):
    import logging

    import joblib

    from liftlearn.nn.backbones import clear_backbone_cache

    _image_tree(tmp_path / "train", {"cat": 3, "dog": 3, "unlabeled": 4})
    out = tmp_path / "ulfine.joblib"
    # -q: nothing on stderr at all, open_clip's note on random weights
    # included. Logging as in a plain process (no handler on root, root at
    # WARNING), and a backbone built afresh so that open_clip speaks.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    old_level = root.level
    root.setLevel(logging.WARNING)
    clear_backbone_cache()
    try:
        code = main(["fit", "--estimator", "ulfine", "--data", "imagefolder", "--root",
                     str(tmp_path), *TINY, "--device", "cpu", "--param", "batch_size=4",
                     "--param", "tte=false", "-q", "--out", str(out)])
    finally:
        root.setLevel(old_level)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == "" and captured.out.strip() == f"model written to {out}"
    clf = joblib.load(out)
    assert type(clf).__name__ == "ULFineClassifier"
    assert clf.class_names_ == ["cat", "dog"] and clf.n_unlabeled_ == 4
    assert list(clf.class_counts_) == [3, 3]


def test_unlabeled_folder_is_refused_for_lift_plus(tmp_path, capsys):
    _image_tree(tmp_path / "train", {"cat": 1, "unlabeled": 1})
    assert main(["fit", "--data", "imagefolder", "--root", str(tmp_path), *TINY,
                 "--out", str(tmp_path / "m.joblib")]) == 2
    assert "only --estimator ulfine learns from" in capsys.readouterr().err


def test_the_plot_names_classes_as_the_report_does(model_file, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import liftlearn.metrics as metrics

    real, seen = metrics.plot_per_class_accuracy, {}

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "plot_per_class_accuracy", recording)
    assert main(["evaluate", "--model", str(model_file), "--data", "cifar10-lt-sample",
                 "--max-test", "20", "--plot", str(tmp_path / "p.png"), "-q"]) == 0
    model = cli.load_model(model_file)
    assert list(seen["target_names"]) == list(model.class_names_)
    assert (tmp_path / "p.png").stat().st_size > 0
    # -q: the report alone, no warning about classes without test images.
    assert "Warning" not in capsys.readouterr().err
