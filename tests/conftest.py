"""Shared fixtures: where the real data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    """``$MTLKIT_DATA_DIR``, else ``../shared/data`` beside the project root, else None."""
    env = os.environ.get("MTLKIT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; tests that need it are skipped (with the reason) only where it is absent."""
    path = real_data_dir()
    if path is None:
        pytest.skip("real data not found: set MTLKIT_DATA_DIR or put shared/data beside the project")
    return path


@pytest.fixture(autouse=True)
def _point_loaders_at_real_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaders that default to $MTLKIT_DATA_DIR find the real data in tests too (never the user cache)."""
    path = real_data_dir()
    if path is not None:
        monkeypatch.setenv("MTLKIT_DATA_DIR", str(path))
    else:
        monkeypatch.delenv("MTLKIT_DATA_DIR", raising=False)
