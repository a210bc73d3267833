"""Streaming per-task metrics, masked like the losses.

Every metric takes a task's **logits** (``[B]`` for binary and regression tasks, ``[B, K]`` for multiclass; a
``[B, 1]`` column is read as ``[B]``), its label column ``[B]`` (float, NaN = missing), optional sample weights
``[B]`` and, for grouped metrics, group ids ``[B]`` (int64)::

    metric = create_metric("auc")
    for batch in table.batches(4096, shuffle=False):
        metric.update(model(batch).logits["click"], batch.labels[:, 0], batch.weights)
    metric.compute()  # -> float; identical to computing on the concatenated data

Rows whose label is NaN are left out of that task's metric only. ``update`` never synchronises with the device
(no ``.item()``, no boolean indexing): state stays where the tensors live and moves to the CPU in ``compute``.
An empty metric (nothing labelled seen) computes to NaN.

``TaskMetrics`` holds the metrics of every task of a :class:`~mtlkit.schema.Schema` and adds a ``"mean"`` entry
per metric name across the tasks that have it.

The registry (:data:`METRIC_CLASSES`) is built in one place from :data:`_ENTRIES`; each class declares its
``name``, ``higher_is_better`` and the task ``kinds`` it accepts.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from mtlkit.errors import MtlkitError, did_you_mean, listing

if TYPE_CHECKING:
    from mtlkit.data.table import Batch
    from mtlkit.schema import Schema

#: The key of the summary entry of :meth:`TaskMetrics.compute` (mean of each metric across tasks).
MEAN = "mean"

_NAN = float("nan")


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for running sums, except on devices without float64 (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


# ---------------------------------------------------------------------------------------------- base class
class Metric(abc.ABC):
    """A streaming metric: ``update`` with batches, ``compute`` the value over all of them, ``reset``.

    Class attributes (data, never inferred from the name): ``name`` (registry key), ``higher_is_better``,
    ``kinds`` (task kinds it accepts), ``needs_groups`` (takes group ids in ``update``).
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    kinds: ClassVar[tuple[str, ...]]
    needs_groups: ClassVar[bool] = False

    def __init__(self) -> None:
        self.reset()

    @abc.abstractmethod
    def update(
        self,
        prediction: Tensor,
        label: Tensor,
        weight: Tensor | None = None,
        group: Tensor | None = None,
    ) -> None:
        """Add one batch: logits ``[B]`` / ``[B, K]``, labels ``[B]`` (NaN = missing), weights ``[B]``."""

    @abc.abstractmethod
    def compute(self) -> float:
        """The metric over every batch seen since the last ``reset`` (NaN when undefined)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every batch."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ input checks
    def _check(
        self,
        prediction: Tensor,
        label: Tensor,
        weight: Tensor | None,
        group: Tensor | None,
    ) -> Tensor:
        """Validate shapes; return the logits as ``[B]`` or ``[B, K]`` (K >= 2), detached."""
        if label.dim() != 1:
            raise ValueError(f"{self.name}: label must have shape [B], got {list(label.shape)}")
        rows = label.shape[0]
        if prediction.dim() == 2 and prediction.shape[1] == 1:
            prediction = prediction[:, 0]
        multiclass = "multiclass" in self.kinds
        if prediction.dim() not in ((1, 2) if multiclass else (1,)):
            expected = "[B] or [B, K]" if multiclass else "[B]"
            raise ValueError(
                f"{self.name}: prediction must have shape {expected}, got {list(prediction.shape)}"
            )
        if prediction.shape[0] != rows:
            raise ValueError(
                f"{self.name}: prediction has {prediction.shape[0]} rows but label has {rows} "
                f"(shapes {list(prediction.shape)} and {list(label.shape)})"
            )
        for what, extra in (("weight", weight), ("group", group)):
            if extra is not None and tuple(extra.shape) != (rows,):
                raise ValueError(f"{self.name}: {what} must have shape [{rows}], got {list(extra.shape)}")
        return prediction.detach()


# ---------------------------------------------------------------------------------------------- means
class _WeightedMean(Metric):
    """A (sample-weighted) mean of a per-row value over the labelled rows: sum(w v) / sum(w)."""

    def reset(self) -> None:
        self._total: Tensor | None = None
        self._weight: Tensor | None = None

    @abc.abstractmethod
    def _values(self, prediction: Tensor, label: Tensor, labelled: Tensor) -> Tensor:
        """Per-row values in the accumulator dtype (anything on unlabelled rows: they are masked out)."""

    def _finish(self, mean: float) -> float:
        return mean

    def update(
        self,
        prediction: Tensor,
        label: Tensor,
        weight: Tensor | None = None,
        group: Tensor | None = None,
    ) -> None:
        prediction = self._check(prediction, label, weight, group)
        dtype = _accumulator_dtype(prediction.device)
        label = label.detach().to(device=prediction.device, dtype=dtype)
        labelled = ~torch.isnan(label)
        values = self._values(prediction.to(dtype), label, labelled)
        if weight is None:
            w = labelled.to(dtype)
        else:
            w = torch.where(labelled, weight.detach().to(device=prediction.device, dtype=dtype), 0.0)
        total = (torch.where(labelled, values, 0.0) * w).sum()
        if self._total is None or self._weight is None:
            self._total, self._weight = total, w.sum()
        else:
            self._total, self._weight = self._total + total, self._weight + w.sum()

    def compute(self) -> float:
        if self._total is None or self._weight is None:
            return _NAN
        weight = float(self._weight.double().cpu())
        if not weight > 0:
            return _NAN
        return self._finish(float(self._total.double().cpu()) / weight)


class LogLoss(_WeightedMean):
    """Log loss from logits: binary cross-entropy softplus(x) - y x on ``[B]`` logits (stable, soft labels
    allowed), categorical cross-entropy logsumexp(x) - x_y on ``[B, K]`` logits; weighted mean over rows."""

    name = "logloss"
    higher_is_better = False
    kinds = ("binary", "multiclass")

    def _values(self, prediction: Tensor, label: Tensor, labelled: Tensor) -> Tensor:
        if prediction.dim() == 1:
            # softplus(x) - y x = max(x, 0) - y x + log1p(exp(-|x|))
            return prediction.clamp(min=0) - label * prediction + torch.log1p(torch.exp(-prediction.abs()))
        target = torch.where(labelled, label, 0.0).long().unsqueeze(1)
        return torch.logsumexp(prediction, dim=1) - prediction.gather(1, target).squeeze(1)


class Accuracy(_WeightedMean):
    """Share of correct predictions: binary ``[B]`` logits predict 1 when x > 0 (probability > 0.5) and label
    1 means y > 0.5; multiclass ``[B, K]`` logits predict argmax_k x_k (the first on ties)."""

    name = "accuracy"
    higher_is_better = True
    kinds = ("binary", "multiclass")

    def _values(self, prediction: Tensor, label: Tensor, labelled: Tensor) -> Tensor:
        if prediction.dim() == 1:
            return ((prediction > 0) == (label > 0.5)).to(label.dtype)
        target = torch.where(labelled, label, 0.0).long()
        return (prediction.argmax(dim=1) == target).to(label.dtype)


class MSE(_WeightedMean):
    """Mean squared error: sum_i w_i (x_i - y_i)^2 / sum_i w_i."""

    name = "mse"
    higher_is_better = False
    kinds = ("regression",)

    def _values(self, prediction: Tensor, label: Tensor, labelled: Tensor) -> Tensor:
        return (prediction - label).square()


class MAE(_WeightedMean):
    """Mean absolute error: sum_i w_i |x_i - y_i| / sum_i w_i."""

    name = "mae"
    higher_is_better = False
    kinds = ("regression",)

    def _values(self, prediction: Tensor, label: Tensor, labelled: Tensor) -> Tensor:
        return (prediction - label).abs()


class RMSE(MSE):
    """Root of the mean squared error over all rows seen (not a mean of per-batch roots)."""

    name = "rmse"

    def _finish(self, mean: float) -> float:
        return math.sqrt(mean)


# ---------------------------------------------------------------------------------------------- ranking
class _Collecting(Metric):
    """Keeps every batch (cloned, on its device) and computes exactly on the concatenation."""

    def reset(self) -> None:
        self._predictions: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._weights: list[Tensor | None] = []
        self._groups: list[Tensor] = []

    def update(
        self,
        prediction: Tensor,
        label: Tensor,
        weight: Tensor | None = None,
        group: Tensor | None = None,
    ) -> None:
        prediction = self._check(prediction, label, weight, group)
        if self.needs_groups:
            if group is None:
                raise MtlkitError(
                    f"{self.name} needs group ids (query / user id) with every batch, got none: set "
                    f"Schema.group to the id column, or leave {self.name!r} out of the metrics"
                )
            self._groups.append(group.detach().clone())
        self._predictions.append(prediction.clone())
        self._labels.append(label.detach().clone())
        self._weights.append(None if weight is None else weight.detach().clone())

    def _gather(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None] | None:
        """(scores float64, positive bool, weights float64 or None, groups int64 or None) of the labelled rows
        (and, with groups, of the rows with a group id >= 0) as CPU numpy arrays; None when nothing was seen."""
        if not self._predictions:
            return None
        scores = torch.cat([p.cpu() for p in self._predictions]).double().numpy()
        labels = torch.cat([y.cpu() for y in self._labels]).double().numpy()
        keep = ~np.isnan(labels)
        weights = None
        if any(w is not None for w in self._weights):
            weights = torch.cat(
                [
                    torch.ones(len(y), dtype=torch.float64) if w is None else w.cpu().double()
                    for w, y in zip(self._weights, self._labels, strict=True)
                ]
            ).numpy()[keep]
        groups = None
        if self._groups:
            groups = torch.cat([g.cpu() for g in self._groups]).long().numpy()[keep]
        scores, positive = scores[keep], labels[keep] > 0.5
        if groups is not None and bool((groups < 0).any()):
            known = groups >= 0
            scores, positive, groups = scores[known], positive[known], groups[known]
            weights = None if weights is None else weights[known]
        return scores, positive, weights, groups


def _as_array(values: Tensor | np.ndarray, dtype: type) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    return array.astype(dtype, copy=False)


def _class_weights(positive: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row positive and negative weight (1 / 0 without sample weights)."""
    if weights is None:
        wpos = positive.astype(np.float64)
        return wpos, 1.0 - wpos
    return np.where(positive, weights, 0.0), np.where(positive, 0.0, weights)


