"""GradVac (Wang et al., ICLR 2021): adaptive similarity targets on the Gram matrix."""

from __future__ import annotations

import io
import math

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.gradvac import GradVac, gradvac_coefficients
from mtlkit.aggregation.pcgrad import PCGrad

SCHEMA2 = Schema((Feature("x", "numeric"),), (Task("a"), Task("b")))
SCHEMA3 = Schema((Feature("x", "numeric"),), (Task("a"), Task("b"), Task("c")))


def test_orthogonal_pair_pulled_to_the_target_by_hand() -> None:
    """g1 = (1, 0), g2 = (0, 1), phi = 0 < phi_hat = 1/2: coefficient 1 (1/2 * 1 - 0) / (1 sqrt(3/4)) = 1/sqrt(3).

    g1' = (1, 1/sqrt 3), g2' = (1/sqrt 3, 1), d = (1 + 1/sqrt 3) (1, 1); targets <- 0.99 * 0.5 + 0.01 * 0.
    """
    method = GradVac(SCHEMA2, beta=0.01)
    method.targets.fill_(0.5)
    jac = torch.eye(2, dtype=torch.float64)
    d = method(jac)
    torch.testing.assert_close(d, torch.full((2,), 1 + 1 / math.sqrt(3), dtype=torch.float64))
    torch.testing.assert_close(method.targets, torch.tensor([[0.5, 0.495], [0.495, 0.5]]))
    g1 = jac[0] + jac[1] / math.sqrt(3)
    assert float(g1 @ jac[1] / g1.norm()) == pytest.approx(0.5)  # the corrected cosine is the target


def test_ema_update_by_hand() -> None:
    """g1 = (1, 0), g2 = (-1, 1): both cosines are -1/sqrt 2 when visited; targets <- beta * (-1/sqrt 2)."""
    method = GradVac(SCHEMA2, beta=0.1)
    jac = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    d = method(jac)
    # with zero targets the correction is PCGrad's: g1' = (.5, .5), g2' = (0, 1)
    torch.testing.assert_close(d, torch.tensor([0.5, 1.5]))
    expected = torch.tensor([[0.0, -0.1 / math.sqrt(2)], [-0.1 / math.sqrt(2), 0.0]])
    torch.testing.assert_close(method.targets, expected)
    method(jac)  # second step: phi = -1/sqrt 2 again (before correction), targets move on
    torch.testing.assert_close(method.targets, expected * 0.9 + expected)


def test_no_correction_above_the_target() -> None:
    method = GradVac(SCHEMA3)
    jac = torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.1], [0.3, 0.0, 1.0]])
    torch.testing.assert_close(method(jac), jac.sum(0))
    assert (method.targets >= 0).all()
    assert (method.targets.diagonal() == 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_first_step_with_zero_targets_is_pcgrad(seed: int) -> None:
    """At phi_hat = 0 the correction is -(g_i' . g_j) / ||g_j||^2 g_j, PCGrad's projection, in the same orders."""
    jac = torch.randn(3, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    torch.testing.assert_close(GradVac(SCHEMA3, seed=seed)(jac), PCGrad(SCHEMA3, seed=seed)(jac))


def test_coefficients_hit_the_target_for_a_single_pair() -> None:
    jac = torch.tensor([[1.0, 0.5, -2.0], [-0.5, 1.0, 1.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 0.3], [-0.2, 0.0]], dtype=torch.float64)
    coef = gradvac_coefficients(jac @ jac.T, targets.clone(), [[1], [0]], beta=0.5)
    g = coef @ jac
    assert float(g[0] @ jac[1] / (g[0].norm() * jac[1].norm())) == pytest.approx(0.3)
    assert float(g[1] @ jac[0] / (g[1].norm() * jac[0].norm())) == pytest.approx(-0.2)


def test_reset_clears_targets_and_reseeds() -> None:
    jac = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    method = GradVac(SCHEMA3, seed=5)
    first = method(jac)
    method(-jac.roll(1, 0))
    assert method.targets.abs().sum() > 0
    method.reset()
    assert torch.equal(method.targets, torch.zeros(3, 3))
    torch.testing.assert_close(method(jac), first, rtol=0, atol=0)


def test_state_dict_carries_targets_and_generator() -> None:
    gen = torch.Generator().manual_seed(4)
    jacs = [torch.randn(3, 5, generator=gen) for _ in range(6)]
    first = GradVac(SCHEMA3, beta=0.2, seed=8)
    for jac in jacs[:3]:
        first(jac)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = GradVac(SCHEMA3, beta=0.2)
    second.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(second.targets, first.targets, rtol=0, atol=0)
    for jac in jacs[3:]:
        torch.testing.assert_close(second(jac), first(jac), rtol=0, atol=0)


def test_identical_gradients_give_t_times_g() -> None:
    g = torch.tensor([0.3, -1.0, 2.0])
    method = GradVac(SCHEMA3)
    for _ in range(3):
        torch.testing.assert_close(method(g.expand(3, 3)), 3 * g)


@pytest.mark.parametrize("scale", [0.0, 1e-20, 1e20])
def test_finite_and_scale_invariant(scale: float) -> None:
    jac = torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
    method, unit = GradVac(SCHEMA3), GradVac(SCHEMA3)
    for _ in range(3):
        d = method(jac * scale)
        assert torch.isfinite(d).all()
        if scale:
            torch.testing.assert_close(d / scale, unit(jac))
        else:
            assert torch.equal(d, torch.zeros(6))
    assert torch.isfinite(method.targets).all()


def test_target_near_one_stays_finite() -> None:
    method = GradVac(SCHEMA2)
    method.targets.fill_(1.0)
    assert torch.isfinite(method(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))).all()


def test_repr_and_validation() -> None:
    assert repr(GradVac(SCHEMA2, beta=0.5, seed=2)) == "GradVac(mode='parameter', beta=0.5, seed=2)"
    assert not GradVac.order_invariant
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\], got 0.0"):
        GradVac(SCHEMA2, beta=0.0)
    with pytest.raises(ValueError, match=r"got 1.5"):
        GradVac(SCHEMA2, beta=1.5)
    with pytest.raises(ValueError, match="seed must be in"):
        GradVac(SCHEMA2, seed=-3)
    with pytest.raises(ValueError, match="built for 2 tasks"):
        GradVac(SCHEMA2).weights(torch.eye(3))
