"""Named registries of classes built for a Schema: architectures, loss weightings, gradient aggregators.

Each registry is one explicit table of (name, module, class) entries, written in one place; a duplicate name is an
error. Modules are imported on first use, so ``import mtlkit`` stays fast and each method lives in its own file.
Unknown names and unknown parameters are errors that list what is accepted.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.schema import Schema

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    """name -> class, for classes constructed as ``cls(schema, **params)``.

    Args:
        kind: what the entries are, for messages ("model", "balancer", ...).
        package: the package holding the entries' modules (``mtlkit.models``).
        entries: (name, module under ``package``, class name), in listing order.
    """

    def __init__(self, kind: str, package: str, entries: Sequence[tuple[str, str, str]]) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, tuple[str, str]] = {}
        for name, module, cls in entries:
            if name in self._entries:
                raise RuntimeError(f"{kind} {name!r} is registered twice")
            self._entries[name] = (module, cls)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``."""
        if name not in self._entries:
            raise MtlkitError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                f"available: {listing(self._entries, limit=40)}"
            )
        module, cls = self._entries[name]
        found: type[T] = getattr(importlib.import_module(f"{self.package}.{module}"), cls)
        return found

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The hyperparameters of ``name`` (its constructor's parameters after ``schema``)."""
        params = dict(inspect.signature(self.get(name)).parameters)
        params.pop("schema", None)
        return params

    def create(self, name: str, schema: Schema, **params: Any) -> T:
        """Build ``name`` for ``schema``; a bad parameter name or value is an error naming it."""
        cls = self.get(name)
        accepted = self.parameters(name)
        for key in params:
            if key not in accepted:
                raise MtlkitError(
                    f"{self.kind} {name!r} has no parameter {key!r}{did_you_mean(key, accepted)}; "
                    f"it accepts {listing(accepted, limit=30) or 'none'}"
                )
        try:
            return cls(schema, **params)  # type: ignore[call-arg]
        except (ValueError, TypeError) as exc:
            if isinstance(exc, MtlkitError):
                raise
            raise MtlkitError(f"{self.kind} {name!r}: {exc}") from None