def _starts(changed: np.ndarray) -> np.ndarray:
    """Positions where a run of equal sorted values begins, from the "differs from the previous" flags."""
    return np.flatnonzero(np.concatenate(([True], changed)))


def roc_auc(
    scores: Tensor | np.ndarray,
    positive: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
) -> float:
    """Exact (weighted) ROC AUC of 1-D arrays; NaN with one class only or a NaN score.

    Mann-Whitney with ties counting 1/2: sum over tie blocks k (ascending score) of
    P_k (N_<k + N_k / 2) / (P N), where P_k, N_k are the positive / negative weight in block k and N_<k the
    negative weight below it. Equals ``sklearn.metrics.roc_auc_score(positive, scores, sample_weight=weights)``
    (whose trapezoids over distinct thresholds are the same sum). One sort, then segment sums.
    """
    s = _as_array(scores, np.float64)
    if s.shape[0] == 0 or bool(np.isnan(s).any()):
        return _NAN
    w = None if weights is None else _as_array(weights, np.float64)
    order = np.argsort(s)
    s = s[order]
    wpos, wneg = _class_weights(_as_array(positive, np.bool_)[order], None if w is None else w[order])
    starts = _starts(s[1:] != s[:-1])
    block_pos = np.add.reduceat(wpos, starts)
    block_neg = np.add.reduceat(wneg, starts)
    total_pos, total_neg = float(block_pos.sum()), float(block_neg.sum())
    if not (total_pos > 0 and total_neg > 0):
        return _NAN
    below = np.cumsum(block_neg) - block_neg
    return float(np.sum(block_pos * (below + 0.5 * block_neg))) / (total_pos * total_neg)


