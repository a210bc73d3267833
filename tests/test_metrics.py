"""Streaming metrics against sklearn / numpy references: exact AUC with ties and weights, group AUC, means."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from mtlkit import Batch, Feature, MtlkitError, Schema, Task
from mtlkit.metrics import (
    AUC,
    MEAN,
    METRIC_CLASSES,
    TaskMetrics,
    create_metric,
    grouped_roc_auc,
    list_metrics,
    metric_class,
    metric_higher_is_better,
    roc_auc,
)
from mtlkit.metrics import _registry as build_registry
from mtlkit.schema import METRICS


def _binary(n: int, seed: int, missing: float = 0.0, decimals: int | None = 1) -> dict[str, np.ndarray]:
    """Logits with many ties (rounded), 0/1 labels (NaN where missing), positive weights, group ids."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    logits = rng.normal(size=n) + labels
    if decimals is not None:
        logits = np.round(logits, decimals)
    labels[rng.random(n) < missing] = np.nan
    return {
        "logits": logits.astype(np.float32),
        "labels": labels,
        "weights": rng.uniform(0.1, 3.0, n).astype(np.float32),
        "groups": rng.integers(0, max(n // 20, 1), n).astype(np.int64),
    }


def _stream(
    name: str, data: dict[str, np.ndarray], cuts: list[int], weighted: bool, grouped: bool = False
) -> float:
    metric = create_metric(name)
    bounds = [0, *cuts, len(data["labels"])]
    for a, b in itertools.pairwise(bounds):
        metric.update(
            torch.from_numpy(data["logits"][a:b]),
            torch.from_numpy(data["labels"][a:b]),
            torch.from_numpy(data["weights"][a:b]) if weighted else None,
            torch.from_numpy(data["groups"][a:b]) if grouped else None,
        )
    return metric.compute()


UNEVEN = [1, 7, 300, 301, 1500, 4000]


# ------------------------------------------------------------------ AUC
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_with_ties_streamed_over_uneven_batches(weighted: bool, seed: int) -> None:
    data = _binary(5000, seed, missing=0.1)
    known = ~np.isnan(data["labels"])
    assert len(np.unique(data["logits"])) < 100  # heavy ties
    expected = roc_auc_score(
        data["labels"][known],
        data["logits"][known],
        sample_weight=data["weights"][known] if weighted else None,
    )
    assert _stream("auc", data, UNEVEN, weighted) == pytest.approx(expected, abs=1e-9)


def test_auc_ranks_logits_like_probabilities() -> None:
    data = _binary(2000, 3, decimals=None)
    probs = 1 / (1 + np.exp(-data["logits"].astype(np.float64)))
    expected = roc_auc_score(data["labels"], probs)
    assert _stream("auc", data, [500], False) == pytest.approx(expected, abs=1e-9)


def test_auc_all_tied_is_one_half_and_single_class_is_nan() -> None:
    assert roc_auc(torch.zeros(6, dtype=torch.float64), torch.tensor([1, 0, 1, 0, 0, 1]).bool()) == 0.5
    metric = create_metric("auc")
    metric.update(torch.randn(10), torch.ones(10))
    assert math.isnan(metric.compute())
    metric.reset()
    metric.update(torch.randn(4), torch.full((4,), float("nan")))
    assert math.isnan(metric.compute())
    assert math.isnan(create_metric("auc").compute())


def test_auc_masks_nan_labels_and_ignores_their_predictions() -> None:
    labels = torch.tensor([1.0, 0.0, float("nan"), 1.0, float("nan"), 0.0])
    scores = torch.tensor([0.9, 0.1, -5.0, 0.2, 7.0, 0.3])
    metric = create_metric("auc")
    metric.update(scores, labels)
    assert metric.compute() == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.3]))


def test_auc_of_nan_prediction_is_nan() -> None:
    metric = create_metric("auc")
    metric.update(torch.tensor([0.1, float("nan"), 0.3]), torch.tensor([0.0, 1.0, 1.0]))
    assert math.isnan(metric.compute())


def test_auc_batches_without_weights_count_weight_one() -> None:
    data = _binary(1000, 4)
    metric = create_metric("auc")
    metric.update(torch.from_numpy(data["logits"][:400]), torch.from_numpy(data["labels"][:400]))
    metric.update(
        torch.from_numpy(data["logits"][400:]),
        torch.from_numpy(data["labels"][400:]),
        torch.from_numpy(data["weights"][400:]),
    )
    weights = np.concatenate([np.ones(400), data["weights"][400:]])
    expected = roc_auc_score(data["labels"], data["logits"], sample_weight=weights)
    assert metric.compute() == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------ GAUC
