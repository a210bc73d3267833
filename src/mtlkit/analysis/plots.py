"""Plots of runs and benches (matplotlib, Agg backend, PNG files in ``<dir>/plots/``).

Each plot is a function of plain data (dicts, lists, :class:`Point`) that writes one PNG, so it can be drawn and
tested without a run folder; :func:`run_plots` and :func:`bench_plots` read a folder's files (see the agreed
formats in the module docs of :mod:`mtlkit.analysis`) and draw whatever the folder has data for.

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas directly (never ``pyplot``, never
``matplotlib.use``): no global state is touched, so importing this module in a notebook changes nothing there,
and it is safe in worker processes.

Run plots (``run_plots``):
    ``curves.png``        training loss per task and every validation metric per task (history.csv)
    ``conflicts.png``     pairwise cosine and per-task norm of the task gradients (diagnostics/conflicts.csv)
    ``expert_usage.png``  mean gate weight per gate and expert (diagnostics/expert_usage.json)
    ``affinity.png``      the task-affinity matrix (diagnostics/affinity.json)
Bench plots (``bench_plots``):
    ``pareto_<a>__<b>.png``  test metric of task a against task b, one point per model/balancer/family
    ``task_bars.png``        per-task test metric, mean +- std over seeds, the single-task baseline as a line
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from mtlkit.errors import MtlkitError

#: At most this many Pareto scatters (task pairs) for a bench; the report says when pairs were left out.
MAX_PARETO_PAIRS = 6
#: Resolution of every PNG.
DPI = 100
#: results.csv statuses of a finished run; any other status is listed as failed in the report.
SUCCESS_STATUSES = frozenset({"ok", "done", "cached"})

_VERDICT_COLOURS = {"better": "#2e7d32", "worse": "#c62828", "no change": "#9e9e9e"}


@dataclass(frozen=True)
class Point:
    """One method in a Pareto scatter: mean metric of two tasks and their std over seeds."""

    label: str
    x: float
    y: float
    x_err: float = 0.0
    y_err: float = 0.0


# ---------------------------------------------------------------------------------------------- helpers
def _task_colour(i: int) -> Any:
    return matplotlib.colormaps["tab10"](i % 10)


def _save(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=DPI, format="png")
    return out


def _safe(name: str) -> str:
    """A task name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = 2 if n == 4 else min(n, max_cols)
    return math.ceil(n / cols), cols


