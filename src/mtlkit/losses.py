"""Per-task losses, label masks and sample weights.

Every loss is an ``nn.Module`` whose ``forward(logits, target)`` returns the **per-row** loss [B], unreduced.
Binary and regression logits are [B] with float targets [B]; multiclass logits are [B, K] with class indices
stored as floats [B]. Targets reaching a loss are never NaN: :func:`task_losses` replaces missing labels first.

:func:`task_losses` turns a batch into the vector [T] of task losses, in schema task order. For task j, rows whose
label is NaN are masked out, and the task's loss is the sample-weighted mean over its labelled rows,
``sum_i w_i l_i / sum_i w_i`` (``w_i = 1`` without sample weights). A task with no labelled row (or zero total
weight) in the batch contributes exactly 0, with finite (zero) gradients. The static ``Task.weight`` is *not*
applied here: the balancer applies it.

:class:`LossSet` holds the loss module of each task, built once from the Schema (``Task.loss``).

Registry: ``create_loss(name, kind=None, **params)`` and ``list_losses(kind=None)``; one name may serve several
task kinds (``focal`` is :class:`Focal` for binary tasks and :class:`MulticlassFocal` for multiclass ones).

Grouped losses (:class:`GroupedLoss`, e.g. :class:`PairwiseLogistic`) are not sums over rows: they compare rows of the same
group (query / user / request id) and take the batch's group ids. :func:`task_losses` calls their
:meth:`GroupedLoss.grouped_loss` with the groups instead of averaging per-row losses. They are not among the names a
``Task.loss`` may take (``mtlkit.schema.LOSSES``); a Family that trains with one passes it to
:class:`LossSet` through ``overrides``.
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Callable, Mapping
from functools import cache, partial, reduce
from typing import Any, ClassVar, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.schema import Schema, TaskKind

LossFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------- validation
def _number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def check_shapes(kind: str, logits: Tensor, target: Tensor, where: str) -> None:
    """Fail unless ``logits`` / ``target`` have the shapes a ``kind`` loss expects ([B] / [B], or [B, K] / [B]).

    A [B, 1] logit for a binary task is an error rather than a broadcast: ``(z - y) ** 2`` on [B, 1] and [B]
    would silently become [B, B].
    """
    if kind == "multiclass":
        if logits.dim() != 2 or target.shape != logits.shape[:1] or logits.shape[1] < 2:
            raise ValueError(
                f"{where}: a multiclass loss takes logits [B, K] with K >= 2 and targets [B], "
                f"got logits {_shape(logits)} and targets {_shape(target)}"
            )
    elif logits.dim() != 1 or target.shape != logits.shape:
        raise ValueError(
            f"{where}: a {kind} loss takes logits [B] and targets [B], "
            f"got logits {_shape(logits)} and targets {_shape(target)}"
        )


# ---------------------------------------------------------------------------------------------- losses
@cache
def _constructor_arguments(cls: type) -> tuple[str, ...]:
    """The names of ``cls.__init__``'s parameters after ``self``."""
    return tuple(inspect.signature(cls).parameters)


class Loss(nn.Module, abc.ABC):
    """A per-row loss for one task kind: ``forward(logits, target) -> [B]``.

    Subclasses set ``name`` (the registry name, as in ``Task.loss``) and ``kind`` (the task kind it serves),
    and store each constructor argument under its own name (``repr`` is built from them).
    """

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    #: ``per_row`` acts on each entry alone, so tasks sharing this loss (same class and hyperparameters) are
    #: computed together on [B, k] logits by :func:`task_losses`
    elementwise: ClassVar[bool] = False

    def __init__(self) -> None:  # losses without hyperparameters take none (not nn.Module's *args)
        super().__init__()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        check_shapes(self.kind, logits, target, type(self).__name__)
        return self.per_row(logits, target.to(logits.dtype) if self.kind != "multiclass" else target)

    @abc.abstractmethod
    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        """The unreduced loss, shapes already checked."""

    def hyperparameters(self) -> tuple[tuple[str, Any], ...]:
        """(name, value) of every constructor argument, in the constructor's order: what tells two losses of one
        class apart (:func:`task_losses` groups tasks by it at every step, so the names are looked up once per
        class, not by ``inspect`` each time: that cost ~20 us a task inside a training step)."""
        return tuple((p, getattr(self, p)) for p in _constructor_arguments(type(self)))

    def extra_repr(self) -> str:
        return ", ".join(f"{p}={v!r}" for p, v in self.hyperparameters())


