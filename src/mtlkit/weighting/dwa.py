"""Dynamic Weight Average: Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.

    w_i(t) = T exp(r_i(t-1) / temperature) / sum_j exp(r_j(t-1) / temperature),   r_i(t-1) = L_i(t-1) / L_i(t-2)

with L_i(t) the average loss of task i over epoch t (passed to ``end_epoch`` by the Trainer) and T the number of
tasks; w_i = 1 during the first two epochs, before two averages are known. A task whose loss fell fastest gets the
smallest weight; the weights sum to T. The objective is sum_i w_i L_i with w held constant (no gradient flows into
the weights).

Epoch averages of exactly 0 (a task with no labelled row in a whole epoch) are read as ``EPS``, so the ratio stays
finite (0 / 0 reads as 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting

#: Epoch-average losses are floored at this value before the ratio L(t-1) / L(t-2).
EPS = 1e-12


class DWA(LossWeighting):
    """Dynamic Weight Average (Liu et al., CVPR 2019): sum_i w_i L_i, w = T softmax(r / temperature).

    State: the last two epoch-average losses (``last_losses`` = L(t-1), ``previous_losses`` = L(t-2); NaN until
    known) and the number of epochs seen (``epochs``), all buffers.

    Args:
        temperature: softness of the weights (> 0); large values tend to equal weights. The paper uses 2.
    """

    scale_invariant = False  # the ratios are scale-free, but the weights multiply the raw losses
    order_invariant = True

    last_losses: Tensor
    previous_losses: Tensor
    epochs: Tensor

    def __init__(self, schema: Schema, temperature: float = 2.0) -> None:
        super().__init__(schema)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {temperature!r}")
        if not math.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        n = len(schema.tasks)
        self.register_buffer("last_losses", torch.full((n,), float("nan")))
        self.register_buffer("previous_losses", torch.full((n,), float("nan")))
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))

    def reset(self) -> None:
        self.last_losses.fill_(float("nan"))
        self.previous_losses.fill_(float("nan"))
        self.epochs.zero_()

    def end_epoch(self, mean_losses: Tensor) -> None:
        if mean_losses.shape != self.last_losses.shape:
            raise ValueError(
                f"DWA: expected one epoch-average loss per task ({len(self.task_names)}: "
                f"{list(self.task_names)}), got shape {list(mean_losses.shape)}"
            )
        with torch.no_grad():
            self.previous_losses.copy_(self.last_losses)
            self.last_losses.copy_(mean_losses.detach())
            self.epochs.add_(1)

    def weights(self) -> Tensor:
        """w_i for the coming epoch [T]: ones until two epoch averages are known, detached."""
        ratio = self.last_losses.clamp(min=EPS) / self.previous_losses.clamp(min=EPS)
        ratio = ratio.clamp(max=torch.finfo(ratio.dtype).max)  # L(t-1) / L(t-2) beyond float range
        w = len(ratio) * torch.softmax(ratio / self.temperature, dim=0)
        # a tensor condition, not a Python branch: no device synchronisation per step
        return torch.where(self.epochs >= 2, w, torch.ones_like(w))

    def forward(self, losses: Tensor) -> Tensor:
        return (self.weights().to(losses.dtype) * losses).sum()
