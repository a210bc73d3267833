"""Hand-made bench folders in the agreed formats (summary.json, results.csv), for the plot and report tests."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TASKS = ["income", "marital"]


def write_bench(folder: Path, tasks: list[str] = TASKS, failed: bool = True) -> Path:
    """A bench folder with 2 models x 2 balancers x 2 seeds; with ``failed``, one run failed."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for m, model in enumerate(["shared_bottom", "mmoe"]):
        for b, balancer in enumerate(["static", "pcgrad"]):
            per_task = {}
            for t, task in enumerate(tasks):
                mean = 0.90 + 0.01 * m + 0.005 * b - 0.003 * t
                per_task[task] = {
                    "mean": mean,
                    "std": 0.002,
                    "n": 2,
                    "gain": mean - 0.905,
                    "verdict": ["better", "no change", "worse"][(m + b + t) % 3],
                }
            rows.append(
                {
                    "model": model,
                    "balancer": balancer,
                    "family": "mtl",
                    "seeds": 2,
                    "per_task": per_task,
                    "delta_m": 0.5 * m - 0.2 * b,
                    "outcome": "seesaw",
                    "seconds_per_epoch": 1.5,
                    "peak_memory_mb": 300.0,
                }
            )
            for seed in range(2):
                status = "failed" if failed and (model, balancer, seed) == ("mmoe", "pcgrad", 1) else "ok"
                result = {
                    "model": model,
                    "balancer": balancer,
                    "family": "mtl",
                    "seed": seed,
                    "status": status,
                    "run_dir": f"runs/{model}-{balancer}-seed{seed}",
                    "epochs": 3,
                    "seconds_per_epoch": 1.5,
                    "peak_memory_mb": 300,
                }
                for task in tasks:
                    value = per_task[task]["mean"] + (0.002 if seed else -0.002)
                    result[f"valid_{task}_auc"] = value if status == "ok" else ""
                    result[f"test_{task}_auc"] = value if status == "ok" else ""
                results.append(result)
    summary = {
        "tasks": tasks,
        "metrics": dict.fromkeys(tasks, "auc"),
        "higher_is_better": dict.fromkeys(tasks, True),
        "main_task": None,
        "rule": "better when the mean beats the baseline by more than the larger std over seeds <&>",
        "baseline": {
            "name": "single_task",
            "per_task": {t: {"mean": 0.905, "std": 0.001, "n": 2} for t in tasks},
        },
        "rows": rows,
    }
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    with (folder / "results.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    return folder


def write_run(folder: Path, diagnostics: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.csv").write_text(
        "epoch,lr,loss_a,loss_b,valid_a_auc,valid_b_auc,valid_mean_auc,seconds\n"
        "1,0.01,0.70,0.69,0.60,0.62,0.61,1.0\n"
        "2,0.01,0.65,0.66,0.66,0.64,0.65,1.0\n"
        "3,0.01,0.61,0.64,0.68,0.65,0.665,1.0\n"
    )
    (folder / "metrics.json").write_text(
        json.dumps(
            {"valid": {"a": {"auc": 0.68}}, "test": {"a": {"auc": 0.67}}, "best_epoch": 3, "epochs": 3}
        )
    )
    if diagnostics:
        d = folder / "diagnostics"
        d.mkdir()
        (d / "conflicts.csv").write_text(
            "step,epoch,norm_a,norm_b,cos_a__b\n10,1,1.0,2.0,0.3\n20,1,0.8,1.5,-0.2\n30,2,0.7,1.2,0.1\n"
        )
        (d / "expert_usage.json").write_text(
            json.dumps({"split": "valid", "gates": {"a": [0.5, 0.3, 0.2], "b": [0.1, 0.9]}})
        )
        (d / "affinity.json").write_text(
            json.dumps({"tasks": ["a", "b"], "matrix": [[0.02, -0.01], [0.005, 0.03]], "steps": 4})
        )
    return folder


@pytest.fixture
def make_run() -> Callable[..., Path]:
    """:func:`write_run`: a hand-made run folder (history, metrics, and diagnostics unless told not to)."""
    return write_run


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    return write_bench(tmp_path / "bench")
