"""Randomness a module owns: a CPU generator seeded by the module's ``seed`` and carried in its ``state_dict``.

Balancers that draw random numbers (RLW's weights, PCGrad's and GradVac's visiting orders: a torch generator;
GradDrop's thresholds, one per gradient coordinate: a numpy PCG64 stream, about twice as fast) use their own
generator, independent of the global RNG and of the Trainer's seed, so that a resumed run repeats the
uninterrupted run's draws exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def check_seed(seed: int) -> None:
    """A module seed: an integer in [0, 2**64)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")


class OwnsGenerator:
    """Mixin for ``nn.Module`` subclasses (list it before ``nn.Module`` in the bases)."""

    seed: int
    _generator: torch.Generator

    def _init_generator(self, seed: int) -> None:
        check_seed(seed)
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


#: Bytes of an encoded PCG64 state: 128-bit state, 128-bit increment, has_uint32 flag, buffered uint32.
_PCG64_BYTES = 16 + 16 + 1 + 4


class OwnsUniformStream:
    """Mixin for ``nn.Module`` subclasses that draw a uniform number per gradient coordinate (GradDrop): a numpy
    PCG64 generator seeded by ``seed``, whose float32 draws fill a buffer the module reuses (measured here: 1.7 ms
    per million draws, torch's CPU generator 3.0 ms plus a fresh tensor's page faults). Its state (37 bytes, a
    uint8 tensor) travels in ``state_dict`` as extra state; ``reseed()`` restarts the stream."""

    seed: int
    _stream: np.random.Generator
    _draws: np.ndarray | None

    def _init_stream(self, seed: int) -> None:
        check_seed(seed)
        self.seed = seed
        self._stream = np.random.Generator(np.random.PCG64(seed))
        self._draws = None

    def reseed(self) -> None:
        """Back to the draws of a fresh instance."""
        self._stream = np.random.Generator(np.random.PCG64(self.seed))

    def uniform(self, n: int) -> Tensor:
        """n float32 draws in [0, 1) on the CPU: a view of the module's buffer, overwritten by the next call (the
        caller may use it as scratch space)."""
        if self._draws is None or self._draws.size != n:
            self._draws = np.empty(n, dtype=np.float32)
        self._stream.random(dtype=np.float32, out=self._draws)
        return torch.from_numpy(self._draws)

    def get_extra_state(self) -> Any:
        """The stream's state as a uint8 tensor of 37 bytes, stored in ``state_dict`` under ``_extra_state``."""
        state = self._stream.bit_generator.state
        raw = (
            int(state["state"]["state"]).to_bytes(16, "little")
            + int(state["state"]["inc"]).to_bytes(16, "little")
            + bytes([int(state["has_uint32"])])
            + int(state["uinteger"]).to_bytes(4, "little")
        )
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8)

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Tensor) or state.dtype != torch.uint8 or state.numel() != _PCG64_BYTES:
            got = (
                f"{state.numel()} {state.dtype} values" if isinstance(state, Tensor) else type(state).__name__
            )
            raise ValueError(
                f"{type(self).__name__}: the saved random stream must be a uint8 tensor of {_PCG64_BYTES} bytes "
                f"(a PCG64 state), got {got}; a checkpoint from before mtlkit drew GradDrop's thresholds with "
                f"numpy cannot resume this stream: start the run again, or load the model weights alone"
            )
        raw = bytes(state.detach().cpu().tolist())
        bits = np.random.PCG64()
        bits.state = {
            "bit_generator": "PCG64",
            "state": {
                "state": int.from_bytes(raw[:16], "little"),
                "inc": int.from_bytes(raw[16:32], "little"),
            },
            "has_uint32": raw[32],
            "uinteger": int.from_bytes(raw[33:], "little"),
        }
        self._stream = np.random.Generator(bits)
