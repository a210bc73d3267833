"""Batch prediction of a file: every row of a CSV / Parquet file written out again with its predictions.

:func:`predict_file` reads the input in parts of ``chunk_rows`` rows (:func:`~mtlkit.data.readers.read_parts`)
and encodes, predicts and writes one part at a time (the output grows part by part, through
:class:`~mtlkit.data.readers.TableWriter`), so only one part's rows, encoded tensors and predictions are in
memory: a file larger than memory can be predicted. Encoding and prediction are row by row (fitted encoders,
the model in eval mode), so the output does not depend on ``chunk_rows``. ``mtlkit predict`` calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mtlkit.data.columns import Origin, require_columns
from mtlkit.data.readers import Parts, TableWriter, available_columns, read_parts
from mtlkit.data.table import COLUMN_HINT, Table, needed_columns, no_rows_error
from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.fusion import Fusion, require_value_columns, value_columns_from_arrow

if TYPE_CHECKING:
    from torch import Tensor

    from mtlkit.training.run import LoadedRun

#: Rows encoded and predicted at a time by default (about 100 MB of tensors per 25 encoded columns).
DEFAULT_CHUNK_ROWS = 1_000_000


@dataclass(frozen=True)
class PredictedFile:
    """What :func:`predict_file` wrote: the number of rows, the columns it added, and in how many parts."""

    path: Path
    rows: int
    columns: list[str]
    parts: int


def prediction_columns(predictions: dict[str, Tensor]) -> dict[str, Any]:
    """The output columns of a run's predictions: ``pred_<task>``, or ``pred_<task>_<k>`` per class of a
    multiclass task, as numpy arrays."""
    columns: dict[str, Any] = {}
    for name, values in predictions.items():
        if values.dim() == 1:
            columns[f"pred_{name}"] = values.numpy()
        else:  # multiclass: one probability column per class
            columns.update({f"pred_{name}_{k}": values[:, k].numpy() for k in range(values.shape[1])})
    return columns


def predict_file(
    run: LoadedRun,
    source: str | Path,
    output: str | Path,
    *,
    fusion: Fusion | None = None,
    fusion_source: str = "the fusion",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_part: Callable[[int], None] | None = None,
    keep: Sequence[str] | None = None,
) -> PredictedFile:
    """Write every row of ``source`` to ``output`` (CSV or Parquet, by the name; replaced if it exists) with the
    run's predictions appended, and the fused ``score`` when ``fusion`` is given (its value columns are read from
    ``source``; ``fusion_source`` names it in messages). ``on_part(rows)`` is called after each part is written,
    with the rows written so far (for a progress display; back to the first part's rows if a CSV read restarts).
    ``keep`` names the input columns written out (in that order, before the predictions; e.g. only the ids), and
    only those and the columns the run and the fusion read are read; None writes every input column.

    Only one part of ``chunk_rows`` rows is in memory at a time. Checked before anything is written: the
    feature columns the run needs, the fusion's value columns over all rows (a first pass reading only them),
    and that the input has none of the columns predict adds. A bad value found while a part is encoded names its
    row in the file; the output is then left as it was. A CSV column that holds numbers in its first block and
    text further down makes the prediction start again with that column as text (see
    :func:`~mtlkit.data.readers.read_parts`).
    """
    check_chunk_rows(chunk_rows)
    if isinstance(keep, str):
        raise MtlkitError(f"keep must be a list of column names, got the string {keep!r}")
    name = str(source)
    schema = run.data_schema
    features = needed_columns(schema, require_labels=False)
    value_columns = list(fusion.value_columns) if fusion is not None else []
    kept = list(dict.fromkeys(keep)) if keep is not None else None
    header = available_columns(source)
    require_columns(header, {c: "keep" for c in kept or ()} | features, Origin(name), hint=COLUMN_HINT)
    require_value_columns(header, value_columns, name)
    if fusion is not None and value_columns:  # every row's values, before anything is predicted

        def check(parts: Parts) -> None:
            for part in parts:
                values = value_columns_from_arrow(part.table, fusion.value_columns, name)
                fusion.check_values(values, name, part.origin)

        read_parts(source, chunk_rows, check, columns=value_columns)

    def predict(parts: Parts) -> PredictedFile:
        added: list[str] = []
        rows = count = 0
        with TableWriter(output) as writer:
            for part in parts:
                table = Table.from_arrow(
                    part.table, schema, encoders=run.encoders, origin=part.origin, require_labels=False
                )
                predictions = run.task_scores(table)
                columns = prediction_columns(predictions)
                if fusion is not None:
                    if not added:
                        _check_fusion_tasks(fusion, predictions, fusion_source)
                    values = value_columns_from_arrow(part.table, fusion.value_columns, name)
                    columns["score"] = fusion(predictions, values).numpy()
                if not added:
                    added = list(columns)
                    out_columns = kept if kept is not None else parts.schema.names
                    _check_free(out_columns, added, name, fusion is not None, kept is not None)
                written = part.table if kept is None else part.table.select(kept)
                for column, array in columns.items():
                    written = written.append_column(column, pa.array(array))
                writer.write(written)
                rows, count = rows + part.table.num_rows, count + 1
                if on_part is not None:
                    on_part(rows)
            if count == 0:
                raise no_rows_error(parts.origin)
        return PredictedFile(Path(output), rows, added, count)

    # with keep, only the kept columns, the features and the fusion's values are read
    reads = None if kept is None else list(dict.fromkeys([*kept, *features, *value_columns]))
    return read_parts(source, chunk_rows, predict, columns=reads)


def check_chunk_rows(chunk_rows: int) -> None:
    """An error for a ``chunk_rows`` that is not an integer >= 1."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise MtlkitError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")


def _check_fusion_tasks(fusion: Fusion, predictions: dict[str, Tensor], fusion_source: str) -> None:
    missing = [t for t in fusion.tasks if t not in predictions]
    if missing:
        raise MtlkitError(
            f"{fusion_source} fuses task {missing[0]!r}, which the run does not predict"
            f"{did_you_mean(missing[0], predictions)}; it predicts {listing(predictions)}"
        )


def _check_free(written: list[str], added: list[str], source: str, fused: bool, kept: bool) -> None:
    taken = [c for c in added if c in written]
    if taken:
        raise MtlkitError(
            f"{source} already has the column(s) {listing(taken)}, which predict adds (the predictions"
            f"{' and the fused score' if fused else ''}); rename or drop them in the file"
            + (", or leave them out of keep" if kept else "")
        )


__all__ = ["DEFAULT_CHUNK_ROWS", "PredictedFile", "predict_file", "prediction_columns"]
