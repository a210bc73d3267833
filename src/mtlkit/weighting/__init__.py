"""Loss-level balancing: methods that turn the task losses into one scalar, behind one registry.

``create_weighting(name, schema, **params)``; ``list_weightings()``.
"""

from __future__ import annotations

import inspect
from typing import Any

from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.schema import Schema
from mtlkit.weighting.base import LossWeighting
from mtlkit.weighting.static import Static


def _registry() -> dict[str, type[LossWeighting]]:
    entries: list[tuple[str, type[LossWeighting]]] = [("static", Static)]
    registry: dict[str, type[LossWeighting]] = {}
    for name, cls in entries:
        if name in registry:
            raise RuntimeError(f"weighting {name!r} is registered twice")
        registry[name] = cls
    return registry


WEIGHTINGS = _registry()


def list_weightings() -> list[str]:
    return list(WEIGHTINGS)


def weighting_parameters(name: str) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(_cls(name)).parameters)
    params.pop("schema", None)
    return params


def _cls(name: str) -> type[LossWeighting]:
    if name not in WEIGHTINGS:
        raise MtlkitError(
            f"unknown balancer {name!r}{did_you_mean(name, WEIGHTINGS)}; available: {listing(WEIGHTINGS)}"
        )
    return WEIGHTINGS[name]


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


__all__ = ["WEIGHTINGS", "LossWeighting", "create_weighting", "list_weightings", "weighting_parameters"]
