"""examples/ablation.py: the LIFT+ study's ablation tables from GridSearchCV."""

import importlib.util
import math

import numpy as np
import pytest

from conftest import REPO


def _load_example():
    spec = importlib.util.spec_from_file_location("ablation", REPO / "examples" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_tables():
    return _load_example().main(["--smoke", "--device", "cpu"])


def test_the_study_grid_prints_one_row_per_configuration(smoke_tables, capsys):
    rows = smoke_tables["study"]
    combos = {(r["classifier"], r["loss"], r["classifier_init"]) for r in rows}
    assert combos == {(c, l, i) for c in ("cosine", "linear") for l in ("la", "ce")
                      for i in ("semantic", "class_mean")}
    for r in rows:
        for column in ("accuracy", "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"):
            assert 0 <= r[column] <= 100 and not math.isnan(r[column])
    # The options really differ: not every configuration scores the same.
    assert len({tuple(round(r[c], 6) for c in ("accuracy", "few_shot_accuracy")) for r in rows}) > 1


def test_the_aft_grid_sweeps_the_ratio(smoke_tables):
    assert [r["aft_ratio"] for r in smoke_tables["aft"]] == [0.01, 0.3]


def test_the_table_has_many_medium_few_columns():
    module = _load_example()
    text = module.format_table(
        [{"loss": "la", "accuracy": 50.0, "many_shot_accuracy": 60.0,
          "medium_shot_accuracy": 40.0, "few_shot_accuracy": 12.5}], ["loss"])
    assert text.splitlines()[0] == "| loss | overall | many | medium | few |"
    assert text.splitlines()[2] == "| la | 50.0 | 60.0 | 40.0 | 12.5 |"


def test_the_search_fits_on_train_and_scores_on_test_once():
    module = _load_example()
    X, y, cv = module.train_test_search_data(["a", "b", "c"], [0, 1, 0], ["d", "e"], [1, 0])
    (train, test), = list(cv.split(X, y))
    assert train.tolist() == [0, 1, 2] and test.tolist() == [3, 4]
    assert np.array_equal(y, [0, 1, 0, 1, 0])


def test_the_docstring_documents_the_real_weights_command():
    doc = _load_example().__doc__
    assert "--pretrained openai" in doc and "--smoke" in doc
