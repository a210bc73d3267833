"""Score fusion: from one prediction per task (and raw value columns such as price) to one ranking score, and
the search for the fusion weights.

Two kinds, registered in :data:`FUSION_KINDS`:

* ``weighted_sum``: score = sum_i w_i p_i + sum_v w_v value_v (binary probabilities and regression
  predictions; the usual "linear fusion" of several objectives).
* ``product``: score = prod_i p_i^{w_i} * prod_v value_v^{w_v} (e.g. ctr^a * cvr^b * price^c, the
  expected-value score of advertising), computed in log space, log score = sum_i w_i log p_i + sum_v w_v log v,
  with p clamped to [eps, 1] and values to [eps, inf) (binary tasks only: a regression prediction is no
  probability; use it as a value column or in a weighted sum).

Both are linear in fixed per-column features (p or log p), so a ranking depends only on the direction of the
weight vector: multiplying every weight by c > 0 multiplies a weighted sum by c and raises a product to the
power c, neither of which changes the order. The search therefore looks at weights on the simplex
(non-negative, summing to 1) and saves them that way.

A :class:`Fusion` is applied with torch ops only (no data-dependent Python control flow), so it can sit inside
a traced / ONNX module: :meth:`Fusion.as_module` takes the stacked task probabilities ``[B, T]`` and values
``[B, V]`` in the fixed orders :attr:`Fusion.tasks` and :attr:`Fusion.value_columns`. Non-positive values in a
product are checked on the Python side by :meth:`Fusion.check_values` (``mtlkit predict`` and the search call
it): a negative or missing value is an error, a zero is allowed and clamped to eps (so it ranks last, as the
exact product 0 would).

The search (:func:`search_fusion`) takes the predictions, labels, value columns and group ids of a validation
set (:class:`FusionData`), a :class:`Target` named by text (``auc:<task>``, ``weighted_auc:a=0.7,b=0.3``,
``ndcg:<gain expression>@k``) and a :class:`SearchSpace`, and evaluates each candidate with tensor ops only.
"""

from __future__ import annotations

import abc
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from mtlkit.errors import MtlkitError, did_you_mean, listing

if TYPE_CHECKING:
    import pyarrow as pa

    from mtlkit.config import FusionConfig
    from mtlkit.data.columns import Origin
    from mtlkit.data.table import Table
    from mtlkit.schema import Schema

#: Default lower clamp of probabilities and values in a product (log eps = -13.8).
DEFAULT_EPS = 1e-6


# ------------------------------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class FusionKind:
    """How a kind turns task predictions and values into per-column features whose weighted sum ranks rows.

    ``features`` maps (probabilities ``[B, T]``, values ``[B, V]``, eps) to float64 features of the same
    shapes; the ranking score is ``features_p @ w_tasks + features_v @ w_values`` and ``output`` turns it into
    the reported score (the identity, or exp for the product). ``task_kinds``: the task kinds it accepts.
    """

    name: str
    task_kinds: tuple[str, ...]
    features: Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]
    output: Callable[[Tensor], Tensor]
    formula: str


