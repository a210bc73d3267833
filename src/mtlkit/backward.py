"""The backward engine: the only code that turns task losses into gradients and writes ``.grad``.

``mtl_backward(losses, model, balancer, penalty, shared)`` asks the balancer what it needs (``balancer.needs``,
data declared on its class) and computes just that:

* ``"losses"``: the loss values; the engine differentiates ``balancer(losses) + penalty`` once.
* ``"shared_grad_norms"``: the norms ``||d L_i / d shared||`` of every task's gradient at ``Output.shared`` (the
  representation where task-specific computation begins), a vector [T] handed to
  ``balancer.observe_grad_norms`` before ``balancer(losses)`` is evaluated (GradNorm). All T gradients come from
  one vectorised ``torch.autograd.grad(..., is_grads_batched=True)`` call that only walks the task-specific part
  of the graph (towers, gates); the graph is kept for the single backward of the objective that follows.

Gradient-level methods (per-task gradients of the shared parameters, or only their Gram matrix) extend this
module; under DDP the per-task gradient matrix will be all-reduced here, before aggregation.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from mtlkit.errors import MtlkitError
from mtlkit.weighting.base import LossWeighting

log = logging.getLogger(__name__)

#: What an engine of this version can provide to a balancer.
SUPPORTED_NEEDS = frozenset({"losses", "shared_grad_norms"})

#: Model classes for which batched per-task gradients failed and the loop was used (logged once per class).
_LOOPED: set[str] = set()


def mtl_backward(
    losses: Tensor,
    model: nn.Module,
    balancer: LossWeighting,
    penalty: Tensor | None = None,
    shared: Tensor | None = None,
) -> Tensor:
    """Write the gradients of the balanced objective into ``.grad``; returns the objective (detached).

    Args:
        losses: per-task losses [T] in schema order (still attached to the graph).
        model: the model whose parameters receive gradients.
        balancer: the balancing method; ``balancer.needs`` says what it consumes.
        penalty: scalar added to the objective unweighted (model regularisation), or None.
        shared: ``Output.shared``, where representation-level quantities are taken (per-task gradient norms).
    """
    needs = set(balancer.needs)
    missing = needs - SUPPORTED_NEEDS
    if missing:
        raise MtlkitError(
            f"balancer {type(balancer).__name__} needs {sorted(missing)}, which this engine cannot provide yet"
        )
    if "shared_grad_norms" in needs:
        checked = _check_shared(shared, model, balancer)
        balancer.observe_grad_norms(shared_grad_norms(losses, checked, model_name=type(model).__name__))
    objective = balancer(losses)
    if penalty is not None:
        objective = objective + penalty
    objective.backward()
    return objective.detach()


def shared_grad_norms(losses: Tensor, shared: Tensor, model_name: str = "model") -> Tensor:
    """``||d L_i / d shared||_2`` for every task i: a detached vector [T] (float32 or the losses' dtype).

    One batched ``autograd.grad`` over the rows of the identity (the T vector-Jacobian products at once); when
    batching fails for an operation vmap cannot handle, one ``autograd.grad`` per task (logged once per model
    class). The graph is retained for the objective's backward.
    """
    t = losses.shape[0]
    try:
        (grads,) = torch.autograd.grad(
            losses,
            shared,
            grad_outputs=torch.eye(t, dtype=losses.dtype, device=losses.device),
            is_grads_batched=True,
            retain_graph=True,
        )
    except RuntimeError as exc:  # vmap over an operation without a batching rule
        if model_name not in _LOOPED:
            _LOOPED.add(model_name)
            log.warning(
                "per-task gradients at Output.shared of %s: batched autograd failed (%s); "
                "falling back to one backward pass per task",
                model_name,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
        rows = [
            torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)[0] for i in range(t)
        ]
        grads = torch.stack([torch.zeros_like(shared) if g is None else g for g in rows])
    return torch.linalg.vector_norm(grads.reshape(t, -1), dim=1).detach()


def _check_shared(shared: Tensor | None, model: nn.Module, balancer: LossWeighting) -> Tensor:
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
