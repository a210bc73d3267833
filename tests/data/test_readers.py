"""read_table / read_arrow / infer_schema on CSV, TSV, compressed CSV and Parquet files, and every bad input."""

from __future__ import annotations

import bz2
import gzip
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from mtlkit.data import readers
from mtlkit.data.readers import (
    file_format,
    infer_schema,
    inference_notes,
    read_arrow,
    read_table,
    schema_yaml,
)
from mtlkit.data.table import Table
from mtlkit.errors import DataError
from mtlkit.schema import Feature, Schema, Task

# Rows of a small training file; None is an empty field.
ROWS: dict[str, list[Any]] = {
    "user_id": [10, 11, 10, 12, 11, 10],
    "city": ["paris", "rome", "paris", None, "oslo", "rome"],
    "price": [1.5, 2.0, None, 4.25, 5.0, 6.0],
    "notes": ["x", "y", "z", "w", "v", "u"],  # never read by SCHEMA
    "click": [1, 0, 1, None, 0, 1],
    "stars": [0, 2, 1, 2, None, 0],
}
N = len(ROWS["user_id"])

SCHEMA = Schema(
    features=(
        Feature("user_id"),
        Feature("city"),
        Feature("price", "numeric", missing_indicator=True),
    ),
    tasks=(Task("click"), Task("stars", "multiclass", num_classes=3)),
)


def _text(rows: dict[str, list[Any]], sep: str = ",") -> str:
    names = list(rows)
    lines = [sep.join(names)]
    for i in range(len(rows[names[0]])):
        lines.append(sep.join("" if rows[c][i] is None else str(rows[c][i]) for c in names))
    return "\n".join(lines) + "\n"


def _csv(tmp_path: Path, rows: dict[str, list[Any]] | None = None, name: str = "train.csv") -> Path:
    path = tmp_path / name
    path.write_text(_text(rows if rows is not None else ROWS))
    return path


def _with(**changes: list[Any]) -> dict[str, list[Any]]:
    rows = {k: list(v) for k, v in ROWS.items()}
    rows.update(changes)
    return rows


def _assert_same(a: Table, b: Table) -> None:
    assert a.schema == b.schema
    assert a.encoders == b.encoders
    for name in ("categorical", "numeric", "labels"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), equal_nan=True)


def _says(message: str, *parts: str) -> None:
    """Every part appears in the message."""
    for part in parts:
        assert part in message, f"{part!r} not in message:\n{message}"


# ---------------------------------------------------------------------- formats
def test_csv_values(tmp_path: Path) -> None:
    t = read_table(_csv(tmp_path), SCHEMA)
    assert len(t) == N
    # user_id: 10 x3, 11 x2, 12; city: paris x2, rome x2 (tie by value), oslo
    assert t.categorical.tolist() == [[1, 1], [2, 2], [1, 1], [3, 0], [2, 3], [1, 2]]
    prices = np.array([1.5, 2.0, 4.25, 5.0, 6.0])
    filled = np.array([1.5, 2.0, prices.mean(), 4.25, 5.0, 6.0])
    np.testing.assert_allclose(t.numeric[:, 0].numpy(), (filled - prices.mean()) / prices.std(), rtol=1e-6)
    assert t.numeric[:, 1].tolist() == [0, 0, 1, 0, 0, 0]
    expected = np.array(
        [
            [np.nan if v is None else v for v in ROWS["click"]],
            [np.nan if v is None else v for v in ROWS["stars"]],
        ],
        dtype=np.float32,
    ).T
    np.testing.assert_array_equal(t.labels.numpy(), expected)


def test_csv_gzip_tsv_parquet_give_identical_tables(tmp_path: Path) -> None:
    reference = read_table(_csv(tmp_path), SCHEMA)
    text = _text(ROWS)
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "train.tsv").write_text(_text(ROWS, "\t"))
    (tmp_path / "train.tsv.gz").write_bytes(gzip.compress(_text(ROWS, "\t").encode()))
    (tmp_path / "train.csv.bz2").write_bytes(bz2.compress(text.encode()))
    (tmp_path / "train.txt").write_text(text)
    pq.write_table(pa.table(ROWS), tmp_path / "train.parquet")
    for name in (
        "train.csv.gz",
        "train.tsv",
        "train.tsv.gz",
        "train.csv.bz2",
        "train.txt",
        "train.parquet",
    ):
        _assert_same(read_table(tmp_path / name, SCHEMA), reference)
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text(_text(ROWS, ";"))
    _assert_same(read_table(semicolons, SCHEMA, delimiter=";"), reference)


