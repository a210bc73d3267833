"""The ``mtlkit`` command line.

    mtlkit train CONFIG [--out DIR] [--set key.path=value ...] [--resume | --overwrite]
    mtlkit evaluate DIR [--data FILE]
    mtlkit predict DIR INPUT OUTPUT [--fusion FILE] [--keep COLUMNS] [--chunk-rows N] [--overwrite]
    mtlkit data list
    mtlkit data describe NAME [--set key=value ...] [--data-dir DIR] [--json]
    mtlkit data describe FILE.csv|FILE.parquet --label COLUMN [--label ...] [--json]

Errors caused by the user (bad names, files, values) print one message and exit with status 2, never a stack
trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from mtlkit.console import print_table
from mtlkit.data.datasets import dataset_loader, list_datasets, load_dataset
from mtlkit.data.readers import CSV_SUFFIXES, PARQUET_SUFFIXES, read_table
from mtlkit.data.table import Table
from mtlkit.errors import MtlkitError, did_you_mean, listing, refuse_to_replace
from mtlkit.training.predict import DEFAULT_CHUNK_ROWS

#: Longer feature lists are cut in the printed summary (``--json`` has them all).
MAX_FEATURE_ROWS = 40


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except MtlkitError as exc:
        print(f"mtlkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtlkit: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlkit", description="Multi-task and multi-objective learning for ranking."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    train = commands.add_parser("train", help="train a run from a YAML configuration")
    train.add_argument("config", help="the run configuration (YAML), e.g. examples/synthetic.yaml")
    train.add_argument("--out", help="the run folder (default: runs/<config name>)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a configuration value, e.g. --set training.lr=0.01 (repeatable; values are YAML)",
    )
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    again.add_argument("--overwrite", action="store_true", help="start again in a folder that holds a run")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="metrics of a trained run (its valid/test data, or a file)"
    )
    evaluate.add_argument("run", help="the run folder (with checkpoint.pt)")
    evaluate.add_argument("--data", help="a labelled CSV / Parquet file to evaluate on instead")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        metavar="N",
        help="rows of --data read and encoded at a time (the metrics do not depend on it)",
    )
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser(
        "predict", help="add pred_<task> columns (and the fused score, with a fusion) to the rows of a file"
    )
    predict.add_argument("run", help="the run folder (with checkpoint.pt)")
    predict.add_argument("input", help="CSV / Parquet file with the feature columns")
    predict.add_argument("output", help="where to write the rows with their predictions (.csv or .parquet)")
    predict.add_argument(
        "--fusion",
        metavar="FILE",
        help="a fusion JSON (see 'mtlkit fusion search') to fuse the predictions into a score column with, "
        "instead of the run's fusion.json; value columns such as price are read from INPUT",
    )
    predict.add_argument(
        "--keep",
        metavar="COLUMNS",
        help="comma-separated input columns to write out before the predictions (e.g. id,request_id); "
        "default: every input column",
    )
    predict.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        metavar="N",
        help="rows read, encoded and predicted at a time (memory: one part of rows and its tensors)",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it exists (without it, an existing file is kept)",
    )
    predict.set_defaults(handler=_predict)
    for module in _command_modules():
        module.register(commands)

    data = commands.add_parser("data", help="list, describe and inspect data sets and files")
    data_commands = data.add_subparsers(title="data commands", metavar="SUBCOMMAND")
    data.set_defaults(handler=lambda _args: _print_help(data))

    listing_parser = data_commands.add_parser("list", help="the registered data sets")
    listing_parser.set_defaults(handler=_data_list)

    describe = data_commands.add_parser(
        "describe",
        help="rows, features, tasks, label rates and missing labels of a data set, a file or a run's data",
        description="Describe a registered data set (see 'mtlkit data list'), a CSV / Parquet file, or the "
        "train / valid / test data a run configuration (*.yaml) names.",
    )
    describe.add_argument(
        "name", help="a data set name, the path of a CSV / Parquet file, or a run configuration (*.yaml)"
    )
    describe.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a data set parameter, e.g. --set correlation=0.9 --set tasks=3, or for a configuration a key "
        "path, e.g. --set data.valid=v.csv (repeatable)",
    )
    describe.add_argument(
        "--data-dir", help="root data folder (default: $MTLKIT_DATA_DIR, else ~/.cache/mtlkit)"
    )
    describe.add_argument(
        "--label",
        action="append",
        default=[],
        help="for a file: a label column (repeatable); the schema is inferred and printed",
    )
    describe.add_argument("--json", action="store_true", help="print JSON instead of tables")
    describe.set_defaults(handler=_data_describe)
    return parser


def _command_modules() -> list[types.ModuleType]:
    """The modules of ``mtlkit.commands`` (bench, report, export, ...), each with ``register(commands)``.

    Each command lives in its own module and imports its heavy dependencies inside its handler, so that
    ``mtlkit --help`` stays fast.
    """
    import importlib
    import pkgutil

    import mtlkit.commands

    names = sorted(
        m.name for m in pkgutil.iter_modules(mtlkit.commands.__path__) if not m.name.startswith("_")
    )
    return [importlib.import_module(f"mtlkit.commands.{name}") for name in names]


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ------------------------------------------------------------------------------------- train / evaluate
def _train(args: argparse.Namespace) -> int:
    from mtlkit.config import load_config
    from mtlkit.training.run import CHECKPOINT, train_run

    config = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if args.resume and not (out / CHECKPOINT).exists():
        print(f"mtlkit: no checkpoint in {out} to resume: starting a new run there", file=sys.stderr)
    result = train_run(config, out, resume=args.resume, overwrite=args.overwrite)
    console = Console(highlight=False)
    console.print(f"[bold]{args.config}[/bold] -> {out}  (best epoch {result.metrics['best_epoch']})")
    console.print(result.metrics["note"])
    print_metrics(console, {"valid": result.metrics["valid"], "test": result.metrics["test"]})
    return 0


def _check_chunk_rows(value: int) -> None:
    if value < 1:
        raise MtlkitError(f"--chunk-rows must be >= 1, got {value}")


def _evaluate(args: argparse.Namespace) -> int:
    from mtlkit.training.file_metrics import evaluate_file
    from mtlkit.training.run import build_splits, evaluate_run, load_run

    _check_chunk_rows(args.chunk_rows)
    run = load_run(args.run)
    if args.data:
        results = {Path(args.data).name: evaluate_file(run, args.data, chunk_rows=args.chunk_rows)}
    else:
        splits = build_splits(run.config)
        results = {"valid": evaluate_run(run, splits.valid), "test": evaluate_run(run, splits.test)}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_metrics(Console(highlight=False), results)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mtlkit.training.predict import predict_file
    from mtlkit.training.run import load_run

    _check_chunk_rows(args.chunk_rows)
    output = Path(args.output)
    refuse_to_replace(output, "the predictions", args.overwrite)
    run = load_run(args.run)
    fusion_file = Path(args.fusion) if args.fusion else run.out_dir / "fusion.json"
    fusion = None
    if args.fusion or fusion_file.exists():  # checked before predicting
        from mtlkit.fusion import Fusion

        fusion = Fusion.load(fusion_file)
        fusion.check(run.data_schema, where=str(fusion_file))
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    status = Console(stderr=True)
    progress = Progress(
        TextColumn(f"predicting {args.input}:"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=status,
        transient=True,
        disable=not status.is_terminal,
    )
    with progress:
        rows = progress.add_task("predict", total=None)
        result = predict_file(
            run,
            args.input,
            output,
            fusion=fusion,
            fusion_source=str(fusion_file),
            chunk_rows=args.chunk_rows,
            on_part=lambda done: progress.update(rows, completed=done),
            keep=None if args.keep is None else [c.strip() for c in args.keep.split(",") if c.strip()],
        )
    what = [f"score (fusion {fusion_file})" if c == "score" else c for c in result.columns]
    parts = f" in {result.parts} parts of {args.chunk_rows:,} rows" if result.parts > 1 else ""
    print(f"wrote {result.rows:,} rows with {', '.join(what)} to {args.output}{parts}")
    return 0


def print_metrics(console: Console, results: dict[str, dict[str, dict[str, float]]]) -> None:
    """One table: a row per part and task (and the parts' means), a column per metric, printed whole."""
    metrics = list(dict.fromkeys(m for part in results.values() for m in _metric_names(part)))
    table = RichTable(title="metrics")
    table.add_column("part")
    table.add_column("task", no_wrap=True)
    for metric in metrics:
        table.add_column(metric, justify="right", no_wrap=True)
    for part, scores in results.items():
        for task, values in scores.items():
            row = [part, task]
            for metric in metrics:
                value = values.get(metric)
                row.append("-" if value is None else f"{value:.4f}")
            table.add_row(*row)
        table.add_section()
    print_table(console, table)


def _metric_names(scores: dict[str, dict[str, float]]) -> list[str]:
    return list(dict.fromkeys(metric for values in scores.values() for metric in values))


# ---------------------------------------------------------------------------------------------- data list
def _data_list(args: argparse.Namespace) -> int:
    console = Console()
    table = RichTable(title="mtlkit data sets", show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("what")
    for name in list_datasets():
        doc = (dataset_loader(name).__doc__ or "").strip().splitlines()[0].replace("``", "")
        table.add_row(name, doc)
    console.print(table)
    return 0


# ------------------------------------------------------------------------------------------ data describe
def _is_file_argument(name: str) -> bool:
    lowered = name.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        lowered = lowered.removesuffix(suffix)
    return lowered.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES) or Path(name).exists()


def _data_describe(args: argparse.Namespace) -> int:
    if args.name.lower().endswith((".yaml", ".yml")):
        if args.label or args.data_dir:
            raise MtlkitError(
                "--label and --data-dir are for files and data sets; a configuration names its data"
            )
        from mtlkit.training.run import build_splits, load_config

        splits = build_splits(load_config(args.name, args.params))
        parts, title, note = splits.parts(), args.name, splits.note
    elif _is_file_argument(args.name):
        if args.params or args.data_dir:
            raise MtlkitError("--set and --data-dir are for registered data sets, not files")
        schema_out = sys.stderr if args.json else sys.stdout
        table = read_table(args.name, labels=args.label, out=schema_out)
        parts = {"file": table}
        title, note = args.name, f"{args.name} (schema inferred from labels {args.label})"
    else:
        if args.label:
            raise MtlkitError(
                "--label is for files; a registered data set knows its tasks"
                f"{did_you_mean(args.name, list_datasets())}"
            )
        params = parse_params(args.name, args.params)
        if args.data_dir is not None:
            params = _with_data_dir(args.name, params, args.data_dir)
        splits = load_dataset(args.name, **params)
        parts = splits.parts()
        title, note = args.name, splits.note
    summary: dict[str, Any] = {
        "name": title,
        "note": note,
        "parts": {k: t.describe() for k, t in parts.items()},
    }
    if "train" in parts:  # rows of the other parts equal to a training row
        from mtlkit.data.overlap import repeat_counts

        others = {k: t for k, t in parts.items() if k != "train"}
        summary["repeats_train"] = repeat_counts(parts["train"], others)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(title, note, parts, summary.get("repeats_train"))
    return 0


def _with_data_dir(name: str, params: dict[str, Any], data_dir: str) -> dict[str, Any]:
    if "data_dir" not in typing.get_type_hints(dataset_loader(name)):
        raise MtlkitError(f"data set {name!r} reads no files, so --data-dir does not apply")
    return {**params, "data_dir": data_dir}


def parse_params(name: str, items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> typed keyword arguments for a data set's loader (types from its signature)."""
    hints = typing.get_type_hints(dataset_loader(name))
    hints.pop("return", None)
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MtlkitError(f"--set takes KEY=VALUE, got {item!r}")
        if key not in hints:
            raise MtlkitError(
                f"data set {name!r} has no parameter {key!r}{did_you_mean(key, hints)}; "
                f"it accepts {listing(hints, limit=30)}"
            )
        params[key] = coerce(text.strip(), hints[key], f"--set {key}")
    return params


def coerce(text: str, annotation: Any, what: str) -> Any:
    """Convert command-line text to ``annotation`` (bool, int, float, str, Literal, Optional of those)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", "null") and len(options) < len(typing.get_args(annotation)):
            return None
        errors = []
        for option in options:
            try:
                return coerce(text, option, what)
            except MtlkitError as exc:
                errors.append(str(exc))
        raise MtlkitError("; ".join(errors))
    if origin is typing.Literal:
        choices = [str(c) for c in typing.get_args(annotation)]
        if text not in choices:
            raise MtlkitError(
                f"{what} must be one of {listing(choices)}, got {text!r}{did_you_mean(text, choices)}"
            )
        return text
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise MtlkitError(f"{what} must be true or false, got {text!r}")
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise MtlkitError(f"{what} must be {annotation.__name__}, got {text!r}") from None
    return text


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_summary(title: str, note: str, parts: dict[str, Table], repeats: dict[str, int] | None) -> None:
    console = Console()
    console.print(f"[bold]{title}[/bold]: {note}")
    first = next(iter(parts.values()))
    schema = first.schema
    info = {k: t.describe() for k, t in parts.items()}
    sizes = ", ".join(f"{k} {len(t):,}" for k, t in parts.items())
    console.print(
        f"rows: {sizes}; features: {len(schema.categorical)} categorical, {len(schema.numeric)} numeric "
        f"({first.numeric.shape[1]} numeric columns)"
        + (f"; group column {schema.group!r}" if schema.group else "")
        + (f"; sample weight {schema.sample_weight!r}" if schema.sample_weight else "")
    )
    if repeats is not None:
        from mtlkit.data.overlap import repeats_text

        text = repeats_text(repeats, parts)
        console.print(f"rows equal to a training row (features and labels, after encoding): {text}")
    tasks = RichTable(title="tasks")
    for column in ("task", "kind", "label", "part", "labelled", "missing", "rate / mean"):
        tasks.add_column(column, justify="right" if column in ("labelled", "missing") else "left")
    for j, task in enumerate(schema.tasks):
        for i, part in enumerate(parts):
            entry = info[part]["tasks"][j]
            rate = entry.get("positive_rate", entry.get("mean", entry.get("class_counts")))
            head = [task.name, task.kind, task.column] if i == 0 else ["", "", ""]
            tasks.add_row(*head, part, f"{entry['labelled']:,}", f"{entry['missing']:,}", _fmt(rate))
    print_table(console, tasks)
    features = RichTable(title=f"features (fitted on {next(iter(parts))})")
    for column in ("feature", "kind", "column", "vocab size", "unknown rate", "towers"):
        features.add_column(column)
    entries = info[next(iter(parts))]["features"]
    shown = entries if len(entries) <= MAX_FEATURE_ROWS else entries[: MAX_FEATURE_ROWS - 5]
    for entry in shown:
        features.add_row(
            entry["name"],
            entry["kind"],
            entry["column"],
            _fmt(entry.get("vocab_size")),
            _fmt(entry.get("unknown_rate")),
            ",".join(entry.get("towers", [])) or "shared",
        )
    if len(shown) < len(entries):
        features.add_row(f"... {len(entries) - len(shown)} more", "", "", "", "", "")
    print_table(console, features)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
