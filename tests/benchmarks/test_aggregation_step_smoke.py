"""Smoke test of benchmarks/aggregation_step.py: a tiny run (paper size, 2 tasks, 2 aggregators, 1 round) writes
sane JSON. No wall-clock targets are asserted (the machine is shared and noisy), and LibMTL is not installed."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "aggregation_step.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("_bench_aggregation_step", SCRIPT)
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


def positive(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_tiny_run_writes_json(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    argv = ["--sizes", "paper", "--tasks", "2", "--methods", "mgda", "pcgrad", "--repeats", "1"]
    argv += ["--warmup", "1", "--steps-per-round", "1", "--no-docs", "--json", str(out)]
    bench.main(argv)
    result = json.loads(out.read_text())
    assert result["command"] == "python benchmarks/aggregation_step.py " + " ".join(argv)
    assert result["batch_size"] == 1024
    assert result["methods"] == ["mgda", "pcgrad"]
    assert result["libmtl"] == {"measured": False, "reason": "run without --libmtl"}
    assert list(result["groups"]) == ["paper/2"]
    group = result["groups"]["paper/2"]
    assert group["floor"] == pytest.approx(5 / 3)
    assert positive(group["baseline"]["median_ms"])
    for mode in ("parameter", "representation"):
        for method in ("mgda", "pcgrad"):
            m = group["modes"][mode][method]
            assert len(m["seconds_per_step"]) == len(m["ratio_per_round"]) == 1
            assert positive(m["ratio"])
            assert positive(m["median_ms"])
            assert m["ratio_interval"] == [m["ratio"], m["ratio"]]  # one round: nothing to resample
    # paper size at 2 tasks: the LibMTL comparison falls back to the quoted ratios, labelled so
    rows = [t for t in result["targets"] if "LibMTL" in t["target"]]
    assert {t["method"] for t in rows} == {"mgda", "pcgrad"}
    assert all("quoted" in t["target"] and isinstance(t["met"], bool) for t in rows)
    assert all(t["interval"] == [t["measured"], t["measured"]] for t in result["targets"])


def test_docs_section(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    docs = tmp_path / "benchmarks.md"
    other = "<!-- other:start -->\nsomeone else's numbers\n<!-- other:end -->\n"
    docs.write_text(f"# Benchmarks\n\n{other}")
    argv = ["--sizes", "paper", "--tasks", "2", "--methods", "pcgrad", "--repeats", "1", "--warmup", "0"]
    bench.main([*argv, "--steps-per-round", "1", "--json", str(out), "--docs", str(docs)])
    text = docs.read_text()
    assert text.startswith(f"# Benchmarks\n\n{other}\n{bench.START_MARKER}\n## Gradient aggregation step")
    assert text.count(bench.START_MARKER) == text.count(bench.END_MARKER) == 1
    assert "| `pcgrad` |" in text
    assert "quoted from the issue" in text
    assert "| 95% interval | limit | met |" in text
    assert re.search(r"\| `pcgrad` \| ([0-9.]+)x \| \1-\1x \| [0-9.]+x \|", text)
    assert re.search(
        r"of \d+ checks; \d+ of them with the limit inside the interval \(\d+ met, \d+ not met\)", text
    )


def test_targets_say_when_the_limit_lies_inside_the_interval(bench: ModuleType) -> None:
    inside = {"limit": 1.2, "interval": [1.15, 1.25], "met": True}
    assert bench._straddles(inside)
    assert not bench._straddles({**inside, "interval": [1.05, 1.15]})
    assert not bench._straddles({**inside, "interval": None})
    assert not bench._straddles({**inside, "limit": None})


def test_libmtl_cagrad_reshapes_are_generalised_and_nothing_else(bench: ModuleType) -> None:
    """LibMTL 1.1.5's CAGrad reshapes to a hard-coded 3 tasks; the runner replaces exactly those reshapes (written
    with or without a space) by -1, and leaves any other reshape alone."""
    source = "v = x.reshape(1,3).dot(A).dot(b.reshape(3, 1)) + x.reshape(3,1).sum() + y.reshape(2, 3)"
    assert bench.generalise_reshapes(source) == (
        "v = x.reshape(1, -1).dot(A).dot(b.reshape(-1, 1)) + x.reshape(-1, 1).sum() + y.reshape(2, 3)"
    )
    assert bench.generalise_reshapes("w.reshape(13, 1)") == "w.reshape(13, 1)"
