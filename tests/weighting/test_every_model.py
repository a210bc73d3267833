"""Every loss weighting trains every registered model through ``mtlkit train``, on data
whose labels are partly missing (masked per task)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtlkit.cli import main
from mtlkit.config import RunConfig
from mtlkit.models import create_model, list_models
from mtlkit.training.run import build_splits
from mtlkit.weighting import list_weightings, weighting_class

SCHEMA = {
    "features": [
        {"name": "user", "kind": "categorical", "embedding_dim": 4},
        {"name": "price", "kind": "numeric"},
    ],
    "tasks": [
        {"name": "click", "kind": "binary"},
        {"name": "buy", "kind": "binary", "depends_on": "click"},
    ],
}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    rows = 240
    user = rng.integers(0, 12, rows)
    price = rng.normal(size=rows)
    click = (rng.random(rows) < 1 / (1 + np.exp(-price))).astype(int)
    buy = np.where(click == 1, (rng.random(rows) < 0.4).astype(int), 0)
    lines = ["user,price,click,buy"]
    for i in range(rows):
        buy_text = "" if i % 5 == 0 else str(buy[i])  # a fifth of the buy labels are missing
        lines.append(f"u{user[i]},{price[i]:.3f},{click[i]},{buy_text}")
    path = tmp_path_factory.mktemp("data") / "events.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(events: Path, model: str, method: str) -> dict[str, object]:
    return {
        "data": {"train": str(events), "schema": SCHEMA},
        "model": {"name": model},
        "balancer": {"name": method},
        "training": {
            "epochs": 2,
            "batch_size": 64,
            "lr": 0.01,
            "progress": False,
            "device": "cpu",
            "early_stopping": {"monitor": "valid.mean.logloss", "patience": None},
        },
    }


@pytest.mark.parametrize("model", list_models())
@pytest.mark.parametrize("method", list_weightings())
def test_method_trains_model(
    events: Path, tmp_path: Path, model: str, method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mtlkit train`` with ``balancer: {name: method}`` and ``model: {name: model}``."""
    data = _config(events, model, method)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    code = main(["train", str(path), "--out", str(out)])
    if "shared_grad_norms" in weighting_class(method).needs:
        splits = build_splits(RunConfig.from_dict(data))
        shared = create_model(model, splits.schema)(next(splits.train.batches(8))).shared
        if shared is None:  # nothing shared to measure gradient norms at: a clear refusal
            assert code == 2
            assert "shared" in capsys.readouterr().err
            return
    assert code == 0, capsys.readouterr().err
    with open(out / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == 2
    for row in history:
        assert all(math.isfinite(float(v)) for k, v in row.items() if k.startswith("loss_")), row
    metrics = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(metrics["test"]["mean"]["logloss"])
