"""Random Loss Weighting: Lin, Ye, Zhang, Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022.

At every step fresh weights are drawn and the objective is sum_i w_i L_i (no gradient flows into w):

    normal (the paper's default):    w = T softmax(lambda),  lambda_i ~ N(0, 1)
    uniform:                         w = T softmax(lambda),  lambda_i ~ U(0, 1)
    dirichlet:                       w = T lambda,           lambda ~ Dirichlet(1, ..., 1) (uniform on the simplex)

Scaling: the paper's weights sum to 1; mtlkit multiplies them by the number of tasks T, so that they sum to T and
average 1 per task, like equal weights (``static``), DWA and GradNorm. Switching from equal weights to RLW then keeps
the size of the objective, of its gradient and of the model penalty added to it; only the mixing is random.

The draws come from a ``torch.Generator`` owned by the module and seeded by ``seed``, independent of the global
torch RNG. Its state travels in ``state_dict`` (as the module's extra state), so a resumed run continues with the
same draws; ``reset()`` reseeds it, which returns to the draws of a fresh instance. RLW is not order invariant in
the exact sense (reordering the tasks does not reorder the draws); the weights have the same distribution for
every task, whatever its position.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mtlkit.schema import Schema
from mtlkit.seeding import OwnsGenerator
from mtlkit.weighting.base import LossWeighting

Distribution = Literal["normal", "uniform", "dirichlet"]
DISTRIBUTIONS: tuple[str, ...] = ("normal", "uniform", "dirichlet")


class RLW(OwnsGenerator, LossWeighting):
    """Random Loss Weighting (Lin et al., TMLR 2022): sum_i w_i L_i with w = T softmax(N(0, I)) drawn every step.

    Args:
        distribution: ``normal`` (softmax of standard normal draws, the paper's default), ``uniform`` (softmax of
            U(0, 1) draws: weights within a factor e of each other) or ``dirichlet`` (Dirichlet with every
            concentration 1).
        seed: seeds the module's own random generator (an integer in [0, 2**64)).
    """

    scale_invariant = False
    order_invariant = False  # random weights: equal for every task in distribution only

    def __init__(self, schema: Schema, distribution: Distribution = "normal", seed: int = 0) -> None:
        super().__init__(schema)
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        self.distribution = distribution
        self._tasks = len(schema.tasks)
        self._init_generator(seed)

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        self.reseed()

    # ------------------------------------------------------------------------------------------ weights
    def draw(self) -> Tensor:
        """The next weights [T] (CPU, float32, summing to T); advances the generator."""
        n, g = self._tasks, self._generator
        if self.distribution == "normal":
            w = torch.softmax(torch.randn(n, generator=g), dim=0)
        elif self.distribution == "uniform":
            w = torch.softmax(torch.rand(n, generator=g), dim=0)
        else:  # Dirichlet(1, ..., 1): independent Exp(1) draws, normalised
            e = torch.empty(n).exponential_(1.0, generator=g)
            w = e / e.sum()
        return n * w

    def effective_weights(self, losses: Tensor) -> Tensor:
        """The weights the next ``forward`` will draw, without advancing the generator."""
        state = self._generator.get_state()
        try:
            return self.draw().to(device=losses.device, dtype=losses.dtype)
        finally:
            self._generator.set_state(state)

    def forward(self, losses: Tensor) -> Tensor:
        w = self.draw().to(device=losses.device, dtype=losses.dtype)
        return (w * losses).sum()
