"""The Trainer: fit / evaluate / predict for any MultiTaskModel and balancer.

It composes the pieces and never branches on a method's name: losses come from ``mtlkit.losses`` (masked per
task), the balancer and the backward engine turn them into gradients, metrics stream over batches. Training is
deterministic for a seed on one machine, and a checkpoint written after an epoch resumes to exactly the
uninterrupted run's result (model, optimizer, scheduler, balancer, RNG and early-stopping state all travel).
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from mtlkit.aggregation.base import GradientAggregator
from mtlkit.backward import mtl_backward
from mtlkit.data.table import Table
from mtlkit.errors import MtlkitError
from mtlkit.losses import LossSet
from mtlkit.metrics import TaskMetrics, metric_higher_is_better
from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.training.callbacks import Callback
from mtlkit.training.checkpoint import save_checkpoint
from mtlkit.weighting.base import LossWeighting

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("none", "cosine", "step", "linear_warmup")
MODES = ("auto", "max", "min")


@dataclass(frozen=True)
class TrainingOptions:
    """How to train. Every field is validated; see ``docs`` of ``mtlkit.config`` for the YAML form.

    Args:
        schedule: ``none``; ``cosine`` (from lr to 0 over all steps); ``step`` (times ``gamma`` every
            ``step_size`` epochs); ``linear_warmup`` (linear from 0 over ``warmup_steps``, then constant).
        monitor: ``valid.<task or mean>.<metric>``, the quantity for early stopping and the best epoch; None
            keeps the last epoch.
        mode: ``auto`` takes the metric's direction (AUC up, log loss down).
        patience: epochs without improvement before stopping; None never stops early.
    """

    epochs: int = 10
    batch_size: int = 1024
    eval_batch_size: int = 8192
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "none"
    warmup_steps: int = 0
    step_size: int = 1
    gamma: float = 0.1
    grad_clip: float | None = None
    monitor: str | None = "valid.mean.auc"
    mode: str = "auto"
    patience: int | None = 3
    restore_best: bool = True
    checkpoint_every: int = 1
    progress: bool = True
    tensorboard: bool = False

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.step_size >= 1, f"step_size must be >= 1, got {self.step_size}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (
                self.grad_clip is None or self.grad_clip > 0,
                f"grad_clip must be > 0 or None, got {self.grad_clip}",
            ),
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (
                self.patience is None or self.patience >= 1,
                f"patience must be >= 1 or None, got {self.patience}",
            ),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise MtlkitError("training options: " + "; ".join(errors))


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise MtlkitError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MtlkitError(
            f"device {device!r} asked for, but this machine has no CUDA device; use auto or cpu"
        )
    return resolved


class Trainer:
    """Train, evaluate and predict with a MultiTaskModel and a balancer.

    Args:
        model: the model (on any device; moved to ``device``).
        balancer: a loss weighting (``mtlkit.weighting``) or a gradient aggregator (``mtlkit.aggregation``).
        options: training options.
        seed: seeds the data order, dropout and everything random in ``fit``.
        device: ``auto``, ``cpu``, ``cuda``...
        out_dir: where ``checkpoint.pt`` and ``history.csv`` go (nothing is written when None).
        checkpoint_extra: plain data stored in every checkpoint (schema, encoders, config, model spec).
        log: where epoch lines go (a rich Console; stderr by default).
        callbacks: hooks run at the start and end of fit and after every epoch.
        losses: the task losses to train with (default: ``LossSet(model.schema)``, each task's ``Task.loss``);
            a Family passes its own, e.g. a grouped pairwise loss. Batches' group ids reach grouped losses.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        balancer: LossWeighting | GradientAggregator,
        options: TrainingOptions | None = None,
        seed: int = 0,
        device: str = "auto",
        out_dir: str | Path | None = None,
        checkpoint_extra: dict[str, Any] | None = None,
        log: Console | None = None,
        callbacks: Sequence[Callback] = (),
        losses: LossSet | None = None,
    ) -> None:
        self.options = options or TrainingOptions()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.balancer = balancer.to(self.device)
        self.schema = model.schema
        self.seed = int(seed)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.console = log or Console(stderr=True, highlight=False)
        self.callbacks = list(callbacks)
        self.losses = (losses if losses is not None else LossSet(self.schema)).to(self.device)
        self.optimizer = self._optimizer()
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.history: list[dict[str, float]] = []
        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps completed
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.best_state: dict[str, Tensor] | None = None
        self.finished = False
        self._monitor = _parse_monitor(self.options.monitor) if self.options.monitor else None

    # ------------------------------------------------------------------------------------------ setup
    def _optimizer(self) -> torch.optim.Optimizer:
        model = [p for p in self.model.parameters() if p.requires_grad]
        balancer = [p for p in self.balancer.parameters() if p.requires_grad]
        kind = torch.optim.AdamW if self.options.optimizer == "adamw" else torch.optim.Adam
        # fused kernels exist for CPU and CUDA float tensors; they cut the optimizer's time 2-3x
        fused = all(p.dtype.is_floating_point for p in model + balancer)
        groups: list[dict[str, Any]] = [{"params": model}]
        if balancer:  # balancer parameters (log-variances, task weights) are never decayed toward 0
            groups.append({"params": balancer, "weight_decay": 0.0})
        return kind(groups, lr=self.options.lr, weight_decay=self.options.weight_decay, fused=fused)

    def _schedule(self, steps_per_epoch: int) -> Callable[[int], float]:
        o = self.options
        total = max(1, o.epochs * steps_per_epoch)
        if o.schedule == "cosine":
            return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        if o.schedule == "step":
            return lambda step: o.gamma ** (step // (o.step_size * steps_per_epoch))
        if o.schedule == "linear_warmup":
            return lambda step: min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        return lambda step: 1.0

    # ------------------------------------------------------------------------------------------ fit
    def fit(
        self, train: Table, valid: Table | None = None, resume: dict[str, Any] | None = None
    ) -> list[dict[str, float]]:
        """Train for ``options.epochs`` (or until early stopping); returns the history (one row per epoch).

        Args:
            resume: a checkpoint dict (``load_checkpoint``) to continue from, exactly where it stopped.
        """
        o = self.options
        if len(train) == 0:
            raise MtlkitError("the training table has no rows")
        if self._monitor is not None and valid is None:
            raise MtlkitError(
                f"monitor {o.monitor!r} needs validation data: pass valid=, or set monitor to None"
            )
        steps = train.num_batches(o.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._schedule(steps))
        torch.manual_seed(self.seed)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume is not None:
            self.load_state(resume)
        elif self.epoch == 0:
            self.balancer.prepare(train)
        writer = self._tensorboard()
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.epoch < o.epochs and not self.finished:
            started = time.perf_counter()
            mean_losses = self._train_epoch(train, steps)
            row: dict[str, float] = {"epoch": float(self.epoch + 1)}
            row["lr"] = float(self.optimizer.param_groups[0]["lr"])
            row.update(
                {
                    f"loss_{t}": float(v)
                    for t, v in zip(self.schema.task_names, mean_losses.tolist(), strict=True)
                }
            )
            self.balancer.end_epoch(mean_losses.to(self.device))
            if valid is not None:
                scores = self.evaluate(valid)
                row.update({f"valid_{t}_{m}": v for t, ms in scores.items() for m, v in ms.items()})
            row["seconds"] = time.perf_counter() - started
            self.epoch += 1
            self.history.append(row)
            stop = self._track_best(row)
            self._log_epoch(row)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, self.epoch)
            if stop or self.epoch >= o.epochs:
                self.finished = True
            if self.out_dir is not None and (self.finished or self.epoch % o.checkpoint_every == 0):
                self.write_history()
                if not self.finished:  # the final checkpoint is written after restoring the best weights
                    self.save(self.out_dir / "checkpoint.pt")
            for callback in self.callbacks:
                callback.on_epoch_end(self, row)
        if o.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.out_dir is not None:
            self.save(self.out_dir / "checkpoint.pt")
        if writer is not None:
            writer.close()
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return self.history

    def _train_epoch(self, train: Table, steps: int) -> Tensor:
        o = self.options
        self.model.train()
        # running sums stay on the device: reading them forces a sync, so that happens only for the progress bar
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        totals = torch.zeros(len(self.schema.tasks), dtype=dtype, device=self.device)
        counted = torch.zeros(len(self.schema.tasks), dtype=dtype, device=self.device)
        progress = Progress(
            TextColumn(f"epoch {self.epoch + 1}/{o.epochs}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console,
            transient=True,
            disable=not (o.progress and self.console.is_terminal),
        )
        assert self.scheduler is not None
        with progress:
            bar = progress.add_task("train", total=steps, losses="")
            for step, batch in enumerate(train.batches(o.batch_size, shuffle=True, seed=self._epoch_seed())):
                batch = batch.to(self.device)
                out = self.model(batch)
                losses = self.losses(out.logits, batch.labels, batch.weights, batch.groups)
                penalty = self._penalty(out)
                self.optimizer.zero_grad(set_to_none=True)
                mtl_backward(losses, self.model, self.balancer, penalty, shared=out.shared, mix=out.mix)
                if o.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.global_step += 1
                for callback in self.callbacks:
                    callback.on_step_end(self, batch)
                labelled = (~torch.isnan(batch.labels)).sum(0).to(dtype)
                totals += losses.detach().to(dtype) * labelled
                counted += labelled
                if progress.live.is_started and (step % 10 == 0 or step == steps - 1):
                    means = (totals / counted.clamp(min=1)).tolist()
                    text = " ".join(
                        f"{t} {v:.4f}" for t, v in zip(self.schema.task_names, means, strict=True)
                    )
                    progress.update(bar, completed=step + 1, losses=text)
        return (totals / counted.clamp(min=1)).to(torch.float32).cpu()

    def _epoch_seed(self) -> int:
        return self.seed * 1_000_003 + self.epoch

    def _penalty(self, out: Output) -> Tensor:
        penalty = self.model.regularization()
        if out.regularization is not None:
            penalty = penalty + out.regularization
        return penalty

    def _track_best(self, row: dict[str, float]) -> bool:
        """Update the best epoch; True when early stopping says stop."""
        if self._monitor is None:
            return False
        key = self._monitor_key()
        if key not in row:
            available = sorted(k for k in row if k.startswith("valid_"))
            raise MtlkitError(
                f"monitor {self.options.monitor!r} is not among the validation results; available: "
                + ", ".join("valid." + k[len("valid_") :].replace("_", ".", 1) for k in available)
            )
        value = row[key]
        higher = self._higher_is_better()
        improved = self.best_value is None or (
            not math.isnan(value) and (value > self.best_value if higher else value < self.best_value)
        )
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
            if self.options.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.options.patience is not None and self.bad_epochs >= self.options.patience

    def _monitor_key(self) -> str:
        assert self._monitor is not None
        name, metric = self._monitor
        return f"valid_{name}_{metric}"

    def _higher_is_better(self) -> bool:
        assert self._monitor is not None
        if self.options.mode != "auto":
            return self.options.mode == "max"
        return metric_higher_is_better(self._monitor[1])

    def _log_epoch(self, row: dict[str, float]) -> None:
        parts = [f"epoch {int(row['epoch'])}/{self.options.epochs}"]
        parts.append("loss " + " ".join(f"{t} {row[f'loss_{t}']:.4f}" for t in self.schema.task_names))
        if self._monitor is not None:
            key = self._monitor_key()
            best = " *" if self.best_epoch == self.epoch else ""
            parts.append(f"{self.options.monitor} {row.get(key, float('nan')):.4f}{best}")
        parts.append(f"{row['seconds']:.1f}s")
        self.console.print(" | ".join(parts))

    def _tensorboard(self) -> Any:
        if not self.options.tensorboard:
            return None
        if self.out_dir is None:
            raise MtlkitError("tensorboard logging needs an output folder (out_dir)")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MtlkitError(
                "tensorboard logging needs the tensorboard package: pip install tensorboard"
            ) from None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    # ------------------------------------------------------------------------------------------ evaluate
    def evaluate(self, table: Table) -> dict[str, dict[str, float]]:
        """Per-task metrics on ``table`` (labels masked per task), plus ``mean`` over tasks per metric."""
        metrics = TaskMetrics(self.schema, has_groups=table.groups is not None)
        self.update_metrics(metrics, table)
        return metrics.compute()

    @torch.no_grad()
    def update_metrics(self, metrics: TaskMetrics, table: Table) -> None:
        """Add the model's logits on ``table`` to ``metrics`` (several tables, e.g. the parts of a file, make one
        evaluation)."""
        self.model.eval()
        for batch in table.batches(self.options.eval_batch_size, shuffle=False):
            batch = batch.to(self.device)
            out = self.model(batch)
            metrics.update(out.logits, batch.labels, batch.weights, batch.groups)

    @torch.no_grad()
    def predict(self, table: Table) -> dict[str, Tensor]:
        """Per-task predictions on ``table``: probabilities (binary [N], multiclass [N, K]) or values.

        Extra per-row outputs of the model (ESMM's ``pcvr_<task>``) are included under their own names.
        """
        self.model.eval()
        parts: dict[str, list[Tensor]] = {}
        kinds = {t.name: t.kind for t in self.schema.tasks}
        for batch in table.batches(self.options.eval_batch_size, shuffle=False):
            out = self.model(batch.to(self.device))
            for task, logit in out.logits.items():
                if kinds[task] == "binary":
                    value = torch.sigmoid(logit)
                elif kinds[task] == "multiclass":
                    value = torch.softmax(logit, dim=-1)
                else:
                    value = logit
                parts.setdefault(task, []).append(value.float().cpu())
            for name, value in out.extras.items():
                parts.setdefault(name, []).append(value.float().cpu())
        return {name: torch.cat(values) for name, values in parts.items()}

    # ------------------------------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Everything needed to resume exactly: plain data and tensors only."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else None,
            "balancer_state": self.balancer.state_dict(),
            "rng": rng,
            "position": {"epoch": self.epoch, "finished": self.finished, "global_step": self.global_step},
            "trainer": {
                "best_value": self.best_value,
                "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
                "history": self.history,
                "best_state": self.best_state,
                "seed": self.seed,
                "options": asdict(self.options),
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (from a checkpoint) so that training continues exactly."""
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        if self.scheduler is not None and state.get("scheduler_state") is not None:
            self.scheduler.load_state_dict(state["scheduler_state"])
        self.balancer.load_state_dict(state["balancer_state"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch = int(state["position"]["epoch"])
        self.finished = bool(state["position"]["finished"])
        self.global_step = int(state["position"].get("global_step", 0))
        trainer = state["trainer"]
        self.best_value, self.best_epoch = trainer["best_value"], trainer["best_epoch"]
        self.bad_epochs = int(trainer["bad_epochs"])
        self.history = list(trainer["history"])
        self.best_state = trainer["best_state"]

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, {**self.checkpoint_extra, **self.state()})

    def write_history(self) -> None:
        """``history.csv`` in the output folder (written whole, atomically)."""
        if self.out_dir is None or not self.history:
            return
        columns = list(dict.fromkeys(k for row in self.history for k in row))
        target = self.out_dir / "history.csv"
        tmp = target.with_name(".history.csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in self.history:
                writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})
        tmp.replace(target)


def _parse_monitor(monitor: str) -> tuple[str, str]:
    parts = monitor.split(".")
    if len(parts) != 3 or parts[0] != "valid" or not all(parts):
        raise MtlkitError(f"monitor must look like valid.<task or mean>.<metric>, got {monitor!r}")
    return parts[1], parts[2]


def print_to(stream: Any = None) -> Console:
    """A rich Console on ``stream`` (stdout by default) for result tables."""
    return Console(file=stream or sys.stdout, highlight=False)
