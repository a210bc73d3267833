"""Nash-MTL: Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.

The update is the Nash bargaining solution d = sum_i alpha_i g_i, where alpha > 0 solves

    G alpha = 1 / alpha        (elementwise: alpha_i (G alpha)_i = 1 for every task i)

with G = J J^T the Gram matrix of the task gradients. Each task's directional derivative along d is
g_i . d = 1 / alpha_i > 0, and alpha^T G alpha = T, so ||d|| = sqrt(T) whatever the gradient scale.

Solver (in-process, float64 on the [T, T] matrix, on the CPU): alpha is the unique minimiser of the
strictly convex, self-concordant barrier phi(alpha) = 1/2 alpha^T G alpha - sum_i log alpha_i (its gradient is
G alpha - 1 / alpha). Newton's method in the scaled variable alpha = alpha_k * (1 + y):

    (D G D + I) y = -(alpha_k * G alpha_k - 1),    D = diag(alpha_k)

(a well-conditioned system: its eigenvalues are >= 1). Steps are limited to 99% of the way to the boundary
alpha = 0, then backtracked (Armijo on phi) but never below the damped step 1 / (1 + lambda), lambda the Newton
decrement, which keeps alpha > 0 and decreases phi for self-concordant functions; once lambda < 1/4 full steps
are taken (quadratic convergence). Start: alpha_i = 1 / sqrt(G_ii) (exact for orthogonal gradients) rescaled so
that alpha^T G alpha = T (true at the solution). Stop when max_i |alpha_i (G alpha)_i - 1| <= tol.

Numerics: G is symmetrised, divided by s = max_i G_ii (alpha scales as 1 / sqrt(s): the solution for G / s is
sqrt(s) alpha), its eigenvalues are clipped at 0 (only when G plus the ridge is not positive definite: see
``psd_unit_diagonal``) and a ridge of ``RIDGE`` (relative to s; the machine epsilon of
the input dtype when that is larger) is added. The ridge only matters when a non-negative combination of the
gradients vanishes (a zero gradient, exactly opposite gradients), where the bargaining problem has no solution:
alpha stays finite (about 1 / sqrt(ridge s) on those tasks) and d is the finite limit. All-zero gradients give
alpha = 0. Identical gradients g give alpha_i = 1 / (sqrt(T) ||g||), so d = (sum alpha) g = sqrt(T) g / ||g||.

Differences from the official implementation (cvxpy + ECOS): it solves the same equation by a
concave-convex procedure (20 convex sub-problems, stopping when ||G alpha - 1 / alpha|| < 1e-3 or alpha stops
moving), warm-started from the previous alpha; it divides G by its Frobenius norm and puts the factor back in
the constraints (so its alpha also answers the unnormalised G); and it clips the norm of the shared gradient to
``max_norm = 1`` after backward. Here the equation is solved to ``tol`` by Newton's method without warm start,
and no clipping is done (||d|| = sqrt(T); use the Trainer's gradient clipping to reproduce max_norm).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, SmallGram, dot, psd_unit_diagonal, solve_lists
from mtlkit.schema import Schema

#: Ridge added to the normalised Gram matrix (max diagonal 1) so that alpha stays finite on degenerate input.
RIDGE = 1e-12
#: Below this Newton decrement, full Newton steps are safe (alpha stays > 0) and converge quadratically.
FULL_STEP_DECREMENT = 0.25


def solve_nash(gram: Tensor, max_iter: int = 50, tol: float = 1e-8) -> Tensor:
    """alpha > 0 with alpha_i (G alpha)_i = 1 for all i (float64, on the CPU); zeros for an all-zero G.

    Damped Newton on phi(alpha) = alpha^T G alpha / 2 - sum_i log alpha_i. The iterates are Python floats: each
    iteration is a few operations on T numbers, where every distinct numpy or torch call costs 20-40 us inside a
    training step (docs/decisions.md); the two T x T operations (G alpha and the Newton system) run in plain
    Python up to ``SMALL_SYSTEM`` tasks and in numpy beyond (:class:`_Barrier`)."""
    g, scale = psd_unit_diagonal(gram, RIDGE)
    t = len(g)
    if scale == 0.0:
        return torch.zeros(t, dtype=torch.float64)
    if not math.isfinite(scale):
        return torch.full((t,), float("nan"), dtype=torch.float64)
    barrier = _Barrier(g)
    alpha = [1.0 / math.sqrt(x) for x in barrier.diagonal]
    start = math.sqrt(t / dot(alpha, barrier.times(alpha)))
    alpha = [a * start for a in alpha]
    for _ in range(max_iter):
        g_alpha = barrier.times(alpha)
        residual = [a * x - 1.0 for a, x in zip(alpha, g_alpha, strict=True)]
        if max(abs(r) for r in residual) <= tol:
            break
        y = barrier.newton(alpha, residual)
        slope = dot(residual, y)  # directional derivative of phi along alpha * y (< 0)
        decrement = math.sqrt(max(-slope, 0.0))
        if decrement < FULL_STEP_DECREMENT:
            step = 1.0
        else:
            damped = 1.0 / (1.0 + decrement)
            reach = max((-v for v in y if v < 0), default=0.0)
            step = min(1.0, 0.99 / reach) if reach > 0 else 1.0
            current = barrier.phi(alpha, g_alpha)
            while step > damped:
                trial = [a * (1 + step * v) for a, v in zip(alpha, y, strict=True)]
                if barrier.phi(trial) <= current + 1e-4 * step * slope:
                    break
                step *= 0.5
            step = max(step, damped)
        alpha = [a * (1 + step * v) for a, v in zip(alpha, y, strict=True)]
    root = math.sqrt(scale)
    return torch.tensor([a / root for a in alpha], dtype=torch.float64)


class _Barrier(SmallGram):
    """The T x T operations of Nash-MTL's Newton iteration on the conditioned Gram matrix G: Python floats up to
    ``SMALL_SYSTEM`` tasks, numpy beyond (:class:`~mtlkit.aggregation.base.SmallGram`)."""

    def __init__(self, g: list[list[float]]) -> None:
        super().__init__(g)
        self.diagonal = [row[i] for i, row in enumerate(g)]

    def phi(self, a: list[float], g_a: list[float] | None = None) -> float:
        """a^T G a / 2 - sum_i log a_i (``g_a``: G a when already known); +inf outside a > 0."""
        if min(a) <= 0.0:
            return math.inf
        return 0.5 * dot(a, self.times(a) if g_a is None else g_a) - sum(math.log(x) for x in a)

    def newton(self, a: list[float], residual: list[float]) -> list[float]:
        """y with (D G D + I) y = -residual, D = diag(a) (eigenvalues >= 1: always solvable)."""
        if self.small:
            system = [
                [a[i] * x * a[j] + (1.0 if i == j else 0.0) for j, x in enumerate(row)]
                for i, row in enumerate(self.rows)
            ]
            solution = solve_lists(system, [-r for r in residual])
            assert solution is not None  # positive definite
            return solution
        d = np.array(a)
        system = d[:, None] * self.array * d[None, :] + np.eye(len(a))
        return np.linalg.solve(system, -np.array(residual)).tolist()


class NashMTL(GradientAggregator):
    """Nash-MTL (Navon et al., ICML 2022): d = sum_i alpha_i g_i with alpha > 0 solving G alpha = 1 / alpha.

    State: the last weights (``alpha``) and the number of calls (``steps``), buffers; the weights are
    recomputed every ``update_every`` calls and reused in between.

    Args:
        schema: the problem (task order = row order of the gradients).
        mode: ``parameter`` or ``representation`` (see :class:`GradientAggregator`).
        max_iter: Newton iterations per solve (>= 1).
        tol: stop when max_i |alpha_i (G alpha)_i - 1| <= tol (> 0).
        update_every: recompute the weights every this many calls (>= 1); the paper's speed-up uses e.g. 25.
    """

    alpha: Tensor
    steps: Tensor

    def __init__(
        self,
        schema: Schema,
        mode: Mode = "parameter",
        max_iter: int = 50,
        tol: float = 1e-8,
        update_every: int = 1,
    ) -> None:
        super().__init__(schema, mode)
        for name, value in (("max_iter", max_iter), ("update_every", update_every)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if isinstance(tol, bool) or not isinstance(tol, (int, float)):
            raise TypeError(f"tol must be a number, got {tol!r}")
        if not math.isfinite(tol) or tol <= 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        self.max_iter = max_iter
        self.tol = float(tol)
        self.update_every = update_every
        n = len(schema.tasks)
        self.register_buffer("alpha", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def reset(self) -> None:
        self.alpha.zero_()
        self.steps.zero_()

    def weights(self, gram: Tensor) -> Tensor:
        """alpha [T] (float64, on the Gram matrix's device): solved every ``update_every`` calls, else reused."""
        if int(self.steps) % self.update_every == 0:
            solution = solve_nash(gram, self.max_iter, self.tol)
            self.alpha.copy_(solution)  # a buffer: never requires grad
        else:
            solution = self.alpha.clone()
        self.steps.add_(1)
        return solution.to(gram.device)
