"""PCGrad (Yu et al., NeurIPS 2020): gradient surgery on the Gram matrix, checked against a per-coordinate reference."""

from __future__ import annotations

import io
import random

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.pcgrad import PCGrad, pcgrad_coefficients

SCHEMA2 = Schema((Feature("x", "numeric"),), (Task("a"), Task("b")))
SCHEMA4 = Schema((Feature("x", "numeric"),), tuple(Task(n) for n in "abcd"))


def reference(jacobian: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """The paper's loop on the coordinates: project each g_i' against the original g_j in the given order."""
    projected = []
    for i in range(jacobian.shape[0]):
        g = jacobian[i].clone()
        for j in orders[i]:
            dot = g @ jacobian[j]
            if dot < 0:
                g = g - dot / (jacobian[j] @ jacobian[j]) * jacobian[j]
        projected.append(g)
    return torch.stack(projected).sum(0)


def _orders(seed: int, tasks: int) -> list[list[int]]:
    """The documented rule: for i = 0, 1, ..., random.Random(seed) shuffles the other tasks in increasing order."""
    rng = random.Random(seed)
    orders = []
    for i in range(tasks):
        others = [j for j in range(tasks) if j != i]
        rng.shuffle(others)
        orders.append(others)
    return orders


def test_two_conflicting_gradients_by_hand() -> None:
    """g1 = (1, 0), g2 = (-1, 1): g1' = g1 + g2 / 2 = (.5, .5), g2' = g2 + g1 = (0, 1), d = (.5, 1.5).

    Coefficients C = [[1, 1/2], [1, 1]], weights C.sum(0) = (2, 3/2).
    """
    jac = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    d = PCGrad(SCHEMA2)(jac)
    torch.testing.assert_close(d, torch.tensor([0.5, 1.5]))
    assert float(d @ jac[0]) >= 0
    assert float(d @ jac[1]) >= 0
    torch.testing.assert_close(PCGrad(SCHEMA2).weights(jac @ jac.T), torch.tensor([2.0, 1.5]))


@pytest.mark.parametrize("seed", range(5))
def test_conflicting_pair_is_non_negative_with_both(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    d = PCGrad(SCHEMA2, seed=seed)(jac)
    assert float(d @ jac[0]) >= -1e-12
    assert float(d @ jac[1]) >= -1e-12


def test_no_conflict_gives_the_sum() -> None:
    jac = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(PCGrad(SCHEMA4)(jac), jac.sum(0))


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_per_coordinate_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    jac = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    orders = [[1, 2, 3], [3, 0, 2], [0, 3, 1], [2, 1, 0]]
    coef = pcgrad_coefficients(jac @ jac.T, orders)
    torch.testing.assert_close(coef.sum(0) @ jac, reference(jac, orders))
    # the module draws its orders from its own generator: same orders, same direction
    torch.testing.assert_close(PCGrad(SCHEMA4, seed=seed)(jac), reference(jac, _orders(seed, 4)))


def test_order_matters_for_three_or_more_tasks_but_not_two() -> None:
    jac = torch.tensor([[1.0, 0.0], [-1.0, 0.2], [-0.3, -1.0], [0.5, 0.5]], dtype=torch.float64)
    a = pcgrad_coefficients(jac @ jac.T, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]).sum(0) @ jac
    b = pcgrad_coefficients(jac @ jac.T, [[2, 1, 3], [2, 0, 3], [1, 0, 3], [2, 1, 0]]).sum(0) @ jac
    assert not torch.allclose(a, b)
    pair = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    torch.testing.assert_close(PCGrad(SCHEMA2, seed=1)(pair.flip(0)), PCGrad(SCHEMA2, seed=2)(pair))


def test_identical_gradients_give_t_times_g() -> None:
    g = torch.tensor([0.3, -1.0, 2.0])
    torch.testing.assert_close(PCGrad(SCHEMA4)(g.expand(4, 3)), 4 * g)


@pytest.mark.parametrize("scale", [0.0, 1e-20, 1e20])
def test_finite_and_scale_invariant(scale: float) -> None:
    gen = torch.Generator().manual_seed(3)
    jac = torch.randn(4, 6, generator=gen)
    d = PCGrad(SCHEMA4)(jac * scale)
    assert torch.isfinite(d).all()
    if scale:
        torch.testing.assert_close(d / scale, PCGrad(SCHEMA4)(jac))
    else:
        assert torch.equal(d, torch.zeros(6))


def test_a_zero_task_gradient_is_harmless() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(PCGrad(SCHEMA4)(jac), torch.tensor([0.5, 1.5]))


def test_generator_state_round_trips_through_state_dict() -> None:
    gen = torch.Generator().manual_seed(9)
    jacs = [torch.randn(4, 5, generator=gen) for _ in range(6)]
    first = PCGrad(SCHEMA4, seed=11)
    for jac in jacs[:3]:
        first(jac)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = PCGrad(SCHEMA4, seed=0)
    second.load_state_dict(torch.load(buffer))
    for jac in jacs[3:]:
        torch.testing.assert_close(second(jac), first(jac), rtol=0, atol=0)
    first.reset()
    torch.testing.assert_close(first(jacs[0]), PCGrad(SCHEMA4, seed=11)(jacs[0]), rtol=0, atol=0)


def test_orders_ignore_the_global_rng() -> None:
    jac = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(1)
    a = PCGrad(SCHEMA4)(jac)
    torch.manual_seed(2)
    torch.testing.assert_close(PCGrad(SCHEMA4)(jac), a, rtol=0, atol=0)


def test_repr_and_validation() -> None:
    assert repr(PCGrad(SCHEMA2, seed=3)) == "PCGrad(mode='parameter', seed=3)"
    assert not PCGrad.order_invariant
    assert PCGrad.needs == frozenset({"gram"})
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got -1"):
        PCGrad(SCHEMA2, seed=-1)
    with pytest.raises(TypeError, match=r"seed must be an integer, got 1.5"):
        PCGrad(SCHEMA2, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="saved random state must be an int64 tensor"):
        PCGrad(SCHEMA2).set_extra_state("nope")
    old_torch_state = torch.Generator().manual_seed(0).get_state()  # what checkpoints held before
    with pytest.raises(ValueError, match=r"625 words .* got 5056 torch.uint8 values.*start the run again"):
        PCGrad(SCHEMA2).set_extra_state(old_torch_state)