def grouped_roc_auc(
    scores: Tensor | np.ndarray,
    positive: Tensor | np.ndarray,
    groups: Tensor | np.ndarray,
    weights: Tensor | np.ndarray | None = None,
) -> float:
    """Exact group AUC of 1-D arrays: sum_g n_g AUC_g / sum_g n_g over the groups holding both classes.

    n_g is the group's row count (its total sample weight when weighted) and AUC_g the (weighted)
    :func:`roc_auc` of its rows. One sort on the key (group code, score rank), then segment sums: no loop over
    groups. NaN when no group has both classes, or a score is NaN.
    """
    s = _as_array(scores, np.float64)
    n = s.shape[0]
    if n == 0 or bool(np.isnan(s).any()):
        return _NAN
    w = None if weights is None else _as_array(weights, np.float64)
    by_score = np.argsort(s)
    score_rank = np.empty(n, dtype=np.int64)
    score_rank[by_score] = np.cumsum(np.concatenate(([False], s[by_score][1:] != s[by_score][:-1])))
    group_code = _as_array(groups, np.int64)
    if n and (int(group_code.min()) < 0 or int(group_code.max()) >= 2 * n):
        # sparse or negative ids: recode densely (Table codes are already 0..G-1 and skip this sort)
        group_code = np.unique(group_code, return_inverse=True)[1].reshape(-1).astype(np.int64, copy=False)
    key = group_code * (int(score_rank.max()) + 1) + score_rank  # < n^2: no overflow below 3e9 rows
    order = np.argsort(key)
    key = key[order]
    wpos, wneg = _class_weights(_as_array(positive, np.bool_)[order], None if w is None else w[order])
    starts = _starts(key[1:] != key[:-1])  # tie blocks: equal (group, score)
    block_pos = np.add.reduceat(wpos, starts)
    block_neg = np.add.reduceat(wneg, starts)
    block_code = group_code[order[starts]]  # ascending
    group_changes = block_code[1:] != block_code[:-1]
    first_block = _starts(group_changes)
    block_group = np.cumsum(np.concatenate(([0], group_changes)))  # 0..G-1 over the groups present
    below_all = np.cumsum(block_neg) - block_neg
    below = below_all - below_all[first_block][block_group]  # negatives below the block, in its group
    group_pos = np.add.reduceat(block_pos, first_block)
    group_neg = np.add.reduceat(block_neg, first_block)
    numerator = np.add.reduceat(block_pos * (below + 0.5 * block_neg), first_block)
    both = (group_pos > 0) & (group_neg > 0)
    if not bool(both.any()):
        return _NAN
    auc = numerator[both] / (group_pos[both] * group_neg[both])
    size = group_pos[both] + group_neg[both]
    return float(np.sum(size * auc) / np.sum(size))


