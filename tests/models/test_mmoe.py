"""MMoE: the paper's synthetic-experiment configuration and its parameter count."""

from __future__ import annotations

import torch

from mtlkit import Feature, Schema, Task
from mtlkit.models import create_model


def _paper_model() -> torch.nn.Module:
    schema = Schema(
        tuple(Feature(f"x{i}", "numeric") for i in range(100)),
        (Task("y1", "regression"), Task("y2", "regression")),
    )
    return create_model("mmoe", schema, num_experts=8, expert_sizes=[16], tower_sizes=[8])


def test_paper_configuration_has_the_papers_13056_expert_and_tower_weights() -> None:
    """Ma et al. 2018 (synthetic experiments): 100 inputs, 8 experts of 16 units, towers of 8 units.

    Weight matrices (biases excluded):
      experts        8 x 100 x 16 = 12,800
      tower hidden   2 x  16 x  8 =    256
      -> 13,056, the figure quoted for this configuration.
    Counted separately: gates 2 x 100 x 8 = 1,600 weights; tower outputs 2 x 8 x 1 = 16 weights;
    biases 8 x 16 (experts) + 2 x 8 (gates) + 2 x (8 + 1) (towers) = 162.
    """
    model = _paper_model()
    experts = model.experts.weights[0].numel()
    tower_hidden = sum(model.towers.towers[t][0][0].weight.numel() for t in ("y1", "y2"))
    gates = sum(g.linear.weight.numel() for g in model.gates.values())
    tower_out = sum(model.towers.towers[t][1].weight.numel() for t in ("y1", "y2"))
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") or "biases" in n)
    assert (experts, tower_hidden) == (12_800, 256)
    assert experts + tower_hidden == 13_056
    assert (gates, tower_out, biases) == (1_600, 16, 162)
    assert sum(p.numel() for p in model.parameters()) == 13_056 + 1_600 + 16 + 162


def test_each_task_mixes_the_same_experts_with_its_own_gate() -> None:
    model = _paper_model()
    out = model.compute(torch.zeros(4, 0, dtype=torch.long), torch.randn(4, 100))
    assert out.shared is not None
    assert out.shared.shape == (4, 8, 16)
    assert not torch.allclose(out.gates["y1"], out.gates["y2"])
    mixed = torch.einsum("be,bed->bd", out.gates["y1"], out.shared)
    tower = model.towers.towers["y1"]
    torch.testing.assert_close(tower(mixed).squeeze(-1), out.logits["y1"])
