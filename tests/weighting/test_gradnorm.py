"""GradNorm: values by hand, the split of gradients between the model and w, renormalisation, the pull toward
equal gradient norms, state, and a short training run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.backward import mtl_backward
from mtlkit.data.datasets import load_dataset
from mtlkit.models import create_model
from mtlkit.training.trainer import Trainer, TrainingOptions
from mtlkit.weighting import create_weighting
from mtlkit.weighting.gradnorm import GradNorm

TWO = Schema((Feature("x", "numeric"),), (Task("a", "regression"), Task("b", "regression")))
THREE = Schema((Feature("x", "numeric"),), (Task("a"), Task("b", "regression"), Task("c")))


def _set_weights(method: GradNorm, values: list[float]) -> None:
    with torch.no_grad():
        method.task_weights.copy_(torch.tensor(values))


def test_hyperparameters() -> None:
    assert repr(GradNorm(TWO)) == "GradNorm(alpha=1.5)"
    assert repr(create_weighting("gradnorm", TWO, alpha=0)) == "GradNorm(alpha=0.0)"
    assert GradNorm.needs == frozenset({"losses", "shared_grad_norms"})
    with pytest.raises(ValueError, match=r"alpha must be finite and >= 0, got -1\.0"):
        GradNorm(TWO, alpha=-1.0)
    with pytest.raises(MtlkitError, match="alpha"):
        create_weighting("gradnorm", TWO, alpha=float("nan"))


@pytest.mark.parametrize(
    ("alpha", "expected_lgrad"),
    [
        # r = [2/3, 4/3], G = [2, 1.5], Gbar = 1.75, target = 1.75 r^alpha
        (1.0, abs(2 - 7 / 6) + abs(1.5 - 7 / 3)),  # 5/6 + 5/6
        (2.0, abs(2 - 7 / 9) + abs(1.5 - 28 / 9)),  # 11/9 + 29/18
        (0.0, abs(2 - 1.75) + abs(1.5 - 1.75)),  # equal norms asked for
    ],
    ids=["alpha1", "alpha2", "alpha0"],
)
def test_values_by_hand(alpha: float, expected_lgrad: float) -> None:
    method = GradNorm(TWO, alpha=alpha)
    method(torch.tensor([2.0, 1.0]))  # first step: L(0) = [2, 1], no norms observed, no L_grad
    torch.testing.assert_close(method.initial_losses, torch.tensor([2.0, 1.0]))
    _set_weights(method, [0.5, 1.5])  # sums to T = 2: renormalisation leaves it
    method.observe_grad_norms(torch.tensor([4.0, 1.0]))
    losses = torch.tensor([1.0, 1.0], requires_grad=True)  # Ltilde = [0.5, 1], mean 0.75
    objective = method(losses)
    weighted = 0.5 * 1.0 + 1.5 * 1.0
    assert float(objective.detach()) == pytest.approx(weighted + expected_lgrad, rel=1e-6)
    objective.backward()
    # the losses see only the (constant) weights; w sees only L_grad: sign(G_i - target_i) * n_i
    torch.testing.assert_close(losses.grad, torch.tensor([0.5, 1.5]))
    target = 1.75 * torch.tensor([2 / 3, 4 / 3]) ** alpha
    expected_w_grad = torch.sign(torch.tensor([2.0, 1.5]) - target) * torch.tensor([4.0, 1.0])
    assert method.task_weights.grad is not None
    torch.testing.assert_close(method.task_weights.grad, expected_w_grad)
    lgrad = method.grad_loss(torch.tensor([1.0, 1.0]), torch.tensor([4.0, 1.0]))
    assert float(lgrad.detach()) == pytest.approx(expected_lgrad, rel=1e-6)


def test_norms_belong_to_one_step() -> None:
    method = GradNorm(TWO)
    method(torch.tensor([1.0, 1.0]))
    method.observe_grad_norms(torch.tensor([3.0, 1.0]))
    with_lgrad = method(torch.tensor([1.0, 1.0])).detach()
    without = method(
        torch.tensor([1.0, 1.0])
    ).detach()  # no norms observed for this step: the weighted sum only
    assert float(with_lgrad) > 2.0
    assert float(without) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="one gradient norm per task"):
        method.observe_grad_norms(torch.ones(3))


def test_tasks_not_measured_yet_count_as_untrained() -> None:
    method = GradNorm(THREE, alpha=1.0)
    method(torch.tensor([0.0, 4.0, 2.0]))  # task a: no labels in the first batch
    assert math.isnan(float(method.initial_losses[0]))
    rates = method.inverse_training_rates(torch.tensor([0.3, 2.0, 2.0]))  # Ltilde = [1, 0.5, 1]
    torch.testing.assert_close(rates, torch.tensor([1.0, 0.5, 1.0]) / 2.5 * 3)
    method(torch.tensor([0.6, 2.0, 2.0]))
    torch.testing.assert_close(method.initial_losses, torch.tensor([0.6, 4.0, 2.0]))


class TinyModel(nn.Module):
    """shared h = tanh(x W), two linear heads: losses [100 * mse_a, mse_b] (task a's loss 100 times larger)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.heads = nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)])

    def losses(self, x: Tensor, y: Tensor, scale: float = 100.0) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.body(x))
        parts = [((head(h).squeeze(-1) - y[:, i]) ** 2).mean() for i, head in enumerate(self.heads)]
        return torch.stack([scale * parts[0], parts[1]]), h


