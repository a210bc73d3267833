"""Lookahead task affinity (TAG): matches a hand-written lookahead, is symmetric for identical tasks, follows the
agreed file formats and leaves training unchanged."""

from __future__ import annotations

import copy
import csv
import json
import logging
from pathlib import Path

import pytest
import torch

from mtlkit import MtlkitError, load_dataset
from mtlkit.analysis.affinity import TaskAffinity, affinity_columns, lookahead_affinity
from mtlkit.data.datasets import Splits
from mtlkit.data.table import Batch
from mtlkit.losses import LossSet
from mtlkit.models import create_model
from mtlkit.training import Trainer, TrainingOptions
from mtlkit.training.callbacks import Callback
from mtlkit.weighting import create_weighting


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_dataset("synthetic", binary=True, train_rows=320, valid_rows=100, test_rows=50, dim=10)


def _model(splits: Splits, name: str = "mmoe", **params):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    defaults = {
        "mmoe": {"num_experts": 3, "expert_sizes": [8], "tower_sizes": [4]},
        "shared_bottom": {"bottom_sizes": [16], "tower_sizes": [4]},
        "single_task": {"bottom_sizes": [8], "tower_sizes": [4]},
    }[name]
    return create_model(name, splits.schema, **{**defaults, **params})


def _trainer(
    splits: Splits, name: str = "mmoe", callbacks: list[Callback] | None = None, **params
) -> Trainer:  # type: ignore[no-untyped-def]
    options = TrainingOptions(epochs=1, batch_size=64, lr=0.01, progress=False, monitor=None)
    return Trainer(
        _model(splits, name, **params),
        create_weighting("static", splits.schema),
        options,
        seed=0,
        device="cpu",
        callbacks=callbacks or [],
    )


