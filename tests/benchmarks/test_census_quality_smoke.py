"""The Census quality benchmark runs end to end (one seed, one epoch) and writes a well-formed result."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_one_seed_one_epoch(data_dir: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("census_quality", ROOT / "benchmarks" / "census_quality.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "q.json"
    argv = ["--config", str(ROOT / "examples" / "census_income.yaml"), "--seeds", "0"]
    argv += ["--set", "training.epochs=1", "--no-docs", "--json", str(out)]
    assert module.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"income", "marital"}
    assert 0.8 < result["summary"]["income"]["mean"] <= 1.0
    assert "default_rng(0)" in result["split_note"]
