"""Ali-CCP (Alibaba Click and Conversion Prediction), the data of ESMM (Ma et al., SIGIR 2018), in the CSV
layout of its public preprocessed release: labels ``click`` and ``purchase``, categorical fields named by
their field id (``101``, ``121``, ..., ``109_14``, ...), dense fields prefixed ``D`` (``D109_14``, ...).

Tasks ``click`` and ``purchase``. ``purchase="entire_space"`` keeps the purchase label on every impression
(ESMM's pCTCVR target); ``"clicked_only"`` masks it where click = 0 (CVR trained on clicked rows only).

The release has no query or request id. ``group="101"`` (field 101 is the user id) makes the user the group
(grouped AUC, pairwise learning to rank within a user's impressions); a group column is never an input, so the
field is then left out of the features.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mtlkit.data.datasets import Splits
from mtlkit.data.datasets.aliexpress import Conversion, _conversion_rule
from mtlkit.data.datasets.common import make_splits, mask_unless, read_parts
from mtlkit.data.paths import data_dir as resolve_data_dir
from mtlkit.errors import DataError, did_you_mean, listing
from mtlkit.schema import Feature, Schema, Task

LABELS = ("click", "purchase")


def load_ali_ccp(
    path: str | None = None,
    data_dir: str | None = None,
    purchase: Conversion = "entire_space",
    valid_fraction: float = 0.1,
    seed: int = 0,
    embedding_dim: int = 8,
    group: str | None = None,
) -> Splits:
    """Ali-CCP Splits from a folder of ``*train*`` / ``*val*`` / ``*test*`` CSV files.

    Args:
        path: the folder; defaults to ``<data_dir>/ali-ccp-sample`` (the 100 / 50 / 50 row sample).
        data_dir: root data folder (else ``MTLKIT_DATA_DIR``, else the user cache).
        valid_fraction: share of the train rows held out for validation when there is no valid file.
        group: a field to use as the group (query / user id) instead of as a feature, e.g. ``"101"`` (the user
            id); default none.
    """
    _conversion_rule(purchase)
    folder = Path(path) if path is not None else resolve_data_dir(data_dir) / "ali-ccp-sample"

    def prepare(table: pa.Table) -> pa.Table:
        return mask_unless(table, "purchase", "click") if purchase == "clicked_only" else table

    parts, how = read_parts("ali_ccp", folder, valid_fraction, seed, prepare)
    names = parts["train"][0].column_names
    if not set(LABELS) <= set(names):
        raise DataError(
            f"ali_ccp: the train file in {folder} lacks the label columns {list(LABELS)}; "
            f"is it the Ali-CCP layout?"
        )
    if group is not None and (group not in names or group in LABELS):
        fields = [c for c in names if c not in LABELS]
        raise DataError(
            f"ali_ccp: group {group!r} is not a field of the train file in {folder}{did_you_mean(str(group), fields)}; "
            f"give a field id such as '101' (the user id); fields: {listing(fields)}"
        )
    columns = [c for c in names if c not in LABELS and c != group]
    schema = Schema(
        tuple(
            Feature(c, "numeric")
            if c.startswith("D")
            else Feature(c, "categorical", embedding_dim=embedding_dim)
            for c in columns
        ),
        (Task("click", "binary"), Task("purchase", "binary")),
        group=group,
    )
    note = f"Ali-CCP ({how}); purchase label: {purchase}" + (
        f"; group {group!r} (not an input)" if group is not None else ""
    )
    return make_splits("ali_ccp", schema, parts, note)
