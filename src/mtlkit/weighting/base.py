"""The LossWeighting contract: a module that turns the vector of task losses [T] into one scalar.

State (running statistics, learnable log-variances, loss history) lives in buffers and parameters so that it is
checkpointed with ``state_dict``; ``reset()`` clears it. What a method needs from the backward engine is declared
as data on the class (``needs``), never inferred from its name.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from torch import Tensor, nn

from mtlkit.schema import Schema


class LossWeighting(nn.Module, abc.ABC):
    """Base class of loss-level balancing methods.

    Attributes:
        needs: what the engine must provide; ``{"losses"}`` for methods that only see the loss values.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"losses"})

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

    def weights(self, losses: Tensor) -> Tensor:
        """The effective weight of each task's loss at these losses [T] (for logging): d objective / d L_i."""
        import torch

        probe = losses.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.forward(probe), probe)
        return grad.detach()
