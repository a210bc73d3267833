"""Building blocks: batched experts equal a loop of Linear layers, tower routing, gates, dependent towers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlkit import Feature, Schema, SchemaError, Task
from mtlkit.models import create_model
from mtlkit.models.layers import MLP, Experts, FeatureEmbedding, Gate, TaskGates, TaskTowers, mix


def _schema(**towers: tuple[str, ...]) -> Schema:
    return Schema(
        (
            Feature("a", "categorical", vocab_size=7, embedding_dim=3),
            Feature("b", "categorical", vocab_size=5, embedding_dim=3, towers=towers.get("b", ())),
            Feature("c", "categorical", vocab_size=4, embedding_dim=2),
            Feature("x", "numeric"),
            Feature("m", "numeric", missing_indicator=True, towers=towers.get("m", ())),
        ),
        (Task("click"), Task("buy", depends_on="click"), Task("time", "regression")),
    )


def _inputs(schema: Schema, batch: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [torch.randint(0, f.vocab_size or 1, (batch,), generator=g) for f in schema.categorical], dim=1
    )
    num = torch.randn(batch, len(schema.numeric_columns), generator=g)
    return cat, num


@pytest.mark.parametrize("batched_input", [False, True])
def test_experts_equal_a_loop_of_independent_linear_stacks(batched_input: bool) -> None:
    torch.manual_seed(0)
    experts = Experts(4, 10, [8, 5], "relu")
    loops = []
    for e in range(4):
        layers: list[nn.Module] = []
        for weight, bias in zip(experts.weights, experts.biases, strict=True):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[e].T)
                linear.bias.copy_(bias[e])
            layers += [linear, nn.ReLU()]
        loops.append(nn.Sequential(*layers))
    x = torch.randn(32, 4, 10) if batched_input else torch.randn(32, 10)
    expected = torch.stack([loops[e](x[:, e] if batched_input else x) for e in range(4)], dim=1)
    got = experts(x)
    assert got.shape == (32, 4, 5)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    # gradients agree too
    got.sum().backward()
    expected.sum().backward()
    for e in range(4):
        torch.testing.assert_close(
            experts.weights[0].grad[e], loops[e][0].weight.grad.T, atol=1e-5, rtol=1e-5
        )


def test_experts_reject_bad_sizes() -> None:
    with pytest.raises(ValueError, match=r"num_experts must be >= 1, got 0"):
        Experts(0, 4, [3])
    with pytest.raises(ValueError, match=r"expert sizes must be a list of integers >= 1, got \[\]"):
        Experts(2, 4, [])


def test_gate_rows_sum_to_one_and_mix_is_the_weighted_sum() -> None:
    gate = Gate(6, 3)
    weights = gate(torch.randn(5, 6))
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    experts = torch.randn(5, 3, 4)
    expected = (weights.unsqueeze(-1) * experts).sum(1)
    torch.testing.assert_close(mix(weights, experts), expected)


def test_embedding_width_without_routing() -> None:
    schema = _schema()
    emb = FeatureEmbedding(schema)
    cat, num = _inputs(schema)
    shared, towers = emb(cat, num)
    assert shared.shape == (6, 3 + 3 + 2 + 1 + 2)
    assert towers == {}
    assert len(emb.tables) == 2  # one table per embedding width (3 and 2)


def test_tower_only_features_reach_only_their_towers() -> None:
    schema = _schema(b=("buy",), m=("time", "click"))
    emb = FeatureEmbedding(schema, numeric_dim=4)
    cat, num = _inputs(schema)
    shared, towers = emb(cat, num)
    assert shared.shape == (6, 3 + 2 + 4)  # a, c, x
    assert towers["buy"].shape == (6, 3)  # b
    assert towers["time"].shape == (6, 8)
    assert towers["click"].shape == (6, 8)
    # changing b's code changes only the buy tower input
    cat2 = cat.clone()
    cat2[:, 1] = (cat2[:, 1] + 1) % 5
    shared2, towers2 = emb(cat2, num)
    torch.testing.assert_close(shared2, shared)
    assert not torch.allclose(towers2["buy"], towers["buy"])
    # b's table belongs to the buy task alone
    assert [t.num_embeddings for t in emb.task_modules("buy")] == [5]
    assert emb.task_modules("click") == []


def test_model_with_tower_only_feature_keeps_it_out_of_other_tasks() -> None:
    schema = _schema(b=("buy",))
    model = create_model("mmoe", schema, num_experts=2, expert_sizes=[4], tower_sizes=[3])
    cat, num = _inputs(schema)
    out = model.compute(cat, num)
    table = model.embedding.task_modules("buy")[0].weight
    (grad,) = torch.autograd.grad(out.logits["click"].sum(), table, allow_unused=True, retain_graph=True)
    assert grad is None or torch.count_nonzero(grad) == 0
    (grad,) = torch.autograd.grad(out.logits["buy"].sum(), table)
    assert torch.count_nonzero(grad) > 0


def test_all_features_in_towers_is_an_error() -> None:
    schema = Schema((Feature("x", "numeric", towers=("y",)),), (Task("y"),))
    with pytest.raises(SchemaError, match="shared part of the model would have no input"):
        FeatureEmbedding(schema)


@pytest.mark.parametrize("detach", [True, False])
def test_dependent_tower_gets_the_parent_logit(detach: bool) -> None:
    schema = _schema()
    towers = TaskTowers(schema, {"click": 4, "buy": 4, "time": 4}, [3], detach_dependency=detach)
    x = {t: torch.randn(5, 4) for t in schema.task_names}
    out = towers(x)
    assert out["click"].shape == (5,)
    assert towers.towers["buy"][0][0].in_features == 5  # 4 inputs + the click logit
    grads = torch.autograd.grad(
        out["buy"].sum(), list(towers.towers["click"].parameters()), allow_unused=True
    )
    reached = any(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    assert reached is (not detach)


def test_mlp_norms_and_validation() -> None:
    assert isinstance(MLP(4, [3], norm="batch")[1], nn.BatchNorm1d)
    assert isinstance(MLP(4, [3], norm="layer")[1], nn.LayerNorm)
    assert MLP(4, []).out_dim == 4
    with pytest.raises(ValueError, match=r"norm must be one of .* got 'group'"):
        MLP(4, [3], norm="group")
    with pytest.raises(ValueError, match=r"unknown activation 'rleu' \(did you mean 'relu'\?\)"):
        MLP(4, [3], activation_name="rleu")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        MLP(4, [3], dropout=1.5)


# ------------------------------------------------------------------------------ fast paths (same math)
def _loop_of_linears(experts: Experts, activation: nn.Module) -> list[nn.Sequential]:
    loops = []
    for e in range(experts.num_experts):
        layers: list[nn.Module] = []
        for weight, bias in zip(experts.weights, experts.biases, strict=True):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[e].T)
                linear.bias.copy_(bias[e])
            layers += [linear, activation]
        loops.append(nn.Sequential(*layers))
    return loops


@pytest.mark.parametrize("activation_name", ["relu", "gelu"])
@pytest.mark.parametrize("sizes", [[6], [8, 5], [7, 6, 3]])
@pytest.mark.parametrize("batched_input", [False, True])
def test_experts_of_any_depth_and_activation_equal_the_loop_with_gradients(
    activation_name: str, sizes: list[int], batched_input: bool
) -> None:
    torch.manual_seed(1)
    experts = Experts(3, 10, sizes, activation_name)
    loops = _loop_of_linears(experts, nn.ReLU() if activation_name == "relu" else nn.GELU())
    x = torch.randn(17, 3, 10) if batched_input else torch.randn(17, 10)
    x_loop = x.clone().requires_grad_()
    x.requires_grad_()
    got = experts(x)
    expected = torch.stack([loops[e](x_loop[:, e] if batched_input else x_loop) for e in range(3)], dim=1)
    assert got.shape == (17, 3, sizes[-1])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    upstream = torch.randn_like(got)
    got.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(x.grad, x_loop.grad, atol=1e-5, rtol=1e-5)
    for layer, (weight, bias) in enumerate(zip(experts.weights, experts.biases, strict=True)):
        for e in range(3):
            linear = loops[e][2 * layer]
            torch.testing.assert_close(weight.grad[e], linear.weight.grad.T, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(bias.grad[e], linear.bias.grad, atol=1e-5, rtol=1e-5)


def test_experts_first_layer_is_read_without_a_copy_and_keeps_its_layout() -> None:
    """weights[0] is [E, in, out] stored in [in, E, out] order: the shared-input GEMM reads it as [in, E*out]
    through a view, its gradient has the same layout, and optimizers and state_dict round trips keep it."""
    experts = Experts(4, 6, [5, 3])
    first = experts.weights[0]
    assert first.shape == (4, 6, 5)
    assert first.transpose(0, 1).is_contiguous()
    flat = first.transpose(0, 1).reshape(6, -1)
    assert flat.data_ptr() == first.data_ptr()
    assert flat._base is not None  # a view, not a copy
    assert experts.weights[1].is_contiguous()

    experts(torch.randn(9, 6)).sum().backward()
    assert first.grad is not None
    assert first.grad.stride() == first.stride()
    torch.optim.Adam(experts.parameters(), fused=True).step()
    assert first.transpose(0, 1).is_contiguous()

    clone = Experts(4, 6, [5, 3])
    state = {k: v.contiguous() for k, v in experts.state_dict().items()}  # from any layout
    clone.load_state_dict(state)
    assert clone.weights[0].transpose(0, 1).is_contiguous()
    x = torch.randn(9, 6)
    torch.testing.assert_close(clone(x), experts(x), atol=0, rtol=0)


def test_experts_dropout_is_active_in_training_only() -> None:
    torch.manual_seed(0)
    experts = Experts(2, 5, [40], dropout=0.5)
    x = torch.randn(8, 5)
    experts.eval()
    torch.testing.assert_close(experts(x), experts(x))
    experts.train()
    out = experts(x)
    reference = experts.eval()(x)
    dropped = (out == 0) & (reference != 0)
    assert dropped.any()
    torch.testing.assert_close(out[~dropped & (out != 0)], 2 * reference[~dropped & (out != 0)])


def test_gate_is_the_softmax_of_its_linear_layer() -> None:
    gate = Gate(6, 5)
    x = torch.randn(11, 6)
    torch.testing.assert_close(gate(x), torch.softmax(gate.linear(x), dim=-1))


@pytest.mark.parametrize("tasks", [1, 3])
def test_task_gates_equal_one_gate_per_task_and_mix_equals_the_per_task_mix(tasks: int) -> None:
    torch.manual_seed(0)
    names = [f"t{k}" for k in range(tasks)]
    gates = TaskGates(names, 6, 4)
    assert list(gates) == names
    assert all(isinstance(gates[t], Gate) for t in names)
    x = torch.randn(13, 6, requires_grad=True)
    experts = torch.randn(13, 4, 5, requires_grad=True)
    weights = gates(x)
    assert weights.shape == (13, tasks, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(13, tasks))
    mixed = mix(weights, experts)
    assert mixed.shape == (13, tasks, 5)

    x_ref = x.detach().clone().requires_grad_()
    experts_ref = experts.detach().clone().requires_grad_()
    per_task = [gates[t](x_ref) for t in names]
    for k, t in enumerate(names):
        torch.testing.assert_close(weights[:, k], per_task[k])
        torch.testing.assert_close(weights[:, k], torch.softmax(gates[t].linear(x_ref), dim=-1))
    expected = torch.stack([mix(g, experts_ref) for g in per_task], dim=1)
    torch.testing.assert_close(mixed, expected)

    # same gradients, each task's gate keeping its own parameters
    fused_params = [p for t in names for p in gates[t].parameters()]
    upstream = torch.randn_like(mixed)
    fused = torch.autograd.grad(mixed, [x, experts, *fused_params], upstream)
    reference = torch.autograd.grad(expected, [x_ref, experts_ref, *fused_params], upstream)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b)
    # the loss of one task does not reach another task's gate
    if tasks > 1:
        grads = torch.autograd.grad(mix(gates(x), experts)[:, 0].sum(), list(gates["t1"].parameters()))
        assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_task_gates_reject_zero_experts() -> None:
    with pytest.raises(ValueError, match=r"a gate needs num_experts >= 1, got 0"):
        TaskGates(["a"], 3, 0)


def test_embedding_lookup_equals_nn_embedding_with_gradients() -> None:
    schema = _schema()
    emb = FeatureEmbedding(schema)
    cat, num = _inputs(schema, batch=9)
    shared, _ = emb(cat, num)
    shared.backward(torch.arange(shared.numel(), dtype=torch.float32).view_as(shared))
    grads = [t.weight.grad.clone() for t in emb.tables]
    emb.zero_grad()
    blocks = []
    for k, table in enumerate(emb.tables):
        codes = cat.index_select(1, getattr(emb, f"columns_{k}")) + getattr(emb, f"offsets_{k}")
        blocks.append(table(codes).reshape(9, -1))
    expected = torch.cat([*blocks, num], dim=1)
    torch.testing.assert_close(shared, expected, atol=0, rtol=0)
    expected.backward(torch.arange(expected.numel(), dtype=torch.float32).view_as(expected))
    for table, grad in zip(emb.tables, grads, strict=True):
        torch.testing.assert_close(table.weight.grad, grad)


def _tower_schema(tasks: int, kind: str = "binary", **task_kw: object) -> Schema:
    extra = {"num_classes": 3} if kind == "multiclass" else {}
    return Schema(
        (Feature("x", kind="numeric"),),
        tuple(Task(f"t{k}", kind=kind, **extra, **task_kw) for k in range(tasks)),  # type: ignore[arg-type]
    )


def _assert_same_towers(
    fast: dict[str, torch.Tensor], slow: dict[str, torch.Tensor], inputs: list[torch.Tensor]
) -> None:
    """Batched towers give the per-task towers' logits and, for each task's loss, the same gradient at every
    input and parameter: each task's loss reaches only its own tower's parameters."""
    for name, logits in slow.items():
        torch.testing.assert_close(fast[name], logits, rtol=1e-12, atol=1e-12)
        kw = {"allow_unused": True, "retain_graph": True}
        g_fast = torch.autograd.grad(fast[name].square().sum(), inputs, **kw)
        g_slow = torch.autograd.grad(logits.square().sum(), inputs, **kw)
        for a, b in zip(g_fast, g_slow, strict=True):
            if b is None:
                assert a is None or torch.count_nonzero(a) == 0
            else:
                assert a is not None
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("tasks", "kind", "sizes", "act"),
    [
        (2, "binary", [3], "relu"),
        (5, "regression", [6, 4], "gelu"),
        (3, "multiclass", [], "relu"),
        (4, "binary", [5], "tanh"),
    ],
)
def test_stacked_towers_equal_the_per_task_towers_with_gradients(
    tasks: int, kind: str, sizes: list[int], act: str
) -> None:
    torch.manual_seed(0)
    schema = _tower_schema(tasks, kind)
    towers = TaskTowers(schema, dict.fromkeys(schema.task_names, 7), sizes, act)
    assert towers.stackable
    x = torch.randn(9, tasks, 7, dtype=torch.float64, requires_grad=True)
    towers.double()
    fast = towers.stacked(x, {})
    slow = towers(dict(zip(schema.task_names, x.unbind(1), strict=True)))
    params = list(towers.parameters())
    _assert_same_towers(fast, slow, [x, *params])
    own = {id(p) for p in towers.towers["t0"].parameters()}
    loss = fast["t1"].sum()
    for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True), strict=True):
        if id(p) in own:
            assert g is None or torch.count_nonzero(g) == 0  # exactly zero, not small


@pytest.mark.parametrize(
    ("tasks", "kind", "sizes", "act"),
    [(2, "binary", [3], "relu"), (5, "regression", [6, 4], "silu"), (3, "multiclass", [], "relu")],
)
def test_towers_on_a_common_input_equal_the_per_task_towers_with_gradients(
    tasks: int, kind: str, sizes: list[int], act: str
) -> None:
    torch.manual_seed(1)
    schema = _tower_schema(tasks, kind)
    towers = TaskTowers(schema, dict.fromkeys(schema.task_names, 7), sizes, act).double()
    x = torch.randn(9, 7, dtype=torch.float64, requires_grad=True)
    fast = towers.common(x, {})
    slow = towers(dict.fromkeys(schema.task_names, x))
    _assert_same_towers(fast, slow, [x, *towers.parameters()])


def test_stacked_towers_take_one_batched_product_per_layer() -> None:
    schema = _tower_schema(5)
    towers = TaskTowers(schema, dict.fromkeys(schema.task_names, 8), [4, 3])
    x = torch.randn(6, 5, 8)
    with torch.profiler.profile() as prof:
        towers.stacked(x, {})
    names = [e.name for e in prof.events()]
    assert names.count("aten::baddbmm") == 3  # two hidden layers and the head, for all 5 tasks
    assert "aten::addmm" not in names
    assert "aten::linear" not in names
    with torch.profiler.profile() as prof:
        towers.common(x[:, 0], {})
    names = [e.name for e in prof.events()]
    assert (names.count("aten::addmm"), names.count("aten::baddbmm")) == (1, 2)  # first layers in one GEMM


def test_stacked_towers_fall_back_where_towers_differ() -> None:
    torch.manual_seed(0)
    dependent = Schema(
        (Feature("x", kind="numeric"),),
        (Task("click", kind="binary"), Task("buy", kind="binary", depends_on="click")),
    )
    cases = [
        (TaskTowers(dependent, {"click": 4, "buy": 4}, [3]), {}),
        (TaskTowers(_tower_schema(3), dict.fromkeys(_tower_schema(3).task_names, 4), [3], norm="layer"), {}),
        (TaskTowers(_tower_schema(2), {"t0": 4, "t1": 6}, [3]), {"t1": torch.randn(5, 2)}),
        # stackable, but every tower also reads its own tower-only features
        (
            TaskTowers(_tower_schema(2), {"t0": 6, "t1": 6}, [3]),
            {"t0": torch.randn(5, 2), "t1": torch.randn(5, 2)},
        ),
    ]
    assert [towers.stackable for towers, _ in cases] == [False, False, False, True]
    for towers, extra in cases:
        names = towers.task_names
        x = torch.randn(5, len(names), 4)
        expected = towers(
            {t: torch.cat([x[:, k], extra[t]], 1) if t in extra else x[:, k] for k, t in enumerate(names)}
        )
        got = towers.stacked(x, extra)
        for t in names:
            torch.testing.assert_close(got[t], expected[t])
        first = x[:, 0]
        expected = towers({t: torch.cat([first, extra[t]], 1) if t in extra else first for t in names})
        got = towers.common(first, extra)
        for t in names:
            torch.testing.assert_close(got[t], expected[t])


def test_stacked_towers_dropout_is_active_in_training_only() -> None:
    schema = _tower_schema(3)
    towers = TaskTowers(schema, dict.fromkeys(schema.task_names, 4), [64], dropout=0.5)
    x = torch.randn(32, 3, 4)
    towers.eval()
    a, b = towers.stacked(x, {}), towers.stacked(x, {})
    assert all(torch.equal(a[t], b[t]) for t in schema.task_names)
    reference = towers({t: x[:, k] for k, t in enumerate(schema.task_names)})
    assert all(torch.allclose(a[t], reference[t], atol=1e-6) for t in schema.task_names)
    towers.train()
    c = towers.stacked(x, {})
    assert not all(torch.allclose(a[t], c[t]) for t in schema.task_names)


def _trace_reference(
    experts: Experts, x: torch.Tensor, weights: torch.Tensor, upstream: torch.Tensor
) -> list:
    """Row t of every parameter's per-task gradient by autograd: L_t = sum(upstream_t * (weights_t @ out))."""
    out = experts(x)
    mixed = torch.bmm(weights, out)  # [B, T, E] @ [B, E, d] -> [B, T, d], task t's tower input
    params = [*experts.weights, *experts.biases]
    rows = [
        torch.autograd.grad((mixed[:, t] * upstream[:, t]).sum(), params, retain_graph=True)
        for t in range(weights.shape[1])
    ]
    return [torch.stack([row[i] for row in rows]) for i in range(len(params))]


