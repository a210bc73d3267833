"""Rows of one split equal to a row of another: hashes equal exactly for equal rows, counts equal a brute-force
comparison, and `mtlkit data describe` / `mtlkit train` report them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from mtlkit.cli import main
from mtlkit.config import RunConfig
from mtlkit.data.overlap import repeated_rows, repeats_note, row_hashes
from mtlkit.data.table import Table
from mtlkit.schema import Feature, Schema, Task
from mtlkit.training.run import train_run

SCHEMA = Schema(
    (Feature("u", "categorical", vocab_size=5), Feature("x", "numeric"), Feature("z", "numeric")),
    (Task("click"), Task("time", "regression")),
)


def _table(rows: list[tuple[int, float, float, float, float]]) -> Table:
    data = torch.tensor(rows, dtype=torch.float64)
    return Table(SCHEMA, data[:, :1].long(), data[:, 1:3].float(), data[:, 3:].float())


def test_equal_rows_hash_equal_and_any_changed_value_changes_the_hash() -> None:
    base = (2, 0.5, -1.0, 1.0, 3.25)
    changed = [
        (3, 0.5, -1.0, 1.0, 3.25),  # a categorical code
        (2, 0.5000001, -1.0, 1.0, 3.25),  # a numeric value, by one float32 step
        (2, -1.0, 0.5, 1.0, 3.25),  # two numeric values swapped
        (2, 0.5, -1.0, 0.0, 3.25),  # a label
        (2, 0.5, -1.0, math.nan, 3.25),  # a label missing
    ]
    hashes = row_hashes(_table([base, base, *changed, (2, 0.5, -1.0, math.nan, 3.25)]))
    assert hashes[0] == hashes[1]
    assert len(set(hashes[1:7].tolist())) == 6  # every change gives another hash
    assert hashes[6] == hashes[7]  # a missing label equals a missing label


def test_counts_equal_a_brute_force_comparison() -> None:
    rng = np.random.default_rng(0)

    def rows(n: int) -> list[tuple[int, float, float, float, float]]:
        # few distinct values, so that repeats happen by chance as well as by copying
        return [
            (
                int(rng.integers(0, 3)),
                float(rng.integers(0, 2)),
                0.5,
                float(rng.integers(0, 2)),
                float(rng.integers(0, 2)),
            )
            for _ in range(n)
        ]

    train_rows, other_rows = rows(40), rows(60)
    other_rows[:5] = train_rows[10:15]  # planted copies
    expected = sum(r in set(train_rows) for r in other_rows)
    assert 5 <= expected < 60  # the premise: some rows repeat, not all
    assert repeated_rows(_table(train_rows), _table(other_rows)) == expected
    assert repeated_rows(_table(train_rows), _table([(4, 9.0, 9.0, 9.0, 9.0)])) == 0


def test_note_names_the_parts_with_repeats() -> None:
    train = _table([(1, 0.0, 0.0, 1.0, 2.0), (2, 1.0, 1.0, 0.0, 1.0)])
    valid = _table([(1, 0.0, 0.0, 1.0, 2.0), (3, 1.0, 1.0, 0.0, 1.0)])
    test = _table([(4, 0.0, 0.0, 1.0, 2.0)])
    assert repeats_note(train, {"test": test}) is None
    note = repeats_note(train, {"valid": valid, "test": test})
    assert note is not None
    assert note.startswith(
        "rows equal to a training row (features and labels, after encoding): valid 1 of 2 (50.0%);"
    )


def test_describe_reports_repeats_of_training_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["data", "describe", "synthetic", "--set", "train_rows=300", "--set", "valid_rows=50", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["repeats_train"] == {"valid": 0, "test": 0}  # continuous features: no repeats


def test_train_says_when_validation_rows_repeat_training_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = ["u,x,y"] + [f"u{rng.integers(0, 5)},{rng.normal():.3f},{rng.integers(0, 2)}" for _ in range(200)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "valid.csv").write_text("\n".join(lines[:1] + lines[1:31] + lines[-10:]) + "\n")  # copies
    (tmp_path / "test.csv").write_text("u,x,y\nu9,9.999,1\n" + "\n".join(lines[1:4]) + "\n")
    config = RunConfig.from_dict(
        {
            "data": {
                "train": str(tmp_path / "train.csv"),
                "valid": str(tmp_path / "valid.csv"),
                "test": str(tmp_path / "test.csv"),
                "labels": ["y"],
            },
            "model": {"name": "shared_bottom", "params": {"bottom_sizes": [4], "tower_sizes": [2]}},
            "training": {"epochs": 1, "batch_size": 64, "progress": False, "device": "cpu"},
        }
    )
    console = Console(record=True, width=200)
    train_run(config, tmp_path / "run", console=console)
    text = console.export_text()
    note = "note: rows equal to a training row (features and labels, after encoding): valid 40 of 40 (100.0%)"
    assert f"{note}, test 3 of 4 (75.0%);" in text


def test_hashes_do_not_depend_on_the_block_of_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtlkit.data import overlap

    rng = np.random.default_rng(3)
    table = _table([(int(rng.integers(0, 5)), *rng.normal(size=4).tolist()) for _ in range(100)])
    whole = row_hashes(table)
    monkeypatch.setattr(overlap, "_BLOCK_WORDS", 7 * 5)  # blocks of 7 rows of 5 words
    assert torch.equal(row_hashes(table), whole)


def test_describe_a_run_configurations_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mtlkit data describe CONFIG.yaml` describes the train / valid / test data the configuration names, with
    --set as configuration overrides."""
    rng = np.random.default_rng(2)
    lines = ["u,x,y"] + [f"u{rng.integers(0, 5)},{rng.normal():.3f},{rng.integers(0, 2)}" for _ in range(100)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "valid.csv").write_text("\n".join(lines[:1] + lines[1:11] + ["u1,9.5,1"]) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {{train: {tmp_path / 'train.csv'}, valid: {tmp_path / 'valid.csv'}, labels: [y]}}\n"
        "model: {name: shared_bottom}\n"
    )
    assert main(["data", "describe", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = {part: info["rows"] for part, info in summary["parts"].items()}
    assert rows == {"train": 90, "valid": 11, "test": 10}  # test carved out of train by data.split
    assert 5 <= summary["repeats_train"]["valid"] <= 10  # 10 copied rows, a few of them carved into test
    assert main(["data", "describe", str(config), "--json", "--set", "data.split=[0.5, 0.5]"]) == 0
    assert json.loads(capsys.readouterr().out)["parts"]["train"]["rows"] == 50
    assert main(["data", "describe", str(config), "--label", "y"]) == 2
    assert "a configuration names its data" in capsys.readouterr().err
