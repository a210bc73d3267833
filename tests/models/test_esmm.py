"""ESMM: pCTCVR = pCTR * pCVR over the entire space, a stable pCTCVR logit, and how the two tasks are chosen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mtlkit.data.table import Batch
from mtlkit.errors import MtlkitError
from mtlkit.models import create_model
from mtlkit.models.esmm import ESMM, ctcvr_logit
from mtlkit.schema import Feature, Schema, Task

FEATURES = (
    Feature("c", "categorical", vocab_size=10),
    Feature("k", "categorical", vocab_size=6, towers=("buy",)),
    Feature("x", "numeric"),
)


def make_schema(*tasks: Task) -> Schema:
    tasks = tasks or (Task("click"), Task("buy", depends_on="click"), Task("stay", "regression"))
    names = {t.name for t in tasks}
    return Schema(features=tuple(f for f in FEATURES if set(f.towers) <= names), tasks=tasks)


def make_inputs(schema: Schema, n: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, f.vocab_size or 1, (n,), generator=g) for f in schema.categorical], 1)
    return cat, torch.randn(n, len(schema.numeric_columns), generator=g)


def small(schema: Schema | None = None, **kw: object) -> ESMM:
    torch.manual_seed(0)
    return ESMM(schema or make_schema(), tower_sizes=(8,), **kw)  # type: ignore[arg-type]


def test_pctcvr_is_pctr_times_pcvr() -> None:
    model = small()
    out = model.compute(*make_inputs(model.schema, n=256))
    p_ctr = torch.sigmoid(out.logits["click"])
    p_cvr = out.extras["pcvr_buy"]
    assert p_cvr.shape == (256,)
    torch.testing.assert_close(out.extras["pctcvr_buy"], p_ctr * p_cvr, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.sigmoid(out.logits["buy"]), p_ctr * p_cvr, atol=1e-6, rtol=0)
    assert not torch.allclose(p_cvr, p_ctr * p_cvr)  # the trained output is pCTCVR, not pCVR


def test_ctcvr_logit_matches_the_product_on_a_grid() -> None:
    values = torch.tensor([-30.0, -8.0, -1.0, 0.0, 0.5, 3.0, 9.0, 30.0], dtype=torch.float64)
    a, b = torch.meshgrid(values, values, indexing="ij")
    p = torch.sigmoid(a) * torch.sigmoid(b)
    torch.testing.assert_close(torch.sigmoid(ctcvr_logit(a, b)), p, atol=1e-12, rtol=0)
    safe = p < 0.999  # where the naive float64 reference log p - log(1 - p) does not cancel
    naive = torch.log(p) - torch.log1p(-p)
    torch.testing.assert_close(ctcvr_logit(a, b)[safe], naive[safe], atol=1e-9, rtol=1e-9)
    assert ctcvr_logit(torch.tensor(0.0), torch.tensor(0.0)).item() == pytest.approx(-1.0986123, abs=1e-6)


def test_ctcvr_logit_is_finite_with_finite_gradients_for_extreme_logits() -> None:
    values = torch.tensor([-1e30, -1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4, 1e30])
    a, b = torch.meshgrid(values, values, indexing="ij")
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    logit = ctcvr_logit(a, b)
    assert torch.isfinite(logit).all()
    F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit)).backward()
    assert a.grad is not None
    assert b.grad is not None
    assert torch.isfinite(a.grad).all()
    assert torch.isfinite(b.grad).all()
    # asymptotics: both near-certain -> logit ~ big - log 2; one near-impossible -> that side dominates
    big = torch.tensor(1e4)
    assert ctcvr_logit(big, big).item() == pytest.approx(1e4 - 0.6931472, rel=1e-6)
    assert ctcvr_logit(big, -big).item() == pytest.approx(-1e4, rel=1e-6)
    assert ctcvr_logit(-big, -big).item() == pytest.approx(-2e4, rel=1e-6)
    # the naive log p - log1p(-exp(log p)) is already infinite at 20 / 20 in float32
    log_p = F.logsigmoid(torch.tensor(20.0)) * 2
    assert torch.isinf(log_p - torch.log1p(-torch.exp(log_p)))
    assert torch.isfinite(ctcvr_logit(torch.tensor(20.0), torch.tensor(20.0)))


def test_purchase_loss_trains_the_cvr_tower_and_the_ctr_tower() -> None:
    model = small()
    cat, num = make_inputs(model.schema)
    click = (torch.rand(32, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    bought = click * (torch.rand(32, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    loss = F.binary_cross_entropy_with_logits(model.compute(cat, num).logits["buy"], bought)
    loss.backward()
    for task in ("buy", "click"):
        grads = [p.grad for p in model.towers.towers[task].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), task
    model.zero_grad(set_to_none=True)
    model.compute(cat, num).logits["click"].sum().backward()  # the CTR loss never reaches the CVR tower
    assert all(p.grad is None for p in model.towers.towers["buy"].parameters())


def test_cvr_tower_does_not_see_pctr() -> None:
    model = small()
    first = model.towers.towers["buy"][0][0]
    assert first.in_features == model.embedding.shared_dim + model.embedding.tower_dims["buy"]
    cat, num = make_inputs(model.schema)
    before = model.compute(cat, num).extras["pcvr_buy"]
    with torch.no_grad():
        model.towers.towers["click"][1].bias.add_(5.0)
    torch.testing.assert_close(model.compute(cat, num).extras["pcvr_buy"], before)


def test_every_impression_gets_predictions_whatever_its_labels() -> None:
    model = small()
    cat, num = make_inputs(model.schema)
    labels = torch.full((32, 3), float("nan"))
    out = model(Batch(cat, num, labels))
    same = model(Batch(cat, num, torch.zeros(32, 3)))
    for key in ("pcvr_buy", "pctcvr_buy"):
        assert out.extras[key].shape == (32,)
        assert torch.isfinite(out.extras[key]).all()
        torch.testing.assert_close(out.extras[key], same.extras[key])  # masking is the loss's job


def test_other_tasks_get_ordinary_private_towers() -> None:
    model = small()
    out = model.compute(*make_inputs(model.schema))
    assert out.logits["stay"].shape == (32,)
    assert out.shared is not None
    assert out.shared.shape == (32, model.embedding.shared_dim)
    assert list(model.task_parameters("click")) == []  # reached by the CTR and the CTCVR loss: shared
    assert list(model.task_parameters("buy"))
    assert list(model.task_parameters("stay"))


def test_private_parameters_get_no_gradient_from_other_tasks() -> None:
    model = small()
    tasks = model.schema.task_names
    private = {t: {id(p) for p in model.task_parameters(t)} for t in tasks}
    shared = {id(p) for p in model.shared_parameters()}
    assert sum(len(s) for s in private.values()) + len(shared) == len(list(model.parameters()))
    cat, num = make_inputs(model.schema)
    for t in tasks:
        model.zero_grad(set_to_none=True)
        model.compute(cat, num).logits[t].sum().backward()
        for other in tasks:
            if other != t:
                assert all(p.grad is None or not p.grad.any() for p in model.task_parameters(other))


def test_explicit_task_names() -> None:
    schema = make_schema(Task("imp_click"), Task("order"), Task("other"))
    model = small(schema, ctr_task="imp_click", cvr_task="order")
    assert (model.ctr_task, model.cvr_task) == ("imp_click", "order")
    out = model.compute(*make_inputs(schema))
    assert set(out.extras) == {"pcvr_order", "pctcvr_order"}
    chain = make_schema(Task("click"), Task("cart", depends_on="click"), Task("buy", depends_on="cart"))
    assert small(chain, ctr_task="click", cvr_task="buy").cvr_task == "buy"
    assert small(chain, ctr_task="cart").cvr_task == "buy"
    assert small(chain, cvr_task="cart").ctr_task == "click"


@pytest.mark.parametrize(
    ("tasks", "kw", "message"),
    [
        ((Task("click"), Task("buy")), {}, "no task depends on another .* set depends_on .* ctr_task="),
        (
            (Task("click"), Task("cart", depends_on="click"), Task("buy", depends_on="cart")),
            {},
            "2 tasks .* ambiguous.*ctr_task=",
        ),
        ((Task("click"), Task("buy")), {"cvr_task": "buy"}, "cvr_task='buy' has no depends_on"),
        (
            (Task("click"), Task("buy")),
            {"ctr_task": "clik", "cvr_task": "buy"},
            "ctr_task='clik' is not a task",
        ),
        ((Task("click"), Task("buy", depends_on="click")), {"ctr_task": "buy", "cvr_task": "click"}, "swap"),
        (
            (Task("click"), Task("buy", depends_on="click")),
            {"ctr_task": "click", "cvr_task": "click"},
            "both",
        ),
        (
            (Task("click"), Task("buy", "regression", depends_on="click")),
            {},
            "cvr_task 'buy' must be a binary",
        ),
    ],
)
def test_schema_errors_say_what_to_set(tasks: tuple[Task, ...], kw: dict[str, object], message: str) -> None:
    with pytest.raises(MtlkitError, match=message):
        create_model("esmm", make_schema(*tasks), **kw)
