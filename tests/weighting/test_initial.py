"""Initial: each loss divided by its initial value, measured over the first batches or theoretical."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Table, Task
from mtlkit.weighting import create_weighting
from mtlkit.weighting.initial import Initial

NAN = math.nan
FEATURES = (Feature("x", "numeric"),)
TWO = Schema(FEATURES, (Task("a"), Task("b", "regression")))


def _table(schema: Schema, labels: list[list[float]], weights: list[float] | None = None) -> Table:
    n = len(labels)
    return Table(
        schema,
        torch.zeros((n, 0), dtype=torch.int64),
        torch.zeros((n, 1)),
        torch.tensor(labels, dtype=torch.float32),
        None if weights is None else torch.tensor(weights),
    )


def _step(method: Initial, losses: list[float]) -> tuple[float, torch.Tensor]:
    probe = torch.tensor(losses).requires_grad_(True)
    objective = method(probe)
    (grad,) = torch.autograd.grad(objective, probe)
    return float(objective.detach()), grad


# ---------------------------------------------------------------------------------------------- measured
def test_measured_over_one_batch_by_hand() -> None:
    method = Initial(TWO)
    objective, grad = _step(method, [2.0, 4.0])  # measured now: each term is 1
    assert objective == pytest.approx(2.0)
    torch.testing.assert_close(grad, torch.tensor([0.5, 0.25]))
    objective, grad = _step(method, [1.0, 2.0])  # 1/2 + 2/4
    assert objective == pytest.approx(1.0)
    torch.testing.assert_close(grad, torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(method.initial, torch.tensor([2.0, 4.0]))


def test_measured_over_a_warmup_then_frozen() -> None:
    method = Initial(TWO, warmup_batches=2)
    objective, grad = _step(method, [1.0, 3.0])  # not measured yet: L / stop_grad(L)
    assert objective == pytest.approx(2.0)
    torch.testing.assert_close(grad, torch.tensor([1.0, 1 / 3]))
    objective, grad = _step(method, [3.0, 5.0])  # measured: means [2, 4]
    assert objective == pytest.approx(3 / 2 + 5 / 4)
    torch.testing.assert_close(grad, torch.tensor([0.5, 0.25]))
    for losses in ([1.0, 2.0], [10.0, 0.1]):  # frozen
        _, grad = _step(method, losses)
        torch.testing.assert_close(grad, torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(method.initial, torch.tensor([2.0, 4.0]))
    assert method.seen.tolist() == [2, 2]


def test_zero_or_nonfinite_losses_are_no_measurement() -> None:
    """A task without labels in a batch has loss 0: it is measured on its first batches with a loss."""
    method = Initial(TWO, warmup_batches=2)
    objective, grad = _step(method, [0.0, 3.0])
    assert objective == pytest.approx(1.0)
    torch.testing.assert_close(grad, torch.tensor([1e12, 1 / 3]))  # 0 / eps: finite, times a zero gradient
    _step(method, [math.inf, 5.0])
    assert method.seen.tolist() == [0, 2]
    _step(method, [1.0, 100.0])
    _step(method, [3.0, 100.0])
    torch.testing.assert_close(method.initial, torch.tensor([2.0, 4.0]))
    _, grad = _step(method, [0.0, 1.0])  # measured: a later zero keeps the measured weight
    torch.testing.assert_close(grad, torch.tensor([0.5, 0.25]))


def test_nan_loss_propagates_and_is_not_measured() -> None:
    method = Initial(TWO)
    objective, _ = _step(method, [NAN, 1.0])
    assert math.isnan(objective)
    assert method.seen.tolist() == [0, 1]


def test_scale_invariance() -> None:
    c = torch.tensor([1e-3, 1e6])
    sequence = [torch.tensor(v) for v in ([0.9, 2.0], [0.7, 1.5], [0.5, 1.6])]
    plain, scaled = Initial(TWO, warmup_batches=2), Initial(TWO, warmup_batches=2)
    for losses in sequence:
        objective = plain(losses)
        torch.testing.assert_close(scaled(losses * c), objective)
        direction = plain.effective_weights(losses)
        torch.testing.assert_close(scaled.effective_weights(losses * c) * c, direction)


@pytest.mark.parametrize("losses", [[0.0, 0.0], [1e-30, 1e30], [1e30, 0.0], [1e-12, 1e12]])
def test_extreme_losses_give_finite_values_and_gradients(losses: list[float]) -> None:
    method = Initial(TWO)
    for _ in range(3):
        objective, grad = _step(method, losses)
        assert math.isfinite(objective), (losses, objective)
        assert torch.isfinite(grad).all(), (losses, grad)


def test_effective_weights_and_eval_mode_never_measure() -> None:
    method = Initial(TWO)
    torch.testing.assert_close(method.effective_weights(torch.tensor([2.0, 4.0])), torch.tensor([0.5, 0.25]))
    method.eval()
    method(torch.tensor([2.0, 4.0]))
    assert method.seen.tolist() == [0, 0]
    method.train()
    method(torch.tensor([1.0, 8.0]))
    torch.testing.assert_close(method.initial, torch.tensor([1.0, 8.0]))


def test_reset_clears_the_measurement() -> None:
    method = Initial(TWO)
    _step(method, [2.0, 4.0])
    method.reset()
    assert method.seen.tolist() == [0, 0]
    assert torch.isnan(method.initial).all()
    _step(method, [1.0, 1.0])
    torch.testing.assert_close(method.initial, torch.tensor([1.0, 1.0]))


def test_prepare_starts_a_fresh_measurement() -> None:
    method = Initial(TWO)
    _step(method, [2.0, 4.0])
    method.prepare(_table(TWO, [[1.0, 2.0], [0.0, 3.0]]))
    assert method.seen.tolist() == [0, 0]


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_state_survives_a_round_trip_into_a_fresh_instance(steps: int) -> None:
    sequence = [[2.0, 4.0], [0.0, 6.0], [4.0, 8.0], [1.0, 1.0]]
    method = Initial(TWO, warmup_batches=2)
    for losses in sequence[:steps]:
        _step(method, losses)
    fresh = Initial(TWO, warmup_batches=2)
    fresh.load_state_dict(method.state_dict())
    for losses in ([3.0, 5.0], [1.0, 2.0]):
        (obj_fresh, grad_fresh), (obj, grad) = _step(fresh, losses), _step(method, losses)
        assert obj_fresh == obj
        assert torch.equal(grad_fresh, grad)
    assert sorted(method.state_dict()) == ["initial", "seen"]


def test_keeps_the_dtype_of_the_losses() -> None:
    method = Initial(TWO)
    assert method(torch.tensor([0.5, 2.0], dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------------------------------------- theoretical
MIXED = Schema(
    FEATURES,
    (
        Task("bce"),
        Task("ce", "multiclass", num_classes=3),
        Task("mse", "regression"),
        Task("mae", "regression", loss="mae"),
        Task("huber", "regression", loss="huber"),
        Task("focal", loss="focal"),
        Task("mfocal", "multiclass", num_classes=4, loss="focal"),
    ),
)
#           bce  ce   mse  mae   huber focal mfocal
LABELS = [
    [1.0, 0.0, 1.0, -1.0, 0.5, 1.0, 0.0],
    [0.0, 2.0, NAN, 2.0, -3.0, 0.0, 1.0],
    [NAN, 2.0, 3.0, NAN, NAN, 1.0, 3.0],
    [1.0, NAN, 2.0, 10.0, 2.0, NAN, NAN],
]
WEIGHTS = [1.0, 2.0, 1.0, 3.0]


def _huber(r: float) -> float:
    return 0.5 * r * r if abs(r) <= 1 else abs(r) - 0.5


# the loss of a zero logit, weighted over the labelled rows:
THEORETICAL = [
    math.log(2),  # bce: p = 0.5 whatever the label
    math.log(3),  # ce: uniform over 3 classes
    (1 * 1 + 1 * 9 + 3 * 4) / 5,  # mse: E[y^2], rows 0, 2, 3 (w 1, 1, 3)
    (1 * 1 + 2 * 2 + 3 * 10) / 6,  # mae: E|y|, rows 0, 1, 3 (w 1, 2, 3)
    (1 * _huber(0.5) + 2 * _huber(-3.0) + 3 * _huber(2.0)) / 6,  # huber (delta 1), rows 0, 1, 3
    # focal (gamma 2, alpha 0.25) at p = 0.5: 0.25 log 2 (alpha p + (1 - alpha)(1 - p)), p = 2/4 by weight
    0.25 * math.log(2) * (0.25 * 0.5 + 0.75 * 0.5),
    (1 - 1 / 4) ** 2 * math.log(4),  # multiclass focal at a uniform softmax
]


def test_theoretical_known_without_data() -> None:
    method = Initial(MIXED, source="theoretical")
    known = method.initial.tolist()
    for i in (0, 1, 6):
        assert known[i] == pytest.approx(THEORETICAL[i])
    assert all(math.isnan(known[i]) for i in (2, 3, 4, 5))  # they need the labels
    with pytest.raises(MtlkitError, match=r"\['mse', 'mae', 'huber', 'focal'\].*call prepare\(train\) first"):
        method(torch.ones(7))
    classification = Schema(FEATURES, (Task("a"), Task("k", "multiclass", num_classes=5)))
    _objective, grad = _step(Initial(classification, source="theoretical"), [1.0, 1.0])
    torch.testing.assert_close(grad, torch.tensor([1 / math.log(2), 1 / math.log(5)]))


def test_theoretical_from_labels_with_missing_values_and_weights() -> None:
    method = Initial(MIXED, source="theoretical")
    method.prepare(_table(MIXED, LABELS, WEIGHTS))
    expected = torch.tensor(THEORETICAL)
    torch.testing.assert_close(method.initial, expected, rtol=1e-6, atol=0)
    losses = torch.tensor([0.7, 1.0, 2.0, 3.0, 0.5, 0.1, 1.2])
    objective, grad = _step(method, losses.tolist())
    assert objective == pytest.approx(float((losses / expected).sum()), rel=1e-6)
    torch.testing.assert_close(grad, 1 / expected)


def test_theoretical_state_is_kept_by_reset_and_travels_in_checkpoints() -> None:
    method = Initial(MIXED, source="theoretical")
    method.prepare(_table(MIXED, LABELS, WEIGHTS))
    before = method.initial.clone()
    method.reset()
    assert torch.equal(method.initial, before)
    fresh = Initial(MIXED, source="theoretical")
    fresh.load_state_dict(method.state_dict())
    losses = [0.7, 1.0, 2.0, 3.0, 0.5, 0.1, 1.2]
    (obj_fresh, grad_fresh), (obj, grad) = _step(fresh, losses), _step(method, losses)
    assert obj_fresh == obj
    assert torch.equal(grad_fresh, grad)


def test_theoretical_scales_with_regression_labels() -> None:
    schema = Schema(FEATURES, (Task("mse", "regression"), Task("mae", "regression", loss="mae")))
    labels = [[1.0, -2.0], [3.0, NAN], [NAN, 4.0]]
    plain, scaled = Initial(schema, source="theoretical"), Initial(schema, source="theoretical")
    plain.prepare(_table(schema, labels))
    scaled.prepare(_table(schema, [[10 * v for v in row] for row in labels]))
    torch.testing.assert_close(scaled.initial / plain.initial, torch.tensor([100.0, 10.0]))


def test_theoretical_degenerate_and_unlabelled_tasks(caplog: pytest.LogCaptureFixture) -> None:
    schema = Schema(FEATURES, (Task("zero", "regression"), Task("empty", "regression"), Task("bce")))
    method = Initial(schema, source="theoretical")
    with caplog.at_level(logging.WARNING):
        method.prepare(_table(schema, [[0.0, NAN, NAN], [0.0, NAN, NAN]]))
    assert "'zero' has a reference loss of 0" in caplog.text
    assert "'empty' has no labelled row" in caplog.text
    assert (
        "'bce' has no labelled row in the training data, so its reference loss cannot be measured; it is set to 0.693147"
        in caplog.text
    )  # known without labels
    torch.testing.assert_close(method.initial, torch.tensor([0.0, 1.0, math.log(2)]))
    grad = method.effective_weights(torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(grad, torch.tensor([1e12, 1.0, 1 / math.log(2)]))


# ---------------------------------------------------------------------------------------------- construction
def test_repr_and_registry() -> None:
    assert repr(Initial(TWO)) == "Initial(source='measured', warmup_batches=1, eps=1e-12)"
    made = create_weighting("initial", TWO, source="theoretical", warmup_batches=3)
    assert repr(made) == "Initial(source='theoretical', warmup_batches=3, eps=1e-12)"
    assert Initial.scale_invariant
    assert Initial.order_invariant


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"source": "meassured"}, "source must be 'measured' or 'theoretical', got 'meassured'"),
        ({"warmup_batches": 0}, "warmup_batches must be an integer >= 1, got 0"),
        ({"warmup_batches": 1.5}, "warmup_batches must be an integer >= 1, got 1.5"),
        ({"warmup_batches": True}, "warmup_batches must be an integer >= 1, got True"),
        ({"eps": 0.0}, "eps must be a finite number > 0, got 0.0"),
        ({"eps": math.nan}, "eps must be a finite number > 0, got nan"),
    ],
)
def test_bad_hyperparameters_are_rejected_with_their_value(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Initial(TWO, **params)  # type: ignore[arg-type]
    with pytest.raises(MtlkitError, match="balancer 'initial': " + message):
        create_weighting("initial", TWO, **params)
