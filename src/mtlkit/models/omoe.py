"""OMoE (one-gate mixture of experts): the baseline of Ma et al., "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018.

    f_e(x) for experts e = 1..E (shared);   g(x) = softmax(W x) (shared);   y_k = Tower_k(sum_e g_e f_e(x)).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtlkit.models.base import GatedMix, MultiTaskModel, Output
from mtlkit.models.layers import Experts, FeatureEmbedding, Gate, TaskTowers, mix
from mtlkit.schema import Schema


class OMoE(MultiTaskModel):
    """Shared experts and one softmax gate shared by every task, one tower per task.

    Every task's tower reads the same gated sum; ``Output.gates`` maps every task to that one gate output
    [B, E], and ``Output.shared`` is the stacked experts [B, E, d]. Shared: embedding, experts, gate; per
    task: its tower and its tower-only embedding tables.
    """

    def __init__(
        self,
        schema: Schema,
        num_experts: int = 8,
        expert_sizes: Sequence[int] = (64,),
        tower_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        detach_dependency: bool = True,
    ) -> None:
        super().__init__(schema)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        self.experts = Experts(num_experts, self.embedding.shared_dim, expert_sizes, activation, dropout)
        self.gate = Gate(self.embedding.shared_dim, num_experts)
        in_dims = {t: self.experts.out_dim + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        experts = self.experts(x)  # [B, E, d]
        gate = self.gate(x)  # [B, E]
        names = self.schema.task_names
        # one gated sum, read by every tower through its own slice of a broadcast view [B, T, d] (no copy), so
        # the engine can tell the tasks' gradients at it apart (Output.mix)
        mixed = mix(gate, experts).unsqueeze(1).expand(-1, len(names), -1)
        logits = self.towers.stacked(mixed, extra)
        weights = gate.unsqueeze(1).expand(-1, len(names), -1)
        return Output(
            logits=logits, shared=experts, gates=dict.fromkeys(names, gate), mix=GatedMix(weights, mixed)
        )

    def task_modules(self, task: str) -> list[nn.Module]:
        return [*self.towers.task_modules(task), *self.embedding.task_modules(task)]
