"""AITM: Xi et al., "Modeling the Sequential Dependence among Audience Multi-step Conversions with Multi-task
Learning in Targeted Display Advertising", KDD 2021.

Tasks form a chain of conversion steps t1 <- t2 <- ... (``Task.depends_on``). Each task has a tower
q_t = Tower_t(e(x)) over the shared embedding e; the Adaptive Information Transfer module mixes q_t with the
information p_{t-1} = g_t(z_{t-1}) transferred from the previous step:

    z_1 = q_1,   z_t = sum_{u in {p_{t-1}, q_t}} w_u h3(u),   w_u = softmax_u(<h1(u), h2(u)> / sqrt(d)),
    y_t = sigmoid(Linear_t(z_t)),

and the Behavioral Expectation Calibrator penalises a later step predicted likelier than the one before it:
L = sum_t BCE_t + calibration_weight * mean_{rows, links} max(y_t - y_{t-1}, 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtlkit.errors import SchemaError, listing
from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.models.layers import MLP, FeatureEmbedding, check_sizes, dependency_order, tower_inputs
from mtlkit.schema import Schema


class AdaptiveInformationTransfer(nn.Module):
    """Self-attention over the two vectors {p (transferred), q (the task's own)}, [B, d] each -> z [B, d].

    h1, h2, h3 are one-layer linear projections d -> d without bias, held as one fused Linear d -> 3d (rows
    ``[0:d]``, ``[d:2d]``, ``[2d:3d]``). ``forward`` returns z and the attention weights [B, 2] (p, then q).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.project = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, transferred: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
        u = torch.stack([transferred, own], dim=1)  # [B, 2, d]
        h1, h2, h3 = self.project(u).chunk(3, dim=-1)
        weights = torch.softmax((h1 * h2).sum(-1) / math.sqrt(self.dim), dim=1)  # [B, 2]
        z = torch.bmm(weights.unsqueeze(1), h3).squeeze(1)
        return z, weights


class AITM(MultiTaskModel):
    """Towers per task linked by AIT modules along ``Task.depends_on``, plus the behavioural calibrator.

    The schema must have at least one task that ``depends_on`` another (a chain, or more generally a forest:
    several later steps may follow one step); every task in a link must be binary. Tasks in no link are plain
    tower + output layer.

    The calibrator is the mean over rows and links (parent, child) of
    ``max(sigmoid(logit_child) - sigmoid(logit_parent), 0)`` (the paper sums over links; a mean keeps the
    weight's meaning independent of the chain's length and is the same for two tasks). It depends on the batch,
    so it is returned as ``Output.regularization = calibration_weight * calibrator`` (the trainer adds it to the
    loss); ``Output.extras`` holds only per-row predictions.

    ``Output.shared`` is the shared input [B, D].

    Task-private: a task's output layer always; its tower, its AIT module and its transfer network g_t also
    when no later step reads z_t (a last step), or when ``detach_transfer`` stops later steps' losses at z_t.
    Otherwise (the paper's setting) the later steps' losses reach them too, so they count as shared.

    Args:
        tower_sizes: widths of each tower; the last width d is that of q_t, p_t, z_t.
        calibration_weight: alpha, the weight of the calibrator in ``Output.regularization`` (paper: 0.6).
        detach_transfer: feed ``z_{t-1}.detach()`` to the transfer network, so task t's loss trains its own
            transfer network, AIT module and tower but not the earlier steps (the paper does not detach).
    """

    def __init__(
        self,
        schema: Schema,
        tower_sizes: Sequence[int] = (128, 64, 32),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        calibration_weight: float = 0.6,
        detach_transfer: bool = False,
    ) -> None:
        super().__init__(schema)
        if not (math.isfinite(calibration_weight) and calibration_weight >= 0):
            raise ValueError(f"calibration_weight must be a finite number >= 0, got {calibration_weight}")
        self.tower_sizes = check_sizes("tower_sizes", tower_sizes, allow_empty=False)
        self.calibration_weight = float(calibration_weight)
        self.detach_transfer = detach_transfer
        self.links = [(t.depends_on, t.name) for t in schema.tasks if t.depends_on is not None]
        if not self.links:
            raise SchemaError(
                f"AITM models a chain of conversion steps, but no task depends on another (tasks are "
                f"{listing(schema.task_names)}): set depends_on on each later step, e.g. "
                f"Task('purchase', depends_on='click')"
            )
        for parent, child in self.links:
            for name in (parent, child):
                kind = schema.task(name).kind
                if kind != "binary":
                    raise SchemaError(
                        f"AITM: task {name!r} is in the conversion chain ({child!r} depends on {parent!r}) and "
                        f"must be binary, got kind {kind!r}"
                    )
        self.order = dependency_order(schema)
        self.parent = {t.name: t.depends_on for t in schema.tasks}
        self.has_children = {p for p, _ in self.links}
        dim = self.tower_sizes[-1]
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        in_dim = self.embedding.shared_dim
        self.towers = nn.ModuleDict(
            {
                t: MLP(in_dim + self.embedding.tower_dims[t], self.tower_sizes, activation, dropout, norm)
                for t in schema.task_names
            }
        )
        self.transfers = nn.ModuleDict(
            {child: MLP(dim, (dim,), activation, dropout, norm) for _, child in self.links}
        )
        self.aits = nn.ModuleDict({child: AdaptiveInformationTransfer(dim) for _, child in self.links})
        self.heads = nn.ModuleDict({t.name: nn.Linear(dim, t.output_dim) for t in schema.tasks})

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        inputs = tower_inputs({t: x for t in self.schema.task_names}, extra)
        z: dict[str, Tensor] = {}
        logits: dict[str, Tensor] = {}
        for task in self.order:
            q = self.towers[task](inputs[task])
            parent = self.parent[task]
            if parent is None:
                z[task] = q
            else:
                source = z[parent].detach() if self.detach_transfer else z[parent]
                z[task], _ = self.aits[task](self.transfers[task](source), q)
            raw = self.heads[task](z[task])
            logits[task] = raw.squeeze(-1) if raw.shape[-1] == 1 else raw
        probs = {t: torch.sigmoid(logits[t]) for link in self.links for t in link}
        excess = torch.stack([torch.relu(probs[child] - probs[parent]) for parent, child in self.links])
        calibration = excess.mean()
        return Output(logits=logits, shared=x, regularization=self.calibration_weight * calibration)

    def task_modules(self, task: str) -> list[nn.Module]:
        modules: list[nn.Module] = [self.heads[task]]
        if self.detach_transfer or task not in self.has_children:
            modules += [self.towers[task], *self.embedding.task_modules(task)]
            if self.parent[task] is not None:
                modules += [self.transfers[task], self.aits[task]]
        return modules
