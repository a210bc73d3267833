"""Keeping freed memory in the process while training on the CPU (glibc's malloc thresholds).

A training step frees and allocates the same large activation and gradient buffers every step. glibc's ``malloc``
serves a block above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised as mapped blocks are freed, up to 32 MiB) with
its own ``mmap`` and unmaps it when it is freed, and hands the top of its heap back to the OS once more than
``M_TRIM_THRESHOLD`` (twice the mmap threshold) is free there. Whatever went back to the OS is faulted in again,
page by page, during the next step: minor page faults, about 1-2 us per 4 KiB page on the machine we measure on.
Whether a step pays them depends on the heap's history, so the same step runs at different speeds in different
processes (docs/decisions.md, "Training keeps freed memory"; measured there: a production-size MMoE step 47-66 ms
untouched, 42.5-43 ms with the thresholds raised).

:func:`keep_freed_memory` raises both thresholds (``mallopt``), so blocks up to 256 MiB come from the heap and up
to 1 GiB of free heap stays mapped: after the first steps the process reuses its own pages. The cost is that
memory freed by a step is not returned to the OS while the process runs (the peak of a step stays resident, as
with PyTorch's CUDA caching allocator). ``mtlkit train`` applies it unless ``training.keep_freed_memory`` is false;
it changes nothing where the C library is not glibc, or where the environment already sets these thresholds
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES``): the user's setting wins.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from typing import NamedTuple

log = logging.getLogger(__name__)

#: Blocks up to this size come from malloc's heap, not from a fresh mmap each time.
MMAP_THRESHOLD = 256 * 2**20
#: Up to this much free memory stays at the top of the heap instead of going back to the OS.
TRIM_THRESHOLD = 2**30
# mallopt parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


class MemorySetting(NamedTuple):
    """What :func:`keep_freed_memory` did: ``applied``, and why not when it was not."""

    applied: bool
    reason: str


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; True on success."""
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return bool(libc.mallopt(param, value))


def keep_freed_memory() -> MemorySetting:
    """Raise glibc's ``M_MMAP_THRESHOLD`` to 256 MiB and ``M_TRIM_THRESHOLD`` to 1 GiB for this process (see the
    module docstring). Nothing changes off glibc, or where the environment sets either threshold."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return MemorySetting(False, "the C library is not glibc")
    present = [name for name in _ENVIRONMENT if name in os.environ]
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    present += [f"GLIBC_TUNABLES {name}" for name in _TUNABLES if name in tunables]
    if present:
        return MemorySetting(False, f"set in the environment ({', '.join(present)})")
    try:
        done = _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    except (OSError, AttributeError) as exc:  # no mallopt symbol in this process
        return MemorySetting(False, f"mallopt is not available ({exc})")
    if not done:
        return MemorySetting(False, "mallopt refused the thresholds")
    log.debug("malloc thresholds raised: mmap %d, trim %d bytes", MMAP_THRESHOLD, TRIM_THRESHOLD)
    return MemorySetting(True, f"M_MMAP_THRESHOLD={MMAP_THRESHOLD}, M_TRIM_THRESHOLD={TRIM_THRESHOLD}")
