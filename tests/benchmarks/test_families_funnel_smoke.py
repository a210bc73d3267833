"""The families benchmark runs end to end on a tiny funnel (one seed, one epoch, in process) and writes a
well-formed result: every family trained, a searched fusion per run, references and a docs section."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "families_funnel", ROOT / "benchmarks" / "families_funnel.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("families")
    out, docs = tmp / "r.json", tmp / "benchmarks.md"
    argv = ["--config", str(ROOT / "examples" / "funnel_bench.yaml"), "--quick", "--grid", "6"]
    argv += ["--json", str(out), "--docs", str(docs)]
    assert _module().main(argv) == 0
    return json.loads(out.read_text()), docs.read_text()


def test_every_family_and_model_is_trained_and_fused(quick) -> None:  # type: ignore[no-untyped-def]
    result, _ = quick
    assert list(result["funnel"]) == ["default"]  # --quick: the first data setting only
    funnel = result["funnel"]["default"]
    assert funnel["training"]["epochs"] == 1
    rows = {(r["family"], r["model"]) for r in funnel["runs"]}
    assert rows == {
        ("mtl", "mmoe"),
        ("mtl", "esmm"),
        ("multi_model", "single_task"),  # the family always trains single_task + static
        ("sample_weighting", "mmoe"),
        ("pairwise_ltr", "mmoe"),
    }
    for run in funnel["runs"]:
        assert run["status"] == "ok", run
        for task in ("click", "conversion"):
            assert 0.0 <= run["test"][task]["auc"] <= 1.0
        fusion = run["fusion"]
        assert set(fusion["weights"]) == {"click", "conversion", "price"}
        assert math.isclose(sum(fusion["weights"].values()), 1.0, rel_tol=1e-9)
        assert fusion["candidates"] == math.comb(6 - 2 + 3, 2)  # the simplex grid of 6 levels, 3 weights
        assert 0.0 < fusion["test_ndcg"] <= 1.0
        # the search keeps the best candidate, so it is at least as good on valid as any fixed fusion tried
        assert fusion["valid_ndcg"] >= run["fixed_conversion_x_price"]["valid"] - 1e-12
        assert len(run["epoch_seconds"]) == run["epochs"] == 1


def test_references_bracket_the_families(quick) -> None:  # type: ignore[no-untyped-def]
    result, _ = quick
    refs = result["funnel"]["default"]["references"]["test"]
    assert refs["true_value (ideal)"] == pytest.approx(1.0)
    assert refs["random"] < refs["true_ctr * true_cvr"] < 1.0
    for row in result["funnel"]["default"]["summary"]:
        assert row["ndcg_test"]["mean"] <= 1.0 + 1e-12


def test_docs_section_holds_the_table_and_the_command(quick) -> None:  # type: ignore[no-untyped-def]
    result, docs = quick
    assert "<!-- families_funnel:start -->" in docs
    assert "| pairwise_ltr | mmoe |" in docs
    assert "python benchmarks/families_funnel.py" in docs
    assert "Reading (computed from the numbers above)" in docs
    assert result["command"] in docs


def test_real_samples_format_check(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["--no-funnel", "--real", "--data-dir", str(data_dir), "--no-docs", "--json", str(out)]
    assert _module().main(argv) == 0
    runs = json.loads(out.read_text())["real"]["runs"]
    assert {(r["dataset"], r["family"]) for r in runs} == {
        (d, f)
        for d in ("aliexpress", "ali_ccp")
        for f in ("mtl", "multi_model", "sample_weighting", "pairwise_ltr")
    }
    for run in runs:
        assert run["status"] == "ok", run
        tasks = {"click", "conversion"} if run["dataset"] == "aliexpress" else {"click", "purchase"}
        assert tasks <= set(run["test"])
    pairs = {r["dataset"]: r["train_pairs"] for r in runs if r["family"] == "pairwise_ltr"}
    assert pairs["ali_ccp"] > 0


def test_render_only_rewrites_the_section_from_the_json(quick, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result, docs = quick
    saved, page = tmp_path / "r.json", tmp_path / "b.md"
    saved.write_text(json.dumps(result))
    page.write_text("# Benchmarks\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    assert _module().main(["--render-only", "--json", str(saved), "--docs", str(page)]) == 0
    text = page.read_text()
    assert "kept" in text
    section = text[text.index("<!-- families_funnel:start -->") :]
    assert section.strip() == docs[docs.index("<!-- families_funnel:start -->") :].strip()
