"""Pairwise learning to rank over pairs built from an action order (RankNet's pairwise logistic loss).

The third solution of the seed document (排序学习): a ranking needs only the relative order of items, so build
pairs from the objectives, e.g. "a purchased item ranks above a clicked one, which ranks above one only shown",
within one query / user / request, and train one model to order every pair (Burges et al. 2005, "Learning to
Rank using Gradient Descent"). One model serves every objective; the seed's caveats hold: a group with many
actions yields many pairs and weighs more, and orders absent from the training pairs are not learnt.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mtlkit.data.datasets import Splits
from mtlkit.data.table import Table
from mtlkit.errors import MtlkitError
from mtlkit.families.base import Family, action_matrix, check_actions, derived_schema, relabel, same_score
from mtlkit.losses import LossSet, PairwiseLogistic
from mtlkit.schema import Schema, Task

log = logging.getLogger(__name__)


def ranked_groups(grades: Tensor, groups: Tensor | None) -> int:
    """How many groups hold at least two different (known) grades, i.e. yield at least one pair."""
    if groups is None or grades.numel() == 0:
        return 0
    known = ~torch.isnan(grades)
    g, y = groups[known], grades[known]
    if g.numel() == 0:
        return 0
    ids, index = torch.unique(g, return_inverse=True)
    low = torch.full((ids.numel(),), math.inf).scatter_reduce(0, index, y, "amin")
    high = torch.full((ids.numel(),), -math.inf).scatter_reduce(0, index, y, "amax")
    return int((high > low).sum())


#: The derived task: its label is the grade, its binary metrics read grade > 0.5 (any action) as positive.
TASK = "relevance"


class PairwiseLTR(Family):
    """One model trained with the pairwise logistic loss on grades from an action order, pairs within groups.

    Grade: with ``order = [a_1, ..., a_K]`` (most valuable first), ``grade_i = K + 1 - k`` for the first
    ``a_k`` in the order that happened on row i, 0 when none did (a NaN action label counts as not happened;
    a row whose action labels are all NaN has no grade and takes part in no pair). ``[conversion, click]``:
    2 for a conversion, 1 for a click only, 0 for an impression.

    Loss (RankNet): ``L = mean over pairs (i, j), same group, grade_i > grade_j, of
    log(1 + exp(-sigma (s_i - s_j)))``; equal grades make no pair. Pairs are formed within each training batch;
    batches keep a group's rows together (``Table.with_group_batches``), so only a group cut by a batch
    boundary loses the pairs across the cut. Needs the data set's group column (``Schema.group``).

    The derived task is binary-typed with the grade as its label, so its validation metrics (early stopping)
    count grade > 0 (any action) as positive: ``auc``, and ``gauc`` per group. ``task_scores`` gives every
    original task the same score, plus ``score``.

    Args:
        order: binary tasks from most to least valuable, e.g. ``["conversion", "click"]``.
        sigma: slope of the pairwise logistic, > 0.
    """

    def __init__(self, schema: Schema, order: Sequence[str] | None = None, sigma: float = 1.0) -> None:
        super().__init__(schema)
        if order is None or isinstance(order, str) or not isinstance(order, Sequence):
            raise ValueError(
                f"order must list the action tasks from most to least valuable, e.g. [conversion, click], "
                f"got {order!r}"
            )
        check_actions("pairwise_ltr", schema, list(order), "order")
        if schema.group is None:
            raise MtlkitError(
                "family 'pairwise_ltr' builds pairs within a query / user / request, but the data set has no "
                "group column (Schema.group): with files, set data.schema.group to that id column; otherwise use "
                "a data set that has one (e.g. funnel, aliexpress)"
            )
        self.order = list(order)
        self.loss = PairwiseLogistic(sigma)  # validates sigma
        self.sigma = self.loss.sigma
        self.training_schema = derived_schema(schema, Task(TASK, "binary"))

    def __repr__(self) -> str:
        return f"PairwiseLTR(order={self.order!r}, sigma={self.sigma!r})"

    def grades(self, table: Table) -> Tensor:
        """The grade [N] of every row of ``table`` (a Table of the data schema); NaN when nothing is known."""
        happened, known = action_matrix(table, self.schema, self.order)
        k = len(self.order)
        values = torch.arange(k, 0, -1, dtype=torch.float32, device=table.device)  # K, K-1, ..., 1
        grade = torch.where(happened, values, torch.zeros_like(values)).amax(dim=1)
        return torch.where(known.any(dim=1), grade, torch.full_like(grade, math.nan))

    def _relabel(self, table: Table, group_batches: bool) -> Table:
        if table.groups is None:
            raise MtlkitError(
                f"family 'pairwise_ltr': the data has no group ids (column {self.schema.group!r} missing); "
                f"pairs are built within groups, so every part needs that column"
            )
        return relabel(
            table, self.training_schema, self.grades(table).unsqueeze(1), table.weights, group_batches
        )

    def training_splits(self, splits: Splits) -> Splits:
        order = " > ".join([*self.order, "none"])
        note = (
            f"{splits.note}; family pairwise_ltr: RankNet pairs within {self.schema.group!r} groups by the "
            f"order {order} (grades {len(self.order)}..0), sigma {self.sigma:g}"
        )
        train = self._relabel(splits.train, group_batches=True)
        ranked = ranked_groups(train.labels[:, 0], train.groups)
        if ranked == 0:
            warning = (
                f"no {self.schema.group!r} group of the training data holds two different grades: there are no "
                f"pairs, the loss is 0 and the model does not learn (choose another group column or order)"
            )
            log.warning("family pairwise_ltr: %s", warning)
            note += f"; WARNING: {warning}"
        return Splits(
            splits.name,
            train,
            self._relabel(splits.valid, group_batches=False),
            self._relabel(splits.test, group_batches=False),
            note,
        )

    def losses(self, schema: Schema, params: Mapping[str, Mapping[str, Any]] | None = None) -> LossSet:
        return LossSet(schema, params, overrides={TASK: self.loss})

    def task_scores(self, predictions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return same_score(self.schema, predictions[TASK])
