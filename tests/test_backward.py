"""The backward engine: what it provides to balancers (loss values, per-task gradient norms at Output.shared)."""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest
import torch
from torch import Tensor

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit import backward as engine
from mtlkit.backward import SUPPORTED_NEEDS, mtl_backward, shared_grad_norms
from mtlkit.losses import LossSet
from mtlkit.models import MultiTaskModel, create_model
from mtlkit.models.base import Output
from mtlkit.weighting import LossWeighting, create_weighting

SCHEMA = Schema(
    (
        Feature("user", "categorical", vocab_size=11, embedding_dim=4),
        Feature("item", "categorical", vocab_size=7, embedding_dim=3),
        Feature("price", "numeric"),
        Feature("age", "numeric"),
    ),
    (Task("click"), Task("dwell", "regression"), Task("like")),
)
SHARED_MODELS = ["mmoe", "shared_bottom"]


def _forward(model: MultiTaskModel, rows: int = 32, seed: int = 0) -> tuple[Output, Tensor]:
    """A forward pass on random inputs and the task losses [T]."""
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [torch.randint(0, f.vocab_size or 1, (rows,), generator=g) for f in model.schema.categorical], 1
    )
    num = torch.randn(rows, len(model.schema.numeric_columns), generator=g)
    labels = torch.stack(
        [
            torch.randint(0, 2, (rows,), generator=g).float()
            if t.kind == "binary"
            else torch.randn(rows, generator=g)
            for t in model.schema.tasks
        ],
        1,
    )
    out = model.compute(cat, num)
    return out, LossSet(model.schema)(out.logits, labels, None)


def _looped_norms(losses: Tensor, shared: Tensor) -> Tensor:
    rows = [torch.autograd.grad(losses[i], shared, retain_graph=True)[0] for i in range(len(losses))]
    return torch.stack([r.flatten().norm() for r in rows])


class Recorder(LossWeighting):
    """Records what the engine gives it and when (a test double)."""

    needs: ClassVar[frozenset[str]] = frozenset({"losses", "shared_grad_norms"})

    def __init__(self, schema: Schema) -> None:
        super().__init__(schema)
        self.events: list[tuple[str, Tensor]] = []

    def observe_grad_norms(self, norms: Tensor) -> None:
        self.events.append(("norms", norms))

    def forward(self, losses: Tensor) -> Tensor:
        self.events.append(("forward", losses.detach()))
        return losses.sum()


def test_supported_needs_are_data() -> None:
    assert isinstance(SUPPORTED_NEEDS, frozenset)
    assert {"losses", "shared_grad_norms"} <= SUPPORTED_NEEDS


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_batched_norms_equal_a_loop_over_tasks(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = create_model(name, SCHEMA)
    out, losses = _forward(model)
    assert out.shared is not None
    monkeypatch.setattr(engine, "_LOOPED", set())
    with caplog.at_level(logging.WARNING, logger="mtlkit.backward"):
        batched = shared_grad_norms(losses, out.shared, name)
    assert not caplog.records, "the batched call fell back to the loop"
    looped = _looped_norms(losses, out.shared)
    assert batched.shape == (3,)
    assert not batched.requires_grad
    assert (batched > 0).all()
    torch.testing.assert_close(batched, looped, rtol=1e-6, atol=1e-6)


def test_fallback_loop_gives_the_same_norms_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = create_model("mmoe", SCHEMA)
    out, losses = _forward(model)
    assert out.shared is not None
    expected = shared_grad_norms(losses, out.shared, "mmoe")
    real_grad = torch.autograd.grad

    def no_batching(*args: object, **kwargs: object) -> object:
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::something")
        return real_grad(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    monkeypatch.setattr(engine, "_LOOPED", set())
    with caplog.at_level(logging.WARNING, logger="mtlkit.backward"):
        first = shared_grad_norms(losses, out.shared, "FakeModel")
        second = shared_grad_norms(losses, out.shared, "FakeModel")
    torch.testing.assert_close(first, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(second, expected, rtol=1e-6, atol=1e-6)
    messages = [r.getMessage() for r in caplog.records if r.name == "mtlkit.backward"]
    assert len(messages) == 1
    assert "FakeModel" in messages[0]
    assert "one backward per task" in messages[0]


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_engine_passes_norms_before_forward_and_writes_the_objective_gradient(name: str) -> None:
    torch.manual_seed(1)
    model = create_model(name, SCHEMA)
    out, losses = _forward(model)
    assert out.shared is not None
    expected_norms = _looped_norms(losses, out.shared)
    expected_grads = torch.autograd.grad(losses.sum(), list(model.parameters()), retain_graph=True)
    recorder = Recorder(SCHEMA)
    objective = mtl_backward(losses, model, recorder, shared=out.shared)
    assert [kind for kind, _ in recorder.events] == ["norms", "forward"]
    norms = recorder.events[0][1]
    assert not norms.requires_grad
    torch.testing.assert_close(norms, expected_norms, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(objective, losses.detach().sum())
    for p, g in zip(model.parameters(), expected_grads, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_losses_only_balancers_get_no_norms() -> None:
    torch.manual_seed(2)
    model = create_model("mmoe", SCHEMA)
    _, losses = _forward(model)
    expected = torch.autograd.grad(losses.sum() + 0.5, list(model.parameters()), retain_graph=True)
    objective = mtl_backward(losses, model, create_weighting("static", SCHEMA), torch.tensor(0.5))
    torch.testing.assert_close(objective, losses.detach().sum() + 0.5)
    for p, g in zip(model.parameters(), expected, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g)


def test_a_model_without_shared_representation_is_a_clear_error() -> None:
    model = create_model("single_task", SCHEMA)
    out, losses = _forward(model)
    assert out.shared is None
    with pytest.raises(MtlkitError, match=r"SingleTask.*Output\.shared is None.*shared_bottom, mmoe"):
        mtl_backward(losses, model, create_weighting("gradnorm", SCHEMA), shared=out.shared)
    assert all(p.grad is None for p in model.parameters())  # nothing was written


def test_shared_without_grad_is_a_clear_error() -> None:
    model = create_model("mmoe", SCHEMA)
    out, losses = _forward(model)
    assert out.shared is not None
    with pytest.raises(MtlkitError, match="does not require grad"):
        mtl_backward(losses, model, Recorder(SCHEMA), shared=out.shared.detach())


def test_unsupported_needs_are_named() -> None:
    class Wants(Recorder):
        needs: ClassVar[frozenset[str]] = frozenset({"losses", "task_hessians"})

    model = create_model("mmoe", SCHEMA)
    out, losses = _forward(model)
    with pytest.raises(MtlkitError, match=r"Wants needs \['task_hessians'\]"):
        mtl_backward(losses, model, Wants(SCHEMA), shared=out.shared)


@pytest.mark.parametrize("name", ["mmoe", "omoe", "dselect_k", "ple"])
def test_norms_from_a_gated_mix_equal_the_generic_ones(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, SCHEMA)
    out, losses = _forward(model)
    assert out.shared is not None
    assert out.mix is not None
    via_mix = shared_grad_norms(losses, out.shared, name, out.mix, model)
    torch.testing.assert_close(via_mix, _looped_norms(losses, out.shared), rtol=1e-5, atol=1e-7)
