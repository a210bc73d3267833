"""Dynamic Weight Average (Liu et al., CVPR 2019): ones for two epochs, then T softmax(L(t-1) / L(t-2) / temp)."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.dwa import DWA

SCHEMA = Schema((Feature("x", "numeric"),), (Task("click"), Task("like"), Task("watch", "regression")))
EPOCH_1 = torch.tensor([1.0, 2.0, 4.0])
EPOCH_2 = torch.tensor([0.5, 1.8, 4.0])  # ratios 0.5, 0.9, 1.0
EPOCH_3 = torch.tensor([0.45, 0.9, 2.0])  # ratios 0.9, 0.5, 0.5
LOSSES = torch.tensor([0.3, 1.2, 2.5])


def _grad(method: DWA, losses: torch.Tensor) -> tuple[float, torch.Tensor]:
    probe = losses.clone().requires_grad_(True)
    objective = method(probe)
    (grad,) = torch.autograd.grad(objective, probe)
    return float(objective.detach()), grad


def _by_hand(ratios: list[float], temperature: float) -> torch.Tensor:
    e = [math.exp(r / temperature) for r in ratios]
    return torch.tensor([len(e) * x / sum(e) for x in e])


def test_equal_weights_during_the_first_two_epochs() -> None:
    method = DWA(SCHEMA)
    for epoch_losses in (None, EPOCH_1):
        if epoch_losses is not None:
            method.end_epoch(epoch_losses)
        objective, grad = _grad(method, LOSSES)
        assert objective == pytest.approx(float(LOSSES.sum()))
        torch.testing.assert_close(grad, torch.ones(3))


def test_third_epoch_by_hand() -> None:
    method = DWA(SCHEMA)
    method.end_epoch(EPOCH_1)
    method.end_epoch(EPOCH_2)
    # r = (0.5, 0.9, 1.0), T = 3, temperature 2: w = 3 exp(r / 2) / sum exp(r / 2)
    expected = torch.tensor([0.855815566704675, 1.045295493649499, 1.098888939645826])
    torch.testing.assert_close(_by_hand([0.5, 0.9, 1.0], 2.0), expected.float())
    objective, grad = _grad(method, LOSSES)
    torch.testing.assert_close(grad, expected.float())
    assert objective == pytest.approx(float((expected * LOSSES.double()).sum()), rel=1e-6)
    assert float(grad.sum()) == pytest.approx(3.0)
    # the task whose loss fell fastest (click, halved) gets the smallest weight
    assert int(grad.argmin()) == 0


def test_the_weights_follow_the_last_two_epochs() -> None:
    method = DWA(SCHEMA, temperature=0.5)
    for losses in (EPOCH_1, EPOCH_2, EPOCH_3):
        method.end_epoch(losses)
    torch.testing.assert_close(method.weights(), _by_hand([0.9, 0.5, 0.5], 0.5))
    torch.testing.assert_close(method.previous_losses, EPOCH_2)
    torch.testing.assert_close(method.last_losses, EPOCH_3)
    assert int(method.epochs) == 3


def test_state_is_unknown_until_measured() -> None:
    method = DWA(SCHEMA)
    assert torch.isnan(method.last_losses).all()
    assert torch.isnan(method.previous_losses).all()
    method.end_epoch(EPOCH_1)
    torch.testing.assert_close(method.last_losses, EPOCH_1)
    assert torch.isnan(method.previous_losses).all()


def test_temperature_sets_how_far_from_equal_the_weights_go() -> None:
    hot, cold = DWA(SCHEMA, temperature=1e6), DWA(SCHEMA, temperature=0.01)
    for method in (hot, cold):
        method.end_epoch(EPOCH_1)
        method.end_epoch(EPOCH_2)
    torch.testing.assert_close(hot.weights(), torch.ones(3), atol=1e-6, rtol=0)
    # r = (0.5, 0.9, 1.0): almost all the weight on the slowest task
    torch.testing.assert_close(cold.weights(), torch.tensor([0.0, 0.0, 3.0]), atol=1e-3, rtol=0)


def test_no_gradient_flows_into_the_state() -> None:
    method = DWA(SCHEMA)
    method.end_epoch(EPOCH_1.clone().requires_grad_(True))
    method.end_epoch(EPOCH_2)
    assert not any(b.requires_grad for b in method.buffers())
    assert list(method.parameters()) == []


def test_zero_epoch_losses_read_as_no_change() -> None:
    method = DWA(SCHEMA)
    method.end_epoch(torch.tensor([0.0, 1.0, 2.0]))
    method.end_epoch(torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(method.weights(), torch.ones(3))


def test_zero_and_extreme_epoch_losses_stay_finite() -> None:
    method = DWA(SCHEMA)
    method.end_epoch(torch.tensor([0.0, 1e-30, 1e30]))
    method.end_epoch(torch.tensor([0.0, 1e30, 1e-30]))
    w = method.weights()
    assert torch.isfinite(w).all()
    # ratios: 0 / 0 reads as 1; 1e30 / 1e-30 is beyond float range and takes all the weight; 1e-30 / 1e30 ~ 0
    torch.testing.assert_close(w, torch.tensor([0.0, 3.0, 0.0]))
    objective, grad = _grad(method, torch.tensor([0.0, 1e30, 1.0]))
    assert math.isfinite(objective)
    assert torch.isfinite(grad).all()


def test_reset_and_checkpoint_round_trip() -> None:
    method = DWA(SCHEMA)
    for losses in (EPOCH_1, EPOCH_2):
        method.end_epoch(losses)
    fresh = DWA(SCHEMA)
    fresh.load_state_dict(method.state_dict())
    torch.testing.assert_close(fresh.weights(), method.weights(), rtol=0, atol=0)
    assert sorted(method.state_dict()) == ["epochs", "last_losses", "previous_losses"]
    method.reset()
    torch.testing.assert_close(method.weights(), torch.ones(3))
    assert int(method.epochs) == 0
    assert torch.isnan(method.last_losses).all()


def test_end_epoch_checks_the_number_of_tasks() -> None:
    with pytest.raises(ValueError, match=r"one epoch-average loss per task \(3: .*got shape \[2\]"):
        DWA(SCHEMA).end_epoch(torch.ones(2))


def test_repr_mirrors_the_constructor() -> None:
    assert repr(DWA(SCHEMA)) == "DWA(temperature=2.0)"
    assert repr(DWA(SCHEMA, temperature=1)) == "DWA(temperature=1.0)"


@pytest.mark.parametrize(
    ("temperature", "error", "message"),
    [
        (-1.0, ValueError, r"temperature must be > 0, got -1.0"),
        (0, ValueError, r"temperature must be > 0, got 0"),
        (math.nan, ValueError, r"temperature must be > 0, got nan"),
        (math.inf, ValueError, r"temperature must be > 0, got inf"),
        (True, TypeError, r"temperature must be a number, got True"),
    ],
)
def test_bad_temperature_is_rejected(temperature: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        DWA(SCHEMA, temperature=temperature)  # type: ignore[arg-type]


def test_registry_wraps_bad_values_in_a_user_error() -> None:
    with pytest.raises(MtlkitError, match=r"balancer 'dwa': temperature must be > 0, got -2"):
        create_weighting("dwa", SCHEMA, temperature=-2)
