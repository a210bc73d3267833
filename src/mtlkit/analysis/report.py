"""Reports of a run or a bench folder: one self-contained HTML file and a Markdown summary.

The report is first built as a small document model (:class:`Document` of :class:`Section` s holding
:class:`Text`, :class:`Table`, :class:`Image` and :class:`Code` blocks) and then rendered twice, so the HTML and the
Markdown always say the same thing:

* HTML (``DIR/report.html`` or ``--out``): every image embedded as a ``data:image/png;base64`` URI, an inline
  stylesheet, no scripts, no external CSS, JS, fonts or links; a Content-Security-Policy meta tag
  (``default-src 'none'; img-src data:; style-src 'unsafe-inline'``) makes the browser refuse anything external,
  so a report that displays correctly is self-contained. All text is escaped with :func:`html.escape`.
* Markdown (``DIR/report.md``): the same tables, images referenced as relative ``plots/*.png`` paths.

The plots come from :mod:`mtlkit.analysis.plots` and are (re)written into ``DIR/plots/``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mtlkit.analysis.plots import (
    SUCCESS_STATUSES,
    bench_plots,
    pareto_pairs,
    read_conflicts,
    read_json,
    read_results,
    read_summary,
    run_plots,
)
from mtlkit.errors import MtlkitError, refuse_to_replace

Kind = Literal["run", "bench"]

#: The files that make a folder a run or a bench folder.
RUN_FILES = ("metrics.json", "history.csv")
BENCH_FILES = ("results.csv", "summary.json")


# ------------------------------------------------------------------------------------- document model
@dataclass(frozen=True)
class Cell:
    """A table cell with a style class (``num``, ``better``, ``worse``, ...) used by the HTML renderer."""

    text: str
    css: str = ""


@dataclass
class Text:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str | Cell]]


@dataclass
class Image:
    path: Path
    caption: str


@dataclass
class Code:
    text: str


@dataclass
class Items:
    items: list[str]


Block = Text | Table | Image | Code | Items


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    kind: Kind
    html: Path
    markdown: Path
    plots: tuple[Path, ...]


# --------------------------------------------------------------------------------------- entry point
def detect_kind(folder: Path) -> Kind:
    """``"run"`` (metrics.json + history.csv) or ``"bench"`` (results.csv + summary.json); MtlkitError otherwise."""
    if not folder.is_dir():
        raise MtlkitError(
            f"{folder}: not a folder; give a run folder (mtlkit train) or a bench folder (mtlkit bench)"
        )
    if all((folder / name).is_file() for name in BENCH_FILES):
        return "bench"
    if all((folder / name).is_file() for name in RUN_FILES):
        return "run"
    present = sorted(p.name for p in folder.iterdir())[:8]
    raise MtlkitError(
        f"{folder}: neither a run folder ({' + '.join(RUN_FILES)}) nor a bench folder ({' + '.join(BENCH_FILES)});"
        f" it holds {present}"
    )


def write_report(folder: Path, out: Path | None = None, overwrite: bool = False) -> ReportFiles:
    """Write the HTML report (``out``, default ``folder/report.html``) and ``folder/report.md`` of a run or
    bench folder; the plots are drawn into ``folder/plots/`` first. The files in ``folder`` are replaced by
    every report; an ``out`` file that exists is an error unless ``overwrite`` (it may be anything)."""
    folder = Path(folder)
    if out is not None and not Path(out).is_dir():  # a folder is its own error below
        refuse_to_replace(Path(out), "the report", overwrite)
    kind = detect_kind(folder)
    if kind == "run":
        plots = run_plots(folder)
        document = run_document(folder, plots)
    else:
        plots = bench_plots(folder)
        document = bench_document(folder, plots)
    html_path = Path(out) if out is not None else folder / "report.html"
    if html_path.is_dir():
        raise MtlkitError(
            f"--out {html_path} is a folder; give a file name such as {html_path / 'report.html'}"
        )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(document), encoding="utf-8")
    markdown_path = folder / "report.md"
    markdown_path.write_text(render_markdown(document, folder), encoding="utf-8")
    return ReportFiles(kind, html_path, markdown_path, tuple(plots))


# ------------------------------------------------------------------------------------------ formats
def fmt(value: Any, digits: int = 4, signed: bool = False) -> str:
    """A number with ``digits`` decimals (``+`` sign when ``signed``); "—" for None, NaN or a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—" if value is None or isinstance(value, (int, float)) else str(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _num(text: str, css: str = "") -> Cell:
    return Cell(text, ("num " + css).strip())


