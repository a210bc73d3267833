"""``mtlkit fusion search RUN --target TARGET``: search the fusion weights of a trained run (:mod:`mtlkit.fusion`).

    mtlkit fusion search RUN --target auc:conversion
    mtlkit fusion search RUN --target "weighted_auc:click=0.3,conversion=0.7" --kind weighted_sum
    mtlkit fusion search RUN --target "ndcg:click+3*conversion@10" --values price --trials 400 --save

The run's valid split is searched and its test split reported; the run's predictions are computed once per
split, then every candidate is tensor ops only. ``--save`` writes the best fusion into the run's fusion.json,
which ``mtlkit predict`` and ``mtlkit export`` then apply.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtlkit.errors import MtlkitError, did_you_mean, listing

if TYPE_CHECKING:
    from mtlkit.fusion import Fusion

#: The file of a run folder that holds its fusion.
FUSION_FILE = "fusion.json"


def register(commands: Any) -> None:
    """Add ``fusion search`` to the CLI's subparsers."""
    fusion = commands.add_parser(
        "fusion", help="search the weights that fuse a run's task scores into one score"
    )
    sub = fusion.add_subparsers(title="fusion commands", metavar="SUBCOMMAND")
    fusion.set_defaults(handler=lambda _args: _help(fusion))
    search = sub.add_parser(
        "search",
        help="search fusion weights on the run's valid split, report valid and test values",
        description=(
            "Search the weights of a fusion (weighted_sum: sum_i w_i p_i + sum_v w_v value_v; product: "
            "prod_i p_i^w_i * prod_v value_v^w_v) that maximise TARGET on the run's valid split. Only the "
            "direction of the weights matters (a positive scale leaves the ranking unchanged), so n weights have "
            "n - 1 free coordinates: a grid over the simplex for up to 3 of them, Optuna's TPE beyond that or "
            "when --trials is given. Reports the best weights with the target and every task's AUC of the fused "
            "score on valid and test."
        ),
    )
    search.add_argument("run", help="the run folder (with checkpoint.pt)")
    search.add_argument(
        "--target",
        required=True,
        help="what to maximise: auc:<task> | weighted_auc:<task>=<w>,... | ndcg:<gain expression>@k, e.g. "
        "ndcg:click+3*conversion@10 or ndcg:true_value@10 (grouped by the data set's group column)",
    )
    search.add_argument(
        "--kind", choices=("product", "weighted_sum"), help="default: the run's fusion, else product"
    )
    search.add_argument(
        "--tasks",
        help="comma-separated tasks to fuse (default: the run's fusion, else every task the kind takes)",
    )
    search.add_argument(
        "--values", help="comma-separated value columns to fuse, e.g. price (default: the run's fusion's)"
    )
    how = search.add_mutually_exclusive_group()
    how.add_argument(
        "--trials", type=int, help="Optuna TPE trials (default: grid up to 3 free weights, else 200 trials)"
    )
    how.add_argument(
        "--grid", type=int, help="grid levels per weight (default: 41, 21, 11 for 1, 2, 3 free weights)"
    )
    search.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler (default 0)")
    search.add_argument("--save", action="store_true", help="write the best fusion into RUN/fusion.json")
    search.add_argument("--json", action="store_true", help="print JSON instead of tables")
    search.set_defaults(handler=_search)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _split_names(text: str | None, what: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names and what == "--tasks":
        raise MtlkitError(f"{what} names no task; give comma-separated names, e.g. click,conversion")
    return names


def _search(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mtlkit.fusion import (
        FusionData,
        SearchSpace,
        evaluate_fusion,
        fusion_kind,
        parse_target,
        search_fusion,
        task_aucs,
    )
    from mtlkit.training.run import build_splits, load_run

    target = parse_target(args.target)
    run = load_run(args.run)
    current = _current_fusion(run.out_dir)
    schema = run.data_schema
    kind_name = args.kind or (current.kind if current is not None else "product")
    kind = fusion_kind(kind_name)
    tasks = _split_names(args.tasks, "--tasks")
    if tasks is None:
        if current is not None and current.kind == kind_name:
            tasks = current.tasks
        else:
            tasks = tuple(t.name for t in schema.tasks if t.kind in kind.task_kinds)
    for task in tasks:
        if task not in schema.task_names:
            raise MtlkitError(
                f"--tasks: no task {task!r}{did_you_mean(task, schema.task_names)}; tasks are {listing(schema.task_names)}"
            )
    values = _split_names(args.values, "--values")
    if values is None:
        values = current.value_columns if current is not None else ()
    columns = tuple(getattr(schema, "values", ()))
    for column in values:
        if column not in columns:
            raise MtlkitError(
                f"--values: no value column {column!r}{did_you_mean(column, columns)}; the data set's value columns "
                f"are {listing(columns) if columns else 'none'}"
            )
    space = SearchSpace(kind_name, tasks, values)
    splits = build_splits(run.config)
    target.check(FusionData.from_table(splits.valid, {}))  # before the predictions: names and groups
    err = Console(stderr=True, highlight=False)
    data = {}
    for part, table in (("valid", splits.valid), ("test", splits.test)):
        err.print(f"predicting the {part} split ({len(table):,} rows)")
        data[part] = FusionData.from_table(table, run.task_scores(table))
    err.print(f"searching {len(space.names)} weights ({', '.join(space.names)}) for {target.text} ...")
    result = search_fusion(data["valid"], target, space, n_trials=args.trials, grid=args.grid, seed=args.seed)
    report: dict[str, Any] = {
        "run": str(run.out_dir),
        "target": target.text,
        "search": {"method": result.method, "trials": result.trials, "seconds": round(result.seconds, 3)},
        "fusion": result.fusion.to_dict(),
        "valid": evaluate_fusion(result.fusion, data["valid"], target),
        "test": evaluate_fusion(result.fusion, data["test"], target),
        "own_auc": {part: task_aucs(d) for part, d in data.items()},
    }
    if current is not None:
        try:
            report["current"] = {
                "fusion": current.to_dict(),
                **{part: evaluate_fusion(current, d, target) for part, d in data.items()},
            }
        except MtlkitError as exc:  # e.g. the current fusion reads a value column this data lacks
            report["current"] = {"fusion": current.to_dict(), "error": str(exc)}
    if args.save:
        result.fusion.save(run.out_dir / FUSION_FILE)
        report["saved"] = str(run.out_dir / FUSION_FILE)
    if args.json:
        print(json.dumps(_plain(report), indent=2))
    else:
        _print_report(Console(highlight=False), report)
    return 0


def _current_fusion(run_dir: Path) -> Fusion | None:
    from mtlkit.fusion import Fusion

    path = run_dir / FUSION_FILE
    return Fusion.load(path) if path.exists() else None


def _plain(value: Any) -> Any:
    """JSON-ready: NaN -> None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _print_report(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table as RichTable

    from mtlkit.console import print_table

    fusion = report["fusion"]
    search = report["search"]
    console.print(
        f"[bold]{report['run']}[/bold]: best {fusion['kind']} fusion for [bold]{report['target']}[/bold] "
        f"({search['method']}, {search['trials']} candidates, {search['seconds']:.1f} s)"
    )
    weights = RichTable(title="weights (only ratios matter; normalised to sum 1)")
    weights.add_column("input")
    weights.add_column("kind")
    weights.add_column("weight", justify="right")
    for name, w in fusion["weights"].items():
        weights.add_row(name, "task", f"{w:.4g}")
    for name, w in fusion["values"].items():
        weights.add_row(name, "value column", f"{w:.4g}")
    print_table(console, weights)
    has_current = "current" in report and "valid" in report["current"]
    table = RichTable(title=f"the fused score: target {report['target']} and each task's AUC")
    table.add_column("metric")
    table.add_column("valid", justify="right")
    table.add_column("test", justify="right")
    if has_current:
        table.add_column("current valid", justify="right")
        table.add_column("current test", justify="right")
    own = report["own_auc"]
    table.add_column("own pred. valid", justify="right")
    table.add_column("own pred. test", justify="right")
    sources = [report, report["current"]] if has_current else [report]
    rows: list[tuple[str, str | None]] = [("target", None)]
    rows += [(f"auc {task}", task) for task in report["valid"]["auc"]]
    for label, task in rows:
        cells = []
        for source in sources:
            for part in ("valid", "test"):
                cells.append(_fmt(source[part]["target"] if task is None else source[part]["auc"].get(task)))
        for part in ("valid", "test"):
            cells.append(_fmt(own[part].get(task)) if task is not None else "")
        table.add_row(label, *cells)
    print_table(console, table)
    if "current" in report and "error" in report["current"]:
        console.print(f"current fusion not evaluated: {report['current']['error']}")
    if "saved" in report:
        console.print(f"saved to {report['saved']}")
