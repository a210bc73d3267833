"""Table: a data set held as whole-column tensors, with fast shuffled batches.

A Table keeps

* ``categorical``: int64 [N, C] vocabulary codes (0 = unknown / missing), one column per categorical feature,
* ``numeric``: float32 [N, F] filled and scaled values (``Schema.numeric_columns`` names each column),
* ``labels``: float32 [N, T] one column per task, NaN where a label is missing,
* ``weights``: optional float32 [N] sample weights, ``groups``: optional int64 [N] query / user ids,
* ``values``: optional float32 [N, V] raw value columns (``Schema.values``: price, ground truth, ...), never
  scaled and never a model input, NaN where missing,

plus its Schema (with vocabulary sizes filled in) and the fitted Encoders. ``batches`` slices a permuted index
with ``index_select``: no per-row Python and no collate function. With ``group_batches`` (pairwise learning to
rank) a shuffled epoch permutes whole groups and keeps each group's rows contiguous.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from mtlkit.data.columns import GroupIds, Origin, check_labels, require_columns, to_float, to_strings
from mtlkit.data.encoders import Encoders
from mtlkit.data.split import split_indices
from mtlkit.errors import DataError, SchemaError, did_you_mean, listing
from mtlkit.schema import Schema

#: What to do about a column the Schema needs and a file lacks.
COLUMN_HINT = (
    "Rename the column(s) in the file, or point the schema at the right ones (Feature.column / Task.label)."
)


def needed_columns(schema: Schema, require_labels: bool = True) -> dict[str, str]:
    """Every column ``schema`` reads, mapped to who needs it (``"feature 'age'"``), for error messages.

    Label, group, sample-weight and value columns are left out when ``require_labels`` is False: prediction
    files may lack them (those present are still read and checked).
    """
    needed = {f.source: f"feature {f.name!r}" for f in schema.features}
    if not require_labels:
        return needed
    for t in schema.tasks:
        needed.setdefault(t.column, f"the label of task {t.name!r}")
    for what in ("group", "sample_weight"):
        column = getattr(schema, what)
        if column is not None:
            needed.setdefault(column, f"the schema's {what}")
    for column in schema.values:
        needed.setdefault(column, "the schema's values")
    return needed


@dataclass(frozen=True)
class Batch:
    """One mini-batch: row slices of a Table's tensors (see :class:`Table` for shapes)."""

    categorical: Tensor
    numeric: Tensor
    labels: Tensor
    weights: Tensor | None = None
    groups: Tensor | None = None
    values: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            self.categorical.to(device, non_blocking=non_blocking),
            self.numeric.to(device, non_blocking=non_blocking),
            self.labels.to(device, non_blocking=non_blocking),
            move(self.weights),
            move(self.groups),
            move(self.values),
        )


def _batch(tensors: list[Tensor | None]) -> Batch:
    cat, num, lab, w, g, v = tensors
    if cat is None or num is None or lab is None:
        raise ValueError("a Batch always has categorical, numeric and label tensors")
    return Batch(cat, num, lab, w, g, v)


def no_rows_error(origin: Origin) -> DataError:
    """The error for a file (or table) without data rows."""
    return DataError(
        f"{origin.source} has no data rows: nothing to read. Check that it is the right file "
        f"and that it was written completely (a CSV needs rows below its header line)."
    )


