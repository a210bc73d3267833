"""FAMO: Liu, Feng, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023.

Task logits xi (initially 0) give z = softmax(xi). The model follows

    sum_i c z_i / L_i grad L_i,   c = (sum_j z_j / L_j)^(-1)       (= sum_i c z_i grad log L_i)

which makes every task's log-loss fall at a rate steered by z. After a step, xi descends on the gradient

    J_softmax(xi)^T d + gamma xi,   i.e.   z_k (d_k - sum_i z_i d_i) + gamma xi_k,
    d_i = log L_i(before the step) - log L_i(after the step),

the fall of each task's log-loss: a task that fell faster than the z-weighted average loses weight. As in the official implementation (github.com/Cranial-XIX/FAMO), the step on xi is an Adam step
(betas 0.9 / 0.999, eps 1e-8) with learning rate ``lr`` (the official ``w_lr``, 0.025) and L2 decay ``gamma``
added to the gradient (``torch.optim.Adam``'s ``weight_decay``).

Differences from the paper and the official code, because a mtlkit balancer only sees the losses of each step:

* Where "after" is measured. The official trainers evaluate the losses a second time after the optimizer step,
  on the same batch (an extra forward pass), and update xi before the next step. mtlkit updates xi at the start
  of the next ``forward``, from the previous step's losses and the current ones: the same timing (the next
  weights use the updated xi) without the extra forward pass, but "after" is measured on the next batch, so d
  also carries the difference between two batches (noise that Adam's averaging smooths). The state (xi, Adam's
  moments, the step count and the previous losses) lives in buffers, not parameters: the Trainer's optimizer
  never sees xi, and the objective's gradient never reaches it.
* Scale. The paper's weights c z_i / L_i sum to 1; mtlkit multiplies them by the number of tasks T, so that they
  sum to T like equal weights (``static``), DWA, GradNorm and RLW: identical losses give every task weight 1.
  Under the Trainer's Adam this changes almost nothing; it keeps the model penalty, added unweighted to the
  objective, and ``grad_clip`` at the same strength as with equal weights.
* Objective value. The official code returns sum_i z_i log L_i / c; mtlkit returns sum_i w_i L_i with w held
  constant, whose gradient is the weighting above and whose value reads as a loss (T times a z-weighted harmonic
  mean of the losses).
* Zero losses. FAMO needs L_i > 0 (the official code offsets each loss by a known minimum, 0 by default, plus
  1e-8): losses are floored at ``eps``. A loss of exactly 0 means the task had no labelled row in the batch
  (``mtlkit.losses``): that task gets weight 0 for the step, and its log-loss change is not measured (its entry
  of d is set to the z-weighted mean of the others', which leaves its logit unmoved apart from the decay).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting

#: Adam's constants for the logits, torch's defaults as in the official implementation.
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class FAMO(LossWeighting):
    """FAMO (Liu et al., NeurIPS 2023): sum_i w_i L_i, w_i = T c z_i / L_i, z = softmax(xi), xi adapted by Adam.

    State (buffers): ``logits`` (xi), ``exp_avg`` / ``exp_avg_sq`` (Adam's moments), ``steps`` (Adam steps
    taken) and ``previous_losses`` (the last step's losses, NaN where unknown).

    Args:
        lr: learning rate of the logits (> 0); ``w_lr`` in the official code, 0.025 there too.
        gamma: L2 decay of the logits (>= 0), pulling the weights back toward equal; the official scripts use
            0.001 (QM9) and 0.01 (CelebA).
        eps: floor of the losses (> 0), so that 1 / L and log L stay finite.
    """

    scale_invariant = True  # the weights go as 1 / L_i and xi moves on log-loss changes
    order_invariant = True

    logits: Tensor
    exp_avg: Tensor
    exp_avg_sq: Tensor
    steps: Tensor
    previous_losses: Tensor

    def __init__(self, schema: Schema, lr: float = 0.025, gamma: float = 1e-3, eps: float = 1e-8) -> None:
        super().__init__(schema)
        for what, value in (("lr", lr), ("gamma", gamma), ("eps", eps)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{what} must be a number, got {value!r}")
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.lr = float(lr)
        self.gamma = float(gamma)
        self.eps = float(eps)
        n = len(schema.tasks)
        self.register_buffer("logits", torch.zeros(n))
        self.register_buffer("exp_avg", torch.zeros(n))
        self.register_buffer("exp_avg_sq", torch.zeros(n))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("previous_losses", torch.full((n,), float("nan")))

    def reset(self) -> None:
        for buffer in (self.logits, self.exp_avg, self.exp_avg_sq, self.steps):
            buffer.zero_()
        self.previous_losses.fill_(float("nan"))

    # ------------------------------------------------------------------------------------------ objective
    def forward(self, losses: Tensor) -> Tensor:
        with torch.no_grad():
            current, present = self._observe(losses)
            logits, exp_avg, exp_avg_sq, steps = self._adapted(current, present)
            for buffer, value in (
                (self.logits, logits),
                (self.exp_avg, exp_avg),
                (self.exp_avg_sq, exp_avg_sq),
                (self.steps, steps),
            ):
                buffer.copy_(value)
            self.previous_losses.copy_(torch.where(present, current, torch.full_like(current, math.nan)))
            w = self._weights(logits, current, present)
        return (w.to(losses.dtype) * losses).sum()

    def effective_weights(self, losses: Tensor) -> Tensor:
        """The weights the next ``forward`` would apply at these losses, without changing any state."""
        with torch.no_grad():
            current, present = self._observe(losses)
            logits = self._adapted(current, present)[0]
            return self._weights(logits, current, present).to(device=losses.device, dtype=losses.dtype)

    def shares(self) -> Tensor:
        """z = softmax(xi) [T]: the logits' part of the weighting, before the factor 1 / L_i."""
        return torch.softmax(self.logits, dim=0)

    # ------------------------------------------------------------------------------------------ steps
    def _observe(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """(losses floored at eps, in the buffers' dtype; mask of the tasks present in the batch)."""
        observed = losses.detach().to(self.logits.dtype)
        return observed.clamp(min=self.eps), observed != 0

    def _weights(self, logits: Tensor, current: Tensor, present: Tensor) -> Tensor:
        """w_i = T z_i / L_i / sum_j z_j / L_j over the present tasks (z itself when none is present)."""
        z = torch.softmax(logits, dim=0)
        share = torch.where(present, z / current, torch.zeros_like(z))
        total = share.sum()
        w = torch.where(total > 0, share / total.clamp(min=torch.finfo(total.dtype).tiny), z)
        return len(w) * w

    def _adapted(self, current: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(logits, exp_avg, exp_avg_sq, steps) after the Adam step on xi that the previous -> current losses
        call for; unchanged when no task has both losses (the first step, or after a reset)."""
        measured = present & torch.isfinite(self.previous_losses)
        z = torch.softmax(self.logits, dim=0)
        fall = torch.where(measured, self.previous_losses.log() - current.log(), torch.zeros_like(current))
        mass = (z * measured).sum()
        mean = (z * fall).sum() / mass.clamp(min=torch.finfo(mass.dtype).tiny)
        # unmeasured tasks take the mean fall: their logit gets no push from d, sum_i z_i d_i stays `mean`
        fall = torch.where(measured, fall, mean)
        grad = z * (fall - mean) + self.gamma * self.logits
        steps = self.steps + 1
        exp_avg = BETA1 * self.exp_avg + (1 - BETA1) * grad
        exp_avg_sq = BETA2 * self.exp_avg_sq + (1 - BETA2) * grad * grad
        t = steps.to(grad.dtype)
        m_hat = exp_avg / (1 - BETA1**t)
        v_hat = exp_avg_sq / (1 - BETA2**t)
        logits = self.logits - self.lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
        # a tensor condition, not a Python branch: no device synchronisation per step
        update = measured.any()
        return (
            torch.where(update, logits, self.logits),
            torch.where(update, exp_avg, self.exp_avg),
            torch.where(update, exp_avg_sq, self.exp_avg_sq),
            torch.where(update, steps, self.steps),
        )
