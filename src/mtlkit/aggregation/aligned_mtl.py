"""Aligned-MTL: Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023.

Algorithm 1 of the paper, from the Gram matrix only. With G = J J^T = V diag(lambda) V^T (eigenvalues sorted
down, R = numerical rank), the balance transformation

    B = sqrt(lambda_R) V_R diag(lambda_R)^(-1/2) V_R^T

makes the aligned gradients J_hat = B J orthogonal with equal norms sqrt(lambda_R) (J_hat J_hat^T = lambda_R P_R,
P_R the projector on the range of G: a condition number of 1), and the update is J_hat^T w = (B w)^T J, i.e.
``weights = B @ w``. The paper's w are pre-defined task weights; mtlkit uses w = 1/T (the mean of the aligned
gradients, as TorchJD's default), so identical gradients g give exactly g. The official implementation sums
the aligned gradients (w = 1), a direction T times longer.

Numerics: in float64 on the CPU, G symmetrised and divided by its largest diagonal entry (B does not depend on
the scale of G, so nothing is undone); eigenvalues <= T * eps * lambda_max (eps of float32, or of the input
dtype when coarser, as the reference code) are treated as 0 and their directions dropped, so rank-deficient G
(identical or collinear gradients) gives finite weights. An all-zero G gives w (its direction is 0 anyway).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, symmetric_unit_diagonal
from mtlkit.schema import Schema


def balance_transformation(gram: Tensor) -> Tensor:
    """B = sqrt(lambda_R) V_R diag(lambda_R)^(-1/2) V_R^T [T, T] (float64, CPU) from a Gram matrix; zeros if G = 0,
    NaN if an entry of G is not finite."""
    t = gram.shape[0]
    return torch.tensor(_balance(gram), dtype=torch.float64).reshape(t, t)


def _balance(gram: Tensor) -> list[list[float]]:
    """:func:`balance_transformation` as Python lists: plain Python on the T x T numbers but for one LAPACK call
    (the eigendecomposition); inside a training step each distinct numpy or torch call costs 20-40 us
    (docs/decisions.md)."""
    unit, scale = symmetric_unit_diagonal(gram)
    t = len(unit)
    if math.isnan(scale):
        return [[math.nan] * t for _ in range(t)]
    if scale == 0.0:
        return [[0.0] * t for _ in range(t)]
    eigenvalues, vectors = np.linalg.eigh(np.array(unit, dtype=np.float64))
    lam, vec = eigenvalues.tolist(), vectors.tolist()
    eps = max(torch.finfo(torch.float32).eps, torch.finfo(gram.dtype).eps)
    keep = [k for k in range(t) if lam[k] > max(lam) * t * eps]
    low = math.sqrt(min(lam[k] for k in keep))
    root = {k: math.sqrt(lam[k]) for k in keep}
    return [[low * sum(vec[i][k] * vec[j][k] / root[k] for k in keep) for j in range(t)] for i in range(t)]


class AlignedMTL(GradientAggregator):
    """Aligned-MTL (Senushkin et al., CVPR 2023): d = (B w)^T J, B = sqrt(lambda_min) V diag(lambda)^(-1/2) V^T.

    Stateless. Task weights w = 1/T (the mean of the aligned gradients).

    Args:
        schema: the problem (task order = row order of the gradients).
        mode: ``parameter`` or ``representation`` (see :class:`GradientAggregator`).
    """

    def __init__(self, schema: Schema, mode: Mode = "parameter") -> None:
        super().__init__(schema, mode)

    def reset(self) -> None:
        """Stateless."""

    def weights(self, gram: Tensor) -> Tensor:
        """B @ (1/T) [T] (float64, on the Gram matrix's device); 1/T when G = 0."""
        t = gram.shape[0]
        b = _balance(gram)
        zero = all(x == 0.0 for row in b for x in row)  # G = 0: the direction is 0 whatever the weights
        weights = [1.0 / t] * t if zero else [sum(row) / t for row in b]
        return torch.tensor(weights, dtype=torch.float64, device=gram.device)
