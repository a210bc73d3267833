"""Score fusion (formulas, invariances, serialisation, errors), grouped NDCG, AUC of many columns, the search."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from mtlkit.config import FusionConfig
from mtlkit.errors import MtlkitError
from mtlkit.fusion import (
    Fusion,
    FusionData,
    SearchSpace,
    _auc_columns,
    evaluate_fusion,
    parse_target,
    search_fusion,
    simplex_grid,
)
from mtlkit.metrics import GroupedNDCG, grouped_ndcg, roc_auc
from mtlkit.schema import Feature, Schema, Task


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def schema_with_values() -> Schema:
    return Schema(
        features=(Feature("x", kind="numeric"),),
        tasks=(Task("click"), Task("conversion"), Task("dwell", kind="regression")),
        group="request",
        values=("price",),
    )


# ------------------------------------------------------------------------------------------------ formulas
def test_weighted_sum_by_hand() -> None:
    fusion = Fusion("weighted_sum", {"click": 2.0, "conversion": 1.0}, {"price": 0.1})
    score = fusion({"click": t(0.2, 0.5), "conversion": t(0.1, 0.9)}, {"price": t(10.0, 20.0)})
    expected = torch.tensor([2 * 0.2 + 0.1 + 1.0, 2 * 0.5 + 0.9 + 2.0], dtype=torch.float64)
    assert torch.allclose(score, expected, atol=1e-6)


def test_product_by_hand_and_unit_weights_are_the_plain_product() -> None:
    ctr, cvr, price = t(0.1, 0.4), t(0.5, 0.02), t(4.0, 9.0)
    fusion = Fusion("product", {"ctr": 2.0, "cvr": 1.0}, {"price": 0.5})
    expected = ctr.double() ** 2 * cvr.double() * price.double() ** 0.5
    assert torch.allclose(fusion({"ctr": ctr, "cvr": cvr}, {"price": price}), expected, rtol=1e-9)
    plain = Fusion("product", {"ctr": 1.0, "cvr": 1.0})({"ctr": ctr, "cvr": cvr})
    assert torch.allclose(plain, (ctr * cvr).double(), rtol=1e-6)


def test_product_clamps_probabilities_and_zero_values() -> None:
    fusion = Fusion("product", {"a": 1.0}, {"price": 1.0}, eps=1e-3)
    score = fusion({"a": t(0.0, 1.5, 0.5)}, {"price": t(2.0, 2.0, 0.0)})
    assert torch.allclose(score, torch.tensor([1e-3 * 2.0, 1.0 * 2.0, 0.5 * 1e-3], dtype=torch.float64))


def test_scale_of_the_weights_leaves_the_ranking_unchanged() -> None:
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(200, generator=g), "b": torch.rand(200, generator=g)}
    values = {"price": torch.rand(200, generator=g) * 100}
    for kind in ("weighted_sum", "product"):
        base = Fusion(kind, {"a": 0.3, "b": 1.2}, {"price": 0.4})
        scaled = Fusion(kind, {"a": 0.9, "b": 3.6}, {"price": 1.2})
        assert torch.equal(
            torch.argsort(base(scores, values), stable=True),
            torch.argsort(scaled(scores, values), stable=True),
        )
        # ranking() (log of a product) orders like the score itself
        assert torch.equal(
            torch.argsort(base.ranking(scores, values), stable=True),
            torch.argsort(base(scores, values), stable=True),
        )


def test_module_traces_and_matches_the_call() -> None:
    fusion = Fusion("product", {"a": 0.5, "b": 1.5}, {"price": 0.3})
    module = fusion.as_module()
    probabilities = torch.tensor([[0.2, 0.3], [0.9, 0.01]])
    values = torch.tensor([[5.0], [50.0]])
    traced = torch.jit.trace(module, (probabilities, values))
    expected = fusion({"a": probabilities[:, 0], "b": probabilities[:, 1]}, {"price": values[:, 0]})
    other = torch.tensor([[0.5, 0.5], [0.1, 0.7], [0.3, 0.3]]), torch.tensor([[1.0], [2.0], [3.0]])
    assert torch.allclose(traced(probabilities, values), expected)
    assert torch.allclose(traced(*other), module(*other))
    assert module.tasks == ("a", "b")
    assert module.value_columns == ("price",)


# ------------------------------------------------------------------------------------- objects and errors
def test_repr_mirrors_the_constructor_and_save_load_round_trip(tmp_path: Path) -> None:
    fusion = Fusion("weighted_sum", {"click": 0.25, "conversion": 0.75}, {"price": 0.01})
    assert repr(fusion) == (
        "Fusion(kind='weighted_sum', weights={'click': 0.25, 'conversion': 0.75}, values={'price': 0.01})"
    )
    assert eval(repr(fusion), {"Fusion": Fusion}) == fusion
    path = tmp_path / "fusion.json"
    fusion.save(path)
    assert Fusion.load(path) == fusion
    assert json.loads(path.read_text())["weights"] == {"click": 0.25, "conversion": 0.75}
    assert [p.name for p in tmp_path.iterdir()] == ["fusion.json"]  # no temporary file left behind
    with pytest.raises(AttributeError):
        fusion.kind = "product"  # type: ignore[misc]


def test_from_config_checks_tasks_values_and_kinds() -> None:
    schema = schema_with_values()
    fusion = Fusion.from_config(
        FusionConfig(kind="product", weights={"click": 1.0, "conversion": 1.0}, values={"price": 1.0}), schema
    )
    assert fusion.tasks == ("click", "conversion")
    assert fusion.value_columns == ("price",)
    cases = [
        (FusionConfig(kind="prodcut", weights={"click": 1.0}), "did you mean 'product'"),
        (FusionConfig(kind="product", weights={"clik": 1.0}), "no task 'clik' (did you mean 'click'?)"),
        (FusionConfig(kind="product", weights={"click": 1.0}, values={"prize": 1.0}), "did you mean 'price'"),
        (FusionConfig(kind="product", weights={"dwell": 1.0}), "use weighted_sum for a regression"),
        (FusionConfig(kind="product", weights={}), "at least one task weight"),
        (FusionConfig(kind="weighted_sum", weights={"click": 0.0}), "every fusion weight is 0"),
    ]
    for config, message in cases:
        with pytest.raises(MtlkitError, match=re.escape(message)):
            Fusion.from_config(config, schema)
    assert Fusion.from_config(FusionConfig(kind="weighted_sum", weights={"dwell": 1.0}), schema).tasks == (
        "dwell",
    )


def test_bad_files_and_values_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MtlkitError, match=r"bad\.json is not valid JSON"):
        Fusion.load(bad)
    bad.write_text(json.dumps({"kind": "product", "weights": {"a": 1}, "wieghts": {}}))
    with pytest.raises(MtlkitError, match="unknown key 'wieghts'"):
        Fusion.load(bad)
    with pytest.raises(MtlkitError, match=r"weights\['a'\] must be a finite number, got nan"):
        Fusion("product", {"a": math.nan})
    fusion = Fusion("product", {"a": 1.0}, {"price": 1.0})
    with pytest.raises(MtlkitError, match="'price' has 1 negative values"):
        fusion.check_values({"price": t(1.0, -2.0)})
    with pytest.raises(MtlkitError, match="'price' is missing in 1 rows"):
        fusion.check_values({"price": t(1.0, math.nan)})
    fusion.check_values({"price": t(0.0, 2.0)})  # zero is allowed (clamped to eps)
    Fusion("weighted_sum", {"a": 1.0}, {"price": 1.0}).check_values({"price": t(-1.0)})
    with pytest.raises(MtlkitError, match="uses task 'b'"):
        Fusion("product", {"b": 1.0})({"a": t(0.5)})


# ------------------------------------------------------------------------------------------- AUC and NDCG
def test_auc_of_many_columns_matches_roc_auc_with_ties_and_missing_labels() -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(2, 40))
        score = rng.integers(0, 5, n).astype(float) if n % 2 else rng.random(n)  # ties, or none
        labels = rng.integers(0, 3, (3, n)).astype(float)  # 2 stands for a missing label
        got = _auc_columns(score, labels == 1, labels == 0)
        for j in range(3):
            keep = labels[j] < 2
            expected = roc_auc(score[keep], labels[j][keep] == 1)
            assert (math.isnan(expected) and math.isnan(got[j])) or got[j] == pytest.approx(
                expected, abs=1e-12
            )


@pytest.mark.parametrize("pad_factor", [4, 0], ids=["padded", "global-sort"])
def test_grouped_ndcg_matches_sklearn_per_group(monkeypatch: pytest.MonkeyPatch, pad_factor: int) -> None:
    monkeypatch.setattr(GroupedNDCG, "PAD_FACTOR", pad_factor)
    rng = np.random.default_rng(1)
    for case in range(80):
        sizes = rng.integers(1, 9, int(rng.integers(1, 7)))
        groups = rng.permutation(np.repeat(rng.permutation(50)[: len(sizes)], sizes))
        gains = rng.integers(0, 4, len(groups)).astype(float)
        tied = case % 2 == 0
        scores = rng.integers(0, 4, len(groups)).astype(float) if tied else rng.random(len(groups))
        k = None if case % 3 == 0 else int(rng.integers(1, 6))
        expected = []
        for g in np.unique(groups):
            rows = groups == g
            if gains[rows].sum() == 0:
                continue  # left out of the mean (sklearn would count 0)
            if rows.sum() == 1:
                expected.append(1.0)  # sklearn needs two documents; one relevant row is a perfect ranking
            else:
                expected.append(ndcg_score(gains[rows][None], scores[rows][None], k=k))
        got = grouped_ndcg(torch.tensor(scores), torch.tensor(gains), torch.tensor(groups), k)
        if expected:
            assert got == pytest.approx(float(np.mean(expected)), abs=1e-12)
        else:
            assert math.isnan(got)


def test_grouped_ndcg_leaves_out_missing_groups_and_checks_inputs() -> None:
    scores = torch.tensor([0.9, 0.1, 0.5, 0.4])
    gains = torch.tensor([0.0, 1.0, 1.0, 0.0])
    # group 0: relevant row ranked 2nd -> 1/log2(3); group -1 (missing id) is left out
    assert grouped_ndcg(scores, gains, torch.tensor([0, 0, -1, -1])) == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError, match="gains must be finite and >= 0"):
        GroupedNDCG(torch.tensor([-1.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        GroupedNDCG(gains, torch.tensor([0, 0, 1, 1]), k=0)


# ------------------------------------------------------------------------------------------------ targets
def test_targets_parse_and_name_bad_input() -> None:
    ndcg = parse_target("ndcg:click+3*conversion@10")
    assert ndcg.terms == {"click": 1.0, "conversion": 3.0}
    assert ndcg.k == 10
    assert parse_target("ndcg:true_value").k is None  # type: ignore[attr-defined]
    assert parse_target("weighted_auc:a=0.7,b=0.3").weights == {"a": 0.7, "b": 0.3}  # type: ignore[attr-defined]
    for text, message in [
        ("acu:click", "did you mean 'auc'"),
        ("ndcg:click-conversion@5", "is not a term"),
        ("ndcg:click@0", "integer >= 1"),
        ("weighted_auc:a=-1", "not <task>=<weight>"),
        ("auc:", "name a task"),
    ]:
        with pytest.raises(MtlkitError, match=message):
            parse_target(text)


def synthetic(n: int = 6000, seed: int = 0) -> FusionData:
    """Two predictions a, b in (0, 1); labels drawn from them; value columns that are known mixes of them."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    return FusionData(
        scores={"a": a, "b": b},
        labels={"a": (torch.rand(n, generator=g) < a).float(), "b": (torch.rand(n, generator=g) < b).float()},
        values={
            "linear": 0.25 * a + 0.75 * b,  # a weighted sum with direction (0.25, 0.75)
            "power": a * b**2,  # a product with exponents (1, 2)
            "price": 1 + 9 * torch.rand(n, generator=g),
        },
        groups=torch.randint(0, n // 20, (n,), generator=g),
    )