def test_model_gradient_is_that_of_the_weighted_sum_with_constant_weights() -> None:
    torch.manual_seed(0)
    model = TinyModel()
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    method = GradNorm(TWO)
    losses, h = model.losses(x, y)
    mtl_backward(losses, model, method, shared=h)  # first step: measures L(0)
    _set_weights(method, [0.3, 1.7])
    model.zero_grad()
    method.zero_grad()
    losses, h = model.losses(x, y)
    expected = torch.autograd.grad(
        0.3 * losses[0] + 1.7 * losses[1], list(model.parameters()), retain_graph=True
    )
    mtl_backward(losses, model, method, shared=h)
    for p, g in zip(model.parameters(), expected, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)  # L_grad leaks nothing into the model
    assert method.task_weights.grad is not None
    assert method.task_weights.grad.abs().sum() > 0


def test_renormalisation_to_sum_t() -> None:
    method = GradNorm(THREE)
    _set_weights(method, [3.0, 1.0, 0.5])  # as an optimizer step may leave them
    torch.testing.assert_close(method.weights(), torch.tensor([3.0, 1.0, 0.5]) * 3 / 4.5)
    torch.testing.assert_close(method.task_weights.detach(), torch.tensor([3.0, 1.0, 0.5]))  # no side effect
    torch.testing.assert_close(method.effective_weights(torch.ones(3)), method.weights())
    assert math.isnan(float(method.initial_losses[0]))  # effective_weights measured nothing
    losses = torch.ones(3, requires_grad=True)
    method(losses).backward()
    torch.testing.assert_close(method.task_weights.detach(), torch.tensor([2.0, 2 / 3, 1 / 3]))
    torch.testing.assert_close(losses.grad, torch.tensor([2.0, 2 / 3, 1 / 3]))
    _set_weights(method, [-0.5, 1.0, 1.0])  # a weight pushed below 0 is floored, never negative
    method(torch.ones(3))
    assert float(method.task_weights.detach().min()) > 0
    assert float(method.task_weights.detach().sum()) == pytest.approx(3.0)


def test_renormalised_after_each_optimizer_step() -> None:
    torch.manual_seed(0)
    model = TinyModel()
    method = GradNorm(TWO)
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=0.05)
    x, y = torch.randn(32, 4), torch.randn(32, 2)
    for _ in range(5):
        optimizer.zero_grad()
        losses, h = model.losses(x, y)
        mtl_backward(losses, model, method, shared=h)
        assert float(method.task_weights.detach().sum()) == pytest.approx(2.0, rel=1e-6)  # used normalised
        optimizer.step()
    assert float(method.task_weights.detach().sum()) != pytest.approx(
        2.0, rel=1e-6
    )  # stepped, not yet renormalised
    assert float(method.weights().sum()) == pytest.approx(2.0, rel=1e-6)


