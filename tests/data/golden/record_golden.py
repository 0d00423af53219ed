"""Record the golden reference numbers and legacy model files for tests/test_golden.py.

Run with PYTHONPATH pointing to a checkout of commit
8126e48e2b85b022d6f701513c0bb205185eee99 (the commit the files next to this
script were recorded from), from the root of that checkout, e.g.::

    git worktree add /tmp/golden_wt 8126e48e2b85b022d6f701513c0bb205185eee99
    cd /tmp/golden_wt
    HF_HUB_OFFLINE=1 PYTHONPATH=/tmp/golden_wt \\
        python /path/to/tests/data/golden/record_golden.py --out /some/dir

Check first that ``python -c "import liftlearn; print(liftlearn.__file__)"``
points into that checkout (an editable install of another checkout must not
win). The script refuses to run against another commit unless
``--any-commit`` is given.

What it writes (into ``--out``, default: this script's folder):

* ``golden.json``: the commit, library versions, the chosen sample indices
  (and the sample-relative file names, to detect a changed sample), each
  setting's estimator and constructor parameters, and each setting's
  ``history_`` without the ``"seconds"`` key, floats stored as
  ``float.hex()`` (lossless).
* ``golden.npz``: per setting ``<key>__proba`` (``predict_proba`` on the test
  subset, float64 as produced) and, for ULFine, ``<key>__transduction`` and
  ``<key>__unlabeled_prior``.
* ``legacy/``: models written by this commit, to check that later versions
  still load them: ``lift_adaptformer.joblib`` and
  ``lift_adaptformer.safetensors`` (setting ``a``), ``ulfine.joblib``
  (setting ``g``), and ``legacy_proba.npz`` with the loaded models'
  ``predict_proba`` on the test subset (equal to the settings' own), keyed
  by file name with "." replaced by "_".

Everything runs on the CPU with ``torch.set_num_threads(2)`` (as
tests/conftest.py does on a machine with two or more cores), the tiny
random-weight backbone (``backbone="liftlearn-tiny-vit", pretrained=None``)
and ``random_state=0``.

Re-recording chosen settings
----------------------------
A change that moves some settings' numbers on purpose re-records only
those, against the current tree, and merges them into the existing files::

    HF_HUB_OFFLINE=1 python tests/data/golden/record_golden.py \
        --rerecord g_ulfine i_ulfine_threshold02 \
        --reason "issue 16: ULFine updates once per optimizer step, ..."

It fits the named settings with the liftlearn that ``import liftlearn``
finds (check it is this checkout), replaces their ``history``,
``<key>__*`` arrays and adds a ``recorded`` entry (commit of the tree, and
whether it had uncommitted changes, library versions, reason) to each;
every other setting, the sample indices and ``legacy/`` are left exactly as
they were (the legacy files keep the predictions of the commit that wrote
them). Both files are written atomically. ``--check-only`` fits and reports
which of the named settings moved, writing nothing.

Settings re-recorded so far (see each setting's ``recorded`` entry):

- ``g_ulfine`` and ``i_ulfine_threshold02`` (issue 16): ULFine's running
  estimates change once per optimizer step, the weak view is FixMatch's,
  the strong view adds random-magnitude RandAugment and Cutout, and the
  orthogonality constraint acts on the textual prototypes.
  ``h_ulfine_tte_nopaf`` did not move (no pseudo-label reaches the 0.7
  threshold on the random backbone and PAF is off, so nothing it computes
  changed) and keeps its original record.
- Every setting (issue 14), against the records above: every ViT block runs
  one SDPA attention on the packed projection instead of open_clip's
  ``nn.MultiheadAttention``, and text features come from prompts cut to the
  chunk's longest prompt (exact up to rounding for CLIP's causal,
  end-of-text-pooled text tower). Both move the numbers by float rounding
  only; the sizes are in each setting's ``recorded`` reason. The legacy
  files keep the predictions of the commit that wrote them;
  ``tests/test_golden.py`` compares today's predictions of those files to
  them within 1e-6.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RECORDED_COMMIT = "8126e48e2b85b022d6f701513c0bb205185eee99"
N_TRAIN_PER_CLASS = 8  # or all of a class's images where it has fewer (class 9 has 5)
N_TEST_PER_CLASS = 3

COMMON = dict(backbone="liftlearn-tiny-vit", pretrained=None, device="cpu", random_state=0, batch_size=16)

# key -> (estimator, constructor parameters besides COMMON and class_names)
SETTINGS = {
    "a_adaptformer_tte": ("LiftPlusClassifier", dict(adapter="adaptformer", epochs=2, tte=True)),
    "b_adaptformer": ("LiftPlusClassifier", dict(adapter="adaptformer", epochs=2, tte=False)),
    "c_adaptformer_dbs8": ("LiftPlusClassifier", dict(adapter="adaptformer", epochs=2, tte=False, device_batch_size=8)),
    "d_ssf": ("LiftPlusClassifier", dict(adapter="ssf", epochs=2, tte=False)),
    "e_vpt_tte": ("LiftPlusClassifier", dict(adapter="vpt", epochs=1, tte=True)),
    "f_full": ("LiftPlusClassifier", dict(adapter="full", epochs=1, tte=False)),
    "g_ulfine": ("ULFineClassifier", dict(epochs=2, tte=False)),
    "h_ulfine_tte_nopaf": ("ULFineClassifier", dict(epochs=2, tte=True, paf=False)),
    # Extra: with the random tiny backbone no prediction reaches the default
    # threshold (0.7), so g and h never keep a pseudo-label (uniform
    # unlabeled_prior_, no unlabeled loss). 0.2 keeps some, which exercises
    # the pseudo-label, P_u and transduction_ paths.
    "i_ulfine_threshold02": ("ULFineClassifier", dict(epochs=2, tte=False, threshold=0.2)),
    # Recorded after LoRA's init fix (issue 12), with --rerecord: the old
    # code initialised LoRA's down-projection with the width as fan-in.
    "j_lora": ("LiftPlusClassifier", dict(adapter="lora", epochs=2, tte=False)),
}


def subset_indices(y, per_class):
    """The first ``per_class`` images of each class (all where fewer), by index."""
    return np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]).astype(np.int64)


def ssl_labels(y):
    """Every second image of the subset (odd positions) marked unlabeled."""
    return np.where(np.arange(len(y)) % 2 == 0, y, -1).astype(np.int64)


def sample_relative(path):
    parts = Path(path).parts
    return "/".join(parts[parts.index("cifar10_lt") + 1:])


def encode(value):
    """JSON form of a history value, floats as float.hex() (lossless)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return {"float_hex": float(value).hex()}
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [encode(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} {value!r}")


def history_without_seconds(history):
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]


