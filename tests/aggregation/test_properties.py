"""Properties every gradient aggregator must have (one parametrised suite over the registry, TorchJD-style)."""

from __future__ import annotations

import inspect
import re

import pytest
import torch

from mtlkit import Feature, Schema, Task
from mtlkit.aggregation import aggregator_class, create_aggregator, list_aggregators
from mtlkit.aggregation.base import GatedJacobian

METHODS = list_aggregators()
SCHEMA = Schema((Feature("x", "numeric"),), tuple(Task(f"t{i}") for i in range(4)))


def _jacobian(seed: int = 0, tasks: int = 4, dim: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tasks, dim, generator=g, dtype=torch.float64)


@pytest.fixture(params=METHODS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_identical_gradients_give_that_gradient_up_to_a_positive_scale(name: str) -> None:
    g = _jacobian(1)[0]
    direction = create_aggregator(name, SCHEMA)(torch.stack([g] * 4))
    cosine = torch.dot(direction, g) / (direction.norm() * g.norm())
    assert torch.isfinite(direction).all()
    assert float(cosine) == pytest.approx(1.0, abs=1e-6), f"{name}: cosine {float(cosine)}"


@pytest.mark.parametrize("scale", [0.0, 1e-20, 1e20], ids=["zero", "tiny", "huge"])
def test_finite_for_zero_tiny_and_huge_gradients(name: str, scale: float) -> None:
    method = create_aggregator(name, SCHEMA)
    for seed in range(3):
        direction = method(_jacobian(seed) * scale)
        assert torch.isfinite(direction).all(), (name, scale)
    mixed = _jacobian(5)
    mixed[0] = 0.0  # a task without labels in the batch has a zero gradient
    mixed[1] *= 1e12
    assert torch.isfinite(method(mixed)).all()


def test_order_of_tasks(name: str) -> None:
    jacobian = _jacobian(2)
    order = [2, 0, 3, 1]
    if aggregator_class(name).order_invariant:
        a = create_aggregator(name, SCHEMA)(jacobian)
        b = create_aggregator(name, SCHEMA)(jacobian[order])
        torch.testing.assert_close(b, a, atol=1e-8, rtol=1e-6)
    else:  # a random task order: deterministic for a seed
        a = create_aggregator(name, SCHEMA)(jacobian)
        b = create_aggregator(name, SCHEMA)(jacobian)
        torch.testing.assert_close(b, a, atol=0, rtol=0)


def test_state_survives_a_checkpoint_round_trip(name: str) -> None:
    first = create_aggregator(name, SCHEMA)
    for seed in range(3):
        first(_jacobian(seed))
    second = create_aggregator(name, SCHEMA)
    second.load_state_dict(first.state_dict())
    torch.testing.assert_close(second(_jacobian(9)), first(_jacobian(9)), atol=0, rtol=0)


def test_reset_returns_to_a_fresh_state(name: str) -> None:
    used = create_aggregator(name, SCHEMA)
    for seed in range(3):
        used(_jacobian(seed))
    used.reset()
    fresh = create_aggregator(name, SCHEMA)
    torch.testing.assert_close(used(_jacobian(7)), fresh(_jacobian(7)), atol=1e-12, rtol=1e-10)


def test_repr_typed_defaults_and_docstring(name: str) -> None:
    cls = aggregator_class(name)
    text = repr(create_aggregator(name, SCHEMA))
    assert text.startswith(f"{cls.__name__}(")
    for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if param.name == "schema":
            continue
        assert f"{param.name}=" in text, f"{text} does not show {param.name}"
        assert param.annotation is not param.empty, f"{name}.{param.name} has no type"
        assert param.default is not param.empty, f"{name}.{param.name} has no default"
    doc = (inspect.getmodule(cls).__doc__ or "") + (cls.__doc__ or "")
    assert "=" in doc, f"{name}: no formula in the docstrings"
    if name != "mean":
        assert re.search(r"(19|20)\d\d", doc), f"{name}: the docstrings name no dated source"


def test_shifted_is_the_direction_plus_a_multiple_of_the_sum(name: str) -> None:
    jacobian = _jacobian(3)
    direction = create_aggregator(name, SCHEMA)(jacobian)
    shifted = create_aggregator(name, SCHEMA).shifted(jacobian, -1.0)  # a fresh method: same state and draws
    torch.testing.assert_close(shifted, direction - jacobian.sum(0), atol=1e-10, rtol=1e-8)


def test_a_gated_jacobian_in_factors_gives_the_same_update_as_the_built_matrix(name: str) -> None:
    g = torch.Generator().manual_seed(4)
    weights = torch.softmax(torch.randn(5, 4, 3, generator=g, dtype=torch.float64), dim=2)
    factored = GatedJacobian(weights, torch.randn(5, 4, 2, generator=g, dtype=torch.float64))
    built = create_aggregator(name, SCHEMA).shifted(factored.dense(), -1.0)
    # equal up to rounding of the Gram matrix (which can move an iterative solver's stopping point: MGDA)
    torch.testing.assert_close(
        create_aggregator(name, SCHEMA).shifted(factored, -1.0), built, atol=1e-6, rtol=1e-5
    )
