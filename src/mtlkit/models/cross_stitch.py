"""Cross-stitch networks: Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016.

h^l_k = f^l_k(h~^{l-1}_k) per task column k;   h~^l_k = sum_j alpha^l[k, j] h^l_j;   y_k = Tower_k(h~^L_k).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.models.layers import Experts, FeatureEmbedding, TaskTowers, check_sizes
from mtlkit.schema import Schema


class CrossStitch(MultiTaskModel):
    """One MLP column per task; after every layer a learnable T x T cross-stitch unit mixes the columns.

    Unit l starts at ``alpha_self`` on the diagonal and ``(1 - alpha_self) / (T - 1)`` off it (rows sum to 1;
    ``[[1]]`` for a single task); ``alpha_self=1`` starts from independent columns. Columns are stacked
    weights (:class:`Experts` with one expert per task, one batched matmul per layer), so ``norm`` applies to
    the towers only.

    Shared: the embedding, every column and the cross-stitch units. Through the off-diagonal alphas each
    task's loss reaches every column, so by the contract (a task's parameters are those only its loss
    reaches) the columns are shared; per task: its tower and its tower-only embedding tables.
    ``Output.shared`` is the last mixed layer, stacked in task order: [B, T, d].
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
        alpha_self: float = 0.9,
    ) -> None:
        super().__init__(schema)
        if not 0.0 <= alpha_self <= 1.0:
            raise ValueError(f"alpha_self must be in [0, 1], got {alpha_self}")
        self.alpha_self = float(alpha_self)
        self.bottom_sizes = check_sizes("bottom_sizes", bottom_sizes, allow_empty=False)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        tasks = len(schema.task_names)
        self.columns = nn.ModuleList()
        width = self.embedding.shared_dim
        for size in self.bottom_sizes:
            self.columns.append(Experts(tasks, width, [size], activation, dropout))
            width = size
        off = (1.0 - self.alpha_self) / (tasks - 1) if tasks > 1 else 0.0
        unit = torch.full((tasks, tasks), off).fill_diagonal_(self.alpha_self if tasks > 1 else 1.0)
        self.stitches = nn.Parameter(unit.repeat(len(self.bottom_sizes), 1, 1))  # [L, T, T]
        in_dims = {t: width + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        h = x
        for layer, column in enumerate(self.columns):
            h = torch.matmul(self.stitches[layer], column(h))  # [T, T] @ [B, T, d] -> [B, T, d]
        logits = self.towers.stacked(h, extra)  # task k's tower reads column k, h[:, k]
        return Output(logits=logits, shared=h)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [*self.towers.task_modules(task), *self.embedding.task_modules(task)]
