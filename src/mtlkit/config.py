"""The run configuration: one YAML file naming the data, the model, the balancing method and the training settings.

``load_config(path, overrides)`` reads and validates a file, ``RunConfig.from_dict`` a dict; ``to_yaml`` /
``to_dict`` give the resolved configuration (every default filled in, model and data set parameters included),
which loads back to an equal ``RunConfig``. Example::

    seed: 0
    data:
      dataset: census_income          # a registered data set (mtlkit data list) and its parameters
      params: {group: 1}
    model:
      name: mmoe
      params: {num_experts: 8, expert_sizes: [64], tower_sizes: [32]}
    balancer: {name: static}
    training:
      epochs: 10
      lr: 1.0e-3
      early_stopping: {monitor: valid.mean.auc, patience: 3}

Instead of ``dataset``, ``data`` can name files: ``train`` (required), ``valid`` and ``test`` (when one is left
out it is split off ``train`` with ``split`` fractions and ``split_seed``), and either a ``schema`` (the dict form
of :class:`~mtlkit.schema.Schema`) or ``labels`` (label columns; the schema is inferred from the train file).
Relative file paths in a config file are relative to the folder of that file.

Every problem is a :class:`ConfigError` whose message lists all problems found, one per line, each with the
file, its line, the key path (``training.early_stopping.patience``), the bad value and, for misspelt keys and
names, the closest valid one. ``--set key.path=value`` overrides (:func:`apply_overrides`) parse the value as
YAML and are checked against the same layout.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import os
import re
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticSchemaGenerationError,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from mtlkit.errors import MtlkitError, SchemaError, did_you_mean, listing
from mtlkit.schema import METRICS, Schema

#: Metrics where larger is better; every other metric of ``mtlkit.schema.METRICS`` is minimised.
MAXIMIZED_METRICS = frozenset({"auc", "gauc", "accuracy"})
#: Every metric name a monitor may use (the union of ``METRICS`` over task kinds).
ALL_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for names in METRICS.values() for m in names))

Loc = tuple[str | int, ...]


class ConfigError(MtlkitError):
    """An invalid run configuration (file, dict or ``--set`` override)."""


class _Problems(ValueError):
    """Problems found by one validator, each at a key path below the validator's own location.

    Pydantic keeps the raised exception in the error's context, so the message formatter can give each problem
    its own key path (``data.params.grop``) instead of one message for the whole section.
    """

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{_path(loc)}: {msg}" for loc, msg in problems))
        self.problems = problems


def _none_to_empty(value: Any) -> Any:
    """``params:`` with nothing under it (None in YAML) means no parameters."""
    return {} if value is None else value


class _Section(BaseModel):
    # strict: YAML already gives typed values, so "10" is not an integer and true is not 1
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------------------------- data
#: What a data part's rows are used for, for the error about two parts sharing a file.
_USES = {"train": "trained on", "valid": "used to pick the best epoch"}


class DataConfig(_Section):
    """A registered data set with its parameters, or train (valid, test) files with a schema or label columns."""

    dataset: str | None = None
    params: dict[str, Any] | None = None
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    labels: list[str] | None = None
    split: list[float] | None = None
    split_seed: int | None = Field(default=None, ge=0)

    @field_validator("train", "valid", "test", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        problems: list[tuple[Loc, str]] = []
        if self.dataset is not None and self.train is not None:
            problems.append(
                (
                    (),
                    "give either dataset (a registered data set) or train (a file), not both; "
                    f"got dataset {self.dataset!r} and train {self.train!r}",
                )
            )
        elif self.dataset is None and self.train is None:
            problems.append(
                (
                    (),
                    "needs either dataset: NAME (one of "
                    f"{listing(_datasets())}) or train: FILE (a CSV / Parquet file)",
                )
            )
        elif self.dataset is not None:
            self._check_dataset(self.dataset, problems)
        else:
            self._check_files(problems)
        if problems:
            raise _Problems(problems)
        return self

    def _check_dataset(self, name: str, problems: list[tuple[Loc, str]]) -> None:
        for key in ("valid", "test", "schema", "labels", "split", "split_seed"):
            value = getattr(self, "schema_" if key == "schema" else key)
            if value is not None:
                problems.append(
                    (
                        (key,),
                        f"only for files (with train: FILE); data set {name!r} brings its own splits and "
                        f"schema, got {_show(value)}",
                    )
                )
        names = _datasets()
        if name not in names:
            problems.append(
                (
                    ("dataset",),
                    f"unknown data set {name!r}{did_you_mean(name, names)}; available: {listing(names, 30)}",
                )
            )
            return
        from mtlkit.data.datasets import dataset_loader, dataset_parameters

        params, found = _check_params(
            "data set", name, self.params or {}, dataset_parameters(name), _type_hints(dataset_loader(name))
        )
        problems.extend((("params", *loc), msg) for loc, msg in found)
        self.params = params

    def shared_files(self) -> list[tuple[Loc, str]]:
        """A valid or test file that is the train file (or test the valid file): its rows would be both
        trained or selected on and measured on, so the metrics would be optimistic. Checked by
        :func:`load_config` (a configuration to train from), not by validation, so that a run folder trained
        that way still loads for evaluation and prediction."""
        seen: dict[Path, str] = {}
        problems: list[tuple[Loc, str]] = []
        for key in ("train", "valid", "test"):
            path = getattr(self, key)
            if path is None or not path.strip():
                continue
            same = Path(path).expanduser().resolve()
            if same in seen:
                problems.append(
                    (
                        (key,),
                        f"is the same file as data.{seen[same]} ({path}): its rows would be {_USES[seen[same]]} "
                        f"and measured on. Give a separate file, or leave data.{key} out to carve it from the "
                        "train file by data.split",
                    )
                )
            else:
                seen[same] = key
        return problems

    def _check_files(self, problems: list[tuple[Loc, str]]) -> None:
        from mtlkit.data.readers import file_format

        if self.params:
            problems.append(
                (
                    ("params",),
                    f"params are for registered data sets (dataset: NAME), not files; got {_show(self.params)}",
                )
            )
        self.params = None
        for key in ("train", "valid", "test"):
            path = getattr(self, key)
            if path is None:
                continue
            if not path.strip():
                problems.append(((key,), f"should be a file path, got {path!r}"))
                continue
            try:
                file_format(path)
            except MtlkitError as exc:
                problems.append(((key,), str(exc)))
        if self.schema_ is not None and self.labels is not None:
            problems.append(
                (
                    (),
                    "give schema (features and tasks) or labels (to infer the schema), not both; "
                    f"got both (labels {self.labels!r})",
                )
            )
        elif self.schema_ is None and self.labels is None:
            problems.append(
                (
                    (),
                    "with files, give schema: {features: [...], tasks: [...]} or labels: [COLUMN, ...] "
                    "(the schema is then inferred from the train file)",
                )
            )
        if self.schema_ is not None:
            try:
                self.schema_ = Schema.from_dict(self.schema_).to_dict()
            except SchemaError as exc:
                problems.append((("schema",), str(exc)))
        if self.labels is not None:
            if not self.labels:
                problems.append((("labels",), "should name at least one label column, got []"))
            for i, label in enumerate(self.labels):
                if not label.strip():
                    problems.append((("labels", i), f"should be a column name, got {label!r}"))
            repeated = sorted({x for x in self.labels if self.labels.count(x) > 1})
            if repeated:
                problems.append((("labels",), f"repeats {listing(repeated)}: each label column once"))
        self._check_split(problems)

    def _check_split(self, problems: list[tuple[Loc, str]]) -> None:
        missing = [part for part in ("valid", "test") if getattr(self, part) is None]
        if not missing:
            for key in ("split", "split_seed"):
                if getattr(self, key) is not None:
                    problems.append(
                        (
                            (key,),
                            f"only applies when valid or test is left out (then it is split off train); "
                            f"both are given, got {_show(getattr(self, key))}",
                        )
                    )
            return
        parts = ["train", *missing]
        if self.split is None:
            self.split = [0.8, 0.1, 0.1] if len(parts) == 3 else [0.9, 0.1]
        elif len(self.split) != len(parts):
            problems.append(
                (
                    ("split",),
                    f"needs {len(parts)} fractions ({', '.join(parts)}) because "
                    f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} split off train, "
                    f"got {self.split}",
                )
            )
        elif any(not f > 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            problems.append((("split",), f"fractions should be > 0 and sum to 1, got {self.split}"))
        if self.split_seed is None:
            self.split_seed = 0

    def to_schema(self) -> Schema | None:
        """The Schema given under ``schema`` (None for a registered data set or ``labels``)."""
        return None if self.schema_ is None else Schema.from_dict(self.schema_)


# ---------------------------------------------------------------------------------------------- model
class ModelConfig(_Section):
    """A registered architecture (``mtlkit.models.list_models()``) and its hyperparameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    _empty_params = field_validator("params", mode="before")(_none_to_empty)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        from mtlkit.models import list_models, model_class, model_parameters

        names = list_models()
        if self.name not in names:
            raise _Problems(
                [
                    (
                        ("name",),
                        f"unknown model {self.name!r}{did_you_mean(self.name, names)}; available: {listing(names, 30)}",
                    )
                ]
            )
        params, problems = _check_params(
            "model",
            self.name,
            self.params,
            model_parameters(self.name),
            _type_hints(model_class(self.name).__init__),
        )
        if problems:
            raise _Problems([(("params", *loc), msg) for loc, msg in problems])
        self.params = params
        return self


