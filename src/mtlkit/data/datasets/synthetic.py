"""The synthetic data of the MMoE paper, with a controlled task correlation.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018,
section 3.2. With orthonormal u_1, u_2 in R^d, scale c and correlation p:

    w_1 = c u_1,  w_2 = c (p u_1 + sqrt(1 - p^2) u_2),  x ~ N(0, I_d),
    y_k = w_k . x + sum_{i=1..m} sin(alpha_i w_k . x + beta_i) + eps_k,  eps_k ~ N(0, 0.01).

cos(w_1, w_2) = p, and the label correlation rises with p (the paper's Figure 2).

Generalisation to T tasks: w_k = c sum_j L_kj u_j where L is the Cholesky factor of the target correlation
matrix G = (1 - p) I + p 11^T, so cos(w_i, w_j) = p for every pair (G is positive semi-definite for
p >= -1/(T-1)). For T = 2 this is exactly the paper's construction.

Constants the paper leaves open, and the values chosen here (all parameters):

* d = 100 inputs: the scale of the paper's experiments (100-dimensional input).
* c = 1: keeps w_k . x ~ N(0, 1), so the linear part and the bounded sine part are of comparable size.
* m = 5 sine terms: with m = 10 the sine part dominates and the label correlation at p = 0.5 is only
  0.24 +- 0.17 over seeds; m = 5 gives 0.37 +- 0.08 and 0.82 at p = 0.9, still clearly non-linear
  (measured on 20,000 rows, seeds 0-2; see docs/decisions.md).
* alpha_i, beta_i ~ N(0, 1), drawn once per seed and shared by all tasks, so tasks differ only through w_k
  (the paper's "given parameters").
* noise standard deviation 0.1, i.e. the paper's variance 0.01.

The binary variant labels y_k > median(y_k) (each task balanced at 50 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mtlkit.data.columns import Origin
from mtlkit.data.datasets import Splits
from mtlkit.data.datasets.common import make_splits
from mtlkit.errors import DataError
from mtlkit.schema import Feature, Schema, Task, TaskKind


@dataclass(frozen=True)
class SyntheticData:
    """Raw generated arrays: inputs x [N, d], labels y [N, T], task weight vectors w [T, d], alpha, beta."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


def correlation_factor(tasks: int, correlation: float) -> np.ndarray:
    """Lower-triangular L with L L^T = (1 - p) I + p 11^T; zero pivots allowed (p = 1 gives equal rows)."""
    if tasks < 1:
        raise DataError(f"tasks must be >= 1, got {tasks}")
    low = -1.0 / (tasks - 1) if tasks > 1 else -1.0
    if not (low - 1e-12 <= correlation <= 1.0):
        raise DataError(
            f"correlation must be in [{low:g}, 1] for {tasks} tasks (else no such vectors exist), "
            f"got {correlation}"
        )
    g = np.full((tasks, tasks), correlation, dtype=np.float64)
    np.fill_diagonal(g, 1.0)
    factor = np.zeros_like(g)
    for j in range(tasks):
        pivot = g[j, j] - factor[j, :j] @ factor[j, :j]
        factor[j, j] = math.sqrt(max(pivot, 0.0))
        for i in range(j + 1, tasks):
            rest = g[i, j] - factor[i, :j] @ factor[j, :j]
            factor[i, j] = rest / factor[j, j] if factor[j, j] > 1e-12 else 0.0
    return factor


def generate_synthetic(
    rows: int,
    correlation: float = 0.5,
    tasks: int = 2,
    dim: int = 100,
    scale: float = 1.0,
    sines: int = 5,
    noise_std: float = 0.1,
    seed: int = 0,
) -> SyntheticData:
    """Draw ``rows`` examples of the MMoE synthetic problem (see the module docstring for the formula)."""
    if rows < 1:
        raise DataError(f"rows must be >= 1, got {rows}")
    if dim < tasks:
        raise DataError(f"dim must be >= tasks ({tasks}) to hold {tasks} orthogonal vectors, got {dim}")
    if sines < 0 or noise_std < 0 or scale <= 0:
        raise DataError(
            f"need sines >= 0, noise_std >= 0 and scale > 0, got sines={sines}, "
            f"noise_std={noise_std}, scale={scale}"
        )
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, tasks)))  # orthonormal columns u_1..u_T
    w = scale * correlation_factor(tasks, correlation) @ basis.T  # [T, d]
    alpha = rng.standard_normal(sines)
    beta = rng.standard_normal(sines)
    x = rng.standard_normal((rows, dim))
    z = x @ w.T  # [N, T]: w_k . x
    y = z + np.sin(z[:, :, None] * alpha + beta).sum(axis=2)
    y += noise_std * rng.standard_normal(y.shape)
    return SyntheticData(x, y, w, alpha, beta)


def load_synthetic(
    correlation: float = 0.5,
    tasks: int = 2,
    train_rows: int = 10_000,
    valid_rows: int = 1_000,
    test_rows: int = 1_000,
    dim: int = 100,
    scale: float = 1.0,
    sines: int = 5,
    noise_std: float = 0.1,
    binary: bool = False,
    seed: int = 0,
) -> Splits:
    """The MMoE synthetic data as Splits: numeric features ``x1..x<dim>``, tasks ``y1..y<tasks>``.

    Regression tasks (MSE) by default; ``binary=True`` thresholds each task at its median (AUC).
    """
    for name, value in (
        ("train_rows", train_rows),
        ("valid_rows", valid_rows),
        ("test_rows", test_rows),
    ):
        if value < 1:
            raise DataError(f"{name} must be >= 1, got {value}")
    total = train_rows + valid_rows + test_rows
    data = generate_synthetic(total, correlation, tasks, dim, scale, sines, noise_std, seed)
    y = data.y
    if binary:
        y = (y > np.median(y, axis=0)).astype(np.float64)
    features = tuple(Feature(f"x{i + 1}", "numeric") for i in range(dim))
    kind: TaskKind = "binary" if binary else "regression"
    task_list = tuple(Task(f"y{k + 1}", kind) for k in range(tasks))
    schema = Schema(features, task_list)
    columns = {f.name: data.x[:, i] for i, f in enumerate(features)}
    columns.update({t.name: y[:, k] for k, t in enumerate(task_list)})
    arrow = pa.table(columns)
    bounds = {"train": (0, train_rows), "valid": (train_rows, train_rows + valid_rows)}
    bounds["test"] = (train_rows + valid_rows, total)
    parts = {
        part: (arrow.slice(lo, hi - lo), Origin(f"<synthetic {part}>")) for part, (lo, hi) in bounds.items()
    }
    note = (
        f"MMoE synthetic data (Ma et al. 2018, sec. 3.2): {tasks} {kind} tasks, correlation {correlation}, "
        f"d={dim}, m={sines}, c={scale}, noise sd {noise_std}, seed {seed}; "
        f"{train_rows}/{valid_rows}/{test_rows} train/valid/test rows"
    )
    return make_splits("synthetic", schema, parts, note)