def _params(params: Any) -> str:
    if not isinstance(params, Mapping) or not params:
        return ""
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _named(section: Mapping[str, Any], key: str) -> str:
    """``name (k=v, ...)`` of a config section, without the parentheses when it has no parameters."""
    params = _params(section.get("params"))
    return f"{section.get(key, '?')} ({params})" if params else str(section.get(key, "?"))


# ---------------------------------------------------------------------------------------- run report
def _read_metrics(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("valid"), dict):
        raise MtlkitError(
            f"{path}: expected {{'valid': {{task: {{metric: value}}}}, 'test': ..., 'best_epoch': n}}"
        )
    for split in ("valid", "test"):
        part = data.get(split)
        if part is None:
            continue
        if not isinstance(part, dict) or not all(isinstance(v, dict) for v in part.values()):
            raise MtlkitError(f"{path}: {split!r} must map each task (and 'mean') to {{metric: value}}")
    return data


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise MtlkitError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise MtlkitError(f"{path}: expected a mapping (the run configuration), got {type(data).__name__}")
    return data


def run_document(folder: Path, plots: Sequence[Path]) -> Document:
    """The report of a run folder: configuration, metrics, curves and diagnostics."""
    metrics = _read_metrics(folder / "metrics.json")
    config = _read_config(folder / "config.yaml")
    note = str(metrics.get("note") or "")
    sections: list[Section] = []

    def section(name: str) -> dict[str, Any]:
        value = config.get(name)
        return value if isinstance(value, dict) else {}

    data, model, balancer, training = (
        section("data"),
        section("model"),
        section("balancer"),
        section("training"),
    )
    rows: list[list[str | Cell]] = []
    if config:
        rows = [
            ["data", _named(data, "dataset")],
            ["model", _named(model, "name")],
            ["balancer", _named(balancer, "name")],
            ["family", str(section("family").get("name", "mtl"))],
            [
                "training",
                ", ".join(
                    f"{k}={training[k]}"
                    for k in (
                        "epochs",
                        "batch_size",
                        "optimizer",
                        "lr",
                        "weight_decay",
                        "schedule",
                        "grad_clip",
                    )
                    if training.get(k) is not None
                ),
            ],
            ["seed", str(config.get("seed", "?"))],
        ]
        early = training.get("early_stopping")
        if isinstance(early, dict) and early.get("monitor"):
            rows.append(["early stopping", _params(early)])
        diagnostics = {k: v for k, v in section("diagnostics").items() if v not in (None, False)}
        if diagnostics:
            rows.append(["diagnostics", _params(diagnostics)])
    configuration = Section("Configuration")
    if note:
        configuration.blocks.append(Text(f"Data: {note}"))
    if rows:
        configuration.blocks.append(Table(["setting", "value"], rows))
    else:
        configuration.blocks.append(Text("config.yaml is missing: no configuration to show."))
    sections.append(configuration)

    results = Section("Metrics")
    best, epochs = metrics.get("best_epoch"), metrics.get("epochs")
    results.blocks.append(
        Text(
            f"Best epoch {best} of {epochs} (valid metrics are those of the best epoch; test metrics of its model)."
        )
    )
    results.blocks.append(_metrics_table(metrics))
    sections.append(results)

    by_name = {p.name: p for p in plots}
    if "curves.png" in by_name:
        sections.append(
            Section(
                "Training curves",
                [Image(by_name["curves.png"], "Training loss per task and validation metrics per epoch.")],
            )
        )
    diagnostics_section = _diagnostics_section(folder, by_name)
    if diagnostics_section.blocks:
        sections.append(diagnostics_section)
    if (folder / "fusion.json").is_file():
        fusion = read_json(folder / "fusion.json")
        sections.append(Section("Fusion", [Code(json.dumps(fusion, indent=2, sort_keys=True))]))
    return Document(
        title=f"Run report: {folder.resolve().name}",
        subtitle=f"{model.get('name', 'run')} / {balancer.get('name', '?')} — {folder}",
        sections=sections,
    )