class BCE(Loss):
    """Binary cross-entropy on logits: ``l = -[w y log sigmoid(z) + (1 - y) log sigmoid(-z)]`` (stable form).

    Args:
        pos_weight: w, the weight of a positive's term, > 0 (1: plain BCE). For a rare positive class (a
            conversion rate of 2%, say) a w near negatives / positives balances the two classes' share of the
            loss; predictions are then no longer calibrated probabilities (the loss is minimised by odds w
            times the true odds).
    """

    name = "bce"
    kind = "binary"
    elementwise = True

    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = _number("pos_weight", pos_weight)
        if not self.pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight!r}")

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.pos_weight == 1.0:
            return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        weight = torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none", pos_weight=weight)


class Focal(Loss):
    """Binary focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection") on logits.

    ``FL = -alpha_t (1 - p_t)^gamma log p_t`` with ``p = sigmoid(z)``, ``p_t = p`` and ``alpha_t = alpha`` for a
    positive, ``p_t = 1 - p`` and ``alpha_t = 1 - alpha`` for a negative. ``alpha=None`` weights both by 1;
    ``gamma=0, alpha=None`` is exactly :class:`BCE`. Computed in log space, ``(1 - p_t)^gamma =
    exp(gamma log sigmoid(-+z))``, so values and gradients stay finite for any finite logit and any gamma >= 0.

    Args:
        gamma: focusing parameter, >= 0 (the paper's best: 2).
        alpha: weight of the positive class in [0, 1], or None for no class weighting (the paper's best: 0.25).
    """

    name = "focal"
    kind = "binary"
    elementwise = True

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25) -> None:
        super().__init__()
        self.gamma = _number("gamma", gamma)
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        if alpha is not None:
            value = _number("alpha", alpha)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
            alpha = value
        self.alpha = alpha

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = F.logsigmoid(logits)  # log p
        log_q = F.logsigmoid(-logits)  # log (1 - p)
        pos = -torch.exp(self.gamma * log_q) * log_p
        neg = -torch.exp(self.gamma * log_p) * log_q
        if self.alpha is not None:
            pos = self.alpha * pos
            neg = (1.0 - self.alpha) * neg
        return target * pos + (1.0 - target) * neg


class MulticlassFocal(Loss):
    """Softmax focal loss (Lin et al. 2017) for a multiclass task: ``FL = -(1 - p_t)^gamma log p_t``.

    ``p_t = softmax(z)_y``. No class weighting (``alpha``): a scalar would only rescale the loss. ``gamma=0`` is
    exactly :class:`CE`. ``log(1 - p_t)`` is the log-sum-exp of the other classes minus that of all classes, so
    it stays finite and accurate even when ``p_t`` rounds to 1.

    Args:
        gamma: focusing parameter, >= 0.
    """

    name = "focal"
    kind = "multiclass"

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = _number("gamma", gamma)
        if self.gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        index = target.long().unsqueeze(1)
        lse_all = torch.logsumexp(logits, dim=1)
        log_pt = logits.gather(1, index).squeeze(1) - lse_all
        is_target = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, index, True)
        log_not_pt = torch.logsumexp(logits.masked_fill(is_target, -math.inf), dim=1) - lse_all
        return -torch.exp(self.gamma * log_not_pt) * log_pt


class CE(Loss):
    """Softmax cross-entropy: ``l = -log softmax(z)_y``, labels are class indices stored as floats."""

    name = "ce"
    kind = "multiclass"

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target.long(), reduction="none")


