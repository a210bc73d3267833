"""The GradientAggregator contract: per-task gradients [T, D] in, one update direction [D] out.

The backward engine (``mtlkit.backward``) computes the per-task gradients, of the shared parameters
(``mode="parameter"``: D = number of shared weights) or of the shared representation ``Output.shared``
(``mode="representation"``, the MGDA-UB trick: D = batch x representation width), hands them to the aggregator
and writes the result into ``.grad``. Aggregators return tensors and never call backward.

Most methods are a weighting of the task gradients, d = sum_i w_i g_i, with weights that depend only on the Gram
matrix G = J J^T [T, T]: they implement :meth:`weights` and declare ``needs = {"gram"}``; the direction is
``weights(J J^T) @ J``. Methods that act on the coordinates of the gradients (GradDrop) override :meth:`forward`
and declare ``needs = {"jacobian"}``.
"""

from __future__ import annotations

import abc
import inspect
from typing import TYPE_CHECKING, ClassVar, Literal

from torch import Tensor, nn

from mtlkit.errors import MtlkitError
from mtlkit.schema import Schema

if TYPE_CHECKING:
    from mtlkit.data.table import Table

Mode = Literal["parameter", "representation"]
MODES = ("parameter", "representation")


class GradientAggregator(nn.Module, abc.ABC):
    """Base class of gradient-level balancing methods.

    Args:
        schema: the problem (task order = row order of the gradient matrix).
        mode: where the engine takes the per-task gradients: ``parameter`` (the shared weights) or
            ``representation`` (``Output.shared``; cheaper, one backward through the shared part).

    Subclasses store every constructor hyperparameter under its own name so that ``repr`` mirrors the
    constructor, keep state in buffers (``reset()`` clears it) and draw randomness from a generator they own.

    Attributes:
        needs: ``{"gram"}`` (weights from J J^T) or ``{"jacobian"}`` (the full matrix).
        order_invariant: permuting the tasks leaves the direction unchanged (False: depends on a random order).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"gram"})
    order_invariant: ClassVar[bool] = True

    def __init__(self, schema: Schema, mode: Mode = "parameter") -> None:
        super().__init__()
        if mode not in MODES:
            raise MtlkitError(f"mode must be 'parameter' or 'representation', got {mode!r}")
        self.task_names = schema.task_names
        self.mode = mode

    def prepare(self, train: Table) -> None:
        """Called once before training starts (not on resume)."""

    def end_epoch(self, mean_losses: Tensor) -> None:
        """Called after each epoch with the epoch-average task losses [T]."""

    def observe_losses(self, losses: Tensor) -> None:
        """Receives the detached task losses [T] before ``forward`` (MGDA's loss normalisations use them)."""

    def weights(self, gram: Tensor) -> Tensor:
        """Task weights [T] from the Gram matrix [T, T] of the task gradients (gram-based methods)."""
        raise MtlkitError(f"{type(self).__name__} combines gradients coordinate-wise and has no task weights")

    def forward(self, jacobian: Tensor) -> Tensor:
        """The update direction [D] from the per-task gradients [T, D]."""
        gram = jacobian @ jacobian.T
        return self.weights(gram).to(jacobian.dtype) @ jacobian

    @abc.abstractmethod
    def reset(self) -> None:
        """Clear accumulated state (EMA targets, random streams...)."""

    def __repr__(self) -> str:
        params = list(inspect.signature(type(self).__init__).parameters)[1:]
        shown = [f"{p}={getattr(self, p)!r}" for p in params if p != "schema" and hasattr(self, p)]
        return f"{type(self).__name__}({', '.join(shown)})"


class MeanAggregator(GradientAggregator):
    """The plain mean of the task gradients, d = (1/T) sum_i g_i (the reference direction; equal weights)."""

    def __init__(self, schema: Schema, mode: Mode = "parameter") -> None:
        super().__init__(schema, mode)

    def weights(self, gram: Tensor) -> Tensor:
        t = gram.shape[0]
        return gram.new_full((t,), 1.0 / t)

    def reset(self) -> None:
        """Stateless."""