class GroupedNDCG:
    """NDCG@k per group (query / user / request), averaged over the groups with a positive ideal DCG
    (Jarvelin & Kekalainen 2002): DCG@k = sum_{r<k} gain_r / log2(r + 2) over the rows of a group ranked by
    score (descending), NDCG@k = DCG@k / IDCG@k. Gains are linear (the graded label itself, as
    ``sklearn.metrics.ndcg_score``), not 2^gain - 1.

    Ties in the score are averaged like sklearn (``ignore_ties=False``): a block of tied rows contributes the
    mean gain of the block times the sum of the discounts of the positions it spans. Groups whose gains are all
    zero are left out of the mean (sklearn counts them as 0). Rows with a negative group id (a missing id) are
    left out.

    The gains and groups are fixed at construction (group layout and ideal DCG computed once), so scoring many
    candidate rankings of the same rows is cheap and has no loop over groups: when the groups are of similar
    size (padding at most ``PAD_FACTOR`` times the rows) the scores are scattered into a padded
    ``[groups, largest group]`` matrix and sorted row-wise; otherwise two stable global sorts (by score, then
    by group) order the rows.

    Args:
        gains: ``[N]`` graded relevance, finite and >= 0.
        groups: ``[N]`` integer group ids.
        k: cut-off (``None`` = every row of a group).
    """

    #: The padded layout is used while groups x largest group <= PAD_FACTOR x rows.
    PAD_FACTOR: ClassVar[int] = 4

    def __init__(self, gains: Tensor, groups: Tensor, k: int | None = None) -> None:
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be an integer >= 1 or None, got {k!r}")
        if gains.dim() != 1 or tuple(groups.shape) != tuple(gains.shape):
            raise ValueError(
                f"gains and groups must both have shape [N], got {list(gains.shape)} and {list(groups.shape)}"
            )
        if groups.is_floating_point():
            raise ValueError(f"groups must hold integer ids, got dtype {groups.dtype}")
        gains = gains.detach().to(torch.float64)
        if not bool(torch.isfinite(gains).all()) or bool((gains < 0).any()):
            raise ValueError("gains must be finite and >= 0")
        self.k = k
        self.rows = int(gains.shape[0])
        keep = groups >= 0
        self._keep: Tensor | None = None if bool(keep.all()) else keep
        if self._keep is not None:
            groups, gains = groups[keep], gains[keep]
        device = gains.device
        n = int(gains.shape[0])
        _, code, counts = torch.unique(groups, return_inverse=True, return_counts=True)
        self._groups = code.reshape(-1)
        self._gains = gains
        g = int(counts.shape[0])
        width = int(counts.max()) if g else 0
        self._padded = g * width <= self.PAD_FACTOR * n + 1024
        if self._padded:
            order = torch.sort(self._groups, stable=True).indices
            starts = torch.cumsum(counts, 0) - counts
            position = torch.empty(n, dtype=torch.int64, device=device)
            position[order] = torch.arange(n, device=device) - starts[self._groups[order]]
            self._shape = (g, width)
            self._flat = self._groups * width + position
            self._gain_matrix = torch.zeros(g * width, dtype=torch.float64, device=device)
            self._gain_matrix[self._flat] = gains
            self._gain_matrix = self._gain_matrix.view(g, width)
            self._discount = self._discounts(torch.arange(width, device=device))
            ideal = torch.sort(self._gain_matrix, dim=1, descending=True).values
            self._ideal = (ideal * self._discount).sum(1)
        else:
            self._ideal = self._global_dcg(gains)
        self._valid = self._ideal > 0
        counted = int(self._valid.sum())
        # mean over the counted groups of DCG / IDCG as one dot product with these weights
        self._mean_weights = torch.where(self._valid, 1.0 / self._ideal.clamp_min(1e-300), 0.0) / max(
            counted, 1
        )

    def __repr__(self) -> str:
        return f"GroupedNDCG(rows={self.rows}, groups={self._ideal.shape[0]}, k={self.k})"

    @property
    def groups_counted(self) -> int:
        """How many groups enter the mean (those with a positive ideal DCG)."""
        return int(self._valid.sum())

    def per_group(self, scores: Tensor) -> Tensor:
        """NDCG@k of every group present (ascending group id), NaN where the ideal DCG is 0."""
        dcg = self._group_dcg(scores)
        return torch.where(self._valid, dcg / self._ideal.clamp_min(1e-300), torch.nan)

    def _group_dcg(self, scores: Tensor) -> Tensor:
        if tuple(scores.shape) != (self.rows,):
            raise ValueError(f"scores must have shape [{self.rows}], got {list(scores.shape)}")
        scores = scores.detach().to(torch.float64)
        if self._keep is not None:
            scores = scores[self._keep]
        return self._padded_dcg(scores) if self._padded else self._global_dcg(scores)

    def __call__(self, scores: Tensor) -> float:
        """The mean NDCG@k over the groups with a positive ideal DCG (NaN when there is none, or a NaN score)."""
        if not bool(self._valid.any()):
            return _NAN
        return float(self._group_dcg(scores) @ self._mean_weights)

    def _discounts(self, rank: Tensor) -> Tensor:
        discount = 1.0 / torch.log2(rank.to(torch.float64) + 2.0)
        return discount if self.k is None else torch.where(rank < self.k, discount, 0.0)

    def _padded_dcg(self, scores: Tensor) -> Tensor:
        g, width = self._shape
        matrix = torch.full((g * width,), -torch.inf, dtype=torch.float64, device=scores.device)
        matrix[self._flat] = scores
        matrix = matrix.view(g, width)
        top = width if self.k is None else min(self.k + 1, width)
        if top < width:  # the first k + 1 places decide unless a tie block reaches into them
            ranked, perm = torch.topk(matrix, top, dim=1)
            tied = (ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] > -torch.inf)
            if not bool(tied.any()):
                return self._gain_matrix.gather(1, perm) @ self._discount[:top]
        ranked, perm = torch.sort(matrix, dim=1, descending=True)
        gain = self._gain_matrix.gather(1, perm)
        tied = (ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] > -torch.inf)  # padding has no gain
        if bool(tied.any()):  # tie blocks: each row gets the mean gain of its block
            start = torch.ones_like(ranked, dtype=torch.bool)
            start[:, 1:] = ~tied
            block = (torch.cumsum(start.view(-1), 0) - 1).view(g, width)
            blocks = int(block[-1, -1]) + 1
            zeros = torch.zeros(blocks, dtype=torch.float64, device=scores.device)
            total = zeros.index_add(0, block.view(-1), gain.view(-1))
            count = zeros.index_add(0, block.view(-1), torch.ones_like(gain).view(-1))
            gain = (total / count)[block]
        return gain @ self._discount

    def _global_dcg(self, scores: Tensor) -> Tensor:
        n = scores.shape[0]
        device = scores.device
        by_score = torch.sort(scores, descending=True, stable=True).indices
        by_group = torch.sort(self._groups[by_score], stable=True).indices
        order = by_score[by_group]  # group ascending, score descending
        g = self._groups[order]
        s = scores[order]
        gain = self._gains[order]
        positions = torch.arange(n, device=device)
        group_start = torch.ones(n, dtype=torch.bool, device=device)
        group_start[1:] = g[1:] != g[:-1]
        first = torch.cummax(torch.where(group_start, positions, 0), dim=0).values
        discount = self._discounts(positions - first)
        block_start = group_start.clone()
        block_start[1:] |= s[1:] != s[:-1]
        block = torch.cumsum(block_start, 0) - 1
        blocks = int(block[-1]) + 1 if n else 0
        zeros = torch.zeros(blocks, dtype=torch.float64, device=device)
        block_gain = zeros.index_add(0, block, gain)
        block_count = zeros.index_add(0, block, torch.ones_like(gain))
        block_discount = zeros.index_add(0, block, discount)
        group_of_block = torch.cumsum(group_start, 0)[block_start] - 1
        groups = int(group_of_block[-1]) + 1 if n else 0
        return torch.zeros(groups, dtype=torch.float64, device=device).index_add(
            0, group_of_block, block_gain / block_count * block_discount
        )


