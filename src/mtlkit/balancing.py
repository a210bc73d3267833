"""One name space for every balancer: loss weightings (``mtlkit.weighting``) and gradient aggregators
(``mtlkit.aggregation``). ``balancer: {name: ...}`` in a run configuration resolves here."""

from __future__ import annotations

from typing import Any

from mtlkit.aggregation import AGGREGATORS, GradientAggregator, create_aggregator
from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.schema import Schema
from mtlkit.weighting import WEIGHTINGS, LossWeighting, create_weighting

_CLASH = set(WEIGHTINGS) & set(AGGREGATORS)
if _CLASH:  # pragma: no cover - a registry mistake, caught at import
    raise RuntimeError(f"balancer names registered as both weighting and aggregator: {sorted(_CLASH)}")


def list_balancers() -> list[str]:
    """Every balancer name: loss weightings, then gradient aggregators."""
    return [*WEIGHTINGS, *AGGREGATORS]


def create_balancer(name: str, schema: Schema, **params: Any) -> LossWeighting | GradientAggregator:
    """Build the balancer ``name`` from whichever registry holds it."""
    if name in WEIGHTINGS:
        return create_weighting(name, schema, **params)
    if name in AGGREGATORS:
        return create_aggregator(name, schema, **params)
    names = list_balancers()
    raise MtlkitError(
        f"unknown balancer {name!r}{did_you_mean(name, names)}; available: {listing(names, limit=40)}"
    )
