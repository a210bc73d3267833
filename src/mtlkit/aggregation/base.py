"""The GradientAggregator contract: per-task gradients [T, D] in, one update direction [D] out.

The backward engine (``mtlkit.backward``) computes the per-task gradients, of the shared parameters
(``mode="parameter"``: D = number of shared weights) or of the shared representation ``Output.shared``
(``mode="representation"``, the MGDA-UB trick: D = batch x representation width), hands them to the aggregator
and writes the result into ``.grad``. Aggregators return tensors and never call backward.

Most methods are a weighting of the task gradients, d = sum_i w_i g_i, with weights that depend only on the Gram
matrix G = J J^T [T, T]: they implement :meth:`weights` and declare ``needs = {"gram"}``; the direction is
``weights(G) @ J``, with G from :func:`gram_matrix` (float64, the true scale of the gradients, exact for tiny and
huge ones) and the sum formed by :func:`combine`. Methods that act on the coordinates of the gradients (GradDrop)
override :meth:`forward` and declare ``needs = {"jacobian"}``.

The T x T solves iterate on Python floats (:func:`unit_diagonal_lists`, :func:`psd_unit_diagonal`), with their
matrix products and linear systems in plain Python up to ``SMALL_SYSTEM`` tasks and numpy beyond
(:class:`SmallGram`, :func:`solve_lists`), and at most one LAPACK call where they need a decomposition (IMTL's
singular values, Aligned-MTL's eigenvectors): inside a training step each distinct numpy or torch call costs
20-40 us (docs/decisions.md).
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from mtlkit.errors import MtlkitError
from mtlkit.schema import Schema

if TYPE_CHECKING:
    from mtlkit.data.table import Table

Mode = Literal["parameter", "representation"]
MODES = ("parameter", "representation")

#: Length of the slices of a gradient row whose products are summed by one small matmul each (see _row_products).
GRAM_CHUNK = 4096

#: Largest T x D for which :func:`_row_products` is one plain matmul (beyond it, the sliced form).
GRAM_PLAIN_LIMIT = 400_000

#: ATen's CPU bmm runs a scalar loop when m * n * k is below this (LinearAlgebra.cpp).
BMM_NAIVE_LIMIT = 400


def _row_products(rows: Tensor) -> Tensor:
    """rows @ rows.T [T, T] for a wide matrix [T, D], as a batched matmul over slices of ~GRAM_CHUNK columns.

    One [T, D] x [D, T] GEMM with D in the millions runs at a small fraction of the machine's rate (measured 4x
    slower on CPU at D = 1M than the sliced form); the slices also sum in a shorter chain (better rounding). Up to
    ``GRAM_PLAIN_LIMIT`` entries the plain GEMM is the cheaper call (measured with the caches flushed between
    calls, as in a training step: 56 vs 165 us at T = 2, D = 12,928, the paper-size MMoE's experts; 145 vs 176 us
    at T = 5, D = 65,536; even around T D = 400,000; the sliced form 2-3x faster from T D = 1,000,000 up).
    """
    t, d = rows.shape
    if t * d <= GRAM_PLAIN_LIMIT:
        return rows @ rows.T
    chunks = max(1, d // GRAM_CHUNK)
    width = d // chunks
    main = chunks * width
    sliced = rows[:, :main].reshape(t, chunks, width).transpose(0, 1)  # [C, T, L]
    products = torch.bmm(sliced, sliced.transpose(1, 2)).sum(0)
    if main < d:
        rest = rows[:, main:]
        products = products + rest @ rest.T
    return products


def gram_matrix(jacobian: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The Gram matrix of the task gradients, in float64 at their true scale, and how it was formed.

    Returns ``(gram, rows, scales)`` with J = diag(scales) @ rows and gram = J J^T [T, T] (float64, on J's device).
    Usually ``rows`` is J itself (scales 1) and the only pass over J is one matmul. When a row's squared norm is
    outside the range where its products are exact in J's dtype (float32: a gradient of 1e-20 squares to 0, one of
    1e20 to inf), each row is first divided by its largest absolute entry, so neither under- nor overflow, and the
    scales multiply back in float64. :func:`combine` forms sum_i w_i g_i from the same ``rows`` and ``scales``.
    """
    if not jacobian.is_floating_point():
        raise TypeError(f"per-task gradients must be floating point, got {jacobian.dtype}")
    rows = jacobian.detach()
    if not rows.is_contiguous():
        rows = rows.contiguous()
    products = _row_products(rows)
    inexact = _inexact_rows(products.tolist(), rows.dtype)
    # a zero squared norm is a zero row, or entries whose squares underflow: one look at those rows tells
    fits = inexact is not None and not (inexact and bool(rows[inexact].any()))
    if fits:
        return products.double(), rows, torch.ones(rows.shape[0], dtype=torch.float64, device=rows.device)
    peak = rows.abs().amax(dim=1)
    peak = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak))
    rows = rows / peak[:, None]
    scales = peak.double()
    return _row_products(rows).double() * scales[:, None] * scales[None, :], rows, scales


