"""PCGrad: Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.

For each task i, starting from g_i' = g_i, visit the other tasks j in a random order and remove the conflicting
component: if g_i' . g_j < 0 then g_i' -= (g_i' . g_j) / ||g_j||^2 g_j (always against the *original* g_j, as in
the paper). The direction is d = sum_i g_i'.

Every g_i' stays a linear combination of the original gradients, g_i' = C_i @ J with a coefficient matrix C [T, T]
(starting at the identity), and every inner product it needs is a Gram entry: g_i' . g_j = C_i @ G[:, j]. So the
surgery runs on the Gram matrix alone (O(T^3) scalar work, nothing per coordinate) and the task weights are the
column sums of C: d = C.sum(0) @ J.

Scale: d is a *sum*. Without conflict it is sum_i g_i (weights 1), identical gradients give T g. The weights are
invariant to a common scaling of the gradients; the Gram matrix is normalised (by a power of two) before the
surgery, so zero, tiny (1e-20) and huge (1e20) gradients give finite directions.

Randomness: the visiting orders come from a ``random.Random`` owned by the module, seeded by ``seed``
(:class:`~mtlkit.seeding.OwnsShuffler`); its state travels in ``state_dict`` (extra state) and ``reset()``
reseeds it. PCGrad is not order invariant: permuting the
tasks changes which order each task visits the others in. The directions have the same distribution whatever the
task order, and with two tasks (a single other task, so no order to draw) the direction is exactly invariant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlkit.aggregation.base import (
    GradientAggregator,
    Mode,
    solver_lists,
    unit_diagonal_lists,
    weights_tensor,
)
from mtlkit.schema import Schema
from mtlkit.seeding import OwnsShuffler


def pcgrad_coefficients(gram: Tensor, orders: list[list[int]]) -> Tensor:
    """The coefficients C [T, T] with g_i' = C_i @ J after PCGrad's surgery, given the Gram matrix [T, T].

    Args:
        gram: G = J J^T (any positive scale).
        orders: ``orders[i]`` lists the other tasks j in the order task i visits them (entries equal to i are
            skipped).
    """
    return torch.tensor(pcgrad_lists(solver_lists(gram), orders), dtype=torch.float64)


def pcgrad_lists(g: list[list[float]], orders: list[list[int]]) -> list[list[float]]:
    """:func:`pcgrad_coefficients` on the Gram matrix as Python lists (see ``unit_diagonal_lists``).

    Row i keeps p = G^T C_i, so that p_j = g_i' . g_j for every j: each visit reads one number and each correction
    updates T of them, O(T^2) per task (T = 40: ~3 ms)."""
    t = len(g)
    coef = []
    for i in range(t):
        row = [0.0] * t
        row[i] = 1.0
        products = list(g[i])  # g_i' . g_j for every j, g_i' = g_i
        for j in orders[i]:
            square = g[j][j]
            if j == i or square <= 0.0 or products[j] >= 0.0:
                continue
            step = -products[j] / square  # remove the component along g_j
            row[j] += step
            products = [p + step * x for p, x in zip(products, g[j], strict=True)]
        coef.append(row)
    return coef


class PCGrad(OwnsShuffler, GradientAggregator):
    """PCGrad (Yu et al., NeurIPS 2020): g_i' -= min(g_i' . g_j, 0) / ||g_j||^2 g_j over the other tasks j in a
    random order; d = sum_i g_i' (computed on the Gram matrix through coefficients: d = C.sum(0) @ J).

    Args:
        schema: the problem.
        mode: ``parameter`` (the paper's setting) or ``representation``.
        seed: seeds the module's own generator of visiting orders (an integer in [0, 2**64)).
    """

    order_invariant = False  # random visiting order (exactly invariant for two tasks only)

    def __init__(self, schema: Schema, mode: Mode = "parameter", seed: int = 0) -> None:
        super().__init__(schema, mode)
        self._init_shuffler(seed)

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Reseed the generator (back to the orders of a fresh instance)."""
        self.reseed()

    # ------------------------------------------------------------------------------------------ direction

    def weights(self, gram: Tensor) -> Tensor:
        coef = pcgrad_lists(unit_diagonal_lists(gram), self.visiting_orders(gram.shape[0]))
        return weights_tensor([sum(column) for column in zip(*coef, strict=True)], gram)
