"""Errors a user can cause, and the helpers that make their messages useful.

Every error raised because of bad input (a config, a file, a column, a value) is an :class:`MtlkitError`:
the CLI prints its message without a stack trace and exits with status 2. Messages name the file, column,
row or value at fault and say what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class MtlkitError(ValueError):
    """Bad input from the user: the message says what is wrong and what to do."""


class SchemaError(MtlkitError):
    """An invalid Feature, Task or Schema."""


class DataError(MtlkitError):
    """A data file or column that cannot be used as described."""


def refuse_to_replace(path: Path, what: str, overwrite: bool) -> None:
    """An error when ``path`` (a file the user named) exists and ``overwrite`` is False: it may be anything, and a
    typo must not replace it. ``what`` is what would have been written (``"the predictions"``)."""
    if not overwrite and path.exists():
        raise MtlkitError(f"{path} exists; pass --overwrite to replace it with {what}, or name another file")


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice most similar to ``name`` (difflib ratio >= 0.5), or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close choice exists, else an empty string."""
    match = closest(name, choices)
    return f" (did you mean {match!r}?)" if match else ""


def listing(choices: Iterable[str], limit: int = 12) -> str:
    """A short comma-separated listing of names, cut after ``limit`` with a count of the rest."""
    items = [repr(c) for c in choices]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"
    return ", ".join(items)
