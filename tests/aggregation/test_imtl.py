"""IMTL-G (Liu et al., 2021): sum alpha = 1 and equal projections of d = sum alpha_i g_i on every u_i."""

from __future__ import annotations

import itertools

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.imtl import IMTL


def _schema(tasks: int) -> Schema:
    return Schema((Feature("x", "numeric"),), tuple(Task(f"t{i}") for i in range(tasks)))


def _random(tasks: int, dims: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(tasks, dims, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def paper_closed_form(jacobian: torch.Tensor) -> torch.Tensor:
    """alpha_{2..T} = g_1 U^T (D U^T)^-1, alpha_1 = 1 - sum: the paper's formula, on the gradients."""
    unit = jacobian / jacobian.norm(dim=1, keepdim=True)
    d = jacobian[:1] - jacobian[1:]
    u = unit[:1] - unit[1:]
    rest = jacobian[:1] @ u.T @ torch.linalg.inv(d @ u.T)
    return torch.cat([1 - rest.sum(dim=1), rest[0]])


def _projections(jacobian: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    return (jacobian / jacobian.norm(dim=1, keepdim=True)) @ direction


def test_two_tasks_by_hand() -> None:
    # g1 = (1, 0), g2 = (0, 2): D = (1, -2), U = (1, -1), D U^T = 3, g1 U^T = 1 -> alpha = (2/3, 1/3);
    # d = (2/3, 2/3), projection 2/3 on both unit gradients
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    method = IMTL(_schema(2))
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.tensor([2 / 3, 1 / 3]))
    torch.testing.assert_close(method(jacobian), torch.tensor([2 / 3, 2 / 3]))


def test_opposite_gradients_give_zero() -> None:
    # g2 = -2 g1: alpha = (2/3, 1/3) (paper: D = 3 g1, U = 2 u1 -> alpha_2 = 2 / 6), d = 0
    jacobian = torch.tensor([[1.0, 1.0], [-2.0, -2.0]])
    method = IMTL(_schema(2))
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.tensor([2 / 3, 1 / 3]))
    torch.testing.assert_close(method(jacobian), torch.zeros(2))


@pytest.mark.parametrize(("tasks", "seed"), [(t, s) for t in (2, 3, 4, 6) for s in range(3)])
def test_equal_projections_and_the_paper_closed_form(tasks: int, seed: int) -> None:
    jacobian = _random(tasks, 8, seed) * torch.logspace(-2, 2, tasks, dtype=torch.float64)[:, None]
    method = IMTL(_schema(tasks))
    weights = method.weights(jacobian @ jacobian.T)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(weights, paper_closed_form(jacobian), rtol=1e-7, atol=1e-9)
    direction = method(jacobian)
    torch.testing.assert_close(direction, weights @ jacobian)
    projections = _projections(jacobian, direction)
    torch.testing.assert_close(projections, projections.mean().expand(tasks), rtol=1e-8, atol=1e-10)


def test_more_tasks_than_dimensions() -> None:
    # four gradients in the plane: the unique solution with sum alpha = 1 has d = 0 (equal projection 0)
    jacobian = _random(4, 2, seed=11)
    method = IMTL(_schema(4))
    weights = method.weights(jacobian @ jacobian.T)
    assert torch.isfinite(weights).all()
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)
    projections = _projections(jacobian, method(jacobian))
    torch.testing.assert_close(projections, projections.mean().expand(4), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_gradients_give_the_gradient(dtype: torch.dtype) -> None:
    g = _random(1, 50, seed=12, dtype=dtype)[0]
    jacobian = g.repeat(5, 1)
    method = IMTL(_schema(5))
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.full((5,), 0.2, dtype=dtype))
    torch.testing.assert_close(method(jacobian), g)


def test_a_zero_gradient_weighs_zero() -> None:
    jacobian = _random(3, 6, seed=13)
    with_zero = torch.cat([jacobian[:1], torch.zeros(1, 6, dtype=jacobian.dtype), jacobian[1:]])
    method = IMTL(_schema(4))
    weights = method.weights(with_zero @ with_zero.T)
    assert torch.isfinite(weights).all()
    assert float(weights[1]) == 0.0
    torch.testing.assert_close(weights[[0, 2, 3]], IMTL(_schema(3)).weights(jacobian @ jacobian.T))
    torch.testing.assert_close(method(with_zero), IMTL(_schema(3))(jacobian))


@pytest.mark.parametrize("factor", [0.0, 1e-20, 1e20])
def test_finite_for_zero_tiny_and_huge_gradients(factor: float) -> None:
    jacobian = _random(3, 5, seed=14, dtype=torch.float32)
    method = IMTL(_schema(3))
    direction = method(jacobian * factor)
    assert torch.isfinite(direction).all()
    expected = method(jacobian) * factor
    torch.testing.assert_close(direction, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("factor", [1e-20, 1e20])
def test_one_task_at_an_extreme_scale(factor: float) -> None:
    jacobian = _random(3, 5, seed=15, dtype=torch.float32)
    jacobian[1] *= factor
    method = IMTL(_schema(3))
    direction = method(jacobian)
    assert torch.isfinite(direction).all()
    # the paper's formula in float64 loses the small weights to rounding (1 - sum); check the definition
    projections = _projections(jacobian.double(), direction.double())
    torch.testing.assert_close(projections, projections.mean().expand(3), rtol=1e-4, atol=0.0)
    weights = method.weights(jacobian.double() @ jacobian.double().T)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(direction.double(), weights @ jacobian.double(), rtol=1e-4, atol=0.0)


def test_order_of_the_tasks() -> None:
    jacobian = _random(4, 6, seed=16)
    method = IMTL(_schema(4))
    gram = jacobian @ jacobian.T
    weights, direction = method.weights(gram), method(jacobian)
    for perm in itertools.permutations(range(4)):
        p = torch.tensor(perm)
        torch.testing.assert_close(method.weights(gram[p][:, p]), weights[p])
        torch.testing.assert_close(method(jacobian[p]), direction)


def test_repr() -> None:
    method = IMTL(_schema(2), mode="representation")
    assert repr(method) == "IMTL(mode='representation')"
    method.reset()


def test_a_non_finite_norm_drops_that_task() -> None:
    """A NaN or infinite squared norm marks that task dead (alpha 0, no condition), like a zero gradient; the
    others still get equal projections."""
    jacobian = _random(3, 6, seed=21)
    gram = jacobian @ jacobian.T
    for bad in (float("nan"), float("inf")):
        broken = gram.clone()
        broken[2, 2] = bad
        weights = IMTL(_schema(3)).weights(broken)
        assert float(weights[2]) == 0.0
        pair = IMTL(_schema(2)).weights(gram[:2, :2])
        torch.testing.assert_close(weights[:2], pair, rtol=1e-9, atol=1e-12)
