"""Reading CSV and Parquet files through pyarrow into a :class:`~mtlkit.data.table.Table`.

``read_table(path, schema)`` reads only the columns the Schema needs and encodes them (fitting encoders unless
given). Without a Schema, ``infer_schema`` guesses one from the file and the label columns you name, and
``read_table`` prints it as YAML so you can copy it into a config and correct it.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from mtlkit.data.columns import Origin, check_labels, require_columns, to_float
from mtlkit.data.encoders import Encoders
from mtlkit.data.table import COLUMN_HINT, Table, needed_columns
from mtlkit.errors import DataError, did_you_mean
from mtlkit.schema import Feature, Schema, Task

_T = TypeVar("_T")

#: Bytes pyarrow reads per CSV block; column types are inferred from the first block.
CSV_BLOCK_SIZE = 1 << 24
#: Bytes per block when a CSV is read in parts (:func:`read_parts`) with the types of its first CSV_BLOCK_SIZE
#: bytes: pyarrow's streaming reader holds ~20 blocks (measured: 385 MB at 16 MB blocks, 81 MB at 2 MB, for a
#: 395 MB file, and faster: 2.1 s against 2.5 s).
CSV_PART_BLOCK_SIZE = 1 << 21
#: pyarrow's message for a value that does not fit the type inferred from the first block.
_LATE_TEXT = re.compile(r"In CSV column #(\d+): .*CSV conversion error")

#: Texts read as a missing value in CSV files (an empty field always is).
NULL_VALUES = ("", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "#N/A")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")


def file_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"`` from the file name (a ``.gz`` / ``.bz2`` / ``.zst`` CSV is fine)."""
    name = _uncompressed_name(Path(path))
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataError(
        f"cannot tell the format of {path}: name it *.csv, *.tsv, *.txt (optionally .gz) or *.parquet"
    )


def _uncompressed_name(path: Path) -> str:
    """The lower-case file name without a compression suffix: ``data.tsv.gz`` -> ``data.tsv``."""
    name = path.name.lower()
    for comp in COMPRESSION_SUFFIXES:
        if name.endswith(comp):
            return name[: -len(comp)]
    return name


def _delimiter(path: Path, delimiter: str | None) -> str:
    """``delimiter`` when given, else a tab for ``*.tsv`` (compressed or not) and a comma otherwise."""
    if delimiter:
        return delimiter
    return "\t" if _uncompressed_name(path).endswith(".tsv") else ","


def _check_file(path: Path) -> None:
    """Fail unless ``path`` is an existing, non-empty file, saying what to do."""
    if not path.exists():
        folder = path.parent
        if folder.is_dir():
            hint = did_you_mean(path.name, [q.name for q in folder.iterdir()])
        else:
            hint = f" (the folder {folder} does not exist either)"
        relative = "" if path.is_absolute() else f" (relative to the current folder, {Path.cwd()})"
        raise DataError(f"file not found: {path}{hint}. Check the path{relative}.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the path of a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise DataError(
            f"{path} is empty (0 bytes): nothing to read. Check that it is the right file and that it was "
            f"written completely (a CSV needs a header line and rows)."
        )


def read_arrow(
    path: str | Path,
    columns: Sequence[str] | None = None,
    *,
    delimiter: str | None = None,
    column_names: Sequence[str] | None = None,
    null_values: Sequence[str] = NULL_VALUES,
) -> tuple[pa.Table, Origin]:
    """Read a CSV or Parquet file into Arrow, keeping only ``columns`` when given.

    Args:
        delimiter: CSV field separator; ``\\t`` for .tsv, else ``,``.
        column_names: for a CSV without a header line, the names of its columns.
    """
    p = Path(path)
    _check_file(p)
    include = None
    if columns is not None:
        require_columns(
            available_columns(p, delimiter, column_names), {c: "the schema" for c in columns}, Origin(str(p))
        )
        include = list(dict.fromkeys(columns))
    if file_format(p) == "parquet":
        try:
            table = pq.read_table(p, columns=include)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read Parquet file {p}: {exc}") from None
        return table, Origin(str(p))
    sep = _delimiter(p, delimiter)
    read_opts, parse_opts = _csv_options(sep, column_names)

    def read(convert: pacsv.ConvertOptions) -> pa.Table:
        return pacsv.read_csv(p, read_options=read_opts, parse_options=parse_opts, convert_options=convert)

    table = _settling_types(p, sep, column_names, include, null_values, read)
    return table, _csv_origin(p, column_names)


