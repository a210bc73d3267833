"""IMTL-G: Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 (the gradient part of IMTL).

The update d = sum_i alpha_i g_i, sum_i alpha_i = 1, has equal projections on every unit task gradient
u_i = g_i / ||g_i||. The paper's closed form, with D = [g_1 - g_2, ..., g_1 - g_T] and U = [u_1 - u_2, ...,
u_1 - u_T], is alpha_{2..T} = g_1 U^T (D U^T)^-1, alpha_1 = 1 - sum_{i>=2} alpha_i.

Here the same conditions are written on the Gram matrix only, symmetrically in the tasks. With n_i = ||g_i||,
the cosine matrix C_ij = G_ij / (n_i n_j) and beta_i = alpha_i n_i / max_j n_j (the weights of the unit vectors,
up to one scale), d.u_j = lambda for every j and sum alpha = 1 read

    [ C         -1 ] [ beta   ]   [ 0 ]
    [ m / n^T    0 ] [ lambda ] = [ m / max n ],     m = min_j n_j (the last row scaled to entries <= 1),

one (T+1) x (T+1) system whose unknowns and entries are free of the gradients' scale. Where the paper's D U^T is
invertible the solution is the paper's alpha. The system is solved by Gaussian elimination
(:func:`~mtlkit.aggregation.base.solve_lists`); when it is singular (numerically: smallest singular value <=
sqrt(eps) of the input dtype times the largest, e.g. identical gradients) the minimum-norm least-squares solution
(pseudo-inverse) is used instead, which for identical gradients gives equal weights. A zero gradient gets
alpha_i = 0 and no equation. When the constraint cannot be met (sum alpha = 0) the weights are 0.

Scale convention: identical task gradients g give g (weights 1/T). Opposite gradients give 0. The common
projection lambda can be negative for strongly conflicting gradients, as in the paper's closed form.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, solve_lists, solver_lists, weights_tensor
from mtlkit.schema import Schema


def imtl_weights(cosine: list[list[float]], norms: list[float], rtol: float) -> list[float]:
    """alpha [T] from the cosine matrix [T, T] and the gradient norms [T] (see the module docstring).

    Plain Python on the (T+1) x (T+1) numbers but for one LAPACK call (the singular values that decide whether
    the system is solved or least-squared): inside a training step each distinct numpy call costs 20-40 us
    (docs/decisions.md)."""
    t = len(norms)
    live = [math.isfinite(n) and n > 0 for n in norms]
    if not any(live):
        return [0.0] * t
    top = max(n for n, alive in zip(norms, live, strict=True) if alive)
    # >= 1 for live tasks
    inv = [1.0 / (n / top) if alive else 0.0 for n, alive in zip(norms, live, strict=True)]
    scale = max(inv)
    # unit vectors: an exact 1 on the diagonal despite rounding; a dead task: beta_i = 0 and no condition
    system = [
        [
            1.0 if i == j else min(1.0, max(-1.0, cosine[i][j])) if live[i] and live[j] else 0.0
            for j in range(t)
        ]
        + [-1.0 if live[i] else 0.0]
        for i in range(t)
    ]
    system.append([x / scale for x in inv] + [0.0])
    rhs = [0.0] * t + [1.0 / scale]
    matrix = np.array(system, dtype=np.float64)
    singular = np.linalg.svd(matrix, compute_uv=False).tolist()
    solution = solve_lists(system, rhs) if singular[-1] > rtol * singular[0] else None
    if solution is None or not all(math.isfinite(x) for x in solution):
        solution = (np.linalg.pinv(matrix, rcond=rtol) @ np.array(rhs)).tolist()
    alpha = [x * y if alive else 0.0 for x, y, alive in zip(solution, inv, live, strict=False)]
    total = sum(alpha)
    if not all(math.isfinite(x) for x in alpha) or abs(total) <= rtol * sum(abs(x) for x in alpha):
        return [0.0] * t
    # sum exactly 1 (a no-op up to rounding when the system was solved exactly)
    return [x / total for x in alpha]


class IMTL(GradientAggregator):
    """IMTL-G (Liu et al., ICLR 2021): d = sum_i alpha_i g_i, sum alpha = 1, d.u_i equal for all i.

    Paper: alpha_{2..T} = g_1 U^T (D U^T)^-1 (D rows g_1 - g_i, U rows u_1 - u_i), alpha_1 = 1 - sum; here as a
    symmetric system on the cosine matrix (module docstring). Identical gradients g give g.

    Args:
        mode: where the engine takes the per-task gradients (see :class:`GradientAggregator`).
    """

    def __init__(self, schema: Schema, mode: Mode = "parameter") -> None:
        super().__init__(schema, mode)

    def weights(self, gram: Tensor) -> Tensor:
        g = solver_lists(gram)
        norms = [math.sqrt(max(row[i], 0.0)) for i, row in enumerate(g)]  # NaN stays NaN
        inv = [1.0 / n if n > 0 else 0.0 for n in norms]
        cosine = [[x * inv[i] * inv[j] for j, x in enumerate(row)] for i, row in enumerate(g)]
        # the Gram matrix is float64 but, for float32 gradients, only float32-accurate: singularity is judged at
        # that precision
        rtol = math.sqrt(max(torch.finfo(torch.float32).eps, torch.finfo(gram.dtype).eps))
        return weights_tensor(imtl_weights(cosine, norms, rtol), gram)

    def reset(self) -> None:
        """Stateless."""