def test_csv_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _text(ROWS).encode())
    _assert_same(read_table(path, SCHEMA), read_table(_csv(tmp_path), SCHEMA))


def test_csv_without_header(tmp_path: Path) -> None:
    path = tmp_path / "noheader.csv"
    path.write_text(_text(ROWS).split("\n", 1)[1])
    t = read_table(path, SCHEMA, column_names=list(ROWS))
    _assert_same(t, read_table(_csv(tmp_path), SCHEMA))


def test_only_needed_columns_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    original = readers.read_arrow

    def spy(*args: Any, **kwargs: Any) -> Any:
        table, origin = original(*args, **kwargs)
        seen.append(table.column_names)
        return table, origin

    monkeypatch.setattr(readers, "read_arrow", spy)
    pq.write_table(pa.table(ROWS), tmp_path / "train.parquet")
    read_table(_csv(tmp_path), SCHEMA)
    read_table(tmp_path / "train.parquet", SCHEMA)
    assert len(seen) == 2
    for columns in seen:
        assert sorted(columns) == sorted(SCHEMA.source_columns)
        assert "notes" not in columns


def test_read_arrow_columns(tmp_path: Path) -> None:
    table, origin = read_arrow(_csv(tmp_path), ["price", "city"])
    assert sorted(table.column_names) == ["city", "price"]
    assert origin.first_line == 2
    full, _ = read_arrow(_csv(tmp_path))
    assert full.column_names == list(ROWS)
    assert full.num_rows == N


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.tsv.gz", "csv"),
        ("a.txt.bz2", "csv"),
        ("a.csv.zst", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_file_format(name: str, fmt: str) -> None:
    assert file_format(name) == fmt


# ---------------------------------------------------------------------- prediction files
def test_prediction_file_without_labels_uses_fitted_encoders(tmp_path: Path) -> None:
    train = read_table(_csv(tmp_path), SCHEMA)
    rows = {
        "user_id": [11, 99, None],
        "city": ["oslo", "tokyo", "paris"],  # tokyo never seen in training
        "price": [2.0, None, 100.0],
    }
    path = _csv(tmp_path, rows, "predict.csv")
    t = read_table(path, SCHEMA, encoders=train.encoders, require_labels=False)
    assert len(t) == 3
    assert torch.isnan(t.labels).all()
    assert t.categorical.tolist() == [[2, 3], [0, 0], [0, 1]]
    assert t.encoders is train.encoders
    assert train.encoders is not None
    expected_price = train.encoders.numeric["price"].transform(np.array([2.0, np.nan, 100.0]))
    np.testing.assert_array_equal(t.numeric.numpy(), expected_price)
    with pytest.raises(DataError, match="'click', needed by the label of task 'click'"):
        read_table(path, SCHEMA, encoders=train.encoders)


def test_prediction_file_with_some_labels_reads_them(tmp_path: Path) -> None:
    train = read_table(_csv(tmp_path), SCHEMA)
    rows = {"user_id": [10, 11], "city": ["rome", "x"], "price": [1.0, 2.0], "click": [None, 1]}
    path = _csv(tmp_path, rows, "predict.csv")
    t = read_table(path, SCHEMA, encoders=train.encoders, require_labels=False)
    assert torch.isnan(t.labels[:, 1]).all()
    assert math.isnan(float(t.labels[0, 0]))
    assert float(t.labels[1, 0]) == 1.0


# ---------------------------------------------------------------------- infer_schema
def _inference_rows(n: int = 150) -> dict[str, list[Any]]:
    rng = np.random.default_rng(0)
    return {
        "click": rng.integers(0, 2, size=n).tolist(),
        "genre": rng.integers(0, 4, size=n).tolist(),
        "watch": rng.random(n).round(3).tolist(),
        "price": (rng.random(n) * 100).round(2).tolist(),
        "city": rng.choice(["a", "b", "c"], size=n).tolist(),
        "age": rng.integers(18, 60, size=n).tolist(),  # 42 distinct values at most
        "amount": np.arange(n).tolist(),  # n distinct integers: numeric
        "user_id": np.arange(1000, 1000 + n).tolist(),  # n distinct, but an id
        "shopId": np.arange(n).tolist(),
        "vip": rng.choice([True, False], size=n).tolist(),
        "empty": [None] * n,
    }


def test_infer_schema_rules() -> None:
    table = pa.table(_inference_rows())
    schema = infer_schema(table, ["click", "genre", "watch"])
    kinds = {t.name: t.kind for t in schema.tasks}
    assert kinds == {"click": "binary", "genre": "multiclass", "watch": "regression"}
    assert schema.task("genre").num_classes == 4
    features = {f.name: f.kind for f in schema.features}
    assert features == {
        "price": "numeric",
        "city": "categorical",
        "age": "categorical",
        "amount": "numeric",
        "user_id": "categorical",
        "shopId": "categorical",
        "vip": "categorical",
    }


def test_infer_schema_label_edge_cases() -> None:
    table = pa.table(
        {
            "only_zero": [0, 0, 0, None],
            "one_two": [1, 2, 2, 1],  # whole numbers 0..2 (class 0 unused): multiclass with 3 classes
            "big": [0, 5, 25, 3],  # more than 20 classes: regression
            "frac": [0.0, 1.0, 0.5, None],
            "negative": [-1, 0, 1, 0],
            "x": [1.0, 2.0, 3.0, 4.0],
        }
    )
    schema = infer_schema(table, ["only_zero", "one_two", "big", "frac", "negative"])
    assert [t.kind for t in schema.tasks] == [
        "binary",
        "multiclass",
        "regression",
        "regression",
        "regression",
    ]
    assert schema.task("one_two").num_classes == 3
    assert schema.feature_names == ("x",)


def test_infer_schema_small_int_threshold() -> None:
    table = pa.table({"y": [0, 1] * 5, "n": list(range(10))})
    assert infer_schema(table, ["y"], max_categories=10).feature("n").kind == "categorical"
    assert infer_schema(table, ["y"], max_categories=9).feature("n").kind == "numeric"


def test_infer_schema_group_and_weight_are_not_features() -> None:
    table = pa.table({"y": [0, 1], "q": [1, 2], "w": [0.5, 1.0], "x": [1.0, 2.0]})
    schema = infer_schema(table, ["y"], group="q", sample_weight="w")
    assert schema.feature_names == ("x",)
    assert (schema.group, schema.sample_weight) == ("q", "w")


def test_inference_notes_flag_text_columns_of_mostly_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    rows = ["y,price,city,code", "1,1.5,a,7", "0,,b,x1", "1,-2e3,c,8", "0, .5 ,a,9", "1,n/a?,b,10"]
    path.write_text("\n".join(rows) + "\n")
    table, origin = read_arrow(path)
    schema = infer_schema(table, ["y"], origin=origin)
    assert {f.name: f.kind for f in schema.features} == {
        "price": "categorical",
        "city": "categorical",
        "code": "categorical",
    }
    notes = inference_notes(table, schema, origin)
    # price: 3 numbers of 4 values (the blank is missing), first other at row 5; code: 3 of 5; city: none
    assert notes == [
        "'price' holds text, so it was inferred categorical, but 3 of its 4 values are numbers (the first "
        "that is not: 'n/a?', row 5 (line 6) of " + str(path) + "); if it is a quantity, fix or blank the "
        "other values and declare it numeric",
        "'code' holds text, so it was inferred categorical, but 4 of its 5 values are numbers (the first "
        "that is not: 'x1', row 2 (line 3) of " + str(path) + "); if it is a quantity, fix or blank the "
        "other values and declare it numeric",
    ]
    out = io.StringIO()
    read_table(path, labels=["y"], out=out)
    printed = out.getvalue()
    assert printed.count("# check: ") == 2
    assert yaml.safe_load(printed) == yaml.safe_load(schema_yaml(schema))  # still valid YAML


def test_inference_notes_quiet_on_text_and_numbers() -> None:
    table = pa.table(
        {
            "y": [0, 1, 0],
            "x": [1.0, 2.0, None],
            "city": ["a", "7", None],  # half numbers: not most
            "code": ["101", "205", "7"],  # codes stored as text: deliberate
            "n": [1, 2, 3],
        }
    )
    schema = infer_schema(table, ["y"])
    assert schema.feature("code").kind == "categorical"
    assert inference_notes(table, schema) == []


def test_infer_schema_needs_labels() -> None:
    table = pa.table({"y": [0, 1], "x": [1.0, 2.0]})
    with pytest.raises(DataError, match="label"):
        infer_schema(table, [])
    with pytest.raises(DataError, match="did you mean 'y'") as info:
        infer_schema(table, ["yy"])
    assert "'yy'" in str(info.value)


def test_read_table_without_schema_prints_yaml_that_round_trips(tmp_path: Path) -> None:
    rows = _inference_rows(40)
    del rows["empty"]
    path = _csv(tmp_path, rows, "raw.csv")
    out = io.StringIO()
    t = read_table(path, labels=["click", "genre", "watch"], out=out)
    text = out.getvalue()
    assert text.startswith("# mtlkit inferred this schema from")
    assert str(path) in text.splitlines()[0]
    from_yaml = Schema.from_dict(yaml.safe_load(text)["schema"])
    arrow, _ = read_arrow(path)
    inferred = infer_schema(arrow, ["click", "genre", "watch"])
    assert from_yaml == inferred
    assert from_yaml.task("genre").num_classes == 4
    assert t.schema.task_names == ("click", "genre", "watch")
    assert [f.name for f in t.schema.features] == [f.name for f in inferred.features]
    assert t.schema.feature("city").vocab_size == 4


def test_schema_yaml_round_trips_a_rich_schema() -> None:
    schema = Schema(
        features=(
            Feature("u", embedding_dim=8, min_count=2, towers=("b",)),
            Feature("p", "numeric", fill="median", missing_indicator=True, standardize=False, column="P"),
        ),
        tasks=(
            Task("a", weight=2.0, loss="focal"),
            Task("b", "multiclass", num_classes=5, depends_on="a", label="B"),
            Task("c", "regression", metric="mae"),
        ),
        group="q",
        sample_weight="w",
    )
    assert Schema.from_dict(yaml.safe_load(schema_yaml(schema))["schema"]) == schema


# ---------------------------------------------------------------------- bad input, one test per case
def test_missing_column_lists_it_with_who_needs_it_and_a_suggestion(tmp_path: Path) -> None:
    rows = {("prise" if k == "price" else k): v for k, v in ROWS.items()}
    path = _csv(tmp_path, rows)
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(
        str(info.value),
        str(path),
        "lacks 1 column(s)",
        "'price', needed by feature 'price' (did you mean 'prise'?)",
        "Rename the column(s) in the file, or point the schema at the right ones",
    )


def test_missing_column_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({k: v for k, v in ROWS.items() if k != "city"}), path)
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(str(info.value), str(path), "'city', needed by feature 'city'", "Rename")