def _metrics_table(metrics: Mapping[str, Any]) -> Table:
    """Rows = tasks then "mean", columns = valid and test metric."""
    splits = [s for s in ("valid", "test") if isinstance(metrics.get(s), dict)]
    names: list[str] = []
    tasks: list[str] = []
    for split in splits:
        for task, values in metrics[split].items():
            if task not in tasks:
                tasks.append(task)
            for name in values:
                if name not in names:
                    names.append(name)
    tasks = [t for t in tasks if t != "mean"] + (["mean"] if "mean" in tasks else [])
    headers = ["task"] + [f"{split} {name}" for split in splits for name in names]
    rows: list[list[str | Cell]] = []
    for task in tasks:
        row: list[str | Cell] = [Cell(task, "strong" if task == "mean" else "")]
        for split in splits:
            values = metrics[split].get(task, {})
            row.extend(_num(fmt(values.get(name))) for name in names)
        rows.append(row)
    return Table(headers, rows)


def _diagnostics_section(folder: Path, by_name: Mapping[str, Path]) -> Section:
    section = Section("Diagnostics")
    conflicts = folder / "diagnostics" / "conflicts.csv"
    if "conflicts.png" in by_name and conflicts.is_file():
        steps, cosines, _norms = read_conflicts(conflicts)
        section.blocks.append(
            Text(
                f"Gradient conflicts over {len(steps)} measurements: cosine of the task gradients on the shared "
                "parameters (below 0 = the tasks pull the shared parameters apart) and per-task gradient norms."
            )
        )
        rows: list[list[str | Cell]] = []
        for pair, values in cosines.items():
            finite = [v for v in values if math.isfinite(v)]
            if finite:
                negative = sum(v < 0 for v in finite) / len(finite)
                rows.append(
                    [
                        pair,
                        _num(fmt(sum(finite) / len(finite), 3)),
                        _num(f"{negative:.0%}"),
                        _num(fmt(finite[-1], 3)),
                    ]
                )
        if rows:
            section.blocks.append(Table(["pair", "mean cosine", "share < 0", "last"], rows))
        section.blocks.append(Image(by_name["conflicts.png"], "Gradient cosine and norms over training."))
    if "expert_usage.png" in by_name:
        section.blocks.append(
            Image(
                by_name["expert_usage.png"],
                "Mean gate weight per gate (rows) and expert (columns), validation set.",
            )
        )
    if "affinity.png" in by_name:
        section.blocks.append(
            Image(
                by_name["affinity.png"],
                "Task affinity (Fifty et al. 2021): row i = a step on task i alone, column j = relative decrease of "
                "task j's loss; positive = task i helps task j.",
            )
        )
    return section


