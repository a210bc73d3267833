"""Loss-level balancing: methods that turn the task losses into one scalar, behind one registry.

``create_weighting(name, schema, **params)``; ``list_weightings()``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from mtlkit.errors import MtlkitError, did_you_mean, listing
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


def _registry() -> dict[str, tuple[str, str]]:
    registry: dict[str, tuple[str, str]] = {}
    for name, module, cls in _ENTRIES:
        if name in registry:
            raise RuntimeError(f"weighting {name!r} is registered twice")
        registry[name] = (module, cls)
    return registry


WEIGHTINGS = _registry()


def list_weightings() -> list[str]:
    return list(WEIGHTINGS)


def weighting_parameters(name: str) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(_cls(name)).parameters)
    params.pop("schema", None)
    return params


def _cls(name: str) -> type[LossWeighting]:
    return weighting_class(name)


def weighting_class(name: str) -> type[LossWeighting]:
    """The class registered as ``name``."""
    if name not in WEIGHTINGS:
        raise MtlkitError(
            f"unknown balancer {name!r}{did_you_mean(name, WEIGHTINGS)}; available: {listing(WEIGHTINGS)}"
        )
    module, cls = WEIGHTINGS[name]
    found: type[LossWeighting] = getattr(importlib.import_module(f"mtlkit.weighting.{module}"), cls)
    return found


def create_weighting(name: str, schema: Schema, **params: Any) -> LossWeighting:
    """Build the loss weighting ``name`` for ``schema``; unknown names and parameters list what is accepted."""
    cls = _cls(name)
    accepted = weighting_parameters(name)
    for key in params:
        if key not in accepted:
            raise MtlkitError(
                f"balancer {name!r} has no parameter {key!r}{did_you_mean(key, accepted)}; "
                f"it accepts {listing(accepted) or 'none'}"
            )
    try:
        return cls(schema, **params)
    except (ValueError, TypeError) as exc:
        raise MtlkitError(f"balancer {name!r}: {exc}") from None


__all__ = [
    "WEIGHTINGS",
    "LossWeighting",
    "create_weighting",
    "list_weightings",
    "weighting_class",
    "weighting_parameters",
]