# ------------------------------------------------------------------------------------------- balancer
class BalancerConfig(_Section):
    """A loss weighting or gradient aggregation method by name; the name is checked when the run is built."""

    name: str = "static"
    params: dict[str, Any] = Field(default_factory=dict)

    _empty_params = field_validator("params", mode="before")(_none_to_empty)

    @field_validator("name")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"should name a balancing method (e.g. 'static'), got {value!r}")
        return value


# ------------------------------------------------------------------------------------------- training
class EarlyStoppingConfig(_Section):
    """Which validation metric to watch, in which direction, and how many epochs without improvement to allow.

    ``monitor`` is ``valid.<task>.<metric>`` or ``valid.mean.<metric>`` (the mean over tasks); the task name is
    checked against the schema by :func:`check_monitor`. ``mode: auto`` maximises auc, gauc and accuracy and
    minimises the other metrics. ``patience: null`` never stops early (the monitor still picks the best epoch
    for ``restore_best``).
    """

    monitor: str = "valid.mean.auc"
    mode: Literal["auto", "max", "min"] = "auto"
    patience: int | None = Field(default=3, ge=1)

    @field_validator("monitor")
    @classmethod
    def _check_monitor(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != "valid" or not parts[1]:
            raise ValueError(
                f"should be 'valid.<task>.<metric>' or 'valid.mean.<metric>' (e.g. 'valid.mean.auc'), got {value!r}"
            )
        metric = parts[2]
        if metric not in ALL_METRICS:
            raise ValueError(
                f"unknown metric {metric!r} in {value!r}{did_you_mean(metric, ALL_METRICS)}; "
                f"metrics are {listing(ALL_METRICS)}"
            )
        return value

    @property
    def task(self) -> str:
        """The monitored task, or ``"mean"``."""
        return self.monitor.split(".")[1]

    @property
    def metric(self) -> str:
        return self.monitor.split(".")[2]

    @property
    def direction(self) -> Literal["max", "min"]:
        """``mode`` with ``auto`` resolved from the metric (max for auc / gauc / accuracy, else min)."""
        if self.mode != "auto":
            return self.mode
        return "max" if self.metric in MAXIMIZED_METRICS else "min"


Schedule = Literal["none", "cosine", "step", "linear_warmup"]

#: schedule fields and the one schedule that uses each
_SCHEDULE_FIELDS = {"step_size": "step", "gamma": "step", "warmup_steps": "linear_warmup"}


class TrainingConfig(_Section):
    """Optimisation, evaluation and bookkeeping settings.

    Schedules: ``none`` (constant lr); ``cosine`` (cosine decay from lr to 0 over the whole run); ``step`` (lr
    times ``gamma`` every ``step_size`` epochs; gamma defaults to 0.1); ``linear_warmup`` (lr rises linearly
    over the first ``warmup_steps`` optimizer steps, then stays constant). ``grad_clip`` is the max total
    gradient norm. ``device``: auto (cuda when available, else cpu), cpu, cuda or cuda:N. ``keep_freed_memory``
    raises glibc's malloc thresholds for the process so that the buffers a step frees are reused by the next step
    instead of being returned to the OS and faulted in again (:mod:`mtlkit.training.memory`; no effect off glibc or
    where the environment sets them); false leaves malloc as it is. ``loss_params``: task -> the hyperparameters
    of its loss (``Task.loss``), e.g. ``{buy: {pos_weight: 20}}`` or ``{click: {gamma: 1.0}}`` for a focal loss;
    checked against the tasks and the loss when the run is built.
    """

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    eval_batch_size: int = Field(default=8192, ge=1)
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Schedule = "none"
    step_size: int | None = Field(default=None, ge=1)
    gamma: float | None = Field(default=None, gt=0)
    warmup_steps: int | None = Field(default=None, ge=1)
    grad_clip: float | None = Field(default=None, gt=0)
    loss_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    restore_best: bool = True
    device: str = "auto"
    num_threads: int | None = Field(default=None, ge=1)
    keep_freed_memory: bool = True
    checkpoint_every: int = Field(default=1, ge=1)
    progress: bool = True
    tensorboard: bool = False

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            hint = did_you_mean(value, ("auto", "cpu", "cuda"))
            raise ValueError(f"should be auto, cpu, cuda or cuda:N (e.g. cuda:0), got {value!r}{hint}")
        return value

    @model_validator(mode="after")
    def _check_schedule(self) -> TrainingConfig:
        problems: list[tuple[Loc, str]] = []
        for key, owner in _SCHEDULE_FIELDS.items():
            value = getattr(self, key)
            if value is not None and self.schedule != owner:
                problems.append(
                    (
                        (key,),
                        f"only used by schedule {owner!r} (schedule is {self.schedule!r}), got {value!r}",
                    )
                )
        if self.schedule == "step":
            if self.step_size is None:
                problems.append((("step_size",), "schedule 'step' needs step_size (epochs between decays)"))
            if self.gamma is None:
                self.gamma = 0.1
        if self.schedule == "linear_warmup" and self.warmup_steps is None:
            problems.append(
                (("warmup_steps",), "schedule 'linear_warmup' needs warmup_steps (optimizer steps, >= 1)")
            )
        if problems:
            raise _Problems(problems)
        return self


# ---------------------------------------------------------------------------------------- diagnostics
class DiagnosticsConfig(_Section):
    """Diagnostics recorded during training into ``<run>/diagnostics/`` (all off by default; they cost time).

    ``conflicts_every``: every N optimizer steps, per-task gradient norms and pairwise cosines on the shared
    parameters. ``expert_usage``: mean gate weight per task and expert on the validation set after training.
    ``affinity_every``: every N steps, the lookahead task affinity (a step on one task alone, the change of every
    other task's loss).
    """

    conflicts_every: int | None = Field(default=None, ge=1)
    expert_usage: bool = False
    affinity_every: int | None = Field(default=None, ge=1)


# --------------------------------------------------------------------------------------------- family
class FamilyConfig(_Section):
    """The solution family: ``mtl`` (a multi-task model, the default), or one of the older families
    (``multi_model``, ``sample_weighting``, ``pairwise_ltr``); ``params`` are checked when the run is built."""

    name: str = "mtl"
    params: dict[str, Any] = Field(default_factory=dict)

    _empty_params = field_validator("params", mode="before")(_none_to_empty)


# --------------------------------------------------------------------------------------------- fusion
class FusionConfig(_Section):
    """How per-task predictions become one ranking score (``mtlkit.fusion``); checked when the run is built.

    ``kind``: ``weighted_sum`` (sum_i w_i p_i) or ``product`` (prod_i p_i^w_i). ``weights``: task -> weight.
    ``values``: value column (e.g. price, a Schema value column) -> weight or exponent.
    """

    kind: str = "product"
    weights: dict[str, float] = Field(default_factory=dict)
    values: dict[str, float] = Field(default_factory=dict)

    _empty_weights = field_validator("weights", "values", mode="before")(_none_to_empty)


# ---------------------------------------------------------------------------------------------- bench
class BenchConfig(_Section):
    """Settings ``mtlkit bench`` uses for the runs of a grid: hyperparameters per model and per balancer name
    (for names other than the run's own ``model`` / ``balancer``), parameters per solution family name, and the
    single-task baseline model."""

    model_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    balancer_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    family_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    baseline: dict[str, Any] = Field(default_factory=lambda: {"name": "single_task", "params": {}})

    _empty = field_validator("model_params", "balancer_params", "family_params", mode="before")(
        _none_to_empty
    )


# ------------------------------------------------------------------------------------------------ run
class RunConfig(_Section):
    """A whole run: seed, data, model, balancer and training settings (see the module docstring)."""

    seed: int = Field(default=0, ge=0)
    data: DataConfig
    model: ModelConfig
    balancer: BalancerConfig = Field(default_factory=BalancerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    family: FamilyConfig = Field(default_factory=FamilyConfig)
    fusion: FusionConfig | None = None
    bench: BenchConfig = Field(default_factory=BenchConfig)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> RunConfig:
        """Validate a dict (as read from YAML); problems raise :class:`ConfigError` naming ``source``."""
        return _validate(data, source)

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (defaults filled; keys that do not apply left out)."""
        out = self.model_dump(by_alias=True)
        out["data"] = {k: v for k, v in out["data"].items() if v is not None}
        if out.get("fusion") is None:
            out.pop("fusion", None)
        plain: dict[str, Any] = _plain(out)
        return plain

    def to_yaml(self) -> str:
        """The resolved configuration as YAML; ``load_config`` of it gives an equal RunConfig."""
        return yaml.dump(self.to_dict(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


# --------------------------------------------------------------------------------------- public helpers
def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override (``["training.lr=0.01", ...]``) and validate a YAML run configuration."""
    if isinstance(overrides, str):
        overrides = [overrides]
    p = Path(path)
    source = str(path)
    data, lines = _read_yaml(p, source)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a run configuration is a YAML mapping with the sections seed, data, model, balancer "
            f"and training; got {_kind(data)}"
        )
    _resolve_paths(data, p.resolve().parent)
    notes = {tuple(part.strip() for part in item.partition("=")[0].split(".")): item for item in overrides}
    data = apply_overrides(data, overrides)
    config = _validate(data, source, lines, notes)
    shared = [(("data", *loc), message) for loc, message in config.data.shared_files()]
    if shared:
        raise ConfigError(_format(shared, source, lines, notes))
    return config


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``key.path=value`` override applied (``data`` itself is left unchanged).

    The value is parsed as YAML (``0.01``, ``[32, 16]``, ``true``, ``null``, ``{a: 1}``); missing sections are
    created. A path that is not part of the layout (or names no parameter of the chosen data set or model) is
    an error naming the closest valid key. Values are checked later, by validation.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    out: dict[str, Any] = copy.deepcopy(dict(data))
    parsed: list[tuple[str, list[str]]] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not key.strip() or not all(p.strip() for p in parts):
            raise ConfigError(f"--set takes KEY.PATH=VALUE (e.g. training.lr=0.01), got {item!r}")
        parts = [p.strip() for p in parts]
        try:
            value = yaml.load(text, Loader=_Loader) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({_yaml_problem(exc)})") from None
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"--set {item}: {'.'.join(parts[: i + 1])} holds {_show(child)}, not a section of keys"
                )
            node = child
        node[parts[-1]] = value
        parsed.append((item, parts))
    for item, parts in parsed:
        _check_override_path(out, parts, item)
    return out


