"""Single-task baseline: one independent network per task, trained side by side (no sharing).

y_k = Tower_k(MLP_k(Embed_k(x))) for every task k   (Embed_k = Embed, shared, with ``share_embedding``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.models.layers import MLP, FeatureEmbedding, TaskTowers, check_sizes, tower_inputs
from mtlkit.schema import Schema


class SingleTask(MultiTaskModel):
    """One MLP bottom and one tower per task; by default (``share_embedding=False``) nothing is shared.

    ``share_embedding=False`` (default): each task embeds the features it sees (shared ones and its own
    tower-only ones) with its own :class:`FeatureEmbedding`, so ``shared_parameters()`` is empty and
    ``Output.shared`` is None. ``share_embedding=True``: one embedding feeds every task's bottom and is the
    only shared part; ``Output.shared`` is its output [B, D].

    The bottoms are an ``nn.ModuleDict`` of per-task MLPs run in a loop over the tasks, not stacked
    :class:`Experts` weights: a stacked tensor [T, in, out] would be one parameter holding every task's
    weights, and the contract needs each parameter to belong to exactly one task (``task_parameters``).
    A task that ``depends_on`` another receives that task's logits detached (no ``detach_dependency`` option):
    training through another task's tower would share it.
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
        share_embedding: bool = False,
    ) -> None:
        super().__init__(schema)
        self.bottom_sizes = check_sizes("bottom_sizes", bottom_sizes, allow_empty=False)
        self.share_embedding = bool(share_embedding)
        if self.share_embedding:
            self.embedding = FeatureEmbedding(schema, numeric_dim)
            in_dim = {t: self.embedding.shared_dim for t in schema.task_names}
            tower_dim = dict(self.embedding.tower_dims)
        else:
            own = {t: _TaskEmbedding(schema, t, numeric_dim) for t in schema.task_names}
            self.embeddings = nn.ModuleDict(own)
            in_dim = {t: e.embedding.shared_dim for t, e in own.items()}
            tower_dim = {t: e.embedding.tower_dims[t] for t, e in own.items()}
        self.bottoms = nn.ModuleDict(
            {t: MLP(in_dim[t], self.bottom_sizes, activation, dropout, norm) for t in schema.task_names}
        )
        in_dims = {t: self.bottom_sizes[-1] + tower_dim[t] for t in schema.task_names}
        # dependent towers always read their parent detached: a task trained through another task's tower
        # would share it, and a single-task baseline shares nothing
        self.towers = TaskTowers(
            schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency=True
        )

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        shared: Tensor | None = None
        hidden: dict[str, Tensor] = {}
        extra: dict[str, Tensor] = {}
        if self.share_embedding:
            shared, extra = self.embedding(categorical, numeric)
            for t, bottom in self.bottoms.items():
                hidden[t] = bottom(shared)
        else:
            for t, bottom in self.bottoms.items():
                x, own = self.embeddings[t](categorical, numeric)
                hidden[t] = bottom(x)
                if t in own:
                    extra[t] = own[t]
        logits = self.towers(tower_inputs(hidden, extra))
        return Output(logits=logits, shared=shared)

    def task_modules(self, task: str) -> list[nn.Module]:
        own = self.embedding.task_modules(task) if self.share_embedding else [self.embeddings[task]]
        return [self.bottoms[task], *self.towers.task_modules(task), *own]


class _TaskEmbedding(nn.Module):
    """One task's private embedding: the features that task sees, picked out of the full encoded tensors.

    Built on the schema restricted to the shared features and the task's own tower-only features (their
    ``towers`` narrowed to this task), so the task owns no table it never reads.
    """

    categorical_columns: Tensor
    numeric_columns: Tensor

    def __init__(self, schema: Schema, task: str, numeric_dim: int) -> None:
        super().__init__()
        seen = [f for f in schema.features if not f.towers or task in f.towers]
        names = {f.name for f in seen}
        categorical = [j for j, f in enumerate(schema.categorical) if f.name in names]
        numeric = [j for j, (name, _) in enumerate(schema.numeric_columns) if name in names]
        narrowed = [dataclasses.replace(f, towers=(task,)) if f.towers else f for f in seen]
        self.embedding = FeatureEmbedding(schema.replace_features(narrowed), numeric_dim)
        self.register_buffer(
            "categorical_columns", torch.tensor(categorical, dtype=torch.int64), persistent=False
        )
        self.register_buffer("numeric_columns", torch.tensor(numeric, dtype=torch.int64), persistent=False)

    def forward(self, categorical: Tensor, numeric: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        out: tuple[Tensor, dict[str, Tensor]] = self.embedding(
            categorical.index_select(1, self.categorical_columns),
            numeric.index_select(1, self.numeric_columns),
        )
        return out
