"""Data throughput: one shuffled epoch of ``Table.batches`` against a torch ``DataLoader``.

The Table is built directly from random tensors (no file, no encoders): ``--rows`` rows x 40 columns, i.e.
10 categorical features (int64 codes), 28 numeric features (float32) and 2 binary tasks (float32 labels).
The contenders, timed with ``time.perf_counter`` over one full shuffled epoch each:

* A: ``Table.batches(batch_size, shuffle=True, seed=r)``,
* B: ``DataLoader(TensorDataset(categorical, numeric, labels), batch_size=batch_size, shuffle=True)`` with the
  default collate function and ``num_workers=0``.

Each batch is touched minimally (a running count of its rows). The two run interleaved (A, B, A, B, ...) over
``--repeats`` rounds, after one untimed warm-up of each, and the medians are compared. If one DataLoader epoch
would take longer than ``--dataloader-max-seconds``, it is timed on a fixed prefix of its batches and scaled
to the full epoch (the output says so).

Writes a JSON result (``--json``) and the ``data_throughput`` section of ``docs/benchmarks.md`` (unless
``--no-docs``). Run from the repository root::

    python benchmarks/data_throughput.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from mtlkit.data.table import Table
from mtlkit.schema import Feature, Schema, Task

# benchmarks/_common.py is imported from this file's folder, also when a test loads this file by its path
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import median, sig3

SCRIPT = "benchmarks/data_throughput.py"
SECTION = "data_throughput"
START_MARKER, END_MARKER = _common.markers(SECTION)

N_CATEGORICAL = 10
N_NUMERIC = 28
N_TASKS = 2
# Vocabulary sizes of the categorical features (row 0 = unknown included), from tiny to large.
VOCAB_SIZES = (3, 10, 50, 200, 1_000, 5_000, 20_000, 100_000, 500_000, 1_000_000)

TARGET_RATIO = 20.0
TARGET_TABLE_ROWS_PER_S = 2_000_000.0
WARMUP_SEED = 1_000_003  # the timed rounds use seeds 0 .. repeats-1


# ---------------------------------------------------------------------------------------------- data
def build_table(rows: int, seed: int = 0) -> Table:
    """A Table of ``rows`` random rows: 10 categorical, 28 numeric and 2 binary label columns."""
    g = torch.Generator().manual_seed(seed)
    categorical = torch.empty((rows, N_CATEGORICAL), dtype=torch.int64)
    for j, vocab in enumerate(VOCAB_SIZES):
        categorical[:, j] = torch.randint(0, vocab, (rows,), generator=g)
    numeric = torch.randn((rows, N_NUMERIC), generator=g, dtype=torch.float32)
    labels = torch.bernoulli(torch.full((rows, N_TASKS), 0.3), generator=g)
    features = [Feature(f"cat_{j}", kind="categorical", vocab_size=v) for j, v in enumerate(VOCAB_SIZES)]
    features += [Feature(f"num_{j}", kind="numeric") for j in range(N_NUMERIC)]
    schema = Schema(tuple(features), tuple(Task(f"task_{k}", kind="binary") for k in range(N_TASKS)))
    return Table(schema, categorical, numeric, labels)


# ---------------------------------------------------------------------------------------------- timing
def time_table_epoch(table: Table, batch_size: int, seed: int) -> tuple[float, int]:
    """Seconds for one full shuffled epoch of ``Table.batches``, and the rows it yielded."""
    rows = 0
    start = time.perf_counter()
    for batch in table.batches(batch_size, shuffle=True, seed=seed):
        rows += len(batch)
    return time.perf_counter() - start, rows


def make_loader(table: Table, batch_size: int, seed: int) -> DataLoader:
    dataset = TensorDataset(table.categorical, table.numeric, table.labels)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def time_loader(table: Table, batch_size: int, seed: int, max_batches: int | None) -> tuple[float, int, int]:
    """Seconds for the first ``max_batches`` batches (all when None) of a fresh shuffled DataLoader epoch.

    The loader's construction and its sampler's permutation are inside the timed region, as ``randperm``
    is for ``Table.batches``. Returns (seconds, batches, rows).
    """
    rows = 0
    batches = 0
    start = time.perf_counter()
    for _categorical, _numeric, labels in make_loader(table, batch_size, seed):
        rows += labels.shape[0]
        batches += 1
        if max_batches is not None and batches >= max_batches:
            break
    return time.perf_counter() - start, batches, rows


def plan_loader_prefix(
    table: Table, batch_size: int, num_batches: int, max_seconds: float, probe_batches: int = 50
) -> tuple[int | None, float]:
    """Warm the DataLoader up on a few batches and decide whether to time full epochs or a prefix.

    Returns (prefix batches or None for full epochs, estimated seconds of one full epoch).
    """
    probe = min(num_batches, probe_batches)
    seconds, batches, _ = time_loader(table, batch_size, seed=WARMUP_SEED, max_batches=probe)
    estimate = seconds / batches * num_batches
    if estimate <= max_seconds:
        return None, estimate
    prefix = int(max_seconds / (seconds / batches))
    prefix = max(min(10, num_batches), min(prefix, num_batches))
    return (None if prefix >= num_batches else prefix), estimate


# ---------------------------------------------------------------------------------------------- output
def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def docs_section(result: dict[str, Any]) -> str:
    """The markdown between the markers (markers excluded)."""
    table = result["table"]
    loader = result["dataloader"]
    met = result["targets"]
    yes = {True: "yes", False: "**no**"}
    bs = result["batch_size"]
    cols = result["columns"]
    loader_note = ""
    if loader["prefix_batches"] is not None:
        loader_note = (
            f" The DataLoader was timed on the first {loader['prefix_batches']} of its "
            f"{result['num_batches']} batches per epoch and scaled to the full epoch."
        )
    lines = [
        "## Data throughput: `Table.batches` vs `DataLoader`",
        "",
        f"One shuffled epoch over {result['rows']:,} rows x {cols['total']} columns "
        f"({cols['categorical']} categorical int64, {cols['numeric']} numeric float32, "
        f"{cols['labels']} binary labels), batch size {bs}, {result['threads']} torch threads, CPU; "
        f"median of {result['repeats']} interleaved rounds. Each batch is only counted (rows += len(batch)).{loader_note}",
        "",
        "| loader | median s/epoch | rows/s | vs DataLoader |",
        "|---|---:|---:|---:|",
        f"| `Table.batches({bs}, shuffle=True, seed=r)` | {fmt_seconds(table['median_seconds'])} "
        f"| {sig3(table['rows_per_second'])} | {result['ratio']:.1f}x |",
        f"| `DataLoader(TensorDataset(cat, num, labels), batch_size={bs}, shuffle=True)` "
        f"| {fmt_seconds(loader['median_seconds'])} | {sig3(loader['rows_per_second'])} | 1.0x |",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
        f"| `Table.batches` >= {met['ratio_min']:g}x the DataLoader's rows/s | {result['ratio']:.1f}x "
        f"| {yes[met['ratio_met']]} |",
        f"| `Table.batches` >= {sig3(met['table_rows_per_second_min'])} rows/s "
        f"| {sig3(table['rows_per_second'])} | {yes[met['table_rows_per_second_met']]} |",
        "",
    ]
    lines += _common.docs_footer(result, SECTION)
    return "\n".join(lines)


def update_docs(path: Path, section: str) -> None:
    """Replace what is between this benchmark's markers in ``path`` (create the file / section if missing)."""
    _common.update_docs(path, SECTION, section)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time one shuffled epoch of mtlkit Table.batches against a torch DataLoader "
        "(TensorDataset, default collate, num_workers=0), interleaved over several rounds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the random Table")
    p.add_argument("--batch-size", type=int, default=1024, help="rows per batch")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (A, B) to take medians over")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random data")
    p.add_argument(
        "--dataloader-max-seconds",
        type=float,
        default=30.0,
        help="if one DataLoader epoch is estimated to take longer, time a fixed prefix of its batches and scale",
    )
    _common.add_output_arguments(p, SECTION)
    args = p.parse_args(argv)
    _common.require_positive(p, args, ("rows", "batch_size", "repeats", "threads"))
    if not args.dataloader_max_seconds > 0:
        p.error("--dataloader-max-seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    raw_args = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_args)
    command = _common.command_line(SCRIPT, raw_args)
    torch.set_num_threads(args.threads)

    print(f"building a Table of {args.rows:,} rows x {N_CATEGORICAL + N_NUMERIC + N_TASKS} columns ...")
    table = build_table(args.rows, args.seed)
    num_batches = table.num_batches(args.batch_size)

    # Warm-up (untimed): one Table epoch, a few DataLoader batches (also used to plan prefix timing).
    time_table_epoch(table, args.batch_size, seed=WARMUP_SEED)
    prefix, estimate = plan_loader_prefix(table, args.batch_size, num_batches, args.dataloader_max_seconds)
    scale = 1.0 if prefix is None else num_batches / prefix
    if prefix is None:
        print(f"DataLoader: full epochs (estimated {estimate:.1f} s each)")
    else:
        print(
            f"DataLoader: one epoch estimated at {estimate:.0f} s > {args.dataloader_max_seconds:g} s; "
            f"timing the first {prefix} of {num_batches} batches and scaling by {scale:.2f}"
        )

    def run_table(r: int) -> float:
        seconds, rows = time_table_epoch(table, args.batch_size, seed=r)
        if rows != args.rows:
            raise RuntimeError(f"Table.batches yielded {rows} rows, expected {args.rows}")
        return seconds

    def run_loader(r: int) -> float:
        seconds, _, rows = time_loader(table, args.batch_size, seed=r, max_batches=prefix)
        if prefix is None and rows != args.rows:
            raise RuntimeError(f"DataLoader yielded {rows} rows, expected {args.rows}")
        return seconds

    def report(r: int, latest: dict[str, float]) -> None:
        print(
            f"round {r + 1}/{args.repeats}: Table.batches {latest['table']:.4f} s, "
            f"DataLoader {latest['dataloader'] * scale:.3f} s" + (" (scaled)" if prefix is not None else "")
        )

    # A, B, A, B, ...: the table's epoch r and the DataLoader's epoch r both shuffle with seed r
    times = _common.interleaved_rounds(
        args.repeats, {"table": run_table, "dataloader": run_loader}, alternate=False, after_round=report
    )
    table_s = times["table"]
    loader_raw_s = times["dataloader"]
    loader_s = [seconds * scale for seconds in loader_raw_s]
    table_median = median(table_s)
    loader_median = median(loader_s)
    table_rate = args.rows / table_median
    loader_rate = args.rows / loader_median
    ratio = table_rate / loader_rate
    ratio_met = ratio >= TARGET_RATIO
    rate_met = table_rate >= TARGET_TABLE_ROWS_PER_S
    result: dict[str, Any] = {
        "benchmark": SECTION,
        "rows": args.rows,
        "columns": {
            "categorical": N_CATEGORICAL,
            "numeric": N_NUMERIC,
            "labels": N_TASKS,
            "total": N_CATEGORICAL + N_NUMERIC + N_TASKS,
        },
        "batch_size": args.batch_size,
        "num_batches": num_batches,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        **_common.environment(),
        "table": {
            "what": f"Table.batches({args.batch_size}, shuffle=True, seed=r)",
            "seconds": table_s,
            "median_seconds": table_median,
            "rows_per_second": table_rate,
        },
        "dataloader": {
            "what": f"DataLoader(TensorDataset(categorical, numeric, labels), batch_size={args.batch_size}, "
            "shuffle=True, num_workers=0), default collate",
            "seconds": loader_s,
            "median_seconds": loader_median,
            "rows_per_second": loader_rate,
            "full_epoch": prefix is None,
            "prefix_batches": prefix,
            "prefix_scale": scale,
            "measured_seconds": loader_raw_s,
        },
        "ratio": ratio,
        "targets": {
            "ratio_min": TARGET_RATIO,
            "table_rows_per_second_min": TARGET_TABLE_ROWS_PER_S,
            "ratio_met": ratio_met,
            "table_rows_per_second_met": rate_met,
            "all_met": ratio_met and rate_met,
        },
        **_common.provenance(command),
    }
    _common.check_finite((table_rate, loader_rate, ratio), result)
    wrote = _common.write_outputs(args, SECTION, result, lambda: docs_section(result))

    print()
    print(f"Table.batches : median {table_median:.4f} s/epoch, {sig3(table_rate)} rows/s")
    print(
        f"DataLoader    : median {loader_median:.3f} s/epoch, {sig3(loader_rate)} rows/s"
        + ("" if prefix is None else f" (first {prefix} of {num_batches} batches, scaled)")
    )
    print(f"ratio         : {ratio:.1f}x (target >= {TARGET_RATIO:g}x: {'met' if ratio_met else 'NOT met'})")
    print(f"Table rows/s  : target >= {sig3(TARGET_TABLE_ROWS_PER_S)}: {'met' if rate_met else 'NOT met'}")
    print(wrote)
    return result


if __name__ == "__main__":
    main()
