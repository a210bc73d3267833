"""DSelect-k: Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts with Applications to
Multi-Task Learning", NeurIPS 2021.

MMoE with a sparse, differentiable gate per task. With m = ceil(log2 E) binary variables per selector, selector
i = 1..k gives expert e the weight r(S(z_i))_e = prod_j [S(z_ij) if bit j of e is 1 else 1 - S(z_ij)], where S is
the smooth step

    S(t) = 0 for t <= -gamma/2,   1 for t >= gamma/2,   -2/gamma^3 t^3 + 3/(2 gamma) t + 1/2 otherwise;

the gate is q = sum_i softmax(alpha)_i r(S(z_i)), and y_k = Tower_k(sum_e q_k,e f_e(x)). Once every S(z_ij) is 0 or
1 each selector picks one expert, so at most k experts have non-zero weight. Regularizer (optional):
entropy_weight * sum over tasks and selectors of h(r(S(z_i))), h the entropy, which pushes selectors to binary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtlkit.models.base import GatedMix, MultiTaskModel, Output
from mtlkit.models.layers import Experts, FeatureEmbedding, TaskTowers, check_sizes, mix
from mtlkit.schema import Schema

#: Floor of a probability inside a log (entropy), so the regularizer and its gradient stay finite at 0.
_TINY = 1e-12


def smooth_step(t: Tensor, gamma: float) -> Tensor:
    """The smooth step S(t) of DSelect-k: exactly 0 below -gamma/2, exactly 1 above gamma/2, a cubic between.

    The cubic is evaluated on t clamped to [-gamma/2, gamma/2], so huge inputs never reach the unused branch of
    ``torch.where`` as inf (whose gradient would be NaN).
    """
    half = gamma / 2
    u = t.clamp(-half, half)
    cubic = (-2.0 / gamma**3) * u**3 + (1.5 / gamma) * u + 0.5
    return torch.where(t <= -half, torch.zeros_like(t), torch.where(t >= half, torch.ones_like(t), cubic))


def _entropy(p: Tensor) -> Tensor:
    """Entropy over the last dimension: -sum p log p (0 log 0 = 0, finite gradient at 0)."""
    return -(p * p.clamp_min(_TINY).log()).sum(-1)


class DSelectKGate(nn.Module):
    """One task's DSelect-k gate over ``num_experts`` experts: ``k`` single-expert selectors of
    m = ceil(log2 E) smooth binary variables each, combined with softmax weights.

    Static (``in_dim=None``, the paper's main variant): z [k, m] and alpha [k] are parameters, the weights are the
    same for every example. Per-example (``in_dim`` given): z = W_z x + b_z and alpha = W_a x + b_a.

    Expert e is selected by the m-bit binary code of e (most significant bit first). When E is not a power of two,
    the unused codes c >= E select expert c mod E (the authors' code instead penalises weight left on unused
    codes), so the weights always sum to 1 and a binary selector still picks one expert; the price is a
    non-uniform start (at S = 1/2 the experts that take an unused code start with twice the weight).

    ``forward(x)`` returns (weights [B, E], or [E] when static; the selectors' distributions over the 2^m codes
    [B, k, 2^m], or [k, 2^m] when static); only a per-example gate reads ``x``.
    """

    codes: Tensor
    fold: Tensor

    def __init__(self, num_experts: int, k: int, gamma: float, in_dim: int | None = None) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.k = k
        self.gamma = gamma
        self.num_bits = (num_experts - 1).bit_length()  # m = ceil(log2 E), exact in integers
        num_codes = 2**self.num_bits
        self.per_example = in_dim is not None
        code_ids = torch.arange(num_codes)
        bits = (code_ids.unsqueeze(1) >> torch.arange(self.num_bits - 1, -1, -1)) & 1  # [2^m, m], MSB first
        self.register_buffer("codes", bits.bool(), persistent=False)
        fold = torch.zeros(num_codes, num_experts)
        fold[code_ids, code_ids % num_experts] = 1.0
        self.register_buffer("fold", fold, persistent=False)
        self.folded = num_codes != num_experts
        # S(z) starts near 1/2 (inside the cubic), so every expert gets weight and gradient at first.
        bound = gamma / 100
        if in_dim is None:
            self.z = nn.Parameter(torch.empty(k, self.num_bits).uniform_(-bound, bound))
            self.alpha = nn.Parameter(torch.zeros(k))
        else:
            self.z_proj = nn.Linear(in_dim, k * self.num_bits)
            self.alpha_proj = nn.Linear(in_dim, k)
            nn.init.uniform_(self.z_proj.weight, -bound, bound)
            nn.init.uniform_(self.z_proj.bias, -bound, bound)
            nn.init.zeros_(self.alpha_proj.weight)
            nn.init.zeros_(self.alpha_proj.bias)

    def forward(self, x: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.per_example:
            if x is None:
                raise ValueError("a per-example DSelect-k gate needs its input x")
            z = self.z_proj(x).view(x.shape[0], self.k, self.num_bits)  # [B, k, m]
            alpha = self.alpha_proj(x)  # [B, k]
        else:
            z, alpha = self.z, self.alpha  # [k, m], [k]
        s = smooth_step(z, self.gamma).unsqueeze(-2)  # [..., k, 1, m]
        selectors = torch.where(self.codes, s, 1.0 - s).prod(-1)  # [..., k, 2^m]
        weights = (torch.softmax(alpha, dim=-1).unsqueeze(-1) * selectors).sum(-2)  # [..., 2^m]
        if self.folded:
            weights = weights @ self.fold  # [..., E]
        return weights, selectors


class DSelectK(MultiTaskModel):
    """Shared experts, one DSelect-k gate per task (see the module docstring).

    ``Output.shared`` is the stacked experts [B, E, d]; ``Output.gates``: task -> [B, E] weights (rows sum to 1;
    for the static gate every row is the same vector, expanded without a copy). Private to task k: its gate, its
    tower and its tower-only embedding tables; the experts and the shared embeddings are shared.

    ``regularization()`` is entropy_weight * sum over tasks and selectors of the entropy of each selector's
    distribution over the 2^m codes. For the static gate it is a function of the parameters; for the per-example
    gate it is the batch mean of the last forward pass in training mode (zero before one).

    Args:
        num_experts: experts E (>= 2).
        k: selectors per task, the most experts a task's gate can keep (1 <= k <= E).
        gamma: width of the smooth step's cubic region (> 0); smaller reaches binary selections sooner.
        entropy_weight: weight of the entropy regularizer (>= 0; 0 turns it off).
        per_example: gate weights computed from each example (z and alpha linear in the input) instead of
            learned per task.
    """

    def __init__(
        self,
        schema: Schema,
        num_experts: int = 8,
        k: int = 2,
        gamma: float = 1.0,
        entropy_weight: float = 0.0,
        per_example: bool = False,
        expert_sizes: Sequence[int] = (64,),
        tower_sizes: Sequence[int] = (32,),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        detach_dependency: bool = True,
    ) -> None:
        super().__init__(schema)
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 2:
            raise ValueError(f"num_experts must be an integer >= 2, got {num_experts!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_experts:
            raise ValueError(f"k must be an integer between 1 and num_experts ({num_experts}), got {k!r}")
        if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
        if not (
            isinstance(entropy_weight, int | float) and math.isfinite(entropy_weight) and entropy_weight >= 0
        ):
            raise ValueError(f"entropy_weight must be a finite number >= 0, got {entropy_weight!r}")
        self.num_experts = num_experts
        self.k = k
        self.gamma = float(gamma)
        self.entropy_weight = float(entropy_weight)
        self.per_example = bool(per_example)
        self.expert_sizes = check_sizes("expert_sizes", expert_sizes, allow_empty=False)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        in_dim = self.embedding.shared_dim
        self.experts = Experts(num_experts, in_dim, self.expert_sizes, activation, dropout, record_trace=True)
        self.gates = nn.ModuleDict(
            {
                t: DSelectKGate(num_experts, k, self.gamma, in_dim if self.per_example else None)
                for t in schema.task_names
            }
        )
        in_dims = {t: self.experts.out_dim + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(schema, in_dims, tower_sizes, activation, dropout, norm, detach_dependency)
        self._last_entropy: Tensor | None = None

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        experts = self.experts(x)  # [B, E, d]
        trace = self.experts.pop_trace(experts)
        gates: dict[str, Tensor] = {}
        entropies: list[Tensor] = []
        keep_entropy = self.per_example and self.training and self.entropy_weight > 0
        for t, gate in self.gates.items():
            weights, selectors = gate(x)
            if self.per_example:
                gates[t] = weights
                if keep_entropy:
                    entropies.append(_entropy(selectors).sum(-1).mean())
            else:
                gates[t] = weights.expand(x.shape[0], -1)  # a static gate: the same weights for every row
        if keep_entropy:
            self._last_entropy = torch.stack(entropies).sum()
        names = self.schema.task_names
        stacked = torch.stack([gates[t] for t in names], dim=1)  # [B, T, E]
        mixed = mix(stacked, experts)  # every task's gated sum in one batched matmul: [B, T, d]
        logits = self.towers.stacked(mixed, extra)
        return Output(logits=logits, shared=experts, gates=gates, mix=GatedMix(stacked, mixed, trace))

    def entropy(self) -> Tensor:
        """Sum over tasks and selectors of each selector's entropy (static gate), or the last training batch's
        mean of it (per-example gate; zero before a training forward pass)."""
        if self.per_example:
            if self._last_entropy is None:
                return super().regularization()
            return self._last_entropy
        return torch.stack([_entropy(gate()[1]).sum() for gate in self.gates.values()]).sum()

    def regularization(self) -> Tensor:
        if self.entropy_weight == 0:
            return super().regularization()
        return self.entropy_weight * self.entropy()

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.gates[task], *self.towers.task_modules(task), *self.embedding.task_modules(task)]
