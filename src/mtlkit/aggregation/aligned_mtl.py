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

import torch
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode
from mtlkit.schema import Schema


def balance_transformation(gram: Tensor) -> Tensor:
    """B = sqrt(lambda_R) V_R diag(lambda_R)^(-1/2) V_R^T (float64, CPU) from a Gram matrix; zeros if G = 0."""
    g = gram.detach().to("cpu", torch.float64)
    g = (g + g.T) / 2
    t = g.shape[0]
    scale = float(g.diagonal().max()) if t else 0.0
    if not math.isfinite(scale):
        return torch.full((t, t), float("nan"), dtype=torch.float64)
    if scale <= 0:
        return torch.zeros((t, t), dtype=torch.float64)
    eigenvalues, vectors = torch.linalg.eigh(g / scale)
    eps = max(torch.finfo(torch.float32).eps, torch.finfo(gram.dtype).eps)
    keep = eigenvalues > eigenvalues.max() * t * eps
    kept, basis = eigenvalues[keep], vectors[:, keep]
    return kept.min().sqrt() * (basis / kept.sqrt()) @ basis.T


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
        b = balance_transformation(gram)
        w = torch.full((t,), 1.0 / t, dtype=torch.float64)
        if not bool(b.any()) and bool(torch.isfinite(b).all()):
            return w.to(gram.device)
        return (b @ w).to(gram.device)
