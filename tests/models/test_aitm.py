"""AITM: the AIT attention on a hand case, the behavioural calibrator, chains and what each task owns."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mtlkit.errors import MtlkitError
from mtlkit.models import create_model
from mtlkit.models.aitm import AITM, AdaptiveInformationTransfer
from mtlkit.schema import Feature, Schema, Task

CHAIN3 = (Task("click"), Task("application", depends_on="click"), Task("approve", depends_on="application"))


def make_schema(*tasks: Task) -> Schema:
    tasks = tasks or (Task("click"), Task("buy", depends_on="click"))
    return Schema(
        features=(
            Feature("c", "categorical", vocab_size=10),
            Feature("k", "categorical", vocab_size=4, towers=(tasks[-1].name,)),
            Feature("x", "numeric"),
        ),
        tasks=tasks,
    )


def make_inputs(schema: Schema, n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, f.vocab_size or 1, (n,), generator=g) for f in schema.categorical], 1)
    return cat, torch.randn(n, len(schema.numeric_columns), generator=g)


def small(schema: Schema | None = None, **kw: object) -> AITM:
    torch.manual_seed(0)
    return AITM(schema or make_schema(), tower_sizes=(6, 4), **kw)  # type: ignore[arg-type]


def set_constant_prediction(model: AITM, task: str, logit: float) -> None:
    head = model.heads[task]
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(logit)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_ait_attention_hand_case() -> None:
    ait = AdaptiveInformationTransfer(2)
    with torch.no_grad():
        ait.project.weight.copy_(torch.cat([torch.eye(2)] * 3))  # h1 = h2 = h3 = identity
    z, weights = ait(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
    # scores <u, u> / sqrt(2): 1 / sqrt(2) for p, 4 / sqrt(2) for q
    w_p = 1.0 / (1.0 + math.exp(3.0 / math.sqrt(2.0)))
    torch.testing.assert_close(weights, torch.tensor([[w_p, 1.0 - w_p]]))
    torch.testing.assert_close(z, torch.tensor([[w_p, 2.0 * (1.0 - w_p)]]))


def test_zeroed_transfer_gives_the_formula_on_the_task_own_representation() -> None:
    model = small()
    transfer = model.transfers["buy"][0]
    assert isinstance(transfer, torch.nn.Linear)
    with torch.no_grad():
        transfer.weight.zero_()
        transfer.bias.zero_()  # p = relu(0) = 0, so h1(p) = h2(p) = h3(p) = 0 and its score is 0
    seen: dict[str, Tensor] = {}
    model.towers["buy"].register_forward_hook(lambda _m, _a, out: seen.__setitem__("q", out))
    model.heads["buy"].register_forward_pre_hook(lambda _m, args: seen.__setitem__("z", args[0]))
    model.compute(*make_inputs(model.schema))
    q = seen["q"]
    w1, w2, w3 = model.aits["buy"].project.weight.detach().chunk(3)
    score_q = ((q @ w1.T) * (q @ w2.T)).sum(-1) / math.sqrt(4)
    weight_q = torch.softmax(torch.stack([torch.zeros_like(score_q), score_q], 1), 1)[:, 1]
    torch.testing.assert_close(seen["z"], weight_q[:, None] * (q @ w3.T))


def test_first_step_output_is_its_own_tower() -> None:
    model = small()
    seen: dict[str, Tensor] = {}
    model.towers["click"].register_forward_hook(lambda _m, _a, out: seen.__setitem__("q", out))
    model.heads["click"].register_forward_pre_hook(lambda _m, args: seen.__setitem__("z", args[0]))
    model.compute(*make_inputs(model.schema))
    assert torch.equal(seen["q"], seen["z"])


def test_calibration_is_zero_for_monotone_predictions_and_positive_otherwise() -> None:
    model = small(make_schema(*CHAIN3))
    inputs = make_inputs(model.schema)
    for task, logit in (("click", 2.0), ("application", 0.0), ("approve", -1.0)):
        set_constant_prediction(model, task, logit)
    out = model.compute(*inputs)
    assert out.regularization is not None
    assert out.regularization.item() == 0.0
    set_constant_prediction(
        model, "approve", 1.0
    )  # approve (0.73) > application (0.5): one link of two violated
    out = model.compute(*inputs)
    expected = (sigmoid(1.0) - sigmoid(0.0)) / 2  # mean over rows and the two links
    assert out.regularization is not None
    assert out.regularization.item() == pytest.approx(0.6 * expected, rel=1e-6)  # calibration_weight 0.6
    assert out.regularization.shape == ()


def test_calibration_gradient_pushes_the_later_step_down() -> None:
    model = small(calibration_weight=1.0)
    set_constant_prediction(model, "click", -1.0)
    set_constant_prediction(model, "buy", 1.0)
    penalty = model.compute(*make_inputs(model.schema)).regularization
    assert penalty is not None
    penalty.backward()
    assert model.heads["buy"].bias.grad is not None
    assert model.heads["click"].bias.grad is not None
    assert model.heads["buy"].bias.grad.item() > 0
    assert model.heads["click"].bias.grad.item() < 0


def test_three_step_chain_runs_in_dependency_order_whatever_the_schema_order() -> None:
    tasks = (CHAIN3[2], CHAIN3[0], CHAIN3[1])  # approve listed before what it depends on
    model = small(make_schema(*tasks))
    assert model.order == ["click", "application", "approve"]
    out = model.compute(*make_inputs(model.schema))
    assert all(v.shape == (16,) for v in out.logits.values())
    assert out.shared is not None
    assert out.shared.shape == (16, model.embedding.shared_dim)
    assert out.regularization is not None
    (sum(v.sum() for v in out.logits.values()) + out.regularization).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_paper_setting_trains_earlier_steps_from_later_losses_and_detach_stops_it() -> None:
    for detach in (False, True):
        model = small(make_schema(*CHAIN3), detach_transfer=detach)
        model.compute(*make_inputs(model.schema)).logits["approve"].sum().backward()
        reached = {
            t: any(p.grad is not None and p.grad.any() for p in model.towers[t].parameters())
            for t in model.order
        }
        assert reached == {"click": not detach, "application": not detach, "approve": True}
        assert all(p.grad is not None for p in model.transfers["approve"].parameters())


@pytest.mark.parametrize("detach", [False, True])
def test_private_parameters_get_no_gradient_from_other_tasks(detach: bool) -> None:
    tasks = (*CHAIN3, Task("like"), Task("watch", "regression"))
    model = small(make_schema(*tasks), detach_transfer=detach)
    names = model.schema.task_names
    private = {t: {id(p) for p in model.task_parameters(t)} for t in names}
    shared = {id(p) for p in model.shared_parameters()}
    assert sum(len(s) for s in private.values()) + len(shared) == len(list(model.parameters()))
    tower_private = {t: any(id(p) in private[t] for p in model.towers[t].parameters()) for t in names}
    assert tower_private == {
        "click": detach,
        "application": detach,
        "approve": True,
        "like": True,
        "watch": True,
    }
    cat, num = make_inputs(model.schema)
    for t in names:
        model.zero_grad(set_to_none=True)
        model.compute(cat, num).logits[t].sum().backward()
        for other in names:
            if other != t:
                assert all(p.grad is None or not p.grad.any() for p in model.task_parameters(other))


def test_a_step_followed_by_two_steps() -> None:
    model = small(
        make_schema(Task("click"), Task("buy", depends_on="click"), Task("cart", depends_on="click"))
    )
    for task, logit in (("click", 0.0), ("buy", 1.0), ("cart", -1.0)):
        set_constant_prediction(model, task, logit)
    out = model.compute(*make_inputs(model.schema))
    assert out.regularization is not None
    assert out.regularization.item() == pytest.approx(0.6 * (sigmoid(1.0) - 0.5) / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("tasks", "kw", "message"),
    [
        ((Task("click"), Task("buy")), {}, "no task depends on another .* set depends_on"),
        ((Task("click"), Task("spend", "regression", depends_on="click")), {}, "'spend' .* must be binary"),
        ((Task("click"), Task("buy", depends_on="click")), {"calibration_weight": -0.5}, "got -0.5"),
        ((Task("click"), Task("buy", depends_on="click")), {"tower_sizes": []}, "tower_sizes must be"),
    ],
)
def test_errors_say_what_to_set(tasks: tuple[Task, ...], kw: dict[str, object], message: str) -> None:
    with pytest.raises(MtlkitError, match=message):
        create_model("aitm", make_schema(*tasks), **kw)
