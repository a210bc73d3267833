"""read_parts: a CSV / Parquet file read in parts of rows, with the column types reading it whole gives."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtlkit.data import readers
from mtlkit.data.columns import GroupIds
from mtlkit.data.readers import Part, Parts, read_arrow, read_parts
from mtlkit.errors import DataError


def _late_text_csv(path: Path, rows: int) -> None:
    """A CSV whose 'code' column holds integers in its first 600 rows and text after, 'empty' is null until
    row 700, 'x' is float."""
    lines = ["code,empty,x"]
    for i in range(rows):
        code = str(i) if i < 600 else f"c{i}"
        empty = "" if i < 700 else f"e{i}"
        lines.append(f"{code},{empty},{i / 4}")
    path.write_text("\n".join(lines) + "\n")


class Collect:
    """A consumer that keeps every part and counts how often it was called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, parts: Parts) -> tuple[pa.Schema, list[Part]]:
        self.calls += 1
        return parts.schema, list(parts)


@pytest.mark.parametrize("rows", [1, 7, 250, 1000, 5000])
def test_csv_parts_have_the_whole_files_types_and_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    monkeypatch.setattr(
        readers, "CSV_BLOCK_SIZE", 1 << 10
    )  # types from ~70 rows: two columns turn to text late
    monkeypatch.setattr(readers, "CSV_PART_BLOCK_SIZE", 1 << 10)
    path = tmp_path / "late.csv"
    _late_text_csv(path, 1000)
    whole, origin = read_arrow(path)
    assert whole.schema.field("code").type == pa.string()  # the premise: text came after the first block
    assert whole.schema.field("empty").type == pa.string()
    collect = Collect()
    schema, parts = read_parts(path, rows, collect)
    assert collect.calls == 3  # once with the first block's types, again for each column that turned to text
    assert schema == whole.schema
    assert [p.start for p in parts] == list(range(0, 1000, rows))
    assert [p.table.num_rows for p in parts] == [min(rows, 1000 - s) for s in range(0, 1000, rows)]
    assert all(p.table.schema == whole.schema for p in parts)
    assert pa.concat_tables([p.table for p in parts]).equals(whole)
    if rows >= 1000:  # one part: the whole file, named as the file
        assert parts[0].origin == origin
    else:
        assert parts[1].origin.where(0) == f"row {rows + 1} (line {rows + 2}) of {path} (rows {rows + 1}-" + (
            f"{min(2 * rows, 1000)})"
        )


def test_parts_of_some_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "CSV_BLOCK_SIZE", 1 << 10)
    path = tmp_path / "late.csv"
    _late_text_csv(path, 300)
    schema, parts = read_parts(path, 128, Collect(), columns=["x", "code"])
    assert schema.names == ["x", "code"]
    assert [p.table.column_names for p in parts] == [["x", "code"]] * 3  # the order asked for
    whole, _ = read_arrow(path, ["x", "code"])
    assert pa.concat_tables([p.table for p in parts]).equals(whole)
    with pytest.raises(
        DataError, match=r"(?s)lacks 1 column.*'cod', needed by the columns asked for.*'code'"
    ):
        read_parts(path, 128, Collect(), columns=["cod"])


def test_parquet_parts(tmp_path: Path) -> None:
    table = pa.table({"a": list(range(1000)), "b": [f"s{i % 7}" for i in range(1000)]})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=300)  # parts cross row groups
    schema, parts = read_parts(path, 400, Collect())
    assert schema == table.schema
    assert [(p.start, p.table.num_rows) for p in parts] == [(0, 400), (400, 400), (800, 200)]
    assert parts[2].origin.where(1) == f"row 802 of {path} (rows 801-1,000)"
    assert pa.concat_tables([p.table for p in parts]).equals(table)
    schema, parts = read_parts(path, 400, Collect(), columns=["b", "a"])
    assert schema.names == ["b", "a"]
    assert [p.table.column_names for p in parts] == [["b", "a"]] * 3


def test_a_file_of_exactly_one_part_is_named_as_the_file(tmp_path: Path) -> None:
    path = tmp_path / "four.csv"
    path.write_text("a\n1\n2\n3\n4\n")
    _, parts = read_parts(path, 4, Collect())
    assert len(parts) == 1
    assert parts[0].origin.where(3) == f"row 4 (line 5) of {path}"
    _, parts = read_parts(path, 3, Collect())
    assert [p.origin.source for p in parts] == [f"{path} (rows 1-3)", f"{path} (rows 4-4)"]


def test_header_only_and_headerless_csv(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n")
    schema, parts = read_parts(path, 10, Collect())
    assert (schema.names, parts) == (["a", "b"], [])
    path.write_text("1,x\n2,y\n3,z\n")
    _, parts = read_parts(path, 2, Collect(), column_names=["n", "s"])
    assert [p.table.column("n").to_pylist() for p in parts] == [[1, 2], [3]]
    assert parts[1].origin.where(0) == f"row 3 (line 3) of {path} (rows 3-3)"


def test_bad_arguments_and_files(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n")
    with pytest.raises(ValueError, match="rows must be an integer >= 1, got 0"):
        read_parts(path, 0, Collect())
    with pytest.raises(DataError, match="file not found"):
        read_parts(tmp_path / "missing.csv", 10, Collect())
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read Parquet file .*bad\.parquet"):
        read_parts(bad, 10, Collect())
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"cannot parse CSV file .*ragged\.csv"):
        read_parts(ragged, 10, Collect())


def test_an_error_of_the_consumer_is_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a\n1\n2\n")
    calls = []

    def fail(parts: Parts) -> None:
        calls.append(1)
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        read_parts(path, 1, fail)
    assert calls == [1]


def test_compressed_csv_parts(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "z.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n" + b"".join(f"{i},s{i % 3}\n".encode() for i in range(50))))
    schema, parts = read_parts(path, 20, Collect())
    assert schema.names == ["a", "b"]
    whole, _ = read_arrow(path)
    assert [p.table.num_rows for p in parts] == [20, 20, 10]
    assert pa.concat_tables([p.table for p in parts]).equals(whole)


def test_group_ids_are_one_numbering_across_parts() -> None:
    ids = GroupIds()
    first = ids(pa.array(["a", "b", None, "a"]))
    second = ids(pa.chunked_array([["c", "a"], [None, "b"]]))
    assert first.tolist() == [0, 1, -1, 0]
    assert second.tolist() == [2, 0, -1, 1]
    assert ids(pa.array([None, None], pa.string())).tolist() == [-1, -1]
