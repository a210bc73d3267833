"""A training run end to end: configuration -> data, model, balancer -> Trainer -> a run folder.

A run folder holds ``config.yaml`` (the resolved configuration), ``checkpoint.pt`` (everything needed to resume
or to predict: weights, optimizer, balancer, RNG state, schema, encoders, configuration), ``history.csv`` and
``metrics.json`` (``{"valid": {task: {metric: value}}, "test": {...}, "best_epoch": n, "note": ...}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from mtlkit.aggregation.base import GradientAggregator
from mtlkit.balancing import create_balancer
from mtlkit.config import RunConfig, load_config
from mtlkit.data.datasets import Splits, load_dataset
from mtlkit.data.encoders import Encoders
from mtlkit.data.readers import read_table
from mtlkit.data.table import Table
from mtlkit.errors import MtlkitError
from mtlkit.families.base import Family, update_task_metrics
from mtlkit.metrics import TaskMetrics
from mtlkit.models import MultiTaskModel, create_model
from mtlkit.schema import Schema
from mtlkit.training.checkpoint import load_checkpoint
from mtlkit.training.memory import keep_freed_memory
from mtlkit.training.trainer import Trainer, TrainingOptions
from mtlkit.weighting.base import LossWeighting

CHECKPOINT = "checkpoint.pt"


def build_splits(config: RunConfig) -> Splits:
    """The train / valid / test Tables a configuration names: a registered data set, or files.

    With files, encoders are fitted on the training file. A part without its own file is carved out of the
    training file by ``data.split`` (one fraction for what stays in train, then one per missing part, in the
    order valid, test) with ``data.split_seed``.
    """
    data = config.data
    if data.dataset is not None:
        return load_dataset(data.dataset, **dict(data.params or {}))
    assert data.train is not None
    schema = data.to_schema() if data.schema_ is not None else None
    train = read_table(data.train, schema, labels=list(data.labels or ()))
    given = {part: getattr(data, part) for part in ("valid", "test")}
    tables: dict[str, Table] = {
        part: read_table(path, train.schema, encoders=train.encoders)
        for part, path in given.items()
        if path is not None
    }
    missing = [part for part in ("valid", "test") if part not in tables]
    how = [f"train {data.train}"] + [f"{part} {given[part]}" for part in tables]
    if missing:
        fractions = list(data.split or ())
        pieces = train.split(fractions, seed=data.split_seed or 0)
        train = pieces[0]
        tables.update(zip(missing, pieces[1:], strict=True))
        how.append(
            f"{' and '.join(missing)} carved from the train file by split {fractions} (seed {data.split_seed or 0})"
        )
    return Splits("files", train, tables["valid"], tables["test"], "files: " + "; ".join(how))


def options_from(config: RunConfig) -> TrainingOptions:
    t = config.training
    stopping = t.early_stopping
    return TrainingOptions(
        epochs=t.epochs,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        optimizer=t.optimizer,
        lr=t.lr,
        weight_decay=t.weight_decay,
        schedule=t.schedule,
        warmup_steps=t.warmup_steps or 0,
        step_size=t.step_size or 1,
        gamma=t.gamma if t.gamma is not None else 0.1,
        grad_clip=t.grad_clip,
        monitor=stopping.monitor,
        mode=stopping.mode,
        patience=stopping.patience,
        restore_best=t.restore_best,
        checkpoint_every=t.checkpoint_every,
        progress=t.progress,
        tensorboard=t.tensorboard,
    )


def build_model(config: RunConfig, schema: Schema, family: Family | None = None) -> MultiTaskModel:
    """The configured model for ``schema`` (or the one ``family`` chooses instead), seeded with ``config.seed``."""
    name, params = config.model.name, dict(config.model.params)
    if family is not None:
        name, params = family.model_choice(name, params)
    torch.manual_seed(config.seed)
    return create_model(name, schema, **params)


def build_balancer(
    config: RunConfig, schema: Schema, family: Family | None = None
) -> LossWeighting | GradientAggregator:
    """The configured balancer for ``schema`` (or the one ``family`` chooses instead)."""
    name, params = config.balancer.name, dict(config.balancer.params)
    if family is not None:
        name, params = family.balancer_choice(name, params)
    return create_balancer(name, schema, **params)


def family_metrics(trainer: Trainer, family: Family, table: Table) -> dict[str, dict[str, float]]:
    """Metrics of the data set's own tasks on ``table`` (a Table of the data schema), for any family.

    A family that trains on the data set's tasks (``mtl``, ``multi_model``) is evaluated by
    ``trainer.evaluate`` on the model's logits; any other by :func:`mtlkit.families.base.task_metrics` on
    ``family.task_scores(trainer.predict(table))`` against the table's labels, weights and groups.
    """
    metrics = new_family_metrics(trainer, family, table)
    update_family_metrics(metrics, trainer, family, table)
    return metrics.compute()


def new_family_metrics(trainer: Trainer, family: Family, table: Table) -> TaskMetrics:
    """The empty metrics :func:`family_metrics` fills for tables like ``table`` (one, or the parts of a file)."""
    schema = trainer.schema if table.schema == trainer.schema else family.schema
    return TaskMetrics(schema, has_groups=table.groups is not None)


def update_family_metrics(metrics: TaskMetrics, trainer: Trainer, family: Family, table: Table) -> None:
    """Add ``table``'s predictions to ``metrics`` (see :func:`family_metrics`)."""
    if table.schema == trainer.schema:  # the model predicts the data set's own tasks
        trainer.update_metrics(metrics, table)
    else:
        update_task_metrics(metrics, family.schema, family.task_scores(trainer.predict(table)), table)


