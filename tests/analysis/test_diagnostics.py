"""Choosing diagnostics from the configuration, isolating their extra passes, and the three files through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from mtlkit import load_dataset
from mtlkit.analysis.affinity import TaskAffinity
from mtlkit.analysis.conflicts import GradientConflicts
from mtlkit.analysis.diagnostics import diagnostic_callbacks, isolated, reset_rng
from mtlkit.analysis.experts import ExpertUsage
from mtlkit.cli import main
from mtlkit.config import DiagnosticsConfig
from mtlkit.data.datasets import Splits
from mtlkit.models import create_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def splits() -> Splits:
    return load_dataset("synthetic", binary=True, train_rows=100, valid_rows=50, test_rows=50, dim=5)


def test_callbacks_follow_the_configuration(splits: Splits, tmp_path: Path) -> None:
    assert diagnostic_callbacks(DiagnosticsConfig(), splits, tmp_path) == []
    config = DiagnosticsConfig(conflicts_every=5, expert_usage=True, affinity_every=7)
    conflicts, usage, affinity = diagnostic_callbacks(config, splits, tmp_path)
    assert isinstance(conflicts, GradientConflicts)
    assert conflicts.every == 5
    assert conflicts.out_dir == tmp_path
    assert isinstance(usage, ExpertUsage)
    assert usage.table is splits.valid
    assert usage.out_dir == tmp_path
    assert isinstance(affinity, TaskAffinity)
    assert affinity.every == 7
    assert affinity.table is None
    (only,) = diagnostic_callbacks(DiagnosticsConfig(affinity_every=3), splits, tmp_path)
    assert isinstance(only, TaskAffinity)


def test_isolated_restores_random_state_buffers_and_mode(splits: Splits) -> None:
    torch.manual_seed(0)
    model = create_model(
        "shared_bottom", splits.schema, bottom_sizes=[8], tower_sizes=[4], dropout=0.5, norm="batch"
    )
    model.train()
    batch = next(splits.train.batches(32, shuffle=False))
    buffers = [b.clone() for b in model.buffers()]
    assert torch.equal(dict(model.named_buffers())["bottom.1.running_mean"], torch.zeros(8))
    rng = torch.get_rng_state()
    with isolated(model, torch.device("cpu")) as state:
        first = model(batch).logits["y1"]
        reset_rng(torch.device("cpu"), state)
        again = model(batch).logits["y1"]
        assert torch.equal(first, again)  # the replayed state draws the same dropout masks
        running_mean = dict(model.named_buffers())["bottom.1.running_mean"]
        assert not torch.equal(
            running_mean, torch.zeros_like(running_mean)
        )  # BatchNorm moved its statistics...
        model.eval()
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))  # ...and is restored
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in model.modules())


def test_cli_train_writes_the_three_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    status = main(
        [
            "train",
            str(ROOT / "examples" / "synthetic.yaml"),
            "--out",
            str(out),
            "--set", "diagnostics.conflicts_every=5",
            "--set", "diagnostics.expert_usage=true",
            "--set", "diagnostics.affinity_every=10",
            "--set", "training.epochs=1",
            "--set", "training.progress=false",
            "--set", "training.batch_size=32",
            "--set", "data.params.train_rows=640",
            "--set", "data.params.valid_rows=200",
            "--set", "data.params.test_rows=100",
            "--set", "model.params.num_experts=3",
        ]
    )  # fmt: skip
    assert status == 0
    folder = out / "diagnostics"
    assert sorted(p.name for p in folder.iterdir()) == [
        "affinity.csv", "affinity.json", "conflicts.csv", "expert_usage.json",
    ]  # fmt: skip
    steps = 640 // 32
    with open(folder / "conflicts.csv", newline="") as handle:
        conflicts = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in conflicts] == list(range(5, steps + 1, 5))
    assert list(conflicts[0]) == ["step", "epoch", "norm_y1", "norm_y2", "cos_y1__y2"]
    with open(folder / "affinity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(10, steps + 1, 10))
    affinity = json.loads((folder / "affinity.json").read_text())
    assert affinity["tasks"] == ["y1", "y2"]
    assert affinity["steps"] == len(rows)
    assert len(affinity["matrix"]) == 2
    assert all(len(line) == 2 for line in affinity["matrix"])
    usage = json.loads((folder / "expert_usage.json").read_text())
    assert usage["split"] == "valid"
    assert list(usage["gates"]) == ["y1", "y2"]
    assert all(len(v) == 3 and sum(v) == pytest.approx(1.0, abs=1e-6) for v in usage["gates"].values())
