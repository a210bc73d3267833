"""Trainer: determinism, exact resume, early stopping with best weights, masking, predictions."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtlkit import MtlkitError, load_dataset
from mtlkit.models import create_model
from mtlkit.training import Trainer, TrainingOptions, load_checkpoint
from mtlkit.training.callbacks import Callback
from mtlkit.weighting import create_weighting


@pytest.fixture(scope="module")
def splits():  # type: ignore[no-untyped-def]
    return load_dataset("synthetic", binary=True, train_rows=2000, valid_rows=500, test_rows=500, dim=20)


def _trainer(splits, out_dir: Path | None = None, seed: int = 0, **options):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    model = create_model(
        "mmoe", splits.schema, num_experts=4, expert_sizes=[16], tower_sizes=[8], dropout=0.1
    )
    balancer = create_weighting("static", splits.schema)
    defaults = {"epochs": 3, "batch_size": 128, "lr": 0.01, "progress": False, "monitor": "valid.mean.auc"}
    return Trainer(
        model, balancer, TrainingOptions(**{**defaults, **options}), seed=seed, device="cpu", out_dir=out_dir
    )


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_training_learns_and_is_deterministic(splits) -> None:  # type: ignore[no-untyped-def]
    a, b = _trainer(splits), _trainer(splits)
    history_a, history_b = a.fit(splits.train, splits.valid), b.fit(splits.train, splits.valid)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in history_a]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in history_b]
    for key, value in _weights(a).items():
        torch.testing.assert_close(value, _weights(b)[key], rtol=0, atol=0)
    scores = a.evaluate(splits.test)
    assert scores["y1"]["auc"] > 0.6
    assert scores["y2"]["auc"] > 0.6
    assert history_a[-1]["loss_y1"] < history_a[0]["loss_y1"]


def test_another_seed_gives_another_run(splits) -> None:  # type: ignore[no-untyped-def]
    a, b = _trainer(splits, seed=0), _trainer(splits, seed=1)
    a.fit(splits.train, splits.valid)
    b.fit(splits.train, splits.valid)
    assert a.history[-1]["loss_y1"] != b.history[-1]["loss_y1"]


class _Snapshot(Callback):
    """Copies the run's checkpoint as it stood after a given epoch (what a kill at that moment leaves)."""

    def __init__(self, epoch: int, dest: Path) -> None:
        self.epoch, self.dest = epoch, dest

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if trainer.epoch == self.epoch:
            assert trainer.out_dir is not None
            shutil.copy(trainer.out_dir / "checkpoint.pt", self.dest)


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    options = {"epochs": 4, "schedule": "cosine", "patience": None}
    full = _trainer(splits, tmp_path / "full", **options)
    full.callbacks.append(_Snapshot(2, tmp_path / "after_epoch_2.pt"))
    full.fit(splits.train, splits.valid)
    state = load_checkpoint(tmp_path / "after_epoch_2.pt")
    steps = splits.train.num_batches(full.options.batch_size)
    assert state["position"] == {"epoch": 2, "finished": False, "global_step": 2 * steps}
    resumed = _trainer(splits, tmp_path / "resumed", **options)
    torch.manual_seed(999)  # whatever happened in between, the checkpoint's RNG state wins
    resumed.fit(splits.train, splits.valid, resume=state)
    assert [r["loss_y1"] for r in resumed.history] == [r["loss_y1"] for r in full.history]
    for key, value in _weights(full).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0)
    assert resumed.evaluate(splits.test) == full.evaluate(splits.test)


def test_early_stopping_restores_the_best_weights(splits) -> None:  # type: ignore[no-untyped-def]
    # a learning rate this high makes validation AUC wander; patience 1 stops at the first non-improvement
    trainer = _trainer(splits, epochs=12, lr=0.3, patience=1)
    trainer.fit(splits.train, splits.valid)
    assert trainer.best_epoch is not None
    assert trainer.epoch == trainer.best_epoch + 1 or trainer.epoch == 12
    best = trainer.history[trainer.best_epoch - 1]["valid_mean_auc"]
    assert math.isclose(trainer.evaluate(splits.valid)["mean"]["auc"], best, rel_tol=1e-9)
    assert best == max(row["valid_mean_auc"] for row in trainer.history)


