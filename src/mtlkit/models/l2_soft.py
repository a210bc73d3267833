"""L2 soft parameter sharing: Duong et al., "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing
in a Neural Network Parser", ACL 2015.

    y_k = Tower_k(MLP_k(x));   regularization = l2_weight * sum_{a<b} sum_layers ||W_a - W_b||^2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.models.layers import MLP, FeatureEmbedding, TaskTowers, check_sizes, tower_inputs
from mtlkit.schema import Schema


class L2Soft(MultiTaskModel):
    """A shared embedding, one MLP bottom of identical shape per task tied by an L2 penalty, one tower each.

    ``regularization()`` = ``l2_weight * sum over unordered task pairs a < b of sum over every bottom
    parameter (Linear weights and biases, norm scales and shifts) of ||P_a - P_b||^2``: the paper's penalty
    between two parsers, taken pairwise for T tasks. It is computed through the identity
    ``sum_{a<b} ||P_a - P_b||^2 = T * sum_a ||P_a - mean_b P_b||^2`` (one pass per parameter, not T^2).
    The towers are not tied (their shapes differ with tower-only features, dependencies and multiclass
    outputs). Shared: the embedding; per task: its bottom, its tower, its tower-only embedding tables.
    ``Output.shared`` is the embedding output [B, D].
    """

    def __init__(
        self,
        schema: Schema,
        bottom_sizes: Sequence[int] = (128, 64),
        tower_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        detach_dependency: bool = True,
        l2_weight: float = 1e-3,
    ) -> None:
        super().__init__(schema)
        if not math.isfinite(l2_weight) or l2_weight < 0:
            raise ValueError(f"l2_weight must be a finite number >= 0, got {l2_weight}")
        self.l2_weight = float(l2_weight)
        self.bottom_sizes = check_sizes("bottom_sizes", bottom_sizes, allow_empty=False)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        self.bottoms = nn.ModuleDict(
            {
                t: MLP(self.embedding.shared_dim, self.bottom_sizes, activation, dropout, norm)
                for t in schema.task_names
            }
        )
        in_dims = {t: self.bottom_sizes[-1] + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        hidden = {t: bottom(x) for t, bottom in self.bottoms.items()}
        logits = self.towers(tower_inputs(hidden, extra))
        return Output(logits=logits, shared=x)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.bottoms[task], *self.towers.task_modules(task), *self.embedding.task_modules(task)]

    def regularization(self) -> Tensor:
        """``l2_weight * sum_{a<b} sum_p ||P_a - P_b||^2`` over the per-task bottoms (see the class)."""
        columns = [list(bottom.parameters()) for bottom in self.bottoms.values()]
        first = columns[0][0]
        total = torch.zeros((), dtype=first.dtype, device=first.device)
        if self.l2_weight == 0.0 or len(columns) < 2:
            return total
        for same in zip(*columns, strict=True):
            # this parameter in every task's bottom, relative to the first task's (exactly 0 when all equal)
            offsets = torch.stack(same) - same[0]  # [T, *shape]
            total = total + (offsets - offsets.mean(dim=0)).square().sum()
        return self.l2_weight * len(columns) * total
