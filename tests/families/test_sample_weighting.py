"""sample_weighting: derived label and weights by hand, validation, and a run through mtlkit train / predict."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.cli import main
from mtlkit.data.datasets import Splits
from mtlkit.data.table import Table
from mtlkit.families import create_family
from mtlkit.families.sample_weighting import TASK, WEIGHT_COLUMN, SampleWeighting
from mtlkit.training.run import build_splits, evaluate_run, load_config, load_run

NAN = math.nan
SCHEMA = Schema(
    (Feature("x", "numeric"),),
    (Task("impression_only"), Task("click"), Task("conversion")),
)
#: rows: conversion+click, click only, nothing, all unknown, click unknown and no conversion, conversion only
LABELS = [
    [0, 1, 1],
    [0, 1, 0],
    [0, 0, 0],
    [0, NAN, NAN],
    [0, NAN, 0],
    [0, NAN, 1],
]


def _table(weights: list[float] | None = None) -> Table:
    n = len(LABELS)
    return Table(
        SCHEMA,
        torch.zeros(n, 0, dtype=torch.int64),
        torch.arange(n, dtype=torch.float32).unsqueeze(1),
        torch.tensor(LABELS, dtype=torch.float32),
        None if weights is None else torch.tensor(weights),
    )


def _family(**params: object) -> SampleWeighting:
    family = create_family("sample_weighting", SCHEMA, **params)
    assert isinstance(family, SampleWeighting)
    return family


def test_labels_and_weights_by_hand() -> None:
    family = _family(actions={"conversion": 1.0, "click": 0.2}, negative_weight=0.5)
    label, weight = family.labels_and_weights(_table())
    torch.testing.assert_close(label, torch.tensor([1.0, 1.0, 0.0, NAN, 0.0, 1.0]), equal_nan=True)
    # positives take the largest weight among their actions; negatives (and the masked row) negative_weight
    torch.testing.assert_close(weight, torch.tensor([1.0, 0.2, 0.5, 0.5, 0.5, 1.0]))


def test_the_largest_weight_wins_whatever_the_order_of_actions() -> None:
    """A row with click and conversion gets the max weight, also when the lighter action is listed first."""
    a = _family(actions={"click": 0.2, "conversion": 1.0}).labels_and_weights(_table())[1]
    b = _family(actions={"conversion": 1.0, "click": 0.2}).labels_and_weights(_table())[1]
    torch.testing.assert_close(a, b)
    heavy_click = _family(actions={"click": 3.0, "conversion": 1.0}).labels_and_weights(_table())[1]
    assert heavy_click.tolist()[:2] == [3.0, 3.0]


def test_the_data_sets_own_weights_multiply() -> None:
    family = _family(actions={"conversion": 1.0, "click": 0.2})
    _, weight = family.labels_and_weights(_table([2.0, 3.0, 4.0, 1.0, 1.0, 0.5]))
    torch.testing.assert_close(weight, torch.tensor([2.0, 0.6, 4.0, 1.0, 1.0, 0.5]))


def test_training_splits_have_one_weighted_task_and_the_same_features() -> None:
    family = _family(actions={"conversion": 1.0, "click": 0.2})
    table = _table()
    out = family.training_splits(Splits("t", table, table, table, "note"))
    assert out.schema.task_names == (TASK,)
    assert out.schema.sample_weight == WEIGHT_COLUMN
    assert out.schema.features == SCHEMA.features
    assert out.train.numeric is table.numeric  # shared, not copied
    assert out.train.labels.shape == (6, 1)
    assert out.train.weights is not None
    assert "sample_weighting" in out.note


def test_task_scores_give_every_task_the_one_score() -> None:
    family = _family(actions={"click": 1.0})
    p = torch.tensor([0.1, 0.9])
    scores = family.task_scores({TASK: p})
    assert set(scores) == {"impression_only", "click", "conversion", "score"}
    for value in scores.values():
        assert value is p


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "actions must map tasks"),
        ({"actions": {"purchase": 1.0}}, "'purchase', which is not a task"),
        ({"actions": {"click": 0.0}}, r"actions\['click'\] must be a finite number > 0, got 0.0"),
        (
            {"actions": {"click": 1.0}, "negative_weight": -1.0},
            "negative_weight must be a finite number > 0, got -1.0",
        ),
        ({"actions": ["click"]}, "actions must map tasks to weights"),
    ],
)
def test_bad_parameters_are_errors_naming_the_value(params: dict[str, object], message: str) -> None:
    with pytest.raises(MtlkitError, match=message):
        create_family("sample_weighting", SCHEMA, **params)


def test_a_non_binary_task_is_an_error() -> None:
    schema = Schema((Feature("x", "numeric"),), (Task("click"), Task("time", "regression")))
    with pytest.raises(MtlkitError, match="task 'time' is regression"):
        create_family("sample_weighting", schema, actions={"click": 1.0})


def test_train_writes_metrics_of_the_original_tasks(
    funnel_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = funnel_config()
    out = tmp_path / "run"
    args = ["train", str(config), "--out", str(out), "--set", "family.name=sample_weighting"]
    args += ["--set", "family.params.actions={conversion: 1.0, click: 0.2}"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for part in ("valid", "test"):
        assert set(metrics[part]) == {"click", "conversion", "mean"}
        assert {"auc", "gauc"} <= set(metrics[part]["click"])
        assert 0.6 < metrics[part]["click"]["auc"] <= 1.0  # the any-action score ranks clicks
    assert "family sample_weighting" in metrics["note"]
    history = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert f"loss_{TASK}" in history
    assert f"valid_{TASK}_auc" in history

    # evaluate_run on the data set's own splits reproduces metrics.json
    run = load_run(out, device="cpu")
    splits = build_splits(load_config(out / "config.yaml"))
    again = evaluate_run(run, splits.test)
    assert again.keys() == metrics["test"].keys()
    for task, values in again.items():
        assert values == pytest.approx(metrics["test"][task], rel=1e-9, nan_ok=True)

    # predict writes one column per original task and the family's score, all equal
    predicted = tmp_path / "pred.csv"
    data = load_config(config).data.test
    assert data is not None
    assert main(["predict", str(out), data, str(predicted)]) == 0
    table = pacsv.read_csv(predicted)
    assert table.column("pred_click").to_pylist() == table.column("pred_conversion").to_pylist()
    assert table.column("pred_score").to_pylist() == table.column("pred_click").to_pylist()


def test_monitoring_a_data_set_task_the_family_does_not_train_is_a_clear_error(
    funnel_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    training = {
        "epochs": 1,
        "progress": False,
        "device": "cpu",
        "early_stopping": {"monitor": "valid.click.auc"},
    }
    config = funnel_config(training=training)
    args = ["train", str(config), "--out", str(tmp_path / "run"), "--set", "family.name=sample_weighting"]
    assert main([*args, "--set", "family.params.actions={click: 1.0}"]) == 2
    error = capsys.readouterr().err
    assert "early stopping cannot watch 'click'" in error
    assert "monitor 'valid.mean.auc'" in error


def test_a_model_that_cannot_serve_the_derived_task_is_a_clear_error(
    funnel_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = funnel_config(model={"name": "esmm"})  # ESMM needs a CTR task and a CVR task
    args = ["train", str(config), "--out", str(tmp_path / "run"), "--set", "family.name=sample_weighting"]
    assert main([*args, "--set", "family.params.actions={click: 1.0}"]) == 2
    error = capsys.readouterr().err
    assert "family 'sample_weighting' trains the model on 'any' instead of the data set's tasks" in error
    assert "ESMM needs a CTR task and a CVR task" in error
