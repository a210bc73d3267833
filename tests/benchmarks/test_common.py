"""benchmarks/_common.py: interleaved rounds, number formatting, the marked docs sections, the JSON result."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "_common.py"


@pytest.fixture(scope="module")
def common() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("_bench_common_under_test", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("alternate", [True, False])
def test_interleaved_rounds_order_hooks_and_results(common: ModuleType, alternate: bool) -> None:
    calls: list[str] = []

    def contender(name: str) -> Callable[[int], str]:
        def run(r: int) -> str:
            calls.append(f"{name}{r}")
            return f"{name}:{r}"

        return run

    after: list[dict[str, str]] = []
    out = common.interleaved_rounds(
        3,
        {"a": contender("a"), "b": contender("b")},
        alternate=alternate,
        before_round=lambda r: calls.append(f"before{r}"),
        after_round=lambda r, latest: after.append(latest),
    )
    second = ["b1", "a1"] if alternate else ["a1", "b1"]
    assert calls == ["before0", "a0", "b0", "before1", *second, "before2", "a2", "b2"]
    assert out == {"a": ["a:0", "a:1", "a:2"], "b": ["b:0", "b:1", "b:2"]}
    assert after == [{"a": f"a:{r}", "b": f"b:{r}"} for r in range(3)]
    assert [list(x) for x in after] == [["a", "b"]] * 3  # reported in the contenders' order


def test_numbers(common: ModuleType) -> None:
    assert common.sig3(8_763_412.0) == "8,760,000"
    assert common.sig3(0.012345) == "0.0123"
    assert common.sig3(315.4) == "315"
    assert common.sig3(0) == "0"
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    common.check_finite([1.0, 2.0], "ok")
    with pytest.raises(RuntimeError, match="non-finite result: bad"):
        common.check_finite([1.0, float("nan")], "bad")
    assert common.minor_faults() >= 0
    assert common._binary_size(256 * 2**20) == "256 MiB"
    assert common._binary_size(2**30) == "1 GiB"
    assert common._binary_size(1000) == "1000 bytes"
    kept = common.allocator_sentence({"applied": True, "reason": ""})
    assert "256 MiB (mmap) and 1 GiB (trim)" in kept  # from mtlkit.training.memory's thresholds
    assert common.allocator_sentence({"applied": False, "reason": "why"}).endswith("(why).")


def test_median_interval(common: ModuleType) -> None:
    """A bootstrap interval of the median: it holds the median, is reproducible (fixed seed), narrows with more
    rounds of the same spread, collapses for identical values, and rejects what it cannot use."""
    import random

    rng = random.Random(3)
    few = [1.0 + rng.gauss(0.0, 0.05) for _ in range(21)]
    many = [1.0 + rng.gauss(0.0, 0.05) for _ in range(400)]
    low, high = common.median_interval(few)
    assert low <= common.median(few) <= high
    assert common.median_interval(few) == (low, high)
    assert 0.0 < high - low < 0.2
    low_many, high_many = common.median_interval(many)
    assert high_many - low_many < (high - low) / 2
    assert common.median_interval([1.5] * 7) == (1.5, 1.5)
    assert common.median_interval(few, level=0.5)[1] - common.median_interval(few, level=0.5)[0] < high - low
    with pytest.raises(ValueError, match="at least one value"):
        common.median_interval([])
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1.5"):
        common.median_interval(few, level=1.5)


def test_outputs_and_arguments(common: ModuleType, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    common.add_output_arguments(parser, "demo")
    args = parser.parse_args(["--json", str(tmp_path / "r" / "x.json"), "--docs", str(tmp_path / "b.md")])
    assert parser.parse_args([]).json == common.RESULTS_DIR / "demo.json"
    common.require_positive(parser, args, ["repeats"])
    with pytest.raises(SystemExit):
        common.require_positive(parser, parser.parse_args(["--repeats", "0"]), ["repeats"])

    result = {"benchmark": "demo", **common.environment(), **common.provenance("python x.py")}
    assert set(result) >= {
        "torch_version",
        "python_version",
        "platform",
        "timestamp",
        "git_commit",
        "command",
    }
    wrote = common.write_outputs(args, "demo", result, lambda: "## Demo\n\nnumbers")
    assert json.loads((tmp_path / "r" / "x.json").read_text()) == result
    page = (tmp_path / "b.md").read_text()
    assert page.startswith("# Benchmarks")
    assert "<!-- demo:start -->\n## Demo\n\nnumbers\n<!-- demo:end -->" in page
    assert wrote == f"wrote {args.json} and {args.docs}"
    assert common.provenance_line(result).startswith(f"torch {result['torch_version']}, Python ")
    assert common.command_line("benchmarks/x.py", ["--a", "b c"]) == "python benchmarks/x.py --a 'b c'"


def test_broken_markers_are_an_error(common: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "b.md"
    page.write_text("<!-- demo:end -->\n<!-- demo:start -->\n")
    with pytest.raises(SystemExit, match="fix the file by hand"):
        common.update_docs(page, "demo", "x")
