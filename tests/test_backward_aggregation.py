"""The engine's gradient-aggregation path: per-task Jacobians in one batched pass, both modes, exact .grad."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.aggregation import create_aggregator
from mtlkit.aggregation.base import GatedJacobian, GradientAggregator
from mtlkit.backward import mtl_backward, representation_jacobian, task_jacobian
from mtlkit.models import Output, create_model, list_models

SCHEMA = Schema(
    (
        Feature("u", "categorical", vocab_size=7, embedding_dim=3),
        Feature("x", "numeric"),
        Feature("z", "numeric"),
    ),
    (Task("click"), Task("buy", depends_on="click"), Task("time", "regression")),
)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.randint(0, 7, (12, 1), generator=g)
    num = torch.randn(12, 2, generator=g)
    labels = torch.stack(
        [torch.randint(0, 2, (12,), generator=g).float() for _ in range(2)] + [torch.randn(12, generator=g)],
        1,
    )
    return cat, num, labels


def _losses(model: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    cat, num, y = _batch(seed)
    out = model.compute(cat, num)
    losses = torch.stack(
        [
            F.binary_cross_entropy_with_logits(out.logits["click"], y[:, 0]),
            F.binary_cross_entropy_with_logits(out.logits["buy"], y[:, 1]),
            F.mse_loss(out.logits["time"], y[:, 2]),
        ]
    )
    return losses, out.shared


@pytest.mark.parametrize("strategy", ["batched", "loop"])
@pytest.mark.parametrize("name", list_models())
def test_batched_jacobian_equals_one_backward_per_task(name: str, strategy: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, SCHEMA)
    params = list(model.shared_parameters())
    if not params:
        params = list(model.parameters())  # nothing shared: check the Jacobian of all parameters instead
    losses, _ = _losses(model)
    batched = task_jacobian(losses, params, name, strategy=strategy)
    rows = []
    for i in range(3):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    torch.zeros(p.numel()) if g is None else g.reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    torch.testing.assert_close(batched, torch.stack(rows), atol=1e-6, rtol=1e-6)


def _reference(model: torch.nn.Module, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shared parameters: sum_i w_i grad L_i; task-private parameters: grad of their own task's loss."""
    losses, _ = _losses(model)
    shared = {id(p) for p in model.shared_parameters()}
    out = {}
    for name, p in model.named_parameters():
        if id(p) in shared:
            grads = [
                torch.autograd.grad(losses[i], p, retain_graph=True, allow_unused=True)[0] for i in range(3)
            ]
            out[name] = sum(
                w * (torch.zeros_like(p) if g is None else g) for w, g in zip(weights, grads, strict=True)
            )
        else:
            (g,) = torch.autograd.grad(losses.sum(), p, retain_graph=True, allow_unused=True)
            out[name] = torch.zeros_like(p) if g is None else g
    return out