class MSE(Loss):
    """Squared error: ``l = (z - y)^2``."""

    name = "mse"
    kind = "regression"
    elementwise = True

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        return (logits - target).square()


class Huber(Loss):
    """Huber loss (Huber 1964): ``l = 0.5 r^2`` if ``|r| <= delta`` else ``delta (|r| - 0.5 delta)``, ``r = z - y``.

    Args:
        delta: where the loss turns from quadratic to linear, > 0.
    """

    name = "huber"
    kind = "regression"
    elementwise = True

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        self.delta = _number("delta", delta)
        if self.delta <= 0:
            raise ValueError(f"delta must be > 0, got {delta!r}")

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(logits, target, reduction="none", delta=self.delta)


class MAE(Loss):
    """Absolute error: ``l = |z - y|``."""

    name = "mae"
    kind = "regression"
    elementwise = True

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        return (logits - target).abs()


def pairwise_logistic(
    scores: Tensor,
    grades: Tensor,
    groups: Tensor | None = None,
    weights: Tensor | None = None,
    sigma: float = 1.0,
) -> Tensor:
    """RankNet's pairwise logistic loss, averaged over the pairs of a batch (a scalar).

    ``L = sum_{(i,j)} p_ij log(1 + exp(-sigma (s_i - s_j))) / sum_{(i,j)} p_ij`` over the ordered pairs with
    ``g_i == g_j`` (same group) and ``y_i > y_j`` (strictly higher grade; equal grades make no pair), with pair
    weight ``p_ij = w_i w_j`` (1 without sample weights: a row of weight 2 counts as two copies). Rows whose grade
    is NaN take part in no pair. Exactly 0, with zero finite gradients, when the batch holds no pair.
    ``groups=None`` treats the batch as one group.

    Vectorised: rows are stable-sorted by group and scattered into a padded [G, M] block (M = largest group in
    the batch), so the pair tensor is [G, M, M] rather than [B, B] (equal when the batch is one group).
    """
    if scores.dim() != 1 or grades.shape != scores.shape:
        raise ValueError(
            f"pairwise_logistic takes scores [B] and grades [B], got {_shape(scores)} and {_shape(grades)}"
        )
    n = scores.shape[0]
    for what, t in (("groups", groups), ("weights", weights)):
        if t is not None and t.shape != scores.shape:
            raise ValueError(f"pairwise_logistic: {what} must be [B] = [{n}], got {_shape(t)}")
    if n == 0:
        return scores.sum() * 0.0
    device = scores.device
    if groups is None:
        groups = torch.zeros(n, dtype=torch.int64, device=device)
    order = torch.argsort(groups, stable=True)
    sorted_groups = groups[order]
    # group index of each sorted row (0..G-1) and its slot inside the group: cumulative sums, no repeat_interleave
    which = torch.cat([sorted_groups.new_zeros(1), torch.cumsum(sorted_groups[1:] != sorted_groups[:-1], 0)])
    counts = torch.bincount(which)
    size = int(counts.max())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n, device=device) - starts[which]
    shape = (int(counts.numel()), size)
    s = scores.new_zeros(shape).index_put((which, slot), scores[order])
    y = torch.full(shape, math.nan, dtype=torch.float64, device=device)
    y = y.index_put((which, slot), grades[order].to(torch.float64))
    w = torch.zeros(shape, dtype=scores.dtype, device=device)
    w = w.index_put(
        (which, slot), torch.ones_like(scores) if weights is None else weights[order].to(scores.dtype)
    )
    better = y.unsqueeze(2) > y.unsqueeze(1)  # [G, M, M]: i (row) above j (column); NaN compares False
    pair = better.to(scores.dtype) * w.unsqueeze(2) * w.unsqueeze(1)
    loss = F.softplus(-sigma * (s.unsqueeze(2) - s.unsqueeze(1)))
    total = pair.sum()
    nonzero = total > 0
    mean = (pair * loss).sum() / torch.where(nonzero, total, torch.ones_like(total))
    return torch.where(nonzero, mean, torch.zeros_like(mean))