def _gauc_reference(data: dict[str, np.ndarray], weighted: bool) -> float:
    known = ~np.isnan(data["labels"]) & (data["groups"] >= 0)
    y, s, w = (data[k][known].astype(np.float64) for k in ("labels", "logits", "weights"))
    g = data["groups"][known]
    if not weighted:
        w = np.ones_like(w)
    total = size = 0.0
    for group in np.unique(g):
        rows = g == group
        if len(np.unique(y[rows])) < 2:
            continue
        total += w[rows].sum() * roc_auc_score(y[rows], s[rows], sample_weight=w[rows])
        size += w[rows].sum()
    return total / size


@pytest.mark.parametrize("weighted", [False, True])
def test_gauc_equals_a_per_group_sklearn_reference(weighted: bool) -> None:
    data = _binary(3000, 5, missing=0.1)
    data["groups"] %= 40  # 40 groups of ~75 rows: the sklearn loop stays fast
    data["groups"][::37] = -1  # missing group ids are left out
    moved = data["groups"] == 3  # group 3 splits: its positives to 1007 (one class: skipped), the rest to 7
    data["groups"][moved] = 7 + 1000 * (data["labels"][moved] > 0)
    got = _stream("gauc", data, [11, 1200, 1201], weighted, grouped=True)
    assert got == pytest.approx(_gauc_reference(data, weighted), abs=1e-9)


def test_gauc_does_not_depend_on_how_group_ids_are_spelled() -> None:
    data = _binary(2000, 8)
    data["groups"] %= 30
    scores, positive = torch.from_numpy(data["logits"]), torch.from_numpy(data["labels"] > 0.5)
    dense = grouped_roc_auc(scores, positive, torch.from_numpy(data["groups"]))
    sparse = grouped_roc_auc(scores, positive, torch.from_numpy(data["groups"] * 10**12 - 10**11))
    assert dense == pytest.approx(_gauc_reference(data, weighted=False), abs=1e-9)
    assert sparse == pytest.approx(dense, abs=1e-12)


def test_gauc_is_nan_without_a_group_holding_both_classes_and_needs_groups() -> None:
    got = grouped_roc_auc(
        torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
        torch.tensor([True, True, False, False]),
        torch.tensor([0, 0, 1, 1]),
    )
    assert math.isnan(got)
    with pytest.raises(MtlkitError, match="group ids"):
        create_metric("gauc").update(torch.zeros(3), torch.zeros(3))


def test_gauc_with_one_group_is_auc() -> None:
    data = _binary(800, 6)
    data["groups"][:] = 42
    assert _stream("gauc", data, [100], True, grouped=True) == pytest.approx(
        _stream("auc", data, [], True), abs=1e-12
    )


# ------------------------------------------------------------------ means
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _regression(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.normal(size=n).astype(np.float32)
    labels[rng.random(n) < 0.1] = np.nan
    return {
        "logits": rng.normal(size=n).astype(np.float32),
        "labels": labels,
        "weights": rng.uniform(0.1, 3.0, n).astype(np.float32),
        "groups": np.zeros(n, np.int64),
    }


def _multiclass(n: int, k: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n).astype(np.float32)
    labels[rng.random(n) < 0.1] = np.nan
    return {
        "logits": rng.normal(size=(n, k)).astype(np.float32),
        "labels": labels,
        "weights": rng.uniform(0.1, 3.0, n).astype(np.float32),
        "groups": np.zeros(n, np.int64),
    }


def _reference(name: str, kind: str, data: dict[str, np.ndarray], weighted: bool) -> float:
    known = ~np.isnan(data["labels"])
    y, x = data["labels"][known].astype(np.float64), data["logits"][known].astype(np.float64)
    w = data["weights"][known].astype(np.float64) if weighted else None
    if kind == "regression":
        if name == "mae":
            return float(mean_absolute_error(y, x, sample_weight=w))
        mse = float(mean_squared_error(y, x, sample_weight=w))
        return math.sqrt(mse) if name == "rmse" else mse
    if kind == "binary":
        if name == "logloss":
            return float(log_loss(y, _sigmoid(x), sample_weight=w, labels=[0, 1]))
        return float(accuracy_score(y, (_sigmoid(x) > 0.5).astype(np.float32), sample_weight=w))
    k = x.shape[1]
    if name == "logloss":
        return float(log_loss(y, _softmax(x), sample_weight=w, labels=list(range(k))))
    return float(accuracy_score(y, x.argmax(axis=1), sample_weight=w))


MEAN_CASES = [
    ("logloss", "binary"),
    ("accuracy", "binary"),
    ("logloss", "multiclass"),
    ("accuracy", "multiclass"),
    ("mse", "regression"),
    ("mae", "regression"),
    ("rmse", "regression"),
]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("name", "kind"), MEAN_CASES)
def test_mean_metrics_equal_sklearn_streamed(name: str, kind: str, weighted: bool) -> None:
    data = {
        "binary": lambda: _binary(3000, 7, missing=0.1, decimals=None),
        "regression": lambda: _regression(3000, 8),
        "multiclass": lambda: _multiclass(3000, 4, 9),
    }[kind]()
    got = _stream(name, data, [1, 999, 2000], weighted)
    assert got == pytest.approx(_reference(name, kind, data, weighted), rel=1e-9, abs=1e-12)
    assert got == pytest.approx(_stream(name, data, [], weighted), rel=1e-12)  # streaming == one shot


