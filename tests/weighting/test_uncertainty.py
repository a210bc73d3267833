"""Uncertainty weighting (Kendall et al., CVPR 2018): the paper's two forms, values by hand, gradients wrt s."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.uncertainty import Uncertainty

SCHEMA = Schema(
    (Feature("x", "numeric"),),
    (Task("click"), Task("watch", "regression"), Task("genre", "multiclass", num_classes=3)),
)
LOSSES = torch.tensor([0.5, 2.0, 1.0])


def _objective_and_grads(
    method: Uncertainty, losses: torch.Tensor
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(objective, d objective / d losses, d objective / d s)."""
    probe = losses.clone().requires_grad_(True)
    method.zero_grad()
    objective = method(probe)
    objective.backward()
    assert probe.grad is not None
    assert method.log_vars.grad is not None
    return float(objective.detach()), probe.grad, method.log_vars.grad.clone()


def test_forms_follow_the_task_kinds() -> None:
    method = Uncertainty(SCHEMA)
    # binary and multiclass: classification (1 / sigma^2); regression: 1 / (2 sigma^2)
    torch.testing.assert_close(method.factors, torch.tensor([1.0, 0.5, 1.0]))
    torch.testing.assert_close(Uncertainty(SCHEMA, form="regression").factors, torch.full((3,), 0.5))
    torch.testing.assert_close(Uncertainty(SCHEMA, form="classification").factors, torch.ones(3))


def test_values_and_gradients_by_hand_at_sigma_one() -> None:
    objective, grad_losses, grad_s = _objective_and_grads(Uncertainty(SCHEMA), LOSSES)
    # s = 0: 1 * 0.5 + 0.5 * 2.0 + 1 * 1.0 + 0.5 * (0 + 0 + 0)
    assert objective == pytest.approx(2.5)
    torch.testing.assert_close(grad_losses, torch.tensor([1.0, 0.5, 1.0]))
    # d/ds_i = -a_i exp(-s_i) L_i + 0.5
    torch.testing.assert_close(grad_s, torch.tensor([-0.5 + 0.5, -1.0 + 0.5, -1.0 + 0.5]))


def test_values_and_gradients_by_hand_at_another_sigma() -> None:
    method = Uncertainty(SCHEMA, init_log_var=math.log(2.0))  # sigma^2 = 2: exp(-s) = 0.5
    objective, grad_losses, grad_s = _objective_and_grads(method, LOSSES)
    expected = 0.5 * 0.5 + 0.25 * 2.0 + 0.5 * 1.0 + 3 * 0.5 * math.log(2.0)
    assert objective == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(grad_losses, torch.tensor([0.5, 0.25, 0.5]))
    torch.testing.assert_close(grad_s, torch.tensor([-0.25 + 0.5, -0.5 + 0.5, -0.5 + 0.5]))
    torch.testing.assert_close(method.precisions(), torch.tensor([0.5, 0.25, 0.5]))


def test_forced_form_applies_to_every_task() -> None:
    objective, grad_losses, _ = _objective_and_grads(Uncertainty(SCHEMA, form="regression"), LOSSES)
    assert objective == pytest.approx(0.5 * (0.5 + 2.0 + 1.0))
    torch.testing.assert_close(grad_losses, torch.full((3,), 0.5))


def test_the_optimum_over_s_weights_each_loss_by_one_over_twice_the_loss() -> None:
    method = Uncertainty(SCHEMA)
    with torch.no_grad():  # s* = log(2 a_i L_i) zeroes -a_i exp(-s) L_i + 0.5
        method.log_vars.copy_(torch.log(2 * method.factors * LOSSES))
    _, grad_losses, grad_s = _objective_and_grads(method, LOSSES)
    torch.testing.assert_close(grad_s, torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(grad_losses, 1 / (2 * LOSSES))


def test_log_vars_are_trained_by_an_optimizer_toward_the_optimum() -> None:
    method = Uncertainty(SCHEMA)
    assert [name for name, _ in method.named_parameters()] == ["log_vars"]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    for _ in range(300):
        optimizer.zero_grad()
        method(LOSSES).backward()
        optimizer.step()
    torch.testing.assert_close(
        method.log_vars.detach(), torch.log(2 * method.factors * LOSSES), atol=1e-4, rtol=0
    )


def test_a_task_without_labels_leaves_its_log_var_alone() -> None:
    method = Uncertainty(SCHEMA, init_log_var=1.0)
    losses = torch.tensor([0.0, 2.0, 1.0])  # exactly 0: no labelled row of click in the batch
    objective, grad_losses, grad_s = _objective_and_grads(method, losses)
    e = math.exp(-1.0)
    assert objective == pytest.approx(0.5 * e * 2.0 + 0.5 + e * 1.0 + 0.5, rel=1e-6)
    assert grad_s[0] == 0.0
    assert grad_losses[0] == 0.0
    torch.testing.assert_close(grad_s[1:], torch.tensor([-0.5 * e * 2.0 + 0.5, -e + 0.5]))


def test_extreme_losses_and_float64() -> None:
    objective, grad_losses, grad_s = _objective_and_grads(
        Uncertainty(SCHEMA), torch.tensor([1e30, 1e-30, 0.0])
    )
    assert math.isfinite(objective)
    assert torch.isfinite(grad_losses).all()
    assert torch.isfinite(grad_s).all()
    method = Uncertainty(SCHEMA)
    value = method(LOSSES.double())
    assert value.dtype == torch.float64
    assert float(value.detach()) == pytest.approx(2.5)


def test_reset_restores_the_initial_log_vars() -> None:
    method = Uncertainty(SCHEMA, init_log_var=-0.5)
    with torch.no_grad():
        method.log_vars.add_(torch.tensor([1.0, 2.0, 3.0]))
    method.reset()
    torch.testing.assert_close(method.log_vars.detach(), torch.full((3,), -0.5))


def test_state_dict_holds_the_log_vars_only() -> None:
    method = Uncertainty(SCHEMA)
    with torch.no_grad():
        method.log_vars.copy_(torch.tensor([0.1, -0.2, 0.3]))
    state = method.state_dict()
    assert list(state) == ["log_vars"]  # the per-task factors follow from the schema
    fresh = Uncertainty(SCHEMA)
    fresh.load_state_dict(state)
    assert float(fresh(LOSSES).detach()) == float(method(LOSSES).detach())


def test_repr_mirrors_the_constructor() -> None:
    assert repr(Uncertainty(SCHEMA)) == "Uncertainty(init_log_var=0.0, form='by_kind')"
    assert repr(Uncertainty(SCHEMA, 1, "regression")) == "Uncertainty(init_log_var=1.0, form='regression')"


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"init_log_var": math.nan}, ValueError, "init_log_var must be finite, got nan"),
        ({"init_log_var": math.inf}, ValueError, "init_log_var must be finite, got inf"),
        ({"init_log_var": True}, TypeError, "init_log_var must be a number, got True"),
        ({"init_log_var": "0"}, TypeError, "init_log_var must be a number, got '0'"),
        ({"form": "gaussian"}, ValueError, "form must be one of .* got 'gaussian'"),
    ],
)
def test_bad_hyperparameters_are_rejected(
    params: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Uncertainty(SCHEMA, **params)  # type: ignore[arg-type]


def test_registry_wraps_bad_values_in_a_user_error() -> None:
    with pytest.raises(MtlkitError, match="balancer 'uncertainty': form must be one of"):
        create_weighting("uncertainty", SCHEMA, form="gaussian")
