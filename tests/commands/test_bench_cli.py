"""``mtlkit bench`` through the command line: errors, and the real path (a process per run, peak memory from
wait4) on the smallest grid (the 2 x 2 x 2 grid through the CLI, trained in-process, is in tests/test_bench.py)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtlkit.cli import main

CONFIG = """\
seed: 0
data:
  dataset: synthetic
  params: {train_rows: 300, valid_rows: 100, test_rows: 100, binary: true}
model:
  name: shared_bottom
  params: {bottom_sizes: [8], tower_sizes: [4]}
training:
  epochs: 1
  batch_size: 64
  device: cpu
bench:
  balancer_params:
    uncertainty: {no_such_parameter: 1}
  baseline: {name: single_task, params: {bottom_sizes: [8], tower_sizes: [4]}}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cli_reports_bad_names_in_one_line(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    assert main(["bench", str(config_file), "--models", "mmo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'mmo' (did you mean 'mmoe'?)" in err
    assert "Traceback" not in err
    assert not (out / "runs").exists()


def test_cli_real_processes(config_file: Path, tmp_path: Path) -> None:
    """One process per run: a failing balancer (bad parameter) gives status failed and exit 1, the rest finish,
    and every run that ran has its own peak memory."""
    out = tmp_path / "bench"
    command = [
        sys.executable,
        "-m",
        "mtlkit.cli",
        "bench",
        str(config_file),
        "--balancers",
        "static,uncertainty",
    ]
    command += ["--seeds", "1", "--out", str(out), "--baseline-cache", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {(r["family"], r["balancer"]): r for r in _rows(out / "results.csv")}
    assert rows["baseline", "static"]["status"] == "ok"
    assert rows["mtl", "static"]["status"] == "ok"
    assert rows["mtl", "uncertainty"]["status"] == "failed"
    for row in rows.values():
        assert float(row["peak_memory_mb"]) > 10  # a Python process with torch loaded
        assert (out / row["run_dir"] / "train.log").is_file()
    log = (out / rows["mtl", "uncertainty"]["run_dir"] / "train.log").read_text()
    assert "no_such_parameter" in log
    record = json.loads((out / rows["mtl", "static"]["run_dir"] / "bench_run.json").read_text())
    assert record["returncode"] == 0
