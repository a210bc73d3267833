"""Solution families: how a multi-objective problem is turned into something to train and back into per-task scores.

The second seed document lists four ways to serve several objectives: one model per objective with a fused score
(``multi_model``), one model on one label with per-action sample weights (``sample_weighting``), learning to rank
over pairs built from the action order (``pairwise_ltr``), and multi-task learning (``mtl``, the default). A
:class:`~mtlkit.families.base.Family` maps the data set's Splits to the Splits it trains on, and its predictions
back to one score per original task, so that every family is judged by the same per-task metrics.
"""

from __future__ import annotations

from typing import Any

from mtlkit.families.base import MTL, Family
from mtlkit.registry import LazyRegistry
from mtlkit.schema import Schema

#: name -> (module under mtlkit.families, class): the one table of families.
_REGISTRY: LazyRegistry[Family] = LazyRegistry(
    "family",
    "mtlkit.families",
    [
        ("mtl", "base", "MTL"),
        ("multi_model", "multi_model", "MultiModel"),
        ("sample_weighting", "sample_weighting", "SampleWeighting"),
        ("pairwise_ltr", "pairwise_ltr", "PairwiseLTR"),
    ],
)


def list_families() -> list[str]:
    return _REGISTRY.names()


def family_class(name: str) -> type[Family]:
    """The class registered as ``name`` (an unknown name is an error listing the accepted ones)."""
    return _REGISTRY.get(name)


def create_family(name: str, schema: Schema, **params: Any) -> Family:
    """The family ``name`` for a problem described by ``schema`` (the data set's own tasks)."""
    return _REGISTRY.create(name, schema, **params)


__all__ = ["MTL", "Family", "create_family", "family_class", "list_families"]