class GroupedLoss(Loss):
    """A loss over pairs of rows of the same group: :func:`task_losses` calls :meth:`grouped_loss` with the
    batch's groups instead of averaging per-row losses."""

    @abc.abstractmethod
    def grouped_loss(
        self, logits: Tensor, target: Tensor, weights: Tensor | None, groups: Tensor | None
    ) -> Tensor:
        """The task loss (a scalar); ``target`` may hold NaN (unlabelled rows take no part)."""


class PairwiseLogistic(GroupedLoss):
    """RankNet pairwise logistic loss (Burges et al. 2005, "Learning to Rank using Gradient Descent").

    For rows i, j of the same group with grade ``y_i > y_j``: ``l_ij = log(1 + exp(-sigma (s_i - s_j)))``, the
    logistic loss of "i ranks above j" with ``P(i > j) = sigmoid(sigma (s_i - s_j))``; the task loss is the
    weighted mean over the batch's pairs (see :func:`pairwise_logistic`). A grouped loss: the target holds
    grades (0, 1, 2, ...; only their order matters) and :meth:`grouped_loss` takes the batch's groups.

    Served for binary tasks so that the derived task keeps binary metrics (AUC of grade > 0.5, i.e. any
    action) for early stopping; its scores are ranking scores, not calibrated probabilities.

    Args:
        sigma: the slope of the logistic, > 0 (RankNet's sigma).
    """

    name = "pairwise_logistic"
    kind = "binary"

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        self.sigma = _number("sigma", sigma)
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")

    def per_row(self, logits: Tensor, target: Tensor) -> Tensor:
        """Row i's share when the batch is one group: ``sum_j [y_i > y_j] log(1 + exp(-sigma (s_i - s_j)))``."""
        better = (target.unsqueeze(1) > target.unsqueeze(0)).to(logits.dtype)
        return (better * F.softplus(-self.sigma * (logits.unsqueeze(1) - logits.unsqueeze(0)))).sum(1)

    def grouped_loss(
        self, logits: Tensor, target: Tensor, weights: Tensor | None, groups: Tensor | None
    ) -> Tensor:
        check_shapes(self.kind, logits, target, type(self).__name__)
        return pairwise_logistic(logits, target, groups, weights, self.sigma)


# ---------------------------------------------------------------------------------------------- registry
#: Every loss class a ``Task.loss`` may name, in the order names are listed (per kind, the first is the default).
#: The grouped :class:`PairwiseLogistic` is not here: ``mtlkit.schema.LOSSES`` does not list it, so it reaches a
#: task only through ``LossSet(overrides=...)`` (the ``pairwise_ltr`` family).
_ENTRIES: tuple[type[Loss], ...] = (BCE, Focal, MSE, Huber, MAE, CE, MulticlassFocal)


def _registry() -> dict[str, dict[str, type[Loss]]]:
    registry: dict[str, dict[str, type[Loss]]] = {}
    for cls in _ENTRIES:
        by_kind = registry.setdefault(cls.name, {})
        if cls.kind in by_kind:
            raise RuntimeError(f"loss {cls.name!r} is registered twice for {cls.kind} tasks")
        by_kind[cls.kind] = cls
    return registry


#: name -> task kind -> loss class: the one place losses are registered.
LOSS_CLASSES: dict[str, dict[str, type[Loss]]] = _registry()


def list_losses(kind: str | None = None) -> list[str]:
    """Names accepted by :func:`create_loss`; with ``kind``, those serving that task kind (default first)."""
    if kind is None:
        return list(LOSS_CLASSES)
    return [cls.name for cls in _ENTRIES if cls.kind == kind]