#: Largest |sum_t c_t g_t| entry bound for which a combination is formed in float32 (far from its 3.4e38).
COMBINE_BOUND = 1e30


def _inexact_rows(values: list[list[float]], dtype: torch.dtype) -> list[int] | None:
    """How exact a Gram matrix formed in ``dtype`` is (given as ``tolist()``: T x T numbers, where plain Python
    is cheaper than any tensor operation): None when an entry is not finite, else the tasks whose squared norm
    is not far from under- and overflow in ``dtype`` (an empty list: exact to that precision). Exactly-zero
    squared norms are among the returned tasks: a zero row, or entries whose squares underflow (below ~1e-23 in
    float32); only the caller can tell which."""
    if not all(math.isfinite(x) for row in values for x in row):
        return None
    return _out_of_range([row[i] for i, row in enumerate(values)], dtype)


def _out_of_range(squared_norms: list[float], dtype: torch.dtype) -> list[int] | None:
    """:func:`_inexact_rows` for the squared norms alone (None when one is not finite)."""
    info = torch.finfo(dtype)
    low, high = info.tiny / info.eps, info.max * info.eps
    if not all(math.isfinite(x) for x in squared_norms):
        return None
    return [i for i, x in enumerate(squared_norms) if not low <= x <= high]


#: ``needs`` of a method whose direction is a weighting of the task gradients computed from their Gram matrix.
GRAM_ONLY: frozenset[str] = frozenset({"gram"})

#: Range of |c_t| for which GatedJacobian.scalable lets the engine scale the upstream gradients by the weights.
SCALABLE = (1e-6, 1e6)


