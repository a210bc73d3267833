"""Randomness a module owns: a CPU generator seeded by the module's ``seed`` and carried in its ``state_dict``.

Balancers that draw random numbers (RLW's weights, PCGrad's and GradVac's visiting orders, GradDrop's
thresholds) use their own generator, independent of the global RNG and of the Trainer's seed, so that a resumed
run repeats the uninterrupted run's draws exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class OwnsGenerator:
    """Mixin for ``nn.Module`` subclasses (list it before ``nn.Module`` in the bases)."""

    seed: int
    _generator: torch.Generator

    def _init_generator(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        self.seed = seed
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)

    def reseed(self) -> None:
        """Back to the draws of a fresh instance."""
        self._generator.manual_seed(self.seed)

    def get_extra_state(self) -> Any:
        """The generator's state (a uint8 tensor), stored in ``state_dict`` under ``_extra_state``."""
        return self._generator.get_state()

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Tensor) or state.dtype != torch.uint8:
            raise ValueError(
                f"{type(self).__name__}: the saved generator state must be a uint8 tensor, "
                f"got {type(state).__name__}"
            )
        self._generator.set_state(state.detach().cpu())

    def visiting_orders(self, tasks: int) -> list[list[int]]:
        """For each task i, the other tasks in a uniformly random order (PCGrad's and GradVac's surgery order):
        row i of an argsort of uniform draws [T, T], with i left out. One draw per call (one generator call,
        where T ``randperm`` calls cost T times the per-call overhead); advances the generator."""
        ranks = torch.rand(tasks, tasks, generator=self._generator).argsort(dim=1).tolist()
        return [[j for j in row if j != i] for i, row in enumerate(ranks)]