def test_missing_labels_are_masked_not_nan(splits) -> None:  # type: ignore[no-untyped-def]
    train = splits.train.subset(np.arange(len(splits.train)))
    train.labels[::2, 1] = float("nan")  # half of y2's labels missing
    trainer = _trainer(splits, epochs=1)
    trainer.fit(train, splits.valid)
    assert all(math.isfinite(v) for v in trainer.history[0].values())


def test_predict_returns_probabilities_per_task(splits) -> None:  # type: ignore[no-untyped-def]
    trainer = _trainer(splits, epochs=1)
    trainer.fit(splits.train, splits.valid)
    preds = trainer.predict(splits.test)
    assert set(preds) == {"y1", "y2"}
    for values in preds.values():
        assert values.shape == (len(splits.test),)
        assert float(values.min()) >= 0.0
        assert float(values.max()) <= 1.0


def test_checkpoint_is_plain_data_and_written_atomically(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trainer = _trainer(splits, tmp_path, epochs=1)
    trainer.fit(splits.train, splits.valid)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    steps = splits.train.num_batches(trainer.options.batch_size)
    assert state["position"] == {"epoch": 1, "finished": True, "global_step": steps}
    assert {"model_state", "optimizer_state", "balancer_state", "rng", "trainer"} <= set(state)
    assert not [p.name for p in tmp_path.iterdir() if "tmp" in p.name]
    assert (tmp_path / "history.csv").read_text().startswith("epoch,lr,loss_y1,loss_y2")


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MtlkitError, match=r"cannot read checkpoint .*checkpoint.pt"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    with pytest.raises(MtlkitError, match=r"no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"lr": -1.0}, "lr must be > 0, got -1.0"),
        ({"schedule": "cosin"}, "schedule must be one of"),
        ({"patience": 0}, "patience must be >= 1 or None, got 0"),
        ({"monitor": "valid.auc"}, "monitor must look like valid.<task or mean>.<metric>"),
    ],
)
def test_bad_options_are_errors_naming_the_value(splits, options, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        MtlkitError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        _trainer(splits, **options)


def test_unknown_monitor_lists_what_is_available(splits) -> None:  # type: ignore[no-untyped-def]
    trainer = _trainer(splits, epochs=1, monitor="valid.y3.auc")
    with pytest.raises(MtlkitError, match=r"monitor 'valid.y3.auc' is not among the validation results"):
        trainer.fit(splits.train, splits.valid)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    # the learning rate at the end of each of 2 epochs, as a multiple of lr
    [("none", [1.0, 1.0]), ("step", [0.5, 0.25]), ("cosine", [0.5, 0.0])],
)
def test_learning_rate_schedules(splits, schedule: str, expected: list[float]) -> None:  # type: ignore[no-untyped-def]
    trainer = _trainer(splits, epochs=2, schedule=schedule, gamma=0.5, step_size=1, monitor=None)
    trainer.fit(splits.train)
    lrs = [row["lr"] / trainer.options.lr for row in trainer.history]
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_gradient_clipping_bounds_the_update(splits) -> None:  # type: ignore[no-untyped-def]
    """With grad_clip the total gradient norm at the optimizer step never exceeds the bound."""
    seen: list[float] = []
    trainer = _trainer(splits, epochs=1, grad_clip=0.05, monitor=None, lr=0.1)

    def before_step(optimizer, args, kwargs) -> None:  # type: ignore[no-untyped-def]
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    trainer.optimizer.register_step_pre_hook(before_step)
    trainer.fit(splits.train)
    assert seen
    assert max(seen) <= 0.05 * (1 + 1e-4)
