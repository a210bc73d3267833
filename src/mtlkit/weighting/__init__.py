"""Loss-level balancing: methods that turn the task losses into one scalar, behind one registry.

``create_weighting(name, schema, **params)``; ``list_weightings()``.
"""

from __future__ import annotations

import inspect
from typing import Any

from mtlkit.registry import LazyRegistry
from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting

#: name -> (module under mtlkit.weighting, class): the one place loss weightings are registered; modules load
#: on first use.
_ENTRIES: list[tuple[str, str, str]] = [
    ("static", "static", "Static"),
    ("initial", "initial", "Initial"),
    ("prior", "prior", "Prior"),
    ("realtime", "realtime", "RealTime"),
    ("generalized_mean", "generalized_mean", "GeneralizedMean"),
    ("uncertainty", "uncertainty", "Uncertainty"),
    ("gradnorm", "gradnorm", "GradNorm"),
    ("dwa", "dwa", "DWA"),
    ("rlw", "rlw", "RLW"),
    ("famo", "famo", "FAMO"),
]


WEIGHTINGS = LazyRegistry[LossWeighting]("balancer", "mtlkit.weighting", _ENTRIES)


def list_weightings() -> list[str]:
    """Names accepted by :func:`create_weighting`."""
    return WEIGHTINGS.names()


def weighting_class(name: str) -> type[LossWeighting]:
    """The class registered as ``name``."""
    return WEIGHTINGS.get(name)


def weighting_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The hyperparameters of ``name`` (its constructor's parameters after ``schema``)."""
    return WEIGHTINGS.parameters(name)


def create_weighting(name: str, schema: Schema, **params: Any) -> LossWeighting:
    """Build ``name`` for ``schema``; unknown names and parameters are errors listing what is accepted."""
    return WEIGHTINGS.create(name, schema, **params)


__all__ = [
    "WEIGHTINGS",
    "LossWeighting",
    "create_weighting",
    "list_weightings",
    "weighting_class",
    "weighting_parameters",
]
