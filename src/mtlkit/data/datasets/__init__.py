"""Named data sets, each loaded as train / valid / test Tables sharing one Schema and one set of Encoders.

``load_dataset(name, **params)`` looks the name up in one explicit registry; ``list_datasets()`` lists it.
Encoders are always fitted on the training part only and applied to the others.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mtlkit.data.table import Table
from mtlkit.errors import DataError, did_you_mean, listing
from mtlkit.schema import Schema


@dataclass(frozen=True)
class Splits:
    """A data set's train / valid / test Tables and a note on how they were made (shown next to results)."""

    name: str
    train: Table
    valid: Table
    test: Table
    note: str

    @property
    def schema(self) -> Schema:
        return self.train.schema

    def parts(self) -> dict[str, Table]:
        return {"train": self.train, "valid": self.valid, "test": self.test}


Loader = Callable[..., Splits]


def _registry() -> dict[str, Loader]:
    from mtlkit.data.datasets.ali_ccp import load_ali_ccp
    from mtlkit.data.datasets.aliexpress import load_aliexpress
    from mtlkit.data.datasets.census_income import load_census_income
    from mtlkit.data.datasets.funnel import load_funnel
    from mtlkit.data.datasets.synthetic import load_synthetic

    entries: list[tuple[str, Loader]] = [
        ("synthetic", load_synthetic),
        ("census_income", load_census_income),
        ("aliexpress", load_aliexpress),
        ("ali_ccp", load_ali_ccp),
        ("funnel", load_funnel),
    ]
    registry: dict[str, Loader] = {}
    for name, loader in entries:
        if name in registry:
            raise RuntimeError(f"dataset {name!r} is registered twice")
        registry[name] = loader
    return registry


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_registry())


def dataset_loader(name: str) -> Loader:
    """The loader function of a data set (its signature lists the accepted parameters)."""
    registry = _registry()
    if name not in registry:
        raise DataError(
            f"unknown dataset {name!r}{did_you_mean(name, registry)}; available: {listing(registry)}"
        )
    return registry[name]


def dataset_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword parameters a data set accepts, with their annotations and defaults."""
    return dict(inspect.signature(dataset_loader(name)).parameters)


def load_dataset(name: str, **params: Any) -> Splits:
    """Load a registered data set; unknown names and parameters are errors that list what is accepted."""
    loader = dataset_loader(name)
    accepted = dataset_parameters(name)
    for key in params:
        if key not in accepted:
            raise DataError(
                f"dataset {name!r} has no parameter {key!r}{did_you_mean(key, accepted)}; "
                f"it accepts {listing(accepted, limit=30)}"
            )
    return loader(**params)


__all__ = ["Splits", "dataset_loader", "dataset_parameters", "list_datasets", "load_dataset"]
