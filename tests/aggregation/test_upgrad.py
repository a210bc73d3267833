"""UPGrad (Quinton & Rey, 2024): the mean of the task gradients projected onto the dual cone {x : J x >= 0}."""

from __future__ import annotations

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.upgrad import UPGrad, project_weights


def _schema(t: int) -> Schema:
    return Schema((Feature("x", "numeric"),), tuple(Task(f"task{i}") for i in range(t)))


def _random_jacobian(t: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.rand(t, 1, generator=gen, dtype=torch.float64) * 10 + 0.1
    return torch.randn(t, d, generator=gen, dtype=torch.float64) * scales


def test_conflicting_pair_by_hand() -> None:
    # g1 = (1, 0), g2 = (-1, 1), G = [[1, -1], [-1, 2]]
    # w_1 = argmin_{w >= e_1} w^T G w = (1, 1/2): projection of g1 is (1/2, 1/2)
    # w_2 = argmin_{w >= e_2} w^T G w = (1, 1): projection of g2 is (0, 1)
    jac = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    gram = jac @ jac.T
    torch.testing.assert_close(project_weights(gram, 0), torch.tensor([1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(project_weights(gram, 1), torch.tensor([1.0, 1.0], dtype=torch.float64))
    method = UPGrad(_schema(2))
    torch.testing.assert_close(method.weights(gram), torch.tensor([1.0, 0.75], dtype=torch.float64))
    torch.testing.assert_close(method(jac), torch.tensor([0.25, 0.75], dtype=torch.float64))


@pytest.mark.parametrize("t", [2, 3, 5, 10, 20])
@pytest.mark.parametrize("seed", range(5))
def test_direction_conflicts_with_no_task(t: int, seed: int) -> None:
    # few dimensions relative to tasks: many pairwise conflicts; also rank-deficient when d < t
    for d in (max(2, t // 2), 3 * t):
        jac = _random_jacobian(t, d, seed)
        direction = UPGrad(_schema(t))(jac)
        scale = float((jac @ jac.T).diagonal().max())
        assert float((jac @ direction).min()) >= -1e-9 * scale


@pytest.mark.parametrize("seed", range(5))
def test_each_projection_lies_in_the_dual_cone_and_is_closest(seed: int) -> None:
    jac = _random_jacobian(4, 3, seed)
    gram = jac @ jac.T
    scale = float(gram.diagonal().max())
    g = gram / scale + 1e-12 * torch.eye(4, dtype=torch.float64)
    for i in range(4):
        w = project_weights(g, i)
        assert bool((w >= 0).all())
        assert float(w[i]) >= 1.0
        mu = g @ w
        assert float(mu.min()) >= -1e-9  # primal feasibility: J (J^T w) >= 0
        lam = w.clone()
        lam[i] -= 1.0
        assert float((lam * mu).abs().max()) <= 1e-9  # complementary slackness


@pytest.mark.parametrize("seed", range(5))
def test_non_conflicting_gradients_give_the_mean(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    jac = torch.rand(4, 6, generator=gen, dtype=torch.float64)  # non-negative entries: G >= 0
    method = UPGrad(_schema(4))
    torch.testing.assert_close(method.weights(jac @ jac.T), torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(method(jac), jac.mean(0))


@pytest.mark.parametrize("t", [2, 3, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_gradients_give_that_gradient(t: int, dtype: torch.dtype) -> None:
    g = torch.tensor([3.0, -4.0, 0.5], dtype=dtype)
    jac = g.repeat(t, 1)
    torch.testing.assert_close(UPGrad(_schema(t))(jac), g)


def test_opposite_gradients_give_zero() -> None:
    jac = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        UPGrad(_schema(2))(jac), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0
    )


@pytest.mark.parametrize(
    "jac",
    [
        [[1.0, 2.0], [1.0, 2.0]],
        [[1.0, 2.0], [0.0, 0.0]],
        [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]],
        [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.5, -0.5, 0.0]],
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_singular_gram_gives_finite_output(jac: list[list[float]], dtype: torch.dtype) -> None:
    j = torch.tensor(jac, dtype=dtype)
    method = UPGrad(_schema(len(jac)))
    assert bool(torch.isfinite(method.weights(j @ j.T)).all())
    direction = method(j)
    assert bool(torch.isfinite(direction).all())
    assert float((j @ direction).min()) >= -1e-5


def test_zero_gradients_give_zero() -> None:
    method = UPGrad(_schema(3))
    jac = torch.zeros(3, 4)
    torch.testing.assert_close(method.weights(jac @ jac.T), torch.full((3,), 1 / 3, dtype=torch.float64))
    assert not bool(method(jac).any())


@pytest.mark.parametrize("scale", [1e-20, 1e-5, 1e5, 1e20])
def test_direction_is_proportional_to_the_gradient_scale(scale: float) -> None:
    jac = _random_jacobian(4, 3, seed=1).float()
    reference = UPGrad(_schema(4))(jac)
    scaled = UPGrad(_schema(4))(jac * scale)
    assert bool(torch.isfinite(scaled).all())
    torch.testing.assert_close(scaled / scale, reference, rtol=1e-4, atol=1e-5)


def test_permuting_tasks_permutes_the_weights() -> None:
    jac = _random_jacobian(6, 4, seed=3)
    perm = torch.tensor([3, 0, 5, 4, 1, 2])
    method = UPGrad(_schema(6))
    w = method.weights(jac @ jac.T)
    torch.testing.assert_close(method.weights(jac[perm] @ jac[perm].T), w[perm])


def test_stateless_and_repr() -> None:
    method = UPGrad(_schema(2))
    method.reset()
    assert dict(method.state_dict()) == {}
    assert repr(method) == "UPGrad(mode='parameter')"


@pytest.mark.parametrize("t", [3, 5, 8, 12])
def test_projections_meet_the_optimality_conditions_on_both_sides_of_the_size_switch(t: int) -> None:
    """The QPs' products and free-set systems run in plain Python up to SMALL_SYSTEM tasks and in numpy beyond:
    on conflicting gradients (fewer dimensions than tasks: rank-deficient, many active bounds) both give a w_i
    whose projection lies in the dual cone (G w_i >= 0) with complementary slackness, to the ridge's precision."""
    from mtlkit.aggregation.base import psd_unit_diagonal
    from mtlkit.aggregation.upgrad import RIDGE

    for seed in range(4):
        jac = _random_jacobian(t, max(2, t - 2), seed)
        rows, _ = psd_unit_diagonal(jac @ jac.T, RIDGE)
        g = torch.tensor(rows, dtype=torch.float64)
        for i in range(t):
            w = project_weights(g, i)
            assert float(w.min()) >= 0.0
            assert float(w[i]) >= 1.0
            mu = g @ w
            assert float(mu.min()) >= -1e-9
            lam = w.clone()
            lam[i] -= 1.0
            assert float((lam * mu).abs().max()) <= 1e-9
