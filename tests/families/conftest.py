"""A tiny funnel with request groups, written as CSV files, and a run configuration that reads them.

Impressions come in requests of 10 items; a click depends on f1 and f2, a conversion happens only after a click
and depends on f3; six more numeric features are noise. Small enough that a family trains through ``mtlkit train`` in a few seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch
import yaml

SCHEMA: dict[str, Any] = {
    "features": [
        {"name": "user", "kind": "categorical", "embedding_dim": 4},
        {"name": "f1", "kind": "numeric"},
        {"name": "f2", "kind": "numeric"},
        {"name": "f3", "kind": "numeric"},
        *({"name": f"noise{k}", "kind": "numeric"} for k in range(6)),
    ],
    "tasks": [{"name": "click", "kind": "binary"}, {"name": "conversion", "kind": "binary"}],
    "group": "request",
}


def funnel_rows(requests: int, seed: int, items: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = requests * items
    f = rng.normal(size=(n, 9))
    click = rng.random(n) < 1 / (1 + np.exp(-(-1.0 + 2.0 * f[:, 0] + 1.0 * f[:, 1])))
    conversion = click & (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + 2.5 * f[:, 2]))))
    return {
        "request": np.repeat(np.arange(requests) + seed * 100_000, items).astype(str),
        "user": rng.integers(0, 30, n).astype(str),
        "f1": f[:, 0],
        "f2": f[:, 1],
        "f3": f[:, 2],
        **{f"noise{k}": f[:, 3 + k] for k in range(6)},
        "click": click.astype(np.float64),
        "conversion": conversion.astype(np.float64),
    }


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tests here train with one torch thread (tiny tensors: a second thread only waits on a busy machine, which
    made them 3x slower); the process-wide thread count is restored for the tests that follow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def funnel_arrow() -> Callable[[int, int], pa.Table]:
    """``make(requests, seed)``: an Arrow table of funnel rows."""
    return lambda requests, seed: pa.table(funnel_rows(requests, seed))


@pytest.fixture(scope="session")
def funnel_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("funnel")
    paths = {}
    for part, (requests, seed) in {"train": (300, 1), "valid": (100, 2), "test": (100, 3)}.items():
        path = folder / f"{part}.csv"
        pacsv.write_csv(pa.table(funnel_rows(requests, seed)), path)
        paths[part] = path
    return paths


@pytest.fixture
def funnel_config(funnel_files: dict[str, Path], tmp_path: Path) -> Callable[..., Path]:
    """Write a run configuration on the funnel files; keyword sections replace the defaults."""

    def write(**sections: Any) -> Path:
        config: dict[str, Any] = {
            "seed": 0,
            "data": {
                "train": str(funnel_files["train"]),
                "valid": str(funnel_files["valid"]),
                "test": str(funnel_files["test"]),
                "schema": copy.deepcopy(SCHEMA),
            },
            "model": {"name": "shared_bottom", "params": {"bottom_sizes": [16], "tower_sizes": [8]}},
            "training": {
                "epochs": 3,
                "batch_size": 200,
                "lr": 0.01,
                "progress": False,
                "device": "cpu",
                "num_threads": 1,
                "early_stopping": {"monitor": "valid.mean.auc", "patience": None},
            },
        }
        config.update(sections)
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return write