def test_target_errors_name_the_task_and_the_missing_groups() -> None:
    data = synthetic(200)
    space = SearchSpace("weighted_sum", ("a", "b"))
    with pytest.raises(MtlkitError, match="no task 'c'"):
        search_fusion(data, "auc:c", space)
    with pytest.raises(MtlkitError, match="neither a task nor a value column"):
        search_fusion(data, "ndcg:prise@5", space)
    data.groups = None
    with pytest.raises(MtlkitError, match="no group column"):
        search_fusion(data, "ndcg:linear@5", space)
    with pytest.raises(MtlkitError, match="nothing to search"):
        SearchSpace("product", ("a",))


# ------------------------------------------------------------------------------------------------- search
def test_simplex_grid_covers_the_simplex() -> None:
    points = simplex_grid(5, 3)
    assert points.shape == (math.comb(4 + 2, 2), 3)
    assert torch.allclose(points.sum(1), torch.ones(len(points), dtype=torch.float64))
    assert {tuple(p) for p in points.tolist()} >= {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)}
    assert len({tuple(p) for p in points.tolist()}) == len(points)


def test_auc_of_one_task_puts_every_weight_on_that_task() -> None:
    data = synthetic()
    result = search_fusion(data, "auc:a", SearchSpace("weighted_sum", ("a", "b")), grid=5)
    assert result.fusion.weights == {"a": 1.0, "b": 0.0}
    own = roc_auc(data.scores["a"], data.labels["a"] == 1)
    assert result.value == pytest.approx(own, abs=1e-12)
    assert result.trials == 5
    assert result.method == "grid (5 levels)"