def _hand_lookahead(model: torch.nn.Module, batch: Batch, lr: float, schema) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Z[i, j] by the definition: a float64 copy of the model, a manual SGD step on task i, task j's loss."""
    losses_of = LossSet(schema)
    b64 = Batch(batch.categorical, batch.numeric.double(), batch.labels, batch.weights, batch.groups)

    def losses(m: torch.nn.Module) -> torch.Tensor:
        out = m(b64)
        return losses_of(out.logits, batch.labels, batch.weights)

    base = copy.deepcopy(model).double()
    before = losses(base).detach()
    rows = []
    for i in range(len(schema.tasks)):
        stepped = copy.deepcopy(base)
        shared = list(stepped.shared_parameters())
        grads = torch.autograd.grad(losses(stepped)[i], shared, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(shared, grads, strict=True):
                if g is not None:
                    p -= lr * g
            rows.append(1.0 - losses(stepped) / before)
    return torch.stack(rows)


def test_matches_a_hand_written_lookahead(splits: Splits) -> None:
    model = _model(splits)
    batch = next(splits.train.batches(64, shuffle=False))
    z, before, after = lookahead_affinity(model, LossSet(splits.schema), batch, lr=0.05)
    expected = _hand_lookahead(model, batch, 0.05, splits.schema)
    assert z.shape == (2, 2)
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(1.0 - after / before, z)
    assert z[0, 0] > 0
    assert z[1, 1] > 0
    assert all(p.grad is None for p in model.parameters())


def test_identical_tasks_have_positive_symmetric_affinity(splits: Splits) -> None:
    model = _model(splits, "shared_bottom")
    state = model.state_dict()
    model.load_state_dict({k: state[k.replace(".y2.", ".y1.")] for k in state})  # tower y2 := tower y1
    batch = next(splits.train.batches(64, shuffle=False))
    labels = batch.labels[:, :1].repeat(1, 2)
    same = Batch(batch.categorical, batch.numeric, labels)
    z, _, _ = lookahead_affinity(model, LossSet(splits.schema), same, lr=0.01)
    assert z[0, 1] > 0
    assert z[0, 1] == pytest.approx(float(z[1, 0]), rel=1e-6)
    assert z[0, 1] == pytest.approx(float(z[0, 0]), rel=1e-6)


def test_files_follow_the_agreed_format(splits: Splits, tmp_path: Path) -> None:
    callback = TaskAffinity(2, None, tmp_path)
    trainer = _trainer(splits, callbacks=[callback])
    trainer.fit(splits.train)
    folder = tmp_path / "diagnostics"
    with open(folder / "affinity.csv", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    assert header == ["step", "epoch", "aff_y1__y2", "aff_y2__y1"] == affinity_columns(["y1", "y2"])
    steps = splits.train.num_batches(64)
    assert [int(r[0]) for r in rows] == list(range(2, steps + 1, 2))
    summary = json.loads((folder / "affinity.json").read_text())
    assert set(summary) == {"tasks", "matrix", "steps"}
    assert summary["tasks"] == ["y1", "y2"]
    assert summary["steps"] == len(rows) == len(callback.rows)
    for i, a in enumerate(summary["tasks"]):
        for j, b in enumerate(summary["tasks"]):
            mean = sum(r[f"aff_{a}__{b}"] for r in callback.rows) / len(callback.rows)
            assert summary["matrix"][i][j] == pytest.approx(mean, rel=1e-12)
    assert summary["matrix"][0][1] == pytest.approx(sum(float(r[2]) for r in rows) / len(rows), rel=1e-9)


def test_training_is_unchanged_by_the_probe(splits: Splits) -> None:
    params = {"dropout": 0.3, "norm": "batch"}
    plain = _trainer(splits, "shared_bottom", **params)
    plain.fit(splits.train)
    plain_rng = torch.get_rng_state()
    callback = TaskAffinity(1, None, None)
    watched = _trainer(splits, "shared_bottom", [callback], **params)
    watched.fit(splits.train)
    assert len(callback.rows) == splits.train.num_batches(64)
    assert torch.equal(torch.get_rng_state(), plain_rng)
    for (key, a), b in zip(
        plain.model.state_dict().items(), watched.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key
    for a, b in zip(plain.model.parameters(), watched.model.parameters(), strict=True):
        assert a.grad is not None
        assert torch.equal(a.grad, b.grad)


def test_fixed_validation_batch(splits: Splits) -> None:
    callback = TaskAffinity(1, splits.valid, None, rows=40)
    trainer = _trainer(splits, callbacks=[callback])
    trainer.global_step = 1
    callback.on_step_end(trainer, next(splits.train.batches(64)))
    first_rows = next(splits.valid.batches(40, shuffle=False))
    lr = trainer.optimizer.param_groups[0]["lr"]
    z, _, _ = lookahead_affinity(trainer.model, trainer.losses, first_rows, lr)
    assert callback.rows[0]["aff_y1__y2"] == pytest.approx(float(z[0, 1]), rel=1e-9)
    assert callback.rows[0]["aff_y2__y2"] == pytest.approx(float(z[1, 1]), rel=1e-9)


def test_model_without_shared_parameters_records_nothing(
    splits: Splits, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = TaskAffinity(1, None, tmp_path)
    trainer = _trainer(splits, "single_task", [callback])
    with caplog.at_level(logging.WARNING, logger="mtlkit.analysis.affinity"):
        trainer.fit(splits.train)
    assert callback.rows == []
    assert not (tmp_path / "diagnostics").exists()
    assert sum("no shared parameters" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(MtlkitError, match="SingleTask"):
        lookahead_affinity(trainer.model, trainer.losses, next(splits.train.batches(8)), 0.1)


def test_task_without_labels_in_the_batch_gives_nan_not_a_crash(splits: Splits) -> None:
    batch = next(splits.train.batches(32, shuffle=False))
    labels = batch.labels.clone()
    labels[:, 1] = float("nan")
    z, before, _ = lookahead_affinity(
        _model(splits), LossSet(splits.schema), Batch(batch.categorical, batch.numeric, labels), 0.1
    )
    assert before[1] == 0
    assert torch.isnan(z[:, 1]).all()
    assert torch.isfinite(z[:, 0]).all()


def test_arguments_are_validated(splits: Splits) -> None:
    with pytest.raises(ValueError, match="got -1"):
        TaskAffinity(-1, None, None)
    with pytest.raises(ValueError, match="got 0"):
        TaskAffinity(1, splits.valid, None, rows=0)
    batch = next(splits.train.batches(8))
    with pytest.raises(ValueError, match="lr must be"):
        lookahead_affinity(_model(splits), LossSet(splits.schema), batch, lr=0.0)
