"""GeneralizedMean: T times the power mean of the loss ratios L_i / L_i^(0), for any finite gamma."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.generalized_mean import GeneralizedMean, power_mean_total
from mtlkit.weighting.initial import Initial
from mtlkit.weighting.realtime import RealTime

FEATURES = (Feature("x", "numeric"),)
TWO = Schema(FEATURES, (Task("a"), Task("b", "regression")))
THREE = Schema(FEATURES, (Task("a"), Task("b", "regression"), Task("c")))
GAMMAS = [-50.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 50.0]


def _step(method: GeneralizedMean, losses: list[float]) -> tuple[float, torch.Tensor]:
    probe = torch.tensor(losses).requires_grad_(True)
    objective = method(probe)
    (grad,) = torch.autograd.grad(objective, probe)
    return float(objective.detach()), grad


def _measured(gamma: float, initial: list[float], schema: Schema = TWO) -> GeneralizedMean:
    method = GeneralizedMean(schema, gamma=gamma)
    _step(method, initial)
    return method


# Initial losses [2, 4], then losses [1, 4]: ratios r = [0.5, 1]. Objective 2 M, weight (r_i / M)^(gamma-1) / L_i^(0).
@pytest.mark.parametrize(
    ("gamma", "mean", "weights"),
    [
        (1.0, 0.75, [1 / 2, 1 / 4]),  # arithmetic
        (0.0, math.sqrt(0.5), [math.sqrt(0.5) / 0.5 / 2, math.sqrt(0.5) / 4]),  # geometric: M / r_i / L^(0)
        (2.0, math.sqrt(0.625), [0.5 / math.sqrt(0.625) / 2, 1 / math.sqrt(0.625) / 4]),  # quadratic
        (-1.0, 2 / 3, [(0.5 / (2 / 3)) ** -2 / 2, (1 / (2 / 3)) ** -2 / 4]),  # harmonic: 2 / (1/0.5 + 1/1)
    ],
)
def test_values_by_hand(gamma: float, mean: float, weights: list[float]) -> None:
    method = _measured(gamma, [2.0, 4.0])
    objective, grad = _step(method, [1.0, 4.0])
    assert objective == pytest.approx(2 * mean, rel=1e-6)
    torch.testing.assert_close(grad, torch.tensor(weights))


def test_first_step_is_the_number_of_tasks() -> None:
    for gamma in GAMMAS:
        objective, grad = _step(GeneralizedMean(THREE, gamma=gamma), [0.5, 2.0, 8.0])
        assert objective == pytest.approx(3.0), gamma
        torch.testing.assert_close(grad, torch.tensor([2.0, 0.5, 0.125]))  # r = 1: weight 1 / L^(0)


def test_gamma_one_is_initial() -> None:
    sequence = [[0.9, 2.0, 0.7], [0.8, 1.6, 0.6], [0.0, 1.5, 0.6], [0.6, 1.1, 0.5]]
    mean, initial = GeneralizedMean(THREE, gamma=1.0, warmup_batches=2), Initial(THREE, warmup_batches=2)
    for losses in sequence:
        obj_mean, grad_mean = _step(mean, losses)
        obj_initial, grad_initial = _step(initial, losses)  # type: ignore[arg-type]
        assert obj_mean == pytest.approx(obj_initial, rel=1e-6)
        present = (
            torch.tensor(losses) != 0
        )  # a zero loss: weight 0 here, 1 / L^(0) there, times a zero gradient
        torch.testing.assert_close(grad_mean[present], grad_initial[present])
        assert (grad_mean[~present] == 0).all()


def test_gamma_zero_has_the_direction_of_realtime() -> None:
    method = _measured(0.0, [0.9, 2.0, 0.7], THREE)
    losses = torch.tensor([0.4, 1.9, 0.2])
    grad = method.effective_weights(losses)
    realtime = RealTime(THREE).effective_weights(losses)
    torch.testing.assert_close(grad / grad.sum(), realtime / realtime.sum())


def test_monotone_in_gamma_from_the_smallest_to_the_largest_ratio() -> None:
    ratios = torch.tensor([0.2, 0.5, 1.5])
    totals = [float(power_mean_total(ratios, g)) / 3 for g in (-1000.0, -5.0, -1.0, 0.0, 1.0, 3.0, 1000.0)]
    assert totals == sorted(totals)
    assert totals[0] == pytest.approx(0.2, rel=2e-3)
    assert totals[-1] == pytest.approx(1.5, rel=2e-3)
    assert totals[3] == pytest.approx((0.2 * 0.5 * 1.5) ** (1 / 3))  # geometric, exact
    near_zero = float(power_mean_total(ratios, 1e-6)) / 3
    assert near_zero == pytest.approx(totals[3], rel=1e-5)


def test_a_zero_loss_leaves_the_mean() -> None:
    """A task without labels in the batch (loss 0) does not zero the geometric mean of the others."""
    method = _measured(0.0, [2.0, 4.0, 1.0], THREE)
    objective, grad = _step(method, [0.0, 1.0, 0.25])  # present ratios 0.25, 0.25
    assert objective == pytest.approx(2 * 0.25)
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.25, 1.0]))  # M / r_i / L^(0) = 1 / L^(0)
    objective, grad = _step(method, [0.0, 0.0, 0.0])
    assert objective == 0.0
    torch.testing.assert_close(grad, torch.zeros(3))


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize(
    "losses",
    [[0.0, 0.0, 0.0], [1e-12, 1e-12, 1e-12], [1e12, 1e12, 1e12], [0.0, 1.0, 1e12], [1e30, 1e-30, 1.0]],
)
def test_extreme_losses_give_finite_values_and_gradients(gamma: float, losses: list[float]) -> None:
    method = GeneralizedMean(THREE, gamma=gamma)
    for step in range(3):
        scale = [1.0, 1e6, 1e-6][step]  # the later steps move away from the measured values
        objective, grad = _step(method, [v * scale for v in losses])
        assert math.isfinite(objective), (gamma, losses, objective)
        assert torch.isfinite(grad).all(), (gamma, losses, grad)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_scale_invariance_for_every_gamma(gamma: float) -> None:
    c = torch.tensor([1.0, 1e6, 1e-3])
    sequence = [torch.tensor(v) for v in ([0.9, 2.0, 0.7], [0.8, 1.6, 0.6], [0.7, 1.5, 0.1])]
    plain, scaled = GeneralizedMean(THREE, gamma=gamma), GeneralizedMean(THREE, gamma=gamma)
    for losses in sequence:
        torch.testing.assert_close(scaled(losses * c), plain(losses))
        torch.testing.assert_close(scaled.effective_weights(losses * c) * c, plain.effective_weights(losses))


def test_identical_losses_get_equal_weights() -> None:
    for gamma in GAMMAS:
        method = _measured(gamma, [0.7, 0.7, 0.7], THREE)
        grad = method.effective_weights(torch.full((3,), 0.4))
        torch.testing.assert_close(grad, torch.full((3,), float(grad[0])))


def test_warmup_reset_and_round_trip() -> None:
    method = GeneralizedMean(TWO, gamma=2.0, warmup_batches=2)
    _step(method, [1.0, 3.0])
    _step(method, [3.0, 5.0])
    torch.testing.assert_close(method.initial, torch.tensor([2.0, 4.0]))
    _step(method, [10.0, 10.0])  # frozen
    torch.testing.assert_close(method.initial, torch.tensor([2.0, 4.0]))
    fresh = GeneralizedMean(TWO, gamma=2.0, warmup_batches=2)
    fresh.load_state_dict(method.state_dict())
    (obj_fresh, grad_fresh), (obj, grad) = _step(fresh, [1.0, 4.0]), _step(method, [1.0, 4.0])
    assert obj_fresh == obj
    assert torch.equal(grad_fresh, grad)
    method.reset()
    assert method.seen.tolist() == [0, 0]
    assert torch.isnan(method.initial).all()


def test_keeps_the_dtype_of_the_losses() -> None:
    for gamma in (0.0, 2.0):
        out = GeneralizedMean(TWO, gamma=gamma)(torch.tensor([0.5, 2.0], dtype=torch.float64))
        assert out.dtype == torch.float64


def test_repr_and_registry() -> None:
    assert repr(GeneralizedMean(TWO)) == "GeneralizedMean(gamma=1.0, warmup_batches=1, eps=1e-12)"
    made = create_weighting("generalized_mean", TWO, gamma=0, warmup_batches=5)
    assert repr(made) == "GeneralizedMean(gamma=0.0, warmup_batches=5, eps=1e-12)"
    assert GeneralizedMean.scale_invariant
    assert GeneralizedMean.order_invariant


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": math.inf}, "gamma must be a finite number .*, got inf"),
        ({"gamma": -math.inf}, "gamma must be a finite number .*, got -inf"),
        ({"gamma": math.nan}, "gamma must be a finite number .*, got nan"),
        ({"gamma": "2"}, "gamma must be a finite number .*, got '2'"),
        ({"gamma": True}, "gamma must be a finite number .*, got True"),
        ({"warmup_batches": 0}, "warmup_batches must be an integer >= 1, got 0"),
        ({"eps": -1.0}, "eps must be a finite number > 0, got -1.0"),
    ],
)
def test_bad_hyperparameters_are_rejected_with_their_value(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GeneralizedMean(TWO, **params)  # type: ignore[arg-type]
    with pytest.raises(MtlkitError, match="balancer 'generalized_mean': " + message):
        create_weighting("generalized_mean", TWO, **params)
