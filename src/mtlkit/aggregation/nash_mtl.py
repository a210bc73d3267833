"""Nash-MTL: Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.

The update is the Nash bargaining solution d = sum_i alpha_i g_i, where alpha > 0 solves

    G alpha = 1 / alpha        (elementwise: alpha_i (G alpha)_i = 1 for every task i)

with G = J J^T the Gram matrix of the task gradients. Each task's directional derivative along d is
g_i . d = 1 / alpha_i > 0, and alpha^T G alpha = T, so ||d|| = sqrt(T) whatever the gradient scale.

Solver (in-process, torch only, float64 on the [T, T] matrix, on the CPU): alpha is the unique minimiser of the
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

from mtlkit.aggregation.base import GradientAggregator, Mode, psd_unit_diagonal
from mtlkit.schema import Schema

#: Ridge added to the normalised Gram matrix (max diagonal 1) so that alpha stays finite on degenerate input.
RIDGE = 1e-12
#: Below this Newton decrement, full Newton steps are safe (alpha stays > 0) and converge quadratically.
FULL_STEP_DECREMENT = 0.25


def solve_nash(gram: Tensor, max_iter: int = 50, tol: float = 1e-8) -> Tensor:
    """alpha > 0 with alpha_i (G alpha)_i = 1 for all i (float64, on the CPU); zeros for an all-zero G.

    Damped Newton on phi(alpha) = alpha^T G alpha / 2 - sum_i log alpha_i, in numpy (each iteration is a few
    operations on T numbers, where torch's per-call overhead would dominate)."""
    g, scale = psd_unit_diagonal(gram, RIDGE)
    t = g.shape[0]
    if scale == 0.0:
        return torch.zeros(t, dtype=torch.float64)
    if not math.isfinite(scale):
        return torch.full((t,), float("nan"), dtype=torch.float64)
    eye = np.eye(t)

    def phi(a: np.ndarray) -> float:
        return float(0.5 * a @ g @ a - np.log(a).sum())

    alpha = 1.0 / np.sqrt(np.diagonal(g))
    alpha = alpha * math.sqrt(t / float(alpha @ g @ alpha))
    for _ in range(max_iter):
        residual = alpha * (g @ alpha) - 1.0
        if float(np.abs(residual).max()) <= tol:
            break
        hessian = alpha[:, None] * g * alpha[None, :] + eye
        y = np.linalg.solve(hessian, -residual)
        slope = float(residual @ y)  # directional derivative of phi along alpha * y (< 0)
        decrement = math.sqrt(max(-slope, 0.0))
        if decrement < FULL_STEP_DECREMENT:
            step = 1.0
        else:
            damped = 1.0 / (1.0 + decrement)
            negative = y < 0
            step = min(1.0, 0.99 / float((-y[negative]).max())) if bool(negative.any()) else 1.0
            current = phi(alpha)
            while step > damped and phi(alpha * (1 + step * y)) > current + 1e-4 * step * slope:
                step *= 0.5
            step = max(step, damped)
        alpha = alpha * (1 + step * y)
    return torch.from_numpy(alpha / math.sqrt(scale))


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
