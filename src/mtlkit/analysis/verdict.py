"""Verdicts on multi-task runs against single-task baselines: MTL gain, Delta_m and the outcome of the seeds.

* :func:`mtl_gain`: the PLE paper's MTL gain (Tang et al., RecSys 2020, eq. 11): ``M_MTL - M_single`` for a
  metric where higher is better (AUC), ``M_single - M_MTL`` where lower is better (log loss, MSE); positive is
  always an improvement.
* :func:`delta_m`: the relative multi-task performance (Maninis et al., CVPR 2019; Vandenhende et al., TPAMI
  2021): ``Delta_m = 1/T sum_i (-1)^{l_i} (M_mtl,i - M_single,i) / M_single,i x 100`` with ``l_i = 1`` when lower
  is better for task i; positive = better than single-task on average.
* :func:`task_verdict`: "better" / "worse" / "no change" for one task, counting a gain only beyond seed noise
  (:data:`RULE`).
* :func:`outcome`: the four outcomes of the seeds ("多任务学习的4种可能效果") plus "no change".

The seed-noise rule (:data:`RULE`): the gain of the seed means must exceed ``k = 2`` standard errors of the
difference of the means, ``se = sqrt(s_a^2/n_a + s_b^2/n_b)`` with ``s`` the sample standard deviation over seeds
(ddof 1). With a single seed on one side, that side's spread is unknown and the other side's ``s`` stands in for
it (equal spread assumed: ``se = s sqrt(1/n_a + 1/n_b)``). With a single seed on both sides there is no noise
estimate at all, and no claim is made: the verdict is "no change" (run two or more seeds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["better", "worse", "no change"]
Outcome = Literal["well done", "pareto", "seesaw", "negative transfer", "no change"]

#: How many standard errors of the difference a gain must exceed to count.
NOISE_MULTIPLIER = 2.0

RULE = (
    "a task counts as better (worse) when its MTL gain over the single-task baseline, computed on the means over "
    "seeds, exceeds +2 (is below -2) standard errors of the difference of the means, "
    "se = sqrt(s_mtl^2/n_mtl + s_single^2/n_single) with s the sample standard deviation over seeds; with one "
    "seed on one side the other side's s stands in for it; with one seed on both sides there is no noise "
    "estimate and the verdict is 'no change'. Outcome: well done = every task better, or the main task better "
    "(whatever the others do); pareto = none worse and at least one better; seesaw = some better and some "
    "worse; negative transfer = none better and at least one worse (all worse, or worse and no change); "
    "no change = no task beyond noise."
)


@dataclass(frozen=True)
class Estimate:
    """Mean, sample standard deviation (ddof 1; 0.0 for a single value) and count of a metric over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Estimate:
        """The estimate of the finite ``values`` (NaN values, e.g. of failed runs, are left out)."""
        xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not xs:
            raise ValueError("an estimate needs at least one finite value, got none")
        n = len(xs)
        mean = math.fsum(xs) / n
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
        return cls(mean, std, n)


def mtl_gain(m_mtl: float, m_single: float, higher_is_better: bool) -> float:
    """PLE paper eq. 11: ``M_MTL - M_single`` if higher is better, else ``M_single - M_MTL`` (> 0 = better)."""
    return m_mtl - m_single if higher_is_better else m_single - m_mtl


def delta_m(mtl: Sequence[float], single: Sequence[float], higher_is_better: Sequence[bool]) -> float:
    """Maninis et al. 2019: ``mean_i (-1)^{l_i} (M_mtl,i - M_single,i) / M_single,i x 100`` in percent.

    ``l_i = 1`` (the sign flips) where lower is better, so a positive value always means the multi-task model
    beats the single-task baselines on average. A baseline metric of 0 has no relative change: ValueError.
    """
    if not (len(mtl) == len(single) == len(higher_is_better)):
        raise ValueError(
            f"mtl, single and higher_is_better need one entry per task, got {len(mtl)}, {len(single)} "
            f"and {len(higher_is_better)}"
        )
    if not mtl:
        raise ValueError("delta_m needs at least one task, got none")
    terms = []
    for m, s, higher in zip(mtl, single, higher_is_better, strict=True):
        if s == 0:
            raise ValueError(f"delta_m divides by the single-task metric, got 0 (multi-task value {m})")
        terms.append(mtl_gain(m, s, higher) / abs(s))
    return 100.0 * math.fsum(terms) / len(terms)


def standard_error(mtl: Estimate, single: Estimate) -> float | None:
    """Standard error of the difference of the two means (see :data:`RULE`); None without a noise estimate."""
    if mtl.n < 1 or single.n < 1:
        raise ValueError(f"estimates need n >= 1, got {mtl.n} and {single.n}")
    if mtl.n == 1 and single.n == 1:
        return None
    s_mtl = mtl.std if mtl.n > 1 else single.std
    s_single = single.std if single.n > 1 else mtl.std
    return math.sqrt(s_mtl**2 / mtl.n + s_single**2 / single.n)


def task_verdict(
    mtl: Estimate, single: Estimate, higher_is_better: bool, k: float = NOISE_MULTIPLIER
) -> Verdict:
    """ "better" when the gain exceeds ``k`` standard errors, "worse" when it is below ``-k`` of them, else
    "no change" (always "no change" with a single seed on both sides: there is no noise estimate)."""
    if not k >= 0:
        raise ValueError(f"k must be >= 0, got {k}")
    se = standard_error(mtl, single)
    if se is None:
        return "no change"
    gain = mtl_gain(mtl.mean, single.mean, higher_is_better)
    if gain > k * se:
        return "better"
    if gain < -k * se:
        return "worse"
    return "no change"


def outcome(verdicts: Mapping[str, Verdict], main_task: str | None = None) -> Outcome:
    """The outcome of a multi-task model from its per-task verdicts (seeds, "多任务学习的4种可能效果").

    In order: "well done" when every task is better, or when ``main_task`` is declared and better (the
    auxiliary tasks may pay for it); "pareto" when none is worse and at least one is better; "seesaw" when some
    are better and some worse; "negative transfer" when none is better and at least one is worse (all worse,
    or some worse and the rest unchanged: nothing was gained and something was lost); "no change" otherwise.
    """
    if not verdicts:
        raise ValueError("outcome needs the verdict of at least one task, got none")
    if main_task is not None and main_task not in verdicts:
        raise ValueError(f"main task {main_task!r} has no verdict; tasks are {sorted(verdicts)}")
    values = list(verdicts.values())
    better = values.count("better")
    worse = values.count("worse")
    if better == len(values) or (main_task is not None and verdicts[main_task] == "better"):
        return "well done"
    if better and not worse:
        return "pareto"
    if better and worse:
        return "seesaw"
    if worse:
        return "negative transfer"
    return "no change"


__all__ = [
    "NOISE_MULTIPLIER",
    "RULE",
    "Estimate",
    "Outcome",
    "Verdict",
    "delta_m",
    "mtl_gain",
    "outcome",
    "standard_error",
    "task_verdict",
]