def loss_class(name: str, kind: str | None = None) -> type[Loss]:
    """The class registered as ``name`` for ``kind`` (``kind`` may be left out when ``name`` serves one kind)."""
    if name not in LOSS_CLASSES:
        raise MtlkitError(
            f"unknown loss {name!r}{did_you_mean(name, LOSS_CLASSES)}; available: {listing(LOSS_CLASSES)}"
        )
    by_kind = LOSS_CLASSES[name]
    if kind is None:
        if len(by_kind) > 1:
            options = " or ".join(f"kind={k!r}" for k in by_kind)
            raise MtlkitError(f"loss {name!r} serves several task kinds: pass {options}")
        return next(iter(by_kind.values()))
    kinds = get_args(TaskKind)
    if kind not in kinds:
        raise MtlkitError(
            f"unknown task kind {kind!r}{did_you_mean(str(kind), kinds)}; kinds are {listing(kinds)}"
        )
    if kind not in by_kind:
        raise MtlkitError(
            f"loss {name!r} does not apply to {kind} tasks (it serves {listing(by_kind)}); "
            f"{kind} tasks accept {listing(list_losses(kind))}"
        )
    return by_kind[kind]


def loss_parameters(name: str, kind: str | None = None) -> dict[str, inspect.Parameter]:
    """The hyperparameters of a loss (its constructor's parameters)."""
    params = dict(inspect.signature(loss_class(name, kind).__init__).parameters)
    params.pop("self", None)
    return params


