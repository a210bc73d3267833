"""Unit gradients: the sum of the normalised task gradients, d = sum_i g_i / ||g_i||.

The gradient of the loss sum_i L_i / sg(||grad L_i||) (sg: stop-gradient): each task's loss divided by its own
gradient norm is homogeneous of degree 0 in L_i, so multiplying a task's loss by a constant leaves the update
unchanged, and a gradient norm, unlike a loss value, does not move when a constant is added to the loss. As a
weighting of the task gradients: w_i = 1 / ||g_i|| = 1 / sqrt(G_ii).

Scale convention: identical task gradients g give T g / ||g|| (the norm of the update is the number of tasks with
a non-zero gradient, whatever the scale of the gradients). A task whose gradient is zero (norm <= ``eps``) gets
weight 0 and adds nothing.
"""

from __future__ import annotations

import math

from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, weights_tensor
from mtlkit.schema import Schema


class UnitGrad(GradientAggregator):
    """Normalised-gradient sum (Su, "Multi-task learning (1): in the name of the loss", 2022): d = sum_i g_i/||g_i||.

    Weights w_i = 1 / sqrt(G_ii); tasks with ||g_i|| <= ``eps`` get w_i = 0. Invariant to scaling any task's
    loss by a positive constant. Identical gradients g give T g / ||g||.

    Args:
        mode: where the engine takes the per-task gradients (see :class:`GradientAggregator`).
        eps: gradients of norm <= eps count as zero and get weight 0 (>= 0; the default 0 drops only exactly
            zero gradients, which keeps the invariance to loss scale down to the smallest float).
    """

    gram_entries = "diagonal"  # the weights are 1 / ||g_i||

    def __init__(self, schema: Schema, mode: Mode = "parameter", eps: float = 0.0) -> None:
        super().__init__(schema, mode)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)):
            raise TypeError(f"eps must be a number, got {eps!r}")
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        self.eps = float(eps)

    def weights(self, gram: Tensor) -> Tensor:
        # T numbers: plain Python (each numpy call costs more inside a training step than this whole loop)
        norms = [math.sqrt(x) if x > 0.0 else 0.0 for x in gram.detach().diagonal().tolist()]
        # 1 / sqrt of the smallest positive float is still finite (float32: 2.7e22), so no overflow here
        inverse = [1.0 / n if n > self.eps and n > 0.0 else 0.0 for n in norms]
        return weights_tensor(inverse, gram)

    def reset(self) -> None:
        """Stateless."""
