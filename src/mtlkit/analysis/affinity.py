"""Lookahead task affinity (Fifty et al. 2021, "Efficiently Identifying Task Groupings for Multi-Task Learning",
TAG): how much a step on one task alone lowers every other task's loss.

The seeds' relatedness probe is "train on task i alone and watch every other task's loss": if task j's loss falls
too, i helps j. Training T single-task models to do that is expensive; TAG makes it cheap and repeatable by taking
the probe one step at a time. At a step with shared parameters ``theta_s`` and a batch X, for every task i, a
lookahead SGD step on task i's loss alone

    theta_s'(i) = theta_s - lr * d L_i(X, theta_s) / d theta_s

(task-private parameters unchanged), then every task j's loss there against before:

    Z_{i->j} = 1 - L_j(X, theta_s'(i)) / L_j(X, theta_s)                   (paper, eq. 3)

Z > 0: the step on i helped j; Z < 0: it hurt j. The diagonal Z_{i->i} is the self-affinity (a plain descent step,
positive for a small enough lr). Averaged over training, the matrix says which tasks belong together. All T
gradients come from one batched :func:`mtlkit.backward.task_jacobian`; the T lookahead losses from
``torch.func.functional_call`` with the stepped shared parameters (the model itself is never modified), in
float64 (see :func:`lookahead_affinity`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call

from mtlkit.analysis.diagnostics import (
    FOLDER,
    CsvRecorder,
    check_every,
    finite_or_none,
    isolated,
    require_shared,
    reset_rng,
    shared_parameter_names,
    write_json,
)
from mtlkit.backward import task_jacobian
from mtlkit.data.table import Batch, Table
from mtlkit.losses import LossSet

if TYPE_CHECKING:
    from mtlkit.training.trainer import Trainer

log = logging.getLogger(__name__)


def affinity_columns(tasks: list[str]) -> list[str]:
    """``step, epoch`` then ``aff_<i>__<j>`` for every ordered pair i != j (schema order, i outer)."""
    return ["step", "epoch", *[f"aff_{i}__{j}" for i in tasks for j in tasks if i != j]]


#: Model classes whose lookahead failed in float64 and ran in their own precision (warned once per class).
_NATIVE: set[str] = set()


def lookahead_affinity(
    model: nn.Module,
    losses_of: LossSet,
    batch: Batch,
    lr: float,
    device: torch.device | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> tuple[Tensor, Tensor, Tensor]:
    """The lookahead affinity on ``batch``: ``(Z [T, T], losses before [T], losses after [T, T])``, float64.

    ``Z[i, j] = 1 - after[i, j] / before[j]`` where ``after[i, j]`` is task j's loss after an SGD step of size
    ``lr`` on task i's loss over the shared parameters; NaN where ``before[j]`` is 0 (no labelled row of j).

    Everything runs through ``torch.func.functional_call`` on copies of the parameters cast to ``dtype``
    (float64 by default; None keeps the model's own): one step moves a loss by about ``lr * |g|^2``, 1e-6 of it
    and less, which float32 cannot resolve (its rounding, ~1e-7 of the loss, would be most of the signal). A
    model that fails in float64 is measured in its own precision, with one warning. The model runs in its current
    mode; every forward replays the same random state (the same dropout masks), so the ratio reflects the
    parameter change alone. Random state, buffers and mode are restored afterwards; no ``.grad`` is written.
    """
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    require_shared(model, "the task affinity")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    if dtype is not None:
        try:
            return _lookahead(model, losses_of, batch, float(lr), device, dtype)
        except (
            RuntimeError
        ) as exc:  # an operation that insists on float32 (a dtype mismatch inside the model)
            name = type(model).__name__
            if name not in _NATIVE:
                _NATIVE.add(name)
                log.warning(
                    "task affinity: %s failed in %s (%s); measuring in the model's own precision, where small "
                    "affinities drown in rounding",
                    name,
                    dtype,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
    return _lookahead(model, losses_of, batch, float(lr), device, None)


def _lookahead(
    model: nn.Module,
    losses_of: LossSet,
    batch: Batch,
    lr: float,
    device: torch.device,
    dtype: torch.dtype | None,
) -> tuple[Tensor, Tensor, Tensor]:
    def cast(t: Tensor) -> Tensor:
        t = t.detach()
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    named = shared_parameter_names(model)
    params = {n: cast(p) for n, p in model.named_parameters()}
    buffers = {n: cast(b) for n, b in model.named_buffers()}
    cast_batch = Batch(batch.categorical, cast(batch.numeric), batch.labels, batch.weights, batch.groups)
    with isolated(model, device) as state:

        def losses_at(values: dict[str, Tensor]) -> Tensor:
            reset_rng(device, state)
            out = functional_call(model, {**params, **values, **buffers}, (cast_batch,))
            return losses_of(out.logits, batch.labels, batch.weights, batch.groups)

        leaves = {n: params[n].clone().requires_grad_(True) for n, _ in named}
        with torch.enable_grad():
            losses = losses_at(leaves)
            jacobian = task_jacobian(losses, list(leaves.values()), type(model).__name__).detach()
        before = losses.detach()
        del losses
        after = []
        with torch.no_grad():
            for i in range(jacobian.shape[0]):
                stepped: dict[str, Tensor] = {}
                offset = 0
                for n, p in named:
                    stepped[n] = params[n] - lr * jacobian[i, offset : offset + p.numel()].reshape(p.shape)
                    offset += p.numel()
                after.append(losses_at(stepped))
    before64 = before.to(torch.float64)
    after64 = torch.stack(after).to(torch.float64)
    ratio = torch.where(before64 > 0, after64 / before64.clamp(min=1e-300), torch.nan)
    return 1.0 - ratio, before64, after64


class TaskAffinity(CsvRecorder):
    """Every ``every`` optimizer steps, :func:`lookahead_affinity` with the optimizer's current lr.

    Measured after the optimizer step, at the updated weights. The batch is that step's training batch (as in the
    paper: the lookahead and both losses on the same batch X^t) unless ``table`` is given, in which case it is a
    fixed batch of that table's first ``rows`` rows (the same rows every time: a smoother series on held-out
    data). The lookahead is an SGD step even when training uses Adam (the paper's definition).

    Each measurement is a row of ``diagnostics/affinity.csv`` (columns from :func:`affinity_columns`; the rows,
    with the diagonal ``aff_<i>__<i>`` too, stay in ``.rows``), and ``diagnostics/affinity.json`` holds
    ``{"tasks": [...], "matrix": [[...]], "steps": n}``: matrix[i][j] the mean of Z_{i->j} over the n
    measurements (NaN ones skipped; null where none is finite), diagonal = self-affinity. Both files are written
    at every epoch end and at fit end. Training is left unchanged (see :mod:`mtlkit.analysis.diagnostics`). A
    model without shared parameters records nothing and logs one warning. After a resume the earlier rows are read
    back from the CSV, which lacks the diagonal: the diagonal mean then covers the resumed part only.

    Args:
        every: measure when ``trainer.global_step`` is a multiple of this (>= 1).
        table: None for the training batch; a Table (the validation set) for a fixed batch of its first rows.
        out_dir: the run folder; None keeps the rows in memory only.
        rows: size of the fixed batch; None takes the Trainer's ``batch_size``.
    """

    filename = "affinity.csv"
    summary = "affinity.json"

    def __init__(
        self, every: int, table: Table | None = None, out_dir: Path | None = None, rows: int | None = None
    ) -> None:
        super().__init__(out_dir)
        self.every = check_every(every)
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
            raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
        self.table = table
        self.fixed_rows = rows
        self.fixed: Batch | None = None
        self.tasks: list[str] = []
        self.disabled = False

    def on_fit_start(self, trainer: Trainer) -> None:
        self.tasks = list(trainer.schema.task_names)
        self.set_columns(affinity_columns(self.tasks))
        super().on_fit_start(trainer)

    def _batch(self, trainer: Trainer, batch: Batch) -> Batch:
        if self.table is None:
            return batch
        if self.fixed is None:
            rows = self.fixed_rows or trainer.options.batch_size
            self.fixed = next(self.table.batches(rows, shuffle=False)).to(trainer.device)
        return self.fixed

    def on_step_end(self, trainer: Trainer, batch: Batch) -> None:
        if self.disabled or trainer.global_step % self.every != 0:
            return
        model = trainer.model
        if not shared_parameter_names(model):
            self.disabled = True
            log.warning(
                "task affinity: model %s has no shared parameters, so a step on one task cannot move another; "
                "nothing is recorded",
                type(model).__name__,
            )
            return
        if not self.tasks:
            self.tasks = list(trainer.schema.task_names)
            self.set_columns(affinity_columns(self.tasks))
        lr = float(trainer.optimizer.param_groups[0]["lr"])
        z, _, _ = lookahead_affinity(model, trainer.losses, self._batch(trainer, batch), lr, trainer.device)
        row: dict[str, float] = {"step": float(trainer.global_step), "epoch": float(trainer.epoch + 1)}
        values = z.tolist()
        for i, a in enumerate(self.tasks):
            for j, b in enumerate(self.tasks):
                row[f"aff_{a}__{b}"] = float(values[i][j])
        self.rows.append(row)

    def matrix(self) -> list[list[float | None]]:
        """The mean affinity matrix over the recorded rows (NaN skipped; None where nothing is finite)."""
        result: list[list[float | None]] = []
        for a in self.tasks:
            line: list[float | None] = []
            for b in self.tasks:
                values = [
                    r[f"aff_{a}__{b}"] for r in self.rows if math.isfinite(r.get(f"aff_{a}__{b}", math.nan))
                ]
                line.append(finite_or_none(sum(values) / len(values)) if values else None)
            result.append(line)
        return result

    def write(self) -> None:
        super().write()
        if self.out_dir is None or not self.rows:
            return
        write_json(
            self.out_dir / FOLDER / self.summary,
            {"tasks": self.tasks, "matrix": self.matrix(), "steps": len(self.rows)},
        )
