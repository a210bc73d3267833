"""The shared Gram matrix and combination of task gradients (mtlkit.aggregation.base)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtlkit.aggregation.base import (
    GRAM_CHUNK,
    GRAM_PLAIN_LIMIT,
    SMALL_SYSTEM,
    GatedJacobian,
    combine,
    gram_matrix,
    psd_unit_diagonal,
    solve_lists,
)


@pytest.mark.parametrize(
    "width",
    # one plain matmul up to GRAM_PLAIN_LIMIT entries (4 rows), then slices of GRAM_CHUNK and a remainder
    [7, GRAM_CHUNK, 3 * GRAM_CHUNK + 5, GRAM_PLAIN_LIMIT // 4 + 3 * GRAM_CHUNK + 5],
)
def test_gram_equals_the_float64_product_for_any_width(width: int) -> None:
    jacobian = torch.randn(4, width, generator=torch.Generator().manual_seed(width))
    gram, rows, scales = gram_matrix(jacobian)
    exact = jacobian.double() @ jacobian.double().T
    assert gram.dtype == torch.float64
    torch.testing.assert_close(gram, exact, rtol=1e-5, atol=1e-5 * float(exact.abs().max()))
    assert rows.data_ptr() == jacobian.data_ptr()  # the usual case makes no copy of J
    assert torch.equal(scales, torch.ones(4, dtype=torch.float64))


def test_gram_of_tiny_and_huge_rows_is_exact_in_float64() -> None:
    base = torch.tensor([[3.0, 4.0], [0.0, 0.0], [-3.0, 4.0], [1.0, 0.0]])
    factors = torch.tensor([1e20, 1.0, 1e-25, 1.0])
    jacobian = base * factors[:, None]  # float32: 1e40 overflows, 1e-50 underflows
    gram, rows, scales = gram_matrix(jacobian)
    exact = (base.double() * factors.double()[:, None]) @ (base.double() * factors.double()[:, None]).T
    assert torch.isfinite(gram).all()
    torch.testing.assert_close(gram, exact, rtol=1e-6, atol=0.0)
    # the combination is formed from the same scaled rows: no overflow of w_i * g_i either
    weights = 1.0 / exact.diagonal().sqrt().clamp(min=1e-300) * (exact.diagonal() > 0)
    torch.testing.assert_close(combine(weights, rows, scales), torch.tensor([1.0, 1.6]))


def test_gram_rejects_integer_gradients() -> None:
    with pytest.raises(TypeError, match=r"floating point, got torch\.int64"):
        gram_matrix(torch.ones(2, 3, dtype=torch.int64))


def _gated(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weights = torch.softmax(torch.randn(6, 3, 4, generator=g), dim=2)  # [B, T, E]
    upstream = torch.randn(6, 3, 5, generator=g)  # [B, T, d]
    return weights, upstream


@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e20], ids=["moderate", "tiny", "huge"])
def test_gated_jacobian_factors_equal_the_built_matrix(scale: float) -> None:
    weights, upstream = _gated()
    upstream = upstream * scale  # float32: products of 1e-20 entries underflow, of 1e20 ones overflow
    jacobian = GatedJacobian(weights, upstream)
    dense = jacobian.dense()
    expected = torch.einsum("bte,btd->tbed", weights, upstream).reshape(3, -1)
    torch.testing.assert_close(dense, expected)
    assert jacobian.shape == (3, 6 * 4 * 5)
    exact = dense.double() @ dense.double().T
    gram = jacobian.gram()
    assert gram.dtype == torch.float64
    assert torch.isfinite(gram).all()
    torch.testing.assert_close(gram, exact, rtol=1e-6, atol=1e-8 * float(exact.abs().max()))
    c = (
        torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64) / scale
    )  # unit-norm-like weights: large for tiny g
    combined = jacobian.combine(c)
    assert torch.isfinite(combined).all()
    torch.testing.assert_close(combined.double(), c @ dense.double(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("b", "t", "e", "d"), [(6, 3, 4, 5), (64, 2, 8, 16), (32, 5, 8, 16), (4, 1, 1, 1)])
def test_gated_jacobian_sign_sums_are_those_of_the_built_matrix(b: int, t: int, e: int, d: int) -> None:
    """sum_t max(g_t, 0) and sum_t min(g_t, 0) from the factors (one batched product of the weights with max(u, 0)
    and min(u, 0) side by side, or from E T d = 400 up one product each) equal the sums over the built rows; sizes
    on both sides of ATen's switch between its naive batched-matmul loop and BLAS (E T d = 256 at the second
    size: joined, 640 at the third: two products)."""
    g = torch.Generator().manual_seed(b + t)
    weights = torch.softmax(torch.randn(b, t, e, generator=g), dim=2)
    upstream = torch.randn(b, t, d, generator=g)
    dense = GatedJacobian(weights, upstream).dense()
    positive, negative = GatedJacobian(weights, upstream).sign_sums()
    assert positive.shape == negative.shape == (b, e, d)
    torch.testing.assert_close(positive.reshape(-1), dense.clamp(min=0).sum(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(negative.reshape(-1), dense.clamp(max=0).sum(0), rtol=1e-5, atol=1e-6)


def test_gram_matrix_does_not_trust_a_zero_squared_norm() -> None:
    """Entries of 1e-25 square to exactly 0 in float32: the row is rescaled, not taken for a zero gradient; a
    truly zero row stays zero."""
    jacobian = torch.randn(3, 50, generator=torch.Generator().manual_seed(2))
    jacobian[0] *= 1e-25
    jacobian[2] = 0.0
    exact = jacobian.double() @ jacobian.double().T
    gram, rows, scales = gram_matrix(jacobian)
    assert float(gram[0, 0]) > 0.0
    assert float(gram[2, 2]) == 0.0
    torch.testing.assert_close(gram, exact, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(combine(torch.ones(3, dtype=torch.float64), rows, scales), jacobian.sum(0))


def test_gated_jacobian_redoes_in_float64_what_float32_cannot_hold() -> None:
    """Squares of 1e-25 are exactly 0 in float32: a zero squared norm is not trusted, and a task whose gradient
    is really zero (all its labels missing in the batch) stays zero."""
    weights, upstream = _gated()
    upstream[:, 0] *= 1e-25
    upstream[:, 2] = 0.0
    jacobian = GatedJacobian(weights, upstream)
    dense = jacobian.dense().double()
    exact = dense @ dense.T
    gram = jacobian.gram()
    assert float(gram[0, 0]) > 0.0
    assert float(gram[2, 2]) == 0.0
    torch.testing.assert_close(gram, exact, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(
        GatedJacobian(weights, upstream).squared_norms(), exact.diagonal(), rtol=1e-6, atol=0.0
    )
    # unit-norm weights for the tiny task (1 / ||g_0|| ~ 1e25) and a coefficient beyond float32's range
    for c in (
        1.0 / gram.diagonal().clamp(min=1e-300).sqrt(),
        torch.tensor([1e39, 1.0, 1.0], dtype=torch.float64),
    ):
        combined = jacobian.combine(c)
        assert combined.dtype == torch.float32
        expected = c @ dense
        finite = torch.isfinite(expected.float())
        torch.testing.assert_close(combined.double()[finite], expected[finite], rtol=1e-5, atol=1e-6)


def test_gated_jacobian_rejects_mismatched_factors() -> None:
    with pytest.raises(ValueError, match=r"\[B, T, E\].*got \[6, 3, 4\] and \[6, 2, 5\]"):
        GatedJacobian(torch.ones(6, 3, 4), torch.ones(6, 2, 5))


@pytest.mark.parametrize("n", [1, 2, 5, SMALL_SYSTEM, SMALL_SYSTEM + 1, 12])
def test_solve_lists_matches_numpy_on_both_sides_of_the_size_switch(n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n)) + n * np.eye(n)
    b = rng.standard_normal(n)
    x = solve_lists(a.tolist(), b.tolist())
    assert x is not None
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [3, SMALL_SYSTEM + 2])
def test_solve_lists_reports_an_exactly_singular_matrix(n: int) -> None:
    a = np.ones((n, n))  # rank one
    assert solve_lists(a.tolist(), [1.0] * n) is None
    zero_pivot = np.eye(n)
    zero_pivot[1, 1] = 0.0
    assert solve_lists(zero_pivot.tolist(), [1.0] * n) is None


def test_psd_unit_diagonal_clips_only_what_the_ridge_cannot_cover() -> None:
    ridge = 1e-12
    pd = torch.tensor([[4.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    g, scale = psd_unit_diagonal(pd, ridge)
    assert scale == 4.0
    np.testing.assert_array_equal(g, pd.numpy() / 4.0 + ridge * np.eye(2))  # no eigendecomposition
    indefinite = torch.tensor([[1.0, 1.0 + 1e-6], [1.0 + 1e-6, 1.0]], dtype=torch.float64)  # eigenvalue -1e-6
    g, scale = psd_unit_diagonal(indefinite, ridge)
    assert scale == 1.0
    assert np.linalg.eigvalsh(g).min() >= ridge * 0.5  # clipped to 0, then the ridge
    # (2 + 1e-6) v v^T with v = (1, 1) / sqrt 2
    np.testing.assert_allclose(g, np.full((2, 2), 1.0 + 5e-7), atol=1e-9)
    zero, scale = psd_unit_diagonal(torch.zeros(2, 2, dtype=torch.float64), ridge)
    assert scale == 0.0
    np.testing.assert_array_equal(zero, np.zeros((2, 2)))  # left unscaled for the caller's degenerate case


@pytest.mark.parametrize("n", [3, SMALL_SYSTEM + 2])
def test_psd_unit_diagonal_tells_definite_from_indefinite_at_any_size(n: int) -> None:
    """Both sides of the plain-Python Cholesky test's size switch: a positive definite G comes back as
    G / s + ridge exactly; one with an eigenvalue of -1e-6 (below the ridge) comes back clipped."""
    rng = np.random.default_rng(n)
    basis, _ = np.linalg.qr(rng.standard_normal((n, n)))
    spectrum = np.linspace(1.0, 2.0, n)
    definite = torch.from_numpy(basis @ np.diag(spectrum) @ basis.T)
    g, scale = psd_unit_diagonal(definite, 1e-12)
    sym = (definite.numpy() + definite.numpy().T) / 2
    np.testing.assert_array_equal(g, sym / scale + 1e-12 * np.eye(n))
    spectrum[0] = -1e-6
    g, _ = psd_unit_diagonal(torch.from_numpy(basis @ np.diag(spectrum) @ basis.T), 1e-12)
    assert np.linalg.eigvalsh(g).min() > 0.0
    assert np.linalg.eigvalsh(g).min() < 1e-9  # the negative direction was clipped to 0 (plus the ridge)


def test_psd_unit_diagonal_flags_non_finite_entries() -> None:
    gram = torch.tensor([[1.0, math.nan], [math.nan, 1.0]], dtype=torch.float64)
    _, scale = psd_unit_diagonal(gram, 1e-12)
    assert math.isnan(scale)


def test_a_gated_jacobian_is_scalable_only_with_norms_in_range_and_moderate_weights() -> None:
    from mtlkit.aggregation.base import SCALABLE, GatedJacobian

    g = torch.Generator().manual_seed(0)
    weights, upstream = torch.rand(6, 3, 4, generator=g), torch.randn(6, 3, 5, generator=g)
    jacobian = GatedJacobian(weights, upstream)
    moderate = torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64)
    assert jacobian.scalable(moderate)  # constant weights: no norms formed
    jacobian.gram()
    assert jacobian.scalable(moderate)
    low, high = SCALABLE
    for bad in (0.0, low / 2, high * 2, math.nan):
        assert not jacobian.scalable(torch.tensor([0.5, bad, 1.0], dtype=torch.float64))
    tiny = GatedJacobian(weights, upstream * 1e-20)  # squared norms ~1e-40: below float32's exact range
    tiny.gram()
    assert not tiny.scalable(moderate)
