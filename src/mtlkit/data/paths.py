"""Where data sets live: an explicit folder, else ``$MTLKIT_DATA_DIR``, else the user cache folder."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MTLKIT_DATA_DIR"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The root folder of data sets.

    Order: ``explicit`` (an argument or ``--data-dir``), the ``MTLKIT_DATA_DIR`` environment variable, then
    ``$XDG_CACHE_HOME/mtlkit`` (``~/.cache/mtlkit``), where downloads go.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mtlkit"
