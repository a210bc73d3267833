"""CGC and PLE: Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL) Model for
Personalized Recommendations", RecSys 2020.

CGC (one extraction layer), with task k's experts E_k,1..E_k,m_k and the shared experts E_s,1..E_s,m_s:

    S_k(x) = [E_k,1(x) .. E_k,m_k(x), E_s,1(x) .. E_s,m_s(x)];   g_k(x) = softmax(W_k x) S_k(x);   y_k = Tower_k(g_k(x)).

PLE stacks N extraction layers. At level j task k's experts and gate read task k's output of level j-1, the shared
experts read the shared output of level j-1, and (below the top level) a shared gate mixes *every* expert of the
level into the shared output:

    g_k^j = softmax(W_k^j g_k^{j-1}) [E_k^j(g_k^{j-1}), E_s^j(g_s^{j-1})],
    g_s^j = softmax(W_s^j g_s^{j-1}) [E_1^j(g_1^{j-1}) .. E_T^j(g_T^{j-1}), E_s^j(g_s^{j-1})],   g^0 = x,
    y_k = Tower_k(g_k^N).

PLE with ``num_levels=1`` is CGC.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtlkit.models.base import GatedMix, MultiTaskModel, Output
from mtlkit.models.layers import (
    Experts,
    FeatureEmbedding,
    Gate,
    TaskGates,
    TaskTowers,
    check_sizes,
    mix,
)
from mtlkit.schema import Schema


def _check_count(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value


class ExtractionLayer(nn.Module):
    """One level of PLE: ``task_experts`` experts per task and ``shared_experts`` shared experts, a softmax gate
    per task over [its own experts, the shared experts] and, when ``shared_gate``, a softmax gate over every
    expert of the level (all tasks' in task order, then the shared ones) that makes the next level's shared input.

    Each task's experts and the shared experts are separate :class:`Experts` modules, so a level costs T + 1
    batched matmuls (one per group, never one per expert) rather than one over all experts: a single stacked
    weight holding several tasks' experts could not be split into the per-task parameters the
    :class:`MultiTaskModel` contract requires. The task gates are a :class:`TaskGates`, computed with one matmul
    where every task reads the same input (the first level); each task's output is the gated sum over the shared
    experts (every task at once, one batched matmul) plus the gated sum over its own experts.

    ``forward(task_inputs, shared_input)`` returns (the task outputs stacked, [B, T, d] in task order, the shared
    output [B, d] or None without a shared gate, the task gates {task: [B, task_experts + shared_experts]}, the
    shared experts' outputs [B, shared_experts, d], the shared experts' gated mix).
    """

    def __init__(
        self,
        task_names: Sequence[str],
        in_dim: int,
        task_experts: int,
        shared_experts: int,
        expert_sizes: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        shared_gate: bool = True,
    ) -> None:
        super().__init__()
        self.task_names = list(task_names)
        self.task_experts = nn.ModuleDict(
            {t: Experts(task_experts, in_dim, expert_sizes, activation, dropout) for t in self.task_names}
        )
        self.shared_experts = Experts(shared_experts, in_dim, expert_sizes, activation, dropout)
        self.task_gates = TaskGates(self.task_names, in_dim, task_experts + shared_experts)
        self.shared_gate: Gate | None = (
            Gate(in_dim, len(self.task_names) * task_experts + shared_experts) if shared_gate else None
        )
        self.out_dim = self.shared_experts.out_dim

    def forward(
        self, task_inputs: dict[str, Tensor], shared_input: Tensor
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor], Tensor, GatedMix]:
        names = self.task_names
        shared = self.shared_experts(shared_input)  # [B, S, d]
        own = {t: experts(task_inputs[t]) for t, experts in self.task_experts.items()}  # {t: [B, m, d]}
        first = task_inputs[names[0]]
        if all(task_inputs[t] is first for t in names):
            weights = self.task_gates(first)  # [B, T, m + S]: the first level, every task gate reads x
        else:
            weights = torch.stack([self.task_gates[t](task_inputs[t]) for t in names], dim=1)
        gates = dict(zip(names, weights.unbind(1), strict=True))  # {t: [B, m + S]}
        m = weights.shape[2] - shared.shape[1]
        # sum over the shared experts for every task in one batched matmul, then each task's own experts
        shared_weights = weights[:, :, m:]
        stacked = mix(shared_weights, shared)  # [B, T, d]
        # each task's own experts' sum, stacked, added to every task's shared sum at once: [B, T, d]
        summed = stacked + torch.stack([mix(gates[t][:, :m], own[t]) for t in names], dim=1)
        shared_output = None
        if self.shared_gate is not None:
            every = torch.cat([*(own[t] for t in self.task_names), shared], dim=1)  # [B, T*m + S, d]
            shared_output = mix(self.shared_gate(shared_input), every)
        return summed, shared_output, gates, shared, GatedMix(shared_weights, stacked)


class PLE(MultiTaskModel):
    """Progressive Layered Extraction: ``num_levels`` extraction layers (see the module docstring), towers on top.

    ``Output.gates``: task -> the top-level task gate [B, task_experts + shared_experts] (its own experts first,
    then the shared ones). ``Output.shared``: the top-level shared experts' outputs [B, shared_experts, d]; a
    task also depends on the shared part through its own experts, so this is the boundary of the shared experts
    only, not of every shared parameter.

    Parameters private to task k (``task_parameters``): its tower, its tower-only embedding tables, its
    top-level experts and gate, and, with ``num_levels >= 2``, its gate at level N-1 (its output g_k^{N-1} feeds
    only task k's top-level experts and gate). Task k's experts below the top level, and its gates below level
    N-1, are shared: the shared gate of their level mixes them into g_s, which reaches every task through the
    next level's shared experts. Another task's loss gives the private parameters exactly zero gradient
    (with ``detach_dependency=True``); tests/models/test_ple.py checks the split with autograd.

    Args:
        num_levels: extraction layers N (>= 1; 1 is CGC).
        task_experts: experts per task at each level.
        shared_experts: shared experts at each level.
        expert_sizes: hidden widths of every expert (the last is the expert output width d).
    """

    def __init__(
        self,
        schema: Schema,
        num_levels: int = 2,
        task_experts: int = 2,
        shared_experts: int = 2,
        expert_sizes: Sequence[int] = (64,),
        tower_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        detach_dependency: bool = True,
    ) -> None:
        super().__init__(schema)
        self.num_levels = _check_count("num_levels", num_levels)
        self.task_experts = _check_count("task_experts", task_experts)
        self.shared_experts = _check_count("shared_experts", shared_experts)
        self.expert_sizes = check_sizes("expert_sizes", expert_sizes, allow_empty=False)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        self.levels = nn.ModuleList()
        in_dim = self.embedding.shared_dim
        for level in range(num_levels):
            layer = ExtractionLayer(
                schema.task_names,
                in_dim,
                task_experts,
                shared_experts,
                self.expert_sizes,
                activation,
                dropout,
                shared_gate=level < num_levels - 1,
            )
            self.levels.append(layer)
            in_dim = layer.out_dim
        in_dims = {t: in_dim + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        task_inputs = {t: x for t in self.schema.task_names}
        shared_input = x
        gates: dict[str, Tensor] = {}
        shared = x
        top: GatedMix | None = None
        names = self.schema.task_names
        for layer in self.levels:
            outputs, next_shared, gates, shared, top = layer(task_inputs, shared_input)
            task_inputs = dict(zip(names, outputs.unbind(1), strict=True))
            if next_shared is not None:
                shared_input = next_shared
        logits = self.towers.stacked(outputs, extra)
        # task k's tower reads the shared experts only through its gated sum of them (its own experts do not)
        return Output(logits=logits, shared=shared, gates=gates, mix=top)

    def _level(self, index: int) -> ExtractionLayer:
        layer = self.levels[index]
        assert isinstance(layer, ExtractionLayer)
        return layer

    def task_modules(self, task: str) -> list[nn.Module]:
        top = self._level(-1)
        modules: list[nn.Module] = [top.task_experts[task], top.task_gates[task]]
        if self.num_levels >= 2:
            modules.append(self._level(-2).task_gates[task])
        return modules + self.towers.task_modules(task) + self.embedding.task_modules(task)


class CGC(PLE):
    """Customized Gate Control: PLE with one extraction layer (the module docstring's first formula).

    Task k's experts, gate and tower are private to task k; the shared experts and the embeddings are shared.
    ``Output.shared`` is the shared experts' outputs [B, shared_experts, d]; ``Output.gates``: task ->
    [B, task_experts + shared_experts] (its own experts first).
    """

    def __init__(
        self,
        schema: Schema,
        task_experts: int = 2,
        shared_experts: int = 2,
        expert_sizes: Sequence[int] = (64,),
        tower_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        detach_dependency: bool = True,
    ) -> None:
        super().__init__(
            schema,
            num_levels=1,
            task_experts=task_experts,
            shared_experts=shared_experts,
            expert_sizes=expert_sizes,
            tower_sizes=tower_sizes,
            activation=activation,
            dropout=dropout,
            norm=norm,
            numeric_dim=numeric_dim,
            detach_dependency=detach_dependency,
        )
