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
invertible the solution is the paper's alpha. The system is solved with ``numpy.linalg.solve``; when it is
singular (numerically: smallest singular value <= sqrt(eps) of the input dtype times the largest, e.g. identical
gradients) the minimum-norm least-squares solution (pseudo-inverse) is used instead, which for identical
gradients gives equal weights. A zero gradient gets alpha_i = 0 and no equation. When the constraint cannot be met
(sum alpha = 0) the weights are 0.

Scale convention: identical task gradients g give g (weights 1/T). Opposite gradients give 0. The common
projection lambda can be negative for strongly conflicting gradients, as in the paper's closed form.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, solver_array, weights_tensor
from mtlkit.schema import Schema


def imtl_weights(cosine: np.ndarray, norms: np.ndarray, rtol: float) -> np.ndarray:
    """alpha [T] from the cosine matrix [T, T] and the gradient norms [T] (float64 numpy; see module docstring)."""
    t = norms.shape[0]
    live = np.isfinite(norms) & (norms > 0)
    if not live.any():
        return np.zeros(t)
    top = norms[live].max()
    rel = np.where(live, norms / top, 1.0)  # in (0, 1] for live tasks
    inv = np.where(live, 1.0 / rel, 0.0)
    both = live[:, None] & live[None, :]
    c = np.where(both, np.clip(cosine, -1.0, 1.0), 0.0)
    np.fill_diagonal(c, 1.0)  # unit vectors, exact 1 despite rounding; a dead task: beta_i = 0, no condition
    system = np.zeros((t + 1, t + 1))
    system[:t, :t] = c
    system[:t, t] = np.where(live, -1.0, 0.0)
    scale = inv.max()
    system[t, :t] = inv / scale
    rhs = np.zeros(t + 1)
    rhs[t] = 1.0 / scale
    singular = np.linalg.svd(system, compute_uv=False)
    solution = None
    if singular[-1] > rtol * singular[0]:
        try:
            solution = np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError:
            solution = None
    if solution is None or not np.isfinite(solution).all():
        solution = np.linalg.pinv(system, rcond=rtol) @ rhs
    alpha = np.where(live, solution[:t] * inv, 0.0)
    total = alpha.sum()
    if not np.isfinite(alpha).all() or abs(total) <= rtol * np.abs(alpha).sum():
        return np.zeros_like(alpha)
    return alpha / total  # sum exactly 1 (a no-op up to rounding when the system was solved exactly)


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
        g = solver_array(gram)
        norms = np.sqrt(np.clip(np.diagonal(g), 0.0, None))
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        cosine = g * inv[:, None] * inv[None, :]
        # the Gram matrix is float64 but, for float32 gradients, only float32-accurate: singularity is judged at
        # that precision
        rtol = math.sqrt(max(torch.finfo(torch.float32).eps, torch.finfo(gram.dtype).eps))
        return weights_tensor(imtl_weights(cosine, norms, rtol), gram)

    def reset(self) -> None:
        """Stateless."""
