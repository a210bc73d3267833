"""Metrics of a run on a labelled file read in parts: ``mtlkit evaluate DIR --data FILE``.

:func:`evaluate_file` reads the columns the run needs ``chunk_rows`` rows at a time
(:func:`~mtlkit.data.readers.read_parts`), encodes each part with the run's encoders and adds its predictions to one
set of streaming metrics, so a test file larger than memory can be measured; the metrics equal those of the
whole file read at once (exact AUC keeps every score and label: 8 bytes per row and task). Group ids (for
``gauc``) are numbered across the whole file, so a group whose rows fall into several parts is one group.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mtlkit.data.columns import GroupIds
from mtlkit.data.readers import Parts, read_parts, schema_columns
from mtlkit.data.table import Table, no_rows_error
from mtlkit.metrics import TaskMetrics
from mtlkit.training.predict import DEFAULT_CHUNK_ROWS, check_chunk_rows
from mtlkit.training.run import new_family_metrics, update_family_metrics

if TYPE_CHECKING:
    from mtlkit.training.run import LoadedRun


def evaluate_file(
    run: LoadedRun, path: str | Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> dict[str, dict[str, float]]:
    """Metrics of the data set's own tasks on a labelled CSV / Parquet file, read ``chunk_rows`` rows at a time
    (the same numbers as ``run.evaluate(run.read(path, require_labels=True))``, in bounded memory)."""
    check_chunk_rows(chunk_rows)
    schema = run.data_schema
    wanted = schema_columns(path, schema, require_labels=True)

    def consume(parts: Parts) -> dict[str, dict[str, float]]:
        metrics: TaskMetrics | None = None
        groups = GroupIds()  # one numbering for the whole file
        for part in parts:
            table = Table.from_arrow(
                part.table, schema, encoders=run.encoders, origin=part.origin, group_ids=groups
            )
            metrics = metrics or new_family_metrics(run.trainer, run.family, table)
            update_family_metrics(metrics, run.trainer, run.family, table)
        if metrics is None:
            raise no_rows_error(parts.origin)
        return metrics.compute()

    return read_parts(path, chunk_rows, consume, columns=wanted)


__all__ = ["evaluate_file"]
