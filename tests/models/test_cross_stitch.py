"""CrossStitch: per-task columns mixed after every layer by learnable T x T cross-stitch units."""

from __future__ import annotations

import pytest
import torch

from mtlkit.models.cross_stitch import CrossStitch
from mtlkit.models.single_task import SingleTask
from mtlkit.schema import Feature, Schema, Task

TASKS = ("a", "b", "c")


def _schema() -> Schema:
    return Schema(
        features=(
            Feature("cat", "categorical", vocab_size=10, embedding_dim=4),
            Feature("x", "numeric"),
            Feature("only_c", "numeric", towers=("c",)),
        ),
        tasks=(Task("a"), Task("b", "regression", depends_on="a"), Task("c", "multiclass", num_classes=3)),
    )


def _inputs(rows: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 10, (rows, 1), generator=g), torch.randn(rows, 2, generator=g)


def _column_grads(model: CrossStitch, k: int) -> list[torch.Tensor]:
    """Gradients of column k's slice of every stacked layer weight and bias."""
    grads = []
    for layer in model.columns:
        for p in [*layer.weights, *layer.biases]:
            grads.append(torch.zeros_like(p[k]) if p.grad is None else p.grad[k])
    return grads


def test_units_start_at_alpha_self_and_rows_sum_to_one() -> None:
    model = CrossStitch(_schema(), bottom_sizes=(6, 4), alpha_self=0.8)
    unit = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert model.stitches.shape == (2, 3, 3)
    torch.testing.assert_close(model.stitches.detach(), unit.expand(2, 3, 3))
    one = Schema(features=(Feature("x", "numeric"),), tasks=(Task("t"),))
    torch.testing.assert_close(CrossStitch(one, bottom_sizes=(3,)).stitches.detach(), torch.ones(1, 1, 1))


def test_mixing_is_the_formula_on_a_hand_made_case() -> None:
    schema = Schema(
        features=(Feature("x1", "numeric"), Feature("x2", "numeric")), tasks=(Task("a"), Task("b"))
    )
    model = CrossStitch(schema, bottom_sizes=(2, 2), tower_sizes=(), activation="identity")
    eye = torch.eye(2)
    with torch.no_grad():
        model.columns[0].weights[0].copy_(torch.stack([eye, 2 * eye]))  # column a: x, column b: 2x
        model.columns[1].weights[0].copy_(torch.stack([eye, eye]))
        for layer in model.columns:
            layer.biases[0].zero_()
        model.stitches.copy_(torch.tensor([[[0.7, 0.3], [0.4, 0.6]], [[0.5, 0.5], [0.0, 1.0]]]))
    numeric = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    out = model.compute(torch.zeros(2, 0, dtype=torch.int64), numeric)
    # layer 1: a = 0.7 x + 0.3 (2x) = 1.3 x, b = 0.4 x + 0.6 (2x) = 1.6 x
    # layer 2: a = 0.5 (1.3 x) + 0.5 (1.6 x) = 1.45 x, b = 1.6 x
    assert out.shared is not None
    torch.testing.assert_close(out.shared, torch.stack([1.45 * numeric, 1.6 * numeric], dim=1))
    for k, t in enumerate(("a", "b")):
        torch.testing.assert_close(out.logits[t], model.towers.towers[t](out.shared[:, k]).squeeze(-1))


def test_identity_units_make_independent_columns() -> None:
    torch.manual_seed(0)
    schema = _schema()
    model = CrossStitch(schema, bottom_sizes=(6, 4), tower_sizes=(3,), alpha_self=1.0)
    single = SingleTask(schema, bottom_sizes=(6, 4), tower_sizes=(3,), share_embedding=True)
    single.embedding.load_state_dict(model.embedding.state_dict())
    single.towers.load_state_dict(model.towers.state_dict())
    with torch.no_grad():
        for k, t in enumerate(TASKS):
            for layer, column in enumerate(model.columns):
                linear = single.bottoms[t][2 * layer]  # MLP: Linear, ReLU per layer
                linear.weight.copy_(column.weights[0][k].T)
                linear.bias.copy_(column.biases[0][k])
    categorical, numeric = _inputs()
    expected, got = single.compute(categorical, numeric).logits, model.compute(categorical, numeric).logits
    for t in TASKS:
        torch.testing.assert_close(got[t], expected[t])


@pytest.mark.parametrize("alpha_self", [1.0, 0.9])
def test_other_task_loss_reaches_a_column_only_through_the_units(alpha_self: float) -> None:
    torch.manual_seed(0)
    model = CrossStitch(_schema(), bottom_sizes=(6, 4), alpha_self=alpha_self)
    out = model.compute(*_inputs())
    out.logits["c"].square().sum().backward()
    own = _column_grads(model, TASKS.index("c"))
    assert all(torch.count_nonzero(g) > 0 for g in own)
    other = _column_grads(model, TASKS.index("a"))
    if alpha_self == 1.0:
        assert all(torch.count_nonzero(g) == 0 for g in other)
    else:
        assert all(torch.count_nonzero(g) > 0 for g in other)
    assert model.stitches.grad is not None
    assert torch.count_nonzero(model.stitches.grad[:, 2]) > 0


def test_columns_and_units_are_shared_towers_are_per_task() -> None:
    model = CrossStitch(_schema(), bottom_sizes=(6, 4))
    shared = {id(p) for p in model.shared_parameters()}
    assert id(model.stitches) in shared
    assert {id(p) for p in model.columns.parameters()} <= shared
    for t in TASKS:
        assert {id(p) for p in model.task_parameters(t)} == {
            id(p) for p in model.towers.towers[t].parameters()
        }
    out = model.compute(*_inputs())
    assert out.shared is not None
    assert out.shared.shape == (10, 3, 4)
    assert out.logits["c"].shape == (10, 3)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_alpha_self_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match=f"alpha_self must be in \\[0, 1\\], got {bad}"):
        CrossStitch(_schema(), alpha_self=bad)
