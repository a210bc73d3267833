"""Single-task baselines: what they are trained with, and the cache key of exactly what determines them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mtlkit.analysis.baselines import BaselineCache, baseline_config, baseline_key, key_material
from mtlkit.config import ConfigError, RunConfig


def _config(**changes: Any) -> RunConfig:
    data: dict[str, Any] = {
        "seed": 0,
        "data": {"dataset": "synthetic", "params": {"train_rows": 200, "valid_rows": 50, "test_rows": 50}},
        "model": {"name": "mmoe", "params": {"num_experts": 2}},
        "balancer": {"name": "uncertainty"},
        "training": {"epochs": 2, "batch_size": 64},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return RunConfig.from_dict(data)


def test_baseline_keeps_data_training_and_seed_but_not_the_model() -> None:
    config = _config(family={"name": "mtl"}, diagnostics={"conflicts_every": 5})
    base = baseline_config(config, seed=4)
    assert base.model.name == "single_task"
    assert base.balancer.name == "static"
    assert base.balancer.params == {}
    assert base.family.name == "mtl"
    assert base.diagnostics.conflicts_every is None
    assert base.seed == 4
    assert base.data == config.data
    assert base.training == config.training


def test_key_ignores_the_multi_task_model_balancer_and_thread_settings() -> None:
    key = baseline_key(_config(), 0)
    assert baseline_key(_config(model={"name": "shared_bottom"}, balancer={"name": "pcgrad"}), 0) == key
    assert baseline_key(_config(training__num_threads=1, training__progress=False), 0) == key
    # explicit defaults resolve to the same baseline as no parameters
    same = _config(bench={"baseline": {"name": "single_task", "params": {"bottom_sizes": [128, 64]}}})
    assert baseline_key(same, 0) == key


@pytest.mark.parametrize(
    "changes",
    [
        {"training__epochs": 3},
        {"training__lr": 0.01},
        {"data": {"dataset": "synthetic", "params": {"train_rows": 300, "valid_rows": 50, "test_rows": 50}}},
        {"bench": {"baseline": {"name": "single_task", "params": {"bottom_sizes": [16]}}}},
        {"bench": {"baseline": {"name": "shared_bottom"}}},
    ],
)
def test_key_changes_with_what_determines_the_baseline(changes: dict[str, Any]) -> None:
    assert baseline_key(_config(**changes), 0) != baseline_key(_config(), 0)


def test_key_changes_with_the_seed() -> None:
    assert baseline_key(_config(), 0) != baseline_key(_config(), 1)


def test_bad_baseline_section_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"bench\.baseline should be"):
        baseline_config(_config(bench={"baseline": {"model": "single_task"}}), 0)


def test_cache_stores_finished_runs_and_fetches_copies(tmp_path: Path) -> None:
    cache = BaselineCache(tmp_path / "cache")
    run = tmp_path / "run"
    run.mkdir()
    key = baseline_key(_config(), 0)
    cache.store(key, run, {})  # unfinished (no metrics.json): not stored
    assert not cache.has(key)
    (run / "metrics.json").write_text(json.dumps({"test": {"y1": {"auc": 0.7}}}))
    material = key_material(baseline_config(_config(), 0))
    cache.store(key, run, material)
    assert cache.has(key)
    assert json.loads((cache.path(key) / "key.json").read_text())["seed"] == 0
    dest = tmp_path / "bench" / "baselines" / "seed0"
    assert cache.fetch(key, dest)
    assert json.loads((dest / "metrics.json").read_text())["test"]["y1"]["auc"] == 0.7
    assert not cache.fetch("0" * 24, tmp_path / "other")
