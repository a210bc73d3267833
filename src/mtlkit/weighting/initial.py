"""Initial: divide each task's loss by its initial value, so that every term is dimensionless.

Source: Su Jianlin, "Multi-task learning notes (1): in the name of the loss" (多任务学习漫谈（一）：以损失之名),
2022, https://spaces.ac.cn/archives/8870, section "the initial state" (初始状态); the same ratio L_i(t) / L_i(0)
is GradNorm's training rate (Chen et al., ICML 2018):

    objective = sum_i L_i / max(L_i^(0), eps)

Each term is homogeneous of degree 0 in its loss: multiplying L_i by a constant does not change the objective,
and a large loss is shrunk, a small one enlarged. ``L_i^(0)`` comes from one of two sources:

* ``"measured"``: the mean of task i's loss over its first ``warmup_batches`` training batches, then frozen. A
  batch counts for a task only when the task's loss is finite and > 0: ``mtlkit.losses.task_losses`` returns
  exactly 0 for a task without any labelled row in the batch, which is no measurement (a sparse task would
  otherwise be divided by ``eps`` for the whole run). Until a task is measured its loss is divided by its own
  current value, detached (``L_i / stop_grad(L_i)``: :mod:`mtlkit.weighting.realtime` for that task).
  Measuring happens in ``forward`` in training mode (``module.train()``, the default), never in
  :meth:`~NormalizedByInitial.effective_weights`.
* ``"theoretical"``: the document's closed forms, the loss of a freshly initialised network, whose logits are
  about 0: ``log 2`` for bce (p = 0.5), ``log K`` for ce (a uniform softmax), ``E[y^2]`` for mse and ``E|y|``
  for mae (predicting 0), ``E[huber(y)]`` for huber, and the focal loss of p = 0.5: ``(1 - 1/K)^gamma log K``
  (multiclass) and ``0.5^gamma log 2 (alpha p + (1 - alpha)(1 - p))`` (binary, p the positive rate), with the
  default hyperparameters of :mod:`mtlkit.losses` (those the Trainer trains with). Expectations are over the
  labelled training rows, sample-weighted, computed by :meth:`prepare`; bce, ce and multiclass focal need no
  data and are known at construction.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from mtlkit.errors import MtlkitError
from mtlkit.losses import create_loss
from mtlkit.schema import Schema, Task
from mtlkit.weighting.base import LossWeighting
from mtlkit.weighting.prior import reference_losses

if TYPE_CHECKING:
    from mtlkit.data.table import Table

Source = Literal["measured", "theoretical"]
SOURCES: tuple[str, ...] = ("measured", "theoretical")


def _label_free_zero_logit_loss(task: Task) -> float:
    """The loss of a zero logit when it is the same for every label (bce: log 2, ce: log K), else NaN."""
    if task.kind == "regression":
        return math.nan
    k = 2 if task.kind == "binary" else task.output_dim
    loss = create_loss(task.loss or "", task.kind).to(torch.float64)
    labels = torch.arange(k, dtype=torch.float64)
    logits = (
        torch.zeros(k, dtype=torch.float64)
        if task.kind == "binary"
        else torch.zeros(k, k, dtype=torch.float64)
    )
    per_class = loss.per_row(logits, labels)
    if not torch.allclose(per_class, per_class[0].expand(k), rtol=1e-12, atol=0):
        return math.nan
    return float(per_class[0])


class NormalizedByInitial(LossWeighting):
    """Shared machinery of the methods built on the ratios ``r_i = L_i / max(L_i^(0), eps)`` (Initial,
    GeneralizedMean); subclasses turn the ratios into the objective (:meth:`combine`).

    Buffers (checkpointed): ``initial`` [T], the reference losses ``L^(0)`` (NaN until known; during the warm-up
    the running mean of the batches counted so far), and ``seen`` [T], the batches measured per task.
    ``reset()`` forgets measurements (the theoretical values describe the data and stay); ``prepare()`` starts a
    fresh measurement, or computes the theoretical values from the training labels.
    """

    scale_invariant = True

    initial: Tensor
    seen: Tensor

    def __init__(self, schema: Schema, source: Source, warmup_batches: int, eps: float) -> None:
        super().__init__(schema)
        if source not in SOURCES:
            raise ValueError(f"source must be 'measured' or 'theoretical', got {source!r}")
        if isinstance(warmup_batches, bool) or not isinstance(warmup_batches, int) or warmup_batches < 1:
            raise ValueError(f"warmup_batches must be an integer >= 1, got {warmup_batches!r}")
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.source = source
        self.warmup_batches = warmup_batches
        self.eps = float(eps)
        self._tasks = schema.tasks
        self.register_buffer("initial", self._constants().to(torch.float32))
        self.register_buffer("seen", torch.zeros(len(schema.tasks), dtype=torch.int64))

    # ------------------------------------------------------------------------------------------ state
    def _constants(self) -> Tensor:
        """``L^(0)`` known before any data: the label-free theoretical values (bce, ce), NaN elsewhere."""
        if self.source == "measured":
            return torch.full((len(self._tasks),), math.nan, dtype=torch.float64)
        return torch.tensor([_label_free_zero_logit_loss(t) for t in self._tasks], dtype=torch.float64)

    def reset(self) -> None:
        if self.source == "measured":
            self.initial.fill_(math.nan)
            self.seen.zero_()

    def prepare(self, train: Table) -> None:
        if self.source == "measured":
            self.reset()  # a fresh run measures afresh
            return
        # a task without labels keeps its label-free value (bce: log 2), or gets 1
        fallback = [c if math.isfinite(c) else 1.0 for c in self._constants().tolist()]
        values = reference_losses(type(self).__name__.lower(), self._tasks, train, "zero", self.eps, fallback)
        self.initial.copy_(torch.tensor(values, dtype=torch.float64))

    @torch.no_grad()
    def _measure(self, current: Tensor) -> None:
        x = current.to(self.initial.dtype)
        take = (self.seen < self.warmup_batches) & torch.isfinite(x) & (x > 0)
        seen = self.seen + take.to(self.seen.dtype)
        mean = torch.where(seen == 1, x, self.initial + (x - self.initial) / seen.clamp_min(1).to(x.dtype))
        self.initial.copy_(torch.where(take, mean, self.initial))
        self.seen.copy_(seen)

    def reference(self, losses: Tensor, update: bool) -> Tensor:
        """``max(L^(0), eps)`` [T] in the losses' dtype, detached; with ``update``, measure ``losses`` first."""
        current = losses.detach()
        if self.source == "measured":
            if update:
                self._measure(current)
            measured = self.seen >= self.warmup_batches
            value = torch.where(measured, self.initial.to(current.dtype), current)
        else:
            if bool(torch.isnan(self.initial).any()):
                missing = [
                    t.name for t, v in zip(self._tasks, self.initial.tolist(), strict=True) if math.isnan(v)
                ]
                raise MtlkitError(
                    f"{type(self).__name__.lower()}: the theoretical initial losses of tasks {missing} come from the "
                    f"training labels: call prepare(train) first (the Trainer does it)"
                )
            value = self.initial.to(current.dtype)
        return value.clamp_min(self.eps)

    def ratios(self, losses: Tensor, update: bool = False) -> Tensor:
        """``r_i = L_i / max(L_i^(0), eps)`` [T], differentiable in the losses."""
        return losses / self.reference(losses, update)

    # ------------------------------------------------------------------------------------------ objective
    @abc.abstractmethod
    def combine(self, ratios: Tensor) -> Tensor:
        """The objective from the ratios [T]."""

    def forward(self, losses: Tensor) -> Tensor:
        return self.combine(self.ratios(losses, update=self.training))

    def effective_weights(self, losses: Tensor) -> Tensor:
        """d objective / d L_i at these losses [T]; never measures them (a probe is not a training batch)."""
        probe = losses.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.combine(self.ratios(probe, update=False)), probe)
        return grad.detach()


class Initial(NormalizedByInitial):
    """sum_i L_i / max(L_i^(0), eps), with L_i^(0) the measured or theoretical initial loss (Su, 2022).

    Effective weight of task i: ``1 / max(L_i^(0), eps)``. Scale invariance (``scale_invariant = True``) holds for
    the measured source: multiplying a task's loss by c multiplies its ``L^(0)`` by c. The theoretical source is
    invariant to scaling a regression task's labels under mse and mae (``E[y^2]``, ``E|y|`` scale alike), not to
    rescaling a classification loss.

    Args:
        source: ``"measured"`` (from the first training batches) or ``"theoretical"`` (closed forms and label
            statistics, see the module docstring).
        warmup_batches: batches, per task, averaged into the measured ``L^(0)`` (>= 1; measured source only).
        eps: floor of ``L^(0)`` (> 0): a loss of 0 while unmeasured, or a theoretical ``E[y^2] = 0``.
    """

    def __init__(
        self,
        schema: Schema,
        source: Source = "measured",
        warmup_batches: int = 1,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(schema, source, warmup_batches, eps)

    def combine(self, ratios: Tensor) -> Tensor:
        return ratios.sum()
