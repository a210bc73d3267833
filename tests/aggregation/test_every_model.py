"""Every gradient aggregator trains every registered model through ``mtlkit train`` (masked labels), in the
parameter mode and, for models with a shared representation, the representation mode."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtlkit.aggregation import list_aggregators
from mtlkit.cli import main
from mtlkit.config import RunConfig
from mtlkit.models import create_model, list_models
from mtlkit.training.run import build_splits

SCHEMA = {
    "features": [
        {"name": "user", "kind": "categorical", "embedding_dim": 4},
        {"name": "price", "kind": "numeric"},
    ],
    "tasks": [{"name": "click", "kind": "binary"}, {"name": "buy", "kind": "binary", "depends_on": "click"}],
}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    rows = 200
    lines = ["user,price,click,buy"]
    for i in range(rows):
        price = rng.normal()
        click = int(rng.random() < 1 / (1 + np.exp(-price)))
        buy = "" if i % 4 == 0 else str(int(click and rng.random() < 0.4))
        lines.append(f"u{rng.integers(0, 9)},{price:.3f},{click},{buy}")
    path = tmp_path_factory.mktemp("data") / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("mode", ["parameter", "representation"])
@pytest.mark.parametrize("model", list_models())
@pytest.mark.parametrize("method", list_aggregators())
def test_aggregator_trains_model(
    events: Path, tmp_path: Path, method: str, model: str, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {
        "data": {"train": str(events), "schema": SCHEMA},
        "model": {"name": model},
        "balancer": {"name": method, "params": {"mode": mode}},
        "training": {
            "epochs": 1,
            "batch_size": 64,
            "progress": False,
            "device": "cpu",
            "early_stopping": {"monitor": "valid.mean.logloss", "patience": None},
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["train", str(path), "--out", str(tmp_path / "run")])
    splits = build_splits(RunConfig.from_dict(data))
    probe = create_model(model, splits.schema)
    nothing_shared = not list(probe.shared_parameters())
    no_representation = probe(next(splits.train.batches(8))).shared is None
    if (mode == "parameter" and nothing_shared) or (mode == "representation" and no_representation):
        assert code == 2  # a clear refusal, naming what is missing
        assert "shared" in capsys.readouterr().err
        return
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "run" / "history.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert all(math.isfinite(float(v)) for k, v in row.items() if k.startswith("loss_"))