def check_monitor(config: RunConfig, schema: Schema) -> None:
    """Check ``training.early_stopping.monitor`` against the tasks of ``schema`` (a task name or 'mean', and a
    metric defined for the kind of every monitored task)."""
    stopping = config.training.early_stopping
    key = "training.early_stopping.monitor"
    names = schema.task_names
    if stopping.task == "mean":
        tasks = schema.tasks
    elif stopping.task in names:
        tasks = (schema.task(stopping.task),)
    else:
        raise ConfigError(
            f"{key}: {stopping.monitor!r} names no task: {stopping.task!r} is not a task"
            f"{did_you_mean(stopping.task, [*names, 'mean'])}; use 'mean' or one of {listing(names)}"
        )
    for task in tasks:
        allowed = METRICS[task.kind]
        if stopping.metric in allowed:
            continue
        kinds = {t.kind for t in tasks}
        if stopping.task == "mean" and len(kinds) > 1:
            advice = (
                f"the tasks are of different kinds ({listing(sorted(kinds))}), so monitor one task, "
                f"e.g. 'valid.{task.name}.{task.metric}'"
            )
        else:
            advice = f"e.g. 'valid.{stopping.task}.{allowed[0]}'"
        if stopping.monitor == EarlyStoppingConfig.model_fields["monitor"].default:
            advice += f" ({stopping.monitor!r} is the default monitor)"
        raise ConfigError(
            f"{key}: {stopping.monitor!r}: metric {stopping.metric!r} is not defined for {task.kind} task "
            f"{task.name!r} ({task.kind} metrics: {listing(allowed)}){did_you_mean(stopping.metric, allowed)}; "
            f"{advice}"
        )


