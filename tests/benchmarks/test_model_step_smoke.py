"""Smoke test of benchmarks/model_step.py: it runs end to end at the paper size and writes sane JSON.

No wall-clock targets are asserted here (the machine is shared and noisy); the real numbers come from the full
run documented in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "model_step.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("_bench_model_step", SCRIPT)
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


def test_small_run_writes_json(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    argv = ["--sizes", "paper", "--repeats", "2", "--warmup", "1", "--steps-per-round", "2"]
    argv += ["--matmul-calls", "2", "--no-docs", "--json", str(out)]
    bench.main(argv)
    result = json.loads(out.read_text())
    assert result["command"] == "python benchmarks/model_step.py " + " ".join(argv)
    assert result["batch_size"] == 1024
    assert result["repeats"] == 2
    assert result["adam"] == "fused"  # the default, for every contender
    assert result["round_warmup"] == 1
    assert positive(result["matmul"]["ceiling_gflops"])
    for shape in result["matmul"]["shapes"].values():
        assert len(shape["gflops"]) == 2
        assert all(positive(x) for x in shape["gflops"])
    assert list(result["sizes"]) == ["paper"]
    paper = result["sizes"]["paper"]
    assert paper["input_dim"] == 100
    assert paper["looped_max_abs_diff"] < 1e-4  # the looped reference computes the same function
    assert paper["minimal_max_abs_diff"] < 1e-4  # so does the fused one
    models = paper["models"]
    assert set(models) == {"mmoe", "ple", "shared_bottom", "mmoe_looped", "mmoe_minimal"}
    for name, m in models.items():
        if not m["available"]:  # PLE may not be written yet: reported, not timed
            assert name == "ple"
            assert m["error"]
            continue
        assert len(m["seconds_per_step"]) == len(m["fraction_of_ceiling"]) == 2
        assert all(positive(x) for x in m["seconds_per_step"])
        for key in ("median_ms", "samples_per_second", "achieved_gflops", "median_fraction_of_ceiling"):
            assert positive(m[key]), key
        assert all(positive(x) for x in m["median_phase_ms"].values())
        assert len(m["minor_faults_per_step"]) == 2
        assert all(x >= 0 for x in m["minor_faults_per_step"])
        assert m["median_minor_faults_per_step"] >= 0
        flops = m["flops_per_sample"]
        assert flops["train"] == 3 * flops["forward"] > 0
        # the analytic forward count equals what FlopCounterMode sees in the forward pass
        assert flops["counted_forward"] == flops["forward"]
        assert 0 < flops["counted_train"] <= flops["train"]
    assert models["mmoe"]["flops_per_sample"] == models["mmoe_looped"]["flops_per_sample"]
    assert models["mmoe"]["flops_per_sample"] == models["mmoe_minimal"]["flops_per_sample"]
    for name in ("mmoe", "mmoe_minimal"):
        assert len(models[name]["speedup_vs_looped_per_round"]) == 2
        assert positive(models[name]["speedup_vs_looped"])
    targets = result["targets"]
    assert isinstance(targets["speedup_met"], bool)
    assert targets["fraction_met"] is None  # the production size was not run
    assert targets["all_met"] is False


def test_unavailable_model_is_reported_and_skipped(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, schema: object, **params: object) -> None:
        raise RuntimeError(f"{name} is not written yet")

    monkeypatch.setattr(bench, "create_model", broken)
    out = tmp_path / "x.json"
    argv = ["--sizes", "paper", "--models", "ple", "mmoe_looped", "--repeats", "1", "--warmup", "0"]
    bench.main([*argv, "--steps-per-round", "1", "--matmul-calls", "1", "--no-docs", "--json", str(out)])
    models = json.loads(out.read_text())["sizes"]["paper"]["models"]
    assert models["ple"] == {
        "available": False,
        "config": bench.model_configs(bench.SIZES["paper"])["ple"],
        "error": "RuntimeError: ple is not written yet",
    }
    assert models["mmoe_looped"]["available"] is True


def test_docs_section_and_update(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    argv = ["--sizes", "paper", "--repeats", "1", "--warmup", "0", "--steps-per-round", "1"]
    docs = tmp_path / "docs" / "benchmarks.md"
    other = "<!-- other:start -->\nsomeone else's numbers\n<!-- other:end -->\n"
    docs.parent.mkdir()
    docs.write_text(f"# Benchmarks\n\n{other}")
    bench.main([*argv, "--matmul-calls", "1", "--json", str(out), "--docs", str(docs)])
    text = docs.read_text()
    assert text.startswith(f"# Benchmarks\n\n{other}\n{bench.START_MARKER}\n## Model training step")
    assert text.count(bench.START_MARKER) == text.count(bench.END_MARKER) == 1
    assert "| paper | `mmoe` |" in text
    assert "python benchmarks/model_step.py --sizes paper" in text

    bench.update_docs(docs, "replaced")
    assert (
        docs.read_text() == f"# Benchmarks\n\n{other}\n{bench.START_MARKER}\nreplaced\n{bench.END_MARKER}\n"
    )