def git_head(path):
    try:
        return subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_dirty(path):
    """Whether the checkout has uncommitted changes to tracked files (None if unknown)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(out.strip())


def _atomic_write(path, write):
    """``write(tmp_path)`` then rename over ``path``: never a torn file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rerecord(keys, out, reason, check_only=False):
    """Fit ``keys`` on the current tree and merge them into ``out``'s files."""
    import open_clip
    import sklearn

    import liftlearn
    from liftlearn import LiftPlusClassifier, ULFineClassifier
    from liftlearn.datasets import load_cifar10_lt_sample

    unknown = [k for k in keys if k not in SETTINGS]
    if unknown:
        sys.exit(f"unknown setting(s) {unknown}; known: {list(SETTINGS)}")
    out = Path(out)
    meta = json.loads((out / "golden.json").read_text(encoding="utf-8"))
    with np.load(out / "golden.npz") as z:
        arrays = {k: z[k] for k in z.files}
    checkout = Path(liftlearn.__file__).resolve().parents[1]
    commit, dirty = git_head(checkout), git_dirty(checkout)
    print(f"liftlearn from {liftlearn.__file__} (commit {commit}, uncommitted changes: {dirty}), "
          f"torch threads {torch.get_num_threads()}")
    if torch.get_num_threads() != meta["torch_num_threads"]:
        sys.exit(f"record with --threads {meta['torch_num_threads']}, as the other settings were")

    X, y, names = load_cifar10_lt_sample("train")
    Xt, _, _ = load_cifar10_lt_sample("test")
    if list(names) != meta["class_names"]:
        sys.exit("the embedded sample's class names changed; re-record everything instead")
    X_train = [X[i] for i in meta["train_indices"]]
    X_test = [Xt[i] for i in meta["test_indices"]]
    if [sample_relative(p) for p in X_train] != meta["train_files"] or \
            [sample_relative(p) for p in X_test] != meta["test_files"]:
        sys.exit("the embedded sample's files changed; re-record everything instead")
    y_train = np.asarray(y)[meta["train_indices"]]
    estimators = {"LiftPlusClassifier": LiftPlusClassifier, "ULFineClassifier": ULFineClassifier}
    versions = {
        "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
        "open_clip": open_clip.__version__, "sklearn": sklearn.__version__,
    }
    for key in keys:
        est_name, params = SETTINGS[key]
        clf = estimators[est_name](**meta["common_params"], **params, class_names=list(names))
        ssl = est_name == "ULFineClassifier"
        clf.fit(X_train, ssl_labels(y_train) if ssl else y_train)
        new = {f"{key}__proba": clf.predict_proba(X_test)}
        if ssl:
            new[f"{key}__transduction"] = clf.transduction_
            new[f"{key}__unlabeled_prior"] = clf.unlabeled_prior_
        history = encode(history_without_seconds(clf.history_))
        moved = key not in meta["settings"] or history != meta["settings"][key]["history"] or any(
            k not in arrays or arrays[k].dtype != v.dtype or not np.array_equal(arrays[k], v)
            for k, v in new.items()
        )
        print(f"{key}: {'moved' if moved else 'unchanged'}")
        if check_only:
            continue
        arrays.update(new)
        meta["settings"][key] = {
            "estimator": est_name, "params": params, "ssl": ssl, "history": history,
            "recorded": {"commit": commit, "uncommitted_changes": dirty, "versions": versions,
                         "reason": reason},
        }
    if check_only:
        return

    def write_json(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")

    _atomic_write(out / "golden.json", write_json)
    # np.savez appends ".npz" to names without it: give it an open file.
    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **{k: arrays[k] for k in sorted(arrays)})

    _atomic_write(out / "golden.npz", write_npz)
    print(f"merged {keys} into {out / 'golden.json'} and {out / 'golden.npz'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="record only these setting keys")
    parser.add_argument("--reverse", action="store_true", help="fit the settings in reverse order")
    parser.add_argument("--no-legacy", action="store_true", help="skip the legacy/ model files")
    parser.add_argument("--any-commit", action="store_true")
    parser.add_argument("--rerecord", nargs="+", metavar="KEY",
                        help="re-record only these settings against the current tree and merge "
                             "them into the existing files in --out (see the docstring)")
    parser.add_argument("--reason", help="why the settings moved (required with --rerecord)")
    parser.add_argument("--check-only", action="store_true",
                        help="with --rerecord: report which settings moved, write nothing")
    args = parser.parse_args(argv)

    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly"
    torch.set_num_threads(args.threads)
    if args.rerecord:
        if not args.reason and not args.check_only:
            sys.exit("--rerecord needs --reason: say which change moved the numbers")
        rerecord(args.rerecord, args.out, args.reason, check_only=args.check_only)
        return

    import joblib
    import open_clip
    import sklearn

    import liftlearn
    from liftlearn import LiftPlusClassifier, ULFineClassifier
    from liftlearn.datasets import load_cifar10_lt_sample

    checkout = Path(liftlearn.__file__).resolve().parents[1]
    commit = git_head(checkout)
    print(f"liftlearn from {liftlearn.__file__} (commit {commit}), torch threads {torch.get_num_threads()}")
    if commit != RECORDED_COMMIT and not args.any_commit:
        sys.exit(f"liftlearn comes from commit {commit}, not {RECORDED_COMMIT}; pass --any-commit to record anyway")

    estimators = {"LiftPlusClassifier": LiftPlusClassifier, "ULFineClassifier": ULFineClassifier}
    X, y, names = load_cifar10_lt_sample("train")
    Xt, yt, _ = load_cifar10_lt_sample("test")
    idx, tidx = subset_indices(y, N_TRAIN_PER_CLASS), subset_indices(yt, N_TEST_PER_CLASS)
    X_train, y_train = [X[i] for i in idx], y[idx]
    X_test = [Xt[i] for i in tidx]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "commit": commit,
        "versions": {
            "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "open_clip": open_clip.__version__, "sklearn": sklearn.__version__,
        },
        "torch_num_threads": torch.get_num_threads(),
        "class_names": list(names),
        "train_indices": idx.tolist(),
        "train_files": [sample_relative(p) for p in X_train],
        "test_indices": tidx.tolist(),
        "test_files": [sample_relative(p) for p in X_test],
        "ssl_rule": "y_ssl = where(arange(n) % 2 == 0, y_subset, -1)",
        "common_params": COMMON,
        "settings": {},
    }
    arrays = {}
    fitted = {}
    keys = [k for k in SETTINGS if not args.only or k in args.only]
    for key in (reversed(keys) if args.reverse else keys):
        est_name, params = SETTINGS[key]
        clf = estimators[est_name](**COMMON, **params, class_names=list(names))
        ssl = est_name == "ULFineClassifier"
        t0 = time.perf_counter()
        clf.fit(X_train, ssl_labels(y_train) if ssl else y_train)
        t1 = time.perf_counter()
        proba = clf.predict_proba(X_test)
        t2 = time.perf_counter()
        print(f"{key}: fit {t1 - t0:.2f}s, predict_proba {t2 - t1:.2f}s")
        arrays[f"{key}__proba"] = proba
        if ssl:
            assert clf.transduction_.dtype != object and clf.unlabeled_prior_.dtype != object
            arrays[f"{key}__transduction"] = clf.transduction_
            arrays[f"{key}__unlabeled_prior"] = clf.unlabeled_prior_
        meta["settings"][key] = {
            "estimator": est_name,
            "params": params,
            "ssl": ssl,
            "history": encode(history_without_seconds(clf.history_)),
        }
        fitted[key] = clf
    meta["settings"] = {k: meta["settings"][k] for k in keys}  # file order independent of --reverse

    with open(out / "golden.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    np.savez(out / "golden.npz", **{k: arrays[k] for k in sorted(arrays)})

    if not args.no_legacy and "a_adaptformer_tte" in fitted and "g_ulfine" in fitted:
        legacy = out / "legacy"
        legacy.mkdir(exist_ok=True)
        joblib.dump(fitted["a_adaptformer_tte"], legacy / "lift_adaptformer.joblib")
        liftlearn.save(fitted["a_adaptformer_tte"], legacy / "lift_adaptformer.safetensors")
        joblib.dump(fitted["g_ulfine"], legacy / "ulfine.joblib")
        # What the files give back when read (here, in the same process).
        loaded = {
            "lift_adaptformer.joblib": (joblib.load(legacy / "lift_adaptformer.joblib"), "a_adaptformer_tte"),
            "lift_adaptformer.safetensors": (liftlearn.load(legacy / "lift_adaptformer.safetensors"), "a_adaptformer_tte"),
            "ulfine.joblib": (joblib.load(legacy / "ulfine.joblib"), "g_ulfine"),
        }
        legacy_proba = {}
        for name, (model, key) in loaded.items():
            legacy_proba[name.replace(".", "_")] = proba = model.predict_proba(X_test)
            same = np.array_equal(proba, arrays[f"{key}__proba"])
            print(f"legacy/{name}: {(legacy / name).stat().st_size} bytes, predict_proba equal to {key}: {same}")
            if not same:
                sys.exit(f"legacy/{name} predicts differently from setting {key}")
        np.savez(legacy / "legacy_proba.npz", **legacy_proba)


if __name__ == "__main__":
    main()
