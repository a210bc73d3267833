"""Verdicts against single-task baselines, on cases computed by hand."""

from __future__ import annotations

import math

import pytest

from mtlkit.analysis.verdict import (
    RULE,
    Estimate,
    delta_m,
    mtl_gain,
    outcome,
    standard_error,
    task_verdict,
)


def test_estimate_is_mean_and_sample_std() -> None:
    e = Estimate.of([1.0, 2.0, 3.0, float("nan")])
    assert (e.mean, e.n) == (2.0, 3)
    assert e.std == pytest.approx(1.0)  # sum of squares 2, / (3 - 1)
    assert Estimate.of([5.0]) == Estimate(5.0, 0.0, 1)
    with pytest.raises(ValueError, match="at least one finite"):
        Estimate.of([float("nan")])


def test_mtl_gain_sign_follows_metric_direction() -> None:
    assert mtl_gain(0.95, 0.94, higher_is_better=True) == pytest.approx(0.01)  # AUC up: better
    assert mtl_gain(0.12, 0.10, higher_is_better=False) == pytest.approx(-0.02)  # logloss up: worse
    assert mtl_gain(0.8, 1.0, higher_is_better=False) == pytest.approx(0.2)  # MSE down: better


def test_delta_m_by_hand() -> None:
    # AUC 0.90 -> 0.99: +10 %; MSE 2.0 -> 2.5: worse by 25 % -> mean (10 - 25) / 2 = -7.5
    assert delta_m([0.99, 2.5], [0.90, 2.0], [True, False]) == pytest.approx(-7.5)
    # logloss 0.5 -> 0.4 is 20 % better
    assert delta_m([0.4], [0.5], [False]) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="one entry per task"):
        delta_m([1.0], [1.0, 2.0], [True])
    with pytest.raises(ValueError, match="got 0"):
        delta_m([1.0], [0.0], [True])


def test_standard_error_of_the_difference() -> None:
    a = Estimate(0.0, 0.3, 3)
    b = Estimate(0.0, 0.4, 4)
    assert standard_error(a, b) == pytest.approx(math.sqrt(0.09 / 3 + 0.16 / 4))
    # one seed on one side: the other side's spread stands in
    assert standard_error(Estimate(0.0, 0.0, 1), b) == pytest.approx(math.sqrt(0.16 / 1 + 0.16 / 4))
    assert standard_error(Estimate(0.0, 0.0, 1), Estimate(1.0, 0.0, 1)) is None


def test_task_verdict_counts_only_beyond_two_standard_errors() -> None:
    single = Estimate(0.940, 0.002, 3)
    se = math.sqrt(2 * 0.002**2 / 3)  # 0.00163
    assert task_verdict(Estimate(0.940 + 2.1 * se, 0.002, 3), single, True) == "better"
    assert task_verdict(Estimate(0.940 + 1.9 * se, 0.002, 3), single, True) == "no change"
    assert task_verdict(Estimate(0.940 - 2.1 * se, 0.002, 3), single, True) == "worse"
    # lower is better: a higher log loss is worse, a lower one better
    loss = Estimate(0.120, 0.001, 3)
    assert task_verdict(Estimate(0.125, 0.001, 3), loss, False) == "worse"
    assert task_verdict(Estimate(0.115, 0.001, 3), loss, False) == "better"
    # single seed on both sides: no claim
    assert task_verdict(Estimate(0.99, 0.0, 1), Estimate(0.5, 0.0, 1), True) == "no change"
    # identical seeds on both sides (zero spread): any gain counts, no gain does not
    assert task_verdict(Estimate(0.5, 0.0, 2), Estimate(0.4, 0.0, 2), True) == "better"
    assert task_verdict(Estimate(0.5, 0.0, 2), Estimate(0.5, 0.0, 2), True) == "no change"


@pytest.mark.parametrize(
    ("verdicts", "main", "expected"),
    [
        ({"a": "better", "b": "better"}, None, "well done"),
        ({"a": "better", "b": "worse"}, "a", "well done"),  # main task up at the auxiliary's expense
        ({"a": "better", "b": "no change"}, "a", "well done"),
        ({"a": "better", "b": "worse"}, None, "seesaw"),
        ({"a": "worse", "b": "better"}, "a", "seesaw"),  # the main task paid
        ({"a": "better", "b": "no change"}, None, "pareto"),
        ({"a": "worse", "b": "worse"}, None, "negative transfer"),
        ({"a": "worse", "b": "no change"}, None, "negative transfer"),
        ({"a": "no change", "b": "no change"}, None, "no change"),
        ({"a": "no change", "b": "better"}, "a", "pareto"),
    ],
)
def test_outcome(verdicts: dict[str, str], main: str | None, expected: str) -> None:
    assert outcome(verdicts, main) == expected  # type: ignore[arg-type]


def test_outcome_rejects_unknown_main_task() -> None:
    with pytest.raises(ValueError, match="main task 'c'"):
        outcome({"a": "better"}, "c")


def test_rule_states_the_threshold() -> None:
    assert "+2 (is below -2) standard errors" in RULE
    assert "one seed on both sides" in RULE
