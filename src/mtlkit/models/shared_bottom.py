"""Shared-Bottom (hard parameter sharing): Caruana, "Multitask Learning", Machine Learning 28, 1997.

h = MLP_bottom(x);   y_k = Tower_k(h)   for every task k.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.models.layers import MLP, FeatureEmbedding, TaskTowers, check_sizes
from mtlkit.schema import Schema


class SharedBottom(MultiTaskModel):
    """One shared MLP bottom, one tower per task. ``Output.shared`` is the bottom output [B, d]."""

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
    ) -> None:
        super().__init__(schema)
        self.bottom_sizes = check_sizes("bottom_sizes", bottom_sizes, allow_empty=False)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        self.bottom = MLP(self.embedding.shared_dim, self.bottom_sizes, activation, dropout, norm)
        in_dims = {t: self.bottom.out_dim + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        h = self.bottom(x)
        logits = self.towers.common(h, extra)
        return Output(logits=logits, shared=h)

    def task_modules(self, task: str) -> list[nn.Module]:
        return self.towers.task_modules(task) + self.embedding.task_modules(task)
