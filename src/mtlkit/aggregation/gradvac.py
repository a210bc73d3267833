"""GradVac: Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
Massively Multilingual Models", ICLR 2021.

GradVac generalises PCGrad: instead of only removing negative similarity it pulls the cosine similarity of each
pair of tasks up to an adaptive target phi_hat_ij, an exponential moving average of the similarities seen so far.
For each task i, starting from g_i' = g_i, and the other tasks j in a random order, with phi = cos(g_i', g_j):

    if phi < phi_hat_ij:  g_i' += ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                                   / (||g_j|| sqrt(1 - phi_hat^2)) g_j        (then cos(g_i', g_j) = phi_hat_ij)
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi                             (every visited pair, Algorithm 1)

and d = sum_i g_i'. As in PCGrad every g_i' is a linear combination of the original gradients (coefficients
C [T, T], g_i' = C_i @ J), so the whole procedure runs on the Gram matrix: d = C.sum(0) @ J. The targets start at
0 (the first steps behave like PCGrad's "no negative similarity", with a different correction size). The paper
applies GradVac per layer group; mtlkit applies it to the whole gradient vector (or the representation).

Scale: d is a *sum*; identical gradients (cosine 1 is never below a target) give T g. The weights are invariant to a
common scaling of the gradients (the Gram matrix is normalised), so zero, tiny and huge gradients stay finite; a
pair with a zero gradient is skipped and leaves its target unchanged.

State: the targets (buffer ``targets`` [T, T]) and the generator of visiting orders (seeded by ``seed``, extra state
in ``state_dict``); ``reset()`` zeroes the targets and reseeds the generator. Not order invariant (random visiting
orders), like PCGrad.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlkit.aggregation.base import (
    GradientAggregator,
    Mode,
    dot,
    solver_lists,
    unit_diagonal_lists,
    weights_tensor,
)
from mtlkit.schema import Schema
from mtlkit.seeding import OwnsShuffler

#: floor of 1 - phi_hat^2 in the correction's denominator (a target of +-1 would divide by zero)
_MIN_SIN2 = 1e-12


def gradvac_coefficients(gram: Tensor, targets: Tensor, orders: list[list[int]], beta: float) -> Tensor:
    """The coefficients C [T, T] (g_i' = C_i @ J) of GradVac's corrections; updates ``targets`` in place.

    Args:
        gram: G = J J^T (any positive scale).
        targets: the EMA targets phi_hat [T, T] (read, then updated for every visited pair with nonzero gradients).
        orders: ``orders[i]`` lists the other tasks in the order task i visits them (entries equal to i skipped).
        beta: the EMA rate.
    """
    phi_hat = solver_lists(targets)
    coef = gradvac_lists(solver_lists(gram), phi_hat, orders, beta)
    targets.copy_(torch.tensor(phi_hat, dtype=targets.dtype, device=targets.device))
    return torch.tensor(coef, dtype=torch.float64)


def gradvac_lists(
    g: list[list[float]], phi_hat: list[list[float]], orders: list[list[int]], beta: float
) -> list[list[float]]:
    """:func:`gradvac_coefficients` on Python lists (``phi_hat`` updated in place; see ``unit_diagonal_lists``).

    Row i keeps p = G^T C_i (p_j = g_i' . g_j) and ||g_i'||^2 = C_i . p, each updated in O(T) per correction."""
    t = len(g)
    coef = []
    for i in range(t):
        row = [0.0] * t
        row[i] = 1.0
        products = list(g[i])  # g_i' . g_j for every j, g_i' = g_i
        square_i = g[i][i]  # ||g_i'||^2
        for j in orders[i]:
            square_j = g[j][j]
            if j == i or square_j <= 0.0 or square_i <= 0.0:
                continue
            norm_i, norm_j = math.sqrt(square_i), math.sqrt(square_j)
            phi = min(1.0, max(-1.0, products[j] / (norm_i * norm_j)))
            target = phi_hat[i][j]
            if phi < target:
                sin_target = math.sqrt(max(1.0 - target * target, _MIN_SIN2))
                sin_phi = math.sqrt(max(1.0 - phi * phi, 0.0))
                step = norm_i * (target * sin_phi - phi * sin_target) / (norm_j * sin_target)
                row[j] += step
                products = [p + step * x for p, x in zip(products, g[j], strict=True)]
                square_i = dot(row, products)
            phi_hat[i][j] = (1.0 - beta) * target + beta * phi
        coef.append(row)
    return coef


class GradVac(OwnsShuffler, GradientAggregator):
    """GradVac (Wang et al., ICLR 2021): where cos(g_i', g_j) = phi < phi_hat_ij, g_i' += ||g_i'|| (phi_hat
    sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (||g_j|| sqrt(1 - phi_hat^2)) g_j; phi_hat <- (1 - beta) phi_hat
    + beta phi; d = sum_i g_i'.

    Args:
        schema: the problem.
        mode: ``parameter`` (the paper's setting) or ``representation``.
        beta: EMA rate of the similarity targets, in (0, 1] (the paper uses 1e-2).
        seed: seeds the module's own generator of visiting orders (an integer in [0, 2**64)).
    """

    order_invariant = False  # random visiting order

    targets: Tensor

    def __init__(self, schema: Schema, mode: Mode = "parameter", beta: float = 0.01, seed: int = 0) -> None:
        super().__init__(schema, mode)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise TypeError(f"beta must be a number, got {beta!r}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.beta = float(beta)
        t = len(self.task_names)
        self.register_buffer("targets", torch.zeros(t, t))
        self._init_shuffler(seed)

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Zero the similarity targets and reseed the generator."""
        self.targets.zero_()
        self.reseed()

    # ------------------------------------------------------------------------------------------ direction

    def weights(self, gram: Tensor) -> Tensor:
        """Task weights C.sum(0) [T]; advances the generator and updates the targets."""
        t = gram.shape[0]
        if t != self.targets.shape[0]:
            raise ValueError(
                f"GradVac was built for {self.targets.shape[0]} tasks, got a {t}x{t} Gram matrix"
            )
        phi_hat = self.targets.tolist()
        coef = gradvac_lists(unit_diagonal_lists(gram), phi_hat, self.visiting_orders(t), self.beta)
        self.targets.copy_(torch.tensor(phi_hat, dtype=self.targets.dtype, device=self.targets.device))
        return weights_tensor([sum(column) for column in zip(*coef, strict=True)], gram)
