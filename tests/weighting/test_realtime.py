"""RealTime: sum_i L_i / stop_grad(L_i), values by hand and its equivalence with sum_i log L_i."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.realtime import RealTime

SCHEMA = Schema((Feature("x", "numeric"),), (Task("a"), Task("b", "regression"), Task("c")))


def _step(method: RealTime, losses: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    probe = torch.tensor(losses).requires_grad_(True)
    objective = method(probe)
    (grad,) = torch.autograd.grad(objective, probe)
    return objective.detach(), grad


def test_values_by_hand() -> None:
    objective, grad = _step(RealTime(SCHEMA), [0.5, 2.0, 4.0])
    assert float(objective) == pytest.approx(3.0)  # every term is 1
    torch.testing.assert_close(grad, torch.tensor([2.0, 0.5, 0.25]))  # 1 / L_i


def test_effective_weights_are_the_inverse_losses() -> None:
    weights = RealTime(SCHEMA).effective_weights(torch.tensor([0.25, 1.0, 8.0]))
    torch.testing.assert_close(weights, torch.tensor([4.0, 1.0, 0.125]))


def test_gradient_is_that_of_the_sum_of_log_losses() -> None:
    theta = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    scale = torch.tensor([1.0, 50.0, 0.01])

    def losses() -> torch.Tensor:
        return (
            scale
            * (theta.square() + 0.1)
            * torch.stack([theta.sum().exp(), theta[0] ** 2 + 1, theta[1].abs()])
        )

    (via_realtime,) = torch.autograd.grad(RealTime(SCHEMA)(losses()), theta)
    (via_log,) = torch.autograd.grad(losses().log().sum(), theta)
    torch.testing.assert_close(via_realtime, via_log)


def test_scale_invariance() -> None:
    losses = torch.tensor([0.7, 1.3, 0.2])
    c = torch.tensor([1.0, 1e6, 1e-3])
    method = RealTime(SCHEMA)
    plain = method.effective_weights(losses)
    scaled = method.effective_weights(losses * c) * c  # weight times the scale of the gradient
    torch.testing.assert_close(scaled, plain)


def test_zero_loss_is_finite_and_weighted_by_one_over_eps() -> None:
    objective, grad = _step(RealTime(SCHEMA), [0.0, 1.0, 2.0])
    assert float(objective) == pytest.approx(2.0)
    torch.testing.assert_close(grad, torch.tensor([1e12, 1.0, 0.5]))
    objective, grad = _step(RealTime(SCHEMA, eps=1e-3), [0.0, 1e-4, 2.0])
    assert float(objective) == pytest.approx(0.1 + 1.0)
    torch.testing.assert_close(grad, torch.tensor([1e3, 1e3, 0.5]))


@pytest.mark.parametrize("losses", [[0.0, 0.0, 0.0], [1e-30, 1e30, 1.0], [1e-12, 1e12, 0.0]])
def test_extreme_losses_give_finite_values_and_gradients(losses: list[float]) -> None:
    objective, grad = _step(RealTime(SCHEMA), losses)
    assert torch.isfinite(objective)
    assert torch.isfinite(grad).all()


def test_keeps_the_dtype_of_the_losses() -> None:
    out = RealTime(SCHEMA)(torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64))
    assert out.dtype == torch.float64
    assert float(out) == 3.0


def test_nan_loss_propagates() -> None:
    assert torch.isnan(RealTime(SCHEMA)(torch.tensor([math.nan, 1.0, 1.0])))


def test_stateless() -> None:
    method = RealTime(SCHEMA)
    assert method.state_dict() == {}
    method.reset()
    fresh = RealTime(SCHEMA)
    fresh.load_state_dict(method.state_dict())
    torch.testing.assert_close(fresh.effective_weights(torch.ones(3)), torch.ones(3))


def test_repr_and_registry() -> None:
    assert repr(RealTime(SCHEMA)) == "RealTime(eps=1e-12)"
    assert repr(create_weighting("realtime", SCHEMA, eps=1e-6)) == "RealTime(eps=1e-06)"
    assert RealTime.scale_invariant
    assert RealTime.order_invariant


@pytest.mark.parametrize("eps", [0.0, -1e-3, math.nan, math.inf, True, "1e-3"])
def test_bad_eps_is_rejected_with_its_value(eps: object) -> None:
    with pytest.raises(ValueError, match=rf"eps must be a finite number > 0, got {eps!r}"):
        RealTime(SCHEMA, eps=eps)  # type: ignore[arg-type]
    with pytest.raises(MtlkitError, match=r"balancer 'realtime': eps must be"):
        create_weighting("realtime", SCHEMA, eps=eps)
