"""Printing tables whole: rich shrinks a table to the console's width by cutting cells short ("0.95…"), and a
console writing to a file or a pipe is 80 columns wide, so a metrics table in a log lost its digits.
:func:`print_table` prints a table at its full width whenever the console is narrower (a terminal wraps the
longer lines; a file keeps them)."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` with no cell cut short, widening ``console`` for it if needed."""
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    width = console.width
    console.width = max(width, needed)
    try:
        console.print(table)
    finally:
        console.width = width
