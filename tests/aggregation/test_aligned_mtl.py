"""Aligned-MTL (Senushkin et al., CVPR 2023): weights = B (1/T), B = sqrt(lambda_min) V diag(lambda)^(-1/2) V^T."""

from __future__ import annotations

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.aligned_mtl import AlignedMTL, balance_transformation


def _schema(t: int) -> Schema:
    return Schema((Feature("x", "numeric"),), tuple(Task(f"task{i}") for i in range(t)))


def _random_jacobian(t: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.rand(t, 1, generator=gen, dtype=torch.float64) * 10 + 0.1
    return torch.randn(t, d, generator=gen, dtype=torch.float64) * scales


def test_orthogonal_gradients_by_hand() -> None:
    # g1 = (3, 0), g2 = (0, 4): lambda = (16, 9), B = diag(3/3, 3/4); aligned rows (3, 0), (0, 3)
    jac = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    gram = jac @ jac.T
    torch.testing.assert_close(balance_transformation(gram), torch.diag(torch.tensor([1.0, 0.75]).double()))
    method = AlignedMTL(_schema(2))
    torch.testing.assert_close(method.weights(gram), torch.tensor([0.5, 0.375], dtype=torch.float64))
    torch.testing.assert_close(method(jac), torch.tensor([1.5, 1.5], dtype=torch.float64))


def test_symmetric_pair_by_hand() -> None:
    # G = [[1, c], [c, 1]], c = 0.6: lambda = 1.6 on (1, 1), 0.4 on (1, -1); B (1/2, 1/2) = sqrt(0.4 / 1.6) / 2
    gram = torch.tensor([[1.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(AlignedMTL(_schema(2)).weights(gram), torch.tensor([0.25, 0.25]).double())


@pytest.mark.parametrize("t", [2, 3, 5, 10])
@pytest.mark.parametrize("seed", range(5))
def test_aligned_gradients_have_condition_number_one(t: int, seed: int) -> None:
    jac = _random_jacobian(t, 2 * t + 3, seed)
    gram = jac @ jac.T
    b = balance_transformation(gram)
    aligned = b @ jac
    singular = torch.linalg.svdvals(aligned)
    lambda_min = torch.linalg.eigvalsh(gram).min()
    torch.testing.assert_close(
        singular, torch.full((t,), float(lambda_min.sqrt())).double(), rtol=1e-6, atol=0
    )
    # the update is the mean of the aligned gradients
    direction = AlignedMTL(_schema(t))(jac)
    torch.testing.assert_close(direction, aligned.mean(0), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("t", [2, 3, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_gradients_give_that_gradient(t: int, dtype: torch.dtype) -> None:
    g = torch.tensor([3.0, -4.0, 0.5], dtype=dtype)
    jac = g.repeat(t, 1)
    method = AlignedMTL(_schema(t))
    torch.testing.assert_close(method.weights(jac @ jac.T), torch.full((t,), 1.0 / t, dtype=torch.float64))
    torch.testing.assert_close(method(jac), g)


def test_collinear_gradients_by_hand() -> None:
    # g and 2g: G = ||g||^2 [[1, 2], [2, 4]], rank 1, B = v v^T with v = (1, 2) / sqrt(5): weights (0.3, 0.6)
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    jac = torch.stack([g, 2 * g])
    method = AlignedMTL(_schema(2))
    torch.testing.assert_close(method.weights(jac @ jac.T), torch.tensor([0.3, 0.6], dtype=torch.float64))
    torch.testing.assert_close(method(jac), 1.5 * g)


@pytest.mark.parametrize(
    "jac",
    [
        [[1.0, 2.0], [-1.0, -2.0]],
        [[1.0, 2.0], [0.0, 0.0]],
        [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]],
        [[0.0, 0.0], [0.0, 0.0]],
    ],
)
def test_rank_deficient_gram_gives_finite_output(jac: list[list[float]]) -> None:
    j = torch.tensor(jac)
    method = AlignedMTL(_schema(len(jac)))
    assert bool(torch.isfinite(method.weights(j @ j.T)).all())
    assert bool(torch.isfinite(method(j)).all())


def test_zero_gradients_give_zero() -> None:
    method = AlignedMTL(_schema(3))
    jac = torch.zeros(3, 4)
    torch.testing.assert_close(method.weights(jac @ jac.T), torch.full((3,), 1 / 3, dtype=torch.float64))
    assert not bool(method(jac).any())


@pytest.mark.parametrize("scale", [1e-20, 1e-5, 1e5, 1e20])
def test_direction_is_proportional_to_the_gradient_scale(scale: float) -> None:
    jac = _random_jacobian(3, 8, seed=1).float()
    reference = AlignedMTL(_schema(3))(jac)
    scaled = AlignedMTL(_schema(3))(jac * scale)
    assert bool(torch.isfinite(scaled).all())
    torch.testing.assert_close(scaled / scale, reference, rtol=1e-4, atol=1e-5)


def test_permuting_tasks_permutes_the_weights() -> None:
    jac = _random_jacobian(5, 7, seed=3)
    perm = torch.tensor([3, 0, 4, 1, 2])
    method = AlignedMTL(_schema(5))
    w = method.weights(jac @ jac.T)
    torch.testing.assert_close(method.weights(jac[perm] @ jac[perm].T), w[perm])


def test_stateless_and_repr() -> None:
    method = AlignedMTL(_schema(2), mode="representation")
    method.reset()
    assert dict(method.state_dict()) == {}
    assert repr(method) == "AlignedMTL(mode='representation')"


@pytest.mark.parametrize("entry", [(0, 0), (0, 1)], ids=["diagonal", "off-diagonal"])
def test_a_non_finite_gram_matrix_gives_nan_weights(entry: tuple[int, int]) -> None:
    """A NaN anywhere in G (an overflowed gradient) is reported as NaN weights, never as finite ones."""
    gram = torch.eye(3, dtype=torch.float64)
    gram[entry] = float("nan")
    assert torch.isnan(balance_transformation(gram)).all()
    assert torch.isnan(AlignedMTL(_schema(3)).weights(gram)).all()