def _csv_options(
    sep: str, column_names: Sequence[str] | None
) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions]:
    read_opts = pacsv.ReadOptions(
        column_names=list(column_names) if column_names is not None else None,
        block_size=CSV_BLOCK_SIZE,
    )
    return read_opts, pacsv.ParseOptions(delimiter=sep)


def _csv_origin(path: Path, column_names: Sequence[str] | None) -> Origin:
    """Rows of a CSV start on line 2, or on line 1 of a file without a header line."""
    return Origin(str(path), 1 if column_names is not None else 2)


def _convert_options(
    include: list[str] | None, column_types: dict[str, pa.DataType], null_values: Sequence[str]
) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        include_columns=include,
        column_types=column_types,
        null_values=list(null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )


def _settling_types(
    p: Path,
    sep: str,
    column_names: Sequence[str] | None,
    include: list[str] | None,
    null_values: Sequence[str],
    read: Callable[[pacsv.ConvertOptions], _T],
) -> _T:
    """``read(options)`` of a CSV file, run again with a column read as text each time a column turns out to
    hold text further down than the first block, whose values fixed the column types (so that a bad value and
    its row are then reported precisely, by columns.to_float); pyarrow's other errors are DataErrors."""
    as_text: dict[str, pa.DataType] = {}
    while True:
        try:
            return read(_convert_options(include, as_text, null_values))
        except pa.ArrowInvalid as exc:
            message = str(exc)
            if "Empty CSV file" in message:
                raise DataError(f"{p} is empty: it has no header line and no rows") from None
            late = _LATE_TEXT.search(message)
            if late is not None and len(as_text) < 1000:
                names = list(column_names) if column_names is not None else _csv_header(p, sep)
                index = int(late.group(1))
                if index < len(names) and names[index] not in as_text:
                    as_text[names[index]] = pa.string()
                    continue
            raise DataError(
                f"cannot parse CSV file {p}: {message}. Check the delimiter (--delimiter) and quoting."
            ) from None


@dataclass(frozen=True)
class Part:
    """``rows`` consecutive rows of a file: ``start`` is the index of the first in the file, ``origin`` names
    them in messages (the file itself when the part is the whole file)."""

    start: int
    table: pa.Table
    origin: Origin


@dataclass(frozen=True)
class Parts:
    """A file being read in parts (what :func:`read_parts` hands its consumer): ``schema`` holds the columns
    read and the types every part has, ``origin`` names the file; iterating gives the :class:`Part` s in order."""

    schema: pa.Schema
    origin: Origin
    batches: Iterator[pa.RecordBatch]
    rows: int

    def __iter__(self) -> Iterator[Part]:
        return _regroup(self.batches, self.rows, self.origin)


