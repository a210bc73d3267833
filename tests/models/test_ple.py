"""CGC and PLE: gate widths, PLE(num_levels=1) == CGC, deep stacks, and which parameters stay private to a task."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mtlkit.errors import MtlkitError
from mtlkit.models import create_model, model_parameters
from mtlkit.models.ple import CGC, PLE
from mtlkit.schema import Feature, Schema, Task

SMALL = {"expert_sizes": (6,), "tower_sizes": (4,)}


def _schema(depends: bool = False) -> Schema:
    return Schema(
        features=(
            Feature("cat", "categorical", vocab_size=10, embedding_dim=4),
            Feature("x", "numeric"),
            Feature("only_b", "categorical", vocab_size=5, embedding_dim=2, towers=("b",)),
        ),
        tasks=(
            Task("a"),
            Task("b", "regression", depends_on="a" if depends else None),
            Task("c", "multiclass", num_classes=3),
        ),
    )


def _inputs(rows: int = 24, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    categorical = torch.stack(
        [torch.randint(0, 10, (rows,), generator=g), torch.randint(0, 5, (rows,), generator=g)], dim=1
    )
    return categorical, torch.randn(rows, 1, generator=g)


def _losses(model: PLE, seed: int = 0) -> dict[str, Tensor]:
    """A squared error per task against random targets (any function of the task's logits would do)."""
    categorical, numeric = _inputs(seed=seed)
    out = model.compute(categorical, numeric)
    g = torch.Generator().manual_seed(seed + 1)
    return {t: ((v - torch.randn(v.shape, generator=g)) ** 2).mean() for t, v in out.logits.items()}


def _reached(loss: Tensor, model: nn.Module) -> set[int]:
    """ids of the parameters that ``loss`` gives a non-zero gradient."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return {id(p) for p, g in zip(params, grads, strict=True) if g is not None and bool(g.abs().max() > 0)}


@pytest.mark.parametrize(("levels", "task_experts", "shared_experts"), [(1, 3, 2), (2, 1, 4), (3, 2, 1)])
def test_gates_are_distributions_over_own_and_shared_experts(
    levels: int, task_experts: int, shared_experts: int
) -> None:
    torch.manual_seed(0)
    model = PLE(
        _schema(), num_levels=levels, task_experts=task_experts, shared_experts=shared_experts, **SMALL
    )
    categorical, numeric = _inputs()
    out = model.compute(categorical, numeric)
    assert set(out.gates) == {"a", "b", "c"}
    for gate in out.gates.values():
        assert gate.shape == (24, task_experts + shared_experts)
        assert (gate >= 0).all()
        torch.testing.assert_close(gate.sum(1), torch.ones(24))
    assert out.shared is not None
    assert out.shared.shape == (24, shared_experts, 6)  # the top level's shared experts
    assert out.logits["c"].shape == (24, 3)
    # shared gates (over every expert of the level) exist below the top level only
    for j, layer in enumerate(model.levels):
        if j < levels - 1:
            assert layer.shared_gate.linear.out_features == 3 * task_experts + shared_experts
        else:
            assert layer.shared_gate is None


def test_ple_with_one_level_is_cgc() -> None:
    torch.manual_seed(0)
    cgc = CGC(_schema(), task_experts=2, shared_experts=3, **SMALL)
    torch.manual_seed(1)
    ple = PLE(_schema(), num_levels=1, task_experts=2, shared_experts=3, **SMALL)
    ple.load_state_dict(cgc.state_dict())  # strict: the same parameter names and shapes
    categorical, numeric = _inputs()
    a, b = cgc.compute(categorical, numeric), ple.compute(categorical, numeric)
    for t in ("a", "b", "c"):
        assert torch.equal(a.logits[t], b.logits[t])
        assert torch.equal(a.gates[t], b.gates[t])
    assert a.shared is not None
    assert b.shared is not None
    assert torch.equal(a.shared, b.shared)
    assert "num_levels" not in model_parameters("cgc")
    assert isinstance(create_model("cgc", _schema()), PLE)


def test_three_levels_run_forward_and_backward() -> None:
    torch.manual_seed(0)
    model = PLE(_schema(), num_levels=3, **SMALL)
    assert len(model.levels) == 3
    losses = _losses(model)
    sum(losses.values()).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("depends", [False, True])
def test_task_parameters_are_exactly_what_no_other_task_reaches(levels: int, depends: bool) -> None:
    """For every task t, the parameters its loss reaches (non-zero gradient) are the shared ones plus its own."""
    torch.manual_seed(0)
    model = PLE(_schema(depends), num_levels=levels, **SMALL)
    losses = _losses(model)
    shared = {id(p) for p in model.shared_parameters()}
    for t, loss in losses.items():
        own = {id(p) for p in model.task_parameters(t)}
        assert own
        assert _reached(loss, model) == shared | own, t


def test_which_task_modules_are_private_per_level() -> None:
    """Top level: the task's experts and gate; level N-1: the gate only; lower: nothing (the shared gate mixes
    the task's lower experts into the shared path)."""
    torch.manual_seed(0)
    model = PLE(_schema(), num_levels=3, **SMALL)
    losses = _losses(model)
    levels = list(model.levels)
    b_reaches = _reached(losses["b"], model)
    a_private = {id(p) for p in model.task_parameters("a")}

    def ids(module: nn.Module) -> set[int]:
        return {id(p) for p in module.parameters()}

    top, middle, bottom = levels[2], levels[1], levels[0]
    for module in (top.task_experts["a"], top.task_gates["a"], middle.task_gates["a"]):
        assert ids(module) <= a_private
        assert not ids(module) & b_reaches
    for module in (middle.task_experts["a"], bottom.task_experts["a"], bottom.task_gates["a"]):
        assert not ids(module) & a_private
        assert ids(module) <= b_reaches  # b's loss reaches them through the next level's shared experts


def test_attached_dependency_makes_the_parent_reachable() -> None:
    """The zero-gradient property needs detach_dependency=True: without it b's tower reads a's logits."""
    torch.manual_seed(0)
    model = PLE(_schema(depends=True), num_levels=2, detach_dependency=False, **SMALL)
    losses = _losses(model)
    assert {id(p) for p in model.task_parameters("a")} <= _reached(losses["b"], model)


def test_cgc_private_parameters_are_the_task_experts_gate_and_tower() -> None:
    model = CGC(_schema(), **SMALL)
    layer = model.levels[0]
    expected = {
        id(p)
        for m in (layer.task_experts["b"], layer.task_gates["b"], model.towers.towers["b"])
        for p in m.parameters()
    } | {id(model.embedding.tables[1].weight)}  # the table of the b-only feature
    assert {id(p) for p in model.task_parameters("b")} == expected
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in layer.shared_experts.parameters()} <= shared
    assert id(model.embedding.tables[0].weight) in shared


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_levels": 0}, "num_levels must be an integer >= 1, got 0"),
        ({"task_experts": 0}, "task_experts must be an integer >= 1, got 0"),
        ({"shared_experts": -2}, "shared_experts must be an integer >= 1, got -2"),
        ({"num_levels": 1.5}, "num_levels must be an integer >= 1, got 1.5"),
        ({"expert_sizes": ()}, r"expert_sizes must be a list of integers >= 1, got \[\]"),
    ],
)
def test_bad_hyperparameters_echo_the_value(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PLE(_schema(), **params)  # type: ignore[arg-type]
    with pytest.raises(MtlkitError, match=f"model 'ple': {message}"):
        create_model("ple", _schema(), **params)
