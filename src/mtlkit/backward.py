"""The backward engine: the only code that turns task losses into gradients and writes ``.grad``.

``mtl_backward(losses, model, balancer, penalty)`` asks the balancer what it needs (``balancer.needs``, data
declared on its class) and computes just that. Loss-level weighting needs only the loss values: the engine
differentiates ``balancer(losses) + penalty`` once. Gradient-level methods (per-task gradients of the shared
parameters, or of ``Output.shared``, or only their Gram matrix) extend this module; under DDP the per-task
gradient matrix will be all-reduced here, before aggregation.
"""

from __future__ import annotations

from torch import Tensor, nn

from mtlkit.errors import MtlkitError
from mtlkit.weighting.base import LossWeighting

#: What an engine of this version can provide to a balancer.
SUPPORTED_NEEDS = frozenset({"losses"})


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
    missing = set(balancer.needs) - SUPPORTED_NEEDS
    if missing:
        raise MtlkitError(
            f"balancer {type(balancer).__name__} needs {sorted(missing)}, which this engine cannot provide yet"
        )
    objective = balancer(losses)
    if penalty is not None:
        objective = objective + penalty
    objective.backward()
    del model  # loss-level balancing touches the parameters only through autograd
    return objective.detach()
