"""The contract every multi-task model follows.

``MultiTaskModel.forward(batch) -> Output``:

* ``Output.logits``: task -> tensor the task's loss is computed on: [B] for binary and regression tasks,
  [B, K] for multiclass ones;
* ``Output.shared``: the tensor at the boundary where task-specific computation begins (stacked expert outputs
  [B, E, d] for mixture-of-experts models, the bottom output [B, d] for Shared-Bottom); representation-level
  balancing (MGDA-UB) differentiates the task losses with respect to it;
* ``Output.gates``: task -> [B, E] gate weights (rows sum to 1) where the model has gates;
* ``Output.extras``: other per-row predictions [B] besides the trained logits (ESMM's pCVR);
* ``Output.regularization``: a scalar penalty that depends on the batch (AITM's calibrator), added to the training
  loss next to ``regularization()``; None when the model has none.
* ``Output.mix``: a :class:`GatedMix` where every task's tower reads ``Output.shared`` only through its own
  gated sum of it (MMoE, OMoE, DSelect-k, CGC / PLE's top level), else None. The backward engine then forms the
  per-task gradients at ``shared`` from one ordinary backward through the towers instead of T (see
  :mod:`mtlkit.backward`).

``shared_parameters()`` and ``task_parameters(task)`` split the trainable parameters (every parameter belongs to
exactly one of: shared, or one task); ``regularization()`` is a scalar added to the loss (zero by default).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mtlkit.data.table import Batch
from mtlkit.errors import SchemaError
from mtlkit.models.layers import ExpertsTrace, TaskTowers
from mtlkit.schema import Schema


@dataclass
class GatedMix:
    """How the towers read ``Output.shared`` [B, E, d] in a mixture-of-experts model with one gate per task.

    ``inputs[:, t] = sum_e weights[:, t, e] * shared[:, e]`` for every task t in schema order, ``inputs`` [B, T, d]
    is the tensor in the graph (possibly a broadcast view) that task t's tower, and nothing else, reads through
    ``inputs[:, t]``, ``weights`` [B, T, E] are the gate weights, and no task reaches ``shared`` another way
    (other terms may be added to a tower's input, e.g. PLE's own experts, if they do not depend on ``shared``).
    Then the gradient of task t's loss at ``shared`` is the outer product
    ``weights[:, t, :, None] * (d L_t / d inputs[:, t])[:, None, :]``.
    """

    weights: Tensor
    inputs: Tensor
    #: the experts call that computed ``Output.shared``, where its parameters' per-task gradients have a closed
    #: form (parameter mode uses it instead of T vector-Jacobian products when those are all the shared
    #: parameters); None elsewhere
    source: ExpertsTrace | None = None


@dataclass
class Output:
    """What a MultiTaskModel returns (see the module docstring)."""

    logits: dict[str, Tensor]
    shared: Tensor | None = None
    gates: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, Tensor] = field(default_factory=dict)
    regularization: Tensor | None = None
    mix: GatedMix | None = None


class MultiTaskModel(nn.Module, abc.ABC):
    """Base class of every architecture: holds the Schema and answers the parameter-split questions.

    Subclasses implement :meth:`compute` on the raw encoded tensors (so export can bypass ``Batch``) and
    :meth:`task_modules` (the modules private to one task); everything else is derived from those.
    """

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        missing = [f.name for f in schema.categorical if f.vocab_size is None]
        if missing:
            raise SchemaError(
                f"categorical feature(s) {missing} have no vocab_size: build the model from a fitted "
                f"Table's schema (table.schema), or set Feature.vocab_size"
            )
        self.schema = schema

    # ------------------------------------------------------------------ to implement
    @abc.abstractmethod
    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        """The forward pass on encoded inputs: codes [B, C] int64 and numeric values [B, F] float32."""

    @abc.abstractmethod
    def task_modules(self, task: str) -> list[nn.Module]:
        """The modules whose parameters belong to ``task`` alone (its tower, its gate, its experts...)."""

    # ------------------------------------------------------------------ derived
    def forward(self, batch: Batch) -> Output:
        return self.compute(batch.categorical, batch.numeric)

    def read_through_tasks(self) -> set[str]:
        """Tasks whose output feeds another task's tower without being detached.

        The other task's loss then reaches every module private to such a task (its gate, tower, tower-only
        features), so those count as shared. Derived from every :class:`TaskTowers` inside the model (fixed when
        the model is built, so found once: the backward engine asks at every step); a model with its own
        dependence mechanism extends this.
        """
        found: frozenset[str] | None = self.__dict__.get("_read_through")
        if found is None:
            towers = [m for m in self.modules() if isinstance(m, TaskTowers)]
            found = frozenset(task for m in towers for task in m.read_through)
            self.__dict__["_read_through"] = found
        return set(found)

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """Trainable parameters that only ``task``'s loss reaches (through its own computation)."""
        self.schema.task(task)  # an unknown task name is an error naming the valid ones
        if task in self.read_through_tasks():
            return
        seen: set[int] = set()
        for module in self.task_modules(task):
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters not private to any one task (embeddings, shared experts, bottoms...)."""
        private = {id(p) for t in self.schema.task_names for p in self.task_parameters(t)}
        for p in self.parameters():
            if p.requires_grad and id(p) not in private:
                yield p

    def regularization(self) -> Tensor:
        """A scalar added to the training loss that depends on the parameters only (soft-sharing and L0 gate
        penalties); zero here. A penalty that depends on the batch goes in ``Output.regularization``."""
        first = next(self.parameters(), None)
        return torch.zeros((), device=first.device if first is not None else None)
