"""Sample weighting: one model on one label, "any of the chosen actions happened", with per-action weights.

The second solution of the seed document (样本权重): instead of one model per objective, fold the objectives into
one binary label and let sample weights say how much each kind of positive counts, e.g. conversion 1.0 and click
0.2 (a ratio like the click-to-conversion rate). The model's gradient on a row is scaled by its weight, so it
leans toward ranking the heavy positives (conversions) first while still learning from the light ones (clicks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mtlkit.data.datasets import Splits
from mtlkit.data.table import Table
from mtlkit.families.base import (
    Family,
    action_matrix,
    check_actions,
    derived_schema,
    positive_number,
    relabel,
    same_score,
)
from mtlkit.schema import Schema, Task

#: The derived task's name and its weight column (never read from a file: the Tables are built in memory).
TASK = "any"
WEIGHT_COLUMN = "action_weight"


class SampleWeighting(Family):
    """One binary model on ``any = max_a y_a`` over the chosen actions, each row weighted by its deepest action.

    Label: ``any_i = 1`` when at least one action of ``actions`` happened on row i (a NaN action label counts as
    not happened), ``0`` when none did, NaN (masked) when every action label is NaN.
    Weight: ``w_i = max{actions[a] : a happened on row i}`` for a positive row (the largest weight among its
    actions, e.g. 1.0 for a row with click and conversion under ``{conversion: 1.0, click: 0.2}``), and
    ``negative_weight`` for a negative row; times the data set's own sample weight when it has one. Taking the
    maximum needs no action order and equals "the deepest action decides" whenever deeper actions weigh more.

    The derived validation split carries the same weights, so early stopping watches the weighted metric of
    ``any`` (the quantity trained for). ``task_scores`` gives every original task the same score ``P(any)``, so
    each task's AUC (reported with the data set's own weights) measures how well the one score ranks that task;
    plus ``score``.

    Args:
        actions: task -> weight of a positive row whose heaviest action is that task (> 0), e.g.
            ``{"conversion": 1.0, "click": 0.2}``. Every task of the data set must be binary.
        negative_weight: weight of a row where no chosen action happened, > 0.
    """

    def __init__(
        self, schema: Schema, actions: dict[str, float] | None = None, negative_weight: float = 1.0
    ) -> None:
        super().__init__(schema)
        if actions is None:
            raise ValueError(
                "actions must map tasks to weights, e.g. {conversion: 1.0, click: 0.2}; got none"
            )
        if not isinstance(actions, Mapping):
            raise ValueError(
                f"actions must map tasks to weights, e.g. {{conversion: 1.0, click: 0.2}}, got {actions!r}"
            )
        check_actions("sample_weighting", schema, list(actions), "actions")
        weights = {name: positive_number(f"actions[{name!r}]", weight) for name, weight in actions.items()}
        self.negative_weight = positive_number("negative_weight", negative_weight)
        self.actions = weights
        self.training_schema = derived_schema(schema, Task(TASK, "binary"), sample_weight=WEIGHT_COLUMN)

    def __repr__(self) -> str:
        return f"SampleWeighting(actions={self.actions!r}, negative_weight={self.negative_weight!r})"

    def labels_and_weights(self, table: Table) -> tuple[Tensor, Tensor]:
        """(label [N], weight [N]) of the derived task on the rows of ``table`` (a Table of the data schema)."""
        names = list(self.actions)
        happened, known = action_matrix(table, self.schema, names)
        weight = torch.tensor([self.actions[a] for a in names], dtype=torch.float32, device=table.device)
        positive = happened.any(dim=1)
        label = torch.where(positive, 1.0, 0.0)
        label = torch.where(known.any(dim=1), label, torch.full_like(label, math.nan))
        best = torch.where(happened, weight, torch.zeros_like(weight)).amax(dim=1)
        w = torch.where(positive, best, torch.full_like(best, self.negative_weight))
        if table.weights is not None:
            w = w * table.weights
        return label, w

    def _relabel(self, table: Table) -> Table:
        label, weight = self.labels_and_weights(table)
        return relabel(table, self.training_schema, label.unsqueeze(1), weight)

    def training_splits(self, splits: Splits) -> Splits:
        rule = ", ".join(f"{a} {w:g}" for a, w in self.actions.items())
        note = (
            f"{splits.note}; family sample_weighting: one model on {TASK!r} = any of {list(self.actions)} "
            f"(weights: {rule}, negatives {self.negative_weight:g})"
        )
        return Splits(
            splits.name,
            self._relabel(splits.train),
            self._relabel(splits.valid),
            self._relabel(splits.test),
            note,
        )

    def task_scores(self, predictions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return same_score(self.schema, predictions[TASK])
