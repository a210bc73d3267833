"""SNR: Ma et al., "SNR: Sub-Network Routing for Flexible Parameter Sharing in Multi-Task Learning", AAAI 2019.

The shared bottom is split into a lower layer of sub-networks h_i (i = 1..E, shared by every task) and an upper
layer with one sub-network per task; lower i reaches upper j through a coding variable z_ij in [0, 1]:

    SNR-Trans:  v_j = sum_i z_ij W_ij h_i        SNR-Aver:  v_j = sum_i z_ij h_i

z is the hard concrete relaxation of a binary variable (Louizos et al., ICLR 2018): u ~ U(0, 1),
s = sigmoid((log u - log(1 - u) + log_alpha) / beta), z = min(1, max(0, s (zeta - gamma) + gamma)); at evaluation
z = min(1, max(0, sigmoid(log_alpha) (zeta - gamma) + gamma)). The expected L0 norm
sum_ij sigmoid(log_alpha_ij - beta log(-gamma / zeta)) = sum_ij P(z_ij != 0) is the sparsity penalty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, cast

import torch
from torch import Tensor, nn

from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.models.layers import (
    MLP,
    Experts,
    FeatureEmbedding,
    TaskTowers,
    activation,
    check_fraction,
    check_sizes,
    tower_inputs,
)
from mtlkit.schema import Schema

#: u is drawn from [EPS, 1 - EPS] so that log u and log(1 - u) stay finite.
EPS = 1e-6


def hard_concrete(log_alpha: Tensor, beta: float, gamma: float, zeta: float, sample: bool) -> Tensor:
    """Hard concrete gates, one per entry of ``log_alpha``, in [0, 1] (exactly 0 and 1 are reachable).

    ``sample``: draw u ~ U(0, 1) per entry (training); otherwise the deterministic test-time value
    ``clamp(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)``.
    """
    if sample:
        u = torch.rand_like(log_alpha).clamp(EPS, 1.0 - EPS)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / beta)
    else:
        s = torch.sigmoid(log_alpha)
    return (s * (zeta - gamma) + gamma).clamp(0.0, 1.0)


def expected_l0(log_alpha: Tensor, beta: float, gamma: float, zeta: float) -> Tensor:
    """P(z != 0) per gate: ``sigmoid(log_alpha - beta log(-gamma / zeta))``; its sum is the expected L0 norm."""
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


class HardConcreteGates(nn.Module):
    """``n`` learnable coding variables z (one ``log_alpha`` each), sampled in training, deterministic in eval."""

    def __init__(self, n: int, beta: float, gamma: float, zeta: float, init_log_alpha: float) -> None:
        super().__init__()
        self.beta, self.gamma, self.zeta = beta, gamma, zeta
        self.log_alpha = nn.Parameter(torch.full((n,), float(init_log_alpha)))

    def forward(self) -> Tensor:
        return hard_concrete(self.log_alpha, self.beta, self.gamma, self.zeta, sample=self.training)

    def expected_l0(self) -> Tensor:
        return expected_l0(self.log_alpha, self.beta, self.gamma, self.zeta).sum()


class UpperSubNetwork(nn.Module):
    """One task's upper sub-network and its incoming connections from the E lower sub-networks.

    ``transform=True`` (SNR-Trans): the connection from lower i is a matrix W_i [d, s_1] scaled by z_i, and
    v = sum_i z_i W_i h_i is the pre-activation of the first upper layer (a separate linear map in front of another
    Linear would compose into one linear map and add nothing), then bias, activation and the other upper layers.
    ``transform=False`` (SNR-Aver): v = sum_i z_i h_i [d] is the input of an MLP with widths ``sizes``.
    Both sums are one einsum over the stacked lower outputs h [B, E, d].
    """

    def __init__(
        self,
        num_lower: int,
        in_dim: int,
        sizes: Sequence[int],
        transform: bool,
        activation_name: str,
        dropout: float,
        gates: HardConcreteGates,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.gates = gates
        if transform:
            first = sizes[0]
            bound = 1.0 / math.sqrt(num_lower * in_dim)  # nn.Linear's init for the [E * d] concatenation
            self.weight = nn.Parameter(torch.empty(num_lower, in_dim, first).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(first).uniform_(-bound, bound))
            self.act = activation(activation_name)
            self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
            self.rest = MLP(first, sizes[1:], activation_name, dropout)
        else:
            self.rest = MLP(in_dim, sizes, activation_name, dropout)
        self.out_dim = self.rest.out_dim

    def route(self, lower: Tensor, z: Tensor) -> Tensor:
        """The routed input v [B, s_1] (Trans, before bias) or [B, d] (Aver) from lower [B, E, d], z [E]."""
        if self.transform:
            return torch.einsum("bid,ids->bs", lower * z[:, None], self.weight)
        return torch.einsum("bid,i->bd", lower, z)

    def forward(self, lower: Tensor, z: Tensor) -> Tensor:
        v = self.route(lower, z)
        if self.transform:
            v = self.dropout(self.act(v + self.bias))
        out: Tensor = self.rest(v)
        return out


class _SNR(MultiTaskModel):
    """Shared lower sub-networks, one upper sub-network per task routed by hard concrete coding variables.

    ``Output.shared`` is the stacked lower outputs [B, E, d]. ``Output.gates[task]`` is z_{.j} into that task's
    upper sub-network normalised to sum to 1 (z / sum_i z_i, the same for every row), for reporting only: the
    model itself uses the raw z, which need not sum to 1. When every z_{.j} is exactly 0 the task receives nothing
    from the lower layer and its row is all zeros. ``regularization()`` is ``l0_weight`` times the expected L0
    norm of all coding variables.

    Task-private: task j's upper sub-network, its connections (W_{.j} for Trans) and its ``log_alpha_{.j}``,
    its tower, and embeddings of features only its tower sees. Shared: embeddings and the lower sub-networks.
    The upper sub-networks are separate modules (a loop over tasks, as for towers), not one stacked tensor: a
    stacked tensor would be one Parameter reached by every task's loss, i.e. shared under the contract.

    Args:
        num_lower: lower sub-networks E (batched as :class:`Experts`).
        lower_sizes: layer widths of each lower sub-network.
        upper_sizes: layer widths of each upper sub-network (for Trans the first width is that of W_ij).
        tower_sizes: hidden widths of the tower on top of each upper sub-network (empty: a Linear to the output).
        l0_weight: weight of the expected-L0 penalty (the paper tunes it; 0 disables it).
        beta, gamma, zeta: hard concrete temperature and stretch interval (gamma < 0, zeta > 1).
        init_log_alpha: initial log_alpha of every coding variable (0: P(z != 0) = 0.83, eval z = 0.5).
        detach_dependency: see :class:`TaskTowers` (tasks with ``depends_on``).
    """

    transform: ClassVar[bool]

    def __init__(
        self,
        schema: Schema,
        num_lower: int = 8,
        lower_sizes: Sequence[int] = (64,),
        upper_sizes: Sequence[int] = (32,),
        tower_sizes: Sequence[int] = (),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        l0_weight: float = 1e-3,
        beta: float = 2.0 / 3.0,
        gamma: float = -0.1,
        zeta: float = 1.1,
        init_log_alpha: float = 0.0,
        detach_dependency: bool = True,
    ) -> None:
        super().__init__(schema)
        if isinstance(num_lower, bool) or not isinstance(num_lower, int) or num_lower < 1:
            raise ValueError(f"num_lower must be an integer >= 1, got {num_lower!r}")
        if not (math.isfinite(l0_weight) and l0_weight >= 0):
            raise ValueError(f"l0_weight must be a finite number >= 0, got {l0_weight}")
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {beta}")
        if not (math.isfinite(gamma) and gamma < 0):
            raise ValueError(f"gamma must be < 0 (so that z = 0 is reachable), got {gamma}")
        if not (math.isfinite(zeta) and zeta > 1):
            raise ValueError(f"zeta must be > 1 (so that z = 1 is reachable), got {zeta}")
        if not math.isfinite(init_log_alpha):
            raise ValueError(f"init_log_alpha must be finite, got {init_log_alpha}")
        check_fraction("dropout", dropout)
        self.upper_sizes = check_sizes("upper_sizes", upper_sizes, allow_empty=False)
        self.num_lower = num_lower
        self.l0_weight = float(l0_weight)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        self.lower = Experts(num_lower, self.embedding.shared_dim, lower_sizes, activation, dropout)
        self.upper = nn.ModuleDict(
            {
                t: UpperSubNetwork(
                    num_lower,
                    self.lower.out_dim,
                    self.upper_sizes,
                    self.transform,
                    activation,
                    dropout,
                    HardConcreteGates(num_lower, beta, gamma, zeta, init_log_alpha),
                )
                for t in schema.task_names
            }
        )
        in_dims = {t: self.upper_sizes[-1] + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)

    def coding_variables(self) -> dict[str, Tensor]:
        """task -> z [E] into its upper sub-network (a fresh sample in training mode, deterministic in eval)."""
        return {t: upper.gates() for t, upper in self._uppers().items()}

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        lower = self.lower(x)  # [B, E, d]
        batch = lower.shape[0]
        z = self.coding_variables()
        upper = {t: self.upper[t](lower, z[t]) for t in self.schema.task_names}
        logits = self.towers(tower_inputs(upper, extra))
        gates = {t: _normalised(zt).unsqueeze(0).expand(batch, -1) for t, zt in z.items()}
        return Output(logits=logits, shared=lower, gates=gates)

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.upper[task], *self.towers.task_modules(task), *self.embedding.task_modules(task)]

    def regularization(self) -> Tensor:
        """``l0_weight * sum_ij sigmoid(log_alpha_ij - beta log(-gamma / zeta))`` (the expected L0 norm)."""
        total = torch.stack([upper.gates.expected_l0() for upper in self._uppers().values()]).sum()
        return self.l0_weight * total

    def _uppers(self) -> dict[str, UpperSubNetwork]:
        return {t: cast(UpperSubNetwork, upper) for t, upper in self.upper.items()}


def _normalised(z: Tensor) -> Tensor:
    """z / sum(z), or zeros when every z is 0 (nothing flows: not to be read as uniform usage)."""
    total = z.sum()
    return torch.where(total > 0, z / total.clamp_min(torch.finfo(z.dtype).tiny), torch.zeros_like(z))


class SNRTrans(_SNR):
    """SNR-Trans: upper input v_j = sum_i z_ij W_ij h_i, one learned matrix per (lower, upper) connection."""

    transform = True


class SNRAver(_SNR):
    """SNR-Aver: upper input v_j = sum_i z_ij h_i, the z-weighted sum of the lower outputs (no transformation)."""

    transform = False
