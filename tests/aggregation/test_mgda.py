"""MGDA (Sener & Koltun, 2018): min-norm point of the convex hull of the (normalised) task gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.aggregation.mgda import MGDA, min_norm_weights

NORMALIZATIONS = ["none", "l2", "loss", "loss+"]


def _schema(tasks: int) -> Schema:
    return Schema((Feature("x", "numeric"),), tuple(Task(f"t{i}") for i in range(tasks)))


def _random(tasks: int, dims: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(tasks, dims, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def brute_force(gram: np.ndarray, lower: np.ndarray | None = None) -> float:
    """min w^T G w over {sum w = 1, w >= lower} by SLSQP from several starts: the reference objective."""
    t = gram.shape[0]
    lower = np.zeros(t) if lower is None else lower
    best = np.inf
    starts = [np.full(t, 1.0 / t), *np.eye(t)]
    for start in starts:
        x0 = lower + (1 - lower.sum()) * start
        result = minimize(
            lambda w: w @ gram @ w,
            x0,
            jac=lambda w: 2 * gram @ w,
            bounds=[(c, None) for c in lower],
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1, "jac": lambda w: np.ones_like(w)}],
            method="SLSQP",
            options={"ftol": 1e-16, "maxiter": 1000},
        )
        best = min(best, float(result.x @ gram @ result.x))
    return best


def _objective(weights: torch.Tensor, gram: torch.Tensor) -> float:
    return float(weights @ gram @ weights)


def test_two_tasks_by_hand() -> None:
    # g1 = (2, 0), g2 = (0, 1): gamma = ((g2 - g1).g2) / ||g1 - g2||^2 = 1 / 5; d = (0.4, 0.8), orthogonal to g1 - g2
    jacobian = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    method = MGDA(_schema(2))
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.tensor([0.2, 0.8]))
    torch.testing.assert_close(method(jacobian), torch.tensor([0.4, 0.8]))


def test_two_tasks_clipped() -> None:
    # g1 = (1, 0), g2 = (2, 0): the unclipped gamma is 2; the min-norm point of the segment is g1
    jacobian = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    method = MGDA(_schema(2))
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(method(jacobian), torch.tensor([1.0, 0.0]))


def test_three_tasks_by_hand() -> None:
    method = MGDA(_schema(3))
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(method.weights(eye), torch.full((3,), 1 / 3, dtype=torch.float64))
    # (1, 0), (0, 1), (1, 1): the midpoint of the first two, norm^2 1/2; (1, 1) gets nothing
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(method.weights(jacobian @ jacobian.T), torch.tensor([0.5, 0.5, 0.0]).double())
    torch.testing.assert_close(method(jacobian), torch.tensor([0.5, 0.5]).double())


def test_normalizations_by_hand() -> None:
    jacobian = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    gram = jacobian @ jacobian.T
    # l2: unit vectors e1, e2 -> alpha = (1/2, 1/2), weights alpha / ||g|| = (1/4, 1/2)
    l2 = MGDA(_schema(2), normalization="l2")
    torch.testing.assert_close(l2.weights(gram), torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(l2(jacobian), torch.tensor([0.5, 0.5]))
    # loss with L = (2, 1): g / L = e1, e2 -> weights (1/4, 1/2)
    loss = MGDA(_schema(2), normalization="loss")
    loss.observe_losses(torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(loss.weights(gram), torch.tensor([0.25, 0.5]))
    torch.testing.assert_close(loss(jacobian), torch.tensor([0.5, 0.5]))
    # loss+ with L = (2, 4): g / (L ||g||) = (0.5, 0), (0, 0.25) -> gamma = 0.0625 / 0.3125 = 0.2,
    # weights (0.2 / (2 * 2), 0.8 / (4 * 1)) = (0.05, 0.2)
    plus = MGDA(_schema(2), normalization="loss+")
    plus.observe_losses(torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(plus.weights(gram), torch.tensor([0.05, 0.2]))
    torch.testing.assert_close(plus(jacobian), torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize(
    ("tasks", "dims", "seed"), [(t, d, s) for t in (3, 4, 6) for d in (2, t, 8) for s in range(3)]
)
def test_matches_a_brute_force_qp(tasks: int, dims: int, seed: int) -> None:
    jacobian = _random(tasks, dims, seed) + 0.3 * seed  # a shift so that the optimum is not always at 0
    gram = jacobian @ jacobian.T
    weights = MGDA(_schema(tasks)).weights(gram)
    assert bool((weights >= 0).all())
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    ours, reference = _objective(weights, gram), brute_force(gram.numpy())
    scale = float(gram.diagonal().max())
    assert ours <= reference * (1 + 1e-6) + 1e-12 * scale
    assert ours >= reference * (1 - 1e-6) - 1e-12 * scale  # no better than the minimum either
    # optimality (KKT): no vertex is better than the min-norm point, d.g_i >= ||d||^2 (up to the stop at
    # ||d||^2 <= eps max ||g_i||^2 when 0 is in the hull)
    assert float((gram @ weights).min()) >= ours - 1e-6 * ours - 1e-7 * scale


@pytest.mark.parametrize("seed", range(10))
def test_two_task_closed_form_matches_the_brute_force(seed: int) -> None:
    jacobian = _random(2, 3, seed) + torch.tensor([0.5 * seed, 0.0, 0.0], dtype=torch.float64)
    gram = jacobian @ jacobian.T
    weights = min_norm_weights(gram)
    reference = brute_force(gram.numpy())
    assert _objective(weights, gram) == pytest.approx(reference, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_normalised_problem_matches_a_brute_force_qp(normalization: str) -> None:
    jacobian = _random(4, 6, seed=5) * torch.tensor([[1.0], [10.0], [0.1], [3.0]], dtype=torch.float64)
    losses = torch.tensor([0.75, 2.0, 0.0625, 1.25], dtype=torch.float64)  # exact in the float32 buffer
    norm = jacobian.norm(dim=1)
    n = {"none": torch.ones(4), "l2": norm, "loss": losses, "loss+": losses * norm}[normalization].double()
    normalised = jacobian / n[:, None]
    method = MGDA(_schema(4), normalization=normalization)  # type: ignore[arg-type]
    method.observe_losses(losses)
    weights = method.weights(jacobian @ jacobian.T)
    alpha = weights * n  # the weights of the normalised gradients, on the simplex
    assert float(alpha.sum()) == pytest.approx(1.0, abs=1e-9)
    gram = normalised @ normalised.T
    assert _objective(alpha, gram) == pytest.approx(brute_force(gram.numpy()), rel=1e-6)
    torch.testing.assert_close(method(jacobian), weights @ jacobian)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_identical_gradients_give_the_promised_scale(normalization: str) -> None:
    g = torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64)
    losses = torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=torch.float64)
    method = MGDA(_schema(4), normalization=normalization)  # type: ignore[arg-type]
    method.observe_losses(losses)
    expected = {"none": g, "l2": g / 5, "loss": g / 2.0, "loss+": g / 5 / 2.0}[normalization]
    torch.testing.assert_close(method(g.repeat(4, 1)), expected)
    if normalization in ("none", "l2"):  # equal weights: no task is preferred
        weights = method.weights(g.repeat(4, 1) @ g.repeat(4, 1).T)
        scale = 1.0 if normalization == "none" else 5.0
        torch.testing.assert_close(weights, torch.full((4,), 0.25 / scale, dtype=torch.float64))


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("tasks", [2, 4])
def test_order_of_the_tasks(normalization: str, tasks: int) -> None:
    jacobian = _random(tasks, 6, seed=6)
    losses = torch.linspace(0.5, 2.0, tasks, dtype=torch.float64)[
        torch.randperm(tasks, generator=torch.Generator().manual_seed(0))
    ]
    gram = jacobian @ jacobian.T
    # a tight tolerance: the solution is unique, the Frank-Wolfe path depends on the order
    method = MGDA(_schema(tasks), normalization=normalization, tol=1e-13)  # type: ignore[arg-type]
    method.observe_losses(losses)
    weights, direction = method.weights(gram), method(jacobian)
    for perm in itertools.islice(itertools.permutations(range(tasks)), 1, 6):
        p = torch.tensor(perm)
        method.observe_losses(losses[p])
        torch.testing.assert_close(method.weights(gram[p][:, p]), weights[p], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(method(jacobian[p]), direction, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("factor", [0.0, 1e-20, 1e20])
def test_finite_for_zero_tiny_and_huge_gradients(normalization: str, factor: float) -> None:
    jacobian = _random(3, 5, seed=7, dtype=torch.float32)
    method = MGDA(_schema(3), normalization=normalization)  # type: ignore[arg-type]
    method.observe_losses(torch.tensor([1.0, 2.0, 0.5]))
    direction = method(jacobian * factor)
    assert torch.isfinite(direction).all()
    # none / loss: the update scales with the gradients; l2 / loss+: it does not (unit gradients)
    homogeneous = normalization in ("none", "loss")
    expected = method(jacobian) * (factor if homogeneous else float(factor != 0))
    torch.testing.assert_close(direction, expected, rtol=1e-4, atol=0.0)


def test_a_zero_gradient_makes_the_update_zero() -> None:
    jacobian = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    for normalization in NORMALIZATIONS:
        method = MGDA(_schema(3), normalization=normalization)  # type: ignore[arg-type]
        method.observe_losses(torch.tensor([1.0, 1.0, 1.0]))
        weights = method.weights(jacobian @ jacobian.T)
        assert torch.isfinite(weights).all()
        torch.testing.assert_close(method(jacobian), torch.zeros(2))


def test_the_update_does_not_increase_any_loss() -> None:
    jacobian = _random(5, 12, seed=8)
    direction = MGDA(_schema(5))(jacobian)
    assert float((jacobian @ direction).min()) >= float(direction @ direction) * (1 - 1e-5)


def test_loss_normalisation_needs_the_losses() -> None:
    jacobian = torch.eye(2)
    method = MGDA(_schema(2), normalization="loss")
    with pytest.raises(MtlkitError, match="observe_losses"):
        method(jacobian)
    method.observe_losses(torch.tensor([1.0, -0.5]))
    with pytest.raises(MtlkitError, match=r"-0.5"):
        method(jacobian)
    with pytest.raises(ValueError, match=r"expected one loss per task .* got shape \[3\]"):
        method.observe_losses(torch.ones(3))
    method.observe_losses(torch.tensor([1.0, 2.0]))
    assert "losses" in method.state_dict()
    method.reset()
    assert bool(torch.isnan(method.losses).all())


def test_validation_and_repr() -> None:
    with pytest.raises(ValueError, match=r"normalization must be one of .* got 'L2'"):
        MGDA(_schema(2), normalization="L2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        MGDA(_schema(2), max_iter=0)
    with pytest.raises(TypeError, match=r"max_iter must be an int, got 2\.5"):
        MGDA(_schema(2), max_iter=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tol must be > 0, got -1"):
        MGDA(_schema(2), tol=-1)
    assert repr(MGDA(_schema(2), normalization="l2")) == (
        "MGDA(mode='parameter', normalization='l2', max_iter=250, tol=1e-06)"
    )
