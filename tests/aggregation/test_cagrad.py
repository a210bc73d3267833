"""CAGrad (Liu et al., NeurIPS 2021): the simplex problem on the Gram matrix, the official rescaling."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.base import MeanAggregator
from mtlkit.aggregation.cagrad import CAGrad, cagrad_objective, cagrad_solve, project_to_simplex

SCHEMA2 = Schema((Feature("x", "numeric"),), (Task("a"), Task("b")))
SCHEMA3 = Schema((Feature("x", "numeric"),), (Task("a"), Task("b"), Task("c")))


def test_c_zero_is_exactly_the_mean() -> None:
    jac = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    for rescale in (0, 1, 2):
        assert torch.equal(CAGrad(SCHEMA3, c=0.0, rescale=rescale)(jac), MeanAggregator(SCHEMA3)(jac))


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_orthogonal_unit_gradients_by_hand(rescale: int) -> None:
    """G = I: w* = (1/2, 1/2), g_w = g0 = (1/2, 1/2), ||g0|| = 1/sqrt 2, so d = (1 + c) g0 / r."""
    c = 0.5
    d = CAGrad(SCHEMA2, c=c, rescale=rescale)(torch.eye(2, dtype=torch.float64))
    r = (1.0, 1 + c**2, 1 + c)[rescale]
    torch.testing.assert_close(d, torch.full((2,), 0.5 * (1 + c) / r, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("c", [0.2, 0.5, 2.0])
def test_objective_beats_a_grid_search_on_two_tasks(seed: int, c: float) -> None:
    jac = torch.randn(2, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    jac[1] -= (0.5 + seed / 4) * jac[0]  # make most pairs conflict
    gram = jac @ jac.T
    gram = gram / gram.diagonal().max()
    a = torch.linspace(0, 1, 200001, dtype=torch.float64)
    grid = torch.stack([a, 1 - a], 1)
    g0_norm = math.sqrt(float(gram.mean()))  # ||g0||^2 = 1^T G 1 / T^2
    values = grid @ gram.mean(1) + c * g0_norm * ((grid @ gram) * grid).sum(1).clamp_min(0).sqrt()
    best = float(values.min())
    assert best == pytest.approx(cagrad_objective(gram, grid[int(values.argmin())], c))
    w = cagrad_solve(gram, c)
    assert float(w.sum()) == pytest.approx(1.0)
    assert (w >= 0).all()
    assert cagrad_objective(gram, w, c) <= best + 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_direction_is_the_formula_and_stays_in_the_ball(seed: int) -> None:
    jac = torch.randn(3, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = 0.5
    gram = jac @ jac.T
    w = cagrad_solve(gram, c)
    g0, gw = jac.mean(0), w @ jac
    expected = (g0 + c * g0.norm() / gw.norm() * gw) / (1 + c**2)
    d = CAGrad(SCHEMA3, c=c)(jac)
    torch.testing.assert_close(d, expected)
    assert float(((1 + c**2) * d - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-9)
    # the worst task improvement is no worse than the mean's
    assert float((jac @ d).min()) * (1 + c**2) >= float((jac @ g0).min()) - 1e-9


def _optimality_gap(gram: torch.Tensor, w: torch.Tensor, c: float) -> float:
    """How far w is from the optimality conditions: with grad_i = a_i + k (G w)_i / ||g_w|| (a = G 1/T,
    k = c ||g0||), the spread of grad over the support plus how far any task off it falls below its minimum."""
    t = gram.shape[0]
    a = gram.mean(1)
    k = c * math.sqrt(float(gram.mean()))
    gw = gram @ w
    grad = a + k * gw / math.sqrt(float(w @ gw))
    on = w > 1e-12
    lam = float(grad[on].min())
    spread = float(grad[on].max()) - lam
    below = max(0.0, lam - float(grad[~on].min())) if bool((~on).any()) else 0.0
    assert t == w.shape[0]
    return spread + below


@pytest.mark.parametrize("seed", range(16))
def test_solution_meets_the_optimality_conditions(seed: int) -> None:
    """3 to 10 tasks (Python products up to SMALL_SYSTEM, numpy beyond), some pairs in conflict: the solver's w*
    satisfies the convex problem's KKT conditions to 1e-9 (the closed-form finish on the support; projected
    gradient alone stops ~1e-6 away) and is no worse than 1,000 plain projected-gradient steps."""
    gen = torch.Generator().manual_seed(seed)
    t = 3 + seed % 8
    jac = torch.randn(t, 8, generator=gen, dtype=torch.float64)
    jac[1] -= 0.8 * jac[0]
    gram = jac @ jac.T
    gram = gram / gram.diagonal().max()
    c = (0.2, 0.5, 1.0)[seed % 3]
    w = cagrad_solve(gram, c)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((w >= 0).all())
    assert _optimality_gap(gram, w, c) <= 1e-9
    reference = torch.full((t,), 1.0 / t, dtype=torch.float64)
    for _ in range(1000):  # plain projected gradient with a small fixed step
        gw = gram @ reference
        grad = gram.mean(1) + c * math.sqrt(float(gram.mean())) * gw / math.sqrt(float(reference @ gw))
        reference = project_to_simplex(reference - 0.05 * grad)
    assert cagrad_objective(gram, w, c) <= cagrad_objective(gram, reference, c) + 1e-12


def test_simplex_projection() -> None:
    torch.testing.assert_close(
        project_to_simplex(torch.tensor([0.2, 0.3, 0.5])), torch.tensor([0.2, 0.3, 0.5])
    )
    torch.testing.assert_close(
        project_to_simplex(torch.tensor([2.0, 0.0, -1.0])), torch.tensor([1.0, 0.0, 0.0])
    )
    torch.testing.assert_close(project_to_simplex(torch.tensor([1.0, 1.0])), torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize(("rescale", "factor"), [(0, 1.5), (1, 1.5 / 1.25), (2, 1.0)])
def test_identical_gradients(rescale: int, factor: float) -> None:
    """Every g_w is g: d = (1 + c) g / r, g itself for rescale=2."""
    g = torch.tensor([0.3, -1.0, 2.0])
    d = CAGrad(SCHEMA3, c=0.5, rescale=rescale)(g.expand(3, 3))
    torch.testing.assert_close(d, factor * g)


def test_vanishing_combination_is_guarded() -> None:
    """g1 = (2, 0), g2 = (-1, 0), c = 2: the optimum sits at g_w = 0 (w = (1/3, 2/3)); d stays finite."""
    jac = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    d = CAGrad(SCHEMA2, c=2.0)(jac)
    assert torch.isfinite(d).all()
    opposite = torch.tensor([[1.0, -2.0], [-1.0, 2.0]])  # g0 = 0: the mean, zero
    assert torch.equal(CAGrad(SCHEMA2)(opposite), torch.zeros(2))


@pytest.mark.parametrize("scale", [0.0, 1e-20, 1e20])
def test_finite_and_scale_invariant(scale: float) -> None:
    jac = torch.randn(3, 6, generator=torch.Generator().manual_seed(3))
    d = CAGrad(SCHEMA3)(jac * scale)
    assert torch.isfinite(d).all()
    if scale:
        torch.testing.assert_close(d / scale, CAGrad(SCHEMA3)(jac))
    else:
        assert torch.equal(d, torch.zeros(6))


def test_order_invariant() -> None:
    jac = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(CAGrad(SCHEMA3)(jac[perm]), CAGrad(SCHEMA3)(jac))
    assert CAGrad.order_invariant


def test_repr_and_validation() -> None:
    assert repr(CAGrad(SCHEMA2, c=0.4, rescale=2)) == "CAGrad(mode='parameter', c=0.4, rescale=2)"
    with pytest.raises(ValueError, match=r"c must be a finite number >= 0, got -1.0"):
        CAGrad(SCHEMA2, c=-1.0)
    with pytest.raises(ValueError, match="got nan"):
        CAGrad(SCHEMA2, c=math.nan)
    with pytest.raises(ValueError, match=r"rescale must be one of \(0, 1, 2\), got 3"):
        CAGrad(SCHEMA2, rescale=3)
    with pytest.raises(ValueError, match="got True"):
        CAGrad(SCHEMA2, rescale=True)


def test_the_active_set_walk_returns_only_the_optimum() -> None:
    """From the full support, dropping negative weights and adding the most violated task: whenever the walk
    returns, it is the optimum (conflicting gradients, where most tasks drop out); where the full support has no
    stationary point it gives up (None) and projected gradient goes on, so it must not give up everywhere."""
    from mtlkit.aggregation.base import SmallGram, unit_diagonal_lists
    from mtlkit.aggregation.cagrad import _active_set

    found_any = 0
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        t = 3 + seed % 6
        jac = torch.randn(t, 10, generator=gen, dtype=torch.float64)
        jac[1:] -= 0.9 * jac[0]  # the first task conflicts with every other one
        gram = torch.tensor(unit_diagonal_lists(jac @ jac.T), dtype=torch.float64)
        c = (0.4, 1.0)[seed % 2]
        g = SmallGram(gram.tolist())
        k = c * math.sqrt(float(gram.mean()))
        tried: set[tuple[int, ...]] = set()
        found = _active_set(g, g.times([1.0 / t] * t), k, list(range(t)), tried)
        assert tuple(range(t)) in tried
        assert len(tried) <= 2 * t
        if found is None:
            continue
        found_any += 1
        w = torch.tensor(found, dtype=torch.float64)
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
        assert _optimality_gap(gram, w, c) <= 1e-9
        torch.testing.assert_close(w, cagrad_solve(gram, c), rtol=0, atol=1e-9)
    assert found_any >= 4
