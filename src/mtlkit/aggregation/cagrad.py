"""CAGrad: Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021.

CAGrad looks for the update d, within a ball of radius sqrt(phi) = c ||g0|| around the mean gradient g0, that
maximises the worst task improvement min_i g_i . d. Its dual is a small problem on the simplex:

    w* = argmin_{w in simplex} g_w . g0 + sqrt(phi) ||g_w||,    g_w = sum_i w_i g_i,  phi = c^2 ||g0||^2
    d  = (g0 + sqrt(phi) / ||g_w*|| g_w*) / r

Everything is a Gram quantity (g_w . g0 = w^T G 1/T, ||g_w||^2 = w^T G w), so the task weights are
1/T + sqrt(phi) / ||g_w*|| w*, divided by r. The problem is convex (a linear term plus a norm); it is solved on the
Gram matrix, normalised to unit largest diagonal and in float64.

By projected gradient descent on the simplex with a backtracking (Armijo) step, finished exactly: at the start
and whenever the iterate's support S (its nonzero weights) changes, the stationary point on S is solved in closed
form and returned if it is the optimum. With a = G 1/T and k = sqrt(phi), the optimality conditions on S,
a_S + k G_SS w_S / ||g_w|| = lambda 1, sum w_S = 1 and ||g_w||^2 = w_S^T G_SS w_S, give, with p = G_SS^-1 1,
q = G_SS^-1 a_S, A = 1.p, B = 1.q and C = a_S.q, the quadratic A lambda^2 - 2 B lambda + C - k^2 = 0, whose root
with A lambda > B gives w_S = (lambda p - q) / sqrt(B^2 - A (C - k^2)); it is the optimum (the problem is convex)
when w_S >= 0 and a_i + k (G w)_i / ||g_w|| >= lambda for every task off S. PGD identifies the support in a few
steps (benchmark Gram matrices: a median of 6 projections and 3 closed-form solves, instead of ~20 projections to
converge); without a certificate (a singular block, ||g_w*|| = 0) PGD runs on, keeping the best iterate, for at
most 500 iterations, stopping when the iterate no longer moves. When ||g_w*|| vanishes (0 in the convex hull
at the optimum) the correction term is dropped.

``rescale`` follows the official implementation (github.com/Cranial-XIX/CAGrad, ``cagrad(grads, alpha, rescale)``
with alpha = c): r = 1 for ``rescale=0``, r = 1 + c^2 for ``rescale=1`` (the default there and here), r = 1 + c for
``rescale=2``.

Scale: the *mean* convention. With c = 0 the direction is exactly the mean g0. With identical gradients g every
g_w is g, so d = (1 + c) g / r: g exactly for ``rescale=2``, (1 + c) / (1 + c^2) g (1.2 g at c = 0.5) for the
default ``rescale=1``. The weights are invariant to a common scaling of the gradients, so zero, tiny and huge
gradients stay finite. Deterministic and order invariant (up to the solver's floating-point rounding).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, solver_array, unit_diagonal, weights_tensor
from mtlkit.schema import Schema

RESCALES = (0, 1, 2)
#: iterations of the projected gradient solver (it stops earlier once the iterate no longer moves)
_ITERATIONS = 500
#: ||g_w|| below this (on the normalised Gram matrix) counts as zero: the correction term is dropped
_ZERO_NORM = 1e-12
#: tolerance of the active set's optimality checks (on the normalised Gram matrix)
_KKT_TOL = 1e-10


def _project(v: np.ndarray) -> np.ndarray:
    """The Euclidean projection of v [T] onto {w >= 0, sum w = 1} (Duchi et al., ICML 2008), in numpy."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = int(np.nonzero(u - css / np.arange(1, v.size + 1) > 0)[0].max())
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def project_to_simplex(v: Tensor) -> Tensor:
    """The Euclidean projection of v [T] onto {w >= 0, sum w = 1} (Duchi et al., ICML 2008)."""
    projected = _project(v.detach().cpu().double().numpy())
    return torch.from_numpy(projected).to(dtype=v.dtype, device=v.device)


def cagrad_objective(gram: Tensor, w: Tensor, c: float) -> float:
    """g_w . g0 + c ||g0|| ||g_w|| for weights w [T] on the simplex, from the Gram matrix [T, T]."""
    t = gram.shape[0]
    mean = gram.new_full((t,), 1.0 / t)
    g0_norm = math.sqrt(max(float(mean @ gram @ mean), 0.0))
    return float(w @ gram @ mean) + c * g0_norm * math.sqrt(max(float(w @ gram @ w), 0.0))


def cagrad_solve(gram: Tensor, c: float) -> Tensor:
    """w* [T] (float64, CPU) minimising :func:`cagrad_objective` on the simplex.

    The iterations run on a numpy copy of the [T, T] matrix: each is a few operations on T numbers, where torch's
    per-call overhead would dominate.
    """
    return torch.from_numpy(cagrad_array(unit_diagonal(solver_array(gram)), c))


