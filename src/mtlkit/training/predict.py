"""Batch prediction of a file: every row of a CSV / Parquet file written out again with its predictions.

:func:`predict_file` reads the input once into Arrow, then encodes, predicts and writes it in parts of
``chunk_rows`` rows (the output grows part by part, through :class:`~mtlkit.data.readers.TableWriter`), so the
encoded tensors and predictions of only one part are in memory at a time, next to the file's Arrow columns.
Encoding and prediction are row by row (fitted encoders, the model in eval mode), so the output does not depend
on ``chunk_rows``. ``mtlkit predict`` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mtlkit.data.columns import require_columns
from mtlkit.data.readers import TableWriter, read_arrow
from mtlkit.data.table import COLUMN_HINT, Table, needed_columns
from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.fusion import Fusion, value_columns_from_arrow

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
) -> PredictedFile:
    """Write every row of ``source`` to ``output`` (CSV or Parquet, by the name; replaced if it exists) with the
    run's predictions appended, and the fused ``score`` when ``fusion`` is given (its value columns are read from
    ``source``; ``fusion_source`` names it in messages).

    The file is checked before anything is written: the feature columns the run needs, the fusion's value
    columns over all rows, and that the input has none of the columns predict adds. A bad value found while a
    part is encoded names its row in the file; the output is then left as it was.
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise MtlkitError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
    name = str(source)
    raw, origin = read_arrow(source)
    schema = run.data_schema
    if raw.num_rows == 0:  # the Table's own message for a file without rows
        Table.from_arrow(raw, schema, encoders=run.encoders, origin=origin, require_labels=False)
    require_columns(raw, needed_columns(schema, require_labels=False), origin, hint=COLUMN_HINT)
    values: dict[str, Tensor] = {}
    if fusion is not None:
        values = value_columns_from_arrow(raw, fusion.value_columns, name)
        fusion.check_values(values, name)
    added: list[str] = []
    parts = 0
    with TableWriter(output) as writer:
        for start in range(0, raw.num_rows, chunk_rows):
            part = raw.slice(start, chunk_rows)
            table = Table.from_arrow(
                part,
                schema,
                encoders=run.encoders,
                origin=origin.part(start, part.num_rows, raw.num_rows),
                require_labels=False,
            )
            predictions = run.task_scores(table)
            columns = prediction_columns(predictions)
            if fusion is not None:
                if not added:
                    _check_fusion_tasks(fusion, predictions, fusion_source)
                rows = {c: v[start : start + part.num_rows] for c, v in values.items()}
                columns["score"] = fusion(predictions, rows).numpy()
            if not added:
                added = list(columns)
                _check_free(raw, added, name, fusion is not None)
            for column, array in columns.items():
                part = part.append_column(column, pa.array(array))
            writer.write(part)
            parts += 1
    return PredictedFile(Path(output), raw.num_rows, added, parts)


def _check_fusion_tasks(fusion: Fusion, predictions: dict[str, Tensor], fusion_source: str) -> None:
    missing = [t for t in fusion.tasks if t not in predictions]
    if missing:
        raise MtlkitError(
            f"{fusion_source} fuses task {missing[0]!r}, which the run does not predict"
            f"{did_you_mean(missing[0], predictions)}; it predicts {listing(predictions)}"
        )


def _check_free(raw: pa.Table, added: list[str], source: str, fused: bool) -> None:
    taken = [c for c in added if c in raw.column_names]
    if taken:
        raise MtlkitError(
            f"{source} already has the column(s) {listing(taken)}, which predict adds (the predictions"
            f"{' and the fused score' if fused else ''}); rename or drop them in the file"
        )


__all__ = ["DEFAULT_CHUNK_ROWS", "PredictedFile", "predict_file", "prediction_columns"]
