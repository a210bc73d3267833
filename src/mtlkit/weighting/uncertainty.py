"""Uncertainty weighting: Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018.

Each task i has a learnable homoscedastic uncertainty, stored as s_i = log sigma_i^2, and the objective is the sum
over tasks of the paper's two forms:

    regression (Gaussian likelihood):      1 / (2 sigma_i^2) L_i + log sigma_i  =  0.5 exp(-s_i) L_i + 0.5 s_i
    classification (scaled softmax):       1 / sigma_i^2 L_i + log sigma_i      =      exp(-s_i) L_i + 0.5 s_i

The model gets the weight 0.5 exp(-s_i) (regression) or exp(-s_i) (classification) on L_i; s is trained by the
Trainer's optimizer together with the model. For a fixed L_i both forms are minimised over s_i where the weight is
1 / (2 L_i): in the long run every task is weighted by the inverse of its loss.

Variant: much open-source code uses one simplified form for every task, exp(-s_i) L_i + s_i (weight 1 / L_i at
the optimum over s_i). mtlkit implements the paper's forms, chosen per task from ``Task.kind``.

A task whose loss is exactly 0 had no labelled row in the batch (``mtlkit.losses``): its whole term, regulariser
included, is left out of that step, so that s_i does not drift while the task is absent (with L_i = 0 the term
0.5 s_i alone has no minimum and would pull s_i toward -infinity).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting

Form = Literal["by_kind", "regression", "classification"]
FORMS: tuple[str, ...] = ("by_kind", "regression", "classification")

#: The factor on exp(-s_i) L_i for each form: 1 / (2 sigma^2) for regression, 1 / sigma^2 for classification.
_FACTOR = {"regression": 0.5, "classification": 1.0}
_KIND_FORM = {"binary": "classification", "multiclass": "classification", "regression": "regression"}


class Uncertainty(LossWeighting):
    """Kendall et al. (CVPR 2018): sum_i a_i exp(-s_i) L_i + 0.5 s_i, s_i = log sigma_i^2 learnable.

    a_i = 0.5 for regression tasks, 1 for classification tasks (binary, multiclass).

    Args:
        init_log_var: the initial s_i = log sigma_i^2 of every task (0: sigma = 1).
        form: ``by_kind`` (each task's form from its ``Task.kind``), or ``regression`` / ``classification`` to
            use one form for every task.
    """

    scale_invariant = False  # s adapts over steps toward weights 1 / (2 L_i); one step does not undo a scale
    order_invariant = True

    factors: Tensor

    def __init__(self, schema: Schema, init_log_var: float = 0.0, form: Form = "by_kind") -> None:
        super().__init__(schema)
        if isinstance(init_log_var, bool) or not isinstance(init_log_var, (int, float)):
            raise TypeError(f"init_log_var must be a number, got {init_log_var!r}")
        if not math.isfinite(init_log_var):
            raise ValueError(f"init_log_var must be finite, got {init_log_var}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.init_log_var = float(init_log_var)
        self.form = form
        forms = [_KIND_FORM[t.kind] if form == "by_kind" else form for t in schema.tasks]
        self.log_vars = nn.Parameter(torch.full((len(forms),), self.init_log_var))
        # derived from the schema and ``form``, not state: kept out of the state_dict
        self.register_buffer("factors", torch.tensor([_FACTOR[f] for f in forms]), persistent=False)

    def reset(self) -> None:
        with torch.no_grad():
            self.log_vars.fill_(self.init_log_var)

    def forward(self, losses: Tensor) -> Tensor:
        s = self.log_vars.to(losses.dtype)
        terms = self.factors.to(losses.dtype) * torch.exp(-s) * losses + 0.5 * s
        present = losses.detach() != 0  # exactly 0: no labelled row in the batch
        return torch.where(present, terms, torch.zeros_like(terms)).sum()

    def precisions(self) -> Tensor:
        """The weight each task's loss gets, a_i exp(-s_i) [T], detached."""
        return (self.factors * torch.exp(-self.log_vars)).detach()