# -------------------------------------------------------------------------------------------- YAML I/O
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 needs a dot: ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes lists of scalars on one line (``expert_sizes: [64, 32]``), sections as blocks."""


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, list | dict) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
        return what
    return str(exc)


def _read_yaml(path: Path, source: str) -> tuple[Any, dict[Loc, int]]:
    """The data of a YAML file and the line of every key path in it; duplicate keys are errors."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the YAML
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {source} is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {source} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML at {_yaml_problem(exc)}") from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _record_lines(node, (), lines, source)
    return data, lines


def _record_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            line = key_node.start_mark.line + 1
            here: Loc = (*loc, key)
            if here in lines:
                where = _path(loc) or "the top level"
                raise ConfigError(
                    f"{source}, line {line}: duplicate key {key!r} in {where} (first at line "
                    f"{lines[here]}); keep one"
                )
            lines[here] = line
            _record_lines(value_node, here, lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            at: Loc = (*loc, i)
            lines[at] = item.start_mark.line + 1
            _record_lines(item, at, lines, source)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative file paths of the config (data files, a data set's path / data_dir) relative to ``base``."""
    section = data.get("data")
    if not isinstance(section, dict):
        return
    places: list[tuple[dict[str, Any], str]] = [(section, k) for k in ("train", "valid", "test")]
    if isinstance(section.get("params"), dict):
        places += [(section["params"], k) for k in ("path", "data_dir")]
    for holder, key in places:
        value = holder.get(key)
        if isinstance(value, str) and value.strip():
            expanded = Path(value).expanduser()
            holder[key] = str(expanded if expanded.is_absolute() else base / expanded)


# ------------------------------------------------------------------------------------------ validation
def _validate(
    data: Any,
    source: str,
    lines: Mapping[Loc, int] | None = None,
    notes: Mapping[tuple[str, ...], str] | None = None,
) -> RunConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: a run configuration is a mapping with the sections seed, data, model, balancer and "
            f"training; got {_kind(data)}"
        )
    try:
        return RunConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = list(_problems(exc))
    raise ConfigError(_format(problems, source, lines or {}, notes or {}))


def _problems(exc: ValidationError) -> Iterator[tuple[Loc, str]]:
    """(key path, message) for every error pydantic reports, with did-you-mean hints."""
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        value = err.get("input")
        error = err.get("ctx", {}).get("error")
        if kind == "invalid_key" or (loc and loc[-1] == "[key]"):
            key_loc: Loc = tuple(str(p) for p in loc if p != "[key]")
            yield key_loc, f"keys should be text, got {_show(value)} (quote it: '{value}')"
        elif isinstance(error, _Problems):
            for sub, msg in error.problems:
                yield loc + sub, msg
        elif kind == "value_error":
            yield loc, err["msg"].removeprefix("Value error, ")
        elif kind == "extra_forbidden":
            keys = _keys(_section_at(loc[:-1]))
            key = str(loc[-1])
            yield (
                loc,
                f"unknown key {key!r}{did_you_mean(key, keys)}; valid keys here are {listing(keys, 30)}",
            )
        elif kind == "missing":
            yield loc, _missing_message(loc)
        elif kind == "literal_error":
            choices = [str(c) for c in typing.get_args(_annotation_at(loc))]
            yield (
                loc,
                f"should be one of {listing(choices)}, got {_show(value)}{did_you_mean(str(value), choices)}",
            )
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            yield loc, f"should be a section of key: value pairs, got {_show(value)}"
        else:
            msg = re.sub(r"^Input should", "should", err["msg"])
            yield loc, f"{msg}, got {_show(value)}"


def _missing_message(loc: Loc) -> str:
    if loc == ("data",):
        return "required section missing: add data: {dataset: NAME} or data: {train: FILE, labels: [...]}"
    if loc == ("model",):
        return "required section missing: add model: {name: NAME} (e.g. mmoe)"
    if loc == ("model", "name"):
        from mtlkit.models import list_models

        return f"required key missing: name one of {listing(list_models(), 30)}"
    return "required key missing"


def _format(
    problems: list[tuple[Loc, str]],
    source: str,
    lines: Mapping[Loc, int],
    notes: Mapping[tuple[str, ...], str],
) -> str:
    rendered = []
    for loc, msg in problems:
        note = next((item for path, item in notes.items() if loc[: len(path)] == path), None)
        if note is not None:
            where, suffix = source, f" (from --set {note})"
        else:
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
            where, suffix = (f"{source}, line {line}" if line else source), ""
        rendered.append(f"{where}: {_path(loc) or 'configuration'}: {msg}{suffix}")
    if len(rendered) == 1:
        return rendered[0]
    head = f"{source}: {len(rendered)} problems in the run configuration:"
    return "\n".join([head, *("  " + r for r in rendered)])


# -------------------------------------------------------------------------------------- layout lookups
def _field_name(cls: type[BaseModel], key: str) -> str | None:
    """The attribute name of the field that a key (its alias, else its name) selects."""
    for name, info in cls.model_fields.items():
        if (info.alias or name) == key:
            return name
    return None


def _keys(cls: type[BaseModel] | None) -> list[str]:
    return [] if cls is None else [info.alias or name for name, info in cls.model_fields.items()]


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(annotation):
        return args[0]
    return annotation


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _annotation_at(loc: Loc) -> Any:
    """The annotation of the field at a key path of RunConfig (None where the path leaves the layout)."""
    current: Any = RunConfig
    for part in loc:
        if not _is_section(current):
            return None
        name = _field_name(current, str(part))
        if name is None:
            return None
        current = _unwrap(current.model_fields[name].annotation)
    return current


def _section_at(loc: Loc) -> type[BaseModel] | None:
    found = _annotation_at(loc)
    return found if _is_section(found) else None


def _check_override_path(data: Mapping[str, Any], parts: list[str], item: str) -> None:
    current: Any = RunConfig
    for i, part in enumerate(parts):
        here = ".".join(parts[:i]) or "the top level"
        path = ".".join(parts[: i + 1])
        if not _is_section(current):
            raise ConfigError(f"--set {item}: {here} is a value, not a section; write --set {here}=VALUE")
        keys = _keys(current)
        if part not in keys:
            raise ConfigError(
                f"--set {item}: {path} is not a key of the run configuration"
                f"{did_you_mean(part, keys)}; keys in {here} are {listing(keys, 30)}"
            )
        name = _field_name(current, part)
        assert name is not None
        current = _unwrap(current.model_fields[name].annotation)
        if path in ("data.params", "model.params") and i + 1 < len(parts):
            _check_param_override(data, parts[0], parts[i + 1 :], item)
            return
        if typing.get_origin(current) is dict:  # free-form: balancer.params, data.schema
            return


def _check_param_override(data: Mapping[str, Any], section: str, rest: list[str], item: str) -> None:
    owner = data.get(section)
    name = owner.get("dataset" if section == "data" else "name") if isinstance(owner, dict) else None
    if not isinstance(name, str):
        return  # validation reports the missing name
    if section == "data":
        from mtlkit.data.datasets import dataset_parameters

        if name not in _datasets():
            return
        accepted = dataset_parameters(name)
        what = "data set"
    else:
        from mtlkit.models import list_models, model_parameters

        if name not in list_models():
            return
        accepted = model_parameters(name)
        what = "model"
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    keys = _named(accepted)
    path = f"{section}.params.{rest[0]}"
    if rest[0] not in keys and not open_ended:
        raise ConfigError(
            f"--set {item}: {what} {name!r} has no parameter {rest[0]!r} ({path})"
            f"{did_you_mean(rest[0], keys)}; it accepts {listing(keys, 30)}"
        )
    if len(rest) > 1:
        raise ConfigError(f"--set {item}: {path} is a value, not a section; write --set {path}=VALUE")


# ------------------------------------------------------------------------------------------ parameters
def _datasets() -> list[str]:
    from mtlkit.data.datasets import list_datasets

    return list_datasets()


def _named(params: Mapping[str, inspect.Parameter]) -> list[str]:
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [k for k, p in params.items() if p.kind not in variadic]


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj)
    except Exception:  # an annotation that cannot be resolved at run time: skip type checks
        return {}