def create_loss(name: str, kind: str | None = None, **params: Any) -> Loss:
    """Build the loss ``name`` for ``kind`` tasks with hyperparameters ``params``.

    Unknown names, kinds and parameters, and invalid values, are :class:`MtlkitError` naming what is accepted.
    """
    cls = loss_class(name, kind)
    accepted = loss_parameters(name, cls.kind)
    for key in params:
        if key not in accepted:
            takes = f"it accepts {listing(accepted)}" if accepted else "it takes no parameters"
            raise MtlkitError(
                f"loss {name!r} for {cls.kind} tasks has no parameter {key!r}{did_you_mean(key, accepted)}; "
                f"{takes}"
            )
    try:
        return cls(**params)
    except ValueError as exc:
        if isinstance(exc, MtlkitError):
            raise
        raise MtlkitError(f"loss {name!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------- task losses
def task_losses(
    schema: Schema,
    logits: Mapping[str, Tensor],
    labels: Tensor,
    weights: Tensor | None = None,
    losses: Mapping[str, LossFn] | None = None,
    groups: Tensor | None = None,
) -> Tensor:
    """The vector [T] of task losses, in schema task order.

    ``L_j = sum_i m_ij w_i l_ij / sum_i m_ij w_i`` where ``m_ij = 1`` when ``labels[i, j]`` is not NaN and
    ``l_ij`` is task j's per-row loss; ``L_j = 0`` (with zero, finite gradients) when the denominator is 0.

    Args:
        schema: gives the task order, kinds and default losses.
        logits: task -> [B] (binary, regression) or [B, K] (multiclass), as in ``Output.logits``.
        labels: [B, T] float, NaN = missing.
        weights: optional [B] sample weights (finite, >= 0).
        losses: task -> per-row loss; default: each task's ``Task.loss`` with default hyperparameters.
        groups: optional [B] group ids, passed to grouped losses (:class:`GroupedLoss`), whose task loss is
            their :meth:`GroupedLoss.grouped_loss` (e.g. the mean over pairs) instead of the weighted mean over rows.
    """
    n_tasks = len(schema.tasks)
    if labels.dim() != 2 or labels.shape[1] != n_tasks:
        raise ValueError(f"labels must be [B, {n_tasks}] (one column per task), got {_shape(labels)}")
    if weights is not None and weights.shape != labels.shape[:1]:
        raise ValueError(f"weights must be [B] = [{labels.shape[0]}], got {_shape(weights)}")
    if losses is None:
        losses = dict(LossSet(schema).losses.items())
    together = _shared_losses(schema, logits, labels, losses)
    if len(together) == 1 and together[0][0] == list(range(n_tasks)):  # one loss for every task: [T] at once
        return _masked_means(together[0][1], logits, labels, weights, schema, together[0][0])
    parts: dict[int, Tensor] = {}
    for columns, shared in together:
        values = _masked_means(shared, logits, labels, weights, schema, columns)
        for j, value in zip(columns, values, strict=True):
            parts[j] = value
    for j, task in enumerate(schema.tasks):
        if j in parts:
            continue
        if task.name not in logits:
            raise MtlkitError(f"no logits for task {task.name!r}; logits are given for {listing(logits)}")
        if task.name not in losses:
            raise MtlkitError(f"no loss for task {task.name!r}; losses are given for {listing(losses)}")
        z, fn = logits[task.name], losses[task.name]
        if isinstance(fn, Loss) and fn.kind != task.kind:
            raise MtlkitError(f"task {task.name!r} is {task.kind} but its loss {fn!r} is for {fn.kind} tasks")
        y = labels[:, j]
        where = f"task {task.name!r}"
        check_shapes(task.kind, z, y, where)
        if task.kind == "multiclass" and task.num_classes is not None and z.shape[1] != task.num_classes:
            raise ValueError(f"{where} has {task.num_classes} classes, got logits {_shape(z)}")
        if isinstance(fn, GroupedLoss):
            if groups is not None and groups.shape != labels.shape[:1]:
                raise ValueError(f"groups must be [B] = [{labels.shape[0]}], got {_shape(groups)}")
            parts[j] = fn.grouped_loss(z, y, weights, groups)
            continue
        parts[j] = _masked_mean(partial(fn, z), y, weights)
    ordered = [parts[j] for j in range(n_tasks)]
    dtype = reduce(torch.promote_types, (p.dtype for p in ordered))
    return torch.stack([p.to(dtype) for p in ordered])


def _shared_losses(
    schema: Schema, logits: Mapping[str, Tensor], labels: Tensor, losses: Mapping[str, LossFn]
) -> list[tuple[list[int], Loss]]:
    """Groups of two or more tasks whose losses are the same elementwise :class:`Loss` (class and
    hyperparameters) and whose logits are [B] tensors of one dtype and device: their masked means are computed
    together, on the logits stacked into [B, k] (a dozen operations for the group instead of a dozen per task)."""
    groups: dict[tuple[Any, ...], tuple[list[int], Loss]] = {}
    rows = labels.shape[0]
    for j, task in enumerate(schema.tasks):
        fn, z = losses.get(task.name), logits.get(task.name)
        if not isinstance(fn, Loss) or not fn.elementwise or fn.kind != task.kind or z is None:
            continue
        if z.dim() != 1 or z.shape[0] != rows:
            continue  # the per-task path reports the bad shape
        params: Any = fn.hyperparameters()
        try:
            hash(params)
        except TypeError:  # a user's loss holding a list, say: its text tells the values apart
            params = repr(params)
        key = (type(fn), params, z.dtype, z.device)
        groups.setdefault(key, ([], fn))[0].append(j)
    return [group for group in groups.values() if len(group[0]) > 1]


def _masked_means(
    fn: Loss,
    logits: Mapping[str, Tensor],
    labels: Tensor,
    weights: Tensor | None,
    schema: Schema,
    columns: list[int],
) -> Tensor:
    """The tasks' ``L_j`` (see :func:`task_losses`) for ``columns``, which share the elementwise loss ``fn``: [k]."""
    z = torch.stack([logits[schema.tasks[j].name] for j in columns], dim=1)  # [B, k]
    contiguous = columns == list(range(columns[0], columns[-1] + 1))
    y = labels[:, columns[0] : columns[-1] + 1] if contiguous else labels[:, columns]
    return _masked_mean(lambda target: fn.per_row(z, target.to(z.dtype)), y, weights)


def _masked_mean(per_row_of: Callable[[Tensor], Tensor], y: Tensor, weights: Tensor | None) -> Tensor:
    """``sum_i m_i w_i l_i / sum_i m_i w_i`` over the rows of labels ``y`` ([B]: a scalar; [B, k]: one per
    column), m_i = 1 where the label is not NaN, l = ``per_row_of(labels)``; 0 where no row is labelled.

    The loss only ever sees a sanitised label: NaN never enters the graph, so it cannot reach gradients. The mask
    is a multiplication, not torch.where: where's backward has no batching rule in the vmap behind
    is_grads_batched, which would turn the engine's batched per-task gradients into a loop. Finite logits give
    finite per-row losses on the sanitised labels, so the unlabelled rows contribute exactly 0.
    """
    labelled = y == y  # not NaN
    per_row = per_row_of(torch.nan_to_num(y, nan=0.0, posinf=math.inf, neginf=-math.inf))
    if weights is None:
        w = labelled.to(per_row.dtype)
    else:
        w = torch.where(labelled, weights if y.dim() == 1 else weights.unsqueeze(1), 0).to(per_row.dtype)
    # w is 0 on unlabelled rows and their per-row losses are finite, so w * l drops them, gradients included; a
    # denominator of 0 has a numerator of 0 and the clamp makes that 0 / tiny = 0 (positive totals below the
    # dtype's smallest normal number, from sample weights of ~1e-38, are the only ones it changes)
    total = w.sum(0)
    return (w * per_row).sum(0) / total.clamp(min=torch.finfo(total.dtype).tiny)


class LossSet(nn.Module):
    """The loss module of every task, built once from the Schema; ``forward`` is :func:`task_losses`.

    Args:
        schema: each task's loss is ``create_loss(task.loss, task.kind, **params.get(task.name, {}))``.
        params: task name -> hyperparameters of its loss, e.g. ``{"click": {"gamma": 1.0}}``.
        overrides: task name -> a loss module used instead of ``Task.loss`` (it must serve the task's kind),
            e.g. the grouped :class:`PairwiseLogistic` a Family trains its derived task with.
    """

    def __init__(
        self,
        schema: Schema,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        overrides: Mapping[str, Loss] | None = None,
    ) -> None:
        super().__init__()
        params = dict(params or {})
        overrides = dict(overrides or {})
        for what, given in (("loss parameters", params), ("a loss override", overrides)):
            for task_name in given:
                if task_name not in schema.task_names:
                    raise MtlkitError(
                        f"{what} given for {task_name!r}, which is not a task"
                        f"{did_you_mean(task_name, schema.task_names)}; tasks are {listing(schema.task_names)}"
                    )
        for task_name, loss in overrides.items():
            if task_name in params:
                raise MtlkitError(
                    f"loss parameters given for {task_name!r}, whose loss is set by its family ({loss!r}); "
                    "drop them (the family's parameters configure that loss)"
                )
            kind = schema.task(task_name).kind
            if loss.kind != kind:
                raise MtlkitError(
                    f"task {task_name!r} is {kind} but its loss override {loss!r} is for {loss.kind} tasks"
                )
        self.schema = schema
        built: dict[str, nn.Module] = {}
        for task in schema.tasks:
            if task.name in overrides:
                built[task.name] = overrides[task.name]
                continue
            name = task.loss or list_losses(task.kind)[0]
            try:
                built[task.name] = create_loss(name, task.kind, **params.get(task.name, {}))
            except MtlkitError as exc:
                raise MtlkitError(f"task {task.name!r}: {exc}") from None
        self.losses = nn.ModuleDict(built)

    def forward(
        self,
        logits: Mapping[str, Tensor],
        labels: Tensor,
        weights: Tensor | None = None,
        groups: Tensor | None = None,
    ) -> Tensor:
        """Task losses [T] in schema order (see :func:`task_losses`); ``groups`` reach grouped losses only."""
        return task_losses(self.schema, logits, labels, weights, dict(self.losses.items()), groups)


__all__ = [
    "BCE",
    "CE",
    "LOSS_CLASSES",
    "MAE",
    "MSE",
    "Focal",
    "Huber",
    "Loss",
    "LossSet",
    "MulticlassFocal",
    "PairwiseLogistic",
    "check_shapes",
    "create_loss",
    "list_losses",
    "loss_class",
    "loss_parameters",
    "pairwise_logistic",
    "task_losses",
]
