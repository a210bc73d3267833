"""Nash-MTL (Navon et al., ICML 2022): alpha > 0 solving G alpha = 1 / alpha, d = sum_i alpha_i g_i."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.nash_mtl import NashMTL, solve_nash


def _schema(t: int) -> Schema:
    return Schema((Feature("x", "numeric"),), tuple(Task(f"task{i}") for i in range(t)))


def _random_jacobian(t: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.rand(t, 1, generator=gen, dtype=torch.float64) * 10 + 0.1
    return torch.randn(t, d, generator=gen, dtype=torch.float64) * scales


def test_orthogonal_gradients_by_hand() -> None:
    # g1 = (3, 0), g2 = (0, 4): G = diag(9, 16), alpha_i = 1 / ||g_i|| = (1/3, 1/4), d = (1, 1)
    jac = torch.tensor([[3.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    method = NashMTL(_schema(2))
    torch.testing.assert_close(method.weights(jac @ jac.T), torch.tensor([1 / 3, 1 / 4], dtype=torch.float64))
    method.reset()
    torch.testing.assert_close(method(jac), torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_symmetric_pair_by_hand() -> None:
    # G = [[1, 1/2], [1/2, 1]]: alpha = (a, a) with a (a + a / 2) = 1, a = sqrt(2/3)
    gram = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    a = math.sqrt(2 / 3)
    torch.testing.assert_close(solve_nash(gram), torch.tensor([a, a], dtype=torch.float64))


@pytest.mark.parametrize("t", [2, 3, 5, 10, 20])
@pytest.mark.parametrize("seed", range(5))
def test_solution_satisfies_the_bargaining_equation(t: int, seed: int) -> None:
    jac = _random_jacobian(t, 3 * t, seed)
    gram = jac @ jac.T
    alpha = solve_nash(gram)
    assert bool((alpha > 0).all())
    torch.testing.assert_close(gram @ alpha, 1 / alpha, rtol=1e-6, atol=0.0)
    # every task's directional derivative along d is 1 / alpha_i > 0, and ||d|| = sqrt(T)
    d = alpha @ jac
    torch.testing.assert_close(jac @ d, 1 / alpha, rtol=1e-6, atol=0.0)
    assert float(d.norm()) == pytest.approx(math.sqrt(t), rel=1e-6)


def test_conflicting_gradients_satisfy_the_equation() -> None:
    # pairwise conflicts, but no non-negative combination vanishes (linearly independent)
    jac = torch.tensor([[1.0, 0.0, 0.1], [-0.9, 0.1, 0.0], [0.2, -1.0, 0.3]], dtype=torch.float64)
    gram = jac @ jac.T
    alpha = solve_nash(gram)
    torch.testing.assert_close(alpha * (gram @ alpha), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-8)


def test_update_every_reuses_the_weights() -> None:
    method = NashMTL(_schema(2), update_every=3)
    first = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    other = torch.tensor([[1.0, 0.0], [0.0, 25.0]], dtype=torch.float64)
    torch.testing.assert_close(method.weights(first), torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(method.weights(other), torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(method.weights(other), torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert int(method.steps) == 3
    torch.testing.assert_close(method.weights(other), torch.tensor([1.0, 0.2], dtype=torch.float64))
    assert set(method.state_dict()) == {"alpha", "steps"}
    method.reset()
    assert int(method.steps) == 0
    assert not bool(method.alpha.any())
    torch.testing.assert_close(method.weights(first), torch.tensor([0.5, 1.0], dtype=torch.float64))


def test_update_every_one_recomputes_each_call() -> None:
    method = NashMTL(_schema(2))
    method.weights(torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(
        method.weights(4 * torch.eye(2, dtype=torch.float64)), torch.tensor([0.5, 0.5], dtype=torch.float64)
    )


@pytest.mark.parametrize("t", [2, 3, 7])
def test_identical_gradients_give_sqrt_t_times_the_unit_gradient(t: int) -> None:
    g = torch.tensor([3.0, -4.0, 0.0], dtype=torch.float64)  # ||g|| = 5
    jac = g.repeat(t, 1)
    method = NashMTL(_schema(t))
    alpha = method.weights(jac @ jac.T)
    torch.testing.assert_close(alpha, torch.full((t,), 1 / (5 * math.sqrt(t)), dtype=torch.float64))
    method.reset()
    torch.testing.assert_close(method(jac), math.sqrt(t) * g / 5)


@pytest.mark.parametrize(
    "jac",
    [
        [[1.0, 2.0], [1.0, 2.0]],  # identical
        [[1.0, 2.0], [-1.0, -2.0]],  # opposite: no bargaining solution
        [[1.0, 2.0], [0.0, 0.0]],  # one zero gradient
        [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]],  # a positive combination vanishes
        [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]],  # rank 2, 4 tasks
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_singular_gram_gives_finite_weights(jac: list[list[float]], dtype: torch.dtype) -> None:
    j = torch.tensor(jac, dtype=dtype)
    method = NashMTL(_schema(len(jac)))
    assert bool(torch.isfinite(method.weights(j @ j.T)).all())
    assert bool((method.alpha > 0).all())
    assert bool(torch.isfinite(method(j)).all())


def test_zero_gradients_give_zero() -> None:
    method = NashMTL(_schema(3))
    jac = torch.zeros(3, 5)
    assert not bool(method.weights(jac @ jac.T).any())
    assert not bool(method(jac).any())


@pytest.mark.parametrize("scale", [1e-20, 1e-5, 1e5, 1e20])
def test_direction_does_not_depend_on_the_gradient_scale(scale: float) -> None:
    jac = _random_jacobian(3, 8, seed=1).float()
    reference = NashMTL(_schema(3))(jac)
    scaled = NashMTL(_schema(3))(jac * scale)
    assert bool(torch.isfinite(scaled).all())
    torch.testing.assert_close(scaled, reference, rtol=1e-4, atol=1e-5)


def test_permuting_tasks_permutes_the_weights() -> None:
    jac = _random_jacobian(5, 7, seed=3)
    perm = torch.tensor([3, 0, 4, 1, 2])
    method = NashMTL(_schema(5))
    alpha = method.weights(jac @ jac.T)
    permuted = method.weights(jac[perm] @ jac[perm].T)
    torch.testing.assert_close(permuted, alpha[perm])


def test_float32_gram_returns_float64_weights_on_its_device() -> None:
    jac = _random_jacobian(3, 6, seed=2).float()
    alpha = NashMTL(_schema(3)).weights(jac @ jac.T)
    assert alpha.dtype == torch.float64
    assert alpha.device == jac.device
    out = NashMTL(_schema(3))(jac)
    assert out.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1, got 0"),
        ({"max_iter": 2.5}, TypeError, "max_iter must be an integer, got 2.5"),
        ({"update_every": 0}, ValueError, "update_every must be >= 1, got 0"),
        ({"update_every": True}, TypeError, "update_every must be an integer, got True"),
        ({"tol": -1.0}, ValueError, "tol must be > 0, got -1.0"),
        ({"tol": float("nan")}, ValueError, "tol must be > 0, got nan"),
        ({"tol": "small"}, TypeError, "tol must be a number, got 'small'"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace(".", r"\.")):
        NashMTL(_schema(2), **kwargs)  # type: ignore[arg-type]


def test_repr_mirrors_the_constructor() -> None:
    assert repr(NashMTL(_schema(2), update_every=25)) == (
        "NashMTL(mode='parameter', max_iter=50, tol=1e-08, update_every=25)"
    )
