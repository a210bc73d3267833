"""The command line: data list / describe, and errors that exit 2 with one message (no stack trace)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtlkit.cli import coerce, main
from mtlkit.errors import MtlkitError


def test_data_list_names_every_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("synthetic", "census_income", "aliexpress", "ali_ccp"):
        assert name in out


def test_describe_synthetic_as_json_takes_typed_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "data",
            "describe",
            "synthetic",
            "--set",
            "tasks=3",
            "--set",
            "binary=true",
            "--set",
            "train_rows=400",
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    train = summary["parts"]["train"]
    assert train["rows"] == 400
    assert [t["name"] for t in train["tasks"]] == ["y1", "y2", "y3"]
    assert all(0.4 < t["positive_rate"] < 0.6 for t in train["tasks"])


def test_describe_census_prints_rows_tasks_and_rates(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "describe", "census_income", "--data-dir", str(data_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = {part: info["rows"] for part, info in summary["parts"].items()}
    assert sum(rows.values()) == 99_762
    income = summary["parts"]["train"]["tasks"][0]
    assert income["name"] == "income"
    assert income["missing"] == 0
    assert 0.05 < income["positive_rate"] < 0.075
    assert "default_rng(0)" in summary["note"]


def test_describe_table_output_has_the_missing_label_counts(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["data", "describe", "aliexpress", "--set", "conversion=clicked_only", "--data-dir", str(data_dir)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "conversion" in out
    assert "missing" in out
    assert "36" in out  # 36 unclicked training rows have their conversion label masked


def test_describe_a_file_infers_and_prints_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user,price,click\nu1,1.5,1\nu2,2.0,0\nu1,,1\n")
    assert main(["data", "describe", str(path), "--label", "click"]) == 0
    out = capsys.readouterr().out
    assert "schema:" in out
    assert "name: user" in out.replace("{", "").replace("'", "")
    assert "click" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "describe", "sythetic"], "did you mean 'synthetic'"),
        (["data", "describe", "synthetic", "--set", "corelation=0.2"], "did you mean 'correlation'"),
        (["data", "describe", "synthetic", "--set", "correlation=high"], "must be float, got 'high'"),
        (["data", "describe", "synthetic", "--set", "binary=maybe"], "true or false, got 'maybe'"),
        (["data", "describe", "synthetic", "--set", "tasks"], "KEY=VALUE"),
        (["data", "describe", "synthetic", "--data-dir", "/tmp"], "reads no files"),
        (["data", "describe", "aliexpress", "--set", "conversion=clicked"], "did you mean 'clicked_only'"),
        (["data", "describe", "/nonexistent/file.csv", "--label", "y"], "file not found"),
    ],
)
def test_bad_input_exits_2_with_one_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtlkit: error:")
    assert message in err
    assert "Traceback" not in err


def test_coerce_handles_optional_and_literal_types() -> None:
    from typing import Literal

    assert coerce("none", int | None, "x") is None
    assert coerce("3", int | None, "x") == 3
    assert coerce("a", Literal["a", "b"], "x") == "a"
    with pytest.raises(MtlkitError, match="one of 'a', 'b'"):
        coerce("c", Literal["a", "b"], "x")


def test_console_script_runs_and_fails_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mtlkit.cli", "data", "describe", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown dataset 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
