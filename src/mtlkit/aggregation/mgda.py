"""MGDA: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

The update is the min-norm point of the convex hull of the (normalised) task gradients,

    alpha = argmin_{alpha in simplex} || sum_i alpha_i g_i / n_i ||^2,     d = sum_i (alpha_i / n_i) g_i,

a direction along which no task's loss increases (d = 0 at a Pareto-stationary point). The problem only involves
the Gram matrix: with f_i = 1 / n_i it is min alpha^T (f f^T * G) alpha over the simplex, solved in closed form
for two tasks, gamma = clip(((g2 - g1).g2) / ||g1 - g2||^2, 0, 1) on g1, and by Frank-Wolfe beyond (started from the minimiser on the affine hull, see :func:`min_norm_weights`).

Normalisations n_i (section 3.3 of the paper): ``none`` 1, ``l2`` ||g_i||, ``loss`` L_i, ``loss+`` L_i ||g_i||,
with L_i the task losses received by ``observe_losses``. :meth:`MGDA.weights` returns alpha_i / n_i, the weights
of the raw gradients. A zero n_i (zero gradient, zero loss) makes that normalised gradient the zero vector, so
the min-norm point, and the update, is 0.

Scale conventions for identical task gradients g (losses L_i): ``none`` -> g, ``l2`` -> g / ||g||,
``loss`` -> g / max_i L_i, ``loss+`` -> (g / ||g||) / max_i L_i.

:func:`min_norm_weights` (the solver on a Gram matrix) is shared with PE-LTR.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from mtlkit.aggregation.base import (
    GradientAggregator,
    Mode,
    dot,
    solve_lists,
    solver_array,
    solver_lists,
    weights_tensor,
)
from mtlkit.errors import MtlkitError
from mtlkit.schema import Schema

Normalization = Literal["none", "l2", "loss", "loss+"]
NORMALIZATIONS = ("none", "l2", "loss", "loss+")


#: float64 machine epsilon (the solvers run in float64)
_EPS = float(np.finfo(np.float64).eps)


def check_solver(max_iter: int, tol: float) -> None:
    """Validate the Frank-Wolfe settings shared by MGDA and PE-LTR."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, int):
        raise TypeError(f"max_iter must be an int, got {max_iter!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise TypeError(f"tol must be a number, got {tol!r}")
    if not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be > 0, got {tol}")


def min_norm_weights(gram: Tensor, max_iter: int = 250, tol: float = 1e-6) -> Tensor:
    """argmin of alpha^T G alpha over the simplex, from the Gram matrix G [T, T]: alpha [T] in G's dtype and on
    its device.

    Two tasks: the closed form (1/2 each when the two gradients coincide). More: Frank-Wolfe in its pairwise
    variant (Lacoste-Julien & Jaggi, NeurIPS 2015): each step moves weight from the worst vertex in use,
    argmax_s (G alpha)_s, to the best, argmin_t (G alpha)_t, with an exact line search. Plain Frank-Wolfe
    zigzags (sublinear rate) when the optimum lies inside a face; the pairwise step converges linearly. It
    starts from the minimiser on the affine hull (G^-1 1 / 1^T G^-1 1, negative entries clipped, then
    renormalised; equal weights when G is singular), which is the answer whenever it lies in the simplex
    (nearly orthogonal gradients), so the first duality-gap check usually ends the search. Stops when the
    duality gap certifies a relative suboptimality <= ``tol``: 2 (alpha^T G alpha - min_t (G alpha)_t) <= tol
    alpha^T G alpha, when the objective is zero to float64 precision relative to max_i G_ii (a
    Pareto-stationary point: d = 0), or after ``max_iter`` steps.
    """
    return weights_tensor(min_norm_lists(solver_lists(gram), max_iter, tol), gram)


def _affine_start(g: list[list[float]]) -> list[float]:
    """Frank-Wolfe's starting point (see :func:`min_norm_weights`)."""
    t = len(g)
    x = solve_lists(g, [1.0] * t)
    uniform = [1.0 / t] * t
    if x is None:
        return uniform
    x = [max(v, 0.0) for v in x]
    total = math.fsum(x)
    if not math.isfinite(total) or total <= 0.0:
        return uniform
    return [v / total for v in x]


def min_norm_lists(g: list[list[float]], max_iter: int = 250, tol: float = 1e-6) -> list[float]:
    """:func:`min_norm_weights` on the Gram matrix as float64 Python lists: the pairwise steps keep G alpha up to
    date in O(T) each, and the small solves run in plain Python (see ``unit_diagonal_lists``)."""
    t = len(g)
    if t == 1:
        return [1.0]
    if t == 2:
        g11, g12, g22 = g[0][0], g[0][1], g[1][1]
        curvature = g11 - 2 * g12 + g22  # ||g1 - g2||^2
        gamma = min(1.0, max(0.0, (g22 - g12) / curvature)) if curvature > 0 else 0.5
        return [gamma, 1.0 - gamma]
    if not all(math.isfinite(x) for row in g for x in row):
        return [math.nan] * t
    diag = [row[i] for i, row in enumerate(g)]
    columns = [list(column) for column in zip(*g, strict=True)]
    alpha = _affine_start(g)
    g_alpha = [dot(row, alpha) for row in g]  # G alpha
    negligible = _EPS * max(diag)
    for _ in range(max_iter):
        objective = dot(alpha, g_alpha)
        best = min(range(t), key=g_alpha.__getitem__)
        if 2 * (objective - g_alpha[best]) <= tol * objective or objective <= negligible:
            break
        worst = max((s for s in range(t) if alpha[s] > 0), key=g_alpha.__getitem__)
        curvature = diag[worst] - 2 * g[worst][best] + diag[best]  # ||g_worst - g_best||^2
        if curvature <= 0:
            break
        step = min((g_alpha[worst] - g_alpha[best]) / curvature, alpha[worst])
        alpha[best] += step
        alpha[worst] -= step
        up, down = columns[best], columns[worst]
        g_alpha = [x + step * (u - v) for x, u, v in zip(g_alpha, up, down, strict=True)]
    return alpha


class MGDA(GradientAggregator):
    """MGDA (Sener & Koltun, NeurIPS 2018): d = argmin ||d|| over d in conv{g_i / n_i}.

    Weights alpha_i / n_i with alpha the min-norm convex combination of the normalised gradients (see the module
    docstring for n_i and the scale of the update).

    State: the last task losses from ``observe_losses`` (buffer ``losses``, NaN until seen), used by the
    ``loss`` and ``loss+`` normalisations (the other normalisations check their shape and do not keep them).

    Args:
        mode: where the engine takes the per-task gradients (see :class:`GradientAggregator`).
        normalization: ``none``, ``l2`` (g_i / ||g_i||), ``loss`` (g_i / L_i) or ``loss+`` (g_i / (L_i ||g_i||)).
        max_iter: Frank-Wolfe steps at most (>= 1; three tasks or more).
        tol: relative suboptimality of the objective at which Frank-Wolfe stops (> 0).
    """

    losses: Tensor

    def __init__(
        self,
        schema: Schema,
        mode: Mode = "parameter",
        normalization: Normalization = "none",
        max_iter: int = 250,
        tol: float = 1e-6,
    ) -> None:
        super().__init__(schema, mode)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {', '.join(map(repr, NORMALIZATIONS))}, got {normalization!r}"
            )
        check_solver(max_iter, tol)
        self.normalization = normalization
        self.max_iter = max_iter
        self.tol = float(tol)
        self.register_buffer("losses", torch.full((len(schema.tasks),), math.nan))

    def observe_losses(self, losses: Tensor) -> None:
        if losses.shape != self.losses.shape:
            raise ValueError(
                f"MGDA: expected one loss per task ({len(self.task_names)}: {list(self.task_names)}), "
                f"got shape {list(losses.shape)}"
            )
        if self.normalization in ("loss", "loss+"):  # the only normalisations that read them
            with torch.no_grad():
                self.losses.copy_(losses.detach())

    def reset(self) -> None:
        self.losses.fill_(math.nan)

    def _inverse_norms(self, gram: np.ndarray) -> np.ndarray:
        """f_i = 1 / n_i (0 where n_i = 0), float64 (numpy) like ``gram``."""
        n = np.ones(gram.shape[0])
        if self.normalization in ("l2", "loss+"):
            n = n * np.sqrt(np.clip(np.diagonal(gram), 0.0, None))
        if self.normalization in ("loss", "loss+"):
            losses = solver_array(self.losses)
            if not bool(np.isfinite(losses).all()) or bool((losses < 0).any()):
                raise MtlkitError(
                    f"MGDA(normalization={self.normalization!r}) divides each gradient by its task loss and needs "
                    f"finite losses >= 0 from observe_losses() before each step, got {losses.tolist()}"
                )
            n = n * losses
        return np.divide(1.0, n, out=np.zeros_like(n), where=n > np.finfo(np.float64).tiny)

    def weights(self, gram: Tensor) -> Tensor:
        if self.normalization == "none":
            return min_norm_weights(gram, self.max_iter, self.tol)
        g = solver_array(gram)
        f = self._inverse_norms(g)
        scaled = min_norm_lists((g * f[:, None] * f[None, :]).tolist(), self.max_iter, self.tol)
        return weights_tensor(np.array(scaled) * f, gram)
