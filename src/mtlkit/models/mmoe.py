"""MMoE: Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts",
KDD 2018.

    f_e(x) for experts e = 1..E (shared);   g_k(x) = softmax(W_k x);   y_k = Tower_k(sum_e g_k(x)_e f_e(x)).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtlkit.models.base import GatedMix, MultiTaskModel, Output
from mtlkit.models.layers import Experts, FeatureEmbedding, TaskGates, TaskTowers, mix
from mtlkit.schema import Schema


class MMoE(MultiTaskModel):
    """Shared experts, one softmax gate per task. ``Output.shared`` is the stacked experts [B, E, d].

    The task gates are a :class:`TaskGates` (``gates[task]`` is task's own :class:`Gate`), computed together, and
    every task's mix is one batched matmul.
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
        self.experts = Experts(
            num_experts, self.embedding.shared_dim, expert_sizes, activation, dropout, record_trace=True
        )
        self.gates = TaskGates(schema.task_names, self.embedding.shared_dim, num_experts)
        in_dims = {t: self.experts.out_dim + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        experts = self.experts(x)  # [B, E, d]
        trace = self.experts.pop_trace(experts)
        weights = self.gates(x)  # [B, T, E]: every task's gate in one matmul
        mixed = mix(weights, experts)  # [B, T, d]: every task's gated sum in one batched matmul
        names = self.schema.task_names
        gates = dict(zip(names, weights.unbind(1), strict=True))
        logits = self.towers.stacked(mixed, extra)
        return Output(logits=logits, shared=experts, gates=gates, mix=GatedMix(weights, mixed, trace))

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.gates[task], *self.towers.task_modules(task), *self.embedding.task_modules(task)]
