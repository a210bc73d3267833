"""Callbacks: code that runs at fixed points of ``Trainer.fit`` without the Trainer knowing what it does.

Diagnostics (gradient conflicts, expert usage), extra logging and test probes are callbacks. Each hook gets the
Trainer; the default hooks do nothing, so a callback overrides only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtlkit.data.table import Batch
    from mtlkit.training.trainer import Trainer


class Callback:
    """Base class: override any of the hooks."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (after a resume has restored the state)."""

    def on_step_end(self, trainer: Trainer, batch: Batch) -> None:
        """After an optimizer step on ``batch`` (on the training device); ``trainer.global_step`` counts steps
        since the start of training (1 after the first). Keep it cheap, or act only every N steps."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        """After an epoch: its history row is final and its checkpoint (if due) is written."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After training, once the best weights are restored and the final checkpoint is written."""