def _grads_after(model: torch.nn.Module, mode: str) -> dict[str, torch.Tensor]:
    losses, shared = _losses(model)
    mtl_backward(losses, model, create_aggregator("mean", SCHEMA, mode=mode), shared=shared)
    return {
        n: (torch.zeros_like(p) if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()
    }


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe", "ple"])
def test_parameter_mode_writes_the_mean_direction_and_plain_private_gradients(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, SCHEMA)
    expected = _reference(model, torch.full((3,), 1 / 3))
    for pname, got in _grads_after(model, "parameter").items():
        torch.testing.assert_close(got, expected[pname], atol=1e-6, rtol=1e-5, msg=pname)


def test_representation_mode_equals_parameter_mode_when_everything_shared_is_behind_the_representation() -> (
    None
):
    torch.manual_seed(0)
    model = create_model("shared_bottom", SCHEMA)
    by_parameter = _grads_after(model, "parameter")
    model.zero_grad(set_to_none=True)
    for pname, got in _grads_after(model, "representation").items():
        torch.testing.assert_close(got, by_parameter[pname], atol=1e-6, rtol=1e-5, msg=pname)


def test_representation_mode_aggregates_only_what_flows_through_the_representation() -> None:
    """MMoE's embedding feeds the experts (Output.shared) and the task-private gates: the expert path gets the
    aggregated direction (here the mean), the gate path the plain gradient."""
    torch.manual_seed(0)
    model = create_model("mmoe", SCHEMA)
    table = model.embedding.tables[0].weight
    losses, _ = _losses(model)
    (full,) = torch.autograd.grad(losses.sum(), table)
    hook = model.experts.register_forward_hook(lambda module, inputs, output: output.detach())
    losses, _ = _losses(model)
    (gates_only,) = torch.autograd.grad(losses.sum(), table)
    hook.remove()
    expected = gates_only + (full - gates_only) / 3
    got = _grads_after(model, "representation")["embedding.tables.0.weight"]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    experts = _reference(model, torch.full((3,), 1 / 3))
    model.zero_grad(set_to_none=True)
    after = _grads_after(model, "representation")
    for pname in after:
        if pname.startswith("experts."):  # reached only through the representation: exactly the mean
            torch.testing.assert_close(after[pname], experts[pname], atol=1e-6, rtol=1e-5, msg=pname)


def test_representation_mode_needs_a_shared_representation() -> None:
    model = create_model("single_task", SCHEMA)
    losses, shared = _losses(model)
    assert shared is None
    with pytest.raises(MtlkitError, match="shared"):
        mtl_backward(losses, model, create_aggregator("mean", SCHEMA, mode="representation"), shared=shared)
    with pytest.raises(MtlkitError, match="has none"):
        mtl_backward(losses, model, create_aggregator("mean", SCHEMA), shared=shared)


def test_penalty_gradients_are_added_in_both_modes() -> None:
    for mode in ("parameter", "representation"):
        torch.manual_seed(0)
        model = create_model("l2_soft", SCHEMA, l2_weight=0.5)
        losses, shared = _losses(model)
        penalty = model.regularization()
        mtl_backward(
            losses, model, create_aggregator("mean", SCHEMA, mode=mode), penalty=penalty, shared=shared
        )
        with_penalty = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        losses, shared = _losses(model)
        mtl_backward(losses, model, create_aggregator("mean", SCHEMA, mode=mode), shared=shared)
        (reg_grads) = torch.autograd.grad(model.regularization(), list(model.parameters()), allow_unused=True)
        for (n, p), g in zip(model.named_parameters(), reg_grads, strict=True):
            if g is not None and n in with_penalty:
                torch.testing.assert_close(with_penalty[n], p.grad + g, atol=1e-6, rtol=1e-5)


def test_jacobian_strategy_is_a_size_rule_on_cpu() -> None:
    from mtlkit.backward import CPU_BATCHED_MAX_PARAMETERS, jacobian_strategy
    from mtlkit.errors import MtlkitError

    small = [torch.zeros(CPU_BATCHED_MAX_PARAMETERS)]
    large = [torch.zeros(CPU_BATCHED_MAX_PARAMETERS // 2), torch.zeros(CPU_BATCHED_MAX_PARAMETERS // 2 + 1)]
    assert jacobian_strategy(small) == "batched"
    assert jacobian_strategy(large) == "loop"
    assert jacobian_strategy(large, "batched") == "batched"
    assert jacobian_strategy(small, "loop") == "loop"
    with pytest.raises(MtlkitError, match="'vmap'"):
        jacobian_strategy(small, "vmap")


def _representation_grads(
    model: torch.nn.Module,
    method: str | GradientAggregator,
    with_mix: bool,
    mode: str = "representation",
    penalty: Callable[[Output], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Every parameter's gradient after one mtl_backward on batch 3 (``method``: a registered name, or an
    aggregator), with or without the model's Output.mix; ``penalty`` builds the penalty from the model's output."""
    cat, num, y = _batch(3)
    out = model.compute(cat, num)
    losses = torch.stack(
        [
            F.binary_cross_entropy_with_logits(out.logits["click"], y[:, 0]),
            F.binary_cross_entropy_with_logits(out.logits["buy"], y[:, 1]),
            F.mse_loss(out.logits["time"], y[:, 2]),
        ]
    )
    model.zero_grad(set_to_none=True)
    aggregator = create_aggregator(method, SCHEMA, mode=mode) if isinstance(method, str) else method
    mtl_backward(
        losses,
        model,
        aggregator,
        penalty=None if penalty is None else penalty(out),
        shared=out.shared,
        mix=out.mix if with_mix else None,
    )
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _results(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[object]:
    """Wrap ``owner.name`` (a module function or a class's method) so that each call's result is appended to the
    returned list; the call itself is unchanged."""
    results: list[object] = []
    original = getattr(owner, name)

    def wrapper(*args: object) -> object:
        results.append(original(*args))
        return results[-1]

    monkeypatch.setattr(owner, name, wrapper)
    return results


def _assert_same_grads(
    got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], relative: bool = False
) -> None:
    """The same parameters with the same gradients (to 1e-6, times the largest entry when ``relative``)."""
    assert got.keys() == expected.keys()
    for pname, grad in got.items():
        scale = max(1.0, float(expected[pname].abs().max())) if relative else 1.0
        torch.testing.assert_close(grad, expected[pname], atol=1e-6 * scale, rtol=1e-5, msg=pname)


@pytest.mark.parametrize("model_name", ["mmoe", "omoe", "dselect_k", "cgc", "ple"])
@pytest.mark.parametrize("detach", [True, False], ids=["detached", "read-through"])
@pytest.mark.parametrize("method", ["mean", "mgda", "pcgrad", "imtl", "graddrop"])
def test_a_gated_mix_gives_the_same_gradients_as_the_generic_path(
    method: str, detach: bool, model_name: str
) -> None:
    """These models report Output.mix: representation mode then forms the per-task gradients from the gradient at
    the tower inputs (kept in factors for gram-based methods): inside the one backward where the mix is a batched
    matmul of the gates and Output.shared (MMoE, DSelect-k, CGC, PLE) and the method a weighting, else from a
    backward through the towers and a second one from the tower inputs (OMoE's broadcast view; GradDrop); every
    parameter's gradient is that of the generic path. With a read-through dependency (one loss reaches two
    towers) the engine must not use the mix."""
    torch.manual_seed(0)
    model = create_model(model_name, SCHEMA, detach_dependency=detach)
    torch.manual_seed(1)
    assert model.compute(*_batch()[:2]).mix is not None
    via_mix = _representation_grads(model, method, with_mix=True)
    generic = _representation_grads(model, method, with_mix=False)
    _assert_same_grads(via_mix, generic)


GATED_MIX_MODELS = {"mmoe", "omoe", "dselect_k", "cgc", "ple"}


@pytest.mark.parametrize("name", list_models())
def test_a_reported_gated_mix_gives_the_generic_per_task_gradients(name: str) -> None:
    """Every model that reports Output.mix (exactly the mixture-of-experts models with one gate per task) gets
    from it the per-task gradients at Output.shared that the generic batched pass computes."""
    torch.manual_seed(0)
    model = create_model(name, SCHEMA)
    cat, num, y = _batch(5)
    out = model.compute(cat, num)
    assert (out.mix is not None) == (name in GATED_MIX_MODELS)
    if out.mix is None:
        return
    losses = torch.stack(
        [
            F.binary_cross_entropy_with_logits(out.logits["click"], y[:, 0]),
            F.binary_cross_entropy_with_logits(out.logits["buy"], y[:, 1]),
            F.mse_loss(out.logits["time"], y[:, 2]),
        ]
    )
    assert out.shared is not None
    generic = task_jacobian(losses, [out.shared], name, strategy="loop")
    via_mix = representation_jacobian(losses, out.shared, name, out.mix, model)
    assert isinstance(via_mix, GatedJacobian)  # kept in its two factors
    via_mix = via_mix.dense()
    torch.testing.assert_close(via_mix, generic, atol=1e-6, rtol=1e-5)


def test_freezing_a_parameter_after_a_step_is_seen_by_the_gated_mix_path() -> None:
    """The engine remembers, per model, which leaves lie beyond the gated mix; a change of which parameters are
    trainable makes it look again, so the gradients stay those of the generic path."""
    torch.manual_seed(0)
    model = create_model("mmoe", SCHEMA)
    _representation_grads(model, "mgda", with_mix=True)
    tower = next(model.towers.parameters())
    tower.requires_grad_(False)
    via_mix = _representation_grads(model, "mgda", with_mix=True)
    generic = _representation_grads(model, "mgda", with_mix=False)
    assert not any(p is tower for p in model.parameters() if p.grad is not None)
    _assert_same_grads(via_mix, generic)
    tower.requires_grad_(True)  # trainable again: it gets its gradient back
    assert "towers.towers.click.0.0.weight" in _representation_grads(model, "mgda", with_mix=True)


@pytest.mark.parametrize("model_name", ["mmoe", "omoe", "dselect_k"])
def test_frozen_gates_and_experts_with_the_gated_mix(model_name: str) -> None:
    """Frozen gates or frozen experts, on the single-backward path (MMoE, DSelect-k) and the two-backward one
    (OMoE): the frozen parameters get no gradient and the others those of the generic path."""
    torch.manual_seed(0)
    model = create_model(model_name, SCHEMA)
    for frozen in ("gate", "experts"):
        for pname, p in model.named_parameters():
            p.requires_grad_(frozen not in pname)
        via_mix = _representation_grads(model, "mgda", with_mix=True)
        generic = _representation_grads(model, "mgda", with_mix=False)
        assert not any(frozen in k for k in via_mix)
        _assert_same_grads(via_mix, generic)


@pytest.mark.parametrize("method", ["mgda", "graddrop"])
@pytest.mark.parametrize("detach", [True, False], ids=["detached", "read-through"])
@pytest.mark.parametrize("model_name", ["mmoe", "omoe", "dselect_k", "cgc", "ple"])
def test_representation_mode_aggregates_inside_one_backward_where_the_mix_is_a_matmul(
    model_name: str, detach: bool, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The single-backward path is taken exactly where the mix's node reads the gates and Output.shared directly,
    no loss reaches two towers, and the method is a weighting of the task gradients or (GradDrop) the node's
    product for Output.shared, which the direction replaces, takes ATen's BLAS path (E T d >= 400); elsewhere the
    engine differentiates in two steps."""
    from mtlkit import backward as engine

    taken = _results(monkeypatch, engine, "_backward_through_mix")
    torch.manual_seed(0)
    model = create_model(model_name, SCHEMA, detach_dependency=detach)
    mix = model.compute(*_batch()[:2]).mix
    assert mix is not None
    blas = mix.weights.shape[1] * mix.weights.shape[2] * mix.inputs.shape[-1] >= 400
    _representation_grads(model, method, with_mix=True)
    assert len(taken) == (1 if detach and model_name != "omoe" and (method != "graddrop" or blas) else 0)


@pytest.mark.parametrize(("experts", "width", "hooks"), [(2, 4, False), (8, 32, True)])
def test_graddrop_aggregates_in_one_backward_only_where_the_product_is_blas(
    experts: int, width: int, hooks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GradDrop's direction replaces the plain sum the mix's node forms for Output.shared: inside the one backward
    where that product is a BLAS one (8 experts x 3 tasks x 32 = 768 multiply-adds per row), else (2 x 3 x 4 = 24)
    after a backward through the towers; the gradients are the generic path's either way (the same draws)."""
    from mtlkit import backward as engine

    taken = _results(monkeypatch, engine, "_backward_through_mix")
    torch.manual_seed(0)
    model = create_model("mmoe", SCHEMA, num_experts=experts, expert_sizes=[width], tower_sizes=[4])
    via_mix = _representation_grads(model, "graddrop", with_mix=True)
    generic = _representation_grads(model, "graddrop", with_mix=False)
    assert len(taken) == (1 if hooks else 0)
    _assert_same_grads(via_mix, generic)


@pytest.mark.parametrize(
    ("fixed", "scaled"),
    [([0.7, 1.3, 0.5], True), ([1.0, 0.0, 0.5], False), ([1e-9, 1.0, 1.0], False), ([-0.4, 2.0, 1e5], True)],
    ids=["moderate", "a-zero-weight", "a-tiny-weight", "negative-and-large"],
)
def test_both_ways_of_aggregating_at_the_mix_give_the_generic_gradients(
    fixed: list[float], scaled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the one backward the engine either scales the tower inputs' gradient by the weights (and divides the
    gates' gradient back) or replaces the plain sum at Output.shared by the direction: whichever the weights
    allow, every parameter gets the generic path's gradient."""
    decisions = _results(monkeypatch, GatedJacobian, "scalable")
    grads = []
    for with_mix in (True, False):
        torch.manual_seed(0)
        aggregator = create_aggregator("mgda", SCHEMA, mode="representation")
        monkeypatch.setattr(aggregator, "weights", lambda gram: torch.tensor(fixed, dtype=torch.float64))
        grads.append(_representation_grads(create_model("mmoe", SCHEMA), aggregator, with_mix))
    assert decisions == [scaled]
    _assert_same_grads(*grads, relative=True)  # weights up to 1e5: float32 rounding scales with them


def test_a_penalty_through_the_tower_inputs_keeps_its_plain_gradient() -> None:
    """A penalty is differentiated outside the aggregation: its gradient at Output.shared is not aggregated, even
    when it reads the tower inputs themselves (equal to the generic path's)."""

    def penalty(out: Output) -> torch.Tensor:
        assert out.mix is not None
        return 0.3 * out.mix.inputs.square().mean()

    grads = []
    for with_mix in (True, False):
        torch.manual_seed(0)
        grads.append(_representation_grads(create_model("mmoe", SCHEMA), "mgda", with_mix, penalty=penalty))
    _assert_same_grads(*grads)


def test_an_error_inside_the_single_backward_reaches_the_caller_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The aggregation runs inside autograd's backward there: its error keeps its type and message."""
    aggregator = create_aggregator("mgda", SCHEMA, mode="representation")

    def refuse(gram: torch.Tensor) -> torch.Tensor:
        raise MtlkitError("mgda: the Gram matrix holds nan")

    monkeypatch.setattr(aggregator, "weights", refuse)
    torch.manual_seed(0)
    with pytest.raises(MtlkitError, match="holds nan"):
        _representation_grads(create_model("mmoe", SCHEMA), aggregator, with_mix=True)


def test_representation_mode_reduces_the_gram_matrix_not_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under DDP the rows of the representation Jacobian belong to each process's own batch: the engine hands the
    Gram matrix (T x T) to the all-reduce hook, never the per-row matrix."""
    from mtlkit import backward as engine

    seen: list[tuple[int, ...]] = []

    def record(gram: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(gram.shape))
        return gram

    def forbidden(jacobian: torch.Tensor) -> torch.Tensor:
        raise AssertionError("representation mode must not average the per-row matrix across processes")

    monkeypatch.setattr(engine, "_all_reduce_gram", record)
    monkeypatch.setattr(engine, "_all_reduce_hook", forbidden)
    for name in ("mmoe", "shared_bottom"):  # with and without a gated mix
        torch.manual_seed(0)
        _representation_grads(create_model(name, SCHEMA), "mgda", with_mix=True)
    assert seen == [(3, 3), (3, 3)]


def test_a_one_process_group_changes_nothing(tmp_path: Path) -> None:
    """With torch.distributed initialised (gloo, world size 1) the hooks run and the gradients are unchanged."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = create_model("mmoe", SCHEMA)
    alone = _representation_grads(model, "mgda", with_mix=True)
    model.zero_grad(set_to_none=True)
    by_param = _grads_after(model, "parameter")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped = _representation_grads(model, "mgda", with_mix=True)
        model.zero_grad(set_to_none=True)
        grouped_param = _grads_after(model, "parameter")
    finally:
        dist.destroy_process_group()
    for pname, got in grouped.items():
        torch.testing.assert_close(got, alone[pname], msg=pname)
    for pname, got in grouped_param.items():
        torch.testing.assert_close(got, by_param[pname], msg=pname)


NUMERIC_SCHEMA = Schema((Feature("x", "numeric"), Feature("z", "numeric")), SCHEMA.tasks)


@pytest.mark.parametrize("features", ["embedding", "numeric"])
@pytest.mark.parametrize("strategy", ["batched", "loop"])
@pytest.mark.parametrize("model_name", ["mmoe", "omoe", "dselect_k", "cgc", "ple"])
@pytest.mark.parametrize("detach", [True, False], ids=["detached", "read-through"])
@pytest.mark.parametrize("method", ["mean", "mgda", "graddrop"])
def test_parameter_mode_with_a_gated_mix_gives_the_generic_gradients(
    method: str, detach: bool, model_name: str, strategy: str, features: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parameter mode with Output.mix: one backward through the towers, then the per-task gradients of the
    experts in closed form where they are all the shared parameters (MMoE, DSelect-k on numeric inputs:
    ExpertsTrace), else the per-task products start at the tower inputs (MMoE, OMoE, DSelect-k; CGC / PLE and
    read-through dependencies take the generic path), or at Output.shared from the mix's factors where no shared
    parameter reaches the towers beside it; every parameter's gradient is that of the generic path, batched or
    looped."""
    from mtlkit import backward as engine
    from mtlkit.models.layers import ExpertsTrace

    monkeypatch.setattr(engine, "CPU_BATCHED_MAX_PARAMETERS", 10**9 if strategy == "batched" else 0)
    routes = _results(monkeypatch, engine, "_beside_shared")
    closed = _results(monkeypatch, ExpertsTrace, "task_gradients")
    torch.manual_seed(0)
    schema = SCHEMA if features == "embedding" else NUMERIC_SCHEMA
    model = create_model(model_name, schema, detach_dependency=detach)
    via_mix = _representation_grads(model, method, with_mix=True, mode="parameter")
    generic = _representation_grads(model, method, with_mix=False, mode="parameter")
    _assert_same_grads(via_mix, generic)
    # the closed form: the experts are all the shared parameters (no shared embedding; OMoE's one gate is shared)
    closed_form = model_name in ("mmoe", "dselect_k") and features == "numeric" and detach
    assert len(closed) == (1 if closed_form else 0)
    # beside Output.shared: OMoE's one gate is shared; MMoE's gates read the shared embedding when there is one;
    # DSelect-k's default gates are static (they read no input)
    beside_expected = {"mmoe": features == "embedding", "omoe": True, "dselect_k": False}
    beside = model_name in beside_expected and detach and not closed_form
    assert routes == ([beside_expected[model_name]] if beside else [])


@pytest.mark.parametrize("model_name", ["mmoe", "dselect_k"])
@pytest.mark.parametrize("sizes", [(6,), (6, 4)])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("method", ["mean", "mgda", "pcgrad"])
def test_parameter_mode_takes_the_experts_closed_form_where_they_are_all_that_is_shared(
    method: str, dropout: float, sizes: tuple[int, ...], model_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On numeric inputs the experts are every shared parameter: parameter mode takes their per-task gradients
    from ExpertsTrace (once per step) and every parameter's gradient is that of the generic path, for deeper
    experts and with dropout (the same masks: the forward is seeded); frozen expert weights void it."""
    from mtlkit.models.layers import ExpertsTrace

    closed = _results(monkeypatch, ExpertsTrace, "task_gradients")
    torch.manual_seed(0)
    model = create_model(model_name, NUMERIC_SCHEMA, expert_sizes=sizes, dropout=dropout).train()
    torch.manual_seed(1)
    via_trace = _representation_grads(model, method, with_mix=True, mode="parameter")
    assert len(closed) == 1
    torch.manual_seed(1)
    generic = _representation_grads(model, method, with_mix=False, mode="parameter")
    _assert_same_grads(via_trace, generic)
    model.experts.weights[0].requires_grad_(False)
    torch.manual_seed(1)
    _representation_grads(model, method, with_mix=True, mode="parameter")
    assert len(closed) == 1  # not all of the experts' parameters are shared ones now


def test_the_walk_beside_output_shared_follows_other_outputs_of_its_node() -> None:
    """Parameter mode may start at Output.shared only when no shared parameter reaches the tower inputs beside
    it: the walk stops at the edge into ``shared`` itself, not at every edge into the node that made it."""
    from mtlkit.backward import _leaves

    behind = torch.randn(4, requires_grad=True)
    gate = torch.randn(2, requires_grad=True)
    shared, other = (behind * 2).split(2)
    assert {id(x) for x in _leaves((shared * gate).grad_fn, shared.grad_fn, shared.output_nr)} == {id(gate)}
    # the split's other output reaches ``behind`` without passing through ``shared``
    both = {id(x) for x in _leaves((shared * gate + other).grad_fn, shared.grad_fn, shared.output_nr)}
    assert both == {id(gate), id(behind)}


def test_parameter_mode_sees_a_parameter_frozen_after_a_step() -> None:
    """The engine keeps each model's split into shared and private parameters between steps and finds it again
    when which parameters are trainable changes: a shared parameter frozen after a step gets no gradient, a
    private one frozen gets none either, and the rest equal those of a model never stepped through the engine."""
    torch.manual_seed(0)
    model = create_model("mmoe", SCHEMA)
    _representation_grads(model, "mgda", with_mix=True, mode="parameter")  # the split is cached
    frozen = ["experts.biases.0", "towers.towers.click.0.0.bias"]
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    grads = _representation_grads(model, "mgda", with_mix=True, mode="parameter")
    assert set(frozen).isdisjoint(grads)
    assert "experts.weights.0" in grads
    fresh = create_model("mmoe", SCHEMA)
    fresh.load_state_dict(model.state_dict())
    for name, p in fresh.named_parameters():
        p.requires_grad_(name not in frozen)
    _assert_same_grads(grads, _representation_grads(fresh, "mgda", with_mix=True, mode="parameter"))
