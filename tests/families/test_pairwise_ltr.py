"""pairwise_ltr: grades by hand, validation, training splits, and training that ranks better than no training."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.cli import main
from mtlkit.data.datasets import Splits
from mtlkit.data.table import Table
from mtlkit.families import create_family
from mtlkit.families.pairwise_ltr import TASK, PairwiseLTR
from mtlkit.losses import PairwiseLogistic
from mtlkit.training.run import build_model, build_splits, family_metrics, load_config, load_run

NAN = math.nan
SCHEMA = Schema((Feature("x", "numeric"),), (Task("click"), Task("conversion")), group="request")
#: conversion+click, click only, nothing, all unknown, no click and unknown conversion, conversion only
LABELS = [[1, 1], [1, 0], [0, 0], [NAN, NAN], [0, NAN], [NAN, 1]]


def _table(groups: list[int] | None = (0, 0, 0, 1, 1, 1)) -> Table:  # type: ignore[assignment]
    n = len(LABELS)
    return Table(
        SCHEMA,
        torch.zeros(n, 0, dtype=torch.int64),
        torch.arange(n, dtype=torch.float32).unsqueeze(1),
        torch.tensor(LABELS, dtype=torch.float32),
        None,
        None if groups is None else torch.tensor(groups),
    )


def _family(**params: object) -> PairwiseLTR:
    family = create_family("pairwise_ltr", SCHEMA, **params)
    assert isinstance(family, PairwiseLTR)
    return family


def test_grades_follow_the_order_by_hand() -> None:
    grades = _family(order=["conversion", "click"]).grades(_table())
    torch.testing.assert_close(grades, torch.tensor([2.0, 1.0, 0.0, NAN, 0.0, 2.0]), equal_nan=True)
    reversed_order = _family(order=["click", "conversion"]).grades(_table())
    torch.testing.assert_close(reversed_order, torch.tensor([2.0, 2.0, 0.0, NAN, 0.0, 1.0]), equal_nan=True)
    one = _family(order=["click"]).grades(_table())
    torch.testing.assert_close(
        one, torch.tensor([1.0, 1.0, 0.0, NAN, 0.0, NAN]), equal_nan=True
    )  # click unknown


def test_training_splits_group_contiguous_batches_and_the_pairwise_loss() -> None:
    family = _family(order=["conversion", "click"], sigma=2.0)
    table = _table()
    out = family.training_splits(Splits("t", table, table, table, "note"))
    assert out.schema.task_names == (TASK,)
    assert out.train.group_batches
    assert not out.valid.group_batches
    torch.testing.assert_close(out.train.labels[:, 0], family.grades(table), equal_nan=True)
    losses = family.losses(out.schema)
    loss = losses.losses[TASK]
    assert isinstance(loss, PairwiseLogistic)
    assert loss.sigma == 2.0
    scores = family.task_scores({TASK: torch.tensor([0.3, 0.7])})
    assert set(scores) == {"click", "conversion", "score"}


def test_no_group_column_is_a_clear_error() -> None:
    schema = Schema((Feature("x", "numeric"),), (Task("click"), Task("conversion")))
    with pytest.raises(
        MtlkitError, match=r"no group column \(Schema.group\): with files, set data.schema.group"
    ):
        create_family("pairwise_ltr", schema, order=["conversion", "click"])


def test_a_table_without_group_ids_is_a_clear_error() -> None:
    family = _family(order=["click"])
    table = _table(groups=None)
    with pytest.raises(MtlkitError, match="no group ids"):
        family.training_splits(Splits("t", table, table, table, "note"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "order must list the action tasks"),
        ({"order": "click"}, "order must list the action tasks"),
        ({"order": ["click", "click"]}, "names 'click' twice"),
        ({"order": ["buy"]}, "'buy', which is not a task"),
        ({"order": ["click"], "sigma": 0.0}, "sigma must be > 0, got 0.0"),
    ],
)
def test_bad_parameters_are_errors_naming_the_value(params: dict[str, object], message: str) -> None:
    with pytest.raises(MtlkitError, match=message):
        create_family("pairwise_ltr", SCHEMA, **params)


def _ndcg(scores: np.ndarray, gains: np.ndarray, groups: np.ndarray) -> float:
    """Mean NDCG over the groups with a positive gain (linear gains, log2 discounts), written plainly."""
    values = []
    for g in np.unique(groups):
        s, y = scores[groups == g], gains[groups == g]
        if y.max() <= 0:
            continue
        discount = 1 / np.log2(np.arange(2, len(y) + 2))
        dcg = float((y[np.argsort(-s, kind="stable")] * discount).sum())
        values.append(dcg / float((np.sort(y)[::-1] * discount).sum()))
    return float(np.mean(values))


def test_training_through_mtlkit_train_ranks_better_than_the_untrained_model(
    funnel_config: Callable[..., Path], tmp_path: Path
) -> None:
    config_path = funnel_config()
    out = tmp_path / "run"
    args = ["train", str(config_path), "--out", str(out), "--set", "family.name=pairwise_ltr"]
    args += ["--set", "family.params.order=[conversion, click]"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for part in ("valid", "test"):
        assert set(metrics[part]) == {"click", "conversion", "mean"}
        assert {"auc", "gauc"} <= set(metrics[part]["conversion"])
    history = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert f"loss_{TASK}" in history
    assert f"valid_{TASK}_gauc" in history

    config = load_config(out / "config.yaml")
    data = build_splits(config)
    run = load_run(out, device="cpu")
    family = run.family
    assert isinstance(family, PairwiseLTR)
    grades = family.grades(data.test).numpy()
    groups = data.test.groups
    assert groups is not None

    untrained = load_run(out, device="cpu")
    untrained.trainer.model.load_state_dict(build_model(config, run.schema, family).state_dict())
    before = family_metrics(untrained.trainer, family, data.test)
    after = family_metrics(run.trainer, family, data.test)
    assert after == metrics["test"]
    for task in ("click", "conversion"):
        assert after[task]["gauc"] > before[task]["gauc"] + 0.2
    ndcg_before = _ndcg(untrained.task_scores(data.test)["score"].numpy(), grades, groups.numpy())
    ndcg_after = _ndcg(run.task_scores(data.test)["score"].numpy(), grades, groups.numpy())
    assert ndcg_after > ndcg_before + 0.15


def test_the_trainer_passes_each_batchs_groups_to_the_pairwise_loss() -> None:
    """One group per row makes no pair (loss 0, weights unchanged); one group for all rows makes pairs."""
    from mtlkit.balancing import create_balancer
    from mtlkit.models import create_model
    from mtlkit.training.trainer import Trainer, TrainingOptions

    n = 64
    g = torch.Generator().manual_seed(0)
    schema = Schema((Feature("x", "numeric"),), (Task(TASK),), group="request")
    x = torch.randn(n, 1, generator=g)
    grades = (x[:, 0] > 0).float() + (x[:, 0] > 1).float()
    options = TrainingOptions(epochs=1, batch_size=16, monitor=None, progress=False)
    losses_seen = []
    for groups in (torch.arange(n), torch.zeros(n, dtype=torch.int64)):
        table = Table(schema, torch.zeros(n, 0, dtype=torch.int64), x, grades.unsqueeze(1), None, groups)
        torch.manual_seed(0)
        model = create_model("shared_bottom", schema, bottom_sizes=[4], tower_sizes=[])
        start = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = Trainer(
            model,
            create_balancer("static", schema),
            options,
            device="cpu",
            losses=_family(order=["click"]).losses(schema),
        )
        history = trainer.fit(table.with_group_batches(True))
        losses_seen.append(history[0][f"loss_{TASK}"])
        changed = any(not torch.equal(v, start[k]) for k, v in model.state_dict().items())
        assert changed == (losses_seen[-1] > 0)
    assert losses_seen[0] == 0.0
    assert losses_seen[1] > 0.1


class _Stop(Exception):
    pass


def test_a_pairwise_run_resumed_from_its_checkpoint_ends_exactly_like_an_uninterrupted_one(
    funnel_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Group-contiguous batch order, the pairwise loss and Adam all continue exactly after a checkpoint."""
    from mtlkit.training.callbacks import Callback
    from mtlkit.training.checkpoint import load_checkpoint
    from mtlkit.training.run import build_balancer, options_from
    from mtlkit.training.trainer import Trainer

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
            raise _Stop

    config = load_config(
        funnel_config(family={"name": "pairwise_ltr", "params": {"order": ["conversion", "click"]}})
    )
    data = build_splits(config)
    family = create_family("pairwise_ltr", data.schema, order=["conversion", "click"])
    splits = family.training_splits(data)

    def trainer(out: Path, callbacks: list[Callback]) -> Trainer:
        return Trainer(
            build_model(config, splits.schema, family),
            build_balancer(config, splits.schema, family),
            options_from(config),
            seed=config.seed,
            device="cpu",
            out_dir=out,
            callbacks=callbacks,
            losses=family.losses(splits.schema),
        )

    whole = trainer(tmp_path / "whole", [])
    whole.fit(splits.train, splits.valid)
    with pytest.raises(_Stop):
        trainer(tmp_path / "cut", [StopAfterFirstEpoch()]).fit(splits.train, splits.valid)
    resumed = trainer(tmp_path / "cut", [])
    resumed.fit(splits.train, splits.valid, resume=load_checkpoint(tmp_path / "cut" / "checkpoint.pt"))
    assert resumed.history == [
        {**row, "seconds": r["seconds"]} for row, r in zip(whole.history, resumed.history, strict=True)
    ]
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_ranked_groups_counts_groups_that_yield_pairs() -> None:
    from mtlkit.families.pairwise_ltr import ranked_groups

    grades = torch.tensor([0.0, 1.0, 0.0, 0.0, 2.0, float("nan"), 1.0, 1.0])
    groups = torch.tensor([7, 7, 8, 8, 9, 9, 10, 10])
    # group 7: 0 vs 1 -> pairs; 8: all 0; 9: 2 and NaN -> one known grade; 10: equal grades
    assert ranked_groups(grades, groups) == 1
    assert ranked_groups(grades, None) == 0
