"""Building blocks: batched experts equal a loop of Linear layers, tower routing, gates, dependent towers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlkit import Feature, Schema, SchemaError, Task
from mtlkit.models import create_model
from mtlkit.models.layers import MLP, Experts, FeatureEmbedding, Gate, TaskTowers, mix


def _schema(**towers: tuple[str, ...]) -> Schema:
    return Schema(
        (
            Feature("a", "categorical", vocab_size=7, embedding_dim=3),
            Feature("b", "categorical", vocab_size=5, embedding_dim=3, towers=towers.get("b", ())),
            Feature("c", "categorical", vocab_size=4, embedding_dim=2),
            Feature("x", "numeric"),
            Feature("m", "numeric", missing_indicator=True, towers=towers.get("m", ())),
        ),
        (Task("click"), Task("buy", depends_on="click"), Task("time", "regression")),
    )


def _inputs(schema: Schema, batch: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [torch.randint(0, f.vocab_size or 1, (batch,), generator=g) for f in schema.categorical], dim=1
    )
    num = torch.randn(batch, len(schema.numeric_columns), generator=g)
    return cat, num


@pytest.mark.parametrize("batched_input", [False, True])
def test_experts_equal_a_loop_of_independent_linear_stacks(batched_input: bool) -> None:
    torch.manual_seed(0)
    experts = Experts(4, 10, [8, 5], "relu")
    loops = []
    for e in range(4):
        layers: list[nn.Module] = []
        for weight, bias in zip(experts.weights, experts.biases, strict=True):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[e].T)
                linear.bias.copy_(bias[e])
            layers += [linear, nn.ReLU()]
        loops.append(nn.Sequential(*layers))
    x = torch.randn(32, 4, 10) if batched_input else torch.randn(32, 10)
    expected = torch.stack([loops[e](x[:, e] if batched_input else x) for e in range(4)], dim=1)
    got = experts(x)
    assert got.shape == (32, 4, 5)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    # gradients agree too
    got.sum().backward()
    expected.sum().backward()
    for e in range(4):
        torch.testing.assert_close(
            experts.weights[0].grad[e], loops[e][0].weight.grad.T, atol=1e-5, rtol=1e-5
        )


def test_experts_reject_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"num_experts must be >= 1, got 0"):
        Experts(0, 4, [3])
    with pytest.raises(ValueError, match=r"expert sizes must be a list of integers >= 1, got \[\]"):
        Experts(2, 4, [])


def test_gate_rows_sum_to_one_and_mix_is_the_weighted_sum() -> None:
    gate = Gate(6, 3)
    weights = gate(torch.randn(5, 6))
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    experts = torch.randn(5, 3, 4)
    expected = (weights.unsqueeze(-1) * experts).sum(1)
    torch.testing.assert_close(mix(weights, experts), expected)


def test_embedding_width_without_routing() -> None:
    schema = _schema()
    emb = FeatureEmbedding(schema)
    cat, num = _inputs(schema)
    shared, towers = emb(cat, num)
    assert shared.shape == (6, 3 + 3 + 2 + 1 + 2)
    assert towers == {}
    assert len(emb.tables) == 2  # one table per embedding width (3 and 2)


def test_tower_only_features_reach_only_their_towers() -> None:
    schema = _schema(b=("buy",), m=("time", "click"))
    emb = FeatureEmbedding(schema, numeric_dim=4)
    cat, num = _inputs(schema)
    shared, towers = emb(cat, num)
    assert shared.shape == (6, 3 + 2 + 4)  # a, c, x
    assert towers["buy"].shape == (6, 3)  # b
    assert towers["time"].shape == (6, 8)
    assert towers["click"].shape == (6, 8)
    # changing b's code changes only the buy tower input
    cat2 = cat.clone()
    cat2[:, 1] = (cat2[:, 1] + 1) % 5
    shared2, towers2 = emb(cat2, num)
    torch.testing.assert_close(shared2, shared)
    assert not torch.allclose(towers2["buy"], towers["buy"])
    # b's table belongs to the buy task alone
    assert [t.num_embeddings for t in emb.task_modules("buy")] == [5]
    assert emb.task_modules("click") == []


def test_model_with_tower_only_feature_keeps_it_out_of_other_tasks() -> None:
    schema = _schema(b=("buy",))
    model = create_model("mmoe", schema, num_experts=2, expert_sizes=[4], tower_sizes=[3])
    cat, num = _inputs(schema)
    out = model.compute(cat, num)
    table = model.embedding.task_modules("buy")[0].weight
    (grad,) = torch.autograd.grad(out.logits["click"].sum(), table, allow_unused=True, retain_graph=True)
    assert grad is None or torch.count_nonzero(grad) == 0
    (grad,) = torch.autograd.grad(out.logits["buy"].sum(), table)
    assert torch.count_nonzero(grad) > 0


def test_all_features_in_towers_is_an_error() -> None:
    schema = Schema((Feature("x", "numeric", towers=("y",)),), (Task("y"),))
    with pytest.raises(SchemaError, match="shared part of the model would have no input"):
        FeatureEmbedding(schema)


@pytest.mark.parametrize("detach", [True, False])
def test_dependent_tower_gets_the_parent_logit(detach: bool) -> None:
    schema = _schema()
    towers = TaskTowers(schema, {"click": 4, "buy": 4, "time": 4}, [3], detach_dependency=detach)
    x = {t: torch.randn(5, 4) for t in schema.task_names}
    out = towers(x)
    assert out["click"].shape == (5,)
    assert towers.towers["buy"][0][0].in_features == 5  # 4 inputs + the click logit
    grads = torch.autograd.grad(
        out["buy"].sum(), list(towers.towers["click"].parameters()), allow_unused=True
    )
    reached = any(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    assert reached is (not detach)


def test_mlp_norms_and_validation() -> None:
    assert isinstance(MLP(4, [3], norm="batch")[1], nn.BatchNorm1d)
    assert isinstance(MLP(4, [3], norm="layer")[1], nn.LayerNorm)
    assert MLP(4, []).out_dim == 4
    with pytest.raises(ValueError, match=r"norm must be one of .* got 'group'"):
        MLP(4, [3], norm="group")
    with pytest.raises(ValueError, match=r"unknown activation 'rleu' \(did you mean 'relu'\?\)"):
        MLP(4, [3], activation_name="rleu")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        MLP(4, [3], dropout=1.5)
