"""Gradient conflict monitor: norms and cosines match per-task backward passes, the CSV follows the agreed format,
and training is unchanged by it."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mtlkit import MtlkitError, load_dataset
from mtlkit.analysis.conflicts import (
    GradientConflicts,
    conflict_columns,
    gram_statistics,
    shared_task_jacobian,
)
from mtlkit.data.datasets import Splits
from mtlkit.data.table import Table
from mtlkit.losses import LossSet
from mtlkit.models import create_model
from mtlkit.training import Trainer, TrainingOptions
from mtlkit.training.callbacks import Callback
from mtlkit.weighting import create_weighting


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_dataset(
        "synthetic", binary=True, train_rows=320, valid_rows=100, test_rows=50, dim=10, tasks=3
    )


def _trainer(splits: Splits, model_name: str = "mmoe", callbacks: list[Callback] | None = None, **params):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    defaults = {
        "mmoe": {"num_experts": 3, "expert_sizes": [8], "tower_sizes": [4]},
        "shared_bottom": {"bottom_sizes": [16], "tower_sizes": [4]},
        "single_task": {"bottom_sizes": [8], "tower_sizes": [4]},
    }[model_name]
    model = create_model(model_name, splits.schema, **{**defaults, **params})
    options = TrainingOptions(epochs=1, batch_size=64, lr=0.01, progress=False, monitor=None)
    balancer = create_weighting("static", splits.schema)
    return Trainer(model, balancer, options, seed=0, device="cpu", callbacks=callbacks or [])


def test_norms_and_cosines_equal_one_backward_per_task(splits: Splits) -> None:
    trainer = _trainer(splits)
    callback = GradientConflicts(1, None)
    batch = next(splits.train.batches(64, shuffle=False))
    trainer.global_step = 1
    callback.on_step_end(trainer, batch)
    (row,) = callback.rows

    model = trainer.model
    shared = list(model.shared_parameters())
    out = model(batch)
    losses = LossSet(splits.schema)(out.logits, batch.labels, batch.weights)
    grads = []
    for i in range(len(splits.schema.tasks)):
        pieces = torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)
        grads.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for g, p in zip(pieces, shared, strict=True)
                ]
            )
        )
    tasks = splits.schema.task_names
    for i, a in enumerate(tasks):
        assert row[f"norm_{a}"] == pytest.approx(float(grads[i].norm()), rel=1e-5, abs=1e-7)
        for j in range(i + 1, len(tasks)):
            expected = float(torch.nn.functional.cosine_similarity(grads[i], grads[j], dim=0))
            assert row[f"cos_{a}__{tasks[j]}"] == pytest.approx(expected, abs=1e-5)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind in .grad


def _identical_tasks(splits: Splits) -> Table:
    """The training table with every task's label replaced by task y1's."""
    t = splits.train
    labels = t.labels[:, :1].repeat(1, t.labels.shape[1]).contiguous()
    return Table(t.schema, t.categorical, t.numeric, labels, t.weights, t.groups, t.encoders)


def _tie_towers(model: torch.nn.Module, tasks: list[str]) -> None:
    state = model.state_dict()
    for key in state:
        for task in tasks[1:]:
            if f".{task}." in key:
                state[key] = state[key.replace(f".{task}.", f".{tasks[0]}.")].clone()
    model.load_state_dict(state)


def test_identical_tasks_have_cosine_one_on_shared_bottom(splits: Splits, tmp_path: Path) -> None:
    callback = GradientConflicts(2, tmp_path)
    trainer = _trainer(splits, "shared_bottom", [callback])
    _tie_towers(trainer.model, splits.schema.task_names)
    table = _identical_tasks(splits)
    trainer.fit(table)
    assert len(callback.rows) == table.num_batches(64) // 2
    for row in callback.rows:
        assert row["cos_y1__y2"] == pytest.approx(1.0, abs=1e-5)
        assert row["cos_y2__y3"] == pytest.approx(1.0, abs=1e-5)
        assert row["norm_y1"] == pytest.approx(row["norm_y3"], rel=1e-5)
        assert row["norm_y1"] > 0


def test_unrelated_gradients_are_not_reported_as_aligned(splits: Splits) -> None:
    norms, cosines = gram_statistics(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-3.0, 0.0, 0.0]]))
    assert norms.tolist() == pytest.approx([1.0, 2.0, 3.0])
    assert cosines[0, 1] == pytest.approx(0.0)
    assert cosines[0, 2] == pytest.approx(-1.0)
    _, zero = gram_statistics(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.isnan(zero[0, 1])
    assert torch.isnan(zero[1, 1])


def test_csv_has_exactly_the_agreed_columns(splits: Splits, tmp_path: Path) -> None:
    callback = GradientConflicts(3, tmp_path)
    trainer = _trainer(splits, callbacks=[callback])
    trainer.fit(splits.train)
    with open(tmp_path / "diagnostics" / "conflicts.csv", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    assert header == [
        "step", "epoch", "norm_y1", "norm_y2", "norm_y3", "cos_y1__y2", "cos_y1__y3", "cos_y2__y3",
    ]  # fmt: skip
    assert header == conflict_columns(["y1", "y2", "y3"])
    steps = splits.train.num_batches(64)
    assert [int(r[0]) for r in rows] == list(range(3, steps + 1, 3))
    assert {r[1] for r in rows} == {"1"}
    assert len(rows) == len(callback.rows)
    assert float(rows[0][2]) == pytest.approx(callback.rows[0]["norm_y1"])


def test_training_is_unchanged_by_the_monitor(splits: Splits) -> None:
    params = {"dropout": 0.3, "norm": "batch"}  # dropout draws and BatchNorm statistics must not be disturbed
    plain = _trainer(splits, "shared_bottom", **params)
    plain.fit(splits.train)
    plain_rng = torch.get_rng_state()
    callback = GradientConflicts(1, None)
    watched = _trainer(splits, "shared_bottom", [callback], **params)
    watched.fit(splits.train)
    assert torch.equal(torch.get_rng_state(), plain_rng)
    assert len(callback.rows) == splits.train.num_batches(64)
    for (key, a), b in zip(
        plain.model.state_dict().items(), watched.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    for a, b in zip(plain.model.parameters(), watched.model.parameters(), strict=True):
        assert a.grad is not None
        assert torch.equal(a.grad, b.grad)
    assert plain.history[0]["loss_y1"] == watched.history[0]["loss_y1"]


def test_model_without_shared_parameters_records_nothing(
    splits: Splits, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = GradientConflicts(1, tmp_path)
    trainer = _trainer(splits, "single_task", [callback])
    with caplog.at_level(logging.WARNING, logger="mtlkit.analysis.conflicts"):
        trainer.fit(splits.train)
    assert callback.rows == []
    assert not (tmp_path / "diagnostics" / "conflicts.csv").exists()
    assert sum("no shared parameters" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(MtlkitError, match="SingleTask"):
        shared_task_jacobian(trainer.model, trainer.losses, next(splits.train.batches(8)))


def test_resumed_fit_keeps_the_rows_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "diagnostics" / "conflicts.csv"
    path.parent.mkdir()
    path.write_text("step,epoch,norm_a,norm_b,cos_a__b\n2,1,1.0,2.0,0.5\n4,1,1.0,2.0,nan\n6,2,1.0,2.0,0.1\n")
    callback = GradientConflicts(2, tmp_path)
    schema = SimpleNamespace(task_names=["a", "b"])
    callback.on_fit_start(SimpleNamespace(global_step=4, schema=schema))  # type: ignore[arg-type]
    assert [r["step"] for r in callback.rows] == [2.0, 4.0]
    callback.on_fit_start(SimpleNamespace(global_step=0, schema=schema))  # type: ignore[arg-type]
    assert callback.rows == []  # a fresh fit starts over


def test_every_is_validated() -> None:
    with pytest.raises(ValueError, match="got 0"):
        GradientConflicts(0, None)