def grouped_ndcg(scores: Tensor, gains: Tensor, groups: Tensor, k: int | None = None) -> float:
    """Mean NDCG@k over the groups with a positive ideal DCG; see :class:`GroupedNDCG`."""
    return GroupedNDCG(gains, groups, k)(scores)


class AUC(_Collecting):
    """Exact ROC AUC (Hanley & McNeil 1982, the Mann-Whitney U statistic): the weighted share of
    (positive, negative) pairs ranked correctly, ties counting 1/2; see :func:`roc_auc`.

    Ranks the logits directly (the sigmoid is monotone, so the value is the same, without the artificial ties of
    saturated probabilities). Keeps every batch (unlabelled rows are dropped in ``compute``), so the result equals sklearn's ``roc_auc_score`` on the
    concatenated data (with ``sample_weight`` when weights are given; batches without weights count weight 1).
    Returns NaN, never raises, when only one class is present (or a prediction is NaN).
    """

    name = "auc"
    higher_is_better = True
    kinds = ("binary",)

    def compute(self) -> float:
        data = self._gather()
        if data is None:
            return _NAN
        scores, positive, weights, _ = data
        return roc_auc(scores, positive, weights)


class GAUC(_Collecting):
    """Group AUC (Zhou et al. 2018, DIN): per-group AUC averaged with group sizes as weights,
    sum_g n_g AUC_g / sum_g n_g, over the groups (users / queries) that hold both classes; see
    :func:`grouped_roc_auc`.

    Needs group ids in every ``update``. Rows with a negative group id (the Table's code for a missing id) are
    left out. With sample weights, each group's AUC is weighted and n_g is its total weight. NaN when no group
    has both classes.
    """

    name = "gauc"
    higher_is_better = True
    kinds = ("binary",)
    needs_groups = True

    def compute(self) -> float:
        data = self._gather()
        if data is None:
            return _NAN
        scores, positive, weights, groups = data
        if groups is None:
            return _NAN
        return grouped_roc_auc(scores, positive, groups, weights)