# -------------------------------------------------------------------------------------- bench report
def bench_document(folder: Path, plots: Sequence[Path]) -> Document:
    """The report of a bench folder: summary table, the seed-noise rule, plots and failed runs."""
    summary = read_summary(folder / "summary.json")
    results = read_results(folder / "results.csv")
    tasks: list[str] = list(summary["tasks"])
    metrics: dict[str, str] = summary["metrics"]
    higher: dict[str, bool] = summary["higher_is_better"]
    sections: list[Section] = []

    n_runs = len(results["model"])
    failed = [i for i in range(n_runs) if results["status"][i] not in SUCCESS_STATUSES]
    overview = Section("Overview")
    task_text = ", ".join(
        f"{t} (test {metrics[t]}, {'higher' if higher[t] else 'lower'} is better)" for t in tasks
    )
    overview.blocks.append(Text(f"Tasks: {task_text}."))
    if summary.get("main_task"):
        overview.blocks.append(Text(f"Main task: {summary['main_task']}."))
    overview.blocks.append(
        Text(
            f"{len(summary['rows'])} configurations, {n_runs} runs in results.csv: {n_runs - len(failed)} finished, "
            f"{len(failed)} failed or unfinished."
        )
    )
    sections.append(overview)

    table_section = Section("Summary")
    table_section.blocks.append(_summary_table(summary))
    table_section.blocks.append(
        Text(
            "Cells: test metric mean ± std over seeds, then the MTL gain against the single-task baseline (PLE "
            "paper eq. 11: MTL minus single-task, sign flipped when lower is better, so positive = better) and "
            "the verdict. Δm: mean relative change over all task metrics in %, positive = better than single-task."
        )
    )
    rule = summary.get("rule")
    if rule:
        table_section.blocks.append(Text(f"Rule for better / worse: {rule}"))
    sections.append(table_section)

    images = Section("Plots")
    for path in plots:
        if path.name.startswith("pareto_"):
            images.blocks.append(
                Image(
                    path,
                    "Test metrics of two tasks, one point per configuration (error bars: std over seeds); "
                    "non-dominated points highlighted; the star is the single-task baseline.",
                )
            )
    _pairs, left_out = pareto_pairs(tasks)
    if left_out:
        images.blocks.append(
            Text(f"{left_out} further task pairs have no Pareto scatter (the first {len(_pairs)} do).")
        )
    for path in plots:
        if path.name == "task_bars.png":
            images.blocks.append(
                Image(
                    path,
                    "Per task: mean ± std over seeds (dots: single seeds), coloured by verdict; the line and "
                    "band are the single-task baseline's mean ± std. The axis is zoomed to the data.",
                )
            )
    sections.append(images)

    if failed:
        extra = [c for c in ("error", "message") if c in results]
        headers = ["model", "balancer", "family", "seed", "status", "run_dir", *extra]
        rows: list[list[str | Cell]] = [
            [results[c][i] if c in results else "" for c in headers[:4]]
            + [Cell(results["status"][i], "worse")]
            + [results[c][i] if c in results else "" for c in headers[5:]]
            for i in failed
        ]
        sections.append(Section("Failed or unfinished runs", [Table(headers, rows)]))
    bench_json = folder / "bench.json"
    if bench_json.is_file():
        sections.append(
            Section("Bench settings (bench.json)", [Code(json.dumps(read_json(bench_json), indent=2))])
        )
    return Document(
        title=f"Bench report: {folder.resolve().name}",
        subtitle=f"{len(tasks)} tasks, {len(summary['rows'])} configurations — {folder}",
        sections=sections,
    )


def _summary_table(summary: Mapping[str, Any]) -> Table:
    tasks: list[str] = list(summary["tasks"])
    metrics: Mapping[str, str] = summary["metrics"]
    rows_in: list[dict[str, Any]] = summary["rows"]
    show_family = any((r.get("family") or "mtl") != "mtl" for r in rows_in)
    headers = ["model", "balancer"] + (["family"] if show_family else []) + ["seeds"]
    for task in tasks:
        headers += [f"{task} {metrics[task]}", f"{task} gain"]
    headers += ["Δm %", "outcome", "s / epoch", "peak MB"]
    rows: list[list[str | Cell]] = []
    baseline = summary.get("baseline")
    if baseline:
        per_task = baseline.get("per_task", {})
        row: list[str | Cell] = [Cell(f"{baseline.get('name', 'single-task')} (baseline)", "strong"), "—"]
        if show_family:
            row.append("—")
        seeds = max((int(c.get("n") or 0) for c in per_task.values() if isinstance(c, dict)), default=0)
        row.append(_num(str(seeds)))
        for task in tasks:
            cell = per_task.get(task) or {}
            row += [_num(f"{fmt(cell.get('mean'))} ± {fmt(cell.get('std'))}"), _num("—")]
        row += [_num("—"), "—", _num("—"), _num("—")]
        rows.append(row)
    for r in rows_in:
        row = [str(r.get("model", "?")), str(r.get("balancer", "?"))]
        if show_family:
            row.append(str(r.get("family") or "mtl"))
        row.append(_num(str(r.get("seeds", "?"))))
        for task in tasks:
            cell = r["per_task"].get(task) or {}
            verdict = str(cell.get("verdict") or "")
            css = {"better": "better", "worse": "worse"}.get(verdict, "")
            row += [
                _num(f"{fmt(cell.get('mean'))} ± {fmt(cell.get('std'))}"),
                _num(f"{fmt(cell.get('gain'), signed=True)} {verdict}".strip(), css),
            ]
        outcome = str(r.get("outcome") or "—")
        row += [
            _num(fmt(r.get("delta_m"), 2, signed=True)),
            Cell(outcome, "outcome-" + outcome.replace(" ", "-")),
            _num(fmt(r.get("seconds_per_epoch"), 2)),
            _num(fmt(r.get("peak_memory_mb"), 0)),
        ]
        rows.append(row)
    return Table(headers, rows)


