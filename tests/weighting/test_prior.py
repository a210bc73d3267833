"""Prior: each loss divided by the loss of the label prior, computed from a small hand-made training Table."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Table, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.prior import Prior, constant_predictor_loss

NAN = math.nan
FEATURES = (Feature("x", "numeric"),)
#: binary (bce), regression (mse), multiclass (ce, K = 3), regression (mae)
SCHEMA = Schema(
    FEATURES,
    (
        Task("a"),
        Task("b", "regression"),
        Task("c", "multiclass", num_classes=3),
        Task("d", "regression", loss="mae"),
    ),
)
LABELS = [
    [1.0, 1.0, 0.0, 1.0],
    [0.0, NAN, 2.0, 2.0],
    [NAN, 3.0, 2.0, 10.0],
    [1.0, 5.0, NAN, NAN],
    [0.0, 2.0, 1.0, NAN],
]
WEIGHTS = [1.0, 2.0, 1.0, 1.0, 3.0]


def _table(schema: Schema, labels: list[list[float]], weights: list[float] | None = None) -> Table:
    n = len(labels)
    return Table(
        schema,
        torch.zeros((n, 0), dtype=torch.int64),
        torch.zeros((n, 1)),
        torch.tensor(labels, dtype=torch.float32),
        None if weights is None else torch.tensor(weights),
    )


def _entropy(*p: float) -> float:
    return -sum(q * math.log(q) for q in p if q > 0)


# Hand computation, labelled rows only, weighted:
#   a: rows 0,1,3,4 (w 1,2,1,3), positives 0 and 3: p = 2/7                       -> H(2/7)
#   b: rows 0,2,3,4 (w 1,1,1,3), y 1,3,5,2: mean 15/6 = 2.5, variance 9.5/6
#   c: rows 0,1,2,4 (w 1,2,1,3), classes 0,2,2,1: frequencies [1, 3, 3] / 7        -> their entropy
#   d: rows 0,1,2 (w 1,2,1), y 1,2,10: weighted median 2, E|y - 2| = (1 + 0 + 8) / 4 = 2.25
EXPECTED = [_entropy(2 / 7, 5 / 7), 9.5 / 6, _entropy(1 / 7, 3 / 7, 3 / 7), 2.25]


def _prepared(weights: list[float] | None = WEIGHTS, **params: float) -> Prior:
    method = Prior(SCHEMA, **params)
    method.prepare(_table(SCHEMA, LABELS, weights))
    return method


def test_priors_by_hand_with_missing_labels_and_weights() -> None:
    method = _prepared()
    torch.testing.assert_close(method.prior, torch.tensor(EXPECTED), rtol=1e-6, atol=0)


def test_priors_without_weights() -> None:
    method = _prepared(weights=None)
    expected = [
        _entropy(0.5, 0.5),  # a: 1, 0, 1, 0
        np.var([1.0, 3.0, 5.0, 2.0]),  # b
        _entropy(1 / 4, 1 / 4, 2 / 4),  # c: 0, 2, 2, 1
        (1 + 0 + 8) / 3,  # d: median 2
    ]
    torch.testing.assert_close(method.prior, torch.tensor(expected, dtype=torch.float32), rtol=1e-6, atol=0)


def test_prepare_from_a_dataframe_with_sample_weights() -> None:
    schema = Schema(SCHEMA.features, SCHEMA.tasks, sample_weight="w")
    frame = pd.DataFrame(LABELS, columns=list(SCHEMA.task_names))
    frame.insert(0, "x", np.arange(len(LABELS), dtype=float))
    frame["w"] = WEIGHTS
    method = Prior(schema)
    method.prepare(Table.from_pandas(frame, schema))
    torch.testing.assert_close(method.prior, torch.tensor(EXPECTED), rtol=1e-6, atol=0)


def test_objective_and_effective_weights_by_hand() -> None:
    method = _prepared()
    losses = torch.tensor([0.5, 3.0, 1.0, 4.5])
    prior = torch.tensor(EXPECTED)
    torch.testing.assert_close(method(losses), (losses / prior).sum())
    torch.testing.assert_close(method.effective_weights(losses), 1 / prior)
    # b: 3 / (9.5 / 6); d: 4.5 / 2.25 = 2
    assert float(method.effective_weights(losses)[3]) == pytest.approx(1 / 2.25)


def test_task_order_follows_the_schema_not_the_table() -> None:
    order = [2, 0, 3, 1]
    permuted = Schema(FEATURES, tuple(SCHEMA.tasks[i] for i in order))
    method = Prior(permuted)
    method.prepare(_table(SCHEMA, LABELS, WEIGHTS))  # columns in SCHEMA's order: found by task name
    torch.testing.assert_close(method.prior, torch.tensor(EXPECTED)[order], rtol=1e-6, atol=0)


def test_huber_prior_is_the_loss_of_the_huber_location() -> None:
    schema = Schema(FEATURES, (Task("h", "regression", loss="huber"),))
    method = Prior(schema)
    method.prepare(_table(schema, [[0.0], [0.0], [10.0], [NAN]]))
    # the location solves 2 clip(c, -1, 1) + clip(c - 10, -1, 1) = 0: c = 0.5;
    # losses 0.5 * 0.5^2 (twice) and 1 * (9.5 - 0.5) = 9: mean (0.25 + 9) / 3
    assert float(method.prior[0]) == pytest.approx((0.25 + 9.0) / 3, rel=1e-6)
    # it is below the Huber loss of the mean (10/3) and of the median (0)
    assert (0.25 + 9.0) / 3 < (2 * (10 / 3 - 0.5) + (20 / 3 - 0.5)) / 3
    assert (0.25 + 9.0) / 3 < 9.5 / 3


def test_focal_priors_are_the_focal_loss_of_the_label_frequencies() -> None:
    schema = Schema(FEATURES, (Task("f", loss="focal"), Task("m", "multiclass", num_classes=3, loss="focal")))
    labels = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 2.0], [NAN, 2.0]]
    method = Prior(schema)
    method.prepare(_table(schema, labels))
    p, gamma, alpha = 0.25, 2.0, 0.25  # mtlkit.losses.Focal defaults
    binary = p * alpha * (1 - p) ** gamma * -math.log(p) + (1 - p) * (1 - alpha) * p**gamma * -math.log(1 - p)
    freq = [0.2, 0.4, 0.4]
    multiclass = sum(f * (1 - f) ** gamma * -math.log(f) for f in freq)
    torch.testing.assert_close(method.prior, torch.tensor([binary, multiclass]), rtol=1e-6, atol=0)


def test_constant_predictor_loss_of_a_zero_logit() -> None:
    labels = torch.tensor([1.0, 0.0, NAN, 1.0])
    assert constant_predictor_loss(Task("a"), labels, predictor="zero") == pytest.approx(math.log(2))
    y = torch.tensor([1.0, -3.0, NAN])
    assert constant_predictor_loss(Task("r", "regression"), y, predictor="zero") == pytest.approx(5.0)
    assert constant_predictor_loss(Task("r", "regression"), torch.tensor([NAN, NAN])) is None
    assert constant_predictor_loss(Task("r", "regression"), y, torch.tensor([0.0, 0.0, 1.0])) is None


def test_multiclass_labels_out_of_range_are_an_error() -> None:
    task = Task("c", "multiclass", num_classes=3)
    with pytest.raises(MtlkitError, match=r"task 'c': multiclass labels must be whole numbers 0..2, got 3"):
        constant_predictor_loss(task, torch.tensor([0.0, 3.0, NAN]))


def test_forward_before_prepare_is_an_error() -> None:
    with pytest.raises(MtlkitError, match=r"call prepare\(train\) first \(the Trainer does it\)"):
        Prior(SCHEMA)(torch.ones(4))


def test_degenerate_prior_is_floored_at_eps_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    schema = Schema(FEATURES, (Task("same"), Task("flat", "regression"), Task("ok")))
    labels = [[1.0, 2.0, 0.0], [1.0, 2.0, 1.0], [NAN, NAN, 1.0]]
    method = Prior(schema, eps=1e-6)
    with caplog.at_level(logging.WARNING, logger="mtlkit.weighting.prior"):
        method.prepare(_table(schema, labels))
    assert float(method.prior[0]) < 1e-20  # predicting p = 1 is (almost) perfect
    assert float(method.prior[1]) == 0.0  # variance of a constant
    warned = caplog.text
    assert "'same'" in warned
    assert "'flat'" in warned
    assert "'ok'" not in warned
    assert "eps=1e-06" in warned
    losses = torch.tensor([0.3, 0.2, 0.5])
    objective, weights = method(losses), method.effective_weights(losses)
    assert torch.isfinite(objective)
    torch.testing.assert_close(weights[:2], torch.full((2,), 1e6))


def test_task_without_labels_is_left_unscaled_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    schema = Schema(FEATURES, (Task("a"), Task("empty", "regression")))
    method = Prior(schema)
    with caplog.at_level(logging.WARNING, logger="mtlkit.weighting.prior"):
        method.prepare(_table(schema, [[1.0, NAN], [0.0, NAN]]))
    assert "'empty' has no labelled row" in caplog.text
    assert "it is set to 1\n" in caplog.text
    torch.testing.assert_close(method.prior, torch.tensor([math.log(2), 1.0]))


@pytest.mark.parametrize(("loss", "power"), [("mse", 2), ("mae", 1)])
def test_scaling_the_labels_leaves_the_direction_unchanged(loss: str, power: int) -> None:
    schema = Schema(FEATURES, (Task("a"), Task("r", "regression", loss=loss)))
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 50), rng.normal(1.0, 2.0, 50)], 1)
    labels[::5, 1] = NAN
    c = 1000.0
    plain, scaled = Prior(schema), Prior(schema)
    plain.prepare(_table(schema, labels.tolist()))
    scaled.prepare(_table(schema, (labels * [1.0, c]).tolist()))
    assert float(scaled.prior[1] / plain.prior[1]) == pytest.approx(c**power, rel=1e-5)
    losses = torch.tensor([0.6, 3.0])
    factor = torch.tensor([1.0, c**power])
    direction = plain.effective_weights(losses)
    direction_scaled = scaled.effective_weights(losses * factor) * factor
    torch.testing.assert_close(direction_scaled / direction_scaled.sum(), direction / direction.sum())


def test_state_survives_a_round_trip_and_reset_keeps_the_prior() -> None:
    method = _prepared()
    fresh = Prior(SCHEMA)  # never prepared: the checkpoint carries the prior
    fresh.load_state_dict(method.state_dict())
    losses = torch.tensor([0.5, 3.0, 1.0, 4.5])
    assert torch.equal(fresh(losses), method(losses))
    method.reset()  # the prior describes the data, not the run
    torch.testing.assert_close(method.prior, torch.tensor(EXPECTED), rtol=1e-6, atol=0)
    assert list(method.state_dict()) == ["prior"]


def test_float64_losses() -> None:
    out = _prepared()(torch.tensor([0.5, 3.0, 1.0, 4.5], dtype=torch.float64))
    assert out.dtype == torch.float64


def test_repr_and_registry() -> None:
    assert repr(Prior(SCHEMA)) == "Prior(eps=1e-08)"
    assert repr(create_weighting("prior", SCHEMA, eps=0.001)) == "Prior(eps=0.001)"
    assert Prior.scale_invariant
    assert Prior.order_invariant


@pytest.mark.parametrize("eps", [0, -1.0, math.nan, math.inf, False, None])
def test_bad_eps_is_rejected_with_its_value(eps: object) -> None:
    with pytest.raises(ValueError, match=rf"eps must be a finite number > 0, got {eps!r}"):
        Prior(SCHEMA, eps=eps)  # type: ignore[arg-type]
    with pytest.raises(MtlkitError, match=r"balancer 'prior': eps must be"):
        create_weighting("prior", SCHEMA, eps=eps)
