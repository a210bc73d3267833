"""Plots of runs and benches (matplotlib, Agg backend, PNG files in ``<dir>/plots/``)."""

from __future__ import annotations

from pathlib import Path


def run_plots(run_dir: Path) -> list[Path]:
    """The plots a run folder has data for, written into ``run_dir/plots/``; returns their paths."""
    return []


def bench_plots(bench_dir: Path) -> list[Path]:
    """The plots of a bench folder (Pareto scatters, per-task bars), written into ``bench_dir/plots/``."""
    return []
