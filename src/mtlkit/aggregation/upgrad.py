"""UPGrad: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024 (TorchJD).

Each task gradient g_i is projected onto the dual cone of the rows of J, C = {x : g_j . x >= 0 for all j}, and
the projections are averaged: d = (1/T) sum_i pi_C(g_i). By duality pi_C(g_i) = J^T w_i with

    w_i = argmin_{w >= e_i} w^T G w      (G = J J^T; e_i the i-th unit vector)

so ``weights = (1/T) sum_i w_i`` depends on G only. Writing w = e_i + lambda, each w_i is a convex QP with
bounds only, min_{lambda >= 0} 1/2 lambda^T G lambda + lambda^T G e_i, whose KKT conditions say
(G w_i)_j >= 0 for all j: d has a non-negative inner product with every task gradient. When no two gradients
conflict (G >= 0 entrywise) every w_i = e_i and d is the mean; identical gradients g give exactly g; the
weights do not depend on the scale of the gradients (d is proportional to it).

Solver: an exact primal active-set method (Lawson-Hanson for bound-constrained QPs) per task, in float64 on the
CPU (on Python floats up to ``SMALL_SYSTEM`` tasks, numpy beyond): free the variable with the most negative
gradient, solve the equality-constrained problem on the free set (one Cholesky-sized solve), step back to
feasibility while a free variable would turn negative, repeat until the KKT conditions hold to 1e-12. Each
solve costs O(k^3) for k free variables and a QP takes at most a few times T of them in practice, so the
T QPs cost about O(T^5) flops in the worst case: nothing for T <= 20.

Numerics: G is symmetrised, divided by its largest diagonal entry, its eigenvalues are clipped at 0 (only when
G plus the ridge is not positive definite: see ``psd_unit_diagonal``) and a ridge
of 1e-12 (the machine epsilon of the input dtype when larger) is added, so the free-set systems stay solvable
on singular G (identical or opposite gradients); the dual-cone condition then holds up to that ridge. An
all-zero G gives the mean weights. TorchJD solves the same QPs with ``quadprog`` on the trace-normalised G with
a larger ridge (1e-4); the results agree up to that regularisation.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, SmallGram, psd_unit_diagonal, solve_lists
from mtlkit.schema import Schema

#: Ridge added to the normalised Gram matrix (max diagonal 1) so that every free-set system is solvable.
RIDGE = 1e-12
#: A bound is optimal once the gradient of the QP there is >= -KKT_TOL (normalised units).
KKT_TOL = 1e-12


def project_weights(g: Tensor, i: int) -> Tensor:
    """w = argmin_{w >= e_i} w^T G w for a positive definite G (float64): exact active-set solution."""
    (w,) = _projections(g.detach().to(torch.float64).tolist(), [i])
    return torch.tensor(w, dtype=torch.float64, device=g.device)


def _projections(g: list[list[float]], tasks: list[int]) -> list[list[float]]:
    """w_i for each task i of ``tasks``."""
    gram = SmallGram(g)
    return [_project_weights(gram, i) for i in tasks]


def _project_weights(g: SmallGram, i: int) -> list[float]:
    """:func:`project_weights` with Python-float iterates: each iteration is a few operations on T numbers, where
    every distinct numpy or torch call costs 20-40 us inside a training step (docs/decisions.md); G's products
    and the free-set systems run in plain Python up to ``SMALL_SYSTEM`` tasks and in numpy beyond
    (:class:`~mtlkit.aggregation.base.SmallGram`, :func:`~mtlkit.aggregation.base.solve_lists`)."""
    t = len(g.rows)
    c = [row[i] for row in g.rows]
    lam = [0.0] * t
    free = [False] * t
    for _ in range(3 * t + 10):  # the method is finite; the cap only guards against rounding cycles
        grad = [x + cj for x, cj in zip(g.times(lam), c, strict=True)]
        entering, lowest = -1, -KKT_TOL
        for j in range(t):
            if not free[j] and grad[j] < lowest:
                entering, lowest = j, grad[j]
        if entering < 0:
            break
        free[entering] = True
        for _ in range(t):
            idx = [j for j in range(t) if free[j]]
            solution = solve_lists(g.block(idx), [-c[a] for a in idx])
            assert solution is not None  # G is positive definite, so is every principal block
            z = [0.0] * t
            for a, value in zip(idx, solution, strict=True):
                z[a] = value
            if all(z[a] > 0 for a in idx):
                lam = z
                break
            # step from lam (feasible) towards z until the first free variable reaches 0, and bind it
            first, ratio = -1, math.inf
            for a in idx:
                if z[a] <= 0:
                    gap = lam[a] - z[a]
                    r = lam[a] / max(gap, sys.float_info.min) if gap > 0 else 0.0
                    if r < ratio:
                        first, ratio = a, r
            lam = [x + ratio * (y - x) for x, y in zip(lam, z, strict=True)]
            free[first] = False
            free = [f and x > 0 for f, x in zip(free, lam, strict=True)]
            lam = [x if f else 0.0 for x, f in zip(lam, free, strict=True)]
    w = lam
    w[i] += 1.0
    return w


class UPGrad(GradientAggregator):
    """UPGrad (Quinton & Rey, 2024): d = (1/T) sum_i J^T w_i, w_i = argmin_{w >= e_i} w^T G w.

    Stateless: the mean of the task gradients each projected onto the dual cone {x : J x >= 0}.

    Args:
        schema: the problem (task order = row order of the gradients).
        mode: ``parameter`` or ``representation`` (see :class:`GradientAggregator`).
    """

    def __init__(self, schema: Schema, mode: Mode = "parameter") -> None:
        super().__init__(schema, mode)

    def reset(self) -> None:
        """Stateless."""

    def weights(self, gram: Tensor) -> Tensor:
        """(1/T) sum_i w_i [T] (float64, on the Gram matrix's device); 1/T each when G = 0."""
        t = gram.shape[0]
        g, scale = psd_unit_diagonal(gram, RIDGE)
        if scale == 0.0:
            weights = [1.0 / t] * t
        elif not math.isfinite(scale):
            weights = [math.nan] * t
        else:
            projected = _projections(g, list(range(t)))
            weights = [sum(column) / t for column in zip(*projected, strict=True)]
        return torch.tensor(weights, dtype=torch.float64, device=gram.device)
