"""print_table and the CLI's metrics table: no value is cut short on a narrow console (a file or pipe is 80
columns wide), and the console keeps its width afterwards."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from mtlkit.cli import print_metrics
from mtlkit.console import print_table


def _console(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, highlight=False, color_system=None), out


def test_a_table_wider_than_the_console_is_printed_whole() -> None:
    table = Table()
    cells = [f"{k}.123456789" for k in range(10)]
    for k in range(10):
        table.add_column(f"column {k}")
    table.add_row(*cells)
    console, out = _console(40)
    print_table(console, table)
    text = out.getvalue()
    assert "…" not in text
    assert all(cell in text for cell in cells)
    assert console.width == 40
    plain, out = _console(40)
    plain.print(table)
    assert "…" in out.getvalue()  # the premise: rich cuts cells short at this width


def test_metrics_table_rows_are_parts_and_tasks() -> None:
    results = {
        "valid": {
            "click": {"auc": 0.958312, "logloss": 0.667421},
            "mean": {"auc": 0.5347, "logloss": 0.5254},
        },
        "test": {"click": {"auc": 0.52, "logloss": 0.6936}, "conversion": {"auc": 0.75}},
    }
    console, out = _console(30)
    print_metrics(console, results)
    lines = out.getvalue().splitlines()
    header = next(line for line in lines if "task" in line)
    assert header.split("┃")[1:-1] == [" part  ", " task       ", "    auc ", " logloss "]
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert rows == [
        ["valid", "click", "0.9583", "0.6674"],
        ["valid", "mean", "0.5347", "0.5254"],
        ["test", "click", "0.5200", "0.6936"],
        ["test", "conversion", "0.7500", "-"],
    ]