# ------------------------------------------------------------------------------------------ renderers
STYLE = """
:root { --fg: #1f2933; --muted: #616e7c; --line: #d9e2ec; --head: #f0f4f8; --accent: #1f5f8b; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 12px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); color: var(--accent); }
.subtitle { color: var(--muted); margin: 0 0 10px; }
nav { font-size: 0.9em; color: var(--muted); }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid var(--line); padding: 4px 9px; text-align: left; vertical-align: top; }
th, td.num { white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
tr:nth-child(even) td { background: #fafcfe; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.strong { font-weight: 600; }
td.better { color: #2e7d32; font-weight: 600; }
td.worse { color: #c62828; font-weight: 600; }
td.outcome-well-done, td.outcome-pareto { color: #2e7d32; font-weight: 600; }
td.outcome-seesaw { color: #b26a00; font-weight: 600; }
td.outcome-negative-transfer { color: #c62828; font-weight: 600; }
figure { margin: 12px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.88em; margin-top: 4px; }
pre { background: var(--head); padding: 10px; overflow-x: auto; font-size: 0.85em; }
footer { margin-top: 36px; color: var(--muted); font-size: 0.8em; }
"""

#: Forbids the browser to load anything that is not inline (images only as data: URIs).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def render_html(document: Document) -> str:
    """The document as one self-contained HTML page (escaped text, images as base64 data URIs)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(document.title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f"<h1>{e(document.title)}</h1>",
        f'<p class="subtitle">{e(document.subtitle)}</p>',
        "<nav>"
        + "".join(f'<a href="#{_anchor(s.title)}">{e(s.title)}</a>' for s in document.sections)
        + "</nav>",
        "</header>",
    ]
    for section in document.sections:
        parts.append(f'<section id="{_anchor(section.title)}">')
        parts.append(f"<h2>{e(section.title)}</h2>")
        for block in section.blocks:
            parts.append(_html_block(block))
        parts.append("</section>")
    parts += ["<footer>Written by mtlkit report.</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _html_block(block: Block) -> str:
    e = html.escape
    if isinstance(block, Text):
        return f"<p>{e(block.text)}</p>"
    if isinstance(block, Code):
        return f"<pre>{e(block.text)}</pre>"
    if isinstance(block, Items):
        return "<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in block.headers)
        body = []
        for row in block.rows:
            cells = []
            for cell in row:
                if isinstance(cell, Cell):
                    css = f' class="{e(cell.css)}"' if cell.css else ""
                    cells.append(f"<td{css}>{e(cell.text)}</td>")
                else:
                    cells.append(f"<td>{e(cell)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    data = block.path.read_bytes()
    size = _png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{e(block.caption)}"{dims}>'
        f"<figcaption>{e(block.caption)}</figcaption></figure>"
    )


def _md_cell(cell: str | Cell) -> str:
    text = cell.text if isinstance(cell, Cell) else cell
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(document: Document, base: Path) -> str:
    """The document as Markdown; images as paths relative to ``base`` (the folder holding report.md)."""
    lines = [f"# {document.title}", "", document.subtitle, ""]
    for section in document.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, Code):
                lines += ["```", block.text, "```", ""]
            elif isinstance(block, Items):
                lines += [f"- {item}" for item in block.items] + [""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---" for _ in block.headers) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                lines.append("")
            else:
                try:
                    target = block.path.resolve().relative_to(base.resolve()).as_posix()
                except ValueError:
                    target = block.path.as_posix()
                lines += [f"![{block.caption}]({target})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)
