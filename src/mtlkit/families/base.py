"""The Family contract, and ``MTL``: the identity family (train the configured multi-task model on the tasks)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from mtlkit.data.datasets import Splits
from mtlkit.schema import Schema


class Family:
    """How a problem with the tasks of ``schema`` is trained and scored.

    Args:
        schema: the data set's own Schema (the tasks every family is judged on).

    A family transforms the data set's Splits into the Splits its model trains on (:meth:`training_splits`;
    the identity for ``mtl``) and maps that model's predictions back to one score per original task
    (:meth:`task_scores`), so that the per-task metrics of every family are computed the same way.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def training_splits(self, splits: Splits) -> Splits:
        """The Splits the model is trained and early-stopped on."""
        return splits

    def task_scores(self, predictions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """One score per task of ``self.schema`` (plus any extra outputs) from the trained model's predictions
        (``Trainer.predict`` on a Table of the training schema)."""
        return dict(predictions)


class MTL(Family):
    """Multi-task learning: the configured model on the data set's tasks, unchanged (the default family)."""