@pytest.mark.parametrize("sizes", [(5,), (5, 3), (4, 6, 3)])
@pytest.mark.parametrize("activation_name", ["relu", "identity"])
@pytest.mark.parametrize("dropout", [0.0, 0.4])
@pytest.mark.parametrize("tasks", [1, 3])
def test_experts_trace_gives_every_task_gradient_of_the_experts(
    sizes: tuple[int, ...], activation_name: str, dropout: float, tasks: int
) -> None:
    """ExpertsTrace's closed form equals T autograd gradients (float64, to 1e-12), for any depth, relu or
    identity, with dropout in training (the same forward: the masks are read off the outputs)."""
    torch.manual_seed(0)
    experts = Experts(4, 7, sizes, activation_name, dropout, record_trace=True).double().train()
    x = torch.randn(11, 7, dtype=torch.float64)
    weights = torch.softmax(torch.randn(11, tasks, 4, dtype=torch.float64), dim=-1)
    upstream = torch.randn(11, tasks, sizes[-1], dtype=torch.float64)
    torch.manual_seed(1)
    out = experts(x)
    trace = experts.pop_trace(out)
    assert trace is not None
    assert trace.output is out
    got = trace.task_gradients(weights, upstream)
    torch.manual_seed(1)  # the same dropout masks
    expected = _trace_reference(experts, x, weights, upstream)
    assert [g.shape for g in got] == [(tasks, *p.shape) for p in trace.parameters]
    assert [id(p) for p in trace.parameters] == [id(p) for p in experts.parameters()]
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-12, rtol=1e-10)
        assert not g.requires_grad
    if dropout and activation_name == "relu":  # the masks mattered: without them the gradients differ
        torch.manual_seed(2)
        other = _trace_reference(experts, x, weights, upstream)
        assert any(not torch.allclose(g, o) for g, o in zip(got, other, strict=True))


