"""Gradient conflict monitor: per-task gradient norms and pairwise cosines on the shared parameters.

With ``G`` the per-task gradient matrix [T, P] of the shared parameters (row i = ``d L_i / d theta_s``, from the
engine's batched :func:`mtlkit.backward.task_jacobian`) and its Gram matrix ``K = G G^T``:

    norm_i = sqrt(K_ii),        cos_ij = K_ij / (norm_i norm_j)

A negative cosine is a conflict (the tasks pull the shared parameters apart: Yu et al. 2020, "Gradient Surgery
for Multi-Task Learning", call such gradients conflicting); very unequal norms mean one task dominates the
shared update. The cosine of a task whose gradient is zero in the batch (no labelled row) is NaN.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mtlkit.analysis.diagnostics import (
    CsvRecorder,
    check_every,
    isolated,
    require_shared,
    shared_parameter_names,
)
from mtlkit.backward import task_jacobian
from mtlkit.data.table import Batch
from mtlkit.losses import LossSet

if TYPE_CHECKING:
    from mtlkit.training.trainer import Trainer

log = logging.getLogger(__name__)


def conflict_columns(tasks: list[str]) -> list[str]:
    """``step, epoch, norm_<task>...`` then ``cos_<a>__<b>`` for every pair a before b (schema order)."""
    pairs = [f"cos_{a}__{b}" for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
    return ["step", "epoch", *[f"norm_{t}" for t in tasks], *pairs]


def gram_statistics(jacobian: Tensor) -> tuple[Tensor, Tensor]:
    """Norms [T] and cosines [T, T] (float64) from the Gram matrix of ``jacobian`` [T, P]; NaN cosine where a
    norm is zero."""
    g = jacobian.detach().to(torch.float64)
    gram = g @ g.T
    norms = gram.diagonal().clamp(min=0).sqrt()
    denominator = norms[:, None] * norms[None, :]
    cosines = torch.where(denominator > 0, gram / denominator.clamp(min=1e-300), torch.nan)
    return norms, cosines.clamp(-1.0, 1.0)


def shared_task_jacobian(model: nn.Module, losses_of: LossSet, batch: Batch) -> Tensor:
    """One forward on ``batch`` in the model's current mode, then the per-task gradients [T, P] of the task
    losses on the shared parameters (one batched ``autograd.grad``; nothing written into ``.grad``)."""
    shared: list[Tensor] = [p for _, p in require_shared(model, "the gradient conflict monitor")]
    out = model(batch)
    losses = losses_of(out.logits, batch.labels, batch.weights, batch.groups)
    return task_jacobian(losses, shared, type(model).__name__).detach()


class GradientConflicts(CsvRecorder):
    """Every ``every`` optimizer steps, the task gradients' norms and pairwise cosines on that step's batch.

    Measured after the optimizer step, at the updated weights, with the model in its training mode (dropout
    active: the gradients training itself sees) and with the same losses as training (``trainer.losses``). The
    extra forward/backward runs inside :func:`~mtlkit.analysis.diagnostics.isolated`, so the training trajectory
    is unchanged. Rows go to ``diagnostics/conflicts.csv`` (columns from :func:`conflict_columns`) and stay in
    ``.rows``. A model without shared parameters (``single_task``) has nothing to compare: no row is recorded,
    no file written, and one warning is logged.

    Args:
        every: measure when ``trainer.global_step`` is a multiple of this (>= 1).
        out_dir: the run folder (the CSV goes to its ``diagnostics/``); None keeps the rows in memory only.
    """

    filename = "conflicts.csv"

    def __init__(self, every: int, out_dir: Path | None) -> None:
        super().__init__(out_dir)
        self.every = check_every(every)
        self.disabled = False

    def on_step_end(self, trainer: Trainer, batch: Batch) -> None:
        if self.disabled or trainer.global_step % self.every != 0:
            return
        model = trainer.model
        if not shared_parameter_names(model):
            self.disabled = True
            log.warning(
                "gradient conflicts: model %s has no shared parameters, so there are no task gradients to "
                "compare; nothing is recorded",
                type(model).__name__,
            )
            return
        tasks = list(trainer.schema.task_names)
        if not self.columns:
            self.set_columns(conflict_columns(tasks))
        with isolated(model, trainer.device), torch.enable_grad():
            jacobian = shared_task_jacobian(model, trainer.losses, batch)
        norms, cosines = gram_statistics(jacobian)
        row: dict[str, float] = {"step": float(trainer.global_step), "epoch": float(trainer.epoch + 1)}
        row.update({f"norm_{t}": float(v) for t, v in zip(tasks, norms.tolist(), strict=True)})
        for i, a in enumerate(tasks):
            for j in range(i + 1, len(tasks)):
                row[f"cos_{a}__{tasks[j]}"] = float(cosines[i, j])
        self.rows.append(row)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.set_columns(conflict_columns(list(trainer.schema.task_names)))
        super().on_fit_start(trainer)
