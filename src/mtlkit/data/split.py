"""The one rule for random splits, shared by ``Table.split`` and the data set loaders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Added before flooring so that decimal fractions count exactly: 0.29 * 100 is 28.999999999999996 in floats.
_EPS = 1e-9


def split_indices(n: int, fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Row indices of random disjoint parts of ``range(n)``, each sorted back to row order.

    Rows are permuted with ``numpy.random.default_rng(seed).permutation(n)``; part ``i`` takes the next
    ``floor(fractions[i] * n)`` rows, the last part takes the rest. ``fractions`` must be two or more
    positive numbers summing to 1.
    """
    fr = [float(f) for f in fractions]
    if len(fr) < 2 or any(not (f > 0) for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 2 positive numbers summing to 1, got {fr}")
    sizes = [math.floor(f * n + _EPS) for f in fr[:-1]]
    if sum(sizes) > n:  # only reachable through rounding at tiny n
        raise ValueError(f"cannot split {n} rows into fractions {fr}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *sizes, n - sum(sizes)])
    return [np.sort(order[bounds[i] : bounds[i + 1]]) for i in range(len(fr))]