def test_several_missing_columns_listed_together(tmp_path: Path) -> None:
    path = _csv(tmp_path, {k: v for k, v in ROWS.items() if k not in ("city", "stars")})
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(
        str(info.value),
        "lacks 2 column(s)",
        "'city', needed by feature 'city'",
        "'stars', needed by the label of task 'stars'",
    )


@pytest.mark.parametrize("text", ["cheap", "1_000", "\u0663"])  # Python's float() reads the last two
def test_text_in_numeric_column(tmp_path: Path, text: str) -> None:
    path = _csv(tmp_path, _with(price=[1.5, 2.0, text, 4.0, 5.0, 6.0]))
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    # the third data row is on line 4 (line 1 is the header)
    _says(
        str(info.value),
        repr(text),
        "'price'",
        f"row 3 (line 4) of {path}",
        "Fix or blank that value",
    )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    for schema in (SCHEMA, None):
        with pytest.raises(DataError) as info:
            read_table(path, schema, labels=["click"])
        _says(str(info.value), str(path), "empty (0 bytes)", "Check that it is the right file")


def test_header_only_csv(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text(",".join(ROWS) + "\n")
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(str(info.value), str(path), "no data rows", "Check that it is the right file")


def test_binary_label_of_two(tmp_path: Path) -> None:
    path = _csv(tmp_path, _with(click=[1, 0, 1, None, 2, 1]))
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(
        str(info.value),
        "task 'click'",
        "label column 'click'",
        f"the value 2 at row 5 (line 6) of {path}",
        "binary labels must be 0 or 1 (blank for missing)",
    )


def test_multiclass_label_out_of_range(tmp_path: Path) -> None:
    path = _csv(tmp_path, _with(stars=[0, 2, 3, 2, None, 0]))
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(
        str(info.value),
        "label column 'stars'",
        f"the value 3 at row 3 (line 4) of {path}",
        "whole numbers 0..2",
    )


def test_label_column_missing_from_file(tmp_path: Path) -> None:
    path = _csv(tmp_path, {k: v for k, v in ROWS.items() if k != "click"})
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(str(info.value), str(path), "'click', needed by the label of task 'click'", "Rename")


def test_label_column_entirely_empty(tmp_path: Path) -> None:
    path = _csv(tmp_path, _with(click=[None] * N))
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(
        str(info.value),
        "label column 'click'",
        str(path),
        f"all {N} values missing",
        "fill it, or drop the task from the schema",
    )


def test_label_column_entirely_empty_when_inferring(tmp_path: Path) -> None:
    path = _csv(tmp_path, _with(click=[None] * N))
    with pytest.raises(DataError) as info:
        read_table(path, labels=["click"], out=io.StringIO())
    _says(str(info.value), "'click'", str(path), "empty")


def test_file_does_not_exist(tmp_path: Path) -> None:
    _csv(tmp_path)
    path = tmp_path / "trian.csv"
    for kwargs in ({"schema": SCHEMA}, {"schema": SCHEMA, "require_labels": False}, {"labels": ["click"]}):
        with pytest.raises(DataError) as info:
            read_table(path, **kwargs)  # type: ignore[arg-type]
        _says(str(info.value), f"file not found: {path}", "did you mean 'train.csv'?", "Check the path")


def test_file_in_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "train.csv"
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(str(info.value), str(path), "does not exist", "Check the path")


def test_unknown_file_extension(tmp_path: Path) -> None:
    path = tmp_path / "train.xlsx"
    path.write_text(_text(ROWS))
    for kwargs in ({"schema": SCHEMA}, {"labels": ["click"]}):
        with pytest.raises(DataError) as info:
            read_table(path, **kwargs)  # type: ignore[arg-type]
        _says(str(info.value), str(path), "cannot tell the format", "name it *.csv")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"{tmp_path} is a folder")):
        read_table(tmp_path, SCHEMA)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train.csv.gz"
    path.write_text(_text(ROWS))  # not compressed
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(str(info.value), str(path))


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    path.write_text(_text(ROWS))
    for kwargs in ({}, {"require_labels": False}):
        with pytest.raises(DataError) as info:
            read_table(path, SCHEMA, **kwargs)  # type: ignore[arg-type]
        _says(str(info.value), f"cannot read Parquet file {path}")


