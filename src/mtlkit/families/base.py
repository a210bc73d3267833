"""The Family contract, and ``MTL``: the identity family (train the configured multi-task model on the tasks).

Helpers shared by the families that train on derived labels: :func:`derived_schema` (the data set's Schema with
one derived task) and :func:`relabel` (a Table with other labels and weights, the same feature tensors).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtlkit.data.datasets import Splits
from mtlkit.data.table import Table
from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.losses import LossSet
from mtlkit.metrics import TaskMetrics
from mtlkit.schema import Schema, Task


class Family:
    """How a problem with the tasks of ``schema`` is trained and scored.

    Args:
        schema: the data set's own Schema (the tasks every family is judged on).

    A family transforms the data set's Splits into the Splits its model trains on (:meth:`training_splits`;
    the identity for ``mtl``) and maps that model's predictions back to one score per original task
    (:meth:`task_scores`), so that the per-task metrics of every family are computed the same way. It may also
    choose the architecture (:meth:`model_choice`), the balancer (:meth:`balancer_choice`) and the losses
    (:meth:`losses`) the run trains with; by default the configured ones.
    """

    #: The architecture / balancer every run of this family trains, whatever the configuration says (None: the
    #: configured one). Known without data, so a bench names its runs after what they train.
    fixed_model: ClassVar[str | None] = None
    fixed_balancer: ClassVar[str | None] = None

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        #: the Schema the model trains on (the data set's own unless a family derives other tasks)
        self.training_schema = schema

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def training_splits(self, splits: Splits) -> Splits:
        """The Splits the model is trained and early-stopped on."""
        return splits

    def task_scores(self, predictions: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """One score per task of ``self.schema`` (plus any extra outputs) from the trained model's predictions
        (``Trainer.predict`` on a Table of the training schema)."""
        return dict(predictions)

    def model_choice(self, name: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The architecture and its parameters, given the configured ``model.name`` / ``model.params``."""
        return name, dict(params)

    def balancer_choice(self, name: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The balancer and its parameters, given the configured ``balancer.name`` / ``balancer.params``."""
        return name, dict(params)

    def losses(self, schema: Schema, params: Mapping[str, Mapping[str, Any]] | None = None) -> LossSet:
        """The task losses of the training schema ``schema`` (default: each task's ``Task.loss``), with
        ``params`` (task -> hyperparameters of its loss)."""
        return LossSet(schema, params)


class MTL(Family):
    """Multi-task learning: the configured model on the data set's tasks, unchanged (the default family)."""


# ---------------------------------------------------------------------------------------------- helpers
def positive_number(what: str, value: object) -> float:
    """``value`` as a float when it is a finite number > 0; else a ValueError echoing it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def check_actions(family: str, schema: Schema, actions: list[str], what: str) -> None:
    """Every name in ``actions`` is a binary task of ``schema``, none repeated, at least one."""
    if not actions:
        raise ValueError(f"{what} must name at least one task, got {actions!r}")
    seen: set[str] = set()
    for name in actions:
        if not isinstance(name, str) or name not in schema.task_names:
            raise ValueError(
                f"{what} names {name!r}, which is not a task of the data set"
                f"{did_you_mean(str(name), schema.task_names)}; tasks are {listing(schema.task_names)}"
            )
        if name in seen:
            raise ValueError(f"{what} names {name!r} twice")
        seen.add(name)
    for task in schema.tasks:
        if task.kind != "binary":
            raise MtlkitError(
                f"family {family!r} scores every task with one ranking score, so every task must be binary; "
                f"task {task.name!r} is {task.kind}. Use family mtl or multi_model for this data set"
            )


def action_matrix(table: Table, schema: Schema, actions: list[str]) -> tuple[Tensor, Tensor]:
    """(happened [N, A] bool, known [N, A] bool) of the action tasks' labels (NaN = unknown, not happened)."""
    columns = [schema.task_names.index(a) for a in actions]
    labels = table.labels[:, columns]
    known = ~torch.isnan(labels)
    return known & (labels > 0.5), known


def derived_schema(schema: Schema, task: Task, sample_weight: str | None = None) -> Schema:
    """``schema`` with the single task ``task`` (and ``sample_weight`` as its weight column when given).

    Features restricted to towers of the original tasks (``Feature.towers``) become shared: the derived schema
    has no such tasks, and its one model sees every feature.
    """
    features = tuple(dataclasses.replace(f, towers=()) if f.towers else f for f in schema.features)
    return dataclasses.replace(
        schema,
        features=features,
        tasks=(task,),
        sample_weight=sample_weight if sample_weight is not None else schema.sample_weight,
    )


def relabel(
    table: Table, schema: Schema, labels: Tensor, weights: Tensor | None, group_batches: bool = False
) -> Table:
    """``table``'s feature, group and value tensors (shared, not copied) with other labels [N, T] and weights."""
    return Table(
        schema,
        table.categorical,
        table.numeric,
        labels.to(torch.float32).contiguous(),
        None if weights is None else weights.to(torch.float32).contiguous(),
        table.groups,
        table.encoders,
        values=table.values,
        group_batches=group_batches,
    )


def same_score(schema: Schema, score: Tensor) -> dict[str, Tensor]:
    """One score for every task of ``schema``, plus ``score`` itself (a ``pred_score`` column in predict;
    left out when a task is called ``score``)."""
    out = {t.name: score for t in schema.tasks}
    out.setdefault("score", score)
    return out


def as_logits(prediction: Tensor, kind: str) -> Tensor:
    """A prediction of ``Trainer.predict`` (probabilities, or values) back on the logit scale the metrics read.

    Binary: ``log(p / (1 - p))`` with p clamped to [1e-12, 1 - 1e-12] in float64 (a saturated float32
    probability stays finite); multiclass: ``log p`` (softmax is shift-invariant, so these are valid logits);
    regression: the value itself.
    """
    p = prediction.detach().to(torch.float64)
    if kind == "binary":
        return torch.logit(p.clamp(1e-12, 1.0 - 1e-12))
    if kind == "multiclass":
        return torch.log(p.clamp_min(1e-12))
    return p


def task_metrics(schema: Schema, scores: Mapping[str, Tensor], table: Table) -> dict[str, dict[str, float]]:
    """``TaskMetrics`` of every task of ``schema`` from per-task scores (``Family.task_scores``) on ``table``.

    ``table`` holds the data set's labels (a Table of ``schema``); its sample weights and groups are used as in
    ``Trainer.evaluate``, so a family's metrics are comparable to an MTL model's.
    """
    metrics = TaskMetrics(schema, has_groups=table.groups is not None)
    update_task_metrics(metrics, schema, scores, table)
    return metrics.compute()


def update_task_metrics(
    metrics: TaskMetrics, schema: Schema, scores: Mapping[str, Tensor], table: Table
) -> None:
    """Add per-task scores on ``table`` to ``metrics`` (as :func:`task_metrics` does, for one of several tables)."""
    missing = [t.name for t in schema.tasks if t.name not in scores]
    if missing:
        raise MtlkitError(f"the family gave no score for the task(s) {listing(missing)}")
    logits = {t.name: as_logits(scores[t.name], t.kind).to(table.device) for t in schema.tasks}
    metrics.update(logits, table.labels, table.weights, table.groups)