def test_binary_logloss_is_stable_for_large_logits() -> None:
    metric = create_metric("logloss")
    metric.update(torch.tensor([100.0, -100.0, 100.0]), torch.tensor([1.0, 0.0, 0.0]))
    assert metric.compute() == pytest.approx(100.0 / 3)


def test_mean_metric_accepts_a_column_and_masks_nan() -> None:
    metric = create_metric("mse")
    metric.update(torch.tensor([[1.0], [2.0], [5.0]]), torch.tensor([0.0, float("nan"), 3.0]))
    assert metric.compute() == pytest.approx(2.5)
    metric.reset()
    assert math.isnan(metric.compute())
    metric.update(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]), torch.tensor([3.0, 1.0]))
    assert metric.compute() == pytest.approx(3.0)


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="rows"):
        create_metric("mse").update(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[B\]"):
        create_metric("auc").update(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="weight"):
        create_metric("logloss").update(torch.zeros(3), torch.zeros(3), torch.ones(2))


# ------------------------------------------------------------------ registry
def test_registry_kinds_agree_with_the_schema_table() -> None:
    for kind, names in METRICS.items():
        assert set(list_metrics(kind)) == set(names)
    assert set(list_metrics()) == {n for names in METRICS.values() for n in names}


def test_higher_is_better_is_declared_on_each_class() -> None:
    expected = {
        "auc": True,
        "gauc": True,
        "accuracy": True,
        "logloss": False,
        "mse": False,
        "mae": False,
        "rmse": False,
    }
    assert {name: cls.higher_is_better for name, cls in METRIC_CLASSES.items()} == expected
    assert metric_higher_is_better("auc")
    assert not metric_higher_is_better("rmse")
    assert repr(create_metric("logloss")) == "LogLoss()"


def test_unknown_metric_lists_the_names_and_a_close_one() -> None:
    with pytest.raises(MtlkitError, match=r"unknown metric 'acu' \(did you mean 'auc'\?\).*'logloss'"):
        create_metric("acu")
    with pytest.raises(RuntimeError, match="'auc' is registered twice"):
        build_registry([AUC, AUC])
    with pytest.raises(MtlkitError, match="unknown task kind"):
        list_metrics("ranking")
    assert metric_class("gauc").needs_groups


# ------------------------------------------------------------------ TaskMetrics
def _schema(group: str | None = None, click_metric: str | None = None) -> Schema:
    return Schema(
        (Feature("x", "numeric"),),
        (
            Task("click", "binary", metric=click_metric),
            Task("stay", "regression", metric="rmse"),
            Task("topic", "multiclass", num_classes=3),
            Task("buy", "binary"),
        ),
        group=group,
    )


def _task_batch(
    n: int, seed: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = {
        "click": torch.randn(n, generator=gen),
        "stay": torch.randn(n, generator=gen),
        "topic": torch.randn(n, 3, generator=gen),
        "buy": torch.randn(n, generator=gen),
    }
    labels = torch.stack(
        [
            (torch.rand(n, generator=gen) < 0.4).float(),
            torch.randn(n, generator=gen),
            torch.randint(0, 3, (n,), generator=gen).float(),
            (torch.rand(n, generator=gen) < 0.5).float(),
        ],
        dim=1,
    )
    labels[torch.rand(n, generator=gen) < 0.3, 3] = float("nan")  # buy is missing on some rows only
    return logits, labels, torch.rand(n, generator=gen) + 0.5, torch.randint(0, 10, (n,), generator=gen)


def test_task_metrics_defaults_order_and_mean() -> None:
    metrics = TaskMetrics(_schema(group="user", click_metric="logloss"))
    assert metrics.names == {
        "click": ("logloss", "auc", "gauc", "accuracy"),
        "stay": ("rmse", "mse", "mae"),
        "topic": ("accuracy", "logloss"),
        "buy": ("auc", "gauc", "logloss", "accuracy"),
    }
    batches = [_task_batch(n, seed) for seed, n in enumerate((50, 1, 200))]
    for logits, labels, weights, groups in batches[:2]:
        metrics.update(logits, labels, weights, groups)
    logits, labels, weights, groups = batches[2]
    rows = len(labels)
    batch = Batch(torch.zeros(rows, 0, dtype=torch.long), torch.zeros(rows, 1), labels, weights, groups)
    metrics.update_batch(logits, batch)
    result = metrics.compute()
    assert list(result) == ["click", "stay", "topic", "buy", MEAN]
    # each entry equals its own metric fed the task's column alone
    for j, task in enumerate(("click", "stay", "topic", "buy")):
        for name, value in result[task].items():
            single = create_metric(name)
            for logits, labels, weights, groups in batches:
                single.update(logits[task], labels[:, j], weights, groups)
            assert value == pytest.approx(single.compute(), abs=1e-12)
    assert result[MEAN]["auc"] == pytest.approx((result["click"]["auc"] + result["buy"]["auc"]) / 2)
    assert result[MEAN]["logloss"] == pytest.approx(
        (result["click"]["logloss"] + result["topic"]["logloss"] + result["buy"]["logloss"]) / 3
    )
    assert result[MEAN]["rmse"] == result["stay"]["rmse"]
    metrics.reset()
    assert all(math.isnan(v) for task in ("click", "stay") for v in metrics.compute()[task].values())


def test_task_metrics_without_groups_skip_gauc() -> None:
    metrics = TaskMetrics(_schema())
    assert "gauc" not in metrics.names["click"]
    metrics = TaskMetrics(_schema(group="user"), has_groups=False)
    assert "gauc" not in metrics.names["buy"]
    logits, labels, weights, _ = _task_batch(20, 0)
    metrics.update(logits, labels, weights)
    assert "gauc" not in metrics.compute()[MEAN]
    with pytest.raises(MtlkitError, match="needs group ids"):
        TaskMetrics(_schema(click_metric="gauc"))
    with pytest.raises(MtlkitError, match="needs group ids"):
        TaskMetrics(_schema(), ["gauc"])
    grouped = TaskMetrics(_schema(group="user"))
    with pytest.raises(MtlkitError, match="group ids"):
        grouped.update(logits, labels, weights, None)


def test_task_metrics_explicit_choices() -> None:
    metrics = TaskMetrics(_schema(), ["auc", "mse", "auc"])
    assert metrics.names == {"click": ("auc",), "stay": ("mse",), "topic": (), "buy": ("auc",)}
    logits, labels, _, _ = _task_batch(30, 1)
    del logits["topic"]  # a task without metrics needs no logits
    metrics.update(logits, labels)
    assert set(metrics.compute()[MEAN]) == {"auc", "mse"}
    per_task = TaskMetrics(_schema(), {"stay": ["mae"]})
    assert per_task.names["stay"] == ("mae",)
    assert per_task.names["click"][0] == "auc"
    with pytest.raises(MtlkitError, match="does not suit task 'stay'"):
        TaskMetrics(_schema(), {"stay": ["auc"]})
    with pytest.raises(MtlkitError, match="did you mean 'stay'"):
        TaskMetrics(_schema(), {"stya": ["mae"]})
    with pytest.raises(MtlkitError, match="did you mean 'rmse'"):
        TaskMetrics(_schema(), ["rmsee"])
    regression_only = Schema((Feature("x", "numeric"),), (Task("y", "regression"),))
    with pytest.raises(MtlkitError, match="suits tasks of kind"):
        TaskMetrics(regression_only, ["auc"])


def test_task_metrics_checks_its_inputs() -> None:
    metrics = TaskMetrics(_schema())
    logits, labels, _, _ = _task_batch(10, 2)
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        metrics.update(logits, labels[:, :3])
    del logits["buy"]
    with pytest.raises(ValueError, match="no entry for task 'buy'"):
        metrics.update(logits, labels)
    clash = Schema((Feature("x", "numeric"),), (Task("mean", "regression"),))
    with pytest.raises(MtlkitError, match="rename the task"):
        TaskMetrics(clash)