@functools.lru_cache(maxsize=256)
def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    try:
        return TypeAdapter(annotation)
    except (PydanticSchemaGenerationError, TypeError):
        return None


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("collections.abc.", "").replace("typing.", "")


def _check_params(
    what: str,
    name: str,
    given: Mapping[str, Any],
    accepted: Mapping[str, inspect.Parameter],
    hints: Mapping[str, Any],
) -> tuple[dict[str, Any], list[tuple[Loc, str]]]:
    """Check names and types of ``given`` against a signature; return them with the defaults filled in."""
    problems: list[tuple[Loc, str]] = []
    keys = _named(accepted)
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in given.items():
        if key not in keys:
            if not open_ended:
                problems.append(
                    (
                        (key,),
                        f"{what} {name!r} has no parameter {key!r}{did_you_mean(key, keys)}; "
                        f"it accepts {listing(keys, 30)}",
                    )
                )
            continue
        annotation = hints.get(key)
        adapter = _adapter(annotation) if annotation is not None else None
        if adapter is None:
            continue
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            msg = re.sub(r"^Input should", "should", err["msg"])
            problems.append(
                (
                    (key, *err["loc"]),
                    f"{msg} ({what} {name!r} takes {key}: {_type_name(annotation)}), got {_show(err['input'])}",
                )
            )
    filled: dict[str, Any] = {}
    for key in keys:
        default = accepted[key].default
        if key in given:
            filled[key] = given[key]
        elif default is inspect.Parameter.empty:
            problems.append(((key,), f"{what} {name!r} needs parameter {key!r}: it has no default"))
        elif _representable(default):
            filled[key] = _plain(default)
    filled.update({k: v for k, v in given.items() if k not in filled and open_ended})
    return filled, problems


def _representable(value: Any) -> bool:
    """Whether a default can be written to YAML and read back equal (None, bool, numbers, text, lists)."""
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_representable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _representable(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (YAML has no tuples)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -------------------------------------------------------------------------------------------- formatting
def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return f"a {type(value).__name__} ({_show(value, 40)})"


__all__ = [
    "ALL_METRICS",
    "MAXIMIZED_METRICS",
    "BalancerConfig",
    "ConfigError",
    "DataConfig",
    "EarlyStoppingConfig",
    "ModelConfig",
    "RunConfig",
    "TrainingConfig",
    "apply_overrides",
    "check_monitor",
    "load_config",
]
