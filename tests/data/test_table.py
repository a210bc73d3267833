"""Table: building from Arrow / pandas, batches, split, subset, describe, weights and groups."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from mtlkit.data.columns import Origin
from mtlkit.data.table import Batch, Table
from mtlkit.errors import DataError, SchemaError
from mtlkit.schema import Feature, Schema, Task

# A tiny hand-made data set: 8 rows, missing values in features and labels.
ROWS: dict[str, list[Any]] = {
    "city": ["a", "b", "a", None, "c", "b", "a", "d"],
    "uid": [1, 2, 3, 1, 2, 1, 4, 1],
    "price": [1.0, None, 3.0, 4.0, None, 6.0, 7.0, 8.0],
    "rid": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
    "click": [1, 0, None, 1, 0, None, 1, 0],
    "watch": [0.5, None, 2.0, 3.5, 1.0, 0.0, None, 4.0],
    "genre": [0, 2, 1, None, 2, 2, 0, 1],
    "query": ["q1", "q1", "q2", "q2", "q3", "q1", "q3", "q4"],
    "w": [1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 0.0, 1.0],
}
N = len(ROWS["rid"])


def _schema(group: str | None = "query", sample_weight: str | None = "w") -> Schema:
    return Schema(
        features=(
            Feature("city"),
            Feature("price", "numeric", missing_indicator=True),
            Feature("user", column="uid"),
            Feature("rid", "numeric", standardize=False),  # the row number, to follow rows around
        ),
        tasks=(
            Task("click"),
            Task("watch", "regression"),
            Task("genre", "multiclass", num_classes=3),
        ),
        group=group,
        sample_weight=sample_weight,
    )


def _arrow(rows: dict[str, list[Any]] | None = None) -> pa.Table:
    return pa.table(rows if rows is not None else ROWS)


def _table() -> Table:
    return Table.from_arrow(_arrow(), _schema())


def _big(n: int) -> Table:
    """``n`` rows whose numeric column 1 (``rid``) holds the row number."""
    rng = np.random.default_rng(123)
    schema = Schema(
        features=(Feature("c"), Feature("rid", "numeric", standardize=False)),
        tasks=(Task("y"),),
        sample_weight="w",
    )
    arrow = pa.table(
        {
            "c": rng.integers(0, 5, size=n),
            "rid": np.arange(n, dtype=np.float64),
            "y": rng.integers(0, 2, size=n),
            "w": rng.random(n),
        }
    )
    return Table.from_arrow(arrow, schema)


def _rids(t: Table | Batch) -> list[int]:
    return t.numeric[:, -1].to(torch.int64).tolist()


# ---------------------------------------------------------------------- building
def test_from_arrow_shapes_and_dtypes() -> None:
    t = _table()
    schema = _schema()
    assert len(t) == N
    assert t.categorical.dtype == torch.int64
    assert t.categorical.shape == (N, len(schema.categorical)) == (N, 2)
    assert t.numeric.dtype == torch.float32
    assert t.numeric.shape == (N, len(schema.numeric_columns)) == (N, 3)
    assert t.labels.dtype == torch.float32
    assert t.labels.shape == (N, len(schema.tasks)) == (N, 3)
    assert t.weights is not None
    assert t.weights.dtype == torch.float32
    assert t.weights.shape == (N,)
    assert t.groups is not None
    assert t.groups.dtype == torch.int64
    assert t.groups.shape == (N,)
    assert t.device == torch.device("cpu")
    assert t.encoders is not None
    assert "rows=8" in repr(t)


def test_from_arrow_values() -> None:
    t = _table()
    # city vocabulary by frequency: a x3, b x2, then c, d (ties by value)
    assert t.categorical[:, 0].tolist() == [1, 2, 1, 0, 3, 2, 1, 4]
    # uid: 1 x4, 2 x2, then 3, 4
    assert t.categorical[:, 1].tolist() == [1, 2, 3, 1, 2, 1, 4, 1]
    price = np.array([p for p in ROWS["price"] if p is not None])
    filled = np.array([np.nan if p is None else p for p in ROWS["price"]])
    filled[np.isnan(filled)] = price.mean()
    np.testing.assert_allclose(t.numeric[:, 0].numpy(), (filled - price.mean()) / price.std(), rtol=1e-6)
    assert t.numeric[:, 1].tolist() == [float(p is None) for p in ROWS["price"]]
    assert t.numeric[:, 2].tolist() == ROWS["rid"]
    assert t.schema.feature("city").vocab_size == 5
    assert t.schema.feature("user").vocab_size == 5
    assert _schema().feature("city").vocab_size is None


def test_missing_labels_are_nan_and_keep_the_row_for_other_tasks() -> None:
    t = _table()
    for j, task in enumerate(("click", "watch", "genre")):
        expected = [math.nan if v is None else float(v) for v in ROWS[task]]
        np.testing.assert_array_equal(t.labels[:, j].numpy(), np.array(expected, dtype=np.float32))
        np.testing.assert_array_equal(t.label(task).numpy(), t.labels[:, j].numpy())
    # row 2 has no click label but still has its watch and genre labels
    assert math.isnan(float(t.labels[2, 0]))
    assert float(t.labels[2, 1]) == 2.0
    assert float(t.labels[2, 2]) == 1.0


def test_label_unknown_task_suggests() -> None:
    with pytest.raises(SchemaError, match="did you mean 'click'"):
        _table().label("clik")


def test_from_pandas_matches_from_arrow() -> None:
    frame = pd.DataFrame(ROWS)
    from_pandas = Table.from_pandas(frame, _schema())
    from_arrow = _table()
    for name in ("categorical", "numeric", "labels", "weights", "groups"):
        torch.testing.assert_close(getattr(from_pandas, name), getattr(from_arrow, name), equal_nan=True)
    assert from_pandas.schema == from_arrow.schema


def test_from_pandas_int_column_with_gaps_encodes_like_ints() -> None:
    rows = dict(ROWS)
    rows["uid"] = [1, 2, 3, None, 2, 1, 4, 1]  # pandas makes this float64 with NaN
    frame = pd.DataFrame(rows)
    assert frame["uid"].dtype == np.float64
    t = Table.from_pandas(frame, _schema())
    # 1 x3, 2 x2, then 3, 4; the missing value is 0
    assert t.categorical[:, 1].tolist() == [1, 2, 3, 0, 2, 1, 4, 1]
    assert t.encoders is not None
    assert t.encoders.categorical["user"].vocabulary == ("1", "2", "3", "4")


def test_fitted_encoders_applied_to_new_data() -> None:
    train = _table()
    rows = {k: v[:3] for k, v in ROWS.items()}
    rows["city"] = ["zzz", "b", None]  # zzz never seen in training
    new = Table.from_arrow(_arrow(rows), _schema(), encoders=train.encoders)
    assert new.categorical[:, 0].tolist() == [0, 2, 0]
    assert new.encoders is train.encoders
    torch.testing.assert_close(new.numeric, train.numeric[:3])


def test_require_labels_false_without_label_columns() -> None:
    train = _table()
    rows = {k: v for k, v in ROWS.items() if k not in ("click", "watch", "genre")}
    t = Table.from_arrow(_arrow(rows), _schema(), encoders=train.encoders, require_labels=False)
    assert t.labels.shape == (N, 3)
    assert torch.isnan(t.labels).all()
    torch.testing.assert_close(t.categorical, train.categorical)


def test_missing_label_column_is_an_error_when_labels_are_required() -> None:
    rows = {k: v for k, v in ROWS.items() if k != "watch"}
    with pytest.raises(DataError, match="'watch', needed by the label of task 'watch'"):
        Table.from_arrow(_arrow(rows), _schema(), origin=Origin("train.csv", 2))


def test_empty_label_column_is_an_error() -> None:
    rows = dict(ROWS)
    rows["watch"] = [None] * N
    with pytest.raises(DataError, match="'watch'") as info:
        Table.from_arrow(_arrow(rows), _schema(), origin=Origin("train.csv", 2))
    message = str(info.value)
    assert "train.csv" in message
    assert "empty" in message


@pytest.mark.parametrize(
    ("task", "bad", "value"),
    [("click", 2, "2"), ("genre", 3, "3"), ("genre", -1, "-1"), ("genre", 1.5, "1.5")],
)
def test_bad_label_value(task: str, bad: float, value: str) -> None:
    rows = {k: list(v) for k, v in ROWS.items()}
    rows[task][4] = bad
    with pytest.raises(DataError, match=f"has the value {value} at row 5 \\(line 6\\) of train.csv"):
        Table.from_arrow(_arrow(rows), _schema(), origin=Origin("train.csv", 2))


def test_no_rows_is_an_error() -> None:
    empty = _arrow().slice(0, 0)
    with pytest.raises(DataError, match="no data rows"):
        Table.from_arrow(empty, _schema(), origin=Origin("train.csv", 2))


# ---------------------------------------------------------------------- sample weights and groups
def test_sample_weights_and_groups() -> None:
    t = _table()
    assert t.weights is not None
    assert t.groups is not None
    assert t.weights.tolist() == ROWS["w"]
    queries = ROWS["query"]
    codes = t.groups.tolist()
    for i in range(N):
        for j in range(N):
            assert (codes[i] == codes[j]) == (queries[i] == queries[j])
    assert len(set(codes)) == len(set(queries))
    assert min(codes) >= 0


def test_without_weights_or_groups() -> None:
    t = Table.from_arrow(_arrow(), _schema(group=None, sample_weight=None))
    assert t.weights is None
    assert t.groups is None
    batch = next(t.batches(3))
    assert batch.weights is None
    assert batch.groups is None


def test_groups_from_integer_ids() -> None:
    rows = dict(ROWS)
    rows["query"] = [7, 7, 9, 9, 1, 7, 1, 3]
    t = Table.from_arrow(_arrow(rows), _schema())
    assert t.groups is not None
    codes = t.groups.tolist()
    assert [codes.index(c) for c in codes] == [rows["query"].index(q) for q in rows["query"]]


@pytest.mark.parametrize(("bad", "text"), [(-1.0, "-1"), (None, "nan"), (math.inf, "inf")])
def test_bad_sample_weight_names_column_and_row(bad: float | None, text: str) -> None:
    rows = dict(ROWS)
    rows["w"] = [1.0, 1.0, bad, 1.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(DataError, match="'w'") as info:
        Table.from_arrow(_arrow(rows), _schema(), origin=Origin("train.csv", 2))
    message = str(info.value)
    assert f"value {text} " in message
    assert "row 3 (line 4) of train.csv" in message


# ---------------------------------------------------------------------- constructor
def _parts() -> dict[str, torch.Tensor]:
    t = _table()
    assert t.weights is not None
    assert t.groups is not None
    return {
        "categorical": t.categorical,
        "numeric": t.numeric,
        "labels": t.labels,
        "weights": t.weights,
        "groups": t.groups,
    }


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("categorical", lambda x: x.to(torch.int32)),
        ("categorical", lambda x: x[:, :1]),
        ("numeric", lambda x: x.double()),
        ("numeric", lambda x: x[:-1]),
        ("labels", lambda x: x[:, :2]),
        ("weights", lambda x: x.double()),
        ("weights", lambda x: x[:, None]),
        ("groups", lambda x: x.float()),
    ],
)
def test_constructor_rejects_bad_shape_or_dtype(name: str, change: Any) -> None:
    parts = _parts()
    parts[name] = change(parts[name])
    with pytest.raises(ValueError, match=f"Table.{name} must be"):
        Table(_table().schema, **parts)


def test_constructor_rejects_mixed_devices() -> None:
    parts = _parts()
    parts["numeric"] = parts["numeric"].to("meta")
    with pytest.raises(ValueError, match="one device"):
        Table(_table().schema, **parts)


def test_constructor_accepts_matching_tensors() -> None:
    t = Table(_table().schema, **_parts())
    assert len(t) == N


# ---------------------------------------------------------------------- batches
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 25, 100, 250])
def test_every_row_once_per_epoch(shuffle: bool, batch_size: int) -> None:
    t = _big(100)
    batches = list(t.batches(batch_size, shuffle=shuffle, seed=3))
    seen = [r for b in batches for r in _rids(b)]
    assert sorted(seen) == list(range(100))
    expected_sizes = [min(batch_size, 100 - s) for s in range(0, 100, batch_size)]
    assert [len(b) for b in batches] == expected_sizes
    assert len(batches) == t.num_batches(batch_size)
    if not shuffle:
        assert seen == list(range(100))


def test_batches_carry_matching_rows() -> None:
    t = _table()
    for b in t.batches(3, seed=5):
        rows = _rids(b)
        idx = torch.tensor(rows)
        torch.testing.assert_close(b.categorical, t.categorical[idx])
        torch.testing.assert_close(b.labels, t.labels[idx], equal_nan=True)
        assert t.weights is not None
        assert t.groups is not None
        assert b.weights is not None
        assert b.groups is not None
        torch.testing.assert_close(b.weights, t.weights[idx])
        torch.testing.assert_close(b.groups, t.groups[idx])


def test_shuffle_order_is_the_seeded_randperm() -> None:
    t = _big(50)
    seen = [r for b in t.batches(8, seed=11) for r in _rids(b)]
    assert seen == torch.randperm(50, generator=torch.Generator().manual_seed(11)).tolist()


def test_same_seed_same_order_different_seed_different_order() -> None:
    t = _big(200)

    def order(seed: int) -> list[int]:
        return [r for b in t.batches(16, seed=seed) for r in _rids(b)]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0) != list(range(200))


@pytest.mark.parametrize(("n", "batch_size"), [(100, 7), (100, 10), (5, 8), (10, 1)])
def test_drop_last(n: int, batch_size: int) -> None:
    t = _big(n)
    for shuffle in (True, False):
        batches = list(t.batches(batch_size, shuffle=shuffle, drop_last=True))
        assert len(batches) == n // batch_size == t.num_batches(batch_size, drop_last=True)
        assert all(len(b) == batch_size for b in batches)
        seen = [r for b in batches for r in _rids(b)]
        assert len(set(seen)) == len(seen) == (n // batch_size) * batch_size


def test_non_shuffled_batches_are_views() -> None:
    t = _table()
    for b in t.batches(3, shuffle=False):
        for name in ("categorical", "numeric", "labels", "weights", "groups"):
            part, whole = getattr(b, name), getattr(t, name)
            assert part._is_view()
            assert part.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, "4"])
def test_bad_batch_size(batch_size: Any) -> None:
    with pytest.raises(ValueError, match=repr(batch_size)):
        next(_table().batches(batch_size))


def test_batch_to_device() -> None:
    b = next(_table().batches(4))
    moved = b.to("cpu")
    assert len(moved) == 4
    assert moved.weights is not None
    torch.testing.assert_close(moved.numeric, b.numeric)


# ---------------------------------------------------------------------- split
def test_split_disjoint_covering_and_sized() -> None:
    n = 101
    t = _big(n)
    parts = t.split([0.7, 0.2, 0.1], seed=4)
    sizes = [len(p) for p in parts]
    first, second = 70 * n // 100, 20 * n // 100  # floor(f * N), in integers
    assert sizes == [first, second, n - first - second]
    rows = [_rids(p) for p in parts]
    assert sorted(r for part in rows for r in part) == list(range(n))
    for part in rows:
        assert part == sorted(part)  # each part keeps the original order


def test_split_matches_numpy_permutation() -> None:
    n = 60
    t = _big(n)
    parts = t.split([0.5, 0.25, 0.25], seed=9)
    order = np.random.default_rng(9).permutation(n)
    assert _rids(parts[0]) == sorted(order[:30].tolist())
    assert _rids(parts[1]) == sorted(order[30:45].tolist())
    assert _rids(parts[2]) == sorted(order[45:].tolist())


def test_split_is_deterministic_for_a_seed() -> None:
    t = _big(80)
    a = [_rids(p) for p in t.split([0.8, 0.2], seed=2)]
    b = [_rids(p) for p in t.split([0.8, 0.2], seed=2)]
    c = [_rids(p) for p in t.split([0.8, 0.2], seed=3)]
    assert a == b
    assert a != c


def test_split_parts_keep_everything_aligned() -> None:
    t = _table()
    train, test = t.split([0.5, 0.5], seed=0)
    for part in (train, test):
        idx = torch.tensor(_rids(part))
        torch.testing.assert_close(part.categorical, t.categorical[idx])
        torch.testing.assert_close(part.labels, t.labels[idx], equal_nan=True)
        assert part.schema == t.schema
        assert part.encoders is t.encoders


def test_split_size_is_exact_floor_for_decimal_fractions() -> None:
    parts = _big(100).split([0.29, 0.71])
    assert len(parts[0]) == 29


@pytest.mark.parametrize("fractions", [[1.0], [0.5, 0.6], [0.5, 0.0, 0.5], [-0.5, 1.5], [math.nan, 1.0]])
def test_split_bad_fractions(fractions: list[float]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        _big(10).split(fractions)


# ---------------------------------------------------------------------- subset
def test_subset_integer_index_in_given_order() -> None:
    t = _table()
    for index in ([5, 0, 2], np.array([5, 0, 2]), torch.tensor([5, 0, 2])):
        part = t.subset(index)
        assert _rids(part) == [5, 0, 2]
        torch.testing.assert_close(part.labels, t.labels[[5, 0, 2]], equal_nan=True)
        assert part.weights is not None
        assert part.weights.tolist() == [ROWS["w"][i] for i in (5, 0, 2)]


def test_subset_negative_index() -> None:
    assert _rids(_table().subset([-1, -N, 1])) == [N - 1, 0, 1]


def test_subset_boolean_mask() -> None:
    mask = [i % 3 == 0 for i in range(N)]
    t = _table()
    expected = [i for i in range(N) if mask[i]]
    assert _rids(t.subset(mask)) == expected
    assert _rids(t.subset(np.array(mask))) == expected
    assert _rids(t.subset(torch.tensor(mask))) == expected
    with pytest.raises(IndexError, match=f"shape \\[{N}\\]"):
        t.subset([True, False])


def test_subset_empty() -> None:
    part = _table().subset([])
    assert len(part) == 0
    assert part.categorical.shape == (0, 2)


@pytest.mark.parametrize("bad", [N, -N - 1, 100])
def test_subset_out_of_range(bad: int) -> None:
    with pytest.raises(IndexError, match=f"index {bad} is out of range for a Table of {N} rows"):
        _table().subset([0, bad])


@pytest.mark.parametrize("index", [3, [[0, 1]], [0.5, 1.0]])
def test_subset_rejects_non_1d_integer_index(index: Any) -> None:
    with pytest.raises(IndexError, match="1-D integer index or mask"):
        _table().subset(index)


def test_to_cpu() -> None:
    t = _table()
    moved = t.to("cpu")
    assert moved.device == torch.device("cpu")
    assert moved.schema == t.schema
    assert moved.encoders is t.encoders
    for name in ("categorical", "numeric", "labels", "weights", "groups"):
        torch.testing.assert_close(getattr(moved, name), getattr(t, name), equal_nan=True)


# ---------------------------------------------------------------------- describe
def test_describe_numbers() -> None:
    d = _table().describe()
    assert d["rows"] == N
    assert d["categorical_columns"] == 2
    assert d["numeric_columns"] == 3
    assert d["sample_weight"] == "w"
    assert d["groups"] == len(set(ROWS["query"]))
    features = {f["name"]: f for f in d["features"]}
    assert features["city"]["vocab_size"] == 5
    assert features["city"]["unknown_rate"] == pytest.approx(ROWS["city"].count(None) / N)
    assert features["user"]["column"] == "uid"
    assert "vocab_size" not in features["price"]
    tasks = {t["name"]: t for t in d["tasks"]}
    clicks = [v for v in ROWS["click"] if v is not None]
    assert tasks["click"]["labelled"] == len(clicks)
    assert tasks["click"]["missing"] == ROWS["click"].count(None)
    assert tasks["click"]["positive_rate"] == pytest.approx(sum(clicks) / len(clicks))
    watch = np.array([v for v in ROWS["watch"] if v is not None])
    assert tasks["watch"]["missing"] == 2
    assert tasks["watch"]["mean"] == pytest.approx(watch.mean())
    assert tasks["watch"]["std"] == pytest.approx(watch.std(ddof=1))
    genres = [v for v in ROWS["genre"] if v is not None]
    assert tasks["genre"]["class_counts"] == [genres.count(k) for k in range(3)]
    assert tasks["genre"]["missing"] == 1


def test_describe_reports_towers() -> None:
    schema = Schema(
        (Feature("city", towers=("click",)), Feature("rid", "numeric")),
        (Task("click"),),
    )
    d = Table.from_arrow(_arrow(), schema).describe()
    assert d["features"][0]["towers"] == ["click"]
    assert "towers" not in d["features"][1]
    assert d["groups"] is None


# ---------------------------------------------------------------------- value columns
def _valued() -> Table:
    """The 8-row table with raw value columns ``price`` (also a standardised feature) and ``rid``."""
    schema = dataclasses.replace(_schema(), values=("price", "rid"))
    return Table.from_arrow(_arrow(), schema)


def test_values_are_read_raw_with_nan() -> None:
    t = _valued()
    assert t.values is not None
    assert t.values.dtype == torch.float32
    assert t.values.shape == (N, 2)
    price = np.array([np.nan if v is None else v for v in ROWS["price"]], dtype=np.float32)
    np.testing.assert_array_equal(t.value("price").numpy(), price)  # not filled, not standardised
    np.testing.assert_array_equal(t.value("rid").numpy(), np.array(ROWS["rid"], dtype=np.float32))
    assert not torch.equal(t.numeric[:, 0], torch.nan_to_num(t.value("price")))  # the feature is scaled


def test_value_unknown_name_suggests_and_absent_values_explain() -> None:
    t = _valued()
    with pytest.raises(SchemaError, match=r"no value column 'prise'.*did you mean 'price'\?"):
        t.value("prise")
    bare = Table(t.schema, t.categorical, t.numeric, t.labels)
    assert bare.values is None
    with pytest.raises(DataError, match="has no value columns"):
        bare.value("price")
    with pytest.raises(SchemaError, match="values are none"):
        _table().value("price")


def test_no_values_in_schema_gives_none() -> None:
    assert _table().values is None


def test_values_follow_rows_through_subset_split_to_and_batches() -> None:
    t = _valued()
    sub = t.subset([5, 2, 7])
    assert sub.values is not None
    assert sub.value("rid").tolist() == [5.0, 2.0, 7.0]
    for part in t.split([0.5, 0.5], seed=1):
        assert part.values is not None
        assert part.value("rid").tolist() == [float(r) for r in _rids(part)]
    moved = t.to("cpu")
    assert moved.values is not None
    torch.testing.assert_close(moved.values, t.values, equal_nan=True)
    for shuffle in (True, False):
        for b in t.batches(3, shuffle=shuffle, seed=4):
            assert b.values is not None
            assert b.values[:, 1].tolist() == [float(r) for r in _rids(b)]
            assert b.to("cpu").values is not None


def test_batches_without_values_have_none() -> None:
    assert all(b.values is None for b in _table().batches(3))


@pytest.mark.parametrize(
    "change",
    [lambda x: x.double(), lambda x: x[:, :1], lambda x: x[:-1]],
)
def test_constructor_rejects_bad_values(change: Any) -> None:
    t = _valued()
    assert t.values is not None
    with pytest.raises(ValueError, match=r"Table\.values must be"):
        Table(t.schema, t.categorical, t.numeric, t.labels, values=change(t.values))


def test_describe_values() -> None:
    d = _valued().describe()
    price = [v for v in ROWS["price"] if v is not None]
    assert d["values"][0] == {
        "name": "price",
        "missing": N - len(price),
        "mean": pytest.approx(np.mean(price)),
    }
    assert d["values"][1]["name"] == "rid"
    assert _table().describe()["values"] == []


# ---------------------------------------------------------------------- group-contiguous batches
def _grouped(n: int, groups: int, seed: int = 0) -> Table:
    """``n`` rows in ``groups`` interleaved groups (ids drawn at random); numeric column 1 is the row number."""
    rng = np.random.default_rng(seed)
    schema = Schema(
        features=(Feature("c"), Feature("rid", "numeric", standardize=False)),
        tasks=(Task("y"),),
        group="g",
    )
    arrow = pa.table(
        {
            "c": rng.integers(0, 5, size=n),
            "rid": np.arange(n, dtype=np.float64),
            "y": rng.integers(0, 2, size=n),
            "g": rng.integers(0, groups, size=n) * 7 + 3,  # sparse ids
        }
    )
    return Table.from_arrow(arrow, schema)


def _runs(ids: list[int]) -> list[int]:
    """The group id of each run of equal consecutive ids."""
    return [g for i, g in enumerate(ids) if i == 0 or ids[i - 1] != g]


def test_group_batches_off_by_default_and_switchable() -> None:
    t = _grouped(50, 6)
    assert t.group_batches is False
    on = t.with_group_batches(True)
    assert on.group_batches is True
    assert on.categorical is t.categorical  # shared, not copied
    assert on.with_group_batches(False).group_batches is False
    assert on.subset([3, 1, 2]).group_batches is True
    assert all(p.group_batches for p in on.split([0.5, 0.5]))
    assert on.to("cpu").group_batches is True
    assert t.subset([1, 2]).group_batches is False


def test_group_batches_need_groups() -> None:
    t = _big(20)
    with pytest.raises(DataError, match=r"need group ids, and this Table has none: set schema\.group"):
        t.with_group_batches(True)
    with pytest.raises(ValueError, match="need group ids"):
        Table(t.schema, t.categorical, t.numeric, t.labels, group_batches=True)
    assert t.with_group_batches(False).group_batches is False


@pytest.mark.parametrize("batch_size", [1, 4, 16, 1000])
def test_group_batches_keep_groups_contiguous_and_in_order(batch_size: int) -> None:
    t = _grouped(300, 25).with_group_batches()
    assert t.groups is not None
    batches = list(t.batches(batch_size, shuffle=True, seed=5))
    rids = [r for b in batches for r in _rids(b)]
    ids = [g for b in batches for g in (b.groups.tolist() if b.groups is not None else [])]
    assert sorted(rids) == list(range(300))  # every row once
    assert ids == [int(t.groups[r]) for r in rids]
    runs = _runs(ids)
    assert len(runs) == len(set(runs)) == int(t.groups.unique().numel())  # each group visited once
    for g in set(runs):
        rows = [r for r, i in zip(rids, ids, strict=True) if i == g]
        assert rows == sorted(rows)  # table order within a group
    assert runs != sorted(runs)  # the groups themselves are shuffled


def test_group_batches_seeded() -> None:
    t = _grouped(200, 30).with_group_batches()

    def order(seed: int) -> list[int]:
        return [r for b in t.batches(16, seed=seed) for r in _rids(b)]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert t.group_order(1).tolist() == order(1)


def test_group_order_matches_argsort_of_permuted_ranks() -> None:
    t = _grouped(500, 40, seed=3)
    assert t.groups is not None
    _, inverse = torch.unique(t.groups, return_inverse=True)
    visit = torch.randperm(int(inverse.max()) + 1, generator=torch.Generator().manual_seed(9))
    rank = torch.empty_like(visit)
    rank[visit] = torch.arange(visit.numel())
    expected = torch.argsort(rank[inverse], stable=True)
    assert torch.equal(t.group_order(9), expected)


def test_group_batches_unshuffled_and_off_are_unchanged() -> None:
    t = _grouped(100, 10)
    on = t.with_group_batches()
    plain = [_rids(b) for b in t.batches(7, shuffle=False)]
    assert [_rids(b) for b in on.batches(7, shuffle=False)] == plain
    shuffled = [r for b in t.batches(7, seed=2) for r in _rids(b)]
    assert shuffled == torch.randperm(100, generator=torch.Generator().manual_seed(2)).tolist()


def test_group_batches_drop_last_and_missing_groups() -> None:
    t = Table.from_arrow(
        pa.table({"c": [1, 2, 3, 4, 5], "y": [0, 1, 0, 1, 0], "g": ["a", None, "b", None, "a"]}),
        Schema((Feature("c"),), (Task("y"),), group="g"),
    ).with_group_batches()
    order = t.group_order(0).tolist()
    assert sorted(order) == [0, 1, 2, 3, 4]
    runs = _runs([int(t.groups[i]) for i in order]) if t.groups is not None else []
    assert len(runs) == 3  # the two rows without a group form one group
    assert sum(len(b) for b in t.batches(2, seed=0, drop_last=True)) == 4
