"""Properties every loss weighting must have (one parametrised suite over the registry).

Deterministic methods are checked exactly; methods that draw random weights (``order_invariant = False``) are
checked in distribution. Scale invariance is checked for the methods that declare it, the way it arises in
training: a regression task's labels multiplied by c multiply its MSE by c^2 (and its label statistics alike).
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pandas as pd
import pytest
import torch

from mtlkit import Feature, Schema, Table, Task
from mtlkit.weighting import LossWeighting, create_weighting, list_weightings, weighting_class

METHODS = list_weightings()
MIXED = Schema(
    (Feature("x", "numeric"), Feature("u", "categorical")),
    (Task("a"), Task("b", "regression"), Task("c")),
)
SAME = Schema((Feature("x", "numeric"),), (Task("a"), Task("b"), Task("c")))


def _table(
    schema: Schema, seed: int = 0, scale_b: float = 1.0, rows: int = 64, identical: bool = False
) -> Table:
    """Labels drawn per task in name order (so a permuted schema sees the same data); some rows lack labels.

    ``identical``: every task gets the same labels and the same missing rows.
    """
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "u": rng.choice(["p", "q"], rows)})
    shared = rng.integers(0, 2, rows).astype(float)
    for t in sorted(schema.tasks, key=lambda task: task.name):
        if identical:
            frame[t.name] = shared.copy()
            frame.loc[::7, t.name] = np.nan
        elif t.kind == "regression":
            frame[t.name] = rng.normal(1.0, 2.0, rows) * scale_b
        else:
            frame[t.name] = rng.integers(0, 2, rows).astype(float)
    if not identical:
        frame.loc[::7, "c"] = np.nan  # missing labels must not disturb the label statistics
    keep = [f.name for f in schema.features] + list(schema.task_names)
    return Table.from_pandas(frame[keep], schema)


def _make(name: str, schema: Schema, table: Table | None = None) -> LossWeighting:
    method = create_weighting(name, schema)
    method.prepare(table if table is not None else _table(schema))
    return method


def _step(method: LossWeighting, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step as the engine does it: (objective, d objective / d losses)."""
    if "shared_grad_norms" in method.needs:
        method.observe_grad_norms(torch.ones(len(losses)))
    probe = losses.detach().clone().requires_grad_(True)
    objective = method(probe)
    (grad,) = torch.autograd.grad(objective, probe)
    return objective.detach(), grad