def _support_solution(
    g: np.ndarray, a: np.ndarray, k: float, support: list[int]
) -> tuple[np.ndarray, float] | None:
    """The stationary point (w, lambda) of the problem restricted to ``support`` (see the module docstring), or
    None when the Gram block is singular or the quadratic has no admissible root."""
    block = g[np.ix_(support, support)]
    rhs = np.stack([np.ones(len(support)), a[support]], axis=1)
    try:
        solved = np.linalg.solve(block, rhs)
    except np.linalg.LinAlgError:
        return None
    p, q = solved[:, 0], solved[:, 1]
    big_a, big_b, big_c = float(p.sum()), float(q.sum()), float(a[support] @ q)
    discriminant = big_b * big_b - big_a * (big_c - k * k)
    if not (big_a > 0.0 and discriminant > 0.0 and math.isfinite(discriminant)):
        return None
    root = math.sqrt(discriminant)
    lam = (big_b + root) / big_a
    w = np.zeros(g.shape[0])
    w[support] = (lam * p - q) / root
    return w, lam


def _certified(g: np.ndarray, a: np.ndarray, k: float, support: list[int]) -> np.ndarray | None:
    """The optimum, when the stationary point on ``support`` (see :func:`_support_solution`) satisfies the
    optimality conditions (nonnegative on the support, a_i + k (G w)_i / ||g_w|| >= lambda off it); else None."""
    found = _support_solution(g, a, k, support)
    if found is None:
        return None
    w, lam = found
    if bool((w < -_KKT_TOL).any()):
        return None
    w = np.maximum(w, 0.0)
    gw = g @ w
    norm = math.sqrt(max(float(w @ gw), 0.0))
    if norm <= _ZERO_NORM:
        return None
    slack = a + (k / norm) * gw - lam
    if float(slack.min()) < -_KKT_TOL * max(1.0, abs(lam)):
        return None
    return w / w.sum()


def cagrad_array(g: np.ndarray, c: float) -> np.ndarray:
    """:func:`cagrad_solve` on a float64 numpy Gram matrix already divided by its largest diagonal entry
    (:func:`~mtlkit.aggregation.base.unit_diagonal`: the callers need that matrix too)."""
    t = g.shape[0]
    mean = np.full(t, 1.0 / t)
    g_mean = g @ mean
    k = c * math.sqrt(max(float(mean @ g_mean), 0.0))  # sqrt(phi) on the normalised scale

    def value(w: np.ndarray) -> float:
        return float(w @ g_mean) + k * math.sqrt(max(float(w @ g @ w), 0.0))

    tried: set[tuple[int, ...]] = set()

    def finish(w: np.ndarray) -> np.ndarray | None:
        support = tuple(np.flatnonzero(w).tolist())
        if k <= 0.0 or support in tried:
            return None
        tried.add(support)
        return _certified(g, g_mean, k, list(support))

    w, fw = mean, value(mean)
    step = 1.0
    for _ in range(_ITERATIONS):
        exact = finish(w)
        if exact is not None:
            return exact
        gw = g @ w
        norm = math.sqrt(max(float(w @ gw), 0.0))
        grad = g_mean + (k / norm) * gw if norm > _ZERO_NORM else g_mean
        while True:
            cand = _project(w - step * grad)
            diff = cand - w
            fc = value(cand)
            if fc <= fw + float(grad @ diff) + float(diff @ diff) / (2.0 * step) or step < 1e-20:
                break
            step *= 0.5
        if fc >= fw or float(np.abs(diff).max()) < 1e-15:
            break
        w, fw = cand, fc
        step *= 2.0
    return w


class CAGrad(GradientAggregator):
    """CAGrad (Liu et al., NeurIPS 2021): w* = argmin_simplex g_w . g0 + c ||g0|| ||g_w||,
    d = (g0 + c ||g0|| / ||g_w*|| g_w*) / r with r = 1, 1 + c^2 or 1 + c (``rescale`` 0, 1, 2).

    Args:
        schema: the problem.
        mode: ``parameter`` (the paper's setting) or ``representation``.
        c: radius of the ball around the mean gradient, relative to its norm (>= 0; 0 gives the mean; the paper
            uses 0.4 to 0.5).
        rescale: 0 (no rescaling), 1 (divide by 1 + c^2, the official default) or 2 (divide by 1 + c).
    """

    needs = frozenset({"gram"})
    order_invariant = True

    def __init__(self, schema: Schema, mode: Mode = "parameter", c: float = 0.5, rescale: int = 1) -> None:
        super().__init__(schema, mode)
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            raise TypeError(f"c must be a number, got {c!r}")
        if not (math.isfinite(c) and c >= 0.0):
            raise ValueError(f"c must be a finite number >= 0, got {c}")
        if isinstance(rescale, bool) or rescale not in RESCALES:
            raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}")
        self.c = float(c)
        self.rescale = rescale

    def reset(self) -> None:
        """Stateless."""

    def weights(self, gram: Tensor) -> Tensor:
        t = gram.shape[0]
        weights = np.full(t, 1.0 / t)
        if self.c > 0.0 and t > 0:
            g = unit_diagonal(solver_array(gram))
            w = cagrad_array(g, self.c)
            k = self.c * math.sqrt(max(float(weights @ g @ weights), 0.0))
            norm = math.sqrt(max(float(w @ g @ w), 0.0))
            if norm > _ZERO_NORM:
                weights = weights + (k / norm) * w
        divisor = (1.0, 1.0 + self.c**2, 1.0 + self.c)[self.rescale]
        return weights_tensor(weights / divisor, gram)
