"""RealTime: divide each task's loss by its own current value, detached.

Source: Su Jianlin, "Multi-task learning notes (1): in the name of the loss" (多任务学习漫谈（一）：以损失之名),
2022, https://spaces.ac.cn/archives/8870, sections "the real-time state" (实时状态) and "equivalent gradient"
(等价梯度):

    objective = sum_i L_i / stop_grad(max(L_i, eps))

Its value is T (every term is 1) but its gradient is ``sum_i grad L_i / L_i = grad sum_i log L_i``: the weight
of each task is the inverse of its current loss, recomputed every step. In gradient direction it is the
geometric mean of the losses (:mod:`mtlkit.weighting.generalized_mean` with ``gamma = 0``).
"""

from __future__ import annotations

import math

from torch import Tensor

from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting


class RealTime(LossWeighting):
    """sum_i L_i / stop_grad(max(L_i, eps)): effective weight 1 / max(L_i, eps) (Su, 2022).

    Scale invariant: multiplying L_i by c divides its weight by c. A loss of exactly 0 (a task without any
    labelled row in the batch) contributes 0 with weight ``1 / eps``, times its zero gradient; the value is then
    the number of tasks with a loss >= eps.

    Args:
        eps: floor of the divisor (> 0), so that a zero loss gives finite values and gradients.
    """

    scale_invariant = True

    def __init__(self, schema: Schema, eps: float = 1e-12) -> None:
        super().__init__(schema)
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.eps = float(eps)

    def forward(self, losses: Tensor) -> Tensor:
        return (losses / losses.detach().clamp_min(self.eps)).sum()