# ---------------------------------------------------------------------------------------------- registry
#: The one place metrics are registered, in the order ``list_metrics`` reports them.
_ENTRIES: tuple[type[Metric], ...] = (AUC, GAUC, LogLoss, Accuracy, MSE, MAE, RMSE)


def _registry(entries: Sequence[type[Metric]] = _ENTRIES) -> dict[str, type[Metric]]:
    registry: dict[str, type[Metric]] = {}
    for cls in entries:
        if cls.name in registry:
            raise RuntimeError(
                f"metric {cls.name!r} is registered twice ({registry[cls.name].__name__}, {cls.__name__})"
            )
        registry[cls.name] = cls
    return registry


#: name -> metric class.
METRIC_CLASSES: dict[str, type[Metric]] = _registry()


def list_metrics(kind: str | None = None) -> list[str]:
    """Names accepted by :func:`create_metric`; with ``kind``, those a task of that kind accepts."""
    if kind is None:
        return list(METRIC_CLASSES)
    kinds = sorted({k for cls in METRIC_CLASSES.values() for k in cls.kinds})
    if kind not in kinds:
        raise MtlkitError(
            f"unknown task kind {kind!r}{did_you_mean(kind, kinds)}; kinds are {listing(kinds)}"
        )
    return [name for name, cls in METRIC_CLASSES.items() if kind in cls.kinds]


