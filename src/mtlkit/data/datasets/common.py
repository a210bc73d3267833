"""Pieces every data set loader shares: fitting encoders on train and encoding all parts alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mtlkit.data.columns import Origin
from mtlkit.data.datasets import Splits
from mtlkit.data.readers import read_arrow
from mtlkit.data.split import split_indices
from mtlkit.data.table import Table
from mtlkit.errors import DataError
from mtlkit.schema import Schema


def make_splits(
    name: str,
    schema: Schema,
    parts: dict[str, tuple[pa.Table, Origin]],
    note: str,
) -> Splits:
    """Encode train / valid / test Arrow tables with encoders fitted on train only."""
    train_arrow, train_origin = parts["train"]
    train = Table.from_arrow(train_arrow, schema, origin=train_origin)
    encoded = {"train": train}
    for part in ("valid", "test"):
        arrow, origin = parts[part]
        encoded[part] = Table.from_arrow(arrow, schema, encoders=train.encoders, origin=origin)
    return Splits(name, encoded["train"], encoded["valid"], encoded["test"], note)


def find_part_files(folder: Path, dataset: str) -> dict[str, Path]:
    """CSV / Parquet files of a folder by part: names containing ``train``, ``val`` and ``test``.

    Exactly one file may match each part; ``train`` and ``test`` are required, ``val`` is optional.
    """
    if not folder.is_dir():
        raise DataError(
            f"{dataset}: {folder} is not a folder; give the folder that holds its train / test files "
            f"(path=...), or point --data-dir / MTLKIT_DATA_DIR at the data root"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_DATA_SUFFIXES))
    found: dict[str, Path] = {}
    for part, key in (("train", "train"), ("valid", "val"), ("test", "test")):
        matches = [p for p in files if key in p.name.lower()]
        if len(matches) > 1:
            raise DataError(
                f"{dataset}: several files in {folder} look like the {part} part: "
                f"{[m.name for m in matches]}; keep one"
            )
        if matches:
            found[part] = matches[0]
    missing = [part for part in ("train", "test") if part not in found]
    if missing:
        raise DataError(
            f"{dataset}: {folder} has no {' and no '.join(missing)} file (a CSV or Parquet file whose name "
            f"contains {' / '.join(missing)}); files there: {[p.name for p in files]}"
        )
    return found


def mask_unless(table: pa.Table, label: str, condition: str) -> pa.Table:
    """``label`` set to missing wherever ``condition`` is not 1 (e.g. conversion only on clicked rows)."""
    cond = pc.equal(pc.cast(table.column(condition), pa.float64()), 1.0)
    masked = pc.if_else(cond, pc.cast(table.column(label), pa.float64()), pa.scalar(None, pa.float64()))
    return table.set_column(table.column_names.index(label), label, masked)


def read_parts(
    dataset: str,
    folder: Path,
    valid_fraction: float,
    seed: int,
    prepare: Callable[[pa.Table], pa.Table],
) -> tuple[dict[str, tuple[pa.Table, Origin]], str]:
    """Read a folder's train / (valid) / test files; without a valid file, carve it out of train.

    Returns the parts (each passed through ``prepare``) and a sentence on how they were made.
    """
    files = find_part_files(folder, dataset)
    parts = {part: read_arrow(path) for part, path in files.items()}
    if "valid" in parts:
        how = f"train / valid / test files of {folder}"
    else:
        if not 0 < valid_fraction < 1:
            raise DataError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
        train, origin = parts["train"]
        keep, held = split_indices(train.num_rows, (1 - valid_fraction, valid_fraction), seed)
        carved = Origin(f"{origin.source} (permuted rows)")
        parts["train"] = (train.take(pa.array(keep)), carved)
        parts["valid"] = (train.take(pa.array(held)), carved)
        how = (
            f"train / test files of {folder}; valid = {valid_fraction:.0%} of the train rows "
            f"(numpy.random.default_rng({seed}) permutation)"
        )
    return {part: (prepare(t), o) for part, (t, o) in parts.items()}, how


_DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
