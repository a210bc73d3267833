"""The loss-scales benchmark runs end to end (tiny: one seed, one epoch, two methods) and writes a well-formed
result whose docs section renders."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("loss_scales", ROOT / "benchmarks" / "loss_scales.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "loss_scales.json"
    argv = ["--methods", "static", "gradnorm", "--seeds", "0", "--epochs", "1", "--train-rows", "300"]
    argv += ["--test-rows", "200", "--dim", "8", "--batch-size", "64", "--no-docs", "--json", str(out)]
    assert module.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"static", "gradnorm"}
    assert set(result["references"]) == set(module.REFERENCES)
    for entry in [*result["methods"].values(), *result["references"].values()]:
        assert entry["status"] == "ok", entry
        (run,) = entry["runs"]
        assert all(math.isfinite(run[k]) for k in ("big_r2", "big_mse", "small_auc"))
        assert len(run["train_losses_per_epoch"]) == 1
    assert result["methods"]["static"]["runs"][0]["final_effective_weights"] == [1.0, 1.0]
    assert sum(result["methods"]["gradnorm"]["runs"][0]["final_effective_weights"]) == pytest.approx(2.0)
    text = module._docs(result)
    assert "| `gradnorm` |" in text
    assert "Recover both tasks" in text
    assert result["command"].startswith("python benchmarks/loss_scales.py")
    assert not (tmp_path / "benchmarks.md").exists()