# ----------------------------------------------------------------------------------------- run plots
def plot_curves(
    history: Mapping[str, Sequence[float]],
    tasks: Sequence[str],
    out: Path,
    best_epoch: int | None = None,
) -> Path:
    """Training loss per task and each validation metric per task (and their mean, dashed) against the epoch.

    ``history`` maps the columns of history.csv (``epoch``, ``loss_<task>``, ``valid_<task>_<metric>``,
    ``valid_mean_<metric>``) to their values; missing columns are left out of the plot.
    """
    epochs = list(history["epoch"])
    metrics = _valid_metrics(history.keys(), tasks)
    panels = 1 + len(metrics)
    rows, cols = _grid(panels)
    fig = Figure(figsize=(4.4 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    marker = "o" if len(epochs) <= 30 else None

    def draw(ax: Any, title: str, columns: list[tuple[str, str, int | None]]) -> None:
        for column, label, colour_index in columns:
            if column not in history:
                continue
            if colour_index is None:
                ax.plot(epochs, history[column], "k--", marker=marker, ms=3, label=label)
            else:
                ax.plot(
                    epochs,
                    history[column],
                    color=_task_colour(colour_index),
                    marker=marker,
                    ms=3,
                    label=label,
                )
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", ls=":", lw=1, label=f"best epoch {best_epoch}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")

    draw(axes[0], "training loss", [(f"loss_{t}", t, i) for i, t in enumerate(tasks)])
    for ax, metric in zip(axes[1:], metrics, strict=False):
        columns: list[tuple[str, str, int | None]] = [
            (f"valid_{t}_{metric}", t, i) for i, t in enumerate(tasks)
        ]
        columns.append((f"valid_mean_{metric}", "mean", None))
        draw(ax, f"validation {metric}", columns)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return _save(fig, out)


def _valid_metrics(columns: Any, tasks: Sequence[str]) -> list[str]:
    """The metric names of the ``valid_<task>_<metric>`` columns, in column order."""
    metrics: list[str] = []
    prefixes = sorted((f"valid_{t}_" for t in [*tasks, "mean"]), key=len, reverse=True)
    for column in columns:
        for prefix in prefixes:
            if column.startswith(prefix):
                metric = column[len(prefix) :]
                if metric and metric not in metrics:
                    metrics.append(metric)
                break
    return metrics


def plot_conflicts(
    steps: Sequence[float],
    cosines: Mapping[str, Sequence[float]],
    norms: Mapping[str, Sequence[float]],
    out: Path,
) -> Path:
    """Pairwise cosine of the task gradients (left; below 0 = conflict) and per-task gradient norm (right).

    ``cosines`` maps a pair label (``"a / b"``) to one value per step, ``norms`` a task to one value per step.
    """
    panels = 2 if cosines else 1
    fig = Figure(figsize=(5.0 * panels, 3.5), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False).ravel()
    marker = "o" if len(steps) <= 30 else None
    if cosines:
        ax = axes[0]
        for i, (pair, values) in enumerate(cosines.items()):
            ax.plot(steps, values, color=_task_colour(i), marker=marker, ms=3, lw=1, label=pair)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title("cosine of task gradients (shared parameters)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    ax = axes[-1]
    for i, (task, values) in enumerate(norms.items()):
        ax.plot(steps, values, color=_task_colour(i), marker=marker, ms=3, lw=1, label=task)
    positive = _finite([v for values in norms.values() for v in values])
    if positive and min(positive) > 0 and max(positive) / min(positive) > 20:
        ax.set_yscale("log")
    ax.set_title("gradient norm per task")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out)


def _annotate(ax: Any, matrix: np.ndarray, image: Any, fmt: str) -> None:
    """Write each finite cell's value in the cell, black or white for contrast."""
    for (r, c), value in np.ndenumerate(matrix):
        if not math.isfinite(value):
            ax.text(c, r, "—", ha="center", va="center", color="0.4", fontsize="small")
            continue
        red, green, blue, _ = image.cmap(image.norm(value))
        light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
        ax.text(
            c, r, format(value, fmt), ha="center", va="center", fontsize="small", color="k" if light else "w"
        )


def plot_gate_heatmap(gates: Mapping[str, Sequence[float]], out: Path) -> Path:
    """Mean gate weight per gate (rows) and expert (columns), values written in the cells.

    Gates with fewer experts than the widest gate are padded with empty cells (shown as "—").
    """
    if not gates:
        raise MtlkitError("no gates to plot")
    width = max(len(w) for w in gates.values())
    matrix = np.full((len(gates), width), np.nan)
    for r, weights in enumerate(gates.values()):
        matrix[r, : len(weights)] = weights
    fig = Figure(
        figsize=(max(4.0, 0.7 * width + 2.5), max(2.2, 0.55 * len(gates) + 1.4)), layout="constrained"
    )
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    finite = matrix[np.isfinite(matrix)]
    image = ax.imshow(
        np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=max(float(finite.max()), 1e-12), aspect="auto"
    )
    _annotate(ax, matrix, image, ".2f")
    ax.set_xticks(range(width), [str(e) for e in range(width)])
    ax.set_yticks(range(len(gates)), list(gates))
    ax.set_xlabel("expert")
    ax.set_ylabel("gate")
    ax.set_title("mean gate weight (validation set)")
    fig.colorbar(image, ax=ax, shrink=0.9)
    return _save(fig, out)


def plot_affinity(tasks: Sequence[str], matrix: Sequence[Sequence[float]], out: Path) -> Path:
    """The task-affinity matrix: row i = a step on task i alone, column j = the relative change of task j's loss
    (positive = the step on i helped j; Fifty et al. 2021). Diverging colours centred at 0."""
    values = np.asarray(matrix, dtype=float)
    n = len(tasks)
    if values.shape != (n, n):
        raise MtlkitError(
            f"the affinity matrix must be {n} x {n} for tasks {list(tasks)}, got shape {values.shape}"
        )
    finite = values[np.isfinite(values)]
    limit = max(float(np.abs(finite).max()) if finite.size else 0.0, 1e-12)
    fig = Figure(figsize=(max(3.8, 0.9 * n + 2.6), max(3.0, 0.8 * n + 1.8)), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit)
    _annotate(ax, values, image, ".3g")
    ax.set_xticks(range(n), list(tasks), rotation=30, ha="right")
    ax.set_yticks(range(n), list(tasks))
    ax.set_xlabel("affinity onto task")
    ax.set_ylabel("step on task")
    ax.set_title("task affinity (lookahead)")
    fig.colorbar(image, ax=ax, shrink=0.9)
    return _save(fig, out)


# --------------------------------------------------------------------------------------- bench plots
def pareto_front(points: Sequence[Point], x_higher: bool = True, y_higher: bool = True) -> list[bool]:
    """Which points are non-dominated on their means: no other point is at least as good on both tasks and
    strictly better on one (the direction of each task given by ``*_higher``)."""
    sx = 1.0 if x_higher else -1.0
    sy = 1.0 if y_higher else -1.0
    keys = [(sx * p.x, sy * p.y) for p in points]
    front = []
    for i, (xi, yi) in enumerate(keys):
        dominated = any(
            xj >= xi and yj >= yi and (xj > xi or yj > yi) for j, (xj, yj) in enumerate(keys) if j != i
        )
        front.append(not dominated and math.isfinite(xi) and math.isfinite(yi))
    return front


def plot_pareto(
    points: Sequence[Point],
    x_label: str,
    y_label: str,
    out: Path,
    baseline: Point | None = None,
    x_higher: bool = True,
    y_higher: bool = True,
) -> Path:
    """One task's metric (x) against another's (y): each method a point with error bars (std over seeds),
    the non-dominated methods highlighted and joined, the single-task baseline a star with dotted cross-hairs."""
    fig = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = fig.subplots()
    front = pareto_front(points, x_higher, y_higher)
    for point, on_front in zip(points, front, strict=True):
        ax.errorbar(
            point.x,
            point.y,
            xerr=point.x_err,
            yerr=point.y_err,
            fmt="o",
            ms=7 if on_front else 5,
            color="#d84315" if on_front else "#546e7a",
            ecolor="0.6",
            capsize=2,
            zorder=3,
        )
        ax.annotate(
            point.label, (point.x, point.y), xytext=(4, 4), textcoords="offset points", fontsize="x-small"
        )
    front_points = sorted((p for p, f in zip(points, front, strict=True) if f), key=lambda p: p.x)
    if len(front_points) > 1:
        ax.plot(
            [p.x for p in front_points], [p.y for p in front_points], "--", color="#d84315", lw=1, zorder=2
        )
    if baseline is not None:
        ax.errorbar(
            baseline.x,
            baseline.y,
            xerr=baseline.x_err,
            yerr=baseline.y_err,
            fmt="*",
            ms=13,
            color="k",
            ecolor="0.3",
            capsize=2,
            zorder=4,
        )
        ax.axvline(baseline.x, color="k", ls=":", lw=0.8)
        ax.axhline(baseline.y, color="k", ls=":", lw=0.8)
    handles = [
        Line2D([], [], marker="o", ls="", color="#d84315", label="non-dominated"),
        Line2D([], [], marker="o", ls="", color="#546e7a", label="dominated"),
    ]
    if baseline is not None:
        handles.append(Line2D([], [], marker="*", ms=10, ls="", color="k", label=baseline.label))
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_xlabel(f"{x_label} ({'higher' if x_higher else 'lower'} is better)")
    ax.set_ylabel(f"{y_label} ({'higher' if y_higher else 'lower'} is better)")
    ax.set_title("test metrics, mean ± std over seeds")
    ax.grid(alpha=0.3)
    return _save(fig, out)


@dataclass(frozen=True)
class Bar:
    """One method's result on one task: mean, std over seeds, the seeds' values, and its verdict."""

    label: str
    mean: float
    std: float = 0.0
    seeds: tuple[float, ...] = ()
    verdict: str | None = None


def plot_task_bars(
    tasks: Sequence[str],
    bars: Mapping[str, Sequence[Bar]],
    out: Path,
    metrics: Mapping[str, str] | None = None,
    baseline: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Per task, one bar per method (mean, error bar = std over seeds, dots = single seeds), coloured by its
    verdict against the single-task baseline, which is a line (mean) with a band (+- std).

    The y axis is zoomed to the data (metric differences between methods are small), so it rarely starts at 0.
    """
    rows, cols = _grid(len(tasks), max_cols=2)
    width = max(len(bars.get(t, ())) for t in tasks) if tasks else 1
    fig = Figure(figsize=(max(5.0, 0.55 * width + 2.0) * cols, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, task in zip(axes, tasks, strict=False):
        task_bars = list(bars.get(task, ()))
        x = np.arange(len(task_bars))
        colours = [_VERDICT_COLOURS.get(b.verdict or "", "#5c6bc0") for b in task_bars]
        means = [b.mean for b in task_bars]
        ax.bar(x, means, yerr=[b.std for b in task_bars], color=colours, capsize=3, ecolor="0.2", zorder=2)
        values = list(means) + [b.mean + s * b.std for b in task_bars for s in (-1, 1)]
        for i, b in enumerate(task_bars):
            if b.seeds:
                ax.plot([i] * len(b.seeds), b.seeds, "k.", ms=3, zorder=3)
                values.extend(b.seeds)
        if baseline is not None and task in baseline:
            mean, std = baseline[task]
            ax.axhline(mean, color="k", lw=1.2, label="single-task baseline", zorder=4)
            if std > 0:
                ax.axhspan(mean - std, mean + std, color="k", alpha=0.08, zorder=1)
            values.extend([mean - std, mean + std])
        finite = _finite(values)
        if finite:
            low, high = min(finite), max(finite)
            margin = (high - low) * 0.15 or abs(high) * 0.05 or 0.05
            ax.set_ylim(low - margin, high + margin)
        ax.set_xticks(x, [b.label for b in task_bars], rotation=40, ha="right", fontsize="small")
        metric = (metrics or {}).get(task, "metric")
        ax.set_title(f"{task}: test {metric}")
        ax.grid(axis="y", alpha=0.3)
        handles: list[Any] = [
            Patch(color=c, label=v)
            for v, c in _VERDICT_COLOURS.items()
            if any(b.verdict == v for b in task_bars)
        ]
        if baseline is not None and task in baseline:
            handles.append(Line2D([], [], color="k", label="single-task baseline"))
        if handles:
            ax.legend(handles=handles, fontsize="x-small", loc="best")
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    return _save(fig, out)


# ------------------------------------------------------------------------------------------ readers
def read_csv_columns(path: Path, required: Sequence[str] = (), numeric: bool = True) -> dict[str, list[Any]]:
    """The columns of a CSV file (header row first) as lists; numbers as floats when ``numeric``.

    Raises MtlkitError naming the file when it is missing, empty, ragged, lacks a ``required`` column or (when
    ``numeric``) holds a value that is not a number.
    """
    if not path.is_file():
        raise MtlkitError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MtlkitError(f"{path}: cannot read it as CSV ({exc})") from exc
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise MtlkitError(f"{path}: no data rows (a header and at least one row are needed)")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise MtlkitError(f"{path}: missing column(s) {missing}; the header is {header}")
    columns: dict[str, list[Any]] = {h: [] for h in header}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise MtlkitError(f"{path}: line {number} has {len(row)} fields, the header has {len(header)}")
        for name, cell in zip(header, row, strict=True):
            if numeric:
                try:
                    columns[name].append(float(cell) if cell.strip() else math.nan)
                except ValueError:
                    raise MtlkitError(
                        f"{path}: line {number}, column {name!r}: {cell!r} is not a number"
                    ) from None
            else:
                columns[name].append(cell)
    return columns


def read_json(path: Path) -> Any:
    """A JSON file's content; MtlkitError naming the file when it is missing or not valid JSON."""
    if not path.is_file():
        raise MtlkitError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MtlkitError(f"{path}: not valid JSON ({exc})") from exc


def history_tasks(history: Mapping[str, Any], path: Path) -> list[str]:
    """The tasks of a history.csv, from its ``loss_<task>`` columns (in order)."""
    tasks = [c[len("loss_") :] for c in history if c.startswith("loss_") and len(c) > len("loss_")]
    if not tasks:
        raise MtlkitError(f"{path}: no loss_<task> columns; is this a history.csv written by mtlkit train?")
    return tasks


def read_conflicts(path: Path) -> tuple[list[float], dict[str, list[float]], dict[str, list[float]]]:
    """steps, cosines (pair label ``"a / b"`` -> values) and norms (task -> values) of a conflicts.csv."""
    table = read_csv_columns(path, required=["step"])
    norms = {c[len("norm_") :]: table[c] for c in table if c.startswith("norm_")}
    if not norms:
        raise MtlkitError(
            f"{path}: no norm_<task> columns (expected step, epoch, norm_<task>..., cos_<a>__<b>...)"
        )
    cosines = {c[len("cos_") :].replace("__", " / ", 1): table[c] for c in table if c.startswith("cos_")}
    return table["step"], cosines, norms


def read_expert_usage(path: Path) -> dict[str, list[float]]:
    """The ``gates`` of an expert_usage.json: gate name -> mean weight per expert."""
    data = read_json(path)
    gates = data.get("gates") if isinstance(data, dict) else None
    if not isinstance(gates, dict) or not gates:
        raise MtlkitError(
            f"{path}: expected {{'split': ..., 'gates': {{gate name: [weights]}}}} with >= 1 gate"
        )
    result: dict[str, list[float]] = {}
    for name, weights in gates.items():
        if (
            not isinstance(weights, list)
            or not weights
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights)
        ):
            raise MtlkitError(
                f"{path}: gate {name!r} must be a non-empty list of numbers, got {weights!r:.80}"
            )
        result[str(name)] = [float(w) for w in weights]
    return result


def read_affinity(path: Path) -> tuple[list[str], list[list[float]]]:
    """tasks and matrix of an affinity.json (``matrix[i][j]`` = affinity of task i onto task j)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise MtlkitError(f"{path}: expected an object with 'tasks' and 'matrix'")
    tasks, matrix = data.get("tasks"), data.get("matrix")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise MtlkitError(f"{path}: 'tasks' must be a non-empty list of task names, got {tasks!r:.80}")
    n = len(tasks)
    if (
        not isinstance(matrix, list)
        or len(matrix) != n
        or not all(isinstance(row, list) and len(row) == n for row in matrix)
    ):
        raise MtlkitError(f"{path}: 'matrix' must be a {n} x {n} list of lists (one row per task)")
    try:
        values = [[math.nan if v is None else float(v) for v in row] for row in matrix]
    except (TypeError, ValueError) as exc:
        raise MtlkitError(f"{path}: 'matrix' holds a value that is not a number ({exc})") from exc
    return list(tasks), values


def read_summary(path: Path) -> dict[str, Any]:
    """A bench's summary.json, checked for the keys the plots and the report use."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise MtlkitError(f"{path}: expected a JSON object (the bench summary)")
    for key, kind in (("tasks", list), ("metrics", dict), ("higher_is_better", dict), ("rows", list)):
        if not isinstance(data.get(key), kind):
            raise MtlkitError(f"{path}: key {key!r} missing or not a {kind.__name__}")
    tasks = data["tasks"]
    for task in tasks:
        if task not in data["metrics"] or task not in data["higher_is_better"]:
            raise MtlkitError(f"{path}: task {task!r} has no entry in 'metrics' or 'higher_is_better'")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("per_task"), dict):
            raise MtlkitError(f"{path}: rows[{i}] must be an object with 'per_task'")
        for task in tasks:
            cell = row["per_task"].get(task)
            if not isinstance(cell, dict) or not isinstance(cell.get("mean"), (int, float, type(None))):
                raise MtlkitError(
                    f"{path}: rows[{i}].per_task[{task!r}] must be an object with a numeric 'mean'"
                )
    baseline = data.get("baseline")
    if baseline is not None and not (
        isinstance(baseline, dict) and isinstance(baseline.get("per_task"), dict)
    ):
        raise MtlkitError(f"{path}: 'baseline' must be null or an object with 'name' and 'per_task'")
    return data


def read_results(path: Path) -> dict[str, list[str]]:
    """A bench's results.csv as text columns (model, balancer, seed, status are required)."""
    return read_csv_columns(path, required=["model", "balancer", "seed", "status"], numeric=False)


def row_label(row: Mapping[str, Any]) -> str:
    """``model / balancer`` (plus ``/ family`` when it is not the default ``mtl``) of a summary or results row."""
    parts = [str(row.get("model", "?")), str(row.get("balancer", "?"))]
    family = row.get("family")
    if family and family != "mtl":
        parts.append(str(family))
    return " / ".join(parts)


def pareto_pairs(tasks: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
    """The task pairs that get a Pareto scatter (at most MAX_PARETO_PAIRS) and how many were left out."""
    pairs = list(itertools.combinations(tasks, 2))
    return pairs[:MAX_PARETO_PAIRS], max(0, len(pairs) - MAX_PARETO_PAIRS)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


# ------------------------------------------------------------------------------------- entry points
def run_plots(run_dir: Path) -> list[Path]:
    """The plots a run folder has data for, written into ``run_dir/plots/``; returns their paths.

    history.csv is required (MtlkitError when missing or malformed); the diagnostics plots are drawn when their
    files exist, and a malformed diagnostics file is an MtlkitError naming it.
    """
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    written: list[Path] = []
    history_path = run_dir / "history.csv"
    history = read_csv_columns(history_path, required=["epoch"])
    tasks = history_tasks(history, history_path)
    best_epoch = None
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = read_json(metrics_path)
        if isinstance(metrics, dict) and isinstance(metrics.get("best_epoch"), int):
            best_epoch = metrics["best_epoch"]
    written.append(plot_curves(history, tasks, plots / "curves.png", best_epoch=best_epoch))
    diagnostics = run_dir / "diagnostics"
    if (diagnostics / "conflicts.csv").is_file():
        steps, cosines, norms = read_conflicts(diagnostics / "conflicts.csv")
        written.append(plot_conflicts(steps, cosines, norms, plots / "conflicts.png"))
    if (diagnostics / "expert_usage.json").is_file():
        gates = read_expert_usage(diagnostics / "expert_usage.json")
        written.append(plot_gate_heatmap(gates, plots / "expert_usage.png"))
    if (diagnostics / "affinity.json").is_file():
        affinity_tasks, matrix = read_affinity(diagnostics / "affinity.json")
        written.append(plot_affinity(affinity_tasks, matrix, plots / "affinity.png"))
    return written


def bench_plots(bench_dir: Path) -> list[Path]:
    """The plots of a bench folder, written into ``bench_dir/plots/``; returns their paths.

    From summary.json: one Pareto scatter per task pair (at most MAX_PARETO_PAIRS; none for a single task) and
    the per-task bars; results.csv, when present, adds each seed's value to the bars.
    """
    bench_dir = Path(bench_dir)
    plots = bench_dir / "plots"
    summary_path = bench_dir / "summary.json"
    summary = read_summary(summary_path)
    tasks: list[str] = list(summary["tasks"])
    metrics: dict[str, str] = summary["metrics"]
    higher: dict[str, bool] = summary["higher_is_better"]
    rows: list[dict[str, Any]] = summary["rows"]
    base = summary.get("baseline") or None
    base_per_task: dict[str, Any] = base["per_task"] if base else {}
    base_name = str(base.get("name") or "single-task") if base else "single-task"
    written: list[Path] = []

    def cell(source: Mapping[str, Any], task: str) -> tuple[float, float]:
        entry = source.get(task) or {}
        std = _num(entry.get("std"))
        return _num(entry.get("mean")), std if math.isfinite(std) else 0.0

    pairs, _left_out = pareto_pairs(tasks)
    for a, b in pairs:
        points = []
        for row in rows:
            (xa, sa), (yb, sb) = cell(row["per_task"], a), cell(row["per_task"], b)
            points.append(Point(row_label(row), xa, yb, sa, sb))
        baseline_point = None
        if a in base_per_task and b in base_per_task:
            (xa, sa), (yb, sb) = cell(base_per_task, a), cell(base_per_task, b)
            baseline_point = Point(f"baseline ({base_name})", xa, yb, sa, sb)
        written.append(
            plot_pareto(
                points,
                f"{a} test {metrics[a]}",
                f"{b} test {metrics[b]}",
                plots / f"pareto_{_safe(a)}__{_safe(b)}.png",
                baseline=baseline_point,
                x_higher=bool(higher[a]),
                y_higher=bool(higher[b]),
            )
        )

    seeds = (
        _seed_values(bench_dir / "results.csv", tasks, metrics)
        if (bench_dir / "results.csv").is_file()
        else {}
    )
    bars: dict[str, list[Bar]] = {}
    for task in tasks:
        bars[task] = []
        for row in rows:
            mean, std = cell(row["per_task"], task)
            key = (str(row.get("model")), str(row.get("balancer")), str(row.get("family") or "mtl"))
            verdict = (row["per_task"].get(task) or {}).get("verdict")
            bars[task].append(
                Bar(row_label(row), mean, std, tuple(seeds.get((*key, task), ())), verdict and str(verdict))
            )
    baseline_lines = {t: cell(base_per_task, t) for t in tasks if t in base_per_task}
    written.append(
        plot_task_bars(tasks, bars, plots / "task_bars.png", metrics=metrics, baseline=baseline_lines)
    )
    return written


def _seed_values(
    path: Path, tasks: Sequence[str], metrics: Mapping[str, str]
) -> dict[tuple[str, str, str, str], list[float]]:
    """(model, balancer, family, task) -> the test metric of each finished seed in results.csv."""
    results = read_results(path)
    n = len(results["model"])
    values: dict[tuple[str, str, str, str], list[float]] = {}
    families = results.get("family", ["mtl"] * n)
    for task in tasks:
        column = f"test_{task}_{metrics[task]}"
        if column not in results:
            continue
        for i in range(n):
            if results["status"][i] not in SUCCESS_STATUSES:
                continue
            try:
                value = float(results[column][i])
            except ValueError:
                continue
            if math.isfinite(value):
                key = (results["model"][i], results["balancer"][i], families[i] or "mtl", task)
                values.setdefault(key, []).append(value)
    return values
