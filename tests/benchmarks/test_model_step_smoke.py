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
        # the analytic forward count equals what FlopCounterMode sees in the forward pass, where the looped
        # reference's gated sums (2 tasks x 2 E d, elementwise as in the seeds) are no matmuls
        elementwise = 2 * 2 * 8 * 16 if name == "mmoe_looped" else 0
        assert flops["counted_forward"] == flops["forward"] - elementwise
        assert 0 < flops["counted_train"] <= flops["train"]
        products = m["products"]
        # the recorded products are every product FlopCounterMode counts in a training step
        assert products["flops_per_sample"] == flops["counted_train"]
        assert products["count"] == len(products["calls"]) > 0
        assert sum(c["flops"] for c in products["calls"]) // 1024 == products["flops_per_sample"]
        for key in ("seconds_per_step", "fraction_of_ceiling", "rest_seconds", "fraction_without_rest"):
            assert len(products[key]) == 2, key
        assert all(positive(x) for x in products["seconds_per_step"])
        assert positive(products["median_fraction_without_rest"])
        for sec, rest, step in zip(
            products["seconds_per_step"], products["rest_seconds"], m["seconds_per_step"], strict=True
        ):
            assert math.isclose(sec + rest, step)
    for key in (
        "forward",
        "train",
    ):  # the same analytic FLOPs (FlopCounterMode does not count elementwise sums)
        assert models["mmoe"]["flops_per_sample"][key] == models["mmoe_looped"]["flops_per_sample"][key]
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
    assert "products alone" in text
    assert "At the paper size, 2x `mmoe_looped` means a `mmoe` step of" in text
    assert "python benchmarks/model_step.py --sizes paper" in text

    bench.update_docs(docs, "replaced")
    assert (
        docs.read_text() == f"# Benchmarks\n\n{other}\n{bench.START_MARKER}\nreplaced\n{bench.END_MARKER}\n"
    )


def test_step_products_are_the_calls_autograd_makes(bench: ModuleType) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 3)
    weight = torch.randn(4, 3, 2, requires_grad=True)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer
            self.weight = torch.nn.Parameter(weight.detach().clone())

        def compute(self, categorical: torch.Tensor, numeric: torch.Tensor) -> object:
            h = self.layer(numeric)  # addmm [B, 5] x [5, 3]; the input needs no gradient: no dX product
            out = torch.bmm(h.unsqueeze(0).expand(4, -1, -1), self.weight)  # [4, B, 2]
            logits = out.sum(0)
            return bench.Output(logits={"task_0": logits[:, 0], "task_1": logits[:, 1]}, shared=h)

    model = Tiny()
    batch = (torch.zeros(6, 0, dtype=torch.int64), torch.randn(6, 5), torch.ones(6, 2))
    products = bench.step_products(model, batch)
    ops = [p.op for p in products]
    # forward: addmm, bmm; backward of bmm: dX and dW (two bmm); of the Linear: dW only (mm)
    assert ops[:2] == ["addmm", "bmm"]
    assert sorted(ops[2:]) == ["bmm", "bmm", "mm"]
    assert products[0].flops == 2 * 6 * 5 * 3
    assert products[1].flops == 2 * 4 * 6 * 3 * 2
    assert all(p.grad is None for p in model.parameters())  # gradients cleared
    replay = bench.ProductReplay(products, seed=0)
    assert replay.flops == sum(p.flops for p in products)
    for p, (_, args, _) in zip(products, replay.calls, strict=True):
        shapes = [(tuple(a.shape), a.stride()) for a in args if isinstance(a, torch.Tensor)]
        assert shapes == [(x.shape, x.stride) for x in p.args if isinstance(x, bench.TensorArg)]
    assert positive(replay.run(2))


def test_strided_randn_keeps_shape_and_strides(bench: ModuleType) -> None:
    g = torch.Generator().manual_seed(0)
    t = bench.strided_randn(bench.TensorArg((3, 4), (1, 3)), g)  # a transposed [4, 3]
    assert t.shape == (3, 4)
    assert t.stride() == (1, 3)
    assert t.isfinite().all()
    assert t.std() > 0
    expanded = bench.strided_randn(bench.TensorArg((2, 5), (0, 1)), g)
    assert expanded.stride() == (0, 1)
    assert torch.equal(expanded[0], expanded[1])
    assert bench.strided_randn(bench.TensorArg((0, 3), (3, 1)), g).shape == (0, 3)
