"""``mtlkit report DIR [--out FILE [--overwrite]]``: one self-contained HTML report and a Markdown summary of a run or bench.

A run folder holds metrics.json and history.csv (``mtlkit train``); a bench folder holds results.csv and
summary.json (``mtlkit bench``). See :mod:`mtlkit.analysis.report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    """Add the ``report`` subcommand to the ``mtlkit`` subparsers."""
    parser = commands.add_parser(
        "report",
        help="an HTML report (images embedded) and a Markdown summary of a run or bench folder",
        description="Write DIR/report.html (self-contained: images embedded, no external files) and "
        "DIR/report.md (images as plots/*.png) for a run folder (metrics.json + history.csv) or a bench "
        "folder (results.csv + summary.json). The plots are written into DIR/plots/.",
    )
    parser.add_argument("dir", help="a run folder (mtlkit train) or a bench folder (mtlkit bench)")
    parser.add_argument(
        "--out",
        help="where to write the HTML report (default: DIR/report.html, replaced by every report; an --out file "
        "that exists needs --overwrite)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the --out file when it exists")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from mtlkit.analysis.report import write_report

    files = write_report(Path(args.dir), Path(args.out) if args.out else None, overwrite=args.overwrite)
    print(f"{files.kind} report: {files.html}")
    print(f"summary: {files.markdown}")
    print(f"plots: {len(files.plots)} in {Path(args.dir) / 'plots'}")
    return 0
