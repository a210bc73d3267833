"""Every balancer (loss weighting or gradient aggregator) resumes exactly: a run continued from the checkpoint
written after epoch 2 reproduces the uninterrupted run, model and balancer state included."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mtlkit import load_dataset
from mtlkit.balancing import create_balancer, list_balancers
from mtlkit.data.datasets import Splits
from mtlkit.models import create_model
from mtlkit.training import Trainer, TrainingOptions, load_checkpoint
from mtlkit.training.callbacks import Callback


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_dataset("synthetic", binary=True, train_rows=400, valid_rows=100, test_rows=100, dim=8)


class _Snapshot(Callback):
    """Copies the checkpoint as it stood after epoch 2 (what a kill at that moment leaves)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        if trainer.epoch == 2 and trainer.out_dir is not None:
            shutil.copy(trainer.out_dir / "checkpoint.pt", self.dest)


def _trainer(splits: Splits, name: str, out_dir: Path) -> Trainer:
    torch.manual_seed(0)
    model = create_model("shared_bottom", splits.schema, bottom_sizes=[16], tower_sizes=[8])
    options = TrainingOptions(epochs=3, batch_size=64, lr=0.01, progress=False, monitor=None, patience=None)
    balancer = create_balancer(name, splits.schema)
    return Trainer(model, balancer, options, seed=0, device="cpu", out_dir=out_dir)


@pytest.mark.parametrize("name", list_balancers())
def test_a_resumed_run_matches_the_uninterrupted_one(splits: Splits, tmp_path: Path, name: str) -> None:
    full = _trainer(splits, name, tmp_path / "full")
    full.callbacks.append(_Snapshot(tmp_path / "after_epoch_2.pt"))
    full.fit(splits.train)
    resumed = _trainer(splits, name, tmp_path / "resumed")
    torch.manual_seed(123)  # the checkpoint, not the global RNG, decides what follows
    resumed.fit(splits.train, resume=load_checkpoint(tmp_path / "after_epoch_2.pt"))
    assert [r["loss_y1"] for r in resumed.history] == [r["loss_y1"] for r in full.history]
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    for key, value in full.balancer.state_dict().items():
        torch.testing.assert_close(resumed.balancer.state_dict()[key], value, rtol=0, atol=0, equal_nan=True)