def metric_class(name: str) -> type[Metric]:
    """The class registered as ``name`` (its ``higher_is_better``, ``kinds``, ...)."""
    if name not in METRIC_CLASSES:
        raise MtlkitError(
            f"unknown metric {name!r}{did_you_mean(name, METRIC_CLASSES)}; "
            f"available: {listing(METRIC_CLASSES)}"
        )
    return METRIC_CLASSES[name]


def metric_higher_is_better(name: str) -> bool:
    """Whether a larger value of the metric ``name`` is better (AUC: True, log loss: False)."""
    return metric_class(name).higher_is_better


def create_metric(name: str) -> Metric:
    """A fresh instance of the metric ``name``."""
    return metric_class(name)()


# ---------------------------------------------------------------------------------------------- per task
class TaskMetrics:
    """The metrics of every task of a Schema, updated from a model's logits and the label matrix.

    Args:
        schema: the problem; task ``j`` reads column ``j`` of the label matrix.
        metrics: which metrics each task gets. ``None``: every metric valid for the task's kind, its own
            ``Task.metric`` first. A list of names: each task gets those valid for its kind (a name no task
            accepts is an error). A mapping task -> names: those tasks get exactly these (each must suit the
            task's kind); the tasks not in it get the default.
        has_groups: whether the data carries group ids (default: ``schema.group is not None``; pass
            ``table.groups is not None``). Without groups,
            ``gauc`` is not listed by default; requesting it (explicitly, or as a task's ``metric``) is an error.

    ``compute()`` returns ``{task: {metric: value}}`` plus ``{"mean": {metric: mean over the tasks that have it}}``
    (a plain mean: a NaN in one task makes that mean NaN). A task cannot be called ``"mean"``.
    """

    def __init__(
        self,
        schema: Schema,
        metrics: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        *,
        has_groups: bool | None = None,
    ) -> None:
        if MEAN in schema.task_names:
            raise MtlkitError(
                f"a task is named {MEAN!r}, the key TaskMetrics uses for the mean across tasks; rename the "
                f"task (e.g. {MEAN + '_task'!r}) and keep the column through Task.label"
            )
        self.schema = schema
        self.has_groups = schema.group is not None if has_groups is None else bool(has_groups)
        self.names: dict[str, tuple[str, ...]] = self._resolve(metrics)
        self._metrics: dict[str, dict[str, Metric]] = {
            task: {name: create_metric(name) for name in names} for task, names in self.names.items()
        }
        self._columns = {t.name: j for j, t in enumerate(schema.tasks)}

    def _default(self, task: str) -> tuple[str, ...]:
        t = self.schema.task(task)
        if t.metric is not None and metric_class(t.metric).needs_groups and not self.has_groups:
            raise MtlkitError(
                f"task {task!r} monitors {t.metric!r}, which needs group ids, but the data has none: set "
                f"Schema.group to the query / user id column, or choose another Task.metric"
            )
        names = [n for n in list_metrics(t.kind) if self.has_groups or not METRIC_CLASSES[n].needs_groups]
        if t.metric in names:
            names.remove(t.metric)
            names.insert(0, t.metric)
        return tuple(names)

    def _checked(self, task: str, names: Sequence[str]) -> tuple[str, ...]:
        if isinstance(names, str):
            raise MtlkitError(f"metrics for task {task!r} must be a list of names, got the string {names!r}")
        kind = self.schema.task(task).kind
        for name in names:
            cls = metric_class(name)
            if kind not in cls.kinds:
                raise MtlkitError(
                    f"metric {name!r} does not suit task {task!r} of kind {kind!r}; "
                    f"it accepts {listing(list_metrics(kind))}"
                )
            self._check_groups(name, task)
        return tuple(dict.fromkeys(names))

    def _check_groups(self, name: str, task: str) -> None:
        if METRIC_CLASSES[name].needs_groups and not self.has_groups:
            raise MtlkitError(
                f"metric {name!r} (task {task!r}) needs group ids, but the data has none: set Schema.group "
                f"to the query / user id column, or leave {name!r} out"
            )

    def _resolve(
        self, metrics: Sequence[str] | Mapping[str, Sequence[str]] | None
    ) -> dict[str, tuple[str, ...]]:
        tasks = self.schema.task_names
        if metrics is None:
            return {t: self._default(t) for t in tasks}
        if isinstance(metrics, Mapping):
            for task in metrics:
                self.schema.task(task)  # unknown task: SchemaError with did-you-mean
            return {t: self._checked(t, metrics[t]) if t in metrics else self._default(t) for t in tasks}
        if isinstance(metrics, str):
            raise MtlkitError(f"metrics must be a list of names, got the string {metrics!r}")
        chosen: dict[str, list[str]] = {t: [] for t in tasks}
        for name in dict.fromkeys(metrics):
            cls = metric_class(name)
            fits = [t.name for t in self.schema.tasks if t.kind in cls.kinds]
            if not fits:
                kinds = sorted({t.kind for t in self.schema.tasks})
                raise MtlkitError(
                    f"metric {name!r} suits tasks of kind {listing(cls.kinds)}, but the tasks are "
                    f"{listing(kinds)}; choose among {listing(n for k in kinds for n in list_metrics(k))}"
                )
            for task in fits:
                self._check_groups(name, task)
                chosen[task].append(name)
        return {t: tuple(names) for t, names in chosen.items()}

    def __repr__(self) -> str:
        return f"TaskMetrics({dict(self.names)!r})"

    def update(
        self,
        logits: Mapping[str, Tensor],
        labels: Tensor,
        weights: Tensor | None = None,
        groups: Tensor | None = None,
    ) -> None:
        """Add one batch: ``logits`` task -> tensor (``Output.logits``), ``labels`` ``[B, T]`` (NaN = missing),
        optional ``weights`` ``[B]`` and ``groups`` ``[B]``."""
        tasks = len(self.schema.tasks)
        if labels.dim() != 2 or labels.shape[1] != tasks:
            raise ValueError(f"labels must have shape [B, {tasks}], got {list(labels.shape)}")
        for task, metrics in self._metrics.items():
            if not metrics:
                continue
            if task not in logits:
                raise ValueError(f"logits has no entry for task {task!r}; it has {listing(logits)}")
            label = labels[:, self._columns[task]]
            for metric in metrics.values():
                metric.update(logits[task], label, weights, groups if metric.needs_groups else None)

    def update_batch(self, logits: Mapping[str, Tensor], batch: Batch) -> None:
        """``update`` with a Batch's labels, weights and groups."""
        self.update(logits, batch.labels, batch.weights, batch.groups)

    def compute(self) -> dict[str, dict[str, float]]:
        """``{task: {metric: value}}`` in schema order, then ``{"mean": {metric: mean across tasks}}``."""
        result: dict[str, dict[str, float]] = {
            task: {name: metric.compute() for name, metric in metrics.items()}
            for task, metrics in self._metrics.items()
        }
        collected: dict[str, list[float]] = {}
        for values in result.values():
            for name, value in values.items():
                collected.setdefault(name, []).append(value)
        result[MEAN] = {name: sum(values) / len(values) for name, values in collected.items()}
        return result

    def reset(self) -> None:
        """Forget every batch of every metric."""
        for metrics in self._metrics.values():
            for metric in metrics.values():
                metric.reset()


__all__ = [
    "AUC",
    "GAUC",
    "MAE",
    "MEAN",
    "METRIC_CLASSES",
    "MSE",
    "RMSE",
    "Accuracy",
    "GroupedNDCG",
    "LogLoss",
    "Metric",
    "TaskMetrics",
    "create_metric",
    "grouped_ndcg",
    "grouped_roc_auc",
    "list_metrics",
    "metric_class",
    "metric_higher_is_better",
    "roc_auc",
]
