"""Every registered architecture honours the MultiTaskModel contract (shared checks over the registry)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.models import MultiTaskModel, create_model, list_models, model_parameters
from mtlkit.models.base import Output
from mtlkit.models.layers import Experts

MODELS = list_models()

FEATURES = (
    Feature("user", "categorical", vocab_size=11, embedding_dim=4),
    Feature("item", "categorical", vocab_size=9, embedding_dim=4),
    Feature("slot", "categorical", vocab_size=3, embedding_dim=2),
    Feature("price", "numeric", missing_indicator=True),
    Feature("age", "numeric"),
)
TWO = Schema(FEATURES, (Task("click"), Task("purchase", depends_on="click")))
FIVE = Schema(
    (
        *FEATURES,
        Feature("promo", "categorical", vocab_size=4, embedding_dim=2, towers=("like",)),
        Feature("hint", "numeric", towers=("dwell",)),
    ),
    (
        Task("click"),
        Task("purchase", depends_on="click"),
        Task("dwell", "regression"),
        Task("rating", "multiclass", num_classes=3),
        Task("like"),
    ),
)
SCHEMAS = {"two_binary": TWO, "five_mixed": FIVE}


def _batch(schema: Schema, size: int = 16, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = [torch.randint(0, f.vocab_size or 1, (size,), generator=g) for f in schema.categorical]
    cat = torch.stack(codes, 1) if codes else torch.zeros(size, 0, dtype=torch.long)
    num = torch.randn(size, len(schema.numeric_columns), generator=g)
    labels = []
    for t in schema.tasks:
        if t.kind == "binary":
            labels.append(torch.randint(0, 2, (size,), generator=g).float())
        elif t.kind == "multiclass":
            labels.append(torch.randint(0, t.num_classes or 2, (size,), generator=g).float())
        else:
            labels.append(torch.randn(size, generator=g))
    return cat, num, torch.stack(labels, 1)


def _losses(schema: Schema, out: Output, labels: Tensor) -> dict[str, Tensor]:
    losses = {}
    for j, t in enumerate(schema.tasks):
        logit, y = out.logits[t.name], labels[:, j]
        if t.kind == "binary":
            losses[t.name] = F.binary_cross_entropy_with_logits(logit, y)
        elif t.kind == "multiclass":
            losses[t.name] = F.cross_entropy(logit, y.long())
        else:
            losses[t.name] = F.mse_loss(logit, y)
    return losses


#: Variants every model is also built in, where it has the option: projected numeric inputs (a task then owns
#: the projection of its tower-only columns) and dependent towers that read their parent without detaching.
CONFIGS: dict[str, dict[str, object]] = {
    "default": {},
    "projected": {"numeric_dim": 3},
    "undetached": {"detach_dependency": False},
}


#: (model, variant) pairs where the model has the variant's options (single_task always detaches, for example).
VARIANTS = [
    (name, config)
    for name in MODELS
    for config, params in CONFIGS.items()
    if set(params) <= set(model_parameters(name))
]


def _model(name: str, schema: Schema, config: str = "default") -> MultiTaskModel:
    torch.manual_seed(0)
    return create_model(name, schema, **CONFIGS[config])


@pytest.fixture(params=MODELS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(("name", "config"), VARIANTS)
@pytest.mark.parametrize("schema_name", list(SCHEMAS))
def test_forward_shapes_gates_and_backward(name: str, schema_name: str, config: str) -> None:
    schema = SCHEMAS[schema_name]
    model = _model(name, schema, config)
    cat, num, labels = _batch(schema)
    out = model.compute(cat, num)
    assert set(out.logits) == set(schema.task_names)
    for t in schema.tasks:
        expected = (16, t.num_classes) if t.kind == "multiclass" else (16,)
        assert tuple(out.logits[t.name].shape) == expected, t.name
        assert torch.isfinite(out.logits[t.name]).all()
    for task, gate in out.gates.items():
        assert task in schema.task_names
        assert gate.dim() == 2
        assert gate.shape[0] == 16
        torch.testing.assert_close(gate.sum(1), torch.ones(16), atol=1e-5, rtol=0)
        assert (gate >= 0).all()
    reg = model.regularization()
    assert reg.dim() == 0
    assert torch.isfinite(reg)
    total = sum(_losses(schema, out, labels).values()) + reg
    if out.regularization is not None:
        assert out.regularization.dim() == 0
        assert torch.isfinite(out.regularization)
        total = total + out.regularization
    for key, value in out.extras.items():
        assert value.shape[0] == 16, f"Output.extras[{key!r}] must be per-row"
    total.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"parameters that no loss reaches: {dead}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(("name", "config"), VARIANTS)
@pytest.mark.parametrize("schema_name", list(SCHEMAS))
def test_parameters_split_into_shared_and_one_task_each(name: str, schema_name: str, config: str) -> None:
    schema = SCHEMAS[schema_name]
    model = _model(name, schema, config)
    owners: dict[int, str] = {}
    for t in schema.task_names:
        for p in model.task_parameters(t):
            assert id(p) not in owners, f"a parameter belongs to both {owners[id(p)]!r} and {t!r}"
            owners[id(p)] = t
    shared = {id(p) for p in model.shared_parameters()}
    assert shared.isdisjoint(owners)
    everything = {id(p) for p in model.parameters() if p.requires_grad}
    assert shared | set(owners) == everything


@pytest.mark.parametrize(("name", "config"), VARIANTS)
@pytest.mark.parametrize("schema_name", list(SCHEMAS))
def test_a_task_loss_never_reaches_another_tasks_parameters(name: str, schema_name: str, config: str) -> None:
    """The definition of task_parameters: only that task's loss reaches them."""
    schema = SCHEMAS[schema_name]
    model = _model(name, schema, config)
    cat, num, labels = _batch(schema)
    out = model.compute(cat, num)
    losses = _losses(schema, out, labels)
    for a in schema.task_names:
        for b in schema.task_names:
            if a == b:
                continue
            params = list(model.task_parameters(b))
            if not params:
                continue
            grads = torch.autograd.grad(losses[a], params, retain_graph=True, allow_unused=True)
            leaked = [
                p.shape for p, g in zip(params, grads, strict=True) if g is not None and g.abs().max() > 0
            ]
            assert not leaked, f"the loss of {a!r} reaches parameters of {b!r}: {leaked}"