class GatedJacobian:
    """The per-task gradients at a gated mixture's experts, [T, B*E*d], held as its two factors.

    Row t at (b, e, k) is ``weights[b, t, e] * upstream[b, t, k]`` (gate weights [B, T, E], gradients at the
    tower inputs [B, T, d]; see :class:`~mtlkit.models.base.GatedMix`). The Gram matrix and any combination
    sum_t c_t g_t are formed from the factors (O(B T^2 (E + d)) and one batched matmul) without building the
    T x B x E x d matrix; :meth:`dense` builds it for the methods that need coordinates.

    Precision: products are formed in the factors' dtype and checked afterwards, with no pass over the factors
    to find their range. The Gram matrix (and the squared norms) are recomputed in float64 when a squared norm
    is zero or outside the range the dtype holds exactly; a combination is formed in the factors' dtype when its
    entries are bounded well inside that dtype's range (by sum_t |c_t| ||g_t||, once the norms are known, or
    because every |c_t| <= 1), else in float64.
    """

    def __init__(self, weights: Tensor, upstream: Tensor) -> None:
        if weights.dim() != 3 or upstream.dim() != 3 or weights.shape[:2] != upstream.shape[:2]:
            raise ValueError(
                f"GatedJacobian needs gate weights [B, T, E] and upstream gradients [B, T, d] with the same B and T, "
                f"got {list(weights.shape)} and {list(upstream.shape)}"
            )
        self.weights = weights.detach()
        self.upstream = upstream.detach()
        # ||g_t||^2, kept once a Gram matrix or the squared norms were formed: they bound a combination's entries
        self._norms: list[float] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        b, t, e = self.weights.shape
        return t, b * e * self.upstream.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.upstream.dtype

    def gram(self) -> Tensor:
        """J J^T [T, T] in float64: sum_b (w_b w_b^T) * (u_b u_b^T), formed in the gradients' dtype and redone in
        float64 when that is not exact (see the class docstring)."""
        w, u = self.weights, self.upstream
        gram = (torch.bmm(w, w.transpose(1, 2)) * torch.bmm(u, u.transpose(1, 2))).sum(0)
        values = gram.tolist()
        if u.dtype != torch.float64 and _inexact_rows(values, u.dtype) != []:
            w, u = w.double(), u.double()
            gram = (torch.bmm(w, w.transpose(1, 2)) * torch.bmm(u, u.transpose(1, 2))).sum(0)
            values = gram.tolist()
        self._norms = [row[i] for i, row in enumerate(values)]
        return gram.double()

    def squared_norms(self) -> Tensor:
        """||g_t||^2 [T] in float64 (the Gram matrix's diagonal): sum_b ||w_bt||^2 ||u_bt||^2."""
        w, u = self.weights, self.upstream
        norms = ((w * w).sum(-1) * (u * u).sum(-1)).sum(0)
        values = norms.tolist()
        if u.dtype != torch.float64 and _out_of_range(values, u.dtype) != []:
            w, u = w.double(), u.double()
            norms = ((w * w).sum(-1) * (u * u).sum(-1)).sum(0)
            values = norms.tolist()
        self._norms = values
        return norms.double()

    def scalable(self, coefficients: Tensor) -> bool:
        """Whether sum_t c_t g_t may be formed by scaling the upstream factor, c_t u_t, and quantities formed from
        the scaled factor divided back by c_t (the engine does so for the gates' gradient): every |c_t| within
        ``SCALABLE`` and, when the squared norms ||g_t||^2 are known (a Gram matrix or the norms were formed;
        constant weights need neither), each inside the range the dtype holds exactly. Then c_t u_t neither over-
        nor underflows but in entries negligible against their row (or below 1e-32 anyway), and dividing back
        costs an ulp or two."""
        if self._norms is not None and _out_of_range(self._norms, self.upstream.dtype) != []:
            return False
        low, high = SCALABLE
        return all(low <= abs(c) <= high for c in coefficients.tolist())

    def combine(self, coefficients: Tensor) -> Tensor:
        """sum_t c_t g_t [B*E*d] in the gradients' dtype: one batched matmul [B, E, T] x [B, T, d], with the
        coefficients folded into the smaller factor."""
        coefficients = coefficients.detach()
        c = coefficients.tolist()
        if self._norms is not None:
            bound = sum(abs(ci) * math.sqrt(max(n, 0.0)) for ci, n in zip(c, self._norms, strict=True))
            low = all(abs(ci) <= COMBINE_BOUND for ci in c)
            in_dtype = math.isfinite(bound) and bound <= COMBINE_BOUND and low
        else:
            in_dtype = all(abs(ci) <= 1.0 for ci in c)
        w, u = self.weights, self.upstream
        dtype = u.dtype if in_dtype else torch.float64
        if dtype != u.dtype:
            w, u = w.to(dtype), u.to(dtype)
        if any(ci != 1.0 for ci in c):  # a plain sum (no conflict in PCGrad, say) needs no scaling
            scale = coefficients.to(device=u.device, dtype=dtype).view(1, len(c), 1)
            if w.shape[2] <= u.shape[2]:
                w = w * scale
            else:
                u = u * scale
        direction = torch.bmm(w.transpose(1, 2), u).view(-1)
        return direction if dtype == self.upstream.dtype else direction.to(self.upstream.dtype)

    def sign_sums(self) -> tuple[Tensor, Tensor]:
        """(sum_t max(g_t, 0), sum_t min(g_t, 0)), each [B, E, d], from the factors, for non-negative gate weights
        (softmax gates): max(w u, 0) = w max(u, 0), so both come from one batched product [B, E, T] x [B, T, 2d]
        of the weights with max(u, 0) and min(u, 0) side by side, and are the two halves of its last dimension
        (views, not contiguous). One product instead of two, and one whose size (E T 2d multiply-adds per row)
        takes ATen's BLAS path where two of E T d would take its naive loop (below 400: at E = 8, d = 16, T = 2
        the pair measured 560 us, the joined product 125 us). From E T d >= 400 up each half is its own BLAS
        product of a contiguous clamp: writing the clamps into the strided halves of one buffer cost more (MMoE
        at the paper size, representation mode, 41 interleaved rounds: GradDrop's step 2.3% faster at T = 5,
        1.6% at T = 3, where E T d = 384 stays joined: that is noise)."""
        b, t, e = self.weights.shape
        d = self.upstream.shape[2]
        if e * t * d >= BMM_NAIVE_LIMIT:
            gates = self.weights.transpose(1, 2).to(self.upstream.dtype)
            positive = torch.bmm(gates, self.upstream.clamp(min=0))
            return positive, torch.bmm(gates, self.upstream.clamp(max=0))
        signed = self.upstream.new_empty((b, t, 2 * d))
        torch.clamp(self.upstream, min=0, out=signed[..., :d])
        torch.clamp(self.upstream, max=0, out=signed[..., d:])
        sums = torch.bmm(self.weights.transpose(1, 2).to(signed.dtype), signed)  # [B, E, 2d]
        return sums[..., :d], sums[..., d:]

    def dense(self) -> Tensor:
        """The matrix itself, [T, B*E*d]."""
        b, t, e = self.weights.shape
        gate = self.weights.transpose(0, 1).unsqueeze(-1)  # [T, B, E, 1]
        # written into a [T, B, E, d] tensor: the product alone would follow its inputs' [B, T, ...] memory order,
        # and flattening the rows would copy it (measured 118 -> 41 us at T = 2, 262 -> 120 us at T = 5)
        dtype = torch.result_type(self.weights, self.upstream)
        rows = torch.empty((t, b, e, self.upstream.shape[2]), dtype=dtype, device=self.upstream.device)
        return torch.mul(gate, self.upstream.transpose(0, 1).unsqueeze(2), out=rows).view(t, -1)


