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
import json
import math
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from mtlkit.data.table import Table
from mtlkit.schema import Feature, Schema, Task

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "benchmarks/data_throughput.py"
DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "data_throughput.json"
DEFAULT_DOCS = REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "data_throughput"
START_MARKER = f"<!-- {SECTION}:start -->"
END_MARKER = f"<!-- {SECTION}:end -->"

N_CATEGORICAL = 10
N_NUMERIC = 28
N_TASKS = 2
# Vocabulary sizes of the categorical features (row 0 = unknown included), from tiny to large.
VOCAB_SIZES = (3, 10, 50, 200, 1_000, 5_000, 20_000, 100_000, 500_000, 1_000_000)

TARGET_RATIO = 20.0
TARGET_TABLE_ROWS_PER_S = 2_000_000.0
WARMUP_SEED = 1_000_003  # the timed rounds use seeds 0 .. repeats-1

DOCS_HEADER = """# Benchmarks

Speed measurements of mtlkit. Each section below is written by a script under `benchmarks/`, which also
writes its raw numbers (every timed round) to a JSON file under `benchmarks/results/`; re-run the script to
refresh its section. Other sections are left untouched.

Machine: 2 CPU cores, shared with other work and therefore noisy. Contenders are timed interleaved
(A, B, A, B, ...) so that noise hits them alike, and the numbers reported are medians over the rounds;
differences of a few percent are within the noise. Every section gives the command that produced it
(run from the repository root).
"""


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
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def fmt_rate(rows_per_s: float) -> str:
    """Rows per second to 3 significant digits (the machine is noisy), with thousands separators."""
    if rows_per_s <= 0:
        return "0"
    exponent = math.floor(math.log10(rows_per_s))
    return f"{round(rows_per_s, 2 - exponent):,.{max(0, 2 - exponent)}f}"


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
        f"| {fmt_rate(table['rows_per_second'])} | {result['ratio']:.1f}x |",
        f"| `DataLoader(TensorDataset(cat, num, labels), batch_size={bs}, shuffle=True)` "
        f"| {fmt_seconds(loader['median_seconds'])} | {fmt_rate(loader['rows_per_second'])} | 1.0x |",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
        f"| `Table.batches` >= {met['ratio_min']:g}x the DataLoader's rows/s | {result['ratio']:.1f}x "
        f"| {yes[met['ratio_met']]} |",
        f"| `Table.batches` >= {fmt_rate(met['table_rows_per_second_min'])} rows/s "
        f"| {fmt_rate(table['rows_per_second'])} | {yes[met['table_rows_per_second_met']]} |",
        "",
        f"torch {result['torch_version']}, Python {result['python_version']}, "
        f"{result['timestamp']}"
        + (f", commit `{result['git_commit'][:12]}`" if result["git_commit"] else "")
        + ".",
        "Raw per-round timings: `benchmarks/results/data_throughput.json`. Command:",
        "",
        "```",
        result["command"],
        "```",
    ]
    return "\n".join(lines)


def update_docs(path: Path, section: str) -> None:
    """Replace what is between this benchmark's markers in ``path`` (create the file / section if missing)."""
    block = f"{START_MARKER}\n{section.strip()}\n{END_MARKER}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{DOCS_HEADER}\n{block}\n", encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    starts, ends = text.count(START_MARKER), text.count(END_MARKER)
    if starts == 0 and ends == 0:
        path.write_text(text.rstrip("\n") + f"\n\n{block}\n", encoding="utf-8")
        return
    i, j = text.find(START_MARKER), text.find(END_MARKER)
    if starts != 1 or ends != 1 or j < i:
        raise SystemExit(
            f"{path}: expected one {START_MARKER} followed by one {END_MARKER}, found {starts} start "
            f"and {ends} end marker(s); fix the file by hand"
        )
    path.write_text(text[:i] + block + text[j + len(END_MARKER) :], encoding="utf-8")


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
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the JSON result")
    p.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="the benchmarks page to update")
    p.add_argument("--no-docs", action="store_true", help="do not update the benchmarks page")
    args = p.parse_args(argv)
    for name in ("rows", "batch_size", "repeats", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.dataloader_max_seconds > 0:
        p.error("--dataloader-max-seconds must be > 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    raw_args = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_args)
    command = shlex.join(["python", SCRIPT, *raw_args])
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

    table_s: list[float] = []
    loader_s: list[float] = []
    loader_raw_s: list[float] = []
    for r in range(args.repeats):
        seconds, rows = time_table_epoch(table, args.batch_size, seed=r)
        if rows != args.rows:
            raise RuntimeError(f"Table.batches yielded {rows} rows, expected {args.rows}")
        table_s.append(seconds)
        seconds, _, rows = time_loader(table, args.batch_size, seed=r, max_batches=prefix)
        if prefix is None and rows != args.rows:
            raise RuntimeError(f"DataLoader yielded {rows} rows, expected {args.rows}")
        loader_raw_s.append(seconds)
        loader_s.append(seconds * scale)
        print(
            f"round {r + 1}/{args.repeats}: Table.batches {table_s[-1]:.4f} s, "
            f"DataLoader {loader_s[-1]:.3f} s" + (" (scaled)" if prefix is not None else "")
        )

    table_median = statistics.median(table_s)
    loader_median = statistics.median(loader_s)
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
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
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
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": command,
    }
    if not all(math.isfinite(x) for x in (table_rate, loader_rate, ratio)):
        raise RuntimeError(f"non-finite result: {result}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not args.no_docs:
        update_docs(args.docs, docs_section(result))

    print()
    print(f"Table.batches : median {table_median:.4f} s/epoch, {fmt_rate(table_rate)} rows/s")
    print(
        f"DataLoader    : median {loader_median:.3f} s/epoch, {fmt_rate(loader_rate)} rows/s"
        + ("" if prefix is None else f" (first {prefix} of {num_batches} batches, scaled)")
    )
    print(f"ratio         : {ratio:.1f}x (target >= {TARGET_RATIO:g}x: {'met' if ratio_met else 'NOT met'})")
    print(
        f"Table rows/s  : target >= {fmt_rate(TARGET_TABLE_ROWS_PER_S)}: {'met' if rate_met else 'NOT met'}"
    )
    print(f"wrote {args.json}" + ("" if args.no_docs else f" and {args.docs}"))
    return result


if __name__ == "__main__":
    main()
