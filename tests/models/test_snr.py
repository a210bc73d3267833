"""SNR-Trans / SNR-Aver: hard concrete coding variables, the expected-L0 penalty and the routed sums."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from mtlkit.errors import MtlkitError
from mtlkit.models import create_model
from mtlkit.models.snr import SNRAver, SNRTrans, UpperSubNetwork, expected_l0, hard_concrete
from mtlkit.schema import Feature, Schema, Task

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


def make_schema() -> Schema:
    return Schema(
        features=(
            Feature("c", "categorical", vocab_size=10),
            Feature("k", "categorical", vocab_size=5, towers=("b",)),
            Feature("x", "numeric"),
        ),
        tasks=(Task("a"), Task("b"), Task("r", "regression")),
    )


def make_inputs(schema: Schema, n: int = 24, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, f.vocab_size or 1, (n,), generator=g) for f in schema.categorical], 1)
    return cat, torch.randn(n, len(schema.numeric_columns), generator=g)


def small(cls: type[SNRTrans | SNRAver], **kw: object) -> SNRTrans | SNRAver:
    params: dict[str, object] = {"num_lower": 3, "lower_sizes": (4,), "upper_sizes": (5,)}
    params.update(kw)
    torch.manual_seed(0)
    return cls(make_schema(), **params)  # type: ignore[arg-type]


def set_log_alpha(model: SNRTrans | SNRAver, task: str, values: list[float]) -> None:
    with torch.no_grad():
        model._uppers()[task].gates.log_alpha.copy_(torch.tensor(values))


# ------------------------------------------------------------------------------------------ hard concrete
def test_samples_lie_in_unit_interval_and_hit_both_ends_exactly() -> None:
    torch.manual_seed(0)
    log_alpha = torch.linspace(-6.0, 6.0, 101).repeat(200)
    z = hard_concrete(log_alpha, BETA, GAMMA, ZETA, sample=True)
    assert z.min() >= 0
    assert z.max() <= 1
    assert (z == 0).any()
    assert (z == 1).any()
    assert ((z > 0) & (z < 1)).any()


def test_eval_value_is_deterministic_formula_and_reaches_0_and_1() -> None:
    log_alpha = torch.tensor([-10.0, -1.0, 0.0, 0.7, 10.0])
    z = hard_concrete(log_alpha, BETA, GAMMA, ZETA, sample=False)
    expected = [
        min(1.0, max(0.0, (1 / (1 + math.exp(-a))) * (ZETA - GAMMA) + GAMMA)) for a in log_alpha.tolist()
    ]
    torch.testing.assert_close(z, torch.tensor(expected))
    assert z[0] == 0.0
    assert z[-1] == 1.0
    assert z[2] == pytest.approx(0.5)


def test_expected_l0_is_the_probability_of_a_nonzero_sample() -> None:
    torch.manual_seed(1)
    for a in (-2.0, 0.0, 1.5):
        z = hard_concrete(torch.full((200_000,), a), BETA, GAMMA, ZETA, sample=True)
        prob = expected_l0(torch.tensor(a), BETA, GAMMA, ZETA)
        assert (z > 0).float().mean().item() == pytest.approx(prob.item(), abs=0.005)


def test_model_z_is_sampled_in_training_and_fixed_in_eval() -> None:
    model = small(SNRAver)
    model.train()
    torch.manual_seed(0)
    first = model.coding_variables()["a"]
    second = model.coding_variables()["a"]
    assert not torch.equal(first, second)
    model.eval()
    once, again = model.coding_variables()["a"], model.coding_variables()["a"]
    assert torch.equal(once, again)
    torch.testing.assert_close(once, torch.full((3,), 0.5))  # init_log_alpha = 0 -> 0.5 * 1.2 - 0.1
    cat, num = make_inputs(model.schema)
    torch.testing.assert_close(model.compute(cat, num).logits["a"], model.compute(cat, num).logits["a"])


# ----------------------------------------------------------------------------------------------- penalty
@pytest.mark.parametrize("cls", [SNRTrans, SNRAver])
def test_regularization_is_weighted_expected_l0(cls: type[SNRTrans | SNRAver]) -> None:
    model = small(cls, l0_weight=0.25)
    values = {"a": [-3.0, 0.0, 2.0], "b": [1.0, 1.0, -1.0], "r": [0.5, -0.5, 4.0]}
    for task, v in values.items():
        set_log_alpha(model, task, v)
    shift = BETA * math.log(-GAMMA / ZETA)
    by_hand = 0.25 * sum(1 / (1 + math.exp(-(a - shift))) for v in values.values() for a in v)
    assert model.regularization().item() == pytest.approx(by_hand, rel=1e-6)


def test_regularization_decreases_as_log_alpha_decreases_and_vanishes_with_zero_weight() -> None:
    model = small(SNRTrans)
    penalties = []
    for a in (3.0, 1.0, 0.0, -2.0, -6.0):
        for task in ("a", "b", "r"):
            set_log_alpha(model, task, [a] * 3)
        penalties.append(model.regularization().item())
    assert all(x > y for x, y in itertools.pairwise(penalties))
    assert small(SNRTrans, l0_weight=0.0).regularization().item() == 0.0
    model.regularization().backward()  # the penalty's gradient lowers every log_alpha
    for upper in model._uppers().values():
        assert upper.gates.log_alpha.grad is not None
        assert (upper.gates.log_alpha.grad > 0).all()


# ------------------------------------------------------------------------------------------------ routing
def test_aver_upper_input_is_the_z_weighted_sum_hand_case() -> None:
    upper = small(SNRAver)._uppers()["a"]
    lower = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    v = upper.route(lower, torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(v, torch.tensor([[1.0 + 2.5, 2.0 + 3.0]]))


def test_aver_model_feeds_the_weighted_sum_of_its_lower_outputs() -> None:
    model = small(SNRAver)
    model.eval()
    set_log_alpha(model, "a", [10.0, -10.0, 0.0])  # z = 1, 0, 0.5 exactly
    seen: list[Tensor] = []
    model._uppers()["a"].rest.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    out = model.compute(*make_inputs(model.schema))
    assert out.shared is not None
    torch.testing.assert_close(seen[0], out.shared[:, 0] + 0.5 * out.shared[:, 2])
    torch.testing.assert_close(out.gates["a"][0], torch.tensor([1 / 1.5, 0.0, 0.5 / 1.5]))


def test_trans_upper_input_is_sum_of_scaled_transformations_hand_case() -> None:
    upper = UpperSubNetwork(2, 2, (2,), True, "relu", 0.0, small(SNRTrans)._uppers()["a"].gates)
    with torch.no_grad():
        upper.weight.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [1.0, 0.0]]]))
    lower = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)
    v = upper.route(lower, torch.tensor([0.5, 1.0]))
    # 0.5 * [1, 2] @ I + 1.0 * [3, 4] @ [[0, 2], [1, 0]] = [0.5, 1] + [4, 6]
    torch.testing.assert_close(v, torch.tensor([[4.5, 7.0]]))
    upper.route(lower, torch.tensor([0.0, 1.0])).sum().backward()
    assert lower.grad is not None
    assert (lower.grad[0, 0] == 0).all()
    assert (lower.grad[0, 1] != 0).all()


@pytest.mark.parametrize("cls", [SNRTrans, SNRAver])
def test_outputs_gates_and_shared(cls: type[SNRTrans | SNRAver]) -> None:
    model = small(cls)
    cat, num = make_inputs(model.schema)
    out = model.compute(cat, num)
    assert out.shared is not None
    assert out.shared.shape == (24, 3, 4)
    assert set(out.logits) == {"a", "b", "r"}
    assert all(v.shape == (24,) for v in out.logits.values())
    for gate in out.gates.values():
        assert gate.shape == (24, 3)
        torch.testing.assert_close(gate.sum(1), torch.ones(24))
    set_log_alpha(model, "b", [-10.0, -10.0, -10.0])
    model.eval()
    assert (model.compute(cat, num).gates["b"] == 0).all()  # cut off entirely: zeros, not a fake uniform row


@pytest.mark.parametrize("cls", [SNRTrans, SNRAver])
def test_private_parameters_get_no_gradient_from_other_tasks(cls: type[SNRTrans | SNRAver]) -> None:
    model = small(cls)
    tasks = model.schema.task_names
    private = {t: {id(p) for p in model.task_parameters(t)} for t in tasks}
    shared = {id(p) for p in model.shared_parameters()}
    assert all(private[t] for t in tasks)
    assert set.union(shared, *private.values()) == {id(p) for p in model.parameters()}
    assert sum(len(s) for s in private.values()) + len(shared) == len(list(model.parameters()))
    cat, num = make_inputs(model.schema)
    for t in tasks:
        model.zero_grad(set_to_none=True)
        model.compute(cat, num).logits[t].sum().backward()
        for other in tasks:
            if other != t:
                assert all(p.grad is None or not p.grad.any() for p in model.task_parameters(other))


def test_trans_has_one_matrix_per_connection_and_aver_none() -> None:
    trans, aver = small(SNRTrans)._uppers()["a"], small(SNRAver)._uppers()["a"]
    assert trans.weight.shape == (3, 4, 5)
    assert not hasattr(aver, "weight")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"beta": 0.0}, "beta must be a finite number > 0, got 0.0"),
        ({"gamma": 0.1}, "gamma must be < 0 .* got 0.1"),
        ({"zeta": 1.0}, "zeta must be > 1 .* got 1.0"),
        ({"l0_weight": -1.0}, "l0_weight must be a finite number >= 0, got -1.0"),
        ({"num_lower": 0}, "num_lower must be an integer >= 1, got 0"),
        ({"init_log_alpha": math.inf}, "init_log_alpha must be finite, got inf"),
    ],
)
def test_bad_hyperparameters_echo_the_value(kw: dict[str, object], message: str) -> None:
    with pytest.raises(MtlkitError, match=message):
        create_model("snr_trans", make_schema(), **kw)
