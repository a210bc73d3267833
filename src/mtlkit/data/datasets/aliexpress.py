"""AliExpress multi-task data (search logs, Li et al. 2020, "Improving Multi-Scenario Learning to Rank in
E-commerce by Exploiting Task Relationships in the Label Space"), in the CSV layout of its public
preprocessed release: ``search_id``, ``categorical_1..16``, ``numerical_1..63``, labels ``click`` and
``conversion``.

Tasks ``click`` and ``conversion``. ``conversion="entire_space"`` keeps the conversion label on every
impression (what ESMM trains on); ``"clicked_only"`` masks it where click = 0, for CVR-only training.
``search_id`` is the group (grouped AUC, pairwise baselines), never an input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa

from mtlkit.data.datasets import Splits
from mtlkit.data.datasets.common import make_splits, mask_unless, read_parts
from mtlkit.data.paths import data_dir as resolve_data_dir
from mtlkit.errors import DataError
from mtlkit.schema import Feature, Schema, Task

Conversion = Literal["entire_space", "clicked_only"]


def _conversion_rule(conversion: str) -> None:
    if conversion not in ("entire_space", "clicked_only"):
        raise DataError(f"conversion must be 'entire_space' or 'clicked_only', got {conversion!r}")


def load_aliexpress(
    path: str | None = None,
    data_dir: str | None = None,
    conversion: Conversion = "entire_space",
    valid_fraction: float = 0.1,
    seed: int = 0,
    embedding_dim: int = 8,
) -> Splits:
    """AliExpress Splits from a folder of ``*train*`` / ``*test*`` (and optional ``*val*``) CSV files.

    Args:
        path: the folder; defaults to ``<data_dir>/aliexpress-sample`` (the 100 / 20 row sample).
        data_dir: root data folder (else ``MTLKIT_DATA_DIR``, else the user cache).
        valid_fraction: share of the train rows held out for validation when there is no valid file.
    """
    _conversion_rule(conversion)
    folder = Path(path) if path is not None else resolve_data_dir(data_dir) / "aliexpress-sample"

    def prepare(table: pa.Table) -> pa.Table:
        return mask_unless(table, "conversion", "click") if conversion == "clicked_only" else table

    parts, how = read_parts("aliexpress", folder, valid_fraction, seed, prepare)
    columns = parts["train"][0].column_names
    categorical = [c for c in columns if c.startswith("categorical_")]
    numeric = [c for c in columns if c.startswith("numerical_")]
    if not categorical and not numeric:
        raise DataError(
            f"aliexpress: the train file in {folder} has no categorical_* or numerical_* columns; "
            f"is it the AliExpress layout? columns: {columns[:10]}..."
        )
    schema = Schema(
        tuple(Feature(c, "categorical", embedding_dim=embedding_dim) for c in categorical)
        + tuple(Feature(c, "numeric") for c in numeric),
        (Task("click", "binary"), Task("conversion", "binary")),
        group="search_id" if "search_id" in columns else None,
    )
    note = f"AliExpress ({how}); conversion label: {conversion}"
    return make_splits("aliexpress", schema, parts, note)