def _linear_features(p: Tensor, v: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return p.to(torch.float64), v.to(torch.float64)


def _log_features(p: Tensor, v: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    p = torch.clamp(p.to(torch.float64), min=eps, max=1.0)
    v = torch.clamp(v.to(torch.float64), min=eps)
    return torch.log(p), torch.log(v)


def _identity(r: Tensor) -> Tensor:
    return r


def _build_kinds(kinds: Sequence[FusionKind]) -> dict[str, FusionKind]:
    registry: dict[str, FusionKind] = {}
    for kind in kinds:
        if kind.name in registry:
            raise RuntimeError(f"fusion kind {kind.name!r} is registered twice")
        registry[kind.name] = kind
    return registry


#: name -> FusionKind; the one place fusion kinds are registered.
FUSION_KINDS: dict[str, FusionKind] = _build_kinds(
    (
        FusionKind(
            "weighted_sum",
            ("binary", "regression"),
            _linear_features,
            _identity,
            "sum_i w_i p_i + sum_v w_v value_v",
        ),
        FusionKind("product", ("binary",), _log_features, torch.exp, "prod_i p_i^w_i * prod_v value_v^w_v"),
    )
)


def fusion_kind(name: str) -> FusionKind:
    """The registered kind ``name`` (an error naming the kinds otherwise)."""
    if name not in FUSION_KINDS:
        raise MtlkitError(
            f"unknown fusion kind {name!r}{did_you_mean(str(name), FUSION_KINDS)}; "
            f"kinds are {listing(FUSION_KINDS)}"
        )
    return FUSION_KINDS[name]


def _check_weights(what: str, weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise MtlkitError(f"fusion {what} must be a mapping name -> weight, got {weights!r}")
    out: dict[str, float] = {}
    for name, weight in weights.items():
        if not isinstance(name, str) or not name:
            raise MtlkitError(f"fusion {what}: names must be non-empty strings, got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise MtlkitError(f"fusion {what}[{name!r}] must be a finite number, got {weight!r}")
        out[name] = float(weight)
    return out


# ------------------------------------------------------------------------------------------------ Fusion
class Fusion:
    """One ranking score from per-task predictions and value columns (see the module docstring).

    Args:
        kind: ``"weighted_sum"`` or ``"product"`` (:data:`FUSION_KINDS`).
        weights: task name -> weight (weighted sum) or exponent (product); the order is kept.
        values: value column (e.g. ``price``) -> weight or exponent.
        eps: lower clamp of probabilities and values in a product (> 0, < 1).

    At least one weight must be non-zero. Only ratios of the weights matter for the ranking.
    """

    __slots__ = ("_eps", "_kind", "_values", "_weights")
    _kind: str
    _weights: dict[str, float]
    _values: dict[str, float]
    _eps: float

    def __init__(
        self,
        kind: str,
        weights: Mapping[str, float],
        values: Mapping[str, float] | None = None,
        eps: float = DEFAULT_EPS,
    ) -> None:
        fusion_kind(kind)
        task_weights = _check_weights("weights", weights)
        value_weights = _check_weights("values", values if values is not None else {})
        if not task_weights:
            raise MtlkitError(
                "a fusion needs at least one task weight, e.g. weights: {click: 1.0, conversion: 1.0}"
            )
        if all(w == 0 for w in [*task_weights.values(), *value_weights.values()]):
            raise MtlkitError(
                f"every fusion weight is 0 ({task_weights}, {value_weights}): the score would be constant"
            )
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 1:
            raise MtlkitError(f"fusion eps must be in (0, 1), got {eps!r}")
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_weights", task_weights)
        object.__setattr__(self, "_values", value_weights)
        object.__setattr__(self, "_eps", float(eps))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Fusion is immutable; build a new one instead of setting {name!r}")

    # ------------------------------------------------------------------ attributes
    @property
    def kind(self) -> str:
        return self._kind

    @property
    def weights(self) -> dict[str, float]:
        """Task -> weight (a copy)."""
        return dict(self._weights)

    @property
    def values(self) -> dict[str, float]:
        """Value column -> weight (a copy)."""
        return dict(self._values)

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks, in the column order of :meth:`as_module`'s probabilities."""
        return tuple(self._weights)

    @property
    def value_columns(self) -> tuple[str, ...]:
        """The value columns, in the column order of :meth:`as_module`'s values."""
        return tuple(self._values)

    def __repr__(self) -> str:
        eps = "" if self._eps == DEFAULT_EPS else f", eps={self._eps!r}"
        return f"Fusion(kind={self._kind!r}, weights={self._weights!r}, values={self._values!r}{eps})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fusion):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # ------------------------------------------------------------------ schema checks
    @classmethod
    def from_config(cls, config: FusionConfig, schema: Schema) -> Fusion:
        """The fusion a run configuration names, checked against the data set's schema."""
        fusion = cls(config.kind, config.weights, config.values)
        fusion.check(schema, values=True)
        return fusion

    def check(self, schema: Schema, *, values: bool = False, where: str = "fusion") -> None:
        """Every task exists with a kind this fusion accepts; with ``values``, every value column is one of
        ``schema.values`` (``mtlkit predict`` takes them from the input file instead)."""
        kind = fusion_kind(self._kind)
        names = schema.task_names
        for task in self._weights:
            if task not in names:
                raise MtlkitError(
                    f"{where}: no task {task!r}{did_you_mean(task, names)}; tasks are {listing(names)}"
                )
            task_kind = schema.task(task).kind
            if task_kind not in kind.task_kinds:
                raise MtlkitError(
                    f"{where}: task {task!r} is {task_kind}, but a {self._kind} fusion takes "
                    f"{' and '.join(kind.task_kinds)} tasks"
                    + (" (use weighted_sum for a regression prediction)" if task_kind == "regression" else "")
                )
        if values:
            columns = tuple(getattr(schema, "values", ()))
            for column in self._values:
                if column not in columns:
                    raise MtlkitError(
                        f"{where}: no value column {column!r}{did_you_mean(column, columns)}; the schema's "
                        f"value columns are {listing(columns) if columns else 'none (add them to schema.values)'}"
                    )

    def check_values(
        self, values: Mapping[str, Tensor], where: str = "the data", origin: Origin | None = None
    ) -> None:
        """Raise an MtlkitError for a missing (NaN) value, or a negative one in a product (zero is allowed).

        The first bad row is named by ``origin`` (``row 3 (line 4) of data.csv``) when given, else by its
        0-based index in ``values``."""

        def first(row: int) -> str:
            return origin.where(row) if origin is not None else f"row {row}"

        for column in self._values:
            if column not in values:
                raise MtlkitError(f"{where} has no value column {column!r}, which the fusion uses")
            tensor = values[column]
            bad = torch.isnan(tensor)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise MtlkitError(
                    f"{where}: value column {column!r} is missing in {int(bad.sum())} rows (first: {first(row)}); "
                    f"fill or drop them before fusing"
                )
            if self._kind == "product":
                negative = tensor < 0
                if bool(negative.any()):
                    row = int(negative.nonzero()[0, 0])
                    raise MtlkitError(
                        f"{where}: value column {column!r} has {int(negative.sum())} negative values (first: "
                        f"{first(row)}, {float(tensor[row])!r}); a product fusion raises values to powers, so they "
                        f"must be >= 0 (use a weighted_sum for signed values)"
                    )

    # ------------------------------------------------------------------ applying
    def _stack(
        self, scores: Mapping[str, Tensor], values: Mapping[str, Tensor] | None
    ) -> tuple[Tensor, Tensor]:
        missing = [t for t in self._weights if t not in scores]
        if missing:
            raise MtlkitError(
                f"the fusion uses task {missing[0]!r}, but the predictions hold {listing(scores)}"
                f"{did_you_mean(missing[0], scores)}"
            )
        values = values if values is not None else {}
        missing = [v for v in self._values if v not in values]
        if missing:
            raise MtlkitError(
                f"the fusion uses value column {missing[0]!r}, but the values given are "
                f"{listing(values) if values else 'none'}{did_you_mean(missing[0], values)}"
            )
        p = torch.stack([scores[t].reshape(-1) for t in self._weights], dim=1)
        rows = p.shape[0]
        if self._values:
            v = torch.stack([values[c].reshape(-1) for c in self._values], dim=1)
        else:
            v = p.new_zeros((rows, 0))
        return p, v

    def ranking(self, scores: Mapping[str, Tensor], values: Mapping[str, Tensor] | None = None) -> Tensor:
        """A float64 ``[B]`` score with the same order as the fused score (the log of a product)."""
        p, v = self._stack(scores, values)
        return _ranking(self._kind, p, v, self._weight_tensors(p.device), self._eps)

    def __call__(self, scores: Mapping[str, Tensor], values: Mapping[str, Tensor] | None = None) -> Tensor:
        """The fused score ``[B]`` (float64) of per-task predictions ``{task: [B]}`` and values ``{column: [B]}``."""
        p, v = self._stack(scores, values)
        return self.as_module().to(p.device)(p, v)

    def _weight_tensors(self, device: torch.device) -> tuple[Tensor, Tensor]:
        wt = torch.tensor(list(self._weights.values()), dtype=torch.float64, device=device)
        wv = torch.tensor(list(self._values.values()), dtype=torch.float64, device=device)
        return wt, wv

    def as_module(self) -> FusionModule:
        """An ``nn.Module``: (probabilities ``[B, T]`` in :attr:`tasks` order, values ``[B, V]`` in
        :attr:`value_columns` order; ``V`` may be 0) -> float64 score ``[B]``; traceable and exportable."""
        wt, wv = self._weight_tensors(torch.device("cpu"))
        return FusionModule(self._kind, wt, wv, self._eps, self.tasks, self.value_columns)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self._kind,
            "weights": dict(self._weights),
            "values": dict(self._values),
            "eps": self._eps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "fusion") -> Fusion:
        if not isinstance(data, Mapping):
            raise MtlkitError(f"{where} must be a mapping with kind and weights, got {type(data).__name__}")
        keys = ("kind", "weights", "values", "eps")
        for key in data:
            if key not in keys:
                raise MtlkitError(
                    f"{where}: unknown key {key!r}{did_you_mean(str(key), keys)}; keys are {listing(keys)}"
                )
        if "kind" not in data or "weights" not in data:
            raise MtlkitError(f"{where} needs 'kind' and 'weights'")
        try:
            return cls(data["kind"], data["weights"], data.get("values") or {}, data.get("eps", DEFAULT_EPS))
        except MtlkitError as exc:
            raise MtlkitError(f"{where}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the fusion as JSON (atomically: a temporary file, then a rename)."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(target)

    @classmethod
    def load(cls, path: str | Path) -> Fusion:
        """Read a fusion JSON file written by :meth:`save` (errors name the file)."""
        p = Path(path)
        if not p.is_file():
            raise MtlkitError(f"fusion file {p} does not exist")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MtlkitError(f"fusion file {p} is not valid JSON: {exc}") from None
        return cls.from_dict(data, where=str(p))


def _ranking(kind: str, p: Tensor, v: Tensor, weights: tuple[Tensor, Tensor], eps: float) -> Tensor:
    fp, fv = FUSION_KINDS[kind].features(p, v, eps)
    return fp @ weights[0] + fv @ weights[1]


class FusionModule(nn.Module):
    """The fused score as a module: ``forward(probabilities [B, T], values [B, V]) -> score [B]`` (float64).

    ``tasks`` and ``value_columns`` name the input columns in order; the weights are buffers. Torch ops only, so
    ``torch.jit.trace`` / ``torch.onnx.export`` keep it as is.
    """

    task_weights: Tensor
    value_weights: Tensor

    def __init__(
        self,
        kind: str,
        task_weights: Tensor,
        value_weights: Tensor,
        eps: float,
        tasks: Sequence[str],
        value_columns: Sequence[str],
    ) -> None:
        super().__init__()
        fusion_kind(kind)
        if task_weights.shape != (len(tasks),) or value_weights.shape != (len(value_columns),):
            raise ValueError(
                f"weights must have shapes [{len(tasks)}] and [{len(value_columns)}], "
                f"got {list(task_weights.shape)} and {list(value_weights.shape)}"
            )
        self.kind = kind
        self.eps = float(eps)
        self.tasks = tuple(tasks)
        self.value_columns = tuple(value_columns)
        self.register_buffer("task_weights", task_weights.to(torch.float64))
        self.register_buffer("value_weights", value_weights.to(torch.float64))

    def forward(self, probabilities: Tensor, values: Tensor) -> Tensor:
        kind = FUSION_KINDS[self.kind]
        fp, fv = kind.features(probabilities, values, self.eps)
        return kind.output(fp @ self.task_weights + fv @ self.value_weights)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, tasks={list(self.tasks)}, value_columns={list(self.value_columns)}"


# ---------------------------------------------------------------------------------------------- search data
@dataclass
class FusionData:
    """What the search needs of one split: per-task predictions, labels (NaN = missing), value columns, group
    ids, and each task's kind (default binary).

    All tensors are ``[N]``; build it from a Table with :meth:`from_table`.
    """

    scores: dict[str, Tensor]
    labels: dict[str, Tensor]
    values: dict[str, Tensor] = field(default_factory=dict)
    groups: Tensor | None = None
    task_kinds: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {f"scores[{k!r}]": v.shape for k, v in self.scores.items()}
        sizes |= {f"labels[{k!r}]": v.shape for k, v in self.labels.items()}
        sizes |= {f"values[{k!r}]": v.shape for k, v in self.values.items()}
        if self.groups is not None:
            sizes["groups"] = self.groups.shape
        shapes = set(sizes.values())
        if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
            raise ValueError(f"FusionData tensors must all have shape [N], got {sizes}")
        for task in self.labels:
            self.task_kinds.setdefault(task, "binary")

    def __len__(self) -> int:
        for columns in (self.scores, self.labels, self.values):
            for tensor in columns.values():
                return int(tensor.shape[0])
        return 0

    @classmethod
    def from_table(cls, table: Table, scores: Mapping[str, Tensor]) -> FusionData:
        """Labels, value columns and groups of ``table`` (a split of the data set), with the run's predictions."""
        schema = table.schema
        columns = tuple(getattr(schema, "values", ()))
        table_values = getattr(table, "values", None)
        values = {c: table.value(c) for c in columns} if table_values is not None else {}
        return cls(
            scores={k: v for k, v in scores.items() if v.dim() == 1},
            labels={t.name: table.label(t.name) for t in schema.tasks if t.kind != "multiclass"},
            values=values,
            groups=table.groups,
            task_kinds={t.name: t.kind for t in schema.tasks},
        )


# ------------------------------------------------------------------------------------------------- targets
def _auc_columns(score: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Exact ROC AUC (ties count 1/2) of one score ``[N]`` against several label columns at once.

    ``positive`` / ``negative``: boolean ``[T, N]`` (both False for a missing label). One sort of the score
    (numpy's SIMD quicksort, several times faster than ``torch.sort`` on a CPU), then cumulative counts:
    sum_k P_k (N_<k + N_k / 2) / (P N) over the tie blocks k, the same value as :func:`mtlkit.metrics.roc_auc`
    per column (NaN for a column with one class only). Without ties a block is a row and the ends need no lookup.
    """
    order = np.argsort(score)
    s = score[order]
    distinct = s[1:] != s[:-1]
    pos = np.take(positive, order, axis=1)
    cum_neg = np.cumsum(np.take(negative, order, axis=1), axis=1, dtype=np.int64)
    total = pos.sum(axis=1, dtype=np.int64).astype(np.float64) * cum_neg[:, -1]
    if bool(distinct.all()):
        correct = np.where(pos, cum_neg, 0).sum(axis=1, dtype=np.int64).astype(np.float64)
    else:
        last = np.flatnonzero(np.append(distinct, True))
        cum_pos = np.take(np.cumsum(pos, axis=1, dtype=np.int64), last, axis=1)
        ends = np.take(cum_neg, last, axis=1)
        block_pos = np.diff(cum_pos, axis=1, prepend=0).astype(np.float64)
        block_neg = np.diff(ends, axis=1, prepend=0).astype(np.float64)
        correct = (block_pos * (ends - 0.5 * block_neg)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / total, np.nan)


class _AUCs:
    """AUC of a score against a fixed set of binary tasks (label masks computed once)."""

    def __init__(self, data: FusionData, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)
        labels = np.stack([data.labels[t].detach().cpu().numpy().astype(np.float64) for t in self.tasks])
        self.positive = labels == 1
        self.negative = labels == 0

    def __call__(self, score: Tensor) -> dict[str, float]:
        array = score.detach().cpu().numpy().astype(np.float64, copy=False)
        if bool(np.isnan(array).any()):
            return dict.fromkeys(self.tasks, math.nan)
        values = _auc_columns(array, self.positive, self.negative)
        return {t: float(v) for t, v in zip(self.tasks, values, strict=True)}


class Target(abc.ABC):
    """A quantity of a ranking score to maximise, named by text ``<name>:<argument>`` (:data:`TARGETS`)."""

    name: ClassVar[str]
    syntax: ClassVar[str]

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"

    @classmethod
    @abc.abstractmethod
    def parse(cls, argument: str, text: str) -> Target:
        """The target from the text after ``<name>:``."""

    @abc.abstractmethod
    def check(self, data: FusionData) -> None:
        """Raise an MtlkitError when ``data`` lacks a task, value column or group ids the target names."""

    @abc.abstractmethod
    def prepare(self, data: FusionData) -> Callable[[Tensor], float]:
        """A function of a ranking score ``[N]`` (float64) -> the target's value on ``data``."""


def _task_names(data: FusionData) -> list[str]:
    return list(data.labels)


def _check_binary_task(target: str, task: str, data: FusionData) -> None:
    if task not in data.labels:
        names = _task_names(data)
        raise MtlkitError(
            f"target {target!r}: no task {task!r}{did_you_mean(task, names)}; tasks are {listing(names)}"
        )
    if data.task_kinds.get(task, "binary") != "binary":
        raise MtlkitError(
            f"target {target!r}: AUC needs a binary task, and {task!r} is {data.task_kinds[task]}"
        )


class AUCTarget(Target):
    """ROC AUC of the fused score against one binary task's labels: ``auc:<task>``."""

    name = "auc"
    syntax = "auc:<task>"

    def __init__(self, text: str, task: str) -> None:
        super().__init__(text)
        self.task = task

    @classmethod
    def parse(cls, argument: str, text: str) -> Target:
        task = argument.strip()
        if not task:
            raise MtlkitError(f"target {text!r}: name a task, e.g. auc:conversion")
        return cls(text, task)

    def check(self, data: FusionData) -> None:
        _check_binary_task(self.text, self.task, data)

    def prepare(self, data: FusionData) -> Callable[[Tensor], float]:
        self.check(data)
        aucs = _AUCs(data, [self.task])
        return lambda score: aucs(score)[self.task]


_TERM = re.compile(
    r"^\s*(?:(?P<coef>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[A-Za-z_][\w.]*)\s*$"
)
_NUMBER = re.compile(r"^\s*[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?\s*$")


class WeightedAUCTarget(Target):
    """A weighted sum of per-task AUCs of the fused score: ``weighted_auc:click=0.3,conversion=0.7``."""

    name = "weighted_auc"
    syntax = "weighted_auc:<task>=<weight>,<task>=<weight>,..."

    def __init__(self, text: str, weights: Mapping[str, float]) -> None:
        super().__init__(text)
        self.weights = dict(weights)

    @classmethod
    def parse(cls, argument: str, text: str) -> Target:
        weights: dict[str, float] = {}
        for item in argument.split(","):
            name, sep, number = item.partition("=")
            name = name.strip()
            if not sep or not name or not _NUMBER.match(number):
                raise MtlkitError(
                    f"target {text!r}: {item.strip()!r} is not <task>=<weight> with a weight >= 0; "
                    f"write e.g. weighted_auc:click=0.3,conversion=0.7"
                )
            if name in weights:
                raise MtlkitError(f"target {text!r} names task {name!r} twice")
            weights[name] = float(number)
        if not any(w > 0 for w in weights.values()):
            raise MtlkitError(f"target {text!r}: at least one weight must be > 0")
        return cls(text, weights)

    def check(self, data: FusionData) -> None:
        for task in self.weights:
            _check_binary_task(self.text, task, data)

    def prepare(self, data: FusionData) -> Callable[[Tensor], float]:
        self.check(data)
        aucs = _AUCs(data, list(self.weights))
        weights = self.weights

        def value(score: Tensor) -> float:
            aucs_ = aucs(score)
            return sum(w * aucs_[t] for t, w in weights.items())

        return value


class NDCGTarget(Target):
    """NDCG@k of the fused score within each group (the Schema's group column: query / user / request id),
    with a graded gain built from labels and value columns: ``ndcg:click+3*conversion@10``,
    ``ndcg:true_value@10`` (``@k`` optional: every row). Missing labels count as gain 0; see
    :class:`mtlkit.metrics.GroupedNDCG` for ties and all-zero groups."""

    name = "ndcg"
    syntax = "ndcg:<coef>*<task or value column>+...@k"

    def __init__(self, text: str, terms: Mapping[str, float], k: int | None) -> None:
        super().__init__(text)
        self.terms = dict(terms)
        self.k = k

    @classmethod
    def parse(cls, argument: str, text: str) -> Target:
        expression, at, cut = argument.rpartition("@") if "@" in argument else (argument, "", "")
        k: int | None = None
        if at:
            if not cut.strip().isdigit() or int(cut) < 1:
                raise MtlkitError(
                    f"target {text!r}: the cut-off after '@' must be an integer >= 1, got {cut!r}"
                )
            k = int(cut)
        terms: dict[str, float] = {}
        for item in expression.split("+"):
            match = _TERM.match(item)
            if match is None:
                raise MtlkitError(
                    f"target {text!r}: {item.strip()!r} is not a term [<coef>*]<name> with a coefficient >= 0; "
                    f"write e.g. ndcg:click+3*conversion@10"
                )
            name = match["name"]
            terms[name] = terms.get(name, 0.0) + (float(match["coef"]) if match["coef"] else 1.0)
        if not any(c > 0 for c in terms.values()):
            raise MtlkitError(f"target {text!r}: at least one coefficient must be > 0")
        return cls(text, terms, k)

    def check(self, data: FusionData) -> None:
        names = [*data.labels, *data.values]
        for name in self.terms:
            if name not in names:
                raise MtlkitError(
                    f"target {self.text!r}: {name!r} is neither a task nor a value column"
                    f"{did_you_mean(name, names)}; tasks are {listing(data.labels)}, value columns "
                    f"{listing(data.values) if data.values else 'none'}"
                )
            if name in data.labels and data.task_kinds.get(name, "binary") not in ("binary", "regression"):
                raise MtlkitError(
                    f"target {self.text!r}: task {name!r} is {data.task_kinds[name]}; gains need numbers"
                )
        if data.groups is None:
            raise MtlkitError(
                f"target {self.text!r}: NDCG is computed per group, but the data has no group column "
                f"(set Schema.group to the query / user / request id)"
            )

    def gains(self, data: FusionData) -> Tensor:
        """The graded gain ``[N]``: sum of coefficient x column, missing labels as 0."""
        total = torch.zeros(len(data), dtype=torch.float64)
        for name, coef in self.terms.items():
            column = data.labels[name] if name in data.labels else data.values[name]
            total = total + coef * torch.nan_to_num(column.to(torch.float64), nan=0.0)
        if bool((total < 0).any()):
            raise MtlkitError(
                f"target {self.text!r}: the gain is negative in {int((total < 0).sum())} rows; gains must be >= 0"
            )
        return total

    def prepare(self, data: FusionData) -> Callable[[Tensor], float]:
        from mtlkit.metrics import GroupedNDCG

        self.check(data)
        assert data.groups is not None
        ndcg = GroupedNDCG(self.gains(data), data.groups, self.k)
        if ndcg.groups_counted == 0:
            raise MtlkitError(f"target {self.text!r}: no group has a positive gain, so NDCG is undefined")
        return ndcg


#: target name -> class; the one place search targets are registered.
TARGETS: dict[str, type[Target]] = {cls.name: cls for cls in (AUCTarget, WeightedAUCTarget, NDCGTarget)}


def parse_target(text: str) -> Target:
    """``auc:<task>`` | ``weighted_auc:a=0.7,b=0.3`` | ``ndcg:<gain expression>@k`` -> a Target."""
    if isinstance(text, Target):
        return text
    name, sep, argument = str(text).partition(":")
    name = name.strip()
    if not sep or name not in TARGETS:
        forms = "; ".join(cls.syntax for cls in TARGETS.values())
        raise MtlkitError(f"unknown target {text!r}{did_you_mean(name, TARGETS)}; targets are {forms}")
    return TARGETS[name].parse(argument, str(text))


# -------------------------------------------------------------------------------------------------- search
@dataclass(frozen=True)
class SearchSpace:
    """The weights the search moves: a fusion kind, its tasks and value columns (non-negative weights).

    Args:
        kind: ``weighted_sum`` or ``product``.
        tasks: the tasks whose predictions are fused (at least one).
        values: the value columns fused with them.

    Only the direction of the weight vector matters (see the module docstring), so n weights have n - 1 free
    coordinates: the simplex. A weighted sum is searched on columns divided by their standard deviation on the
    validation set (a price in the hundreds and a conversion probability in the thousandths then share one
    grid); the reported weights are in the original units, normalised to sum 1.
    """

    kind: str
    tasks: tuple[str, ...]
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        fusion_kind(self.kind)
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "values", tuple(self.values))
        if not self.tasks:
            raise MtlkitError("the search needs at least one task to fuse")
        names = [*self.tasks, *self.values]
        for name in names:
            if names.count(name) > 1:
                raise MtlkitError(f"the search space names {name!r} twice")
        if len(names) < 2:
            raise MtlkitError(
                f"the search space holds only {names[0]!r}: with one weight there is nothing to search "
                f"(the ranking is that prediction's); add tasks or value columns"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.tasks, *self.values)

    @property
    def free(self) -> int:
        """Free coordinates: weights - 1."""
        return len(self.names) - 1


#: Default grid levels per free coordinate count (points: C(levels - 1 + free, free)).
DEFAULT_GRID = {1: 41, 2: 21, 3: 11}
#: Largest free coordinate count searched by grid unless trials are asked for.
MAX_GRID_FREE = 3
#: Trials of the Optuna search when none are given.
DEFAULT_TRIALS = 200
#: A grid larger than this is refused (ask for Optuna trials instead).
MAX_GRID_POINTS = 100_000


@dataclass
class SearchResult:
    """The best fusion found, its validation value of the target, and how it was found."""

    fusion: Fusion
    value: float
    target: str
    method: str
    trials: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "fusion": self.fusion.to_dict(),
            "value": self.value,
            "target": self.target,
            "method": self.method,
            "trials": self.trials,
            "seconds": self.seconds,
        }


def simplex_grid(levels: int, dims: int) -> Tensor:
    """Every point of the simplex in ``dims`` coordinates with coordinates in {0, 1/(levels-1), ..., 1}:
    ``[C(levels - 2 + dims, dims - 1), dims]`` float64 rows summing to 1."""
    if levels < 2:
        raise MtlkitError(f"--grid must be >= 2 levels, got {levels}")
    steps = levels - 1
    points = [
        [b - a - 1 for a, b in itertools.pairwise((-1, *bars, steps + dims - 1))]
        for bars in itertools.combinations(range(steps + dims - 1), dims - 1)
    ]
    return torch.tensor(points, dtype=torch.float64) / steps


class _Objective:
    """Features of the validation set computed once; each candidate weight vector is one matrix-vector product
    and the target's tensor ops."""

    def __init__(self, data: FusionData, target: Target, space: SearchSpace, eps: float) -> None:
        for task in space.tasks:
            if task not in data.scores:
                raise MtlkitError(
                    f"the search space names task {task!r}, which has no predictions{did_you_mean(task, data.scores)}; predicted: {listing(data.scores)}"
                )
        kind = fusion_kind(space.kind)
        for task in space.tasks:
            task_kind = data.task_kinds.get(task, "binary")
            if task_kind not in kind.task_kinds:
                raise MtlkitError(
                    f"a {space.kind} fusion takes {' and '.join(kind.task_kinds)} tasks; {task!r} is {task_kind}"
                )
        for column in space.values:
            if column not in data.values:
                raise MtlkitError(
                    f"the search space names value column {column!r}{did_you_mean(column, data.values)}; the data's "
                    f"value columns are {listing(data.values) if data.values else 'none'}"
                )
        self.space = space
        self.eps = eps
        probe = Fusion(space.kind, dict.fromkeys(space.tasks, 1.0), dict.fromkeys(space.values, 1.0), eps)
        probe.check_values(data.values, "the validation data")
        p, v = probe._stack(data.scores, data.values)
        fp, fv = kind.features(p, v, eps)
        self.features = torch.cat([fp, fv], dim=1)
        if space.kind == "weighted_sum":
            scale = self.features.std(dim=0)
            self.scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        else:
            self.scale = torch.ones(len(space.names), dtype=torch.float64)
        self.evaluate = target.prepare(data)
        self.trials = 0

    def weights(self, direction: Tensor) -> Tensor:
        """Original-unit weights (summing to 1) of a direction in the scaled coordinates."""
        w = direction.to(torch.float64) / self.scale
        return w / w.sum()

    def __call__(self, direction: Tensor) -> tuple[float, Tensor]:
        self.trials += 1
        w = self.weights(direction)
        value = self.evaluate(self.features @ w)
        return (value if math.isfinite(value) else -math.inf), w

    def fusion(self, w: Tensor) -> Fusion:
        n = len(self.space.tasks)
        names = self.space.names
        return Fusion(
            self.space.kind,
            {names[i]: float(w[i]) for i in range(n)},
            {names[i]: float(w[i]) for i in range(n, len(names))},
            self.eps,
        )


def search_fusion(
    data: FusionData,
    target: str | Target,
    space: SearchSpace,
    n_trials: int | None = None,
    grid: int | None = None,
    seed: int = 0,
    eps: float = DEFAULT_EPS,
) -> SearchResult:
    """Search the fusion weights that maximise ``target`` on ``data`` (a validation set).

    A grid over the simplex when the space has at most :data:`MAX_GRID_FREE` free coordinates and no
    ``n_trials`` is given (``grid`` levels per coordinate, default :data:`DEFAULT_GRID`); otherwise Optuna's
    TPE sampler seeded with ``seed`` for ``n_trials`` (default :data:`DEFAULT_TRIALS`) trials, starting from
    equal weights. Ties between candidates keep the first found. The predictions are fixed: each trial is a
    matrix-vector product and the target's sort.
    """
    started = time.perf_counter()
    target = parse_target(target) if isinstance(target, str) else target
    if n_trials is not None and grid is not None:
        raise MtlkitError("give either grid levels or a number of trials, not both")
    if n_trials is not None and (isinstance(n_trials, bool) or n_trials < 1):
        raise MtlkitError(f"trials must be >= 1, got {n_trials!r}")
    objective = _Objective(data, target, space, eps)
    use_grid = grid is not None or (n_trials is None and space.free <= MAX_GRID_FREE)
    if use_grid:
        levels = grid if grid is not None else DEFAULT_GRID[space.free]
        count = math.comb(levels - 2 + len(space.names), space.free) if levels >= 2 else 0
        if count > MAX_GRID_POINTS:
            raise MtlkitError(
                f"a grid of {levels} levels over {len(space.names)} weights has {count:,} points; use fewer "
                f"levels or Optuna trials (--trials)"
            )
        best_value, best_w = _grid_search(objective, simplex_grid(levels, len(space.names)))
        method = f"grid ({levels} levels)"
    else:
        trials = n_trials if n_trials is not None else DEFAULT_TRIALS
        best_value, best_w = _optuna_search(objective, trials, seed)
        method = f"optuna TPE (seed {seed})"
    if best_w is None:
        raise MtlkitError(
            f"target {target.text!r} is undefined (NaN) for every weight tried on the validation data"
        )
    return SearchResult(
        objective.fusion(best_w),
        best_value,
        target.text,
        method,
        objective.trials,
        time.perf_counter() - started,
    )


def _grid_search(objective: _Objective, points: Tensor) -> tuple[float, Tensor | None]:
    best_value, best_w = -math.inf, None
    for direction in points:
        value, w = objective(direction)
        if value > best_value:
            best_value, best_w = value, w
    return best_value, best_w


def _optuna_search(objective: _Objective, trials: int, seed: int) -> tuple[float, Tensor | None]:
    try:
        import optuna
    except ImportError:
        raise MtlkitError(
            "the Optuna search needs optuna: pip install 'mtlkit[search]' (or pip install optuna), or search "
            "a grid of at most 4 weights"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = objective.space.names
    best: dict[str, Any] = {"value": -math.inf, "w": None}

    def run(trial: Any) -> float:
        raw = torch.tensor(
            [trial.suggest_float(f"w{i}", 0.0, 1.0) for i in range(len(names))], dtype=torch.float64
        )
        if float(raw.sum()) <= 0:
            return -math.inf
        value, w = objective(raw / raw.sum())
        if value > best["value"]:
            best["value"], best["w"] = value, w
        return value

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({f"w{i}": 1.0 for i in range(len(names))})
    study.optimize(run, n_trials=trials)
    return best["value"], best["w"]


def evaluate_fusion(fusion: Fusion, data: FusionData, target: str | Target | None = None) -> dict[str, Any]:
    """The target's value (when given) and the AUC of the fused score against every binary task of ``data``:
    ``{"target": x, "auc": {task: auc}}``."""
    fusion.check_values(data.values, "the data")
    score = fusion.ranking(data.scores, data.values)
    binary = [t for t in data.labels if data.task_kinds.get(t, "binary") == "binary"]
    out: dict[str, Any] = {"auc": _AUCs(data, binary)(score) if binary else {}}
    if target is not None:
        t = parse_target(target) if isinstance(target, str) else target
        out["target"] = t.prepare(data)(score)
    return out


def task_aucs(data: FusionData) -> dict[str, float]:
    """Each binary task's AUC of its own prediction (the per-task models, before fusion)."""
    out = {}
    for task in data.labels:
        if data.task_kinds.get(task, "binary") == "binary" and task in data.scores:
            out[task] = _AUCs(data, [task])(data.scores[task].to(torch.float64))[task]
    return out


# ------------------------------------------------------------------------------------------ files
def require_value_columns(names: Sequence[str], columns: Sequence[str], source: str) -> None:
    """An MtlkitError naming the first of a fusion's value ``columns`` missing from a file's column ``names``."""
    for column in columns:
        if column not in names:
            raise MtlkitError(
                f"{source} has no column {column!r}{did_you_mean(column, names)}, which the fusion reads as a value "
                f"column; add it to the file, or pass --fusion with a fusion that does not use it"
            )


def value_columns_from_arrow(raw: pa.Table, columns: tuple[str, ...], source: str) -> dict[str, Tensor]:
    """The value columns a fusion reads, from the rows of an input file, as float64 tensors (NaN where empty).

    A missing or non-numeric column is an MtlkitError naming the file and the column.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Tensor] = {}
    require_value_columns(raw.column_names, columns, source)
    for column in columns:
        try:
            numbers = pc.cast(raw.column(column), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise MtlkitError(
                f"{source}: column {column!r} is {raw.schema.field(column).type}, but the fusion needs numbers in it"
            ) from None
        out[column] = torch.from_numpy(numbers.to_numpy(zero_copy_only=False).astype("float64"))
    return out


__all__ = [
    "FUSION_KINDS",
    "TARGETS",
    "AUCTarget",
    "Fusion",
    "FusionData",
    "FusionKind",
    "FusionModule",
    "NDCGTarget",
    "SearchResult",
    "SearchSpace",
    "Target",
    "WeightedAUCTarget",
    "evaluate_fusion",
    "fusion_kind",
    "parse_target",
    "require_value_columns",
    "search_fusion",
    "simplex_grid",
    "task_aucs",
    "value_columns_from_arrow",
]