def _check_family_monitor(config: RunConfig, data_schema: Schema, schema: Schema) -> None:
    """A monitor naming a data set task that the family does not train on is an error that says what to use."""
    task = config.training.early_stopping.task
    if task in data_schema.task_names and task not in schema.task_names:
        metric = config.training.early_stopping.metric
        raise MtlkitError(
            f"training.early_stopping.monitor {config.training.early_stopping.monitor!r}: family "
            f"{config.family.name!r} trains on {', '.join(repr(t) for t in schema.task_names)} instead of the data "
            f"set's tasks, so early stopping cannot watch {task!r}; monitor 'valid.mean.{metric}' (metrics.json "
            f"still reports every data set task)"
        )


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]
    splits: Splits
    trainer: Trainer


def train_run(
    config: RunConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Train the configured run into ``out_dir`` and write its metrics (valid and test)."""
    out = Path(out_dir)
    checkpoint = out / CHECKPOINT
    state = None
    if checkpoint.exists() and not overwrite:
        if not resume:
            raise MtlkitError(
                f"{out} already holds a run; pass --resume to continue it, or --overwrite to start again"
            )
        state = load_checkpoint(checkpoint)
        # the stored configuration validated again, so keys added since it was written compare at their defaults
        stored = RunConfig.from_dict(state.get("config"), source=str(checkpoint)).to_dict()
        if stored != config.to_dict():
            raise MtlkitError(
                f"{out} holds a run of another configuration; --resume continues only the same run "
                f"(compare {out / 'config.yaml'} with yours), or pass --overwrite"
            )
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    if config.training.keep_freed_memory:
        keep_freed_memory()
    from mtlkit.analysis.diagnostics import diagnostic_callbacks
    from mtlkit.config import check_monitor
    from mtlkit.families import create_family

    data_splits = build_splits(config)
    console = console or Console(stderr=True, highlight=False)  # where the trainer's epoch lines go too
    from mtlkit.data.overlap import repeats_note

    note = repeats_note(data_splits.train, {"valid": data_splits.valid, "test": data_splits.test})
    if note is not None:
        console.print(f"note: {note}")
    fusion = None
    if config.fusion is not None:  # checked before training, saved with the results
        from mtlkit.fusion import Fusion

        fusion = Fusion.from_config(config.fusion, data_splits.schema)
    family = create_family(config.family.name, data_splits.schema, **dict(config.family.params))
    splits = family.training_splits(data_splits)
    _check_family_monitor(config, data_splits.schema, splits.schema)
    check_monitor(config, splits.schema)
    try:
        model = build_model(config, splits.schema, family)
    except MtlkitError as exc:
        if splits.schema == data_splits.schema:
            raise
        tasks = ", ".join(repr(t) for t in splits.schema.task_names)
        raise MtlkitError(
            f"family {config.family.name!r} trains the model on {tasks} instead of the data set's tasks, and "
            f"model {config.model.name!r} cannot: {exc}"
        ) from None
    balancer = build_balancer(config, splits.schema, family)
    try:
        losses = family.losses(splits.schema, config.training.loss_params)
    except MtlkitError as exc:
        raise MtlkitError(f"training.loss_params: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config.to_yaml())
    extra = {
        "config": config.to_dict(),
        "schema": splits.schema.to_dict(),
        "data_schema": data_splits.schema.to_dict(),
        "encoders": splits.train.encoders.to_dict() if splits.train.encoders is not None else None,
        "note": splits.note,
    }
    trainer = Trainer(
        model,
        balancer,
        options_from(config),
        seed=config.seed,
        device=config.training.device,
        out_dir=out,
        checkpoint_extra=extra,
        log=console,
        callbacks=diagnostic_callbacks(config.diagnostics, splits, out),
        losses=losses,
    )
    trainer.fit(splits.train, splits.valid, resume=state)
    metrics = {  # always the data set's own tasks, whatever the family trained on
        "valid": family_metrics(trainer, family, data_splits.valid),
        "test": family_metrics(trainer, family, data_splits.test),
        "best_epoch": trainer.best_epoch if trainer.best_epoch is not None else trainer.epoch,
        "epochs": trainer.epoch,
        "note": splits.note,
    }
    if fusion is not None:
        fusion.save(out / "fusion.json")
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, allow_nan=True))
    tmp.replace(out / "metrics.json")
    return RunResult(out, metrics, splits, trainer)


@dataclass
class LoadedRun:
    """A trained run read back from its folder: what predict and evaluate need."""

    out_dir: Path
    config: RunConfig
    schema: Schema
    encoders: Encoders
    trainer: Trainer
    data_schema: Schema
    family: Family

    def task_scores(self, table: Table) -> dict[str, Tensor]:
        """One prediction per task of the data set (and extra outputs) for the rows of ``table``."""
        return self.family.task_scores(self.trainer.predict(table))

    def read(self, path: str | Path, require_labels: bool = False) -> Table:
        """A CSV / Parquet file encoded for this run (:func:`read_for_run`)."""
        return read_for_run(self, path, require_labels)

    def evaluate(self, table: Table) -> dict[str, dict[str, float]]:
        """Metrics of the data set's tasks on ``table`` (:func:`evaluate_run`)."""
        return evaluate_run(self, table)


def load_run(out_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild the model of a run folder from its checkpoint (no training code is unpickled)."""
    out = Path(out_dir)
    state = load_checkpoint(out / CHECKPOINT)
    config = RunConfig.from_dict(state["config"], source=str(out / CHECKPOINT))
    schema = Schema.from_dict(state["schema"])
    if state.get("encoders") is None:
        raise MtlkitError(f"{out / CHECKPOINT} has no encoders; it cannot encode new data")
    encoders = Encoders.from_dict(state["encoders"])
    data_schema = Schema.from_dict(state.get("data_schema") or state["schema"])
    from mtlkit.families import create_family

    family = create_family(config.family.name, data_schema, **dict(config.family.params))
    name, params = family.model_choice(config.model.name, dict(config.model.params))
    model = create_model(name, schema, **params)
    model.load_state_dict(state["model_state"])
    balancer = build_balancer(config, schema, family)
    trainer = Trainer(model, balancer, options_from(config), seed=config.seed, device=device)
    return LoadedRun(out, config, schema, encoders, trainer, data_schema, family)


def read_for_run(run: LoadedRun, path: str | Path, require_labels: bool) -> Table:
    """Encode a file with a run's data schema (the data set's own tasks, whatever the family trained on) and
    fitted encoders (unknown categories map to 0)."""
    return read_table(path, run.data_schema, encoders=run.encoders, require_labels=require_labels)


def evaluate_run(run: LoadedRun, table: Table) -> dict[str, dict[str, float]]:
    """Metrics of the data set's own tasks on ``table`` (read with :func:`read_for_run`, or a Splits part of
    :func:`build_splits`), for a run of any family; see :func:`family_metrics`."""
    return family_metrics(run.trainer, run.family, table)


__all__ = [
    "LoadedRun",
    "RunResult",
    "build_balancer",
    "build_model",
    "build_splits",
    "evaluate_run",
    "family_metrics",
    "load_config",
    "load_run",
    "new_family_metrics",
    "read_for_run",
    "train_run",
    "update_family_metrics",
]
