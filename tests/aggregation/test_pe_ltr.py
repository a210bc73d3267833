"""PE-LTR (Lin et al., 2019): min ||sum_i w_i g_i||^2 over sum w = 1, w_i >= c_i (MGDA when every c_i = 0)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation.mgda import MGDA
from mtlkit.aggregation.pe_ltr import PELTR

# the SLSQP reference of the MGDA tests (no __init__.py in tests: loaded by path)
_spec = importlib.util.spec_from_file_location("_mgda_tests", Path(__file__).with_name("test_mgda.py"))
assert _spec is not None
assert _spec.loader is not None
_mgda_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mgda_tests)
brute_force = _mgda_tests.brute_force


def _schema(tasks: int) -> Schema:
    return Schema((Feature("x", "numeric"),), tuple(Task(f"t{i}") for i in range(tasks)))


def _random(tasks: int, dims: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(tasks, dims, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_two_tasks_by_hand() -> None:
    # e1, e2: MGDA gives (1/2, 1/2); a bound w1 >= 0.7 is active: (0.7, 0.3); bounds 0.2 are not
    jacobian = torch.eye(2)
    gram = jacobian @ jacobian.T
    torch.testing.assert_close(PELTR(_schema(2), bounds=[0.7, 0.0]).weights(gram), torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(PELTR(_schema(2), bounds=[0.7, 0.0])(jacobian), torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(PELTR(_schema(2), bounds=[0.2, 0.2]).weights(gram), torch.tensor([0.5, 0.5]))


def test_three_tasks_by_hand() -> None:
    # e1, e2, e3 with w1 >= 0.5: minimise w1^2 + w2^2 + w3^2 on the face w1 = 0.5 -> (0.5, 0.25, 0.25)
    method = PELTR(_schema(3), bounds=(0.5, 0.0, 0.0))
    torch.testing.assert_close(method.weights(torch.eye(3)), torch.tensor([0.5, 0.25, 0.25]))


@pytest.mark.parametrize(("tasks", "seed"), [(t, s) for t in (2, 3, 5) for s in range(4)])
def test_matches_a_brute_force_qp_with_bounds(tasks: int, seed: int) -> None:
    jacobian = _random(tasks, 6, seed) + 0.4 * seed
    gram = jacobian @ jacobian.T
    generator = torch.Generator().manual_seed(100 + seed)
    bounds = torch.rand(tasks, generator=generator, dtype=torch.float64)
    bounds = bounds / bounds.sum() * 0.8 * float(torch.rand(1, generator=generator))
    weights = PELTR(_schema(tasks), bounds=bounds.tolist()).weights(gram)
    assert bool((weights >= bounds - 1e-12).all())
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    objective = float(weights @ gram @ weights)
    assert objective == pytest.approx(brute_force(gram.numpy(), bounds.numpy()), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("tasks", [2, 3, 5])
def test_zero_bounds_is_mgda(tasks: int) -> None:
    jacobian = _random(tasks, 7, seed=tasks)
    gram = jacobian @ jacobian.T
    expected = MGDA(_schema(tasks)).weights(gram)
    torch.testing.assert_close(PELTR(_schema(tasks)).weights(gram), expected)
    torch.testing.assert_close(PELTR(_schema(tasks), bounds=[0.0] * tasks).weights(gram), expected)
    torch.testing.assert_close(PELTR(_schema(tasks))(jacobian), MGDA(_schema(tasks))(jacobian))


def test_identical_gradients_give_the_gradient() -> None:
    g = torch.tensor([1.0, -2.0, 2.0], dtype=torch.float64)
    method = PELTR(_schema(4), bounds=[0.1, 0.0, 0.3, 0.2])
    weights = method.weights(g.repeat(4, 1) @ g.repeat(4, 1).T)
    torch.testing.assert_close(weights, torch.tensor([0.1, 0.0, 0.3, 0.2], dtype=torch.float64) + 0.1)
    torch.testing.assert_close(method(g.repeat(4, 1)), g)


def test_order_of_the_tasks() -> None:
    jacobian = _random(4, 6, seed=9)
    bounds = torch.tensor([0.05, 0.3, 0.0, 0.1], dtype=torch.float64)
    gram = jacobian @ jacobian.T
    weights = PELTR(_schema(4), bounds=bounds.tolist(), tol=1e-13).weights(gram)
    for perm in itertools.islice(itertools.permutations(range(4)), 1, 8):
        p = torch.tensor(perm)
        method = PELTR(_schema(4), bounds=bounds[p].tolist(), tol=1e-13)
        torch.testing.assert_close(method.weights(gram[p][:, p]), weights[p], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(method(jacobian[p]), weights @ jacobian, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("factor", [0.0, 1e-20, 1e20])
def test_finite_for_zero_tiny_and_huge_gradients(factor: float) -> None:
    jacobian = _random(3, 5, seed=10, dtype=torch.float32)
    method = PELTR(_schema(3), bounds=[0.2, 0.1, 0.0])
    direction = method(jacobian * factor)
    assert torch.isfinite(direction).all()
    torch.testing.assert_close(direction, method(jacobian) * factor, rtol=1e-4, atol=0.0)


def test_validation_and_repr() -> None:
    schema = _schema(3)
    with pytest.raises(ValueError, match=r"bounds must sum to < 1 .* got sum 1.1"):
        PELTR(schema, bounds=[0.5, 0.5, 0.1])
    with pytest.raises(ValueError, match=r"bounds must be finite and >= 0, got -0.1 for task 't1'"):
        PELTR(schema, bounds=[0.1, -0.1, 0.0])
    with pytest.raises(ValueError, match=r"one entry per task \(3: .*got 2: \[0.1, 0.2\]"):
        PELTR(schema, bounds=[0.1, 0.2])
    with pytest.raises(TypeError, match="bounds must be a sequence"):
        PELTR(schema, bounds="abc")
    with pytest.raises(ValueError, match="max_iter must be >= 1, got 0"):
        PELTR(schema, max_iter=0)
    assert repr(PELTR(schema, bounds=[0.1, 0, 0.2])) == (
        "PELTR(mode='parameter', bounds=(0.1, 0.0, 0.2), max_iter=250, tol=1e-06)"
    )
    assert repr(PELTR(schema)) == "PELTR(mode='parameter', bounds=None, max_iter=250, tol=1e-06)"
    PELTR(schema).reset()