def test_alpha_zero_pulls_gradient_norms_to_equality() -> None:
    torch.manual_seed(0)
    model = TinyModel()
    x, y = torch.randn(64, 4), torch.randn(64, 2)
    method = GradNorm(TWO, alpha=0.0)
    steps = 300
    optimizer = torch.optim.Adam(method.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    observed: list[Tensor] = []
    observe = method.observe_grad_norms

    def record(norms: Tensor) -> None:
        observed.append(norms)
        observe(norms)

    method.observe_grad_norms = record  # type: ignore[method-assign]
    ratios = []
    for step in range(steps + 1):
        optimizer.zero_grad()
        model.zero_grad()
        losses, h = model.losses(x, y)
        mtl_backward(losses, model, method, shared=h)  # the model is not stepped: its norms stay fixed
        g = method.task_weights.detach() * observed[-1]
        ratios.append(float(g[0] / g[1]))
        if step < steps:
            optimizer.step()
            schedule.step()
    assert ratios[0] > 50  # the 100 times larger loss has the much larger gradient
    assert 0.9 < ratios[-1] < 1.1, ratios[-20:]
    assert float(method.weights()[0]) < 0.1  # the large loss lost weight to the small one


def test_state_dict_round_trip() -> None:
    first = GradNorm(THREE, alpha=0.7)
    first(torch.tensor([1.0, 5.0, 0.5]))
    _set_weights(first, [1.4, 0.4, 1.2])
    state = {k: v.clone() for k, v in first.state_dict().items()}
    assert set(state) == {"task_weights", "initial_losses"}
    second = GradNorm(THREE, alpha=0.7)
    second.load_state_dict(state)
    results = []
    for method in (first, second):
        method.observe_grad_norms(torch.tensor([0.2, 3.0, 1.0]))
        losses = torch.tensor([0.8, 2.0, 0.45], requires_grad=True)
        objective = method(losses)
        objective.backward()
        assert method.task_weights.grad is not None
        results.append((objective.detach(), losses.grad, method.task_weights.grad.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reset() -> None:
    method = GradNorm(TWO)
    method(torch.tensor([1.0, 2.0]))
    _set_weights(method, [0.2, 1.8])
    method.observe_grad_norms(torch.ones(2))
    method.reset()
    torch.testing.assert_close(method.task_weights.detach(), torch.ones(2))
    assert torch.isnan(method.initial_losses).all()
    assert float(method(torch.tensor([1.0, 1.0])).detach()) == pytest.approx(2.0)  # the stale norms are gone


def test_short_trainer_fit() -> None:
    splits = load_dataset("synthetic", train_rows=500, valid_rows=100, test_rows=100, dim=8)
    model = create_model("mmoe", splits.schema, num_experts=3, expert_sizes=(8,), tower_sizes=(4,))
    balancer = create_weighting("gradnorm", splits.schema)
    options = TrainingOptions(epochs=2, batch_size=64, lr=0.01, monitor=None, progress=False)
    trainer = Trainer(model, balancer, options, seed=0, device="cpu")
    history = trainer.fit(splits.train, splits.valid)
    assert len(history) == 2
    assert all(math.isfinite(v) for row in history for v in row.values())
    assert isinstance(balancer, GradNorm)
    assert torch.isfinite(balancer.initial_losses).all()
    weights = balancer.weights()
    assert float(weights.sum()) == pytest.approx(2.0, rel=1e-5)
    assert not torch.allclose(weights, torch.ones(2))  # the optimizer moved them
    scores = trainer.evaluate(splits.test)
    assert all(math.isfinite(v) for task in scores.values() for v in task.values())
