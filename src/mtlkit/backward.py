"""The backward engine: the only code that turns task losses into gradients and writes ``.grad``.

``mtl_backward(losses, model, balancer, penalty, shared)`` asks the balancer what it needs (``balancer.needs``,
data declared on its class) and computes just that:

* ``"losses"``: the loss values; the engine differentiates ``balancer(losses) + penalty`` once.
* ``"shared_grad_norms"``: the norms ``||d L_i / d shared||`` of every task's gradient at ``Output.shared`` (the
  representation where task-specific computation begins), a vector [T] handed to
  ``balancer.observe_grad_norms`` before ``balancer(losses)`` is evaluated (GradNorm). All T gradients come from
  one vectorised ``torch.autograd.grad(..., is_grads_batched=True)`` call that only walks the task-specific part
  of the graph (towers, gates); the graph is kept for the single backward of the objective that follows.

* ``"gram"`` / ``"jacobian"`` (gradient aggregators): the per-task gradients [T, D], in the aggregator's mode:

  - ``parameter``: of the shared parameters (D = their total size), all T rows from one batched
    ``autograd.grad`` over the rows of the identity. The aggregated direction is written into the shared
    parameters' ``.grad``; every task-private parameter gets the plain gradient of its own task's loss (the
    gradient of the loss sum restricted to it, which no other task reaches). With a separable gated mix (see
    below) the T products start at the tower inputs, after one backward through the towers, or at
    ``Output.shared`` with the outer products below as cotangents when no shared parameter reaches the tower
    inputs beside it (no shared embedding feeding the gates, say), or, when the experts that computed
    ``Output.shared`` are all the shared parameters and the mix carries their trace (``GatedMix.source``:
    :class:`~mtlkit.models.layers.ExpertsTrace`), from the experts' closed form: one product per layer for all T
    tasks, no autograd pass. The gates get their plain gradients in the backward through the towers.
  - ``representation`` (the MGDA-UB trick): of ``Output.shared`` (D = its size), through the task-specific
    part only. With d the aggregated direction there and g_i the rows, one backward with two roots,
    ``sum_i L_i`` and ``Output.shared`` with gradient ``d - sum_i g_i``, gives every parameter its plain gradient
    with the shared representation's contribution replaced by d: exact also for shared parameters that tasks
    reach along other paths (PLE's lower levels feed task experts too). When the model reports a
    :class:`~mtlkit.models.base.GatedMix` (``Output.mix``: task t's tower alone reads the gated sum
    ``inputs[:, t]`` of the shared experts), the T rows are the outer products of the gate weights with the
    gradient at ``inputs`` (the towers are disjoint, so its slice t is d L_t / d inputs[:, t]), instead of T
    vector-Jacobian products through every tower (:func:`representation_jacobian`). Where the node that computed
    ``inputs`` reads the gate weights and ``Output.shared`` directly (a batched matmul: MMoE, DSelect-k, CGC,
    PLE) and the method is a weighting of the task gradients (or GradDrop, which acts on coordinates, where that
    node's product is a BLAS one: ``_hooks_pay``), all of it happens inside the one backward of
    sum_i L_i: hooks on that node, which receives the gradient at ``inputs`` once the towers are done, make it
    hand ``Output.shared`` the direction d instead of the plain sum while the gates keep their plain gradient
    (:func:`_backward_through_mix`). Otherwise (OMoE's broadcast view of one gated sum; GradDrop on a product in
    ATen's naive loop), one backward goes through the towers and, when nothing behind the towers is also behind the
    mix, the final one starts at the mix itself (inputs = weights @ shared):
    ``Output.shared`` with d, and the gate weights with their plain gradient (d L / d inputs) @ shared^T.

  Under DDP (hooks for the coming distributed trainer): in parameter mode every process holds the same shared
  parameters, so the per-task gradient matrix is averaged across processes before aggregation
  (``_all_reduce_hook``); in representation mode the rows belong to each process's own batch, so the matrices
  are not averaged (that would mix different rows): the global Gram matrix, the sum of the processes' Gram
  matrices, is what the weights must come from (``_all_reduce_gram``), and each process combines its own rows.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.autograd.graph import Node

from mtlkit.aggregation.base import BMM_NAIVE_LIMIT, GatedJacobian, GradientAggregator
from mtlkit.errors import MtlkitError
from mtlkit.weighting.base import LossWeighting

if TYPE_CHECKING:
    from mtlkit.models.base import GatedMix

log = logging.getLogger(__name__)

#: What an engine of this version can provide to a balancer.
SUPPORTED_NEEDS = frozenset({"losses", "shared_grad_norms", "gram", "jacobian"})
#: Needs that make the balancer a gradient aggregator (it consumes per-task gradients, not loss values).
GRADIENT_NEEDS = frozenset({"gram", "jacobian"})

#: Model classes for which batched per-task gradients failed and the loop was used (logged once per class).
_LOOPED: set[str] = set()


def mtl_backward(
    losses: Tensor,
    model: nn.Module,
    balancer: LossWeighting | GradientAggregator,
    penalty: Tensor | None = None,
    shared: Tensor | None = None,
    mix: GatedMix | None = None,
) -> Tensor:
    """Write the gradients of the balanced objective into ``.grad``; returns the objective (detached).

    Args:
        losses: per-task losses [T] in schema order (still attached to the graph).
        model: the model whose parameters receive gradients.
        balancer: the balancing method; ``balancer.needs`` says what it consumes.
        penalty: scalar added to the objective unweighted (model regularisation), or None.
        shared: ``Output.shared``, where representation-level quantities are taken (per-task gradient norms).
        mix: ``Output.mix``, how the towers read ``shared`` (None: not a gated mix, or unknown).
    """
    needs = set(balancer.needs)
    missing = needs - SUPPORTED_NEEDS
    if missing:
        raise MtlkitError(
            f"balancer {type(balancer).__name__} needs {sorted(missing)}, which this engine cannot provide yet"
        )
    if needs & GRADIENT_NEEDS:
        assert isinstance(balancer, GradientAggregator)
        return _aggregate(losses, model, balancer, penalty, shared, mix)
    assert isinstance(balancer, LossWeighting)
    if "shared_grad_norms" in needs:
        checked = _check_shared(shared, model, balancer)
        balancer.observe_grad_norms(shared_grad_norms(losses, checked, type(model).__name__, mix, model))
    objective = balancer(losses)
    if penalty is not None:
        objective = objective + penalty
    objective.backward()
    return objective.detach()


def shared_grad_norms(
    losses: Tensor,
    shared: Tensor,
    model_name: str = "model",
    mix: GatedMix | None = None,
    model: nn.Module | None = None,
) -> Tensor:
    """``||d L_i / d shared||_2`` for every task i: a detached vector [T] (float32 or the losses' dtype).

    The rows come from :func:`representation_jacobian`. The graph is retained for the objective's backward.
    """
    grads = representation_jacobian(losses, shared, model_name, mix, model)
    if isinstance(grads, GatedJacobian):
        return grads.squared_norms().clamp(min=0).sqrt().to(losses.dtype)
    return torch.linalg.vector_norm(grads, dim=1).detach()


def representation_jacobian(
    losses: Tensor,
    shared: Tensor,
    model_name: str = "model",
    mix: GatedMix | None = None,
    model: nn.Module | None = None,
) -> Tensor | GatedJacobian:
    """The per-task gradients of ``losses`` [T] at the shared representation: [T, shared.numel()].

    With a :class:`~mtlkit.models.base.GatedMix` (and no task whose tower reads another task's output through
    the graph, which would let one loss reach two towers): one ordinary backward of sum_i L_i to ``mix.inputs``
    [B, T, d], whose slice t is d L_t / d inputs[:, t], and row t = weights[:, t, :, None] * that[:, None, :],
    kept as a :class:`~mtlkit.aggregation.base.GatedJacobian` (its two factors; ``.dense()`` builds it).
    Otherwise the matrix from one batched ``autograd.grad`` over the rows of the identity (the representation is
    an activation, not parameters, so always batched, with its loop fallback). The graph is retained.
    """
    if _usable_mix(losses, shared, model_name, mix, model):
        assert mix is not None
        (upstream,) = torch.autograd.grad(losses.sum(), mix.inputs, retain_graph=True, allow_unused=True)
        return GatedJacobian(mix.weights, torch.zeros_like(mix.inputs) if upstream is None else upstream)
    return task_jacobian(losses, [shared], model_name, strategy="batched")


def _usable_mix(
    losses: Tensor, shared: Tensor, model_name: str, mix: GatedMix | None, model: nn.Module | None
) -> bool:
    """Whether ``mix`` gives the per-task gradients at ``shared`` (see representation_jacobian); a mix whose
    shapes do not fit the losses and ``shared`` is an error naming them."""
    read_through = getattr(model, "read_through_tasks", None)
    if mix is None or (read_through is not None and read_through()):
        return False
    t = losses.shape[0]
    weights, inputs = mix.weights, mix.inputs
    if (
        weights.dim() != 3
        or weights.shape[1] != t
        or weights.shape[0] * weights.shape[2] * inputs.shape[-1] != shared.numel()
        or inputs.shape[:2] != weights.shape[:2]
    ):
        raise MtlkitError(
            f"{model_name}: Output.mix does not match {t} task losses and Output.shared of shape "
            f"{list(shared.shape)} (gate weights {list(weights.shape)}, tower inputs {list(inputs.shape)})"
        )
    return True


@dataclass
class _Record:
    """What the engine found out about a model, kept while which of its parameters are trainable stays the same
    (the architecture fixes the rest: a model must not gain parameters after its first step). Each field is
    filled the first time a step asks for it."""

    parameters: tuple[nn.Parameter, ...]
    trainable: tuple[bool, ...]
    #: (``model.shared_parameters()``, the other trainable parameters, the shared ones' ids)
    split: tuple[list[Tensor], list[Tensor], set[int]] | None = None
    #: whether the graph was walked for ``beyond``: the leaves beyond the model's gated mix (None: not separable)
    walked: bool = False
    beyond: tuple[Tensor, ...] | None = None
    #: ids of the leaves that reach the tower inputs other than through Output.shared (the gates, PLE's task
    #: experts...), found the first time parameter mode asks (see _jacobian_from_inputs)
    beside_shared: frozenset[int] | None = None


_RECORDS: weakref.WeakKeyDictionary[nn.Module, _Record] = weakref.WeakKeyDictionary()


def _trainable(parameters: tuple[nn.Parameter, ...]) -> tuple[bool, ...]:
    return tuple(p.requires_grad for p in parameters)


def _record(model: nn.Module) -> _Record:
    """The engine's record of ``model``, started afresh when which of its parameters are trainable changed."""
    record = _RECORDS.get(model)
    if record is None or _trainable(record.parameters) != record.trainable:
        parameters = tuple(model.parameters())
        record = _RECORDS[model] = _Record(parameters, _trainable(parameters))
    return record


def _leaves(root: Node | None, stop: Node | None, output: int | None = None) -> set[Tensor]:
    """The leaf tensors (AccumulateGrad variables) of the graph below ``root``, not descending below ``stop``
    (below its ``output``-th output only, when given: an edge into another of its outputs is followed)."""
    found: dict[int, Tensor] = {}
    seen: set[int] = set()
    todo: list[tuple[Node | None, int]] = [(root, -1)]
    while todo:
        node, nr = todo.pop()
        if node is None or id(node) in seen or (node is stop and (output is None or nr == output)):
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            found[id(variable)] = variable
        todo.extend(node.next_functions)
    return set(found.values())


def _beyond_mix(model: nn.Module, total: Tensor, mix: GatedMix) -> tuple[Tensor, ...] | None:
    """The leaves (tower parameters, tower-only embeddings...) that the losses reach without passing through
    ``mix.inputs``, or None when one of them is also behind ``mix.inputs`` (then the towers' gradients cannot be
    taken apart from the rest). Found by walking the graph once per model record (:func:`_record`)."""
    record = _record(model)
    if not record.walked:
        stop = mix.inputs.grad_fn
        beyond = _leaves(total.grad_fn, stop)
        behind = {id(x) for x in _leaves(stop, None)}
        record.beyond = None if any(id(x) in behind for x in beyond) else tuple(beyond)
        record.walked = True
    return record.beyond


def _parameter_split(model: nn.Module) -> tuple[list[Tensor], list[Tensor], set[int]]:
    """(``model.shared_parameters()``, the other trainable parameters, the shared ones' ids), found once per model
    record (:func:`_record`): walking the module tree for them took 0.28 ms of a 2.3 ms step at the MMoE paper's
    size."""
    record = _record(model)
    if record.split is None:
        shared: list[Tensor] = list(model.shared_parameters())  # type: ignore[operator]
        shared_ids = {id(p) for p in shared}
        private: list[Tensor] = [p for p in record.parameters if p.requires_grad and id(p) not in shared_ids]
        record.split = (shared, private, shared_ids)
    return record.split


#: On CPU, per-task gradients of more shared parameters than this are computed with one backward per task: there
#: the batched vector-Jacobian products spend most of their time in layout copies of the batched matmuls (measured
#: 2x slower than the loop for MMoE at the production size of benchmarks/aggregation_step.py), while for small
#: models the single batched pass saves per-operation overhead. See docs/decisions.md.
CPU_BATCHED_MAX_PARAMETERS = 100_000

#: ``auto`` (the rule above), ``batched`` (always one batched pass) or ``loop`` (one backward per task).
JACOBIAN_STRATEGIES = ("auto", "batched", "loop")


def jacobian_strategy(inputs: list[Tensor], strategy: str = "auto") -> str:
    """``batched`` or ``loop`` for these inputs: deterministic (never timing-based), so runs stay reproducible."""
    if strategy not in JACOBIAN_STRATEGIES:
        raise MtlkitError(f"jacobian strategy must be one of {JACOBIAN_STRATEGIES}, got {strategy!r}")
    if strategy != "auto":
        return strategy
    on_cpu = all(x.device.type == "cpu" for x in inputs)
    size = sum(x.numel() for x in inputs)
    return "loop" if on_cpu and size > CPU_BATCHED_MAX_PARAMETERS else "batched"


def task_jacobian(
    losses: Tensor, inputs: list[Tensor], model_name: str = "model", strategy: str = "auto"
) -> Tensor:
    """The per-task gradients of ``losses`` [T] with respect to ``inputs``, flattened and joined: [T, D].

    ``batched``: all rows from one batched ``autograd.grad`` (T vector-Jacobian products at once); where an
    operation has no batching rule, one ``autograd.grad`` per task (logged once per model class). ``loop``: one
    ``autograd.grad`` per task. ``auto`` chooses by :func:`jacobian_strategy`. The graph is retained.
    """
    t = losses.shape[0]
    identity = torch.eye(t, dtype=losses.dtype, device=losses.device)
    return vjp_rows(losses, identity, inputs, model_name, strategy)


def vjp_rows(
    outputs: Tensor,
    cotangents: Tensor,
    inputs: list[Tensor],
    model_name: str = "model",
    strategy: str = "auto",
) -> Tensor:
    """Row i = the vector-Jacobian product of ``outputs`` with ``cotangents[i]`` at ``inputs``, flattened and
    joined: [N, D] for cotangents [N, *outputs.shape]. Batched (one ``autograd.grad(is_grads_batched=True)``,
    falling back to the loop where an operation has no batching rule, logged once per model) or looped, by
    ``strategy`` (see :func:`jacobian_strategy`). The graph is retained."""
    if not inputs:
        raise MtlkitError(f"per-task gradients of {model_name}: no inputs to differentiate")
    n = cotangents.shape[0]
    if jacobian_strategy(inputs, strategy) == "batched":
        try:
            grads = torch.autograd.grad(
                outputs,
                inputs,
                grad_outputs=cotangents,
                is_grads_batched=True,
                retain_graph=True,
                allow_unused=True,
            )
        except RuntimeError as exc:  # vmap over an operation without a batching rule
            if model_name not in _LOOPED:
                _LOOPED.add(model_name)
                log.warning(
                    "per-task gradients of %s: batched autograd failed (%s); falling back to one backward per task",
                    model_name,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
        else:
            rows = [
                torch.zeros(n, x.numel(), dtype=cotangents.dtype, device=cotangents.device)
                if g is None
                else g.reshape(n, -1)
                for g, x in zip(grads, inputs, strict=True)
            ]
            return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)  # one input: no copy
    jacobian = torch.empty(
        n, sum(x.numel() for x in inputs), dtype=cotangents.dtype, device=cotangents.device
    )
    for i in range(n):
        grads_i = torch.autograd.grad(
            outputs, inputs, grad_outputs=cotangents[i], retain_graph=True, allow_unused=True
        )
        offset = 0
        for g, x in zip(grads_i, inputs, strict=True):
            piece = jacobian[i, offset : offset + x.numel()]
            if g is None:
                piece.zero_()
            else:
                piece.copy_(g.reshape(-1))
            offset += x.numel()
    return jacobian


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce_hook(jacobian: Tensor) -> Tensor:
    """Under DDP, the per-task gradient matrix of the shared parameters is averaged across processes here."""
    if _distributed():
        torch.distributed.all_reduce(jacobian, op=torch.distributed.ReduceOp.AVG)
    return jacobian


def _all_reduce_gram(gram: Tensor) -> Tensor:
    """Under DDP, representation mode: the Gram matrix of the rows of every process, the sum of theirs."""
    if _distributed():
        gram = gram.clone()
        torch.distributed.all_reduce(gram, op=torch.distributed.ReduceOp.SUM)
    return gram


def _aggregate(
    losses: Tensor,
    model: nn.Module,
    aggregator: GradientAggregator,
    penalty: Tensor | None,
    shared: Tensor | None,
    mix: GatedMix | None = None,
) -> Tensor:
    """Per-task gradients -> the aggregator's direction -> ``.grad`` (see the module docstring)."""
    name = type(model).__name__
    aggregator.observe_losses(losses.detach())
    total = losses.sum()
    if aggregator.mode == "representation":
        rep = _check_shared(shared, model, aggregator)
        # a weighting of the task gradients aggregates inside the one backward; a coordinate-wise method (GradDrop)
        # replaces the node's product after it ran, which pays only where that product is a BLAS one (_hooks_pay)
        node = _mix_node(losses, rep, name, mix, model) if _hooks_pay(aggregator, mix) else None
        if node is not None:
            assert mix is not None
            _backward_through_mix(node, mix, aggregator, total, penalty)
            return total.detach()
        upstream = _through_towers(losses, total, model, name, mix, rep, set())
        if upstream is not None:
            # the backward below starts at the tower inputs instead of going through the towers again
            assert mix is not None
            direction = aggregator.shifted(GatedJacobian(mix.weights, upstream), 0.0, _all_reduce_gram)
            roots, grads = [rep], [direction.reshape(rep.shape).to(rep.dtype)]
            if mix.weights.requires_grad:  # the gates' plain gradient through inputs = weights @ shared
                b, _, e = mix.weights.shape
                experts = rep.detach().reshape(b, e, -1)
                roots.append(mix.weights)
                grads.append(torch.bmm(upstream, experts.transpose(1, 2)).to(mix.weights.dtype))
        else:
            jacobian = representation_jacobian(losses, rep, name, mix, model)
            correction = aggregator.shifted(jacobian, -1.0, _all_reduce_gram)  # d - sum_i g_i
            correction = correction.reshape(rep.shape).to(rep.dtype)
            roots, grads = [total, rep], [torch.ones_like(total), correction]
        if penalty is not None and penalty.requires_grad:
            roots.append(penalty)
            grads.append(torch.ones_like(penalty))
        torch.autograd.backward(roots, grads)
        return total.detach()
    shared_params, private, shared_ids = _parameter_split(model)
    if not shared_params:
        raise MtlkitError(
            f"aggregator {type(aggregator).__name__} balances the gradients of shared parameters, but model {name} "
            f"has none; use a model with shared layers, or a loss weighting"
        )
    # a shared parameter beyond the mix would need its per-task gradients from the towers too: generic path
    # the private leaves behind the mix (the gates) get their plain gradients in the same backward
    upstream = _through_towers(losses, total, model, name, mix, shared, shared_ids, private)
    if upstream is not None:
        assert mix is not None
        assert shared is not None
        # the T vector-Jacobian products start at the tower inputs, each with its task's slice, not at the losses
        jacobian = _all_reduce_hook(_jacobian_from_inputs(model, mix, upstream, shared, shared_params, name))
        direction = aggregator(jacobian)
    else:
        jacobian = _all_reduce_hook(task_jacobian(losses, shared_params, name))
        direction = aggregator(jacobian)
        if private:
            torch.autograd.backward(
                total, inputs=private, retain_graph=penalty is not None and penalty.requires_grad
            )
    offset = 0
    for p in shared_params:
        piece = direction[offset : offset + p.numel()].reshape(p.shape).to(p.dtype)
        offset += p.numel()
        p.grad = piece.clone() if p.grad is None else p.grad + piece
    if penalty is not None and penalty.requires_grad:
        penalty.backward()
    return total.detach()


def _hooks_pay(aggregator: GradientAggregator, mix: GatedMix | None) -> bool:
    """Whether representation mode aggregates inside the one backward (hooks on the mix's node): always for a
    weighting; for a coordinate-wise method (GradDrop) only where the node's own product for ``Output.shared``,
    which the direction then replaces, takes ATen's BLAS path (E T d >= 400): in its naive loop (T = 2 at the
    paper size) that wasted product costs more than a second backward. Measured on the paper-size MMoE at 5 tasks
    (41 interleaved rounds): GradDrop 1.273x -> 1.249x the equal-weight step."""
    if aggregator.weighting:
        return True
    if mix is None:
        return False
    _, t, e = mix.weights.shape
    return e * t * mix.inputs.shape[-1] >= BMM_NAIVE_LIMIT


def _mix_node(
    losses: Tensor, shared: Tensor, name: str, mix: GatedMix | None, model: nn.Module
) -> Node | None:
    """The autograd node that computed a usable gated mix's ``inputs`` directly from its ``weights`` and
    ``shared`` (its next functions are theirs, in that order: MMoE's, DSelect-k's and PLE's batched matmul), or
    None (no usable mix, or ``inputs`` is a view of what the mix computed, as OMoE's broadcast)."""
    if not _usable_mix(losses, shared, name, mix, model):
        return None
    assert mix is not None
    node = mix.inputs.grad_fn
    if node is None or shared.grad_fn is None:
        return None
    gates = (mix.weights.grad_fn, mix.weights.output_nr if mix.weights.grad_fn is not None else 0)
    expected = (gates, (shared.grad_fn, shared.output_nr))
    return node if tuple(node.next_functions) == expected else None


def _backward_through_mix(
    node: Node, mix: GatedMix, aggregator: GradientAggregator, total: Tensor, penalty: Tensor | None
) -> None:
    """Representation mode in one backward of ``total``, through two hooks on the mix's node.

    Before the node runs, it receives u = d total / d inputs (slice t: d L_t / d inputs[:, t]) and the
    aggregation is done there. For a weighting d = sum_t c_t g_t whose weights allow it
    (:meth:`~mtlkit.aggregation.base.GatedJacobian.scalable`) the node is handed c_t u_t instead of u_t, so its
    own product gives ``Output.shared`` the direction (g_t = weights_t (x) u_t), and the gates' gradient it forms,
    c_t times the plain one, is divided back by c_t after it runs: no product is formed twice. Otherwise (a
    weight near 0, as MGDA's often are) the direction is formed from the factors and replaces the plain sum the
    node hands ``Output.shared``, as the direction of a coordinate-wise method (GradDrop) always does (see
    :func:`_hooks_pay` for when those come here). A penalty is differentiated afterwards, without the hooks (its
    gradient is never aggregated)."""
    found: dict[str, Tensor] = {}

    def aggregate(grad_outputs: tuple[Tensor | None, ...]) -> tuple[Tensor, ...] | None:
        upstream = grad_outputs[0]
        if upstream is None:
            return None
        jacobian = GatedJacobian(mix.weights, upstream)
        if not aggregator.weighting:  # coordinate-wise (GradDrop): its direction replaces the plain sum
            found["direction"] = aggregator.shifted(jacobian, 0.0, _all_reduce_gram)
            return None
        weights = aggregator.gated_weights(jacobian, _all_reduce_gram)
        assert weights is not None
        if jacobian.scalable(weights):
            found["factors"] = weights.to(device=upstream.device, dtype=upstream.dtype).view(1, -1, 1)
            return (upstream * found["factors"],)
        found["direction"] = jacobian.combine(weights)
        return None

    def restore(
        grad_inputs: tuple[Tensor | None, ...], grad_outputs: tuple[Tensor | None, ...]
    ) -> tuple[Tensor | None, ...] | None:
        to_gates, to_shared = grad_inputs
        if "factors" in found:
            return (None if to_gates is None else to_gates / found["factors"]), to_shared
        if to_shared is None or "direction" not in found:
            return None
        return to_gates, found["direction"].view(to_shared.shape).to(to_shared.dtype)

    keep = penalty is not None and penalty.requires_grad
    handles = (node.register_prehook(aggregate), node.register_hook(restore))
    try:
        total.backward(retain_graph=keep)
    finally:
        for handle in handles:
            handle.remove()
    if keep:
        assert penalty is not None
        penalty.backward()


def _through_towers(
    losses: Tensor,
    total: Tensor,
    model: nn.Module,
    name: str,
    mix: GatedMix | None,
    shared: Tensor | None,
    excluded: set[int],
    behind: Sequence[Tensor] = (),
) -> Tensor | None:
    """One backward of ``total`` through the towers of a usable gated mix whose towers share no leaf with what
    lies behind the mix (and hold none of ``excluded``, by id): writes the gradients of the leaves beyond the
    mix (towers, tower-only embeddings) and of the leaves of ``behind`` that are not beyond it (the gates: they
    reach the losses only through the tower inputs, so their share of the gradient of ``total`` is their plain
    gradient), and returns d total / d mix.inputs, whose slice t is d L_t / d inputs[:, t].
    The graph is kept (vector-Jacobian products may start at the mix next). None when the mix does not apply:
    then nothing was computed."""
    if shared is None or not _usable_mix(losses, shared, name, mix, model):
        return None
    assert mix is not None
    beyond = _beyond_mix(model, total, mix)
    if beyond is None or any(id(x) in excluded for x in beyond):
        return None
    done = {id(x) for x in beyond}
    leaves = [*beyond, *(x for x in behind if id(x) not in done)]
    first = torch.autograd.grad(total, [mix.inputs, *leaves], allow_unused=True, retain_graph=True)
    for leaf, grad in zip(leaves, first[1:], strict=True):
        if grad is not None:
            leaf.grad = grad if leaf.grad is None else leaf.grad + grad
    return torch.zeros_like(mix.inputs) if first[0] is None else first[0]


def _jacobian_from_inputs(
    model: nn.Module,
    mix: GatedMix,
    upstream: Tensor,
    shared: Tensor,
    shared_params: list[Tensor],
    name: str,
) -> Tensor:
    """[T, P]: row t is the gradient of L_t at the shared parameters, the vector-Jacobian product from the tower
    inputs with task t's slice of their gradient ``upstream`` (zero elsewhere).

    When no shared parameter reaches the tower inputs except through ``shared`` (``Output.shared``: no shared
    embedding feeds the gates, say), the products start at ``shared`` instead, with row t of the mix's
    :class:`~mtlkit.aggregation.base.GatedJacobian` (weights_t (x) u_t, formed in one broadcast product): the
    same rows, without differentiating the mix T times for cotangents that are zero but in one task's slice
    (measured in docs/decisions.md)."""
    t = upstream.shape[1]
    source = mix.source
    if source is not None and source.output is shared and _same(source.parameters, shared_params):
        # the experts' closed form: one product per layer for all tasks (models.layers.ExpertsTrace)
        found = dict(
            zip(map(id, source.parameters), source.task_gradients(mix.weights, upstream), strict=True)
        )
        jacobian = upstream.new_empty((t, sum(p.numel() for p in shared_params)))
        offset = 0
        for p in shared_params:  # each piece copied once, straight into its columns (no reshape, then cat)
            jacobian[:, offset : offset + p.numel()].view(t, *p.shape).copy_(found[id(p)])
            offset += p.numel()
        return jacobian
    if not _beside_shared(model, mix, shared, shared_params):
        rows = GatedJacobian(mix.weights, upstream).dense()
        return vjp_rows(shared, rows.view(t, *shared.shape), list(shared_params), name)
    index = torch.arange(t, device=upstream.device)
    cotangents = upstream.new_zeros((t, *upstream.shape))
    cotangents[index, :, index, :] = upstream.transpose(0, 1)
    return vjp_rows(mix.inputs, cotangents, list(shared_params), name)


def _same(first: Sequence[Tensor], second: Sequence[Tensor]) -> bool:
    """Whether two lists hold the same tensors (by identity), in any order."""
    return len(first) == len(second) and {id(x) for x in first} == {id(x) for x in second}


def _beside_shared(model: nn.Module, mix: GatedMix, shared: Tensor, shared_params: list[Tensor]) -> bool:
    """Whether a shared parameter reaches ``mix.inputs`` other than through ``shared`` (walked once per model
    record, :func:`_record`)."""
    record = _record(model)
    if record.beside_shared is None:
        # stop at the edge into shared itself, not at its node: another output of that node (a split) leads beside
        beside = _leaves(mix.inputs.grad_fn, shared.grad_fn, shared.output_nr)
        record.beside_shared = frozenset(id(x) for x in beside)
    return any(id(p) in record.beside_shared for p in shared_params)


def _check_shared(
    shared: Tensor | None, model: nn.Module, balancer: LossWeighting | GradientAggregator
) -> Tensor:
    name, method = type(model).__name__, type(balancer).__name__
    if shared is None:
        raise MtlkitError(
            f"balancer {method} needs the per-task gradient norms at the shared representation, but model "
            f"{name} has no shared representation (its Output.shared is None: no computation is shared "
            f"between tasks). Use a model with shared layers (e.g. shared_bottom, mmoe, ple), or a balancer "
            f"that needs only the loss values (e.g. static, uncertainty, dwa)"
        )
    if not shared.requires_grad:
        raise MtlkitError(
            f"balancer {method} needs gradients at Output.shared, but model {name}'s Output.shared does not "
            f"require grad (is the model frozen, or the forward pass run under torch.no_grad()?)"
        )
    return shared
