"""Gradient-level balancing: methods that turn per-task gradients into one update, behind one registry.

``create_aggregator(name, schema, **params)``; ``list_aggregators()``. Modules load on first use.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from mtlkit.aggregation.base import GradientAggregator
from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.schema import Schema

#: name -> (module under mtlkit.aggregation, class): the one place aggregators are registered.
_ENTRIES: list[tuple[str, str, str]] = [
    ("mean", "base", "MeanAggregator"),
    ("unit_grad", "unit_grad", "UnitGrad"),
    ("mgda", "mgda", "MGDA"),
    ("pe_ltr", "pe_ltr", "PELTR"),
    ("imtl", "imtl", "IMTL"),
    ("pcgrad", "pcgrad", "PCGrad"),
    ("gradvac", "gradvac", "GradVac"),
    ("cagrad", "cagrad", "CAGrad"),
    ("graddrop", "graddrop", "GradDrop"),
    ("nash_mtl", "nash_mtl", "NashMTL"),
    ("aligned_mtl", "aligned_mtl", "AlignedMTL"),
    ("upgrad", "upgrad", "UPGrad"),
]


def _registry() -> dict[str, tuple[str, str]]:
    registry: dict[str, tuple[str, str]] = {}
    for name, module, cls in _ENTRIES:
        if name in registry:
            raise RuntimeError(f"aggregator {name!r} is registered twice")
        registry[name] = (module, cls)
    return registry


AGGREGATORS = _registry()


def list_aggregators() -> list[str]:
    return list(AGGREGATORS)


def aggregator_class(name: str) -> type[GradientAggregator]:
    if name not in AGGREGATORS:
        raise MtlkitError(
            f"unknown aggregator {name!r}{did_you_mean(name, AGGREGATORS)}; available: {listing(AGGREGATORS)}"
        )
    module, cls = AGGREGATORS[name]
    found: type[GradientAggregator] = getattr(importlib.import_module(f"mtlkit.aggregation.{module}"), cls)
    return found


def aggregator_parameters(name: str) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(aggregator_class(name)).parameters)
    params.pop("schema", None)
    return params


def create_aggregator(name: str, schema: Schema, **params: Any) -> GradientAggregator:
    """Build the aggregator ``name``; unknown names and parameters are errors listing what is accepted."""
    cls = aggregator_class(name)
    accepted = aggregator_parameters(name)
    for key in params:
        if key not in accepted:
            raise MtlkitError(
                f"aggregator {name!r} has no parameter {key!r}{did_you_mean(key, accepted)}; "
                f"it accepts {listing(accepted)}"
            )
    try:
        return cls(schema, **params)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, MtlkitError):
            raise
        raise MtlkitError(f"aggregator {name!r}: {exc}") from None


__all__ = [
    "AGGREGATORS",
    "GradientAggregator",
    "aggregator_class",
    "aggregator_parameters",
    "create_aggregator",
    "list_aggregators",
]
