"""MGDA: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.

The update is the min-norm point of the convex hull of the (normalised) task gradients,

    alpha = argmin_{alpha in simplex} || sum_i alpha_i g_i / n_i ||^2,     d = sum_i (alpha_i / n_i) g_i,

a direction along which no task's loss increases (d = 0 at a Pareto-stationary point). The problem only involves
the Gram matrix: with f_i = 1 / n_i it is min alpha^T (f f^T * G) alpha over the simplex, solved in closed form
for two tasks, gamma = clip(((g2 - g1).g2) / ||g1 - g2||^2, 0, 1) on g1, and by Frank-Wolfe beyond.

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

from mtlkit.aggregation.base import GradientAggregator, Mode
from mtlkit.errors import MtlkitError
from mtlkit.schema import Schema

Normalization = Literal["none", "l2", "loss", "loss+"]
NORMALIZATIONS = ("none", "l2", "loss", "loss+")


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


def solver_copy(gram: Tensor) -> Tensor:
    """The [T, T] matrix as a float64 CPU tensor: the small solves run there, in double precision."""
    return gram.detach().to(device="cpu", dtype=torch.float64)


def min_norm_weights(gram: Tensor, max_iter: int = 250, tol: float = 1e-6) -> Tensor:
    """argmin of alpha^T G alpha over the simplex, from the Gram matrix G [T, T] (float64, CPU).

    Two tasks: the closed form (1/2 each when the two gradients coincide). More: Frank-Wolfe in its pairwise
    variant (Lacoste-Julien & Jaggi, NeurIPS 2015), started from equal weights: each step moves weight from the
    worst vertex in use, argmax_s (G alpha)_s, to the best, argmin_t (G alpha)_t, with an exact line search. Plain
    Frank-Wolfe zigzags (sublinear rate) when the optimum lies inside a face; the pairwise step converges
    linearly. Stops when the duality gap certifies a relative suboptimality <= ``tol``:
    2 (alpha^T G alpha - min_t (G alpha)_t) <= tol alpha^T G alpha, when the objective is zero to float64
    precision relative to max_i G_ii (a Pareto-stationary point: d = 0), or after ``max_iter`` steps.
    """
    t = gram.shape[0]
    if t == 1:
        return gram.new_ones(1)
    if t == 2:
        g11, g12, g22 = gram[0, 0], gram[0, 1], gram[1, 1]
        curvature = g11 - 2 * g12 + g22  # ||g1 - g2||^2
        gamma = ((g22 - g12) / curvature).clamp(0.0, 1.0) if curvature > 0 else gram.new_tensor(0.5)
        return torch.stack([gamma, 1 - gamma])
    # the loop runs on a numpy copy: each step is a handful of operations on T numbers, where torch's per-call
    # overhead (microseconds) would dominate
    g = gram.detach().cpu().numpy()
    alpha = np.full(t, 1.0 / t)
    diag = np.diagonal(g)
    negligible = np.finfo(g.dtype).eps * diag.max()
    for _ in range(max_iter):
        g_alpha = g @ alpha
        objective = alpha @ g_alpha
        best = int(np.argmin(g_alpha))
        gap = objective - g_alpha[best]
        if 2 * gap <= tol * objective or objective <= negligible:
            break
        worst = int(np.argmax(np.where(alpha > 0, g_alpha, -np.inf)))
        curvature = diag[worst] - 2 * g[worst, best] + diag[best]  # ||g_worst - g_best||^2
        if curvature <= 0:
            break
        step = min((g_alpha[worst] - g_alpha[best]) / curvature, alpha[worst])
        alpha[best] += step
        alpha[worst] -= step
    return torch.from_numpy(alpha).to(dtype=gram.dtype, device=gram.device)


class MGDA(GradientAggregator):
    """MGDA (Sener & Koltun, NeurIPS 2018): d = argmin ||d|| over d in conv{g_i / n_i}.

    Weights alpha_i / n_i with alpha the min-norm convex combination of the normalised gradients (see the module
    docstring for n_i and the scale of the update).

    State: the last task losses from ``observe_losses`` (buffer ``losses``, NaN until seen), used by the
    ``loss`` and ``loss+`` normalisations.

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
        with torch.no_grad():
            self.losses.copy_(losses.detach())

    def reset(self) -> None:
        self.losses.fill_(math.nan)

    def _inverse_norms(self, gram: Tensor) -> Tensor:
        """f_i = 1 / n_i (0 where n_i = 0), float64 on the CPU like ``gram``."""
        n = torch.ones_like(gram.diagonal())
        if self.normalization in ("l2", "loss+"):
            n = n * gram.diagonal().clamp(min=0).sqrt()
        if self.normalization in ("loss", "loss+"):
            losses = solver_copy(self.losses)
            if not bool(torch.isfinite(losses).all()) or bool((losses < 0).any()):
                raise MtlkitError(
                    f"MGDA(normalization={self.normalization!r}) divides each gradient by its task loss and needs "
                    f"finite losses >= 0 from observe_losses() before each step, got {losses.tolist()}"
                )
            n = n * losses
        usable = n > torch.finfo(n.dtype).tiny
        return torch.where(usable, 1.0 / torch.where(usable, n, torch.ones_like(n)), torch.zeros_like(n))

    def weights(self, gram: Tensor) -> Tensor:
        g = solver_copy(gram)
        f = self._inverse_norms(g)
        alpha = min_norm_weights(g * f[:, None] * f[None, :], self.max_iter, self.tol)
        return (alpha * f).to(device=gram.device, dtype=gram.dtype)