def test_ragged_csv(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(_text(ROWS) + "1,2\n")
    with pytest.raises(DataError) as info:
        read_table(path, SCHEMA)
    _says(str(info.value), f"cannot parse CSV file {path}", "delimiter")


# ------------------------------------------------------------------------------ fixes after the first review
def test_text_far_down_a_big_csv_is_reported_with_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Types are inferred from the first block; a bad value in a later block still gets row and value."""
    import mtlkit.data.readers as readers

    monkeypatch.setattr(readers, "CSV_BLOCK_SIZE", 1 << 10)  # many small blocks
    rows = ["x,y"] + [f"{i},{i % 2}" for i in range(2000)]
    rows[1501] = "oops,1"  # data row 1501 -> line 1502
    path = tmp_path / "late.csv"
    path.write_text("\n".join(rows) + "\n")
    schema = Schema((Feature("x", "numeric"),), (Task("y", "binary"),))
    with pytest.raises(DataError, match=r"'x' .*'oops' at row 1501 \(line 1502\)"):
        read_table(path, schema)


def test_infinite_numeric_feature_is_an_error_naming_row_and_value(tmp_path: Path) -> None:
    path = tmp_path / "inf.csv"
    path.write_text("x,y\n1.0,0\ninf,1\n")
    schema = Schema((Feature("x", "numeric"),), (Task("y", "binary"),))
    with pytest.raises(DataError, match=r"'x' has the value inf at row 2 \(line 3\).*must be finite"):
        read_table(path, schema)


def test_prediction_file_may_lack_group_and_weight_columns(tmp_path: Path) -> None:
    train_path = tmp_path / "train.csv"
    train_path.write_text("q,w,x,y\na,1.0,1.0,0\nb,2.0,2.0,1\n")
    schema = Schema((Feature("x", "numeric"),), (Task("y", "binary"),), group="q", sample_weight="w")
    train = read_table(train_path, schema)
    assert train.groups is not None
    assert train.weights is not None
    predict_path = tmp_path / "predict.csv"
    predict_path.write_text("x\n3.0\n")
    table = read_table(predict_path, schema, encoders=train.encoders, require_labels=False)
    assert table.groups is None
    assert table.weights is None
    assert torch.isnan(table.labels).all()


def test_text_in_a_label_column_gives_label_advice(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("x,y\n1,0\n2,yes\n")
    schema = Schema((Feature("x", "numeric"),), (Task("y", "binary"),))
    with pytest.raises(DataError, match=r"'yes' at row 2 .*labels must be numbers") as info:
        read_table(path, schema)
    assert "categorical" not in str(info.value)


def test_encoders_with_another_missing_indicator_setting_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,0\n,1\n")
    flagged = Schema((Feature("x", "numeric", missing_indicator=True),), (Task("y", "binary"),))
    plain = Schema((Feature("x", "numeric"),), (Task("y", "binary"),))
    train = read_table(path, flagged)
    with pytest.raises(DataError, match=r"missing_indicator differs"):
        read_table(path, plain, encoders=train.encoders)


@pytest.mark.parametrize(
    ("name", "is_id"),
    [
        ("id", True),
        ("user_id", True),
        ("userId", True),
        ("USER_ID", True),
        ("item-id", True),
        ("paid", False),
        ("valid", False),
        ("squid", False),
    ],
)
def test_id_names_are_recognised_without_catching_words_ending_in_id(name: str, is_id: bool) -> None:
    from mtlkit.data.readers import _looks_like_id

    assert _looks_like_id(name) is is_id


# ---------------------------------------------------------------------- value columns
VALUED = Schema(SCHEMA.features, SCHEMA.tasks, values=("price", "cost"))


def test_value_columns_read_raw_from_csv_and_parquet(tmp_path: Path) -> None:
    cost = [0.5, None, 2.5, 3.0, 1e6, 7.0]
    rows = _with(cost=cost)
    pq.write_table(pa.table(rows), tmp_path / "train.parquet")
    expected = np.array(
        [[np.nan if p is None else p for p in ROWS["price"]], [np.nan if c is None else c for c in cost]],
        dtype=np.float32,
    ).T
    for path in (_csv(tmp_path, rows), tmp_path / "train.parquet"):
        t = read_table(path, VALUED)
        assert t.values is not None
        np.testing.assert_array_equal(t.values.numpy(), expected)
        assert t.value("cost")[4] == 1e6  # not scaled


def test_missing_value_column_names_file_and_column(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    with pytest.raises(DataError) as info:
        read_table(path, VALUED)
    _says(str(info.value), str(path), "'cost', needed by the schema's values")
    pq.write_table(pa.table(ROWS), tmp_path / "train.parquet")
    with pytest.raises(DataError, match="'cost', needed by the schema's values"):
        read_table(tmp_path / "train.parquet", VALUED)


def test_prediction_file_values_optional(tmp_path: Path) -> None:
    cost_only = Schema(SCHEMA.features, SCHEMA.tasks, values=("cost",))
    train = read_table(_csv(tmp_path, _with(cost=[1.0] * N)), VALUED)
    rows = {k: v for k, v in ROWS.items() if k not in ("click", "stars")}
    kwargs: dict[str, Any] = {"encoders": train.encoders, "require_labels": False}
    assert read_table(_csv(tmp_path, rows, "none.csv"), cost_only, **kwargs).values is None
    partial = read_table(_csv(tmp_path, rows, "partial.csv"), VALUED, **kwargs)
    assert partial.values is not None  # price is there, cost is not
    assert partial.value("price")[0] == 1.5
    assert bool(torch.isnan(partial.value("cost")).all())
    rows["cost"] = [9.0] * N
    having = read_table(_csv(tmp_path, rows, "some.csv"), cost_only, **kwargs)
    assert having.values is not None
    assert having.value("cost").tolist() == [9.0] * N


def test_text_in_value_column_names_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, _with(cost=[1, 2, "cheap", 4, 5, 6]))
    with pytest.raises(DataError) as info:
        read_table(path, VALUED)
    _says(
        str(info.value),
        "'cost'",
        "'cheap'",
        "row 3 (line 4)",
        "value columns (schema.values) must be numbers",
    )


def test_schema_yaml_lists_values() -> None:
    text = schema_yaml(VALUED)
    assert yaml.safe_load(text)["schema"]["values"] == ["price", "cost"]
    assert "values" not in yaml.safe_load(schema_yaml(SCHEMA))["schema"]
