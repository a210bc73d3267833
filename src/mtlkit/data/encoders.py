"""Encoders fitted on training data and applied unchanged to validation, test and prediction data.

* :class:`CategoricalEncoder`: a vocabulary, most frequent value first; code 0 is reserved for unknown and
  missing values, so a value never seen in training maps to 0 and never crashes prediction.
* :class:`NumericEncoder`: fills NaN with a training statistic, optionally adds a 0/1 missing flag, and
  standardises with the training mean and standard deviation.
* :class:`Encoders`: one encoder per feature of a Schema, fitted and applied in one call.

All of them serialise to plain JSON-ready dicts (``to_dict`` / ``from_dict``): they travel inside checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mtlkit.data.columns import Origin, to_float, to_strings
from mtlkit.errors import DataError
from mtlkit.schema import Feature, Schema


class CategoricalEncoder:
    """Value -> code with ``vocabulary[i]`` at code ``i + 1``; 0 means unknown or missing.

    Args:
        vocabulary: the known values as strings, in code order.
    """

    def __init__(self, vocabulary: Sequence[str] = ()) -> None:
        self.vocabulary: tuple[str, ...] = tuple(str(v) for v in vocabulary)
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise DataError("a categorical vocabulary must not repeat a value")
        self._values = pa.array(self.vocabulary, type=pa.string())

    @classmethod
    def fit(cls, values: pa.Array | pa.ChunkedArray, min_count: int = 1) -> CategoricalEncoder:
        """Vocabulary of the values seen at least ``min_count`` times, most frequent first (ties by value)."""
        strings = to_strings(values)
        counts = pc.value_counts(strings.drop_null())
        if len(counts) == 0:
            return cls(())
        vals = np.asarray(counts.field("values").to_pylist(), dtype=object)
        freq = counts.field("counts").to_numpy()
        keep = freq >= min_count
        vals, freq = vals[keep], freq[keep]
        order = np.lexsort((vals.astype(str), -freq))
        return cls([str(v) for v in vals[order]])

    @property
    def size(self) -> int:
        """Embedding rows needed: the vocabulary plus row 0."""
        return len(self.vocabulary) + 1

    def transform(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """int64 codes in [0, size); unknown and missing values give 0."""
        strings = to_strings(values)
        index = pc.index_in(strings, value_set=self._values)
        return np.asarray(pc.fill_null(index, -1).to_numpy(zero_copy_only=False), np.int64) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"type": "categorical", "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoricalEncoder:
        return cls(data["vocabulary"])

    def __repr__(self) -> str:
        return f"CategoricalEncoder(size={self.size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CategoricalEncoder) and other.vocabulary == self.vocabulary


@dataclass
class NumericEncoder:
    """Fill NaN with ``fill_value``, flag it if ``missing_indicator``, then ``(x - mean) / std``.

    ``mean`` and ``std`` are 0 and 1 when the feature is not standardised. A constant column gets std 1.
    """

    fill_value: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    missing_indicator: bool = False

    @classmethod
    def fit(cls, values: np.ndarray, feature: Feature) -> NumericEncoder:
        """Training statistics of a float64 array with NaN for missing values."""
        finite = values[np.isfinite(values)]
        if finite.size == 0:  # nothing to learn from: pass values through, fill with 0
            return cls(0.0, 0.0, 1.0, feature.missing_indicator)
        fill = {
            "mean": float(finite.mean()),
            "median": float(np.median(finite)),
            "zero": 0.0,
        }[feature.fill]
        mean, std = 0.0, 1.0
        if feature.standardize:
            mean = float(finite.mean())
            std = float(finite.std())
            if not math.isfinite(std) or std <= 1e-12:
                std = 1.0
        return cls(fill, mean, std, feature.missing_indicator)

    @property
    def width(self) -> int:
        return 2 if self.missing_indicator else 1

    def transform(self, values: np.ndarray) -> np.ndarray:
        """float32 [N, width]: the scaled value, then the missing flag if any."""
        missing = np.isnan(values)
        filled = np.where(missing, self.fill_value, values)
        out = np.empty((values.shape[0], self.width), dtype=np.float32)
        out[:, 0] = (filled - self.mean) / self.std
        if self.missing_indicator:
            out[:, 1] = missing
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "numeric",
            "fill_value": self.fill_value,
            "mean": self.mean,
            "std": self.std,
            "missing_indicator": self.missing_indicator,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericEncoder:
        return cls(
            float(data["fill_value"]),
            float(data["mean"]),
            float(data["std"]),
            bool(data["missing_indicator"]),
        )


def _finite(values: np.ndarray, column: str, origin: Origin) -> np.ndarray:
    """``values`` unchanged, or an error naming the first infinite value (NaN, i.e. missing, is fine)."""
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise DataError(
            f"column {column!r} has the value {values[row]} at {origin.where(row)}; numeric features must "
            f"be finite: replace it (or blank it, to be filled as missing). {int(infinite.sum())} row(s) "
            f"are affected."
        )
    return values


@dataclass
class Encoders:
    """One fitted encoder per feature of a Schema (categorical and numeric)."""

    categorical: dict[str, CategoricalEncoder] = field(default_factory=dict)
    numeric: dict[str, NumericEncoder] = field(default_factory=dict)

    @classmethod
    def fit(cls, table: pa.Table, schema: Schema, origin: Origin | None = None) -> Encoders:
        """Fit every feature's encoder on ``table`` (training data)."""
        origin = origin or Origin()
        out = cls()
        for f in schema.categorical:
            out.categorical[f.name] = CategoricalEncoder.fit(table.column(f.source), f.min_count)
        for f in schema.numeric:
            values = _finite(to_float(table.column(f.source), f.source, origin), f.source, origin)
            out.numeric[f.name] = NumericEncoder.fit(values, f)
        return out

    def check(self, schema: Schema) -> None:
        """Fail unless there is exactly one encoder per feature of ``schema``, of the right kind."""
        missing = [f.name for f in schema.categorical if f.name not in self.categorical]
        missing += [f.name for f in schema.numeric if f.name not in self.numeric]
        if missing:
            raise DataError(
                f"the encoders have no entry for feature(s) {missing}: they were fitted for another "
                f"schema; fit them again on training data with this schema"
            )
        differ = [
            f.name for f in schema.numeric if self.numeric[f.name].missing_indicator != f.missing_indicator
        ]
        if differ:
            raise DataError(
                f"feature(s) {differ}: missing_indicator differs between the schema and the fitted "
                f"encoders; use the schema the encoders were fitted with, or fit them again"
            )

    def encode(
        self, table: pa.Table, schema: Schema, origin: Origin | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(categorical codes int64 [N, C], numeric block float32 [N, F]) in Schema order."""
        origin = origin or Origin()
        self.check(schema)
        n = table.num_rows
        cat = np.zeros((n, len(schema.categorical)), dtype=np.int64)
        for j, f in enumerate(schema.categorical):
            cat[:, j] = self.categorical[f.name].transform(table.column(f.source))
        blocks = [
            self.numeric[f.name].transform(
                _finite(to_float(table.column(f.source), f.source, origin), f.source, origin)
            )
            for f in schema.numeric
        ]
        num = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), dtype=np.float32)
        return cat, num

    def fitted_schema(self, schema: Schema) -> Schema:
        """``schema`` with each categorical feature's ``vocab_size`` set from its vocabulary."""
        import dataclasses

        self.check(schema)
        features = [
            dataclasses.replace(f, vocab_size=self.categorical[f.name].size) if f.kind == "categorical" else f
            for f in schema.features
        ]
        return schema.replace_features(features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": {k: v.to_dict() for k, v in self.categorical.items()},
            "numeric": {k: v.to_dict() for k, v in self.numeric.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Encoders:
        return cls(
            {k: CategoricalEncoder.from_dict(v) for k, v in data.get("categorical", {}).items()},
            {k: NumericEncoder.from_dict(v) for k, v in data.get("numeric", {}).items()},
        )
