"""Prior: divide each task's loss by the loss of the prior predictor, measured on the training labels.

Source: Su Jianlin, "Multi-task learning notes (1): in the name of the loss" (多任务学习漫谈（一）：以损失之名),
2022, https://spaces.ac.cn/archives/8870, section "the prior state" (先验状态):

    objective = sum_i L_i / max(L_i^prior, eps)

``L_i^prior`` is task i's loss when every row gets one constant prediction, the one a model learns first without
looking at any feature: the label frequencies for classification, the best constant for regression. With the
task's loss (default hyperparameters of :mod:`mtlkit.losses`, which are the ones the Trainer trains with), over
the labelled rows of the training Table (NaN labels ignored) and with its sample weights:

* binary, bce: the label entropy ``H(p) = -p log p - (1 - p) log(1 - p)``, ``p`` the weighted positive rate;
* multiclass, ce: the entropy ``-sum_k p_k log p_k`` of the weighted class frequencies;
* regression, mse: the label variance ``E[(y - mean)^2]`` (the loss of predicting the mean);
* regression, mae: the mean absolute deviation from the weighted median ``E|y - median|``;
* regression, huber: the Huber loss of the best constant (the Huber location, found by bisection);
* focal (binary or multiclass): the focal loss of predicting the label frequencies.

The document's argument: a model that learns nothing still learns the prior at once, so the prior loss is a
better unit of a task's difficulty than the loss at initialisation (:mod:`mtlkit.weighting.initial`).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from mtlkit.errors import MtlkitError
from mtlkit.losses import create_loss
from mtlkit.schema import Schema, Task
from mtlkit.weighting.base import LossWeighting

if TYPE_CHECKING:
    from mtlkit.data.table import Table

log = logging.getLogger(__name__)

#: The constant prediction a reference loss is computed for: the label prior, or a zero logit (an untrained net).
Predictor = Literal["prior", "zero"]

#: A binary prior of exactly 0 or 1 has an infinite logit; this one is exact to float64 precision.
_MAX_LOGIT = 50.0
#: Floor of class frequencies before their log (a class never seen gets a logit of about -690).
_MIN_FREQUENCY = 1e-300


def constant_predictor_loss(
    task: Task, labels: Tensor, weights: Tensor | None = None, predictor: Predictor = "prior"
) -> float | None:
    """Task ``task``'s mean loss when every row gets the same prediction; None when no row is labelled.

    Rows whose label is NaN, or whose weight is 0, are left out; the mean is weighted by ``weights``. The loss is
    ``task.loss`` with its default hyperparameters. Computed in float64 on the CPU.

    Args:
        labels: the task's label column [N] (NaN = missing).
        weights: sample weights [N] (>= 0), or None for 1.
        predictor: ``"prior"``: the label frequencies (classification) or the constant minimising the loss
            (regression: mean, median, Huber location); ``"zero"``: a zero logit (p = 0.5, a uniform softmax,
            a prediction of 0), the output of a freshly initialised network.
    """
    y = labels.detach().to("cpu", torch.float64).reshape(-1)
    w = torch.ones_like(y) if weights is None else weights.detach().to("cpu", torch.float64).reshape(-1)
    keep = ~torch.isnan(y) & (w > 0)
    y, w = y[keep], w[keep]
    total = w.sum()
    if y.numel() == 0 or not bool(total > 0):
        return None
    loss = create_loss(task.loss or "", task.kind).to(torch.float64)
    if task.kind == "binary":
        p = (w * y).sum() / total
        if predictor == "zero":
            z = torch.zeros(())
        else:
            z = (torch.log(p) - torch.log1p(-p)).clamp(-_MAX_LOGIT, _MAX_LOGIT)
        # every loss of a binary task is affine in the label: (1 - y) l(z, 0) + y l(z, 1)
        per_class = loss.per_row(z.to(torch.float64).expand(2), torch.tensor([0.0, 1.0], dtype=torch.float64))
        return float((1 - p) * per_class[0] + p * per_class[1])
    if task.kind == "multiclass":
        k = task.output_dim
        bad = (y < 0) | (y >= k) | (y != y.round())
        if bool(bad.any()):
            raise MtlkitError(
                f"task {task.name!r}: multiclass labels must be whole numbers 0..{k - 1}, got {float(y[bad][0]):g}"
            )
        freq = torch.bincount(y.long(), weights=w, minlength=k) / total
        logits = (
            torch.zeros(k, dtype=torch.float64)
            if predictor == "zero"
            else freq.clamp_min(_MIN_FREQUENCY).log()
        )
        per_class = loss.per_row(logits.expand(k, k), torch.arange(k, dtype=torch.float64))
        return float((freq * per_class).sum())
    c = 0.0 if predictor == "zero" else _best_constant(task, y, w, getattr(loss, "delta", 1.0))
    return float((w * loss.per_row(torch.full_like(y, c), y)).sum() / total)


def _best_constant(task: Task, y: Tensor, w: Tensor, delta: float) -> float:
    """The constant prediction with the least weighted regression loss: mean (mse), median (mae), Huber location."""
    total = w.sum()
    if task.loss == "mse":
        return float((w * y).sum() / total)
    if task.loss == "mae":
        return _weighted_median(y, w)
    if task.loss == "huber":
        # psi(c) = sum_i w_i clip(c - y_i, -delta, delta) is nondecreasing; its root minimises the Huber loss
        lo, hi = float(y.min()), float(y.max())
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if float((w * (mid - y).clamp(-delta, delta)).sum()) < 0:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    raise MtlkitError(
        f"task {task.name!r}: no prior predictor is defined for the regression loss {task.loss!r}"
    )


def _weighted_median(y: Tensor, w: Tensor) -> float:
    """The smallest y with at least half of the total weight at or below it (it minimises sum w |y - c|)."""
    order = torch.argsort(y)
    cumulative = torch.cumsum(w[order], 0)
    index = int(torch.searchsorted(cumulative, 0.5 * cumulative[-1]))
    return float(y[order][min(index, len(y) - 1)])


def reference_losses(
    method: str,
    tasks: tuple[Task, ...],
    train: Table,
    predictor: Predictor,
    eps: float,
    fallback: list[float] | None = None,
) -> list[float]:
    """``constant_predictor_loss`` of every task on ``train``, logging a warning for each unusable one.

    A task with no labelled row gets ``fallback[i]`` (default 1: its loss, always 0 on this data, is left
    unscaled); a value <= ``eps`` (all labels equal) is returned as is, since the caller divides by
    ``max(value, eps)``.
    """
    values: list[float] = []
    for i, task in enumerate(tasks):
        value = constant_predictor_loss(task, train.label(task.name), train.weights, predictor)
        if value is None:
            value = 1.0 if fallback is None else fallback[i]
            log.warning(
                "%s: task %r has no labelled row in the training data, so its reference loss cannot be "
                "measured; it is set to %.6g",
                method,
                task.name,
                value,
            )
        elif not value > eps:
            log.warning(
                "%s: task %r has a reference loss of %.3g (its training labels are all equal), so its loss is "
                "divided by eps=%g, a weight of %.3g; drop the task, or use another balancer",
                method,
                task.name,
                value,
                eps,
                1.0 / eps,
            )
        values.append(value)
    return values


class Prior(LossWeighting):
    """sum_i L_i / max(L_i^prior, eps), with L_i^prior the loss of the label prior (Su, 2022).

    :meth:`prepare` computes ``L^prior`` from the training Table (see the module docstring); ``forward`` before it
    is an error. A task without any labelled row gets ``L^prior = 1`` (it has no loss to scale anyway); a task
    whose training labels are all equal has ``L^prior = 0`` and is divided by ``eps`` (a warning says so).
    ``reset()`` keeps ``L^prior``: it describes the data, not the training run.

    Scale invariance: multiplying a regression task's labels by c multiplies its mse and ``L^prior`` by c^2 (mae:
    by c), so the update does not change; not for huber, whose ``delta`` does not scale with the labels.

    Args:
        eps: floor of ``L^prior`` (> 0), for degenerate priors.
    """

    scale_invariant = True

    prior: Tensor

    def __init__(self, schema: Schema, eps: float = 1e-8) -> None:
        super().__init__(schema)
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.eps = float(eps)
        self._tasks = schema.tasks
        self.register_buffer("prior", torch.full((len(schema.tasks),), math.nan))

    def prepare(self, train: Table) -> None:
        values = reference_losses("prior", self._tasks, train, "prior", self.eps)
        self.prior.copy_(torch.tensor(values, dtype=torch.float64))

    def forward(self, losses: Tensor) -> Tensor:
        if bool(torch.isnan(self.prior).any()):
            raise MtlkitError(
                "prior: the prior losses come from the training labels: call prepare(train) first "
                "(the Trainer does it)"
            )
        return (losses / self.prior.to(losses.dtype).clamp_min(self.eps)).sum()
