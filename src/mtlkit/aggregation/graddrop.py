"""GradDrop: Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, "Just Pick a Sign: Optimizing Deep Multitask
Models with Gradient Sign Dropout", NeurIPS 2020.

Per coordinate, the gradient sign purity P = 1/2 (1 + sum_i g_i / sum_i |g_i|) is the probability of keeping the
positive side: with one draw U ~ Uniform[0, 1) per coordinate, task i keeps its gradient where (P > U and g_i > 0)
or (P < U and g_i < 0), i.e. all tasks agree on one sign there. With a leak l (the fraction of each gradient passed
unmasked):

    d = sum_i (l + (1 - l) M_i) * g_i,    M_i = [P > U] [g_i > 0] + [P < U] [g_i < 0]

A coordinate where every gradient is 0 has P = 1/2 (0/0 guarded) and contributes 0. Scale: the *sum* convention;
gradients that agree in sign everywhere pass unchanged (d = sum_i g_i; identical gradients give T g). P depends only
on ratios, so tiny and huge gradients behave like unit ones.

The paper applies GradDrop to the gradients at the shared representation (``mode="representation"`` is the natural
mode; ``parameter`` works too). It reduces per-example gradients over the batch before computing P where the
activations are batch-separated; mtlkit computes P on every coordinate of the flattened gradient (batch x width)
as given, and does not use the paper's optional input-sign correction.

Randomness: U comes from a numpy PCG64 stream owned by the module (seeded by ``seed``; 16-bit draws, U = k / 65536,
so a coordinate keeps its positive side with probability ceil(65536 P) / 65536, within 1/65536 of P; float32 on the
CPU in a buffer the module reuses, its state in ``state_dict`` as extra state; ``reset()`` reseeds it; see
:class:`~mtlkit.seeding.OwnsUniformStream`). The draw does not depend on the task order and P and
the masks are symmetric in the tasks, so permuting the tasks leaves the direction unchanged for the same draw:
``order_invariant`` is True.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mtlkit.aggregation.base import GatedJacobian, GradientAggregator, Mode
from mtlkit.schema import Schema
from mtlkit.seeding import OwnsUniformStream


def sign_purity(jacobian: Tensor) -> Tensor:
    """P [D] = 1/2 (1 + sum_i g_i / sum_i |g_i|), 1/2 where every gradient is 0."""
    return _purity(jacobian.clamp(min=0).sum(0), jacobian.clamp(max=0).sum(0))


def _purity(positive: Tensor, negative: Tensor) -> Tensor:
    """P from the sums of the positive and of the negative parts of the gradients."""
    magnitude = positive - negative
    nonzero = magnitude > 0
    ratio = torch.where(nonzero, (positive + negative) / torch.where(nonzero, magnitude, 1.0), 0.0)
    return 0.5 * (1.0 + ratio)


def direction_from_sums(positive: Tensor, negative: Tensor, uniform: Tensor, leak: float = 0.0) -> Tensor:
    """GradDrop's direction [D] from sum_i max(g_i, 0) and sum_i min(g_i, 0) (any shape of D entries, e.g. the
    [B, E, d] halves of :meth:`~mtlkit.aggregation.base.GatedJacobian.sign_sums`) and the draws U [D].

    The kept gradients sum to [P > U] sum_{g_i > 0} g_i + [P < U] sum_{g_i < 0} g_i, so these two sums over the
    tasks are all the method needs from J (a pass per task, or none for a gated Jacobian in factors). With
    m = sum_i |g_i| = positive - negative > 0, P = positive / m, so P > U is positive > U m, that is
    positive + U (negative - positive) > 0: the left side is ``lerp(positive, negative, U)``. With K = 1 there and
    0 elsewhere (a float comparison, branch-free), the direction is ``lerp(negative, positive, K)``, exactly one
    of the two (torch's lerp is exact at weights 0 and 1; a masked select, ``torch.where``, runs 5x slower here on
    random masks). Where m = 0 both sums are 0 and so is the direction. At a tie, P = U (probability 0 apart from a
    draw of exactly 0), the negative side is kept where the formula keeps neither.

    The three inputs are scratch: they are overwritten (K in ``uniform``'s buffer, the result in ``positive``'s
    when that is contiguous, else in a new one), so the direction costs three passes over D and no new buffer for
    contiguous sums (at D in the millions each pass and each fresh buffer counts).
    """
    total = positive + negative if leak else None  # the plain sum, for the leak
    keep = uniform if uniform.dtype == positive.dtype else uniform.to(positive.dtype)
    keep = keep.to(positive.device).view(positive.shape)
    torch.lerp(positive, negative, keep, out=keep)  # positive - U m
    torch.gt(keep, 0.0, out=keep)  # K: 1.0 where P > U, else 0.0
    if positive.is_contiguous():
        kept = torch.lerp(negative, positive, keep, out=positive).view(-1)
    else:
        kept = torch.lerp(negative, positive, keep).reshape(-1)  # a fresh tensor: contiguous, a view
    if total is None:
        return kept
    return kept.mul_(1.0 - leak).add_(total.reshape(-1), alpha=leak)


def sign_sums(jacobian: Tensor) -> tuple[Tensor, Tensor]:
    """(sum_i max(g_i, 0), sum_i min(g_i, 0)) [D] from J [T, D], a task row at a time: no [T, D] temporary."""
    rows = jacobian.unbind(0)
    positive, negative = rows[0].clamp(min=0), rows[0].clamp(max=0)
    if len(rows) > 1:
        part = torch.empty_like(positive)
        for row in rows[1:]:
            positive.add_(torch.clamp(row, min=0, out=part))
            negative.add_(torch.clamp(row, max=0, out=part))
    return positive, negative


def graddrop_direction(jacobian: Tensor, uniform: Tensor, leak: float = 0.0) -> Tensor:
    """GradDrop's direction [D] from the task gradients [T, D] and the draws U [D] in [0, 1) (left unchanged)."""
    positive, negative = sign_sums(jacobian)
    return direction_from_sums(positive, negative, uniform.clone(), leak)