@pytest.mark.parametrize(("name", "config"), VARIANTS)
def test_shared_representation_carries_every_tasks_gradient(name: str, config: str) -> None:
    """Output.shared is where representation-level balancing (MGDA-UB) differentiates each task loss."""
    model = _model(name, FIVE, config)
    cat, num, labels = _batch(FIVE)
    out = model.compute(cat, num)
    if out.shared is None:
        assert not list(model.shared_parameters()), "a model with shared parameters must expose Output.shared"
        return
    assert out.shared.requires_grad
    losses = _losses(FIVE, out, labels)
    for task, loss in losses.items():
        (grad,) = torch.autograd.grad(loss, out.shared, retain_graph=True, allow_unused=True)
        assert grad is not None, f"task {task!r} does not depend on Output.shared"
        assert grad.abs().sum() > 0, f"task {task!r} gets zero gradient at Output.shared"


def test_no_module_keeps_a_call_of_its_experts_after_the_forward(name: str) -> None:
    """Experts record a training call (ExpertsTrace: its input and activations) only for a model that reports it
    in GatedMix.source, which takes it at once: after the forward no module holds a call's tensors. Numeric
    inputs, so that every Experts could record one."""
    schema = Schema((Feature("price", "numeric"), Feature("age", "numeric")), TWO.tasks)
    model = _model(name, schema).train()
    cat, num, _ = _batch(schema)
    out = model.compute(cat, num)
    assert all(m._trace is None for m in model.modules() if isinstance(m, Experts))
    source = None if out.mix is None else out.mix.source
    assert (source is not None) == (name in ("mmoe", "dselect_k"))
    assert source is None or source.output is out.shared


def test_eval_mode_is_deterministic(name: str) -> None:
    model = _model(name, FIVE).eval()
    cat, num, _ = _batch(FIVE)
    with torch.no_grad():
        a, b = model.compute(cat, num), model.compute(cat, num)
    for t in FIVE.task_names:
        torch.testing.assert_close(a.logits[t], b.logits[t])


class _Logits(nn.Module):
    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, categorical: Tensor, numeric: Tensor) -> dict[str, Tensor]:
        return self.model.compute(categorical, numeric).logits


def test_torch_export_reproduces_the_model(name: str) -> None:
    model = _model(name, TWO).eval()
    cat, num, _ = _batch(TWO)
    exported = torch.export.export(_Logits(model), (cat, num))
    cat2, num2, _ = _batch(TWO, seed=1)
    got = exported.module()(cat2, num2)
    with torch.no_grad():
        expected = model.compute(cat2, num2).logits
    for t in TWO.task_names:
        torch.testing.assert_close(got[t], expected[t], atol=1e-6, rtol=1e-6)


def test_repr_free_hyperparameters_are_typed(name: str) -> None:
    """Every hyperparameter has a type annotation and a default (create_model(name, schema) works)."""
    for param in model_parameters(name).values():
        assert param.annotation is not param.empty, f"{name}.{param.name} has no type"
        assert param.default is not param.empty, f"{name}.{param.name} has no default"


def test_unknown_model_and_parameter_errors_list_what_is_accepted() -> None:
    with pytest.raises(MtlkitError, match=r"unknown model 'mmeo' \(did you mean 'mmoe'\?\)"):
        create_model("mmeo", TWO)
    with pytest.raises(MtlkitError, match=r"no parameter 'num_expert' \(did you mean 'num_experts'\?\)"):
        create_model("mmoe", TWO, num_expert=3)
    with pytest.raises(MtlkitError, match=r"model 'mmoe': num_experts must be >= 1, got 0"):
        create_model("mmoe", TWO, num_experts=0)


def test_unfitted_schema_is_a_clear_error() -> None:
    schema = Schema((Feature("u", "categorical"),), (Task("y"),))
    with pytest.raises(MtlkitError, match=r"no vocab_size: build the model from a fitted Table's schema"):
        create_model("shared_bottom", schema)
