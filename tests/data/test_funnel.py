"""The funnel generator: target rates, the funnel rule, ground truth, splits by request, determinism, the CLI."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mtlkit.cli import main
from mtlkit.data.datasets import Splits, list_datasets, load_dataset
from mtlkit.data.datasets.funnel import VALUES, generate_funnel, solve_intercept
from mtlkit.data.table import Table
from mtlkit.errors import DataError

K = 10  # items per request


@cache
def _splits(seed: int = 0, impressions: int = 30_000) -> Splits:
    return load_dataset("funnel", impressions=impressions, users=2_000, items=500, seed=seed)


@cache
def _raw(seed: int = 0) -> dict[str, np.ndarray]:
    return generate_funnel(50_000, users=5_000, items=1_000, seed=seed).columns


def _ndcg(scores: np.ndarray, gains: np.ndarray, groups: np.ndarray) -> float:
    """Mean over groups of DCG(ranking by score) / DCG(ranking by gain), gain / log2(1 + rank)."""
    values = []
    for g in np.unique(groups):
        rows = groups == g
        s, y = scores[rows], gains[rows]
        discount = 1.0 / np.log2(np.arange(2, len(y) + 2))
        dcg = (y[np.argsort(-s, kind="stable")] * discount).sum()
        values.append(dcg / (np.sort(y)[::-1] * discount).sum())
    return float(np.mean(values))


# ---------------------------------------------------------------------- rates and the funnel rule
def test_registered() -> None:
    assert "funnel" in list_datasets()


@pytest.mark.parametrize(("ctr", "cvr"), [(0.05, 0.1), (0.2, 0.03)])
def test_rates_hit_targets(ctr: float, cvr: float) -> None:
    n = 50_000
    c = generate_funnel(n, users=5_000, items=1_000, ctr=ctr, cvr=cvr, seed=1).columns
    # expected rates are exact up to float32 rounding (the solved intercepts) ...
    assert c["true_ctr"].astype(np.float64).mean() == pytest.approx(ctr, rel=1e-4)
    expected_cvr = (c["true_ctr"].astype(np.float64) * c["true_cvr"]).sum() / c["true_ctr"].sum()
    assert expected_cvr == pytest.approx(cvr, rel=1e-4)
    # ... and the realised ones are within 5 binomial standard errors
    clicks = c["click"].sum()
    assert abs(c["click"].mean() - ctr) < 5 * np.sqrt(ctr * (1 - ctr) / n)
    assert abs(c["conversion"].sum() / clicks - cvr) < 5 * np.sqrt(cvr * (1 - cvr) / clicks)
    assert abs(c["conversion"].mean() - ctr * cvr) < 5 * np.sqrt(ctr * cvr / n)


def test_default_overall_conversion_rate_is_under_one_percent() -> None:
    c = _raw()
    assert 0.003 < c["conversion"].mean() < 0.01


def test_conversion_only_after_click() -> None:
    c = _raw()
    assert set(np.unique(c["click"])) == {0.0, 1.0}
    assert set(np.unique(c["conversion"])) == {0.0, 1.0}
    assert not np.any((c["conversion"] == 1) & (c["click"] == 0))
    assert c["conversion"][c["click"] == 1].mean() > 0


def test_true_probabilities_predict_the_labels() -> None:
    c = _raw()
    clicked = c["click"] == 1
    assert roc_auc_score(c["click"], c["true_ctr"]) > 0.7
    assert roc_auc_score(c["conversion"][clicked], c["true_cvr"][clicked]) > 0.65
    assert roc_auc_score(c["click"], c["noise_1"]) == pytest.approx(0.5, abs=0.02)


def test_tasks_related_but_not_identical() -> None:
    def corr(shared: float) -> float:
        c = generate_funnel(20_000, users=2_000, items=500, shared=shared, seed=2).columns
        logit = [np.log(c[k] / (1 - c[k])) for k in ("true_ctr", "true_cvr")]
        return float(np.corrcoef(*logit)[0, 1])

    low, mid, high = corr(0.0), corr(0.5), corr(1.0)
    assert 0.2 < mid < 0.9
    assert low < mid < high < 0.95


def test_solve_intercept_weighted_and_plain() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(10_000, generator=g, dtype=torch.float64) * 2
    w = torch.rand(10_000, generator=g, dtype=torch.float64)
    for target in (1e-4, 0.05, 0.5, 0.97):
        a = solve_intercept(s, target)
        assert float(torch.sigmoid(s + a).mean()) == pytest.approx(target, rel=1e-8)
        b = solve_intercept(s, target, weights=w)
        assert float((w * torch.sigmoid(s + b)).sum() / w.sum()) == pytest.approx(target, rel=1e-8)
    with pytest.raises(DataError, match=r"in \(0, 1\), got 1\.5"):
        solve_intercept(s, 1.5)


# ---------------------------------------------------------------------- schema, values and splits
def test_schema_tasks_group_and_values() -> None:
    schema = _splits().schema
    assert schema.task_names == ("click", "conversion")
    assert schema.task("conversion").depends_on is None
    assert schema.group == "request_id"
    assert schema.values == VALUES
    assert {f.name for f in schema.categorical} == {"user_id", "item_id", "item_category", "user_segment"}
    assert "price" in {f.name for f in schema.numeric}  # price is an input and a raw value
    assert not {"true_ctr", "true_cvr", "true_value", "request_id"} & {f.source for f in schema.features}
    chained = load_dataset("funnel", impressions=2_000, depends_on=True)
    assert chained.schema.task("conversion").depends_on == "click"


def test_true_value_is_ctr_times_cvr_times_price() -> None:
    for table in _splits().parts().values():
        expected = table.value("true_ctr") * table.value("true_cvr") * table.value("price")
        torch.testing.assert_close(table.value("true_value"), expected, rtol=1e-6, atol=0)
        assert bool((table.value("price") > 0).all())
        # the labels obey the funnel rule in the encoded Tables too
        assert not bool(((table.label("conversion") == 1) & (table.label("click") == 0)).any())


def test_requests_never_span_splits() -> None:
    splits = _splits()
    sizes = {name: len(t) for name, t in splits.parts().items()}
    assert sum(sizes.values()) == 30_000
    assert sizes["valid"] == sizes["test"] == 3_000  # 10 % of the 3,000 requests each
    for table in splits.parts().values():
        assert table.groups is not None
        # a request cut by the split would leave a group of fewer than K rows in two parts
        counts = torch.bincount(table.groups)
        assert bool((counts == K).all())
        # rows stay in request order: each group's rows are contiguous
        assert int((table.groups[1:] != table.groups[:-1]).sum()) + 1 == int(counts.numel())
    # no request in two parts: the context of a request is one number, shared by no other request
    contexts = [set(t.numeric[:, 3].tolist()) for t in splits.parts().values()]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert not contexts[i] & contexts[j]


def test_ideal_ranking_has_ndcg_one_and_others_less() -> None:
    table = _splits().test
    assert table.groups is not None
    gains = table.value("true_value").numpy().astype(np.float64)
    groups = table.groups.numpy()
    rng = np.random.default_rng(0)
    assert _ndcg(gains, gains, groups) == pytest.approx(1.0)
    random = _ndcg(rng.random(len(gains)), gains, groups)
    by_ctr = _ndcg(table.value("true_ctr").numpy(), gains, groups)
    assert random < by_ctr < 1.0  # ranking by click alone beats chance but misses conversion and price
    assert random < 0.9


def _tensors(t: Table) -> list[torch.Tensor]:
    assert t.values is not None
    assert t.groups is not None
    return [t.categorical, t.numeric, t.labels, t.values, t.groups]


def test_deterministic_per_seed_and_different_across_seeds() -> None:
    a, b = _splits(5, 5_000), load_dataset("funnel", impressions=5_000, users=2_000, items=500, seed=5)
    for part in ("train", "valid", "test"):
        for x, y in zip(_tensors(a.parts()[part]), _tensors(b.parts()[part]), strict=True):
            assert torch.equal(x, y)
    c = _splits(6, 5_000)
    assert not torch.equal(a.train.values, c.train.values)  # type: ignore[arg-type]
    assert not torch.equal(a.train.labels, c.train.labels)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ctr": 0.0}, "ctr must be a rate in (0, 1), got 0.0"),
        ({"cvr": 1.0}, "cvr must be a rate in (0, 1), got 1.0"),
        ({"users": 0}, "users must be an integer >= 1, got 0"),
        ({"shared": 2.0}, "shared must be in [-1, 1]"),
        ({"valid_fraction": 0.5, "test_fraction": 0.5}, "valid_fraction + test_fraction must be < 1"),
        ({"impressions": 15}, "only 2 request(s)"),
        ({"noise_features": -1}, "noise_features must be >= 0, got -1"),
    ],
)
def test_bad_parameters_explain(params: dict[str, float], message: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("funnel", **params)
    assert message in str(info.value)


def test_cli_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "describe", "funnel", "--set", "impressions=20000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    train = out["parts"]["train"]
    assert train["rows"] == 16_000
    assert [t["name"] for t in train["tasks"]] == ["click", "conversion"]
    assert [v["name"] for v in train["values"]] == list(VALUES)
    assert 0.03 < train["tasks"][0]["positive_rate"] < 0.07