class Table:
    """Column tensors of one data set with its Schema and Encoders.

    Build one with :meth:`from_arrow` (or a reader / dataset loader); the constructor checks shapes and types.

    Args:
        values: raw value columns, one per ``schema.values`` entry; None when the data lacks them
            (e.g. a prediction file).
        group_batches: shuffled :meth:`batches` keep each group's rows together (needs ``groups``); see
            :meth:`with_group_batches`.
    """

    def __init__(
        self,
        schema: Schema,
        categorical: Tensor,
        numeric: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        groups: Tensor | None = None,
        encoders: Encoders | None = None,
        values: Tensor | None = None,
        group_batches: bool = False,
    ) -> None:
        n = int(labels.shape[0])
        expected: dict[str, tuple[Tensor, torch.dtype, tuple[int, ...]]] = {
            "categorical": (categorical, torch.int64, (n, len(schema.categorical))),
            "numeric": (numeric, torch.float32, (n, len(schema.numeric_columns))),
            "labels": (labels, torch.float32, (n, len(schema.tasks))),
        }
        if weights is not None:
            expected["weights"] = (weights, torch.float32, (n,))
        if groups is not None:
            expected["groups"] = (groups, torch.int64, (n,))
        if values is not None:
            expected["values"] = (values, torch.float32, (n, len(schema.values)))
        for name, (tensor, dtype, shape) in expected.items():
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                raise ValueError(
                    f"Table.{name} must be {dtype} of shape {list(shape)}, "
                    f"got {tensor.dtype} of shape {list(tensor.shape)}"
                )
        devices = {t.device for t, _, _ in expected.values()}
        if len(devices) > 1:
            raise ValueError(f"Table tensors must share one device, got {sorted(map(str, devices))}")
        self.schema = schema
        self.categorical = categorical
        self.numeric = numeric
        self.labels = labels
        self.weights = weights
        self.groups = groups
        self.encoders = encoders
        self.values = values
        if group_batches and groups is None:
            raise ValueError(_NO_GROUPS)
        self.group_batches = bool(group_batches)
        # rows sorted by group, rows per group, start of each group in that order (built on first use)
        self._group_index: tuple[Tensor, Tensor, Tensor] | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_arrow(
        cls,
        table: pa.Table,
        schema: Schema,
        *,
        encoders: Encoders | None = None,
        origin: Origin | None = None,
        require_labels: bool = True,
        group_ids: GroupIds | None = None,
    ) -> Table:
        """Encode an Arrow table described by ``schema``.

        Args:
            encoders: fitted encoders to apply (validation / test / prediction data); fitted on ``table``
                when None (training data).
            origin: where the rows came from, for error messages.
            require_labels: when False (prediction), absent label columns give all-NaN labels.
            group_ids: numbers the group column across several tables (the parts of one file); by default the
                groups of this table are numbered 0, 1, ... in the order first seen.
        """
        origin = origin or Origin()
        if table.num_rows == 0:
            raise no_rows_error(origin)
        require_columns(table, needed_columns(schema, require_labels), origin, hint=COLUMN_HINT)
        if encoders is None:
            encoders = Encoders.fit(table, schema, origin)
        cat, num = encoders.encode(table, schema, origin)
        labels = np.full((table.num_rows, len(schema.tasks)), np.nan, dtype=np.float32)
        for j, t in enumerate(schema.tasks):
            if t.column not in table.column_names:
                continue
            values = to_float(table.column(t.column), t.column, origin, role="label")
            if require_labels and np.isnan(values).all():
                raise DataError(
                    f"task {t.name!r}: label column {t.column!r} of {origin.source} is empty "
                    f"(all {len(values)} values missing); fill it, or drop the task from the schema"
                )
            check_labels(
                values,
                task=t.name,
                kind=t.kind,
                column=t.column,
                origin=origin,
                num_classes=t.num_classes,
            )
            labels[:, j] = values
        weights = None
        if schema.sample_weight is not None and schema.sample_weight in table.column_names:
            w = to_float(table.column(schema.sample_weight), schema.sample_weight, origin, role="weight")
            bad = ~np.isfinite(w) | (w < 0)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"sample weight column {schema.sample_weight!r} has the value {w[row]:g} at "
                    f"{origin.where(row)}; weights must be finite and >= 0"
                )
            weights = torch.from_numpy(w.astype(np.float32))
        groups = None
        if schema.group is not None and schema.group in table.column_names:
            column = table.column(schema.group)
            if group_ids is not None:
                g = group_ids(column)
            else:
                codes = pc.dictionary_encode(to_strings(column)).indices
                g = np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False), np.int64)
            groups = torch.from_numpy(g)
        return cls(
            encoders.fitted_schema(schema),
            torch.from_numpy(cat),
            torch.from_numpy(num),
            torch.from_numpy(labels),
            weights,
            groups,
            encoders,
            values=_read_values(table, schema, origin),
        )

    @classmethod
    def from_pandas(
        cls,
        frame: Any,
        schema: Schema,
        *,
        encoders: Encoders | None = None,
        require_labels: bool = True,
    ) -> Table:
        """Encode a pandas DataFrame (see :meth:`from_arrow`)."""
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        return cls.from_arrow(
            arrow,
            schema,
            encoders=encoders,
            origin=Origin("<DataFrame>"),
            require_labels=require_labels,
        )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"Table(rows={len(self)}, categorical={len(self.schema.categorical)}, "
            f"numeric={self.numeric.shape[1]}, tasks={list(self.schema.task_names)}, "
            f"device={self.device})"
        )

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def label(self, task: str) -> Tensor:
        """The label column of one task ([N], NaN where missing)."""
        return self.labels[:, self.schema.task_names.index(self.schema.task(task).name)]

    def value(self, name: str) -> Tensor:
        """The raw value column ``name`` of ``Schema.values`` ([N] float32, NaN where missing)."""
        names = self.schema.values
        if name not in names:
            raise SchemaError(
                f"no value column {name!r}{did_you_mean(name, names)}; the schema's values are "
                f"{listing(names) if names else 'none (add them under schema.values)'}"
            )
        if self.values is None:
            raise DataError(
                f"this Table has no value columns (its data lacked {listing(names)}); read a file that "
                f"holds them to use {name!r}"
            )
        return self.values[:, names.index(name)]

    def with_group_batches(self, enabled: bool = True) -> Table:
        """The same Table (tensors shared, not copied) whose shuffled batches keep groups contiguous.

        For pairwise learning to rank: with ``enabled`` a shuffled epoch visits the groups in a seeded random
        order, each group's rows together and in their table order; a batch boundary may cut a group.
        Needs ``groups`` (``Schema.group``).
        """
        if enabled and self.groups is None:
            raise DataError(_NO_GROUPS)
        return self._with(self._tensors(), group_batches=enabled)

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
        return self.categorical, self.numeric, self.labels, self.weights, self.groups, self.values

    def _with(self, tensors: Sequence[Tensor | None], group_batches: bool | None = None) -> Table:
        cat, num, lab, w, g, v = tensors
        if cat is None or num is None or lab is None:
            raise ValueError("a Table always has categorical, numeric and label tensors")
        keep = self.group_batches if group_batches is None else group_batches
        return Table(self.schema, cat, num, lab, w, g, self.encoders, values=v, group_batches=keep)

    # ------------------------------------------------------------------ slicing
    def subset(self, index: Tensor | np.ndarray | Sequence[int]) -> Table:
        """The rows at ``index`` (integer positions, or a boolean mask of length N), in that order."""
        idx = torch.as_tensor(np.asarray(index) if not isinstance(index, Tensor) else index)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise IndexError(f"a boolean mask must have shape [{len(self)}], got {list(idx.shape)}")
            idx = idx.nonzero().flatten()
        elif idx.numel() == 0:
            idx = idx.to(torch.int64)
        elif idx.is_floating_point() or idx.dim() != 1:
            raise IndexError(f"subset takes a 1-D integer index or mask, got {idx.dtype} {list(idx.shape)}")
        idx = idx.to(device=self.device, dtype=torch.int64)
        outside = (idx < -len(self)) | (idx >= len(self))
        if bool(outside.any()):
            bad = int(idx[outside][0])
            raise IndexError(
                f"subset index {bad} is out of range for a Table of {len(self)} rows "
                f"(valid: {-len(self)}..{len(self) - 1})"
            )
        idx = torch.where(idx < 0, idx + len(self), idx)
        return self._with([None if t is None else t.index_select(0, idx) for t in self._tensors()])

    def split(self, fractions: Sequence[float], seed: int = 0) -> tuple[Table, ...]:
        """Random disjoint parts with the given fractions of the rows (which must sum to 1).

        Rows are permuted with ``numpy.random.default_rng(seed).permutation(N)``; part ``i`` takes the next
        ``floor(fractions[i] * N)`` rows of the permutation, the last part takes the rest. Each part keeps the
        original row order. The rule is ``mtlkit.data.split.split_indices``, which the data set loaders use too.
        """
        return tuple(self.subset(part) for part in split_indices(len(self), fractions, seed))

    def to(self, device: torch.device | str) -> Table:
        """The same Table with every tensor on ``device``."""
        return self._with([None if t is None else t.to(device) for t in self._tensors()])

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """Mini-batches covering every row once.

        With ``shuffle`` the order is ``torch.randperm(N)`` from a generator seeded with ``seed`` (pass
        ``seed + epoch`` for a new order each epoch); without, batches are contiguous views (no copy).
        With ``group_batches`` a shuffled order is instead a seeded permutation of the groups, each group's
        rows contiguous and in table order (see :meth:`group_order`); unshuffled batches are unchanged.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        n = len(self)
        stop = n - n % batch_size if drop_last else n
        tensors = self._tensors()
        if not shuffle:
            for start in range(0, stop, batch_size):
                yield _batch([None if t is None else t[start : start + batch_size] for t in tensors])
            return
        if self.group_batches:
            order = self.group_order(seed).to(self.device)
        else:
            generator = torch.Generator().manual_seed(seed)
            order = torch.randperm(n, generator=generator).to(self.device)
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield _batch([None if t is None else t.index_select(0, idx) for t in tensors])

    def group_order(self, seed: int = 0) -> Tensor:
        """Row order with the groups in a random order (seeded) and each group's rows together, in table order.

        The groups are visited in the order ``torch.randperm(G)`` of a generator seeded with ``seed`` (group
        ``k`` is the k-th smallest id). Vectorised: the rows are stable-sorted by group once (cached), and each
        epoch gathers the groups' segments in the permuted order with ``repeat_interleave``. Rows whose group
        is missing (code -1) form one group.
        """
        if self.groups is None:
            raise DataError(_NO_GROUPS)
        if self._group_index is None:
            _, inverse = torch.unique(self.groups.cpu(), return_inverse=True)
            by_group = torch.argsort(inverse, stable=True)
            counts = torch.bincount(inverse)
            self._group_index = (by_group, counts, torch.cumsum(counts, 0) - counts)
        by_group, counts, starts = self._group_index
        generator = torch.Generator().manual_seed(seed)
        visit = torch.randperm(int(counts.numel()), generator=generator)
        sizes = counts[visit]
        shift = starts[visit] - (torch.cumsum(sizes, 0) - sizes)  # segment start in by_group - start in order
        return by_group[torch.repeat_interleave(shift, sizes) + torch.arange(len(self))]

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """Rows, features and per-task label statistics (rate, missing count), as plain data."""
        features: list[dict[str, Any]] = []
        for f in self.schema.features:
            entry: dict[str, Any] = {"name": f.name, "kind": f.kind, "column": f.source}
            if f.kind == "categorical":
                col = self.categorical[:, self.schema.categorical.index(f)]
                entry["vocab_size"] = f.vocab_size
                entry["unknown_rate"] = float((col == 0).float().mean()) if len(self) else 0.0
            if f.towers:
                entry["towers"] = list(f.towers)
            features.append(entry)
        tasks: list[dict[str, Any]] = []
        for j, t in enumerate(self.schema.tasks):
            y = self.labels[:, j]
            present = ~torch.isnan(y)
            known = y[present].double()
            entry = {
                "name": t.name,
                "kind": t.kind,
                "label": t.column,
                "labelled": int(present.sum()),
                "missing": int((~present).sum()),
            }
            if t.kind == "binary":
                entry["positive_rate"] = float(known.mean()) if known.numel() else float("nan")
            elif t.kind == "regression":
                entry["mean"] = float(known.mean()) if known.numel() else float("nan")
                entry["std"] = float(known.std()) if known.numel() > 1 else float("nan")
            else:
                counts = torch.bincount(known.long(), minlength=t.num_classes or 0)
                entry["class_counts"] = counts.tolist()
            tasks.append(entry)
        return {
            "rows": len(self),
            "categorical_columns": len(self.schema.categorical),
            "numeric_columns": int(self.numeric.shape[1]),
            "features": features,
            "tasks": tasks,
            "groups": int(self.groups.unique().numel()) if self.groups is not None else None,
            "sample_weight": self.schema.sample_weight,
            "values": self._describe_values(),
        }

    def _describe_values(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for j, name in enumerate(self.schema.values):
            entry: dict[str, Any] = {"name": name}
            if self.values is None:
                entry["present"] = False
            else:
                col = self.values[:, j].double()
                known = col[~torch.isnan(col)]
                entry["missing"] = int(col.numel() - known.numel())
                entry["mean"] = float(known.mean()) if known.numel() else float("nan")
            out.append(entry)
        return out


_NO_GROUPS = (
    "group-contiguous batches need group ids, and this Table has none: set schema.group to the query / user "
    "/ request id column"
)


def _read_values(table: pa.Table, schema: Schema, origin: Origin) -> Tensor | None:
    """The raw value columns as float32 [N, V]; NaN for absent columns, None when all are absent."""
    if not schema.values:
        return None
    present = [c for c in schema.values if c in table.column_names]
    if not present:
        return None
    out = np.full((table.num_rows, len(schema.values)), np.nan, dtype=np.float32)
    for j, column in enumerate(schema.values):
        if column in table.column_names:
            out[:, j] = to_float(table.column(column), column, origin, role="value")
    return torch.from_numpy(out)
