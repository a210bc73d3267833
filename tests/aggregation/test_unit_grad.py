"""UnitGrad: d = sum_i g_i / ||g_i||, weights 1 / sqrt(G_ii), zero gradients weigh 0."""

from __future__ import annotations

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.unit_grad import UnitGrad


def _schema(tasks: int) -> Schema:
    return Schema((Feature("x", "numeric"),), tuple(Task(f"t{i}") for i in range(tasks)))


def _random(tasks: int, dims: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(tasks, dims, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_two_tasks_by_hand() -> None:
    # ||(3, 4)|| = 5, ||(0, 2)|| = 2: d = (0.6, 0.8) + (0, 1)
    jacobian = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    method = UnitGrad(_schema(2))
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.tensor([0.2, 0.5]))
    torch.testing.assert_close(method(jacobian), torch.tensor([0.6, 1.8]))


@pytest.mark.parametrize("factor", [1e-20, 1e-3, 7.0, 1e20])
@pytest.mark.parametrize("row", [0, 2])
def test_scaling_one_task_leaves_the_direction_unchanged(factor: float, row: int) -> None:
    jacobian = _random(3, 5, seed=1, dtype=torch.float32)
    scaled = jacobian.clone()
    scaled[row] *= factor
    method = UnitGrad(_schema(3))
    torch.testing.assert_close(method(scaled), method(jacobian), rtol=1e-5, atol=1e-6)


def test_identical_gradients_give_t_unit_vectors() -> None:
    g = torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64)
    jacobian = g.repeat(4, 1)
    method = UnitGrad(_schema(4))
    torch.testing.assert_close(method(jacobian), 4 * g / 5)
    torch.testing.assert_close(
        method.weights(jacobian @ jacobian.T), torch.full((4,), 0.2, dtype=torch.float64)
    )


def test_zero_gradient_weighs_zero() -> None:
    jacobian = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 2.0]])
    method = UnitGrad(_schema(3))
    weights = method.weights(jacobian @ jacobian.T)
    torch.testing.assert_close(weights, torch.tensor([0.2, 0.0, 0.5]))
    torch.testing.assert_close(method(jacobian), torch.tensor([0.6, 1.8]))


@pytest.mark.parametrize("factor", [0.0, 1e-20, 1e20])
def test_finite_for_zero_tiny_and_huge_gradients(factor: float) -> None:
    jacobian = _random(3, 6, seed=2, dtype=torch.float32) * factor
    method = UnitGrad(_schema(3))
    direction = method(jacobian)
    assert torch.isfinite(direction).all()
    expected = torch.zeros(6) if factor == 0 else method(_random(3, 6, seed=2, dtype=torch.float32))
    torch.testing.assert_close(direction, expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(method.weights(jacobian.double() @ jacobian.double().T)).all()


def test_weights_applied_to_the_gradients_give_the_direction() -> None:
    jacobian = _random(4, 7, seed=3)
    method = UnitGrad(_schema(4))
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T) @ jacobian, method(jacobian))


def test_order_of_the_tasks() -> None:
    jacobian = _random(4, 5, seed=4)
    perm = torch.tensor([2, 0, 3, 1])
    method = UnitGrad(_schema(4))
    gram = jacobian @ jacobian.T
    torch.testing.assert_close(method.weights(gram[perm][:, perm]), method.weights(gram)[perm])
    torch.testing.assert_close(method(jacobian[perm]), method(jacobian))


def test_eps_drops_small_gradients() -> None:
    jacobian = torch.tensor([[3.0, 4.0], [0.0, 1e-3]])
    method = UnitGrad(_schema(2), eps=1e-2)
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.tensor([0.2, 0.0]))
    torch.testing.assert_close(method(jacobian), torch.tensor([0.6, 0.8]))


def test_extreme_rows_give_the_sum_of_their_unit_vectors() -> None:
    jacobian = torch.tensor(
        [[3e20, 4e20], [0.0, 0.0], [-3e-30, 4e-30]]
    )  # squares overflow / underflow in float32
    torch.testing.assert_close(UnitGrad(_schema(3))(jacobian), torch.tensor([0.0, 1.6]))


def test_validation_and_repr() -> None:
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, got -1.0"):
        UnitGrad(_schema(2), eps=-1.0)
    with pytest.raises(TypeError, match="eps must be a number, got 'x'"):
        UnitGrad(_schema(2), eps="x")  # type: ignore[arg-type]
    method = UnitGrad(_schema(2), eps=1e-8)
    assert repr(method) == "UnitGrad(mode='parameter', eps=1e-08)"
    method.reset()