def solver_array(matrix: Tensor) -> np.ndarray:
    """A float64 numpy copy of a small tensor (a Gram matrix [T, T], losses [T]): the per-step solves run there,
    where each operation on T numbers costs about a microsecond instead of torch's several."""
    if matrix.device.type != "cpu" or matrix.dtype != torch.float64:
        matrix = matrix.detach().to(device="cpu", dtype=torch.float64)
    return matrix.detach().numpy().copy()


def solver_lists(matrix: Tensor) -> list[list[float]]:
    """A small tensor (a Gram matrix [T, T]) as float64 Python lists, for the solves that run on Python floats
    (see :func:`unit_diagonal_lists`)."""
    return matrix.detach().to(torch.float64).tolist()


def unit_diagonal_lists(gram: Tensor) -> list[list[float]]:
    """G [T, T] symmetrised and divided by its largest diagonal entry (the largest squared gradient norm becomes
    1), as float64 Python lists: :func:`symmetric_unit_diagonal` without the scale (unscaled when no diagonal
    entry is positive or an entry is not finite). Solvers whose weights do not depend on a common scale run on
    it, away from under- and overflow (PCGrad's and GradVac's surgeries, CAGrad). Inside a training step each
    distinct numpy or torch call costs 20-40 us (its code is evicted by the step's kernels), more than their whole
    loop at T = 5 (docs/decisions.md)."""
    return symmetric_unit_diagonal(gram)[0]


#: Largest system :func:`solve_lists` eliminates in plain Python (beyond it numpy's LAPACK call is cheaper).
SMALL_SYSTEM = 6