def test_grid_recovers_the_direction_of_a_known_mix() -> None:
    data = synthetic()
    linear = search_fusion(data, "ndcg:linear@5", SearchSpace("weighted_sum", ("a", "b")))
    assert linear.fusion.weights["a"] == pytest.approx(0.25, abs=0.03)
    assert linear.value > 0.999
    power = search_fusion(data, "ndcg:power@5", SearchSpace("product", ("a", "b")))
    assert power.fusion.weights["a"] == pytest.approx(1 / 3, abs=0.03)
    # the value reported is the value of the fusion returned
    assert evaluate_fusion(power.fusion, data, "ndcg:power@5")["target"] == pytest.approx(
        power.value, abs=1e-12
    )


def test_weighted_sum_search_rescales_columns_of_very_different_size() -> None:
    data = synthetic()
    data.values["linear_dollars"] = data.values["linear"] * 1000  # the mix expressed in another unit
    result = search_fusion(data, "ndcg:linear@5", SearchSpace("weighted_sum", ("a",), ("linear_dollars",)))
    assert result.fusion.values["linear_dollars"] > 0.0
    assert result.value == pytest.approx(1.0)


def test_optuna_search_runs_and_is_deterministic_for_a_seed() -> None:
    data = synthetic(2000)
    space = SearchSpace("product", ("a", "b"), ("price", "linear", "power"))  # 4 free weights: Optuna
    first = search_fusion(data, "weighted_auc:a=0.5,b=0.5", space, seed=3, n_trials=12)
    again = search_fusion(data, "weighted_auc:a=0.5,b=0.5", space, seed=3, n_trials=12)
    assert first.method == "optuna TPE (seed 3)"
    assert first.trials == 12
    assert first.fusion == again.fusion
    assert first.value == again.value
    assert sum(first.fusion.weights.values()) + sum(first.fusion.values.values()) == pytest.approx(1.0)
    evaluated = evaluate_fusion(first.fusion, data, "weighted_auc:a=0.5,b=0.5")
    assert evaluated["target"] == pytest.approx(first.value, abs=1e-12)
    assert evaluated["target"] == pytest.approx(0.5 * evaluated["auc"]["a"] + 0.5 * evaluated["auc"]["b"])


def test_search_refuses_negative_values_in_a_product_and_huge_grids() -> None:
    data = synthetic(300)
    data.values["price"][0] = -1.0
    with pytest.raises(MtlkitError, match="negative values"):
        search_fusion(data, "auc:a", SearchSpace("product", ("a",), ("price",)))
    with pytest.raises(MtlkitError, match="points; use fewer levels"):
        search_fusion(data, "auc:a", SearchSpace("weighted_sum", ("a", "b"), ("linear", "power")), grid=200)


def test_missing_optuna_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    with pytest.raises(MtlkitError, match="needs optuna"):
        search_fusion(synthetic(200), "auc:a", SearchSpace("weighted_sum", ("a", "b")), n_trials=3)
    # the grid does not need it
    assert search_fusion(synthetic(200), "auc:a", SearchSpace("weighted_sum", ("a", "b")), grid=3).trials == 3
