"""Diagnostics a run records during training, chosen by the ``diagnostics`` section of its configuration.

Each diagnostic is a :class:`~mtlkit.training.callbacks.Callback` writing into ``<run>/diagnostics/``:

* :class:`~mtlkit.analysis.conflicts.GradientConflicts` (``conflicts_every``): per-task gradient norms and
  pairwise cosines on the shared parameters -> ``conflicts.csv``;
* :class:`~mtlkit.analysis.experts.ExpertUsage` (``expert_usage``): mean gate weight per gate and expert on the
  validation set -> ``expert_usage.json``;
* :class:`~mtlkit.analysis.affinity.TaskAffinity` (``affinity_every``): lookahead task affinity (Fifty et al.
  2021) -> ``affinity.csv`` and ``affinity.json``.

Diagnostics observe and never steer: they leave the training trajectory bit-for-bit unchanged. Their extra
forward and backward passes run inside :func:`isolated` (random number generator state and module buffers such
as BatchNorm statistics restored afterwards, the model's train/eval mode restored), they differentiate with
``torch.autograd.grad`` (nothing is written into ``.grad``) and they never touch the optimizer, the scheduler or
the balancer. This module also holds what the recorders share: atomic CSV / JSON writing and reading rows back
on resume.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mtlkit.config import DiagnosticsConfig
from mtlkit.data.datasets import Splits
from mtlkit.errors import MtlkitError
from mtlkit.training.callbacks import Callback

if TYPE_CHECKING:
    from mtlkit.training.trainer import Trainer

log = logging.getLogger(__name__)

#: Sub-folder of a run folder that diagnostics write into.
FOLDER = "diagnostics"


def diagnostic_callbacks(config: DiagnosticsConfig, splits: Splits, out_dir: Path) -> list[Callback]:
    """The callbacks that record what ``config`` asks for into ``out_dir / "diagnostics"``.

    Affinity is measured on the training batch of the step (as in the paper), expert usage on ``splits.valid``.
    """
    from mtlkit.analysis.affinity import TaskAffinity
    from mtlkit.analysis.conflicts import GradientConflicts
    from mtlkit.analysis.experts import ExpertUsage

    callbacks: list[Callback] = []
    if config.conflicts_every is not None:
        callbacks.append(GradientConflicts(config.conflicts_every, out_dir))
    if config.expert_usage:
        callbacks.append(ExpertUsage(splits.valid, out_dir))
    if config.affinity_every is not None:
        callbacks.append(TaskAffinity(config.affinity_every, None, out_dir))
    return callbacks


def check_every(every: int) -> int:
    """``every`` as an int >= 1 (a ValueError echoing the bad value otherwise)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    return every


# ---------------------------------------------------------------------------------------------- isolation
def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(device: torch.device, state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextmanager
def isolated(model: nn.Module, device: torch.device) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Run extra passes through ``model`` without leaving a trace on training.

    Yields the random state at entry (pass it to :func:`reset_rng` to replay the same dropout masks); on exit
    restores that state (CPU, and the CUDA device in use), every buffer of the model (BatchNorm running
    statistics and counters) and the model's train/eval mode.
    """
    state = _rng_state(device)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield state
    finally:
        _set_rng_state(device, state)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in modes:
            module.training = training


def reset_rng(device: torch.device, state: tuple[Tensor, Tensor | None]) -> None:
    """Set the random state back to ``state`` (from :func:`isolated`): the next forward draws the same masks."""
    _set_rng_state(device, state)


def shared_parameter_names(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the model's shared parameters (``MultiTaskModel.shared_parameters``)."""
    shared = {id(p) for p in model.shared_parameters()}  # type: ignore[operator]
    return [(name, p) for name, p in model.named_parameters() if id(p) in shared]


def require_shared(model: nn.Module, what: str) -> list[tuple[str, nn.Parameter]]:
    """:func:`shared_parameter_names`, or an MtlkitError when there are none (nothing for ``what`` to measure)."""
    named = shared_parameter_names(model)
    if not named:
        raise MtlkitError(
            f"{what} compares task gradients on the shared parameters, but model {type(model).__name__} has "
            f"none (single_task and l2_soft share no parameter); use a model with shared layers (e.g. "
            f"shared_bottom, mmoe, ple)"
        )
    return named


# ---------------------------------------------------------------------------------------------- writing
def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, written atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def finite_or_none(value: float) -> float | None:
    """``value``, or None when it is NaN or infinite (JSON has no NaN)."""
    return value if math.isfinite(value) else None


class CsvRecorder(Callback):
    """A callback that keeps measurement rows in memory (``.rows``) and writes them to one CSV file.

    The CSV is written whole and atomically at every epoch end and at fit end. On a resumed fit (global step
    > 0 at fit start) rows already on disk up to the resumed step are read back first, so the file keeps the
    whole run; a fresh fit starts with no rows.
    """

    filename: str

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.rows: list[dict[str, float]] = []
        self.columns: list[str] = []

    @property
    def path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / FOLDER / self.filename

    def set_columns(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.rows = []
        path = self.path
        if trainer.global_step > 0 and path is not None and path.exists():
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    values = {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                    if values.get("step", math.inf) <= trainer.global_step:
                        self.rows.append(values)
            self.resumed(trainer)

    def resumed(self, trainer: Trainer) -> None:
        """Hook: rows were read back from disk on a resumed fit."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, float]) -> None:
        self.write()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.write()

    def write(self) -> None:
        """The rows as CSV (``step`` and ``epoch`` as integers), written atomically; nothing without rows."""
        path = self.path
        if path is None or not self.rows or not self.columns:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            for row in self.rows:
                writer.writerow(
                    {k: int(v) if k in ("step", "epoch") else v for k, v in row.items() if k in self.columns}
                )
        tmp.replace(path)
