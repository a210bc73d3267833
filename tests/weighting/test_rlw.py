"""Random Loss Weighting (Lin et al., TMLR 2022): seeded draws of its own, resumable from a state_dict."""

from __future__ import annotations

import io
import math

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.rlw import DISTRIBUTIONS, RLW

SCHEMA = Schema((Feature("x", "numeric"),), (Task("click"), Task("like"), Task("watch", "regression")))
LOSSES = torch.tensor([0.3, 1.2, 2.5])


def _grad(method: RLW, losses: torch.Tensor) -> tuple[float, torch.Tensor]:
    probe = losses.clone().requires_grad_(True)
    objective = method(probe)
    (grad,) = torch.autograd.grad(objective, probe)
    return float(objective.detach()), grad


def _draws(method: RLW, steps: int) -> torch.Tensor:
    return torch.stack([_grad(method, LOSSES)[1] for _ in range(steps)])


def test_normal_draws_by_hand() -> None:
    """Seed 0: w_t = 3 softmax(z_t), z_t the t-th triple of standard normals from a generator seeded with 0."""
    g = torch.Generator().manual_seed(0)
    expected = torch.stack([3 * torch.softmax(torch.randn(3, generator=g), dim=0) for _ in range(4)])
    method = RLW(SCHEMA)
    for t in range(4):
        objective, grad = _grad(method, LOSSES)
        torch.testing.assert_close(grad, expected[t], rtol=0, atol=0)
        assert objective == pytest.approx(float((expected[t] * LOSSES).sum()), rel=1e-6)


def test_uniform_and_dirichlet_draws_by_hand() -> None:
    g = torch.Generator().manual_seed(7)
    uniform = 3 * torch.softmax(torch.rand(3, generator=g), dim=0)
    torch.testing.assert_close(_grad(RLW(SCHEMA, "uniform", seed=7), LOSSES)[1], uniform, rtol=0, atol=0)
    g = torch.Generator().manual_seed(7)
    e = torch.empty(3).exponential_(1.0, generator=g)  # Dirichlet(1, 1, 1) = normalised Exp(1) draws
    torch.testing.assert_close(_grad(RLW(SCHEMA, "dirichlet", seed=7), LOSSES)[1], 3 * e / e.sum())


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_weights_are_positive_sum_to_t_and_average_one(distribution: str) -> None:
    draws = _draws(RLW(SCHEMA, distribution), 2000)  # type: ignore[arg-type]
    assert (draws > 0).all()
    torch.testing.assert_close(draws.sum(1), torch.full((2000,), 3.0))
    torch.testing.assert_close(draws.mean(0), torch.ones(3), atol=0.05, rtol=0)
    if distribution == "uniform":  # softmax of U(0, 1): within a factor e of each other
        assert float((draws.max(1).values / draws.min(1).values).max()) <= math.e
    if distribution == "dirichlet":  # each share ~ Beta(1, 2): variance 1 / 18 of w / 3
        assert float((draws / 3).var(0).mean()) == pytest.approx(1 / 18, rel=0.1)


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    a, b, c = RLW(SCHEMA, seed=3), RLW(SCHEMA, seed=3), RLW(SCHEMA, seed=4)
    draws_a = _draws(a, 5)
    torch.testing.assert_close(_draws(b, 5), draws_a, rtol=0, atol=0)
    assert not torch.equal(_draws(c, 5), draws_a)


def test_draws_ignore_the_global_rng() -> None:
    torch.manual_seed(1)
    first = _draws(RLW(SCHEMA), 3)
    torch.manual_seed(2)
    torch.randn(10)
    torch.testing.assert_close(_draws(RLW(SCHEMA), 3), first, rtol=0, atol=0)


def test_a_resumed_run_continues_with_the_same_draws() -> None:
    uninterrupted = RLW(SCHEMA, "dirichlet", seed=11)
    expected = _draws(uninterrupted, 10)

    first = RLW(SCHEMA, "dirichlet", seed=11)
    _draws(first, 4)
    buffer = io.BytesIO()  # the way checkpoints travel: torch.save, torch.load(weights_only=True)
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = RLW(SCHEMA, "dirichlet", seed=11)
    resumed.load_state_dict(state)
    torch.testing.assert_close(_draws(resumed, 6), expected[4:], rtol=0, atol=0)


def test_the_generator_state_travels_in_the_state_dict() -> None:
    method = RLW(SCHEMA)
    _draws(method, 2)
    state = method.state_dict()
    assert list(state) == ["_extra_state"]
    assert state["_extra_state"].dtype == torch.uint8
    other = RLW(SCHEMA, seed=99)  # a different seed is overridden by the saved stream
    other.load_state_dict(state)
    torch.testing.assert_close(_draws(other, 3), _draws(method, 3), rtol=0, atol=0)
    with pytest.raises(ValueError, match="uint8 tensor"):
        other.load_state_dict({"_extra_state": torch.zeros(3)})


def test_effective_weights_preview_the_next_draw() -> None:
    method = RLW(SCHEMA)
    preview = method.effective_weights(LOSSES)
    torch.testing.assert_close(method.effective_weights(LOSSES), preview, rtol=0, atol=0)  # no draw consumed
    torch.testing.assert_close(_grad(method, LOSSES)[1], preview, rtol=0, atol=0)
    assert not torch.equal(method.effective_weights(LOSSES), preview)


def test_reset_returns_to_the_draws_of_a_fresh_instance() -> None:
    method = RLW(SCHEMA, seed=5)
    first = _draws(method, 3)
    method.reset()
    torch.testing.assert_close(_draws(method, 3), first, rtol=0, atol=0)


def test_extreme_losses_and_other_dtypes() -> None:
    objective, grad = _grad(RLW(SCHEMA), torch.tensor([0.0, 1e30, 1e-30]))
    assert math.isfinite(objective)
    assert torch.isfinite(grad).all()
    value = RLW(SCHEMA)(LOSSES.double())
    assert value.dtype == torch.float64


def test_one_task_gets_weight_one() -> None:
    single = Schema((Feature("x", "numeric"),), (Task("click"),))
    method = RLW(single)
    for _ in range(3):
        torch.testing.assert_close(_grad(method, torch.tensor([0.7]))[1], torch.ones(1))


def test_repr_mirrors_the_constructor() -> None:
    assert repr(RLW(SCHEMA)) == "RLW(distribution='normal', seed=0)"
    assert repr(RLW(SCHEMA, "dirichlet", 3)) == "RLW(distribution='dirichlet', seed=3)"


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"distribution": "gaussian"}, ValueError, "distribution must be one of .* got 'gaussian'"),
        ({"seed": -1}, ValueError, r"seed must be in \[0, 2\*\*64\), got -1"),
        ({"seed": 2**64}, ValueError, r"seed must be in \[0, 2\*\*64\), got 18446744073709551616"),
        ({"seed": 1.5}, TypeError, "seed must be an integer, got 1.5"),
        ({"seed": True}, TypeError, "seed must be an integer, got True"),
    ],
)
def test_bad_hyperparameters_are_rejected(
    params: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RLW(SCHEMA, **params)  # type: ignore[arg-type]


def test_registry_wraps_bad_values_in_a_user_error() -> None:
    with pytest.raises(MtlkitError, match="balancer 'rlw': distribution must be one of"):
        create_weighting("rlw", SCHEMA, distribution="beta")
