"""Downloading data files: streamed to a temporary file beside the target, checked, then renamed."""

from __future__ import annotations

import gzip
import shutil
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from mtlkit.errors import DataError


def download_file(
    url: str,
    dest: str | Path,
    *,
    expected_lines: int | None = None,
    timeout: float = 60.0,
    quiet: bool = False,
) -> Path:
    """Fetch ``url`` into ``dest`` atomically.

    The bytes go to ``dest.part`` first; a gzip file is decompressed once to check it is whole (and, with
    ``expected_lines``, that it has that many lines); only then is it renamed to ``dest``. A failed or
    interrupted download never leaves a partial file under the final name.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {dest.parent} to download into ({exc}); pass a writable --data-dir "
            f"or set MTLKIT_DATA_DIR"
        ) from None
    part = dest.with_name(dest.name + ".part")
    if not quiet:
        print(f"mtlkit: downloading {url} -> {dest}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url} ({exc}). Download it by hand into {dest.parent}, "
            f"or point --data-dir / MTLKIT_DATA_DIR at a folder that has it."
        ) from None
    try:
        if dest.name.endswith(".gz"):
            lines = 0
            with gzip.open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    lines += block.count(b"\n")
            if expected_lines is not None and lines != expected_lines:
                raise DataError(
                    f"the file downloaded from {url} has {lines} lines, expected {expected_lines}; "
                    f"it is not the file mtlkit expects (or it was cut short): try again"
                )
    except (OSError, EOFError, zlib.error) as exc:
        part.unlink(missing_ok=True)
        raise DataError(
            f"the file downloaded from {url} is not a whole gzip file ({exc}); try again"
        ) from None
    except DataError:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return dest