def _run(method: LossWeighting, sequence: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps through a loss sequence, with an epoch boundary after every step (DWA's clock)."""
    result = (torch.tensor(0.0), torch.zeros(0))
    for losses in sequence:
        result = _step(method, losses)
        method.end_epoch(losses)
    return result


SEQUENCE = [torch.tensor(v) for v in ([0.9, 2.0, 0.7], [0.8, 1.6, 0.6], [0.7, 1.5, 0.6], [0.6, 1.1, 0.5])]


@pytest.fixture(params=METHODS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(
    "losses",
    [[0.0, 0.0, 0.0], [1e-12, 1e-12, 1e-12], [1e12, 1e12, 1e12], [0.0, 1.0, 1e12], [1e30, 1e-30, 1.0]],
    ids=["zero", "tiny", "huge", "mixed", "extreme"],
)
def test_finite_objective_and_gradients(name: str, losses: list[float]) -> None:
    method = _make(name, MIXED)
    for _ in range(3):  # the first steps (measuring initial losses) and the ones after
        objective, grad = _step(method, torch.tensor(losses))
        method.end_epoch(torch.tensor(losses))
        assert torch.isfinite(objective), (name, losses, objective)
        assert torch.isfinite(grad).all(), (name, losses, grad)


def test_reordering_the_tasks_reorders_the_weights(name: str) -> None:
    order = [2, 0, 1]
    permuted = Schema(MIXED.features, tuple(MIXED.tasks[i] for i in order))
    cls = weighting_class(name)
    if not cls.order_invariant:
        # random weights: the same distribution for every task, whatever its position
        method = _make(name, MIXED)
        draws = torch.stack([_step(method, torch.ones(3))[1] for _ in range(3000)])
        mean = draws.mean(0)
        torch.testing.assert_close(mean, torch.full((3,), float(mean.mean())), rtol=0.06, atol=0)
        return
    a = _make(name, MIXED, _table(MIXED))
    b = _make(name, permuted, _table(permuted))
    obj_a, grad_a = _run(a, SEQUENCE)
    obj_b, grad_b = _run(b, [s[order] for s in SEQUENCE])
    torch.testing.assert_close(obj_b, obj_a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_b, grad_a[order], rtol=1e-5, atol=1e-7)


def test_identical_tasks_get_equal_weights(name: str) -> None:
    method = _make(name, SAME, _table(SAME, identical=True))
    if not weighting_class(name).order_invariant:
        draws = torch.stack([_step(method, torch.full((3,), 0.7))[1] for _ in range(3000)])
        torch.testing.assert_close(draws.mean(0), torch.full((3,), float(draws.mean())), rtol=0.06, atol=0)
        return
    for value in (0.7, 0.5, 0.4):
        _, grad = _step(method, torch.full((3,), value))
        method.end_epoch(torch.full((3,), value))
        torch.testing.assert_close(grad, torch.full((3,), float(grad[0])), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", [n for n in METHODS if weighting_class(n).scale_invariant])
def test_declared_scale_invariance(name: str) -> None:
    """Scaling task b's labels by c scales its MSE by c^2: the update direction must not change."""
    c = 1000.0
    plain = _make(name, MIXED, _table(MIXED, scale_b=1.0))
    scaled = _make(name, MIXED, _table(MIXED, scale_b=c))
    factor = torch.tensor([1.0, c * c, 1.0])
    _, grad_plain = _run(plain, SEQUENCE)
    _, grad_scaled = _run(scaled, [s * factor for s in SEQUENCE])
    # the update is sum_i g_i * grad(L_i); grad(c^2 L_b) = c^2 grad(L_b): compare g_i * (dL_i scale)
    direction_plain = grad_plain / grad_plain.sum()
    direction_scaled = grad_scaled * factor
    direction_scaled = direction_scaled / direction_scaled.sum()
    torch.testing.assert_close(direction_scaled, direction_plain, rtol=1e-4, atol=1e-7)


def test_equal_weights_are_not_scale_invariant() -> None:
    """The reason the scale-invariant methods exist: static weights follow the scale of each loss."""
    static = _make("static", MIXED)
    _, grad = _step(static, torch.tensor([1.0, 1e6, 1.0]))
    assert torch.equal(grad, torch.ones(3))  # a 1e6 times larger loss keeps weight 1: it dominates


def test_state_survives_a_checkpoint_round_trip(name: str) -> None:
    first = _make(name, MIXED)
    _run(first, SEQUENCE[:3])
    state = {k: v.clone() for k, v in first.state_dict().items()}
    second = create_weighting(name, MIXED)  # fresh, not prepared: the checkpoint carries everything
    second.load_state_dict(state)
    obj_1, grad_1 = _step(first, SEQUENCE[3])
    obj_2, grad_2 = _step(second, SEQUENCE[3])
    torch.testing.assert_close(obj_2, obj_1, rtol=0, atol=0)
    torch.testing.assert_close(grad_2, grad_1, rtol=0, atol=0)


def test_reset_returns_to_a_fresh_state(name: str) -> None:
    used = _make(name, MIXED)
    _run(used, SEQUENCE)
    used.reset()
    fresh = _make(name, MIXED)
    if not weighting_class(name).order_invariant:
        return  # a random stream continues after reset; the rest of its state is covered above
    obj_used, grad_used = _step(used, SEQUENCE[0])
    obj_fresh, grad_fresh = _step(fresh, SEQUENCE[0])
    torch.testing.assert_close(obj_used, obj_fresh)
    torch.testing.assert_close(grad_used, grad_fresh)


def test_repr_mirrors_the_constructor(name: str) -> None:
    method = create_weighting(name, MIXED)
    text = repr(method)
    cls = weighting_class(name)
    assert text.startswith(f"{cls.__name__}(")
    for param in list(inspect.signature(cls.__init__).parameters)[1:]:
        if param != "schema":
            assert f"{param}=" in text, f"{text} does not show {param}"


def test_hyperparameters_are_typed_with_defaults(name: str) -> None:
    for param in list(inspect.signature(weighting_class(name).__init__).parameters.values())[1:]:
        if param.name == "schema":
            continue
        assert param.annotation is not param.empty, f"{name}.{param.name} has no type"
        assert param.default is not param.empty, f"{name}.{param.name} has no default"


def test_docstring_names_the_source_and_the_formula(name: str) -> None:
    module = inspect.getmodule(weighting_class(name))
    assert module is not None
    doc = module.__doc__ or ""
    assert len(doc.strip()) > 40, f"{name}: the module docstring must name the source and the formula"
    assert "=" in doc, f"{name}: the module docstring states no formula"
    if name != "static":  # every other method comes from a paper or document with a year
        assert re.search(r"(19|20)\d\d", doc), f"{name}: the module docstring names no dated source"
