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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mtlkit.data.columns import Origin, require_columns, to_strings
from mtlkit.data.readers import Parts, available_columns, read_parts
from mtlkit.data.table import COLUMN_HINT, Table, needed_columns
from mtlkit.families.base import update_task_metrics
from mtlkit.metrics import TaskMetrics
from mtlkit.training.predict import DEFAULT_CHUNK_ROWS

if TYPE_CHECKING:
    from mtlkit.training.run import LoadedRun


class GroupIds:
    """Numbers group values (query / user ids) in the order first seen, across every part given; null -> -1."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, column: pa.Array | pa.ChunkedArray) -> torch.Tensor:
        strings = to_strings(column)
        uniques = pc.drop_null(pc.unique(strings))
        lookup = np.array(
            [self.ids.setdefault(k, len(self.ids)) for k in uniques.to_pylist()] + [-1], np.int64
        )
        index = pc.fill_null(pc.index_in(strings, value_set=uniques), len(uniques))  # null: the -1 at the end
        return torch.from_numpy(lookup[np.asarray(index.to_numpy(), dtype=np.int64)])


def evaluate_file(
    run: LoadedRun, path: str | Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> dict[str, dict[str, float]]:
    """Metrics of the data set's own tasks on a labelled CSV / Parquet file, read ``chunk_rows`` rows at a time
    (the same numbers as ``run.evaluate(run.read(path, require_labels=True))``, in bounded memory)."""
    schema = run.data_schema
    header = available_columns(path)
    needed = needed_columns(schema, require_labels=True)
    require_columns(
        pa.table({c: pa.array([], pa.null()) for c in header}), needed, Origin(str(path)), hint=COLUMN_HINT
    )
    wanted = [c for c in schema.source_columns if c in needed or c in header]
    grouped = schema.group is not None

    def consume(parts: Parts) -> dict[str, dict[str, float]]:
        metrics: TaskMetrics | None = None
        groups = GroupIds()
        for part in parts:
            table = Table.from_arrow(
                part.table, schema, encoders=run.encoders, origin=part.origin, require_labels=True
            )
            if grouped:
                assert schema.group is not None
                table = Table(
                    table.schema,
                    table.categorical,
                    table.numeric,
                    table.labels,
                    table.weights,
                    groups(part.table.column(schema.group)),
                    table.encoders,
                    values=table.values,
                )
            own_tasks = table.schema == run.trainer.schema  # as family_metrics decides (mtl, multi_model)
            if metrics is None:
                metrics = TaskMetrics(
                    run.trainer.schema if own_tasks else run.family.schema, has_groups=grouped
                )
            if own_tasks:
                run.trainer.update_metrics(metrics, table)
            else:
                update_task_metrics(metrics, run.family.schema, run.task_scores(table), table)
        if metrics is None:  # the Table's own message for a file without rows
            Table.from_arrow(parts.schema.empty_table(), schema, encoders=run.encoders, origin=parts.origin)
            raise AssertionError("unreachable: a file without rows is an error")
        return metrics.compute()

    return read_parts(path, chunk_rows, consume, columns=wanted)


__all__ = ["GroupIds", "evaluate_file"]
