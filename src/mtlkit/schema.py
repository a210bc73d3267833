"""The single description of a multi-task problem: its input features and its tasks.

``Feature``, ``Task`` and ``Schema`` are frozen dataclasses, validated on construction, with a JSON round-trip
(``Schema.to_json`` / ``Schema.from_json``). A Schema says which file columns feed which features, how each
feature is encoded, and which column holds each task's label. Missing labels (NaN / empty) are masked per task,
never dropped from the other tasks.

Example::

    Schema(
        features=[Feature("user_id", "categorical", embedding_dim=16), Feature("price", "numeric")],
        tasks=[Task("click", "binary"), Task("purchase", "binary", depends_on="click")],
    )
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mtlkit.errors import SchemaError, did_you_mean, listing

FeatureKind = Literal["categorical", "numeric"]
TaskKind = Literal["binary", "regression", "multiclass"]
FillRule = Literal["mean", "median", "zero"]

#: Loss names each task kind accepts; the first is the default (implemented in ``mtlkit.losses``).
LOSSES: dict[str, tuple[str, ...]] = {
    "binary": ("bce", "focal"),
    "regression": ("mse", "huber", "mae"),
    "multiclass": ("ce", "focal"),
}
#: Metric names each task kind accepts; the first is the default (implemented in ``mtlkit.metrics``).
METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "logloss", "accuracy", "gauc"),
    "regression": ("mse", "mae", "rmse"),
    "multiclass": ("accuracy", "logloss"),
}

#: Suffix of the extra numeric column that flags a missing value (``Feature.missing_indicator``).
MISSING_SUFFIX = "__missing"


def _check_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise SchemaError(f"{what} name must be a non-empty string, got {name!r}")


def _reserved_module_names() -> frozenset[str]:
    import torch

    return frozenset(dir(torch.nn.ModuleDict))


def _check_task_name(name: str) -> None:
    """Task names key per-task modules (towers, gates), so they follow torch's module-name rules."""
    if "." in name:
        raise SchemaError(
            f"task name {name!r} contains '.', which torch module names cannot; use '_' instead "
            f"(e.g. {name.replace('.', '_')!r}) and keep the column through Task.label"
        )
    if name in _reserved_module_names():
        raise SchemaError(
            f"task name {name!r} is reserved (it is an attribute of torch modules); rename the task, "
            f"e.g. {name + '_task'!r}, and keep the column through Task.label"
        )


