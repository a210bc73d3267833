"""FAMO (Liu et al., NeurIPS 2023): weights T c z_i / L_i, logits adapted by Adam on the fall of the log-losses."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.famo import FAMO

TWO = Schema((Feature("x", "numeric"),), (Task("click"), Task("watch", "regression")))
THREE = Schema((Feature("x", "numeric"),), (Task("click"), Task("like"), Task("watch", "regression")))
SEQUENCE = [
    torch.tensor(v)
    for v in (
        [0.9, 2.0, 0.7],
        [0.8, 1.6, 0.65],
        [0.7, 1.5, 0.66],
        [0.6, 1.1, 0.5],
        [0.62, 1.0, 0.45],
        [0.5, 0.9, 0.44],
    )
]


def _grad(method: FAMO, losses: torch.Tensor) -> tuple[float, torch.Tensor]:
    probe = losses.clone().requires_grad_(True)
    objective = method(probe)
    (grad,) = torch.autograd.grad(objective, probe)
    return float(objective.detach()), grad


def _official_logits(sequence: list[torch.Tensor], lr: float, gamma: float) -> torch.Tensor:
    """The official update (github.com/Cranial-XIX/FAMO): Adam(weight_decay=gamma) on the logits, with gradient
    J_softmax^T [log L(before) - log L(after)], one step per consecutive pair of losses."""
    w = torch.zeros(len(sequence[0]), requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=lr, weight_decay=gamma)
    for before, after in itertools.pairwise(sequence):
        delta = before.log() - after.log()
        (d,) = torch.autograd.grad(torch.softmax(w, -1), w, grad_outputs=delta)
        optimizer.zero_grad()
        w.grad = d
        optimizer.step()
    return w.detach()


def test_first_step_by_hand() -> None:
    method = FAMO(TWO)
    objective, grad = _grad(method, torch.tensor([1.0, 2.0]))
    # z = (1/2, 1/2); c z_i / L_i = (1/2, 1/4) / (3/4) = (2/3, 1/3); times T = 2
    torch.testing.assert_close(grad, torch.tensor([4 / 3, 2 / 3]))
    assert objective == pytest.approx(4 / 3 * 1.0 + 2 / 3 * 2.0)
    torch.testing.assert_close(method.logits, torch.zeros(2))  # nothing to compare with yet
    assert int(method.steps) == 0
    torch.testing.assert_close(method.previous_losses, torch.tensor([1.0, 2.0]))


def test_second_step_by_hand() -> None:
    method = FAMO(TWO)
    _grad(method, torch.tensor([1.0, 2.0]))
    _, grad = _grad(method, torch.tensor([0.5, 1.6]))
    # log-loss falls d = (log 2, log 1.25); mean under z = (1/2, 1/2): m = (d1 + d2) / 2
    # gradient on xi: z_k (d_k - m) = (0.11750, -0.11750); Adam's first step moves each logit by lr * sign
    g = 0.5 * (math.log(2.0) - math.log(1.25)) / 2
    step = 0.025 * g / (g + 1e-8)
    torch.testing.assert_close(method.logits, torch.tensor([-step, step]))
    assert int(method.steps) == 1
    # z = softmax(-0.025, 0.025); w_i = 2 (z_i / L_i) / sum_j (z_j / L_j) at L = (0.5, 1.6)
    z1 = 1 / (1 + math.exp(2 * step))
    share = [z1 / 0.5, (1 - z1) / 1.6]
    expected = torch.tensor([2 * s / sum(share) for s in share])
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(expected, torch.tensor([1.5054321, 0.4945679]))
    # click fell faster, so its logit went down: its weight is below the 2 * (1/0.5) / (1/0.5 + 1/1.6) of z = 1/2
    assert float(grad[0]) < 2 * 2.0 / (2.0 + 1 / 1.6)


@pytest.mark.parametrize(("lr", "gamma"), [(0.025, 1e-3), (0.1, 0.0), (0.01, 0.1)])
def test_logits_follow_the_official_update(lr: float, gamma: float) -> None:
    method = FAMO(THREE, lr=lr, gamma=gamma)
    for losses in SEQUENCE:
        _grad(method, losses)
    torch.testing.assert_close(method.logits, _official_logits(SEQUENCE, lr, gamma), rtol=1e-5, atol=1e-7)
    assert int(method.steps) == len(SEQUENCE) - 1


def test_weights_are_t_c_z_over_l() -> None:
    method = FAMO(THREE)
    for losses in SEQUENCE[:-1]:
        _grad(method, losses)
    current = SEQUENCE[-1]
    preview = method.effective_weights(current)
    _, grad = _grad(method, current)
    z = torch.softmax(method.logits, 0)
    c = 1 / (z / current).sum()
    torch.testing.assert_close(grad, 3 * c * z / current)
    torch.testing.assert_close(preview, grad)  # effective_weights applies the pending update too
    torch.testing.assert_close(method.shares(), z)


def test_effective_weights_change_nothing() -> None:
    method = FAMO(THREE)
    for losses in SEQUENCE[:3]:
        _grad(method, losses)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.effective_weights(SEQUENCE[3])
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True)


def test_logits_are_buffers_out_of_reach_of_the_optimizer() -> None:
    method = FAMO(THREE)
    assert list(method.parameters()) == []
    assert sorted(dict(method.named_buffers())) == [
        "exp_avg",
        "exp_avg_sq",
        "logits",
        "previous_losses",
        "steps",
    ]
    for losses in SEQUENCE[:2]:
        probe = losses.clone().requires_grad_(True)
        method(probe).backward()
        assert probe.grad is not None
    assert not any(b.requires_grad for b in method.buffers())


def test_scaling_a_loss_changes_neither_the_logits_nor_the_direction() -> None:
    plain, scaled = FAMO(THREE), FAMO(THREE)
    factor = torch.tensor([1.0, 1e4, 1.0])
    for losses in SEQUENCE:
        _, grad_plain = _grad(plain, losses)
        _, grad_scaled = _grad(scaled, losses * factor)
    torch.testing.assert_close(scaled.logits, plain.logits)
    # d objective / d theta = sum_i w_i grad L_i: the weight times the scale of L_i gives the same direction
    # (its length follows c, a weighted harmonic mean of the losses)
    direction = grad_scaled * factor
    torch.testing.assert_close(direction / direction.sum(), grad_plain / grad_plain.sum())


def test_equal_falls_leave_the_weights_alone_and_decay_pulls_toward_equal() -> None:
    method = FAMO(TWO, gamma=0.0)
    for losses in ([1.0, 2.0], [0.5, 1.0], [0.25, 0.5]):  # both halve every step
        _grad(method, torch.tensor(losses))
    torch.testing.assert_close(method.logits, torch.zeros(2))
    decaying = FAMO(TWO, lr=0.01, gamma=0.5)
    decaying.logits.copy_(torch.tensor([1.0, -1.0]))
    for _ in range(3):
        _grad(decaying, torch.tensor([1.0, 2.0]))  # no change in the losses: only the decay acts
    assert 0 < float(decaying.logits[0]) < 1.0
    assert -1.0 < float(decaying.logits[1]) < 0


def test_a_task_without_labels_is_left_out_of_the_step() -> None:
    method = FAMO(THREE, gamma=0.0)
    _grad(method, torch.tensor([1.0, 2.0, 0.5]))
    objective, grad = _grad(method, torch.tensor([0.0, 1.0, 0.45]))  # click has no labelled row
    assert float(grad[0]) == 0.0
    assert float(method.logits[0]) == 0.0  # its log-loss change is not measured
    assert float(method.logits[1]) < 0 < float(method.logits[2])  # like fell faster than watch
    assert math.isnan(float(method.previous_losses[0]))
    z = torch.softmax(method.logits, 0)
    share = torch.stack([z[1] / 1.0, z[2] / 0.45])
    torch.testing.assert_close(grad[1:], 3 * share / share.sum())
    assert objective == pytest.approx(float((grad * torch.tensor([0.0, 1.0, 0.45])).sum()), rel=1e-6)
    # back with labels: measured again from the step after
    _grad(method, torch.tensor([0.9, 0.9, 0.4]))
    assert float(method.logits[0]) == 0.0
    assert not math.isnan(float(method.previous_losses[0]))


@pytest.mark.parametrize(
    "losses", [[0.0, 0.0, 0.0], [1e-12, 1e-12, 1e-12], [1e30, 1e-30, 1.0], [0.0, 1.0, 1e12]], ids=str
)
def test_zero_tiny_and_huge_losses_stay_finite(losses: list[float]) -> None:
    method = FAMO(THREE)
    for value in (losses, SEQUENCE[0].tolist(), losses):
        objective, grad = _grad(method, torch.tensor(value))
        assert math.isfinite(objective)
        assert torch.isfinite(grad).all()
        assert all(torch.isfinite(b).all() for name, b in method.named_buffers() if name != "previous_losses")


def test_reset_and_checkpoint_round_trip() -> None:
    method = FAMO(THREE)
    for losses in SEQUENCE[:4]:
        _grad(method, losses)
    resumed = FAMO(THREE)
    resumed.load_state_dict(method.state_dict())
    for losses in SEQUENCE[4:]:
        _, expected = _grad(method, losses)
        _, got = _grad(resumed, losses)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    method.reset()
    fresh = FAMO(THREE)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(method.state_dict()[key], value, rtol=0, atol=0, equal_nan=True)


def test_repr_mirrors_the_constructor() -> None:
    assert repr(FAMO(TWO)) == "FAMO(lr=0.025, gamma=0.001, eps=1e-08)"
    assert repr(FAMO(TWO, lr=1, gamma=0)) == "FAMO(lr=1.0, gamma=0.0, eps=1e-08)"


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"lr": 0.0}, ValueError, "lr must be > 0, got 0.0"),
        ({"lr": -1}, ValueError, "lr must be > 0, got -1"),
        ({"lr": math.nan}, ValueError, "lr must be > 0, got nan"),
        ({"gamma": -0.1}, ValueError, "gamma must be >= 0, got -0.1"),
        ({"gamma": math.inf}, ValueError, "gamma must be >= 0, got inf"),
        ({"eps": 0}, ValueError, "eps must be > 0, got 0"),
        ({"lr": "0.1"}, TypeError, "lr must be a number, got '0.1'"),
        ({"gamma": False}, TypeError, "gamma must be a number, got False"),
    ],
)
def test_bad_hyperparameters_are_rejected(
    params: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        FAMO(TWO, **params)  # type: ignore[arg-type]


def test_registry_wraps_bad_values_in_a_user_error() -> None:
    with pytest.raises(MtlkitError, match=r"balancer 'famo': lr must be > 0, got -0\.5"):
        create_weighting("famo", TWO, lr=-0.5)
