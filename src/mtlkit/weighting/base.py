"""The LossWeighting contract: a module that turns the vector of task losses [T] into one scalar.

State (running statistics, learnable log-variances, loss history) lives in buffers and parameters so that it is
checkpointed with ``state_dict``; ``reset()`` clears it. What a method needs from the backward engine is declared
as data on the class (``needs``), never inferred from its name.
"""

from __future__ import annotations

import abc
import inspect
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from mtlkit.schema import Schema

if TYPE_CHECKING:
    from mtlkit.data.table import Table


class LossWeighting(nn.Module, abc.ABC):
    """Base class of loss-level balancing methods.

    Subclasses store every constructor hyperparameter under its own name (``self.temperature = temperature``),
    so that ``repr`` mirrors the constructor: ``DWA(temperature=2.0)``. Learnable parameters (uncertainty's
    log-variances, GradNorm's weights) are trained by the Trainer's optimizer with the model.

    Attributes:
        needs: what the engine must provide: ``"losses"`` (the loss values, always), ``"shared_grad_norms"``
            (per-task gradient norms at ``Output.shared``, passed to :meth:`observe_grad_norms` before
            ``forward``).
        scale_invariant: multiplying one task's loss by a constant leaves the update direction unchanged
            (checked by the shared property tests).
        order_invariant: permuting the tasks permutes the weights and leaves the objective unchanged
            (False for methods that draw random weights).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"losses"})
    scale_invariant: ClassVar[bool] = False
    order_invariant: ClassVar[bool] = True

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.task_names = schema.task_names

    @abc.abstractmethod
    def forward(self, losses: Tensor) -> Tensor:
        """The scalar to differentiate, from the per-task losses [T] (schema task order)."""

    def reset(self) -> None:
        """Clear accumulated state (stateless methods: nothing to do)."""

    def end_epoch(self, mean_losses: Tensor) -> None:
        """Called by the trainer after each epoch with the epoch-average task losses [T] (DWA uses it)."""

    def prepare(self, train: Table) -> None:
        """Called once before training starts (not on resume) with the training Table (label priors)."""

    def observe_grad_norms(self, norms: Tensor) -> None:
        """Receives per-task gradient norms [T] at ``Output.shared`` before ``forward`` (GradNorm)."""

    def effective_weights(self, losses: Tensor) -> Tensor:
        """The weight each task's loss gets at these losses [T]: d objective / d L_i (for logging and tests)."""
        probe = losses.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.forward(probe), probe)
        return grad.detach()

    def __repr__(self) -> str:
        params = list(inspect.signature(type(self).__init__).parameters)[1:]
        shown = [f"{p}={getattr(self, p)!r}" for p in params if p != "schema" and hasattr(self, p)]
        return f"{type(self).__name__}({', '.join(shown)})"
