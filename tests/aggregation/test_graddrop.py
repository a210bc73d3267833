"""GradDrop (Chen et al., NeurIPS 2020): sign purity, a uniform draw per coordinate, masks by sign."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.aggregation.base import GatedJacobian
from mtlkit.aggregation.graddrop import GradDrop, graddrop_direction, sign_purity

SCHEMA2 = Schema((Feature("x", "numeric"),), (Task("a"), Task("b")))
SCHEMA3 = Schema((Feature("x", "numeric"),), (Task("a"), Task("b"), Task("c")))


def test_hand_case_with_fixed_draws() -> None:
    """Columns: (1, -1) P = 1/2; (-2, -1) P = 0; (3, 1) P = 1; (0, 0) P = 1/2; (3, -1) P = 3/4 (twice).

    U = (.3, .5, .9, .1, .8, .6): keep + (1), keep - (-3), keep + (4), 0, P < U keep - (-1), P > U keep + (3).
    """
    jac = torch.tensor([[1.0, -2.0, 3.0, 0.0, 3.0, 3.0], [-1.0, -1.0, 1.0, 0.0, -1.0, -1.0]])
    u = torch.tensor([0.3, 0.5, 0.9, 0.1, 0.8, 0.6])
    torch.testing.assert_close(sign_purity(jac), torch.tensor([0.5, 0.0, 1.0, 0.5, 0.75, 0.75]))
    kept = torch.tensor([1.0, -3.0, 4.0, 0.0, -1.0, 3.0])
    torch.testing.assert_close(graddrop_direction(jac, u), kept)
    # leak 1/4: a quarter of every gradient passes unmasked
    torch.testing.assert_close(graddrop_direction(jac, u, 0.25), 0.25 * jac.sum(0) + 0.75 * kept)
    torch.testing.assert_close(graddrop_direction(jac, u, 1.0), jac.sum(0))


def _sixteen_bit_draws(bits: np.random.PCG64, n: int) -> torch.Tensor:
    """The documented stream, written out: each 64-bit output w gives k_j = (w >> 16 j) & 0xFFFF, j = 0..3 (the
    leftovers of the last word are dropped), and U = k / 65536."""
    words = [int(w) for w in bits.random_raw(-(-n // 4))]
    ks = [(w >> (16 * j)) & 0xFFFF for w in words for j in range(4)][:n]
    return torch.tensor([k / 65536 for k in ks], dtype=torch.float32)


def test_module_draws_from_its_own_stream() -> None:
    """U comes from numpy's PCG64 seeded with ``seed``: four 16-bit draws per 64-bit output, one per coordinate
    and step (50 coordinates: 13 words a step, the last two draws of each step's last word unused)."""
    jac = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    bits = np.random.PCG64(7)
    method = GradDrop(SCHEMA3, seed=7)
    for _ in range(3):
        expected = graddrop_direction(jac, _sixteen_bit_draws(bits, 50))
        torch.testing.assert_close(method(jac), expected, rtol=0, atol=0)


def test_draws_are_uniform_on_sixteen_bit_points_and_keep_with_probability_p() -> None:
    """U in {0, ..., 65535} / 65536 with each point about equally often, and a coordinate of purity p keeps its
    positive side with frequency p (binomial bounds, 5 sigma: a draw biased by 1% fails)."""
    method = GradDrop(SCHEMA2, seed=11)
    n = 400_000
    u = method.uniform(n).clone()
    k = u * 65536
    assert torch.equal(k, k.round())
    assert float(k.min()) >= 0
    assert float(k.max()) <= 65535
    assert abs(float(u.double().mean()) - 0.5) < 5 * (1 / 12) ** 0.5 / n**0.5
    counts = torch.bincount((u * 16).long(), minlength=16).double()  # 16 bins of 4,096 points each
    assert float(((counts - n / 16) ** 2 / (n / 16)).sum()) < 50  # chi-square, 15 degrees of freedom
    for p in (0.3, 0.75, 0.999):
        jac = torch.tensor([[p], [p - 1.0]]).expand(2, n)  # P = p / (p + 1 - p) = p in every column
        kept_positive = float((method(jac) > 0).double().mean())
        assert abs(kept_positive - p) < 5 * (p * (1 - p) / n) ** 0.5 + 1 / 65536


def test_direction_leaves_the_callers_tensors_alone() -> None:
    jac = torch.randn(3, 40, generator=torch.Generator().manual_seed(6))
    u = torch.rand(40, generator=torch.Generator().manual_seed(1))
    jac_before, u_before = jac.clone(), u.clone()
    first = graddrop_direction(jac, u)
    assert torch.equal(jac, jac_before)
    assert torch.equal(u, u_before)
    torch.testing.assert_close(graddrop_direction(jac, u), first, rtol=0, atol=0)


@pytest.mark.parametrize("leak", [0.0, 0.3])
@pytest.mark.parametrize("shift", [0.0, -1.0])
def test_factors_give_the_direction_of_the_built_matrix(leak: float, shift: float) -> None:
    """From a gated mix's factors (softmax gate weights and the gradients at the tower inputs) GradDrop forms its
    direction from the two signed sums without building the rows; with the same draws it is the direction of the
    built matrix, plus ``shift`` times the plain sum (the engine's correction)."""
    g = torch.Generator().manual_seed(3)
    weights = torch.softmax(torch.randn(16, 2, 8, generator=g), dim=2)  # [B, T, E]
    upstream = torch.randn(16, 2, 16, generator=g)  # [B, T, d]
    dense = GatedJacobian(weights, upstream).dense()
    via_factors = GradDrop(SCHEMA2, leak=leak, seed=5).shifted(GatedJacobian(weights, upstream), shift)
    expected = GradDrop(SCHEMA2, leak=leak, seed=5)(dense) + shift * dense.sum(0)
    assert via_factors.shape == (dense.shape[1],)
    assert via_factors.is_contiguous()
    torch.testing.assert_close(via_factors, expected, rtol=1e-5, atol=1e-6)


def test_state_from_another_generator_is_an_error_that_says_what_to_do() -> None:
    method = GradDrop(SCHEMA2)
    state = method.state_dict()
    state["_extra_state"] = torch.Generator().manual_seed(0).get_state()  # an older checkpoint's torch state
    with pytest.raises(
        ValueError, match=r"uint8 tensor of 37 bytes .* got 5056 torch.uint8 values.*start the run"
    ):
        method.load_state_dict(state)


def test_all_positive_gradients_pass_unchanged() -> None:
    jac = torch.rand(3, 40, generator=torch.Generator().manual_seed(1)) + 0.01
    torch.testing.assert_close(GradDrop(SCHEMA3)(jac), jac.sum(0))


def test_sign_agreement_passes_unchanged_and_identical_gives_t_times_g() -> None:
    g = torch.tensor([0.5, -2.0, 0.0, 3.0])
    torch.testing.assert_close(GradDrop(SCHEMA3)(g.expand(3, 4)), 3 * g)


def test_every_output_coordinate_keeps_one_sign() -> None:
    jac = torch.randn(3, 200, generator=torch.Generator().manual_seed(2))
    d = GradDrop(SCHEMA3)(jac)
    positive = jac.clamp(min=0).sum(0)
    negative = jac.clamp(max=0).sum(0)
    assert bool(((d == positive) | (d == negative)).all())


def test_zero_columns_are_finite() -> None:
    jac = torch.zeros(3, 5)
    jac[0, 1] = 1.0
    d = GradDrop(SCHEMA3)(jac)
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d, torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize("scale", [0.0, 1e-20, 1e20])
def test_finite_and_scale_equivariant(scale: float) -> None:
    jac = torch.randn(3, 30, generator=torch.Generator().manual_seed(3))
    d = GradDrop(SCHEMA3)(jac * scale)
    assert torch.isfinite(d).all()
    if scale:
        torch.testing.assert_close(d / scale, GradDrop(SCHEMA3)(jac))
    else:
        assert torch.equal(d, torch.zeros(30))


def test_order_invariant_under_the_same_draw() -> None:
    jac = torch.randn(3, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    perm = torch.tensor([1, 2, 0])
    torch.testing.assert_close(GradDrop(SCHEMA3, seed=3)(jac[perm]), GradDrop(SCHEMA3, seed=3)(jac))
    assert GradDrop.order_invariant
    assert GradDrop.needs == frozenset({"jacobian"})


def test_generator_state_round_trips_and_reset() -> None:
    jac = torch.randn(2, 20, generator=torch.Generator().manual_seed(5))
    first = GradDrop(SCHEMA2, seed=4)
    fresh = first(jac)
    first(jac)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = GradDrop(SCHEMA2)
    second.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(second(jac), first(jac), rtol=0, atol=0)
    first.reset()
    torch.testing.assert_close(first(jac), fresh, rtol=0, atol=0)


def test_no_task_weights_repr_and_validation() -> None:
    with pytest.raises(MtlkitError, match="coordinate-wise"):
        GradDrop(SCHEMA2).weights(torch.eye(2))
    assert (
        repr(GradDrop(SCHEMA2, "representation", leak=0.5))
        == "GradDrop(mode='representation', leak=0.5, seed=0)"
    )
    with pytest.raises(ValueError, match=r"leak must be in \[0, 1\], got 1.5"):
        GradDrop(SCHEMA2, leak=1.5)
    with pytest.raises(TypeError, match="leak must be a number, got 'x'"):
        GradDrop(SCHEMA2, leak="x")  # type: ignore[arg-type]
