"""Searches on a Dask cluster through joblib's dask backend (CPU, local)."""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("distributed")

from conftest import REPO


def test_grid_search_on_a_local_dask_cluster(tmp_path):
    # In a subprocess: worker processes must import the estimator by name and
    # must not inherit pytest's state; nothing may touch CUDA at import.
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent("""
        import os
        os.environ["HF_HUB_OFFLINE"] = "1"
        import joblib, numpy as np
        from distributed import Client, LocalCluster
        from sklearn.model_selection import GridSearchCV
        from liftlearn import LiftPlusClassifier
        from liftlearn.datasets import load_cifar10_lt_sample

        if __name__ == "__main__":
            X, y, names = load_cifar10_lt_sample()
            idx = np.concatenate([np.flatnonzero(y == c)[:6] for c in range(10)])
            X, y = [X[i] for i in idx], y[idx]
            with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                est = LiftPlusClassifier(backbone="liftlearn-tiny-vit", pretrained=None,
                                         epochs=1, batch_size=16, random_state=0,
                                         class_names=names)
                search = GridSearchCV(est, {"lr": [0.01, 0.02]}, cv=2,
                                      scoring="balanced_accuracy", n_jobs=-1)
                with joblib.parallel_config("dask"):
                    search.fit(X, y)
                workers = len(client.scheduler_info()["workers"])
            print("RESULT", workers, len(search.cv_results_["mean_test_score"]),
                  search.best_estimator_.device_)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT")][0]
    assert line.split()[1:] == ["2", "2", "cpu"]
