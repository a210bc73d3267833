"""Gradient-level balancing: methods that turn per-task gradients into one update, behind one registry.

``create_aggregator(name, schema, **params)``; ``list_aggregators()``. Modules load on first use.
"""

from __future__ import annotations

import inspect
from typing import Any

from mtlkit.aggregation.base import GradientAggregator
from mtlkit.registry import LazyRegistry
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


AGGREGATORS = LazyRegistry[GradientAggregator]("aggregator", "mtlkit.aggregation", _ENTRIES)


def list_aggregators() -> list[str]:
    """Names accepted by :func:`create_aggregator`."""
    return AGGREGATORS.names()


def aggregator_class(name: str) -> type[GradientAggregator]:
    """The class registered as ``name``."""
    return AGGREGATORS.get(name)


def aggregator_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The hyperparameters of ``name`` (its constructor's parameters after ``schema``)."""
    return AGGREGATORS.parameters(name)


def create_aggregator(name: str, schema: Schema, **params: Any) -> GradientAggregator:
    """Build ``name`` for ``schema``; unknown names and parameters are errors listing what is accepted."""
    return AGGREGATORS.create(name, schema, **params)


__all__ = [
    "AGGREGATORS",
    "GradientAggregator",
    "aggregator_class",
    "aggregator_parameters",
    "create_aggregator",
    "list_aggregators",
]
