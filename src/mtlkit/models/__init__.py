"""Multi-task architectures behind one contract (:class:`MultiTaskModel`) and one registry.

``create_model(name, schema, **params)`` builds a registered architecture; ``list_models()`` lists the names.
Unknown names and unknown parameters are errors that list what is accepted.
"""

from __future__ import annotations

import inspect
from typing import Any

from mtlkit.models.base import GatedMix, MultiTaskModel, Output
from mtlkit.registry import LazyRegistry
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


MODELS = LazyRegistry[MultiTaskModel]("model", "mtlkit.models", _ENTRIES)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return MODELS.names()


def model_class(name: str) -> type[MultiTaskModel]:
    """The class registered as ``name``."""
    return MODELS.get(name)


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The hyperparameters of ``name`` (its constructor's parameters after ``schema``)."""
    return MODELS.parameters(name)


def create_model(name: str, schema: Schema, **params: Any) -> MultiTaskModel:
    """Build ``name`` for ``schema``; unknown names and parameters are errors listing what is accepted."""
    return MODELS.create(name, schema, **params)


__all__ = [
    "MODELS",
    "GatedMix",
    "MultiTaskModel",
    "Output",
    "create_model",
    "list_models",
    "model_parameters",
]
