"""Expert usage: mean gate weights over the validation set, in the agreed JSON format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from mtlkit import load_dataset
from mtlkit.analysis.experts import ExpertUsage, expert_usage
from mtlkit.data.datasets import Splits
from mtlkit.models import create_model
from mtlkit.training import Trainer, TrainingOptions
from mtlkit.weighting import create_weighting


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_dataset(
        "synthetic", binary=True, train_rows=256, valid_rows=150, test_rows=50, dim=10, tasks=3
    )


def _fit(splits: Splits, model_name: str, callback: ExpertUsage, **params) -> Trainer:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_model(model_name, splits.schema, **params)
    options = TrainingOptions(
        epochs=1, batch_size=64, eval_batch_size=64, lr=0.01, progress=False, monitor=None
    )
    trainer = Trainer(
        model, create_weighting("static", splits.schema), options, device="cpu", callbacks=[callback]
    )
    trainer.fit(splits.train, splits.valid)
    return trainer


def test_mmoe_usage_rows_sum_to_one_and_are_the_mean_gate(splits: Splits, tmp_path: Path) -> None:
    callback = ExpertUsage(splits.valid, tmp_path)
    trainer = _fit(splits, "mmoe", callback, num_experts=5, expert_sizes=[8], tower_sizes=[4], dropout=0.2)
    data = json.loads((tmp_path / "diagnostics" / "expert_usage.json").read_text())
    assert set(data) == {"split", "gates"}
    assert data["split"] == "valid"
    assert list(data["gates"]) == ["y1", "y2", "y3"]
    trainer.model.eval()
    with torch.no_grad():
        gates = trainer.model(splits.valid.batches(len(splits.valid), shuffle=False).__next__()).gates
    for name, usage in data["gates"].items():
        assert len(usage) == 5
        assert sum(usage) == pytest.approx(1.0, abs=1e-6)
        assert usage == pytest.approx(gates[name].double().mean(0).tolist(), abs=1e-6)
    assert callback.usage == data["gates"]


def test_usage_leaves_mode_and_random_state_alone(splits: Splits) -> None:
    torch.manual_seed(0)
    model = create_model("ple", splits.schema, dropout=0.3)
    model.train()
    state = torch.get_rng_state()
    usage = expert_usage(model, splits.valid, batch_size=64)
    assert model.training
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), state)
    assert usage
    assert all(sum(v) == pytest.approx(1.0, abs=1e-6) for v in usage.values())


def test_model_without_gates_writes_nothing(
    splits: Splits, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = ExpertUsage(splits.valid, tmp_path)
    with caplog.at_level(logging.WARNING, logger="mtlkit.analysis.experts"):
        _fit(splits, "shared_bottom", callback, bottom_sizes=[8], tower_sizes=[4])
    assert callback.usage is None
    assert not (tmp_path / "diagnostics" / "expert_usage.json").exists()
    assert sum("no gates" in r.getMessage() for r in caplog.records) == 1


def test_batch_size_is_validated(splits: Splits) -> None:
    with pytest.raises(ValueError, match="got 0"):
        ExpertUsage(splits.valid, None, batch_size=0)
