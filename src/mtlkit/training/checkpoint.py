"""Checkpoints: plain data and tensors only, written atomically.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (no pickled classes), so it loads with
``torch.load(path, weights_only=True)``. It is written to a temporary file in the same folder, flushed to disk,
then renamed over the target: a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mtlkit.errors import MtlkitError

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format_version": FORMAT_VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code is unpickled)."""
    source = Path(path)
    if not source.is_file():
        raise MtlkitError(
            f"no checkpoint at {source}: train first (mtlkit train CONFIG --out {source.parent})"
        )
    try:
        data = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise MtlkitError(
            f"cannot read checkpoint {source} ({type(exc).__name__}: {exc}); it is damaged or not an mtlkit "
            f"checkpoint"
        ) from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise MtlkitError(
            f"{source} is not an mtlkit checkpoint of format {FORMAT_VERSION} "
            f"(found {data.get('format_version') if isinstance(data, dict) else type(data).__name__})"
        )
    return data
