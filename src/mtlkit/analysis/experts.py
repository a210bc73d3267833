"""Expert usage: the mean gate weight of every gate over the experts it mixes, on the validation set.

For a gate g with weights ``w_g(x)`` [E] (a row of ``Output.gates[g]``, summing to 1), the usage of expert e is
``u_{g,e} = (1/N) sum_x w_{g,e}(x)`` over the N validation rows. In MMoE (Ma et al. 2018) each task has a gate;
when two tasks' usage vectors are alike the tasks share experts, when they differ the model has learnt to
separate them; an expert no gate uses is wasted capacity (the polarisation PLE, Tang et al. 2020, guards
against).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mtlkit.analysis.diagnostics import FOLDER, isolated, write_json
from mtlkit.data.table import Table
from mtlkit.models.base import MultiTaskModel
from mtlkit.training.callbacks import Callback

if TYPE_CHECKING:
    from mtlkit.training.trainer import Trainer

log = logging.getLogger(__name__)


@torch.no_grad()
def expert_usage(
    model: MultiTaskModel, table: Table, batch_size: int = 8192, device: torch.device | None = None
) -> dict[str, list[float]]:
    """Gate name -> mean weight of each of its experts over the rows of ``table`` (eval mode, no gradient).

    Gate tensors [B, E] (or [..., E]) are averaged over every leading position. Empty when the model has no gate.
    The model's mode, buffers and the random state are restored afterwards.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    with isolated(model, device):
        model.eval()
        for batch in table.batches(batch_size, shuffle=False):
            out = model(batch.to(device))
            for name, weights in out.gates.items():
                flat = weights.detach().reshape(-1, weights.shape[-1]).to(torch.float64)
                sums[name] = sums[name] + flat.sum(0) if name in sums else flat.sum(0)
                counts[name] = counts.get(name, 0) + flat.shape[0]
    return {name: (sums[name] / max(counts[name], 1)).tolist() for name in sums}


class ExpertUsage(Callback):
    """At fit end (on the weights the run keeps: the best epoch's when restored), :func:`expert_usage` on
    ``table`` into ``diagnostics/expert_usage.json``: ``{"split": split, "gates": {gate: [u_0, u_1, ...]}}``.

    The result also stays in ``.usage``. A model without gates (``Output.gates`` empty) writes nothing and logs
    one warning.

    Args:
        table: the rows to average over (the validation Table).
        out_dir: the run folder; None keeps the result in memory only.
        split: the name recorded under ``"split"``.
        batch_size: rows per forward pass; None takes the Trainer's ``eval_batch_size``.
    """

    filename = "expert_usage.json"

    def __init__(
        self, table: Table, out_dir: Path | None, split: str = "valid", batch_size: int | None = None
    ) -> None:
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.table = table
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.split = split
        self.batch_size = batch_size
        self.usage: dict[str, list[float]] | None = None

    def on_fit_end(self, trainer: Trainer) -> None:
        batch_size = self.batch_size or trainer.options.eval_batch_size
        usage = expert_usage(trainer.model, self.table, batch_size, trainer.device)
        if not usage:
            log.warning(
                "expert usage: model %s has no gates (Output.gates is empty); nothing is recorded",
                type(trainer.model).__name__,
            )
            return
        self.usage = usage
        if self.out_dir is not None:
            write_json(self.out_dir / FOLDER / self.filename, {"split": self.split, "gates": usage})