def read_parts(
    path: str | Path,
    rows: int,
    consume: Callable[[Parts], _T],
    *,
    columns: Sequence[str] | None = None,
    delimiter: str | None = None,
    column_names: Sequence[str] | None = None,
    null_values: Sequence[str] = NULL_VALUES,
) -> _T:
    """``consume(parts)`` for a CSV / Parquet file read ``rows`` rows at a time (only ``columns``, in that order,
    when given): one part is in memory at a time, however big the file.

    A Parquet file's column types are in its metadata. A CSV file is read in one pass with the types pyarrow
    infers from its first block (16 MB); if a column turns out to hold text further down, the parts read before
    had it as numbers, so ``consume`` is called again from the first part with that column read as text (as
    :func:`read_arrow` reads it): ``consume`` must leave nothing behind when an exception passes through it
    (write through :class:`TableWriter`). Other arguments as for :func:`read_arrow`; its errors are raised.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
    p = Path(path)
    _check_file(p)
    wanted = list(dict.fromkeys(columns)) if columns is not None else None
    if wanted is not None:
        header = available_columns(p, delimiter, column_names)
        require_columns(header, {c: "the columns asked for" for c in wanted}, Origin(str(p)))
    if file_format(p) == "parquet":
        try:
            parquet = pq.ParquetFile(p)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read Parquet file {p}: {exc}") from None
        with parquet:
            schema = parquet.schema_arrow
            if wanted is not None:
                schema = pa.schema([schema.field(c) for c in wanted])
            batches = parquet.iter_batches(batch_size=rows, columns=wanted)
            return consume(Parts(schema, Origin(str(p)), batches, rows))
    sep = _delimiter(p, delimiter)
    read_opts, parse_opts = _csv_options(sep, column_names)

    stream_opts = pacsv.ReadOptions(column_names=read_opts.column_names, block_size=CSV_PART_BLOCK_SIZE)

    def attempt(convert: pacsv.ConvertOptions) -> _T:
        # the types of the first CSV_BLOCK_SIZE bytes (as read_arrow infers them), then smaller blocks
        schema = pacsv.open_csv(p, read_opts, parse_opts, convert).schema
        types = _convert_options(wanted, {f.name: f.type for f in schema}, null_values)
        reader = pacsv.open_csv(p, stream_opts, parse_opts, types)
        return consume(Parts(schema, _csv_origin(p, column_names), iter(reader), rows))

    return _settling_types(p, sep, column_names, wanted, null_values, attempt)


def _regroup(batches: Iterator[pa.RecordBatch], rows: int, origin: Origin) -> Iterator[Part]:
    """Record batches of any sizes -> parts of exactly ``rows`` rows (the last: the rest), each told whether it
    is the whole file (a batch is read ahead to know)."""
    pending: list[pa.RecordBatch] = []
    held = start = 0
    upcoming = next(batches, None)
    while upcoming is not None:
        batch, upcoming = upcoming, next(batches, None)
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows and (batch.num_rows or upcoming is not None):  # rows follow: not the whole file
                yield Part(start, pa.Table.from_batches(pending), origin.part(start, held))
                start, pending, held = start + held, [], 0
    if pending:  # the last part: the whole file when it starts at row 0
        whole = origin if start == 0 else origin.part(start, held)
        yield Part(start, pa.Table.from_batches(pending), whole)


def _csv_header(path: Path, sep: str) -> list[str]:
    """The names on the first line of a CSV file, as pyarrow reads them.

    The file is decompressed by its suffix (.gz, .bz2, .zst, .lz4) like ``pyarrow.csv.read_csv`` does, and a
    UTF-8 byte order mark (written by Excel) is dropped from the first name.
    """
    try:
        with (
            pa.input_stream(str(path), compression="detect") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle,
        ):
            header = next(csv.reader(handle, delimiter=sep), None)
    except (OSError, UnicodeDecodeError, pa.ArrowInvalid) as exc:
        raise DataError(
            f"cannot read the header line of {path}: {exc}. Check that it is UTF-8 text and that a "
            f"compressed file has the suffix of its compression (.gz, .bz2, .zst, .lz4)."
        ) from None
    if header is None:
        raise DataError(f"{path} is empty: it has no header line and no rows")
    return header


def read_table(
    path: str | Path,
    schema: Schema | None = None,
    *,
    encoders: Encoders | None = None,
    labels: Sequence[str] = (),
    require_labels: bool = True,
    delimiter: str | None = None,
    column_names: Sequence[str] | None = None,
    out: TextIO | None = None,
) -> Table:
    """Read a CSV / Parquet file into a Table.

    Args:
        schema: what to read; when None it is inferred with ``infer_schema`` from ``labels`` and printed
            (as YAML, to ``out`` or stderr) so it can be copied into a config.
        encoders: fitted encoders to apply (validation / test / prediction files); fitted here when None.
        labels: label columns, used only to infer a schema.
        require_labels: False for prediction files, which may lack label, group, weight and value columns
            (value columns present are still read; ``Table.values`` is None when all are absent).
    """
    if schema is None:
        arrow, origin = read_arrow(path, delimiter=delimiter, column_names=column_names)
        schema = infer_schema(arrow, labels, origin=origin)
        stream = out if out is not None else sys.stderr
        print(
            f"# mtlkit inferred this schema from {path}; copy it into your config and adjust it:",
            file=stream,
        )
        print(schema_yaml(schema), file=stream)
        for note in inference_notes(arrow, schema, origin):
            print(f"# check: {note}", file=stream)
    else:
        wanted = schema_columns(path, schema, require_labels, delimiter, column_names)
        arrow, origin = read_arrow(path, wanted, delimiter=delimiter, column_names=column_names)
    return Table.from_arrow(arrow, schema, encoders=encoders, origin=origin, require_labels=require_labels)


def schema_columns(
    path: str | Path,
    schema: Schema,
    require_labels: bool = True,
    delimiter: str | None = None,
    column_names: Sequence[str] | None = None,
) -> list[str]:
    """The columns of the file to read for ``schema``, from its header alone: every column the schema needs (an
    error naming the missing ones otherwise) and the optional ones the file has (a prediction file's label, group
    or value columns are read, and checked, when present)."""
    header = available_columns(path, delimiter, column_names)
    needed = needed_columns(schema, require_labels)
    require_columns(header, needed, Origin(str(path)), hint=COLUMN_HINT)
    return [c for c in schema.source_columns if c in needed or c in header]


def available_columns(
    path: str | Path, delimiter: str | None = None, column_names: Sequence[str] | None = None
) -> list[str]:
    """The column names of a CSV / Parquet file, reading only its header or metadata."""
    p = Path(path)
    _check_file(p)
    fmt = file_format(p)
    if column_names is not None:
        return list(column_names)
    if fmt == "parquet":
        try:
            return list(pq.read_schema(p).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"cannot read Parquet file {p}: {exc}") from None
    return _csv_header(p, _delimiter(p, delimiter))


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write an Arrow table as CSV or Parquet (by the file name), atomically (temporary file + rename)."""
    with TableWriter(path) as writer:
        writer.write(table)


