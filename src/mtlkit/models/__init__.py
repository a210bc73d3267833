"""Multi-task architectures behind one contract (:class:`MultiTaskModel`) and one registry.

``create_model(name, schema, **params)`` builds a registered architecture; ``list_models()`` lists the names.
Unknown names and unknown parameters are errors that list what is accepted.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.models.base import MultiTaskModel, Output
from mtlkit.schema import Schema

#: name -> (module under mtlkit.models, class): the one place architectures are registered. Modules are
#: imported on first use, so importing mtlkit stays fast.
_ENTRIES: list[tuple[str, str, str]] = [
    ("single_task", "single_task", "SingleTask"),
    ("shared_bottom", "shared_bottom", "SharedBottom"),
    ("l2_soft", "l2_soft", "L2Soft"),
    ("cross_stitch", "cross_stitch", "CrossStitch"),
    ("omoe", "omoe", "OMoE"),
    ("mmoe", "mmoe", "MMoE"),
    ("cgc", "ple", "CGC"),
    ("ple", "ple", "PLE"),
    ("snr_trans", "snr", "SNRTrans"),
    ("snr_aver", "snr", "SNRAver"),
    ("esmm", "esmm", "ESMM"),
    ("aitm", "aitm", "AITM"),
    ("dselect_k", "dselect_k", "DSelectK"),
]


def _registry() -> dict[str, tuple[str, str]]:
    registry: dict[str, tuple[str, str]] = {}
    for name, module, cls in _ENTRIES:
        if name in registry:
            raise RuntimeError(f"model {name!r} is registered twice")
        registry[name] = (module, cls)
    return registry


MODELS = _registry()


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(MODELS)


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The hyperparameters of an architecture (its constructor's keyword parameters after ``schema``)."""
    params = dict(inspect.signature(model_class(name)).parameters)
    params.pop("schema", None)
    return params


def model_class(name: str) -> type[MultiTaskModel]:
    """The class registered as ``name``."""
    if name not in MODELS:
        raise MtlkitError(f"unknown model {name!r}{did_you_mean(name, MODELS)}; available: {listing(MODELS)}")
    module, cls = MODELS[name]
    found: type[MultiTaskModel] = getattr(importlib.import_module(f"mtlkit.models.{module}"), cls)
    return found


def create_model(name: str, schema: Schema, **params: Any) -> MultiTaskModel:
    """Build the architecture ``name`` for ``schema`` (a fitted schema: ``table.schema``)."""
    cls = model_class(name)
    accepted = model_parameters(name)
    for key in params:
        if key not in accepted:
            raise MtlkitError(
                f"model {name!r} has no parameter {key!r}{did_you_mean(key, accepted)}; "
                f"it accepts {listing(accepted, limit=30)}"
            )
    try:
        return cls(schema, **params)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, MtlkitError):
            raise
        raise MtlkitError(f"model {name!r}: {exc}") from None


__all__ = ["MODELS", "MultiTaskModel", "Output", "create_model", "list_models", "model_parameters"]
