"""GeneralizedMean: the power mean of the losses, each normalised by its initial value.

Source: Su Jianlin, "Multi-task learning notes (1): in the name of the loss" (多任务学习漫谈（一）：以损失之名),
2022, https://spaces.ac.cn/archives/8870, section "generalised mean" (广义平均). With ``r_i = L_i / L_i^(0)``:

    M_gamma = ((1/T) sum_i r_i^gamma)^(1/gamma),   M_0 = exp((1/T) sum_i log r_i),   objective = T M_gamma

The document observes that equal weights are the arithmetic mean of the losses (gamma = 1) and that
``sum_i L_i / stop_grad(L_i)`` (:mod:`~mtlkit.weighting.realtime`) is, in gradient direction, their geometric
mean (gamma = 0; also the "geometric loss strategy" of Chennupati et al., CVPRW 2019), and proposes the whole
family, one hyperparameter instead of T weights. ``M_gamma`` increases with gamma, from the smallest ratio
(gamma -> -inf) to the largest (gamma -> +inf): a larger gamma puts the weight on the tasks whose loss fell
least. Gamma may be any finite real number, as in the document; gamma = 0 is computed as the geometric mean
itself, not as a small gamma.

Choices (see :class:`GeneralizedMean`): the document averages the raw losses; here each loss is first divided by
its measured initial value (:mod:`~mtlkit.weighting.initial`'s "measured" source, the document's own
non-dimensionalisation). The raw geometric mean is scale invariant in direction, but the raw power mean with
gamma != 0 is not (a loss 1000 times larger dominates it); on the ratios, every gamma is. The objective is
``T M_gamma`` rather than ``M_gamma``: the same direction, with gamma = 1 exactly :class:`Initial` and the step
size of the other sum-based methods.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlkit.schema import Schema
from mtlkit.weighting.initial import NormalizedByInitial


def power_mean_total(ratios: Tensor, gamma: float) -> Tensor:
    """``n M_gamma`` of the n nonzero entries of ``ratios`` [T]: zero entries are left out (zero gradient), and
    the result is 0 (zero gradients) when every entry is 0. ``gamma == 0`` is the geometric mean.

    Computed in log space with the largest term factored out: ``r^gamma`` never overflows nor underflows to a zero
    sum, so values and gradients stay finite for any positive finite ratios and any finite gamma.
    """
    present = ratios.detach() != 0
    n = present.sum()
    count = n.clamp_min(1).to(ratios.dtype)
    log_r = torch.log(torch.where(present, ratios, torch.ones_like(ratios)))  # log 1 = 0 where absent
    if gamma == 0.0:
        log_mean = log_r.sum() / count
    else:
        # log mean_i exp(z_i) = m + log1p(mean_i expm1(z_i - m)), m = max_i z_i: no overflow, and accurate
        # for a small |gamma| (z_i - m near 0), where exp then log would round away the differences that the
        # division by gamma magnifies (gamma = 1e-6 in float32 was 8% off the geometric mean with exp / log).
        z = gamma * log_r
        shift = torch.where(present, z.detach(), -math.inf).max()
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        terms = torch.where(present, torch.expm1(torch.where(present, z - shift, 0.0)), 0.0)
        log_mean = (shift + torch.log1p(terms.sum() / count)) / gamma
    return torch.where(n > 0, count * torch.exp(log_mean), (ratios * 0).sum())


class GeneralizedMean(NormalizedByInitial):
    """T M_gamma(L_1 / L_1^(0), ..., L_T / L_T^(0)), the power mean of the loss ratios (Su, 2022).

    ``L_i^(0)`` is measured as in :class:`~mtlkit.weighting.initial.Initial` (source "measured": the mean over
    each task's first ``warmup_batches`` batches with a positive loss; until then the current loss, detached).
    Effective weight of task i: ``(r_i / M_gamma)^(gamma - 1) / L_i^(0)``: with gamma = 1 it is ``1 / L_i^(0)``
    (:class:`Initial`); with gamma = 0 it is ``M_0 / L_i``, the direction of :class:`RealTime`.

    A task whose loss is exactly 0 (no labelled row in the batch: ``mtlkit.losses.task_losses`` returns 0) is
    left out of that step's mean, and T becomes the number of tasks present: otherwise one sparse task would make
    the geometric mean (and every power mean with gamma <= 0) zero, and with it every task's gradient.

    Scale invariant for every gamma: multiplying L_i by c multiplies ``L_i^(0)`` by c and leaves r_i unchanged.

    Args:
        gamma: the exponent, any finite real number: 1 the arithmetic mean, 0 the geometric mean, -1 the harmonic
            mean; large values approach the largest ratio, very negative ones the smallest.
        warmup_batches: batches, per task, averaged into ``L^(0)`` (>= 1).
        eps: floor of ``L^(0)`` (> 0).
    """

    def __init__(
        self, schema: Schema, gamma: float = 1.0, warmup_batches: int = 1, eps: float = 1e-12
    ) -> None:
        super().__init__(schema, "measured", warmup_batches, eps)
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not math.isfinite(gamma):
            raise ValueError(
                f"gamma must be a finite number (for the largest or smallest loss use a large +-gamma), got {gamma!r}"
            )
        self.gamma = float(gamma)

    def combine(self, ratios: Tensor) -> Tensor:
        return power_mean_total(ratios, self.gamma)
