"""Diagnostics a run records during training, chosen by the ``diagnostics`` section of its configuration."""

from __future__ import annotations

from pathlib import Path

from mtlkit.config import DiagnosticsConfig
from mtlkit.data.datasets import Splits
from mtlkit.training.callbacks import Callback


def diagnostic_callbacks(config: DiagnosticsConfig, splits: Splits, out_dir: Path) -> list[Callback]:
    """The callbacks that record what ``config`` asks for into ``out_dir / "diagnostics"``."""
    return []
