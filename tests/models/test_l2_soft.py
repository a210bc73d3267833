"""L2Soft: per-task bottoms tied by l2_weight * sum over task pairs of squared weight distances."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mtlkit.models.l2_soft import L2Soft
from mtlkit.schema import Feature, Schema, Task

TASKS = ("a", "b", "c")


def _schema() -> Schema:
    return Schema(
        features=(
            Feature("cat", "categorical", vocab_size=10, embedding_dim=4),
            Feature("x", "numeric"),
            Feature("only_b", "categorical", vocab_size=5, embedding_dim=2, towers=("b",)),
        ),
        tasks=(Task("a"), Task("b", "regression", depends_on="a"), Task("c", "multiclass", num_classes=4)),
    )


def _inputs(rows: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    categorical = torch.stack(
        [torch.randint(0, 10, (rows,), generator=g), torch.randint(0, 5, (rows,), generator=g)], dim=1
    )
    return categorical, torch.randn(rows, 1, generator=g)


def _pairwise(model: L2Soft) -> torch.Tensor:
    """The penalty written as the formula: l2_weight * sum_{a<b} sum_p ||P_a - P_b||^2."""
    nets = [list(model.bottoms[t].parameters()) for t in TASKS]
    total = torch.zeros(())
    for left, right in itertools.combinations(nets, 2):
        for p, q in zip(left, right, strict=True):
            total = total + ((p - q) ** 2).sum()
    return model.l2_weight * total


def test_penalty_on_known_weights() -> None:
    model = L2Soft(_schema(), bottom_sizes=(2,), l2_weight=0.5)
    assert model.bottoms["a"][0].weight.shape == (2, 5)
    with torch.no_grad():
        for k, t in enumerate(TASKS):
            model.bottoms[t][0].weight.fill_(float(k))  # W_k = k everywhere (10 entries)
            model.bottoms[t][0].bias.copy_(torch.tensor([k, -k], dtype=torch.float32))
    # pairs (0,1), (0,2), (1,2): weights 10*1 + 10*4 + 10*1 = 60, biases 2*1 + 2*4 + 2*1 = 12
    assert model.regularization().item() == pytest.approx(0.5 * 72.0)


def test_penalty_is_the_pairwise_sum_over_every_bottom_parameter() -> None:
    torch.manual_seed(0)
    model = L2Soft(_schema(), bottom_sizes=(6, 3), norm="layer", l2_weight=0.01)
    with torch.no_grad():  # layer-norm scales start equal: make them differ too
        for t in TASKS:
            model.bottoms[t][1].weight.normal_()
    torch.testing.assert_close(model.regularization(), _pairwise(model))
    assert model.regularization() > 0


def test_penalty_is_exactly_zero_for_equal_nets() -> None:
    torch.manual_seed(0)
    model = L2Soft(_schema(), bottom_sizes=(7, 3), l2_weight=1.0)
    for t in TASKS[1:]:
        model.bottoms[t].load_state_dict(model.bottoms["a"].state_dict())
    penalty = model.regularization()
    assert penalty.item() == 0.0
    penalty.backward()
    assert all(torch.count_nonzero(p.grad) == 0 for t in TASKS for p in model.bottoms[t].parameters())


def test_gradient_pulls_the_nets_together() -> None:
    torch.manual_seed(0)
    weight, lr = 0.1, 0.2
    model = L2Soft(_schema(), bottom_sizes=(5,), l2_weight=weight)
    before = {t: [p.detach().clone() for p in model.bottoms[t].parameters()] for t in TASKS}
    model.regularization().backward()
    # d/dP_a = 2 * l2_weight * sum_b (P_a - P_b)
    for t in TASKS:
        for i, p in enumerate(model.bottoms[t].parameters()):
            expected = 2 * weight * sum(before[t][i] - before[u][i] for u in TASKS)
            torch.testing.assert_close(p.grad, expected)
    for p in [*model.embedding.parameters(), *model.towers.parameters()]:
        assert p.grad is None  # only the bottoms are tied
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)
    # one step shrinks every pairwise difference by the factor 1 - 2 * l2_weight * T * lr
    factor = 1 - 2 * weight * len(TASKS) * lr
    for a, b in itertools.combinations(TASKS, 2):
        for p, q, p0, q0 in zip(
            model.bottoms[a].parameters(), model.bottoms[b].parameters(), before[a], before[b], strict=True
        ):
            torch.testing.assert_close(p - q, factor * (p0 - q0))


def test_bottoms_are_per_task_and_the_embedding_is_shared() -> None:
    model = L2Soft(_schema(), bottom_sizes=(4,))
    for t in TASKS:
        assert {id(p) for p in model.bottoms[t].parameters()} <= {id(p) for p in model.task_parameters(t)}
    shared = {id(p) for p in model.shared_parameters()}
    assert shared == {id(model.embedding.tables[0].weight)}  # "cat"; the only_b table belongs to b
    out = model.compute(*_inputs())
    out.logits["a"].sum().backward()
    assert all(p.grad is None for p in model.bottoms["c"].parameters())
    assert out.shared is not None
    assert out.shared.shape == (12, 5)


def test_zero_weight_turns_the_penalty_off() -> None:
    assert L2Soft(_schema(), l2_weight=0.0).regularization().item() == 0.0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_l2_weight_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match=f"l2_weight must be a finite number >= 0, got {bad}"):
        L2Soft(_schema(), l2_weight=bad)
