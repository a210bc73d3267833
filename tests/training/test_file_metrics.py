"""evaluate_file: a run's metrics on a labelled file read in parts equal those of the file read whole, groups
spanning parts included; `mtlkit evaluate --data` uses it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mtlkit.cli import main
from mtlkit.config import RunConfig
from mtlkit.data.readers import write_table
from mtlkit.errors import MtlkitError
from mtlkit.training.file_metrics import evaluate_file
from mtlkit.training.run import LoadedRun, load_run, train_run


def _events(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 12, rows)
    price = rng.normal(size=rows).round(3)
    click = (rng.random(rows) < 1 / (1 + np.exp(-price - user / 6 + 1))).astype(int)
    buy = np.where(click == 1, (rng.random(rows) < 0.4).astype(int), 0)
    request = rng.integers(0, 15, rows)  # scattered: each request's rows fall into many parts
    return pa.table(
        {"user": [f"u{u}" for u in user], "request": request, "price": price, "click": click, "buy": buy}
    )


def _schema() -> dict[str, object]:
    return {
        "features": [{"name": "user"}, {"name": "price", "kind": "numeric"}],
        "tasks": [{"name": "click"}, {"name": "buy"}],
        "group": "request",
    }


#: an MTL model, and a family whose model learns one score from weighted samples (metrics from task_scores)
FAMILY_PARAMS: dict[str, dict[str, object]] = {
    "mtl": {},
    "sample_weighting": {"actions": {"click": 1.0, "buy": 2.0}},
}


@pytest.fixture(scope="module", params=list(FAMILY_PARAMS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    folder = tmp_path_factory.mktemp("evaluate")
    write_table(_events(300, seed=0), folder / "train.csv")
    config = RunConfig.from_dict(
        {
            "data": {"train": str(folder / "train.csv"), "schema": _schema()},
            "model": {"name": "mmoe", "params": {"num_experts": 2, "expert_sizes": [4], "tower_sizes": [4]}},
            "family": {"name": request.param, "params": FAMILY_PARAMS[request.param]},
            "training": {
                "epochs": 1,
                "batch_size": 64,
                "eval_batch_size": 16,
                "progress": False,
                "device": "cpu",
            },
        }
    )
    train_run(config, folder / "run")
    return load_run(folder / "run")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_parts_give_the_metrics_of_the_whole_file(run: LoadedRun, tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"test{suffix}"
    write_table(_events(101, seed=1), source)
    whole = run.evaluate(run.read(source, require_labels=True))
    assert "gauc" in whole["click"]  # the premise: grouped metrics are measured
    for rows in (7, 50, 1000):  # float32 logits differ in their last bits between batch shapes: 1e-6
        parts = evaluate_file(run, source, chunk_rows=rows)
        assert parts.keys() == whole.keys()
        for task, values in whole.items():
            assert parts[task].keys() == values.keys()
            for metric, value in values.items():
                assert parts[task][metric] == pytest.approx(value, rel=1e-6, nan_ok=True), (
                    task,
                    metric,
                )


@pytest.mark.parametrize("chunk_rows", [0, -3, 2.5, True])
def test_evaluate_file_refuses_a_bad_chunk_rows(run: LoadedRun, tmp_path: Path, chunk_rows: object) -> None:
    source = tmp_path / "t.csv"
    write_table(_events(10, seed=2), source)
    with pytest.raises(MtlkitError, match="chunk_rows must be an integer >= 1"):
        evaluate_file(run, source, chunk_rows=chunk_rows)  # type: ignore[arg-type]


def test_cli_evaluate_data_reads_in_parts(
    run: LoadedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "t.csv"
    write_table(_events(40, seed=2), source)
    assert main(["evaluate", str(run.out_dir), "--data", str(source), "--json", "--chunk-rows", "9"]) == 0
    printed = json.loads(capsys.readouterr().out)["t.csv"]
    expected = evaluate_file(run, source)
    assert printed.keys() == expected.keys() == {"click", "buy", "mean"}
    for task, values in expected.items():
        assert printed[task] == pytest.approx(values, rel=1e-6, nan_ok=True)
    assert main(["evaluate", str(run.out_dir), "--data", str(source), "--chunk-rows", "0"]) == 2
    assert "--chunk-rows must be >= 1, got 0" in capsys.readouterr().err


def test_missing_label_column_and_empty_file(run: LoadedRun, tmp_path: Path) -> None:
    source = tmp_path / "nolabel.csv"
    write_table(_events(10, seed=3).drop_columns(["buy"]), source)
    with pytest.raises(MtlkitError, match=r"(?s)lacks 1 column.*'buy', needed by the label of task 'buy'"):
        evaluate_file(run, source)
    empty = tmp_path / "empty.csv"
    empty.write_text("user,request,price,click,buy\n")
    with pytest.raises(MtlkitError, match="no data rows"):
        evaluate_file(run, empty)