def _traced(experts: Experts, x: torch.Tensor) -> bool:
    out = experts(x)
    return experts.pop_trace(out) is not None


def test_experts_trace_only_where_the_closed_form_holds() -> None:
    """A trace is recorded only when asked for, and needs a shared input that needs no gradient, relu or
    identity, gradients being recorded, and the output the call returned (a forward hook that replaces it voids
    the trace); pop_trace drops the record."""
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    assert not _traced(Experts(3, 4, (5,)), x)
    experts = Experts(3, 4, (5,), record_trace=True)
    assert _traced(experts, x)
    out = experts(x)
    assert experts.pop_trace(out + 0) is None  # another tensor than the call's output
    assert experts.pop_trace(out) is None  # dropped by the first pop
    assert not _traced(experts, x.clone().requires_grad_())  # the input needs a gradient
    with torch.no_grad():
        assert not _traced(experts, x)
    assert not _traced(experts, torch.randn(6, 3, 4))  # per-expert inputs
    assert not _traced(Experts(3, 4, (5,), "gelu", record_trace=True), x)
    assert _traced(Experts(3, 4, (5,), "identity", record_trace=True), x)
    handle = experts.register_forward_hook(lambda module, inputs, output: output.detach())
    assert not _traced(experts, x)
    handle.remove()
    assert _traced(experts, x)