def solve_lists(a: list[list[float]], b: list[float]) -> list[float] | None:
    """x with A x = b for a small square A given as lists; None when A is exactly singular (like numpy's
    LinAlgError; a nearly singular A gives large or non-finite entries, for the caller to judge).

    Up to ``SMALL_SYSTEM`` unknowns: Gaussian elimination with partial pivoting in plain Python (about 10 us for
    T = 5, where the first ``numpy.linalg.solve`` of a training step costs ~60 us; 50 us alone at T = 8); beyond,
    numpy."""
    n = len(b)
    if n > SMALL_SYSTEM:
        try:
            return np.linalg.solve(np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)).tolist()
        except np.linalg.LinAlgError:
            return None
    rows = [[*map(float, row), float(v)] for row, v in zip(a, b, strict=True)]
    for k in range(n):
        pivot = max(range(k, n), key=lambda r: abs(rows[r][k]))
        if rows[pivot][k] == 0.0:
            return None
        rows[k], rows[pivot] = rows[pivot], rows[k]
        top = rows[k]
        for r in range(k + 1, n):
            factor = rows[r][k] / top[k]
            if factor:
                rows[r] = [x - factor * y for x, y in zip(rows[r], top, strict=True)]
    x = [0.0] * n
    for k in range(n - 1, -1, -1):
        x[k] = (rows[k][n] - sum(rows[k][m] * x[m] for m in range(k + 1, n))) / rows[k][k]
    return x


class SmallGram:
    """A symmetric float64 T x T matrix (lists) for the per-step solvers whose iterates are Python floats: its
    products with a vector run in plain Python up to ``SMALL_SYSTEM`` rows and in numpy beyond, where T^2 Python
    operations cost more than numpy's calls (see :func:`solve_lists`)."""

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = rows
        self.small = len(rows) <= SMALL_SYSTEM
        self.array = np.empty((0, 0)) if self.small else np.array(rows, dtype=np.float64)

    def times(self, v: list[float]) -> list[float]:
        """G v."""
        if self.small:
            return [dot(row, v) for row in self.rows]
        return (self.array @ np.array(v, dtype=np.float64)).tolist()

    def block(self, index: list[int]) -> list[list[float]]:
        """The principal block G[index, index]."""
        return [[self.rows[i][j] for j in index] for i in index]


def dot(a: list[float], b: list[float]) -> float:
    """a . b for Python lists."""
    return sum(x * y for x, y in zip(a, b, strict=True))


