"""Turning one Arrow column into a NumPy array, with errors that name the file, column, row and value.

Every function here is vectorised over the column (Arrow compute or NumPy); Python only runs per row to
describe the first bad value once an error is certain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtlkit.errors import DataError, did_you_mean, listing


@dataclass(frozen=True)
class Origin:
    """Where a table came from, for error messages.

    Args:
        source: the file path, or a description such as ``"<DataFrame>"``.
        first_line: the file line of the first data row (2 for a CSV with a header), or None where lines
            mean nothing (Parquet, in-memory data).
        first_row: how many rows of the file come before the table (a part of a file read in pieces).
    """

    source: str = "<memory>"
    first_line: int | None = None
    first_row: int = 0

    def where(self, row: int) -> str:
        """``row 5 (line 6) of data.csv`` for a 0-based row of the table."""
        row += self.first_row
        line = f" (line {self.first_line + row})" if self.first_line is not None else ""
        return f"row {row + 1}{line} of {self.source}"

    def part(self, start: int, rows: int) -> Origin:
        """The origin of rows ``start`` .. ``start + rows - 1`` of this table; its source names the part
        (``data.csv (rows 1,000,001-2,000,000)``), so that counts in messages ("3 rows are affected") say what
        they count. A part that is the whole table keeps this origin (the caller knows)."""
        label = f"{self.source} (rows {self.first_row + start + 1:,}-{self.first_row + start + rows:,})"
        return Origin(label, self.first_line, self.first_row + start)


class GroupIds:
    """Numbers group values (query / user ids) in the order first seen, across every column given (the parts of
    one file), so a group whose rows fall into several parts is one group; a missing value gets -1."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        strings = to_strings(column)
        uniques = pc.drop_null(pc.unique(strings))
        known = [self.ids.setdefault(k, len(self.ids)) for k in uniques.to_pylist()]
        lookup = np.array([*known, -1], np.int64)  # a missing value indexes the -1 at the end
        index = pc.fill_null(pc.index_in(strings, value_set=uniques), len(uniques))
        return lookup[np.asarray(index.to_numpy(), dtype=np.int64)]


def require_columns(
    table: pa.Table | Sequence[str], needed: dict[str, str], origin: Origin, hint: str = ""
) -> None:
    """Fail with one message naming every missing column and who needs it.

    Args:
        table: the table, or just its column names (a file's header).
        needed: column -> who needs it (e.g. ``"feature 'age'"``).
        hint: appended advice (what to do).
    """
    present = list(table.column_names) if isinstance(table, pa.Table) else list(table)
    missing = [c for c in needed if c not in present]
    if not missing:
        return
    lines = [f"  - {c!r}, needed by {needed[c]}{did_you_mean(c, present)}" for c in missing]
    raise DataError(
        f"{origin.source} lacks {len(missing)} column(s):\n"
        + "\n".join(lines)
        + f"\nits columns are {listing(present, limit=30)}."
        + (f"\n{hint}" if hint else "")
    )


def _combine(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


#: What to do about a non-numeric value, by the role of the column.
ADVICE = {
    "feature": "or declare the feature categorical.",
    "label": "labels must be numbers (0 / 1 for a binary task, 0..K-1 for a multiclass one).",
    "weight": "sample weights must be numbers >= 0.",
    "value": "value columns (schema.values) must be numbers (blank for missing).",
}


def to_float(
    array: pa.Array | pa.ChunkedArray, column: str, origin: Origin, role: str = "feature"
) -> np.ndarray:
    """A float64 array with NaN for missing values; text that is not a number is an error.

    ``role`` (``feature``, ``label``, ``weight`` or ``value``) picks the advice the error gives.
    """
    advice = ADVICE[role]
    array = _combine(array)
    kind = array.type
    if pa.types.is_null(kind):
        return np.full(len(array), np.nan)
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.asarray(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        trimmed = pc.utf8_trim_whitespace(array)
        empty = pc.equal(trimmed, "")
        trimmed = pc.if_else(empty, pa.scalar(None, pa.string()), trimmed)
        try:
            return np.asarray(pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        values = trimmed.to_pylist()
        for row, value in enumerate(values):
            if value is None or _arrow_reads_as_float(value):
                continue
            raise DataError(
                f"column {column!r} should hold numbers but has the text {value!r} at "
                f"{origin.where(row)}. Fix or blank that value (blank = missing); {advice}"
            )
        raise DataError(
            f"column {column!r} of {origin.source} could not be read as numbers; check its values; {advice}"
        )
    raise DataError(
        f"column {column!r} of {origin.source} has type {kind}, which mtlkit cannot use as a number; "
        f"convert it to numbers; {advice}"
    )


def _arrow_reads_as_float(text: str) -> bool:
    """Whether Arrow casts ``text`` to a float: Python's ``float`` without the forms only Python accepts
    (``1_000``, non-ASCII digits)."""
    if not text.isascii() or "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def to_strings(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Category values as strings (null and NaN give null); integral floats print as integers (1.0 -> "1")."""
    array = _combine(array)
    kind = array.type
    if pa.types.is_string(kind):
        return array
    if pa.types.is_large_string(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_floating(kind):
        # NaN is a missing value, not a category: without this it would print as "nan", or as an arbitrary
        # integer once cast to int64 below.
        array = pc.if_else(pc.is_nan(array), pa.scalar(None, kind), array)
        values = array.to_numpy(zero_copy_only=False)
        finite = values[~np.isnan(values)]
        if np.all(finite == np.round(finite)) and (finite.size == 0 or np.abs(finite).max() < 2**53):
            array = pc.cast(array, pa.int64(), safe=False)
    return pc.cast(array, pa.string())


def check_labels(
    values: np.ndarray,
    *,
    task: str,
    kind: str,
    column: str,
    origin: Origin,
    num_classes: int | None = None,
) -> None:
    """Binary labels must be 0/1, multiclass 0..K-1 integers, regression finite; NaN means missing."""
    present = ~np.isnan(values)
    if kind == "binary":
        bad = present & (values != 0) & (values != 1)
        rule = "binary labels must be 0 or 1 (blank for missing)"
    elif kind == "multiclass":
        k = int(num_classes or 0)
        bad = present & ((values != np.round(values)) | (values < 0) | (values >= k))
        rule = f"multiclass labels must be whole numbers 0..{k - 1} (blank for missing)"
    else:
        bad = present & ~np.isfinite(values)
        rule = "regression labels must be finite numbers (blank for missing)"
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"task {task!r}: label column {column!r} has the value {values[row]:g} at "
            f"{origin.where(row)}; {rule}. {int(bad.sum())} row(s) are affected."
        )
