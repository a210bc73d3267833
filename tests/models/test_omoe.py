"""OMoE: shared experts and one gate shared by every task."""

from __future__ import annotations

import pytest
import torch

from mtlkit.models.mmoe import MMoE
from mtlkit.models.omoe import OMoE
from mtlkit.schema import Feature, Schema, Task


def _schema(tasks: int = 3) -> Schema:
    return Schema(
        features=(
            Feature("cat", "categorical", vocab_size=10, embedding_dim=4),
            Feature("x", "numeric"),
            Feature("only_t0", "categorical", vocab_size=4, embedding_dim=2, towers=("t0",)),
        ),
        tasks=tuple(Task(f"t{k}") for k in range(tasks)),
    )


def _inputs(rows: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    categorical = torch.stack(
        [torch.randint(0, 10, (rows,), generator=g), torch.randint(0, 4, (rows,), generator=g)], dim=1
    )
    return categorical, torch.randn(rows, 1, generator=g)


def test_every_task_gets_the_same_gate_and_rows_sum_to_one() -> None:
    torch.manual_seed(0)
    model = OMoE(_schema(), num_experts=5, expert_sizes=(6,))
    out = model.compute(*_inputs())
    assert set(out.gates) == {"t0", "t1", "t2"}
    first = out.gates["t0"]
    assert first.shape == (9, 5)
    for gate in out.gates.values():
        torch.testing.assert_close(gate, first, rtol=0, atol=0)
    torch.testing.assert_close(first.sum(dim=1), torch.ones(9))
    assert first.std(dim=1).min() > 0  # a real softmax, not a constant


def test_towers_read_the_gated_sum_of_the_shared_experts() -> None:
    torch.manual_seed(0)
    model = OMoE(_schema(), num_experts=4, expert_sizes=(6, 5), tower_sizes=(3,))
    categorical, numeric = _inputs()
    out = model.compute(categorical, numeric)
    x, extra = model.embedding(categorical, numeric)
    assert out.shared is not None
    assert out.shared.shape == (9, 4, 5)
    torch.testing.assert_close(out.shared, model.experts(x))
    mixed = (out.gates["t1"].unsqueeze(-1) * out.shared).sum(dim=1)  # sum_e g_e f_e
    torch.testing.assert_close(out.logits["t1"], model.towers.towers["t1"](mixed).squeeze(-1))
    t0_input = torch.cat([mixed, extra["t0"]], dim=1)  # its tower-only feature joins after the mix
    torch.testing.assert_close(out.logits["t0"], model.towers.towers["t0"](t0_input).squeeze(-1))


@pytest.mark.parametrize("tasks", [2, 4])
def test_one_gate_whatever_the_number_of_tasks(tasks: int) -> None:
    model = OMoE(_schema(tasks), num_experts=3, expert_sizes=(4,))
    mmoe = MMoE(_schema(tasks), num_experts=3, expert_sizes=(4,))
    gate_params = sum(p.numel() for p in model.gate.parameters())
    assert gate_params == (5 + 1) * 3  # shared input 4 + 1 wide, 3 experts
    assert (
        sum(p.numel() for p in mmoe.parameters()) - sum(p.numel() for p in model.parameters())
        == (tasks - 1) * gate_params
    )
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in model.gate.parameters()} <= shared
    assert {id(p) for p in model.experts.parameters()} <= shared


def test_every_task_loss_trains_the_one_gate() -> None:
    torch.manual_seed(0)
    model = OMoE(_schema(), num_experts=3, expert_sizes=(4,))
    for task in ("t0", "t2"):
        model.zero_grad()
        model.compute(*_inputs()).logits[task].sum().backward()
        assert model.gate.linear.weight.grad is not None
        assert torch.count_nonzero(model.gate.linear.weight.grad) > 0
        for other in {"t0", "t1", "t2"} - {task}:
            assert all(
                p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.task_parameters(other)
            )


def test_number_of_experts_is_validated() -> None:
    with pytest.raises(ValueError, match="num_experts must be >= 1, got 0"):
        OMoE(_schema(), num_experts=0)