class TableWriter:
    """Writes Arrow tables of one schema, one after the other, into one CSV or Parquet file (by the file name).

    Atomic: the rows go to ``<name>.tmp`` next to the file, which replaces the file when the ``with`` block ends
    without an error; after an error the temporary file is removed and an existing file is left as it was.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = file_format(self.path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            kind = pq.ParquetWriter if self.format == "parquet" else pacsv.CSVWriter
            self._writer = kind(str(self.tmp), table.schema)
        self._writer.write_table(table)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if error is None and writer is not None:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def infer_schema(
    table: pa.Table,
    labels: Sequence[str],
    *,
    origin: Origin | None = None,
    group: str | None = None,
    sample_weight: str | None = None,
    max_categories: int = 100,
) -> Schema:
    """Guess a Schema from an Arrow table and the label columns.

    Rules (print the result and correct it by hand where they guess wrong):

    * a label whose values are all 0/1 is a binary task; whole numbers 0..K-1 with 3 <= K <= 20, multiclass;
      anything else numeric, regression;
    * text and boolean columns are categorical features, floating-point columns numeric;
    * integer columns are categorical when they hold at most ``max_categories`` distinct values or their
      name looks like an id (``id``, ``user_id``, ``userId``; not ``paid``), else numeric.
    """
    origin = origin or Origin()
    if not labels:
        raise DataError(f"name the label column(s) of {origin.source} to infer a schema (e.g. --label click)")
    require_columns(
        table,
        {c: "a task label" for c in labels},
        origin,
        hint="Name label columns as they appear in the header.",
    )
    tasks = [_infer_task(table.column(c), c, origin) for c in labels]
    reserved = {*labels, group, sample_weight}
    features = []
    for name in table.column_names:
        if name in reserved:
            continue
        kind = table.schema.field(name).type
        if pa.types.is_floating(kind):
            features.append(Feature(name, "numeric"))
        elif pa.types.is_integer(kind):
            distinct = pc.count_distinct(table.column(name)).as_py()
            is_id = _looks_like_id(name)
            features.append(
                Feature(name, "categorical" if is_id or distinct <= max_categories else "numeric")
            )
        elif pa.types.is_null(kind):
            continue  # an entirely empty column carries nothing
        else:
            features.append(Feature(name, "categorical"))
    if not features:
        raise DataError(f"{origin.source} has no columns left to use as features")
    return Schema(tuple(features), tuple(tasks), group=group, sample_weight=sample_weight)


#: A number as a CSV cell may hold it: 3, -1.5, .5, 2e-3 (surrounding blanks allowed).
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def inference_notes(table: pa.Table, schema: Schema, origin: Origin | None = None) -> list[str]:
    """Guesses of :func:`infer_schema` worth a second look, one sentence each: a feature inferred categorical
    because its column holds text, although most of its values are numbers (a numeric column with a few bad
    values, which declared numeric would stop the reading at the first of them). A text column of nothing but
    numbers (codes stored as text, as Parquet files may hold them) is left alone."""
    origin = origin or Origin()
    notes = []
    for f in schema.categorical:
        column = table.column(f.source)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        text = pc.utf8_trim_whitespace(column.combine_chunks())
        filled = pc.and_(pc.is_valid(text), pc.not_equal(text, ""))
        numeric = pc.and_(filled, pc.match_substring_regex(text, _NUMBER))
        numbers, values = pc.sum(numeric).as_py() or 0, pc.sum(filled).as_py() or 0
        if 2 * numbers <= values or numbers == values:  # not most of them, or all of them
            continue
        other = pc.and_(filled, pc.invert(numeric))
        first = int(pc.index(other, True).as_py())
        notes.append(
            f"{f.name!r} holds text, so it was inferred categorical, but {numbers:,} of its {values:,} values "
            f"are numbers (the first that is not: {column[first].as_py()!r}, {origin.where(first)}); if it is a "
            "quantity, fix or blank the other values and declare it numeric"
        )
    return notes


def _looks_like_id(name: str) -> bool:
    """``id``, ``user_id``, ``user-id``, ``userId``, ``USERID``-style names; not ``paid`` or ``valid``."""
    return bool(re.search(r"(^|[_\-\s.])id$", name, re.IGNORECASE) or re.search(r"[a-z]I[dD]$", name))


def _infer_task(column: pa.ChunkedArray, name: str, origin: Origin) -> Task:
    values = to_float(column, name, origin)
    known = values[~np.isnan(values)]
    if known.size == 0:
        raise DataError(f"label column {name!r} of {origin.source} is empty: all values missing")
    distinct = np.unique(known)
    if np.isin(distinct, (0.0, 1.0)).all():
        return Task(name, "binary")
    whole = np.all(distinct == np.round(distinct)) and distinct.min() >= 0
    if whole and 3 <= distinct.max() + 1 <= 20:
        task = Task(name, "multiclass", num_classes=int(distinct.max()) + 1)
        check_labels(
            values,
            task=name,
            kind="multiclass",
            column=name,
            origin=origin,
            num_classes=task.num_classes,
        )
        return task
    return Task(name, "regression")


def schema_yaml(schema: Schema) -> str:
    """The schema as YAML, leaving out fields at their defaults so it reads like a config."""
    defaults_f = Feature("x").__dict__
    defaults_t = Task("x").__dict__
    features: list[dict[str, Any]] = []
    for f in schema.features:
        d = {k: v for k, v in _plain(f).items() if k == "name" or v != _plain_value(defaults_f[k])}
        if f.kind == "numeric":
            d.pop("embedding_dim", None)
            d.pop("min_count", None)
        features.append(d)
    tasks: list[dict[str, Any]] = []
    for t in schema.tasks:
        default = Task("x", t.kind, num_classes=t.num_classes).__dict__
        tasks.append(
            {
                k: v
                for k, v in _plain(t).items()
                if k in ("name", "kind")
                or (k == "num_classes" and v is not None)  # a multiclass task cannot be built without it
                or v != _plain_value(default.get(k, defaults_t[k]))
            }
        )
    body: dict[str, Any] = {"features": features, "tasks": tasks}
    if schema.group:
        body["group"] = schema.group
    if schema.sample_weight:
        body["sample_weight"] = schema.sample_weight
    if schema.values:
        body["values"] = list(schema.values)
    return yaml.safe_dump({"schema": body}, sort_keys=False, default_flow_style=None).rstrip()


def _plain(obj: Feature | Task) -> dict[str, Any]:
    return {k: _plain_value(v) for k, v in obj.__dict__.items()}


def _plain_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