class GradDrop(OwnsUniformStream, GradientAggregator):
    """GradDrop (Chen et al., NeurIPS 2020): P = 1/2 (1 + sum_i g_i / sum_i |g_i|) per coordinate, U ~ U[0, 1);
    d = sum_i (l + (1 - l) M_i) g_i with M_i = [P > U][g_i > 0] + [P < U][g_i < 0].

    Args:
        schema: the problem.
        mode: ``representation`` is the paper's setting; ``parameter`` (the default of every aggregator) works too.
        leak: fraction of each task gradient passed unmasked, in [0, 1] (0: pure GradDrop, 1: the plain sum).
        seed: seeds the module's own stream of draws U (an integer in [0, 2**64)).
    """

    needs = frozenset({"jacobian"})
    order_invariant = True  # same draw U whatever the task order; P and the masks are symmetric in the tasks

    def __init__(self, schema: Schema, mode: Mode = "parameter", leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(schema, mode)
        if isinstance(leak, bool) or not isinstance(leak, (int, float)):
            raise TypeError(f"leak must be a number, got {leak!r}")
        if not (math.isfinite(leak) and 0.0 <= leak <= 1.0):
            raise ValueError(f"leak must be in [0, 1], got {leak}")
        self.leak = float(leak)
        self._init_stream(seed)

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Reseed the generator (back to the draws of a fresh instance)."""
        self.reseed()

    # ------------------------------------------------------------------------------------------ direction
    def forward(self, jacobian: Tensor) -> Tensor:
        positive, negative = sign_sums(jacobian)
        return direction_from_sums(positive, negative, self.uniform(jacobian.shape[1]), self.leak)

    def shifted(
        self,
        jacobian: Tensor | GatedJacobian,
        shift: float,
        gram_hook: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """As :meth:`GradientAggregator.shifted`; a gated Jacobian with non-negative gate weights (softmax gates)
        gives both sums from its factors (:meth:`~mtlkit.aggregation.base.GatedJacobian.sign_sums`)."""
        if not isinstance(jacobian, GatedJacobian) or float(jacobian.weights.min()) < 0.0:
            return super().shifted(jacobian, shift, gram_hook)
        positive, negative = jacobian.sign_sums()
        plain = positive + negative if shift else None  # before direction_from_sums overwrites them
        direction = direction_from_sums(positive, negative, self.uniform(jacobian.shape[1]), self.leak)
        return direction if plain is None else direction.add_(plain.reshape(-1), alpha=shift)
