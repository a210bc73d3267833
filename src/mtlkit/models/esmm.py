"""ESMM: Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click Conversion
Rate", SIGIR 2018.

    pCTR = sigmoid(Tower_ctr(e(x))),  pCVR = sigmoid(Tower_cvr(e(x))),  pCTCVR = pCTR * pCVR   (e: shared embedding)

Both losses are taken over every impression (the entire space): the CTR task on the click label, the CVR task on
pCTCVR with the label "clicked and purchased", so the CVR tower is trained without the sample selection bias of
training on clicked impressions only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlkit.errors import SchemaError, listing
from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.models.layers import FeatureEmbedding, TaskTowers
from mtlkit.schema import Schema


def ctcvr_logit(ctr_logit: Tensor, cvr_logit: Tensor) -> Tensor:
    """logit(sigmoid(a) * sigmoid(b)), finite with finite gradients for any finite logits a, b.

    log p = logsigmoid(a) + logsigmoid(b); log(1 - p) uses 1 - p1 p2 = (1 - p1) + p1 (1 - p2), i.e.
    logaddexp(logsigmoid(-a), logsigmoid(a) + logsigmoid(-b)), which never cancels to log 0 (log1p(-exp(log p))
    does once p rounds to 1), so no clamp is needed.
    """
    log_p = F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)
    log_not_p = torch.logaddexp(F.logsigmoid(-ctr_logit), F.logsigmoid(ctr_logit) + F.logsigmoid(-cvr_logit))
    return log_p - log_not_p


class ESMM(MultiTaskModel):
    """A CTR tower and a CVR tower over one shared embedding; the CVR task is trained through pCTCVR.

    ``Output.logits[cvr_task]`` is the logit of pCTCVR = pCTR * pCVR (see :func:`ctcvr_logit`): give the CVR task
    the entire-space label "clicked AND purchased" (0 for impressions without a click), so its ordinary BCE loss is
    the paper's CTCVR loss. ``Output.extras["pcvr_" + cvr_task]`` holds pCVR and ``Output.extras["pctcvr_" +
    cvr_task]`` pCTCVR, for every impression. Other tasks of the schema get ordinary towers (a task that
    ``depends_on`` the CVR task is fed the pCVR logit). ``Output.shared`` is the shared input [B, D].

    Task-private: the CVR tower (and embeddings of features only it sees). The CTR tower is reached by both the
    CTR loss and the CTCVR loss, so its parameters count as shared.

    Args:
        ctr_task, cvr_task: the two binary tasks. By default the CVR task is the one whose ``Task.depends_on``
            names the other (the schema must have exactly one such pair among its tasks).
        tower_sizes: hidden widths of every tower (the paper: 200, 80).
        detach_dependency: see :class:`TaskTowers` (other tasks with ``depends_on``).
    """

    def __init__(
        self,
        schema: Schema,
        ctr_task: str | None = None,
        cvr_task: str | None = None,
        tower_sizes: Sequence[int] = (200, 80),
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        numeric_dim: int = 0,
        detach_dependency: bool = True,
    ) -> None:
        super().__init__(schema)
        self.ctr_task, self.cvr_task = _resolve_tasks(schema, ctr_task, cvr_task)
        self.embedding = FeatureEmbedding(schema, numeric_dim)
        # The CVR tower does not see pCTR: it is combined with it by the product, not fed with it.
        independent = dataclasses.replace(
            schema,
            tasks=tuple(
                dataclasses.replace(t, depends_on=None) if t.name == self.cvr_task else t
                for t in schema.tasks
            ),
        )
        in_dims = {t: self.embedding.shared_dim + self.embedding.tower_dims[t] for t in schema.task_names}
        self.towers = TaskTowers(
            independent, in_dims, tower_sizes, activation, dropout, norm, detach_dependency
        )

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, extra = self.embedding(categorical, numeric)
        logits = self.towers.common(x, extra)
        ctr, cvr = logits[self.ctr_task], logits[self.cvr_task]
        logits[self.cvr_task] = ctcvr_logit(ctr, cvr)
        pcvr = torch.sigmoid(cvr)
        extras = {
            "pcvr_" + self.cvr_task: pcvr,
            "pctcvr_" + self.cvr_task: torch.sigmoid(ctr) * pcvr,
        }
        return Output(logits=logits, shared=x, extras=extras)

    def task_modules(self, task: str) -> list[nn.Module]:
        if task == self.ctr_task:
            return []  # the CTCVR loss reaches the CTR tower too: shared between the two tasks
        return self.towers.task_modules(task) + self.embedding.task_modules(task)


def _resolve_tasks(schema: Schema, ctr_task: str | None, cvr_task: str | None) -> tuple[str, str]:
    """(ctr, cvr) from the arguments, else from the one ``depends_on`` pair; errors say what to set."""
    names = schema.task_names
    how = "set depends_on on the CVR task (Task('purchase', depends_on='click')) or pass ctr_task= and cvr_task="
    for what, name in (("ctr_task", ctr_task), ("cvr_task", cvr_task)):
        if name is not None and name not in names:
            raise SchemaError(f"ESMM {what}={name!r} is not a task; tasks are {listing(names)}")
    if cvr_task is None:
        if ctr_task is not None:
            children = [t.name for t in schema.tasks if t.depends_on == ctr_task]
            if len(children) != 1:
                raise SchemaError(
                    f"ESMM: {len(children)} tasks depend on ctr_task={ctr_task!r} ({listing(children)}); "
                    f"pass cvr_task= to name the CVR task"
                )
            cvr_task = children[0]
        else:
            pairs = [t.name for t in schema.tasks if t.depends_on is not None]
            if len(pairs) != 1:
                found = (
                    "no task depends on another"
                    if not pairs
                    else f"{len(pairs)} tasks ({listing(pairs)}) depend on another, so the pair is ambiguous"
                )
                raise SchemaError(
                    f"ESMM needs a CTR task and a CVR task but {found} (tasks are {listing(names)}): {how}"
                )
            cvr_task = pairs[0]
    if ctr_task is None:
        parent = schema.task(cvr_task).depends_on
        if parent is None:
            raise SchemaError(
                f"ESMM: cvr_task={cvr_task!r} has no depends_on, so the CTR task is unknown: {how}"
            )
        ctr_task = parent
    if ctr_task == cvr_task:
        raise SchemaError(
            f"ESMM: ctr_task and cvr_task are both {ctr_task!r}; they must be two different tasks"
        )
    if schema.task(ctr_task).depends_on == cvr_task:
        raise SchemaError(
            f"ESMM: ctr_task={ctr_task!r} depends on cvr_task={cvr_task!r}; the CVR step follows the click, "
            f"so swap them"
        )
    for what, name in (("ctr_task", ctr_task), ("cvr_task", cvr_task)):
        kind = schema.task(name).kind
        if kind != "binary":
            raise SchemaError(f"ESMM {what} {name!r} must be a binary task, got kind {kind!r}")
    return ctr_task, cvr_task
