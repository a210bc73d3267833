"""Static weighting: objective = sum_i w_i L_i with fixed weights (equal weights, or each Task.weight)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting


class Static(LossWeighting):
    """sum_i w_i L_i.

    Args:
        weights: one weight >= 0 per task in schema order; by default each task's ``Task.weight`` (1.0 unless
            the schema says otherwise).
    """

    weights_buffer: Tensor

    def __init__(self, schema: Schema, weights: Sequence[float] | None = None) -> None:
        super().__init__(schema)
        values = [t.weight for t in schema.tasks] if weights is None else [float(w) for w in weights]
        if len(values) != len(schema.tasks):
            raise ValueError(
                f"static weights: need one weight per task ({len(schema.tasks)}: "
                f"{list(schema.task_names)}), got {len(values)}: {values}"
            )
        bad = [w for w in values if not math.isfinite(w) or w < 0]
        if bad:
            raise ValueError(f"static weights must be finite and >= 0, got {values}")
        self.weights = None if weights is None else list(values)
        self.register_buffer("weights_buffer", torch.tensor(values, dtype=torch.float32))

    def forward(self, losses: Tensor) -> Tensor:
        return (losses * self.weights_buffer.to(losses.dtype)).sum()
