"""DSelect-k: the smooth step, the binary-encoded selectors, exact k-sparsity, and the entropy regularizer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mtlkit.errors import MtlkitError
from mtlkit.models import create_model
from mtlkit.models.dselect_k import DSelectK, DSelectKGate, smooth_step
from mtlkit.schema import Feature, Schema, Task

SMALL = {"expert_sizes": (6,), "tower_sizes": (4,)}


def _schema() -> Schema:
    return Schema(
        features=(Feature("c", "categorical", vocab_size=10, embedding_dim=4), Feature("x", "numeric")),
        tasks=(Task("a"), Task("b", "regression")),
    )


def _inputs(rows: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (rows, 1), generator=g), torch.randn(rows, 1, generator=g)


def test_smooth_step_at_known_points() -> None:
    t = torch.tensor([-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 1e30, -1e30])
    # gamma = 2: cubic -t^3/4 + 3t/4 + 1/2 on [-1, 1]; S(0.5) = -1/32 + 3/8 + 1/2 = 0.84375
    expected = torch.tensor([0.0, 0.0, 0.15625, 0.5, 0.84375, 1.0, 1.0, 1.0, 0.0])
    assert torch.equal(smooth_step(t, 2.0), expected)
    u = torch.linspace(-3, 3, 61)
    torch.testing.assert_close(smooth_step(u, 1.0) + smooth_step(-u, 1.0), torch.ones(61))


def test_smooth_step_gradient_is_continuous_and_finite() -> None:
    gamma = 0.5
    t = torch.tensor([0.0, gamma / 2 - 1e-4, gamma / 2, 10.0, 1e30, -1e30], requires_grad=True)
    (grad,) = torch.autograd.grad(smooth_step(t, gamma).sum(), t)
    assert grad[0].item() == pytest.approx(3 / (2 * gamma))  # S'(0) = 3 / (2 gamma)
    assert abs(grad[1].item()) < 1e-2  # S' -> 0 at the edge of the cubic
    assert torch.equal(grad[2:], torch.zeros(4))


@pytest.mark.parametrize("num_experts", [2, 5, 8])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("per_example", [False, True])
def test_gate_weights_are_distributions(num_experts: int, k: int, per_example: bool) -> None:
    torch.manual_seed(0)
    model = DSelectK(_schema(), num_experts=num_experts, k=k, per_example=per_example, **SMALL)
    out = model.compute(*_inputs())
    assert out.shared is not None
    assert out.shared.shape == (16, num_experts, 6)
    for gate in out.gates.values():
        assert gate.shape == (16, num_experts)
        assert (gate >= 0).all()
        torch.testing.assert_close(gate.sum(1), torch.ones(16))
        same_rows = bool((gate == gate[:1]).all())
        assert same_rows != per_example  # the static gate ignores the example


def _saturate(gate: DSelectKGate, bits: list[list[float]], alpha: list[float]) -> None:
    """Set the selectors to binary choices: bits[i][j] = +-1 becomes z_ij = +-10 (gamma << 10)."""
    z = 10.0 * torch.tensor(bits)
    with torch.no_grad():
        if gate.per_example:
            gate.z_proj.weight.zero_()
            gate.z_proj.bias.copy_(z.flatten())
            gate.alpha_proj.weight.zero_()
            gate.alpha_proj.bias.copy_(torch.tensor(alpha))
        else:
            gate.z.copy_(z)
            gate.alpha.copy_(torch.tensor(alpha))


@pytest.mark.parametrize("per_example", [False, True])
def test_binary_selectors_pick_the_experts_of_their_codes(per_example: bool) -> None:
    model = DSelectK(_schema(), num_experts=8, k=2, gamma=0.1, per_example=per_example, **SMALL)
    # selector 1: bits 101 -> expert 5; selector 2: bits 011 -> expert 3; softmax([0, log 3]) = (1/4, 3/4)
    _saturate(model.gates["a"], [[1, -1, 1], [-1, 1, 1]], [0.0, math.log(3.0)])
    gate = model.compute(*_inputs()).gates["a"]
    expected = torch.zeros(8)
    expected[5], expected[3] = 0.25, 0.75
    torch.testing.assert_close(gate, expected.expand(16, 8))
    assert int((gate[0] != 0).sum()) == 2


def test_unused_codes_fold_onto_real_experts() -> None:
    """With E = 5 (m = 3), code c >= 5 selects expert c mod 5: 111 = 7 -> expert 2."""
    model = DSelectK(_schema(), num_experts=5, k=1, gamma=0.1, **SMALL)
    _saturate(model.gates["a"], [[1, 1, 1]], [0.0])
    gate = model.compute(*_inputs()).gates["a"]
    assert torch.equal(gate[0], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize("num_experts", [4, 6, 16])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("per_example", [False, True])
def test_saturated_selectors_keep_at_most_k_experts(num_experts: int, k: int, per_example: bool) -> None:
    torch.manual_seed(k)
    model = DSelectK(_schema(), num_experts=num_experts, k=k, gamma=0.05, per_example=per_example, **SMALL)
    m = math.ceil(math.log2(num_experts))
    for gate in model.gates.values():
        assert isinstance(gate, DSelectKGate)
        signs = torch.randint(0, 2, (k, m)).float() * 2 - 1
        _saturate(gate, signs.tolist(), torch.randn(k).tolist())
    out = model.compute(*_inputs())
    for gate in out.gates.values():
        nonzero = (gate != 0).sum(1)
        assert (nonzero >= 1).all()
        assert (nonzero <= k).all()
        torch.testing.assert_close(gate.sum(1), torch.ones(16))
    assert model.entropy().item() == 0.0  # binary selectors have zero entropy


def test_entropy_regularizer_value_and_gradient() -> None:
    torch.manual_seed(0)
    assert DSelectK(_schema(), **SMALL).regularization().item() == 0.0  # entropy_weight defaults to 0
    model = DSelectK(_schema(), num_experts=8, k=2, entropy_weight=0.1, **SMALL)
    # at initialisation S(z) ~ 1/2: each selector is ~uniform over 2^3 codes, entropy ~ 3 log 2
    reg = model.regularization()
    assert torch.isfinite(reg)
    assert reg.item() == pytest.approx(0.1 * 2 * 2 * 3 * math.log(2.0), rel=1e-3)
    grads = torch.autograd.grad(reg, list(model.parameters()), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    # half-saturated selectors: finite value and gradient
    with torch.no_grad():
        model.gates["a"].z[0].fill_(100.0)
    reg = model.regularization()
    (grad,) = torch.autograd.grad(reg, [model.gates["a"].z])
    assert torch.isfinite(reg)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[0], torch.zeros(3))


def test_per_example_regularizer_follows_the_last_training_batch() -> None:
    torch.manual_seed(0)
    model = DSelectK(_schema(), per_example=True, entropy_weight=0.5, **SMALL)
    assert model.regularization().item() == 0.0  # nothing seen yet
    out = model.compute(*_inputs())
    reg = model.regularization()
    assert torch.isfinite(reg)
    assert reg.item() > 0
    total = sum(v.float().pow(2).mean() for v in out.logits.values()) + reg
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()  # evaluation batches leave the training regularizer alone
    model.compute(*_inputs(seed=3))
    assert model.regularization().item() == pytest.approx(reg.item())


def test_each_task_owns_its_gate() -> None:
    torch.manual_seed(0)
    model = DSelectK(_schema(), **SMALL)
    out = model.compute(*_inputs())
    loss_b = out.logits["b"].pow(2).mean()
    gate_a = list(model.gates["a"].parameters())
    assert {id(p) for p in gate_a} <= {id(p) for p in model.task_parameters("a")}
    grads = torch.autograd.grad(loss_b, gate_a, allow_unused=True, retain_graph=True)
    assert all(g is None or not g.any() for g in grads)
    assert all(
        g is not None and g.any() for g in torch.autograd.grad(loss_b, list(model.gates["b"].parameters()))
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_experts": 1}, "num_experts must be an integer >= 2, got 1"),
        ({"k": 0}, r"k must be an integer between 1 and num_experts \(8\), got 0"),
        ({"num_experts": 4, "k": 5}, r"k must be an integer between 1 and num_experts \(4\), got 5"),
        ({"gamma": 0.0}, "gamma must be a finite number > 0, got 0.0"),
        ({"gamma": float("nan")}, "gamma must be a finite number > 0, got nan"),
        ({"entropy_weight": -1.0}, "entropy_weight must be a finite number >= 0, got -1.0"),
    ],
)
def test_bad_hyperparameters_echo_the_value(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DSelectK(_schema(), **params)  # type: ignore[arg-type]
    with pytest.raises(MtlkitError, match=f"model 'dselect_k': {message}"):
        create_model("dselect_k", _schema(), **params)
