"""PE-LTR: Lin et al., "A Pareto-Efficient Algorithm for Multiple Objective Optimization in E-Commerce
Recommendation", RecSys 2019.

The weights solve MGDA's min-norm problem with lower bounds c_i on each weight (a business prior: no objective
may fall below a share of the update):

    w = argmin || sum_i w_i g_i ||^2   subject to   sum_i w_i = 1,  w_i >= c_i,   sum_i c_i < 1.

Substituting w = c + r v with r = 1 - sum_i c_i maps the feasible set one-to-one onto the simplex (v >= 0,
sum v = 1), and since sum_i v_i = 1,

    sum_i w_i g_i = sum_i v_i h_i,    h_i = q + r g_i,   q = sum_j c_j g_j,

so v is the min-norm point of conv{h_i}: MGDA on the Gram matrix H = (c^T G c) 11^T + r (Gc 1^T + 1 (Gc)^T)
+ r^2 G, solved by the same closed form / Frank-Wolfe (:func:`mtlkit.aggregation.mgda.min_norm_weights`).

Relation to the paper's PECsolver: it solves the relaxed problem (the equality constraint only, in closed form
from the KKT system, weights possibly below their bounds or negative) and then projects that solution onto the
feasible set {w >= c, sum w = 1} with a non-negative least squares step. The projection of the relaxed optimum
is feasible but in general not the constrained optimum; the substitution above solves the constrained problem
itself, and reduces to MGDA when every bound is 0.

Scale convention: identical task gradients g give g (the weights sum to 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator, Mode, solver_array, weights_tensor
from mtlkit.aggregation.mgda import check_solver, min_norm_lists, min_norm_weights
from mtlkit.schema import Schema


class PELTR(GradientAggregator):
    """PE-LTR (Lin et al., RecSys 2019): w = argmin ||sum_i w_i g_i||^2 with sum w = 1, w_i >= c_i.

    Solved exactly as MGDA on the shifted gradients q + r g_i (w = c + r v, r = 1 - sum c; module docstring).

    Args:
        mode: where the engine takes the per-task gradients (see :class:`GradientAggregator`).
        bounds: the lower bounds c_i, one per task in schema order, each >= 0, summing to < 1; None: all 0
            (plain MGDA).
        max_iter: Frank-Wolfe steps at most (>= 1; three tasks or more).
        tol: relative suboptimality of the objective at which Frank-Wolfe stops (> 0).
    """

    def __init__(
        self,
        schema: Schema,
        mode: Mode = "parameter",
        bounds: Sequence[float] | None = None,
        max_iter: int = 250,
        tol: float = 1e-6,
    ) -> None:
        super().__init__(schema, mode)
        check_solver(max_iter, tol)
        n = len(schema.tasks)
        if bounds is not None:
            if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence):
                raise TypeError(
                    f"bounds must be a sequence of numbers (one per task) or None, got {bounds!r}"
                )
            if len(bounds) != n:
                raise ValueError(
                    f"bounds must have one entry per task ({n}: {list(self.task_names)}), "
                    f"got {len(bounds)}: {list(bounds)!r}"
                )
            for name, c in zip(self.task_names, bounds, strict=True):
                if isinstance(c, bool) or not isinstance(c, (int, float)):
                    raise TypeError(f"bounds must be numbers, got {c!r} for task {name!r}")
                if not math.isfinite(c) or c < 0:
                    raise ValueError(f"bounds must be finite and >= 0, got {c!r} for task {name!r}")
            total = math.fsum(bounds)
            if total >= 1:
                raise ValueError(
                    f"bounds must sum to < 1 (the weights sum to 1), got sum {total} for {list(bounds)}"
                )
        self.bounds = None if bounds is None else tuple(float(c) for c in bounds)
        self.max_iter = max_iter
        self.tol = float(tol)

    def weights(self, gram: Tensor) -> Tensor:
        if self.bounds is None:  # c = 0, r = 1: the problem is MGDA's on G itself
            return min_norm_weights(gram, self.max_iter, self.tol)
        g = solver_array(gram)
        c = np.array(self.bounds, dtype=np.float64)
        r = 1.0 - c.sum()
        gc = g @ c
        shifted = (c @ gc) + r * (gc[:, None] + gc[None, :]) + r * r * g  # Gram of q + r g_i
        v = min_norm_lists(shifted.tolist(), self.max_iter, self.tol)
        return weights_tensor(c + r * np.array(v), gram)

    def reset(self) -> None:
        """Stateless."""