def _positive_definite(a: list[list[float]]) -> bool:
    """Whether a symmetric matrix (lists) has a Cholesky factorisation: in plain Python up to ``SMALL_SYSTEM``
    rows (see :func:`solve_lists`), numpy beyond."""
    n = len(a)
    if n > SMALL_SYSTEM:
        try:
            np.linalg.cholesky(np.array(a, dtype=np.float64))
        except np.linalg.LinAlgError:
            return False
        return True
    lower = [[0.0] * n for _ in range(n)]
    for j in range(n):
        pivot = a[j][j] - sum(x * x for x in lower[j][:j])
        if not pivot > 0.0:
            return False
        lower[j][j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            lower[i][j] = (a[i][j] - dot(lower[i][:j], lower[j][:j])) / lower[j][j]
    return True


def symmetric_unit_diagonal(gram: Tensor) -> tuple[list[list[float]], float]:
    """(G', s): G symmetrised, as float64 Python lists, and divided by s, its largest diagonal entry. Unscaled,
    with s = NaN, when an entry is not finite, and with s = 0 when no diagonal entry is positive (an all-zero G):
    the callers' degenerate cases."""
    values = solver_lists(gram)
    t = len(values)
    sym = [[(values[i][j] + values[j][i]) / 2 for j in range(t)] for i in range(t)]
    if not all(math.isfinite(x) for row in sym for x in row):
        return sym, math.nan
    scale = max((sym[i][i] for i in range(t)), default=0.0)
    if scale <= 0.0:
        return sym, 0.0
    return [[x / scale for x in row] for row in sym], scale


def psd_unit_diagonal(gram: Tensor, ridge: float) -> tuple[list[list[float]], float]:
    """(G', s): :func:`symmetric_unit_diagonal` plus ``max(ridge, eps of G's dtype)`` on the diagonal, so that
    every system on G' and its principal blocks is solvable; float64 Python lists (the solvers that use it iterate
    on Python floats). When that sum is not positive definite (its Cholesky factorisation fails: eigenvalues below
    -ridge, rounding on nearly dependent gradients), G's negative eigenvalues are clipped to 0 before the ridge is
    added. When s is 0 or NaN, G' is G symmetrised, unscaled (the callers' degenerate cases: Nash-MTL, UPGrad).
    The scaling and the test run on Python floats (T x T numbers)."""
    unit, scale = symmetric_unit_diagonal(gram)
    if not scale > 0.0:  # 0 or NaN
        return unit, scale
    t = len(unit)
    shift = max(ridge, torch.finfo(gram.dtype).eps)
    ridged = [[x + (shift if i == j else 0.0) for j, x in enumerate(row)] for i, row in enumerate(unit)]
    if _positive_definite(ridged):  # the usual case: clipping would change nothing but rounding
        return ridged, scale
    eigenvalues, vectors = np.linalg.eigh(np.array(unit, dtype=np.float64))
    g = (vectors * np.clip(eigenvalues, 0.0, None)) @ vectors.T
    return (g + shift * np.eye(t)).tolist(), scale


def weights_tensor(weights: np.ndarray | list[float], like: Tensor) -> Tensor:
    """Task weights computed in numpy or on Python floats as a tensor with ``like``'s device and dtype (the Gram
    matrix's: float64 from the engine)."""
    if isinstance(weights, list):
        return torch.tensor(weights, dtype=like.dtype, device=like.device)
    if weights.dtype != np.float64 or not weights.flags.c_contiguous:
        weights = np.ascontiguousarray(weights, dtype=np.float64)
    tensor = torch.from_numpy(weights)
    return (
        tensor
        if like.device.type == "cpu" and like.dtype == torch.float64
        else tensor.to(like.device, like.dtype)
    )


def _shift(weights: Tensor, shift: float) -> Tensor:
    return weights + shift if shift else weights


def _identity(gram: Tensor) -> Tensor:
    return gram


def combine(weights: Tensor, rows: Tensor, scales: Tensor) -> Tensor:
    """sum_i weights_i g_i [D] for J = diag(scales) @ rows (see :func:`gram_matrix`), in ``rows``' dtype."""
    coefficients = weights.to(device=rows.device, dtype=torch.float64) * scales
    return coefficients.to(rows.dtype) @ rows


class GradientAggregator(nn.Module, abc.ABC):
    """Base class of gradient-level balancing methods.

    Args:
        schema: the problem (task order = row order of the gradient matrix).
        mode: where the engine takes the per-task gradients: ``parameter`` (the shared weights) or
            ``representation`` (``Output.shared``; cheaper, one backward through the shared part).

    Subclasses store every constructor hyperparameter under its own name so that ``repr`` mirrors the
    constructor, keep state in buffers (``reset()`` clears it) and draw randomness from a generator they own.

    Attributes:
        needs: ``{"gram"}`` (weights from J J^T) or ``{"jacobian"}`` (the full matrix).
        order_invariant: permuting the tasks leaves the direction unchanged (False: depends on a random order).
    """

    needs: ClassVar[frozenset[str]] = GRAM_ONLY
    order_invariant: ClassVar[bool] = True
    #: Which entries of the Gram matrix ``weights`` reads: ``all``; ``diagonal`` (the squared gradient norms: a
    #: gated Jacobian then hands it a diagonal matrix without the off-diagonal products); ``none`` (the weights
    #: are constant: no Gram matrix is formed, ``weights`` gets zeros of the right size).
    gram_entries: ClassVar[Literal["all", "diagonal", "none"]] = "all"

    def __init__(self, schema: Schema, mode: Mode = "parameter") -> None:
        super().__init__()
        if mode not in MODES:
            raise MtlkitError(f"mode must be 'parameter' or 'representation', got {mode!r}")
        self.task_names = schema.task_names
        self.mode = mode

    @property
    def weighting(self) -> bool:
        """Whether the direction is a weighting of the task gradients, sum_t w_t g_t with w = ``weights(G)``
        (``needs == {"gram"}``), rather than a coordinate-wise method."""
        return self.needs == GRAM_ONLY

    def prepare(self, train: Table) -> None:
        """Called once before training starts (not on resume)."""

    def end_epoch(self, mean_losses: Tensor) -> None:
        """Called after each epoch with the epoch-average task losses [T]."""

    def observe_losses(self, losses: Tensor) -> None:
        """Receives the detached task losses [T] before ``forward`` (MGDA's loss normalisations use them)."""

    def weights(self, gram: Tensor) -> Tensor:
        """Task weights [T] from the Gram matrix [T, T] of the task gradients (gram-based methods): the update is
        sum_i w_i g_i. ``gram`` is float64 at the gradients' true scale (:func:`gram_matrix`)."""
        raise MtlkitError(f"{type(self).__name__} combines gradients coordinate-wise and has no task weights")

    def forward(self, jacobian: Tensor) -> Tensor:
        """The update direction [D] from the per-task gradients [T, D] (in J's dtype)."""
        return self.shifted(jacobian, 0.0)

    def shifted(
        self,
        jacobian: Tensor | GatedJacobian,
        shift: float,
        gram_hook: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The direction plus ``shift`` times the plain sum of the task gradients, d + shift * sum_i g_i.

        For a gram-based method (``needs == {"gram"}``: it implements :meth:`weights`, not ``forward``) this is
        sum_i (w_i + shift) g_i, one pass over J, or none when J is a :class:`GatedJacobian` (formed from its
        factors); the engine's representation mode uses shift = -1. Other methods get the dense matrix.
        ``gram_hook`` maps the Gram matrix before the weights are taken from it (under DDP the engine sums the
        processes' matrices there).
        """
        if self.weighting:
            if isinstance(jacobian, GatedJacobian):
                gated = self.gated_weights(jacobian, gram_hook)
                assert gated is not None  # a weighting
                return jacobian.combine(_shift(gated, shift))
            hook = gram_hook if gram_hook is not None else _identity
            t = jacobian.shape[0]
            if self.gram_entries == "none":
                weights = _shift(self.weights(torch.zeros(t, t, dtype=torch.float64)), shift)
                return combine(weights, jacobian.detach(), torch.ones(t, dtype=torch.float64))
            gram, rows, scales = gram_matrix(jacobian)
            return combine(_shift(self.weights(hook(gram)), shift), rows, scales)
        dense = jacobian.dense() if isinstance(jacobian, GatedJacobian) else jacobian
        direction = self(dense)
        return direction + shift * dense.sum(0) if shift else direction

    def gated_weights(
        self, jacobian: GatedJacobian, gram_hook: Callable[[Tensor], Tensor] | None = None
    ) -> Tensor | None:
        """The task weights [T] for gradients held as a :class:`GatedJacobian` (from its factors: the Gram
        matrix, only its diagonal, or nothing, as ``gram_entries`` says), or None for a method that is not a
        weighting of the task gradients (``needs != {"gram"}``)."""
        if not self.weighting:
            return None
        t = jacobian.shape[0]
        if self.gram_entries == "none":
            return self.weights(torch.zeros(t, t, dtype=torch.float64))
        hook = gram_hook if gram_hook is not None else _identity
        gram = torch.diag(jacobian.squared_norms()) if self.gram_entries == "diagonal" else jacobian.gram()
        return self.weights(hook(gram))

    @abc.abstractmethod
    def reset(self) -> None:
        """Clear accumulated state (EMA targets, random streams...)."""

    def __repr__(self) -> str:
        params = list(inspect.signature(type(self).__init__).parameters)[1:]
        shown = [f"{p}={getattr(self, p)!r}" for p in params if p != "schema" and hasattr(self, p)]
        return f"{type(self).__name__}({', '.join(shown)})"


class MeanAggregator(GradientAggregator):
    """The plain mean of the task gradients, d = (1/T) sum_i g_i (the reference direction; equal weights)."""

    gram_entries = "none"  # the weights are 1/T whatever the gradients

    def __init__(self, schema: Schema, mode: Mode = "parameter") -> None:
        super().__init__(schema, mode)

    def weights(self, gram: Tensor) -> Tensor:
        t = gram.shape[0]
        return gram.new_full((t,), 1.0 / t)

    def reset(self) -> None:
        """Stateless."""
