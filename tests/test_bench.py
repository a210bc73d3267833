"""The bench grid (mtlkit.bench), run in-process on a tiny synthetic problem: results, summary, resumability,
failures, the baseline cache and input validation."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import mtlkit.bench
from mtlkit.analysis.verdict import Estimate, delta_m, mtl_gain, task_verdict
from mtlkit.bench import RunRecord, RunSpec, run_bench, train_in_process
from mtlkit.cli import main
from mtlkit.config import ConfigError, RunConfig
from mtlkit.errors import MtlkitError


def tiny_config(**bench: Any) -> RunConfig:
    return RunConfig.from_dict(
        {
            "seed": 0,
            "data": {
                "dataset": "synthetic",
                "params": {"train_rows": 300, "valid_rows": 100, "test_rows": 100, "binary": True},
            },
            "model": {"name": "shared_bottom", "params": {"bottom_sizes": [8], "tower_sizes": [4]}},
            "training": {"epochs": 1, "batch_size": 64, "device": "cpu", "progress": False},
            "bench": {
                "model_params": {"mmoe": {"num_experts": 2, "expert_sizes": [8], "tower_sizes": [4]}},
                "baseline": {"name": "single_task", "params": {"bottom_sizes": [8], "tower_sizes": [4]}},
                **bench,
            },
        }
    )


class Counter:
    """An in-process runner that counts what it trains."""

    def __init__(self) -> None:
        self.trained: list[str] = []

    def __call__(self, spec: RunSpec, threads: int) -> RunRecord:
        self.trained.append(spec.name)
        return train_in_process(spec, threads)


def bench(config: RunConfig, out: Path, cache: Path, runner: Callable[[RunSpec, int], RunRecord], **kw: Any):  # type: ignore[no-untyped-def]
    grid = {"models": ["shared_bottom", "mmoe"], "balancers": ["static", "uncertainty"], "seeds": 2}
    grid.update(kw)
    return run_bench(config, out, jobs=1, baseline_cache=cache, train=runner, **grid)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Counter, dict[str, Any]]:
    """The 2 models x 2 balancers x 2 seeds grid through the command line (``mtlkit bench``), trained in-process."""
    root = tmp_path_factory.mktemp("bench")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config().to_dict()))
    counter = Counter()
    argv = ["bench", str(config), "--models", "shared_bottom,mmoe", "--balancers", "static,uncertainty"]
    argv += [
        "--seeds",
        "2",
        "--jobs",
        "1",
        "--out",
        str(root / "b1"),
        "--baseline-cache",
        str(root / "cache"),
    ]
    argv += ["--main-task", "y1", "--set", "training.batch_size=100"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mtlkit.bench, "train_child", counter)
        assert main(argv) == 0
    summary = json.loads((root / "b1" / "summary.json").read_text())
    return root, root / "cache", counter, summary


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_grid_runs_every_combination_and_the_baselines(
    grid: tuple[Path, Path, Counter, dict[str, Any]],
) -> None:
    root, _, counter, _ = grid
    assert len(counter.trained) == 2 * 2 * 2 + 2
    rows = read_results(root / "b1" / "results.csv")
    assert [r["family"] for r in rows[:2]] == ["baseline", "baseline"]
    combos = {(r["model"], r["balancer"], r["seed"]) for r in rows[2:]}
    assert combos == {
        (m, b, s) for m in ("shared_bottom", "mmoe") for b in ("static", "uncertainty") for s in "01"
    }
    assert all(r["status"] == "ok" for r in rows)
    assert all((root / "b1" / r["run_dir"] / "metrics.json").is_file() for r in rows)
    assert {"test_y1_auc", "valid_y2_logloss", "epochs", "seconds_per_epoch", "peak_memory_mb"} <= set(
        rows[0]
    )
    assert all(float(r["seconds_per_epoch"]) > 0 for r in rows)
    bench_json = json.loads((root / "b1" / "bench.json").read_text())
    assert bench_json["grid"]["seeds"] == [0, 1]
    assert bench_json["main_task"] == "y1"
    assert bench_json["config"]["training"]["batch_size"] == 100  # --set applies to every run


def test_summary_agrees_with_results_csv(grid: tuple[Path, Path, Counter, dict[str, Any]]) -> None:
    root, _, _, _ = grid
    rows = read_results(root / "b1" / "results.csv")
    summary = json.loads((root / "b1" / "summary.json").read_text())
    assert summary["main_task"] == "y1"
    assert summary["tasks"] == ["y1", "y2"]
    assert summary["metrics"] == {"y1": "auc", "y2": "auc"}
    assert summary["higher_is_better"] == {"y1": True, "y2": True}
    base = {
        t: Estimate.of(float(r[f"test_{t}_auc"]) for r in rows if r["family"] == "baseline")
        for t in ("y1", "y2")
    }
    for t in ("y1", "y2"):
        assert summary["baseline"]["per_task"][t]["mean"] == pytest.approx(base[t].mean)
        assert summary["baseline"]["per_task"][t]["n"] == 2
    assert len(summary["rows"]) == 4
    for row in summary["rows"]:
        mine = [
            r
            for r in rows
            if (r["model"], r["balancer"], r["family"]) == (row["model"], row["balancer"], "mtl")
        ]
        assert row["seeds"] == len(mine) == 2
        means = []
        for t in ("y1", "y2"):
            est = Estimate.of(float(r[f"test_{t}_auc"]) for r in mine)
            entry = row["per_task"][t]
            assert entry["mean"] == pytest.approx(est.mean)
            assert entry["std"] == pytest.approx(est.std)
            assert entry["gain"] == pytest.approx(mtl_gain(est.mean, base[t].mean, True))
            assert entry["verdict"] == task_verdict(est, base[t], True)
            means.append(est.mean)
        assert row["delta_m"] == pytest.approx(
            delta_m(means, [base["y1"].mean, base["y2"].mean], [True, True])
        )
        assert row["outcome"] in {"well done", "pareto", "seesaw", "negative transfer", "no change"}
    md = (root / "b1" / "summary.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| baseline (single_task)")  # after the header: baseline row first
    assert "Rule: " in md
    assert summary["rule"] in md


def test_second_call_trains_nothing(grid: tuple[Path, Path, Counter, dict[str, Any]]) -> None:
    root, cache, _, _ = grid
    stamps = {p: p.stat().st_mtime_ns for p in (root / "b1").glob("*/*/metrics.json")}
    assert len(stamps) == 10
    again = Counter()
    same = tiny_config()
    same.training.batch_size = 100  # the --set of the first call
    result = bench(same, root / "b1", cache, again)
    assert again.trained == []
    assert {p: p.stat().st_mtime_ns for p in (root / "b1").glob("*/*/metrics.json")} == stamps
    assert all(r.how == "reused" for r in result.records)


def test_second_bench_reuses_cached_baselines(grid: tuple[Path, Path, Counter, dict[str, Any]]) -> None:
    root, cache, _, first = grid
    other = Counter()
    config = tiny_config()
    config.training.batch_size = 100
    # another bench (other folder, other model, other balancer) over the same data, training section and seeds
    result = bench(config, root / "b2", cache, other, models=["omoe"], balancers=["pcgrad"])
    assert not any(name.startswith("baseline") for name in other.trained)
    assert len(other.trained) == 2
    assert [r.how for r in result.baselines] == ["cached", "cached"]
    assert result.summary["baseline"] == first["baseline"] | {
        "seconds_per_epoch": result.summary["baseline"]["seconds_per_epoch"],
        "peak_memory_mb": result.summary["baseline"]["peak_memory_mb"],
    }
    # a different training budget is another baseline: trained, not fetched
    third = Counter()
    changed = tiny_config()
    changed.training.batch_size = 100
    changed.training.lr = 0.01
    bench(changed, root / "b3", cache, third, models=["omoe"], balancers=["static"], seeds=1)
    assert "baseline__seed0" in third.trained


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path: Path) -> None:
    config = tiny_config(balancer_params={"uncertainty": {"no_such_parameter": 1}})
    result = bench(
        config, tmp_path / "b", tmp_path / "cache", train_in_process, models=["shared_bottom"], seeds=1
    )
    status = {r.spec.balancer: r.status for r in result.records}
    assert status == {"static": "ok", "uncertainty": "failed"}
    failed = next(r for r in result.records if r.status == "failed")
    assert "no_such_parameter" in (failed.spec.out_dir / "train.log").read_text()
    rows = read_results(tmp_path / "b" / "results.csv")
    assert [r["status"] for r in rows if r["balancer"] == "uncertainty"] == ["failed"]
    assert [(r["model"], r["balancer"]) for r in result.summary["rows"]] == [("shared_bottom", "static")]
    assert "shared_bottom__uncertainty__seed0" in (tmp_path / "b" / "summary.md").read_text()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"models": ["mmoee"]}, "unknown model 'mmoee' (did you mean 'mmoe'?)"),
        ({"balancers": ["pcgard"]}, "unknown balancer 'pcgard' (did you mean 'pcgrad'?)"),
        ({"families": ["mtll"]}, "unknown family 'mtll' (did you mean 'mtl'?)"),
        ({"main_task": "y3"}, "--main-task 'y3' is not a task"),
        ({"seeds": 0}, "--seeds must be >= 1"),
    ],
)
def test_bad_input_fails_before_anything_runs(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    counter = Counter()
    with pytest.raises(MtlkitError) as info:
        bench(tiny_config(), tmp_path / "b", tmp_path / "cache", counter, **kw)
    assert message in str(info.value)
    assert counter.trained == []
    assert not (tmp_path / "b" / "runs").exists()


def test_bad_model_parameter_is_a_config_error_before_anything_runs(tmp_path: Path) -> None:
    config = tiny_config(model_params={"mmoe": {"num_expert": 2}})
    counter = Counter()
    with pytest.raises(ConfigError, match="did you mean 'num_experts'"):
        bench(config, tmp_path / "b", tmp_path / "cache", counter)
    assert counter.trained == []


def test_a_folder_of_another_bench_is_refused(grid: tuple[Path, Path, Counter, dict[str, Any]]) -> None:
    root, cache, _, _ = grid
    changed = tiny_config()
    changed.training.batch_size = 100
    changed.training.epochs = 2
    with pytest.raises(MtlkitError, match="holds a bench of another configuration"):
        bench(changed, root / "b1", cache, Counter())


def test_a_family_that_fixes_its_model_is_named_after_it(tmp_path: Path) -> None:
    """multi_model always trains single_task + static: its runs carry those names, not the configured model's."""
    specs = mtlkit.bench.plan(
        tiny_config(),
        tmp_path,
        models=["mmoe"],
        balancers=["uncertainty"],
        families=["mtl", "multi_model"],
        seeds=[0],
        threads=1,
    )
    assert [(s.family, s.model, s.balancer) for s in specs] == [
        ("mtl", "mmoe", "uncertainty"),
        ("multi_model", "single_task", "static"),
    ]
    assert specs[1].name == "multi_model__single_task__static__seed0"