def _check_choice(what: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        hint = did_you_mean(str(value), choices)
        raise SchemaError(f"{what} must be one of {listing(choices)}, got {value!r}{hint}")


@dataclass(frozen=True)
class Feature:
    """One input feature, read from one column.

    Args:
        name: unique feature name.
        kind: ``"categorical"`` (vocabulary-encoded, embedded) or ``"numeric"`` (float, filled and scaled).
        column: the file column it is read from; defaults to ``name``.
        embedding_dim: embedding width of a categorical feature.
        vocab_size: rows of its embedding table including row 0 (unknown / missing); set when the encoder
            is fitted (``Table.schema`` always has it), ``None`` before.
        min_count: categorical values seen fewer times than this in training data map to 0 (unknown).
        fill: how a missing numeric value is filled: training ``"mean"``, ``"median"`` or ``"zero"``.
        missing_indicator: add a 0/1 numeric column ``<name>__missing`` that flags filled values.
        standardize: scale a numeric feature to zero mean and unit variance (training statistics).
        towers: names of the tasks whose towers alone see this feature; empty means shared input.
    """

    name: str
    kind: FeatureKind = "categorical"
    column: str | None = None
    embedding_dim: int = 16
    vocab_size: int | None = None
    min_count: int = 1
    fill: FillRule = "mean"
    missing_indicator: bool = False
    standardize: bool = True
    towers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        _check_choice(f"feature {self.name!r}: kind", self.kind, get_args(FeatureKind))
        _check_choice(f"feature {self.name!r}: fill", self.fill, get_args(FillRule))
        if self.column is not None:
            _check_name(f"feature {self.name!r}: column", self.column)
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
            raise SchemaError(
                f"feature {self.name!r}: embedding_dim must be an integer >= 1, got {self.embedding_dim!r}"
            )
        if self.vocab_size is not None and (not isinstance(self.vocab_size, int) or self.vocab_size < 1):
            raise SchemaError(
                f"feature {self.name!r}: vocab_size must be an integer >= 1 or None, got {self.vocab_size!r}"
            )
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise SchemaError(
                f"feature {self.name!r}: min_count must be an integer >= 1, got {self.min_count!r}"
            )
        if isinstance(self.towers, str):
            raise SchemaError(
                f"feature {self.name!r}: towers must be a list of task names, got the string "
                f"{self.towers!r} (write [{self.towers!r}])"
            )
        object.__setattr__(self, "towers", tuple(self.towers))
        for tower in self.towers:
            _check_name(f"feature {self.name!r}: tower", tower)
        if len(set(self.towers)) != len(self.towers):
            raise SchemaError(f"feature {self.name!r}: towers repeat a name: {list(self.towers)}")

    @property
    def source(self) -> str:
        """The column this feature is read from."""
        return self.column if self.column is not None else self.name

    @property
    def shared(self) -> bool:
        """True when every part of a model sees this feature (no ``towers`` restriction)."""
        return not self.towers

    @property
    def width(self) -> int:
        """Columns it takes in the numeric block (value + optional missing flag); 0 if categorical."""
        if self.kind != "numeric":
            return 0
        return 2 if self.missing_indicator else 1


@dataclass(frozen=True)
class Task:
    """One prediction task.

    Args:
        name: unique task name (also the default label column).
        kind: ``"binary"`` (labels 0/1), ``"regression"`` (any finite float) or ``"multiclass"``
            (labels 0..num_classes-1).
        label: the column holding the label; defaults to ``name``. Empty / NaN labels are masked out of
            this task only.
        num_classes: classes of a multiclass task (>= 2); must stay ``None`` for other kinds.
        loss: loss name (see ``LOSSES``); defaults to the first for the kind (bce, mse, ce).
        weight: static loss weight (>= 0).
        metric: the metric reported first and monitored by default (see ``METRICS``).
        depends_on: an earlier task whose output feeds this task's tower (ESMM / AITM style).
    """

    name: str
    kind: TaskKind = "binary"
    label: str | None = None
    num_classes: int | None = None
    loss: str | None = None
    weight: float = 1.0
    metric: str | None = None
    depends_on: str | None = None

    def __post_init__(self) -> None:
        _check_name("task", self.name)
        _check_task_name(self.name)
        _check_choice(f"task {self.name!r}: kind", self.kind, get_args(TaskKind))
        if self.label is not None:
            _check_name(f"task {self.name!r}: label", self.label)
        if self.kind == "multiclass":
            if not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise SchemaError(
                    f"task {self.name!r}: a multiclass task needs num_classes >= 2, got {self.num_classes!r}"
                )
        elif self.num_classes is not None:
            raise SchemaError(
                f"task {self.name!r}: num_classes is only for multiclass tasks, "
                f"got {self.num_classes!r} for kind {self.kind!r}"
            )
        if self.loss is None:
            object.__setattr__(self, "loss", LOSSES[self.kind][0])
        _check_choice(f"task {self.name!r}: loss for kind {self.kind!r}", self.loss, LOSSES[self.kind])
        if self.metric is None:
            object.__setattr__(self, "metric", METRICS[self.kind][0])
        _check_choice(f"task {self.name!r}: metric for kind {self.kind!r}", self.metric, METRICS[self.kind])
        if (
            isinstance(self.weight, bool)
            or not isinstance(self.weight, int | float)
            or not math.isfinite(self.weight)
            or self.weight < 0
        ):
            raise SchemaError(f"task {self.name!r}: weight must be a finite number >= 0, got {self.weight!r}")
        object.__setattr__(self, "weight", float(self.weight))
        if self.depends_on is not None:
            _check_name(f"task {self.name!r}: depends_on", self.depends_on)
            if self.depends_on == self.name:
                raise SchemaError(f"task {self.name!r}: depends_on names the task itself")

    @property
    def column(self) -> str:
        """The label column."""
        return self.label if self.label is not None else self.name

    @property
    def output_dim(self) -> int:
        """Logits the model emits for this task: 1, or num_classes for multiclass."""
        return self.num_classes if self.kind == "multiclass" and self.num_classes else 1


@dataclass(frozen=True)
class Schema:
    """Features and tasks of one problem, plus optional group (query / user id), sample-weight and value columns.

    Args:
        features: the input features, in the order of the encoded blocks.
        tasks: the tasks, in the order of the label matrix columns.
        group: column of a query / user / request id (grouped metrics, pairwise baselines); never an input.
        sample_weight: column of per-row loss weights; never an input.
        values: raw numeric columns carried next to the features but never a model input by themselves
            (e.g. an item's price for score fusion ``ctr^a * cvr^b * price^c``, or ground truth of a generated
            data set). A value column may also be read by a feature (price as an input *and* as a raw value),
            but never be a label, the group or the sample weight. ``Table.values`` holds them unscaled.
    """

    features: tuple[Feature, ...]
    tasks: tuple[Task, ...]
    group: str | None = None
    sample_weight: str | None = None
    values: tuple[str, ...] = ()
    _index: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        for f in self.features:
            if not isinstance(f, Feature):
                raise SchemaError(f"Schema.features holds Feature objects, got {f!r}")
        for t in self.tasks:
            if not isinstance(t, Task):
                raise SchemaError(f"Schema.tasks holds Task objects, got {t!r}")
        if not self.tasks:
            raise SchemaError("a Schema needs at least one task")
        if not self.features:
            raise SchemaError("a Schema needs at least one feature")
        _no_duplicates("feature", [f.name for f in self.features])
        _no_duplicates("task", [t.name for t in self.tasks])
        task_names = [t.name for t in self.tasks]
        labels = {t.column: t.name for t in self.tasks}
        _no_duplicates("label column", [t.column for t in self.tasks])
        for f in self.features:
            if f.source in labels:
                raise SchemaError(
                    f"feature {f.name!r} reads column {f.source!r}, which is the label of task "
                    f"{labels[f.source]!r}: a label can never be an input"
                )
            for tower in f.towers:
                if tower not in task_names:
                    raise SchemaError(
                        f"feature {f.name!r}: tower {tower!r} is not a task"
                        f"{did_you_mean(tower, task_names)}; tasks are {listing(task_names)}"
                    )
        for t in self.tasks:
            if t.depends_on is not None and t.depends_on not in task_names:
                raise SchemaError(
                    f"task {t.name!r}: depends_on {t.depends_on!r} is not a task"
                    f"{did_you_mean(t.depends_on, task_names)}; tasks are {listing(task_names)}"
                )
        _check_acyclic(self.tasks)
        inputs = {f.source: f.name for f in self.features}
        for what, column in (("group", self.group), ("sample_weight", self.sample_weight)):
            if column is None:
                continue
            _check_name(f"Schema {what} column", column)
            if column in labels:
                raise SchemaError(f"Schema {what} column {column!r} is the label of task {labels[column]!r}")
            if column in inputs:
                raise SchemaError(
                    f"Schema {what} column {column!r} is read by feature {inputs[column]!r}; "
                    f"{what} columns are never inputs"
                )
        if self.group is not None and self.group == self.sample_weight:
            raise SchemaError(
                f"Schema group and sample_weight both name the column {self.group!r}: a query / user id "
                f"column cannot also hold loss weights; point one of them at another column"
            )
        self._check_values(labels)
        self._index["features"] = {f.name: f for f in self.features}
        self._index["tasks"] = {t.name: t for t in self.tasks}

    def _check_values(self, labels: Mapping[str, str]) -> None:
        if isinstance(self.values, str):
            raise SchemaError(
                f"Schema values must be a list of column names, got the string {self.values!r} "
                f"(write [{self.values!r}])"
            )
        if self.values is None:
            object.__setattr__(self, "values", ())
        try:
            object.__setattr__(self, "values", tuple(self.values))
        except TypeError:
            raise SchemaError(f"Schema values must be a list of column names, got {self.values!r}") from None
        for column in self.values:
            _check_name("Schema value column", column)
            if column in labels:
                raise SchemaError(
                    f"Schema value column {column!r} is the label of task {labels[column]!r}: a label "
                    f"cannot also be a value column; drop it from values"
                )
            for what in ("group", "sample_weight"):
                if column == getattr(self, what):
                    raise SchemaError(
                        f"Schema value column {column!r} is also the schema's {what} column; "
                        f"drop it from values or point {what} at another column"
                    )
        _no_duplicates("value column", list(self.values))

    # ------------------------------------------------------------------ lookups
    def feature(self, name: str) -> Feature:
        """The feature called ``name``."""
        try:
            return self._index["features"][name]
        except KeyError:
            names = self.feature_names
            raise SchemaError(
                f"no feature {name!r}{did_you_mean(name, names)}; features are {listing(names)}"
            ) from None

    def task(self, name: str) -> Task:
        """The task called ``name``."""
        try:
            return self._index["tasks"][name]
        except KeyError:
            names = self.task_names
            raise SchemaError(
                f"no task {name!r}{did_you_mean(name, names)}; tasks are {listing(names)}"
            ) from None

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def categorical(self) -> tuple[Feature, ...]:
        """Categorical features, in the column order of ``Table.categorical``."""
        return tuple(f for f in self.features if f.kind == "categorical")

    @property
    def numeric(self) -> tuple[Feature, ...]:
        """Numeric features, in the order of their blocks in ``Table.numeric``."""
        return tuple(f for f in self.features if f.kind == "numeric")

    @property
    def numeric_columns(self) -> tuple[tuple[str, str], ...]:
        """(feature name, column name) for each column of ``Table.numeric``, in order.

        A numeric feature takes one column, two with ``missing_indicator`` (value, then
        ``<name>__missing``).
        """
        cols: list[tuple[str, str]] = []
        for f in self.numeric:
            cols.append((f.name, f.name))
            if f.missing_indicator:
                cols.append((f.name, f.name + MISSING_SUFFIX))
        return tuple(cols)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Every file column this Schema reads (features, labels, group, sample weight, values), deduplicated."""
        cols = [f.source for f in self.features] + [t.column for t in self.tasks]
        cols += [c for c in (self.group, self.sample_weight) if c is not None]
        cols += list(self.values)
        return tuple(dict.fromkeys(cols))

    def replace_features(self, features: Iterable[Feature]) -> Schema:
        """A copy with other features (e.g. with ``vocab_size`` filled in by fitted encoders)."""
        return dataclasses.replace(self, features=tuple(features))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``Schema.from_dict(s.to_dict()) == s``."""
        return {
            "features": [_to_plain(f) for f in self.features],
            "tasks": [_to_plain(t) for t in self.tasks],
            "group": self.group,
            "sample_weight": self.sample_weight,
            "values": list(self.values),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        """Build and validate a Schema from a dict; unknown keys are errors naming the closest key.

        ``values`` may be absent (dicts written before value columns existed load with none).
        """
        if not isinstance(data, Mapping):
            raise SchemaError(f"a schema must be a mapping, got {type(data).__name__}")
        _known_keys("schema", data, ("features", "tasks", "group", "sample_weight", "values"))
        for key in ("features", "tasks"):
            if key not in data or not isinstance(data[key], list | tuple):
                raise SchemaError(f"schema needs a list under {key!r}")
        features = [_from_plain(Feature, f"features[{i}]", d) for i, d in enumerate(data["features"])]
        tasks = [_from_plain(Task, f"tasks[{i}]", d) for i, d in enumerate(data["tasks"])]
        return cls(
            features=tuple(features),
            tasks=tuple(tasks),
            group=data.get("group"),
            sample_weight=data.get("sample_weight"),
            values=data.get("values") or (),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Schema:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"schema JSON does not parse: {exc}") from None
        return cls.from_dict(data)


def _no_duplicates(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SchemaError(f"duplicate {what} name {name!r}: every {what} name must be unique")
        seen.add(name)


def _check_acyclic(tasks: tuple[Task, ...]) -> None:
    parent = {t.name: t.depends_on for t in tasks}
    for start in parent:
        chain = [start]
        node = parent[start]
        while node is not None:
            if node in chain:
                cycle = " -> ".join([*chain[chain.index(node) :], node])
                raise SchemaError(f"tasks depend on each other in a cycle: {cycle}")
            chain.append(node)
            node = parent[node]


def _to_plain(obj: Feature | Task) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _known_keys(where: str, data: Mapping[str, Any], keys: Iterable[str]) -> None:
    keys = tuple(keys)
    for key in data:
        if key not in keys:
            raise SchemaError(
                f"{where}: unknown key {key!r}{did_you_mean(str(key), keys)}; "
                f"valid keys are {listing(keys, limit=20)}"
            )


def _from_plain(cls: type[Feature] | type[Task], where: str, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise SchemaError(f"{where} must be a mapping, got {data!r}")
    _known_keys(where, data, [f.name for f in dataclasses.fields(cls)])
    kwargs = dict(data)
    if "towers" in kwargs and isinstance(kwargs["towers"], list):
        kwargs["towers"] = tuple(kwargs["towers"])
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field such as name
        raise SchemaError(f"{where}: {exc}") from None
