"""GradNorm: Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing
in Deep Multitask Networks", ICML 2018.

Learnable task weights w_i (initially 1) are tuned so that the tasks' gradient norms follow their training rates:

    G_i = ||grad (w_i L_i)|| = w_i ||grad L_i||,   Gbar = mean_i G_i,
    Ltilde_i = L_i(t) / L_i(0),   r_i = Ltilde_i / mean_j Ltilde_j        (inverse training rate),
    L_grad = sum_i | G_i - stop_grad(Gbar r_i^alpha) |.

The model is trained on sum_i w_i L_i with w held constant; w is trained on L_grad only. After each update the
weights are renormalised to sum to T.

Representation variant: the paper takes the gradients with respect to W, the weights of the last shared layer.
mtlkit takes them with respect to the shared representation ``Output.shared`` (||d L_i / d shared||), which the
backward engine computes for every model in one batched pass over the task-specific part of the graph, without
knowing which parameters form the "last shared layer" (there is none for mixture-of-experts models, whose
experts all end the shared part). The norms are then measured on the current batch's representation rather than
on a weight matrix; the balancing rule is the paper's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting

#: Weights are floored at this value before renormalising, so that no task's loss ever gets a weight <= 0.
MIN_WEIGHT = 1e-4


class GradNorm(LossWeighting):
    """GradNorm (Chen et al., ICML 2018): sum_i w_i L_i, with w trained on sum_i |w_i ||g_i|| - Gbar r_i^alpha|.

    ``forward(losses)`` returns ``sum_i stop_grad(w_i) L_i + L_grad(w)``: one backward gives the model the
    gradient of the weighted sum (w constant) and w the gradient of L_grad (which depends on w only: the
    observed norms and the losses inside it are detached). The norms ||g_i|| are the per-task gradient norms at
    ``Output.shared`` that the engine passes to :meth:`observe_grad_norms` before each ``forward``; without
    them (a ``forward`` outside the engine) the L_grad term is left out.

    Renormalisation: w is a parameter stepped by the Trainer's optimizer, which this module does not own. The
    paper renormalises after each step; here ``forward`` does it first, under ``no_grad``, before w is read,
    which is the same sequence (step, renormalise, use) without hooking the optimizer or reparametrising w
    (a softmax would change the gradient the paper prescribes). Between a step and the next ``forward`` the
    stored parameter is unnormalised; :meth:`weights` gives the normalised values, and a checkpoint resumes
    exactly because the next ``forward`` renormalises it the same way.

    Initial losses L_i(0) are the losses of the first step (a buffer), per task: a task whose first losses are
    0 or not finite (all its labels masked out of the batch) is measured at its first step with a positive
    loss, and counts Ltilde_i = 1 until then.

    A weight cannot drop below ``MIN_WEIGHT`` (before renormalising): the paper does not bound w, but a step
    can push a small weight below 0, which would make the model maximise that task's loss.

    With Adam, weights that must move by orders of magnitude (losses in very different units) are a poor fit:
    the model's parameters keep Adam's step statistics from the early weights and all but stop learning the
    task whose weight collapsed (benchmarks/loss_scales.py, docs/benchmarks.md); bring the losses to comparable
    scales first (``initial`` weighting, label scaling) when that is the problem.

    Args:
        alpha: the strength of the pull toward equal training rates (>= 0); 0 asks for equal gradient norms.
            The paper tunes it per problem; 1.5 is the usual default.
    """

    needs = frozenset({"losses", "shared_grad_norms"})
    scale_invariant = False  # the weights adapt over steps; at any one step they do not undo a loss's scale
    order_invariant = True

    initial_losses: Tensor

    def __init__(self, schema: Schema, alpha: float = 1.5) -> None:
        super().__init__(schema)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a number, got {alpha!r}")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        self.alpha = float(alpha)
        n = len(schema.tasks)
        self.task_weights = nn.Parameter(torch.ones(n))
        self.register_buffer("initial_losses", torch.full((n,), float("nan")))
        self._norms: Tensor | None = None

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        with torch.no_grad():
            self.task_weights.fill_(1.0)
            self.initial_losses.fill_(float("nan"))
        self._norms = None

    def observe_grad_norms(self, norms: Tensor) -> None:
        if norms.shape != self.task_weights.shape:
            raise ValueError(
                f"GradNorm: expected one gradient norm per task ({len(self.task_names)}), "
                f"got shape {list(norms.shape)}"
            )
        self._norms = norms.detach()

    def weights(self) -> Tensor:
        """The task weights as the next step uses them (floored and renormalised to sum to T), detached."""
        w = self.task_weights.detach().clamp(min=MIN_WEIGHT)
        return w * (len(w) / w.sum())

    def effective_weights(self, losses: Tensor) -> Tensor:
        """d objective / d L_i = the normalised weights (no side effect: nothing is measured or renormalised)."""
        return self.weights().to(device=losses.device, dtype=losses.dtype)

    # ------------------------------------------------------------------------------------------ objective
    def forward(self, losses: Tensor) -> Tensor:
        with torch.no_grad():
            self.task_weights.copy_(self.weights())
        observed = losses.detach()
        self._measure_initial(observed)
        w = self.task_weights.to(losses.dtype)
        objective = (w.detach() * losses).sum()
        norms, self._norms = self._norms, None  # the norms belong to this step only
        if norms is not None and bool(torch.isfinite(norms).all()) and bool(torch.isfinite(observed).all()):
            objective = objective + self.grad_loss(observed, norms.to(losses.dtype))
        return objective

    def grad_loss(self, losses: Tensor, norms: Tensor) -> Tensor:
        """L_grad = sum_i |w_i n_i - stop_grad(mean_j(w_j n_j) r_i^alpha)|, differentiable in w only.

        Args:
            losses: the current task losses [T] (detached).
            norms: the per-task gradient norms n_i = ||grad L_i|| [T] (detached).
        """
        g = self.task_weights.to(norms.dtype) * norms.detach()
        with torch.no_grad():
            target = g.mean() * self.inverse_training_rates(losses.detach()).pow(self.alpha)
        return (g - target).abs().sum()

    def inverse_training_rates(self, losses: Tensor) -> Tensor:
        """r_i = Ltilde_i / mean_j Ltilde_j with Ltilde_i = L_i / L_i(0) (1 for tasks not measured yet)."""
        initial = self.initial_losses.to(losses.dtype)
        measured = torch.isfinite(initial) & (initial > 0)
        ratio = torch.where(measured, losses / torch.where(measured, initial, torch.ones_like(initial)), 1.0)
        mean = ratio.mean()
        if not bool(torch.isfinite(mean)) or bool(mean <= 0):
            return torch.ones_like(ratio)
        return ratio / mean

    def _measure_initial(self, losses: Tensor) -> None:
        with torch.no_grad():
            unset = ~(torch.isfinite(self.initial_losses) & (self.initial_losses > 0))
            usable = torch.isfinite(losses) & (losses > 0)
            take = unset & usable.to(unset.device)
            if bool(take.any()):
                self.initial_losses.copy_(
                    torch.where(take, losses.to(self.initial_losses), self.initial_losses)
                )
