"""Smoke test of benchmarks/data_throughput.py: it runs end to end on a small Table and writes sane JSON.

No wall-clock targets are asserted here (the machine is shared and noisy); the real numbers come from the full
run documented in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_throughput.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("_bench_data_throughput", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    threads = torch.get_num_threads()
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        torch.set_num_threads(threads)  # main() sets the thread count of this process
        sys.modules.pop(spec.name, None)


def test_small_run_writes_json(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    bench.main(["--rows", "20000", "--repeats", "1", "--no-docs", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["rows"] == 20000
    assert result["columns"]["total"] == 40
    assert result["table"]["rows_per_second"] > 0
    assert result["dataloader"]["rows_per_second"] > 0
    assert result["dataloader"]["full_epoch"] is True
    assert result["ratio"] > 1
    assert len(result["table"]["seconds"]) == len(result["dataloader"]["seconds"]) == 1
    assert set(result["targets"]) >= {"ratio_met", "table_rows_per_second_met"}
    assert result["command"].startswith("python benchmarks/data_throughput.py --rows 20000")


def test_prefix_timing_is_scaled(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    argv = ["--rows", "20000", "--repeats", "1", "--no-docs", "--json", str(out)]
    bench.main([*argv, "--dataloader-max-seconds", "1e-6"])
    loader = json.loads(out.read_text())["dataloader"]
    assert loader["full_epoch"] is False
    assert loader["prefix_batches"] == 10  # the floor, of 20 batches
    assert loader["prefix_scale"] == pytest.approx(2.0)
    assert loader["seconds"][0] == pytest.approx(loader["measured_seconds"][0] * 2.0)


def test_docs_update_replaces_only_its_section(bench: ModuleType, tmp_path: Path) -> None:
    docs = tmp_path / "docs" / "benchmarks.md"
    bench.update_docs(docs, "first")
    created = docs.read_text()
    assert created.startswith("# Benchmarks")
    assert f"{bench.START_MARKER}\nfirst\n{bench.END_MARKER}" in created

    other = "<!-- other:start -->\nsomeone else's numbers\n<!-- other:end -->\n"
    docs.write_text(created + "\n" + other)
    bench.update_docs(docs, "second")
    text = docs.read_text()
    assert "first" not in text
    assert f"{bench.START_MARKER}\nsecond\n{bench.END_MARKER}" in text
    assert text.endswith(other)
    assert text.count(bench.START_MARKER) == text.count(bench.END_MARKER) == 1

    docs.write_text("# Benchmarks\n\nhand-written intro\n")
    bench.update_docs(docs, "third")
    assert docs.read_text() == (
        f"# Benchmarks\n\nhand-written intro\n\n{bench.START_MARKER}\nthird\n{bench.END_MARKER}\n"
    )
