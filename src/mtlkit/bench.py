"""The bench grid: every model x balancer x seed (and other solution families) as separate training processes,
judged against cached single-task baselines.

``run_bench(config, out, models=..., balancers=..., seeds=3)`` plans one run per combination, trains each with
``python -m mtlkit.cli train`` in its own process (up to ``jobs`` at a time, each limited to
``cores // jobs`` torch threads), and writes into ``out``:

* ``bench.json``: the grid and the configuration;
* ``runs/<family>__<model>__<balancer>__seed<k>/``: the run folders, each with ``train.log`` (the child's
  output) and ``bench_run.json`` (exit status, wall time, peak memory);
* ``baselines/seed<k>/``: the single-task baselines (:mod:`mtlkit.analysis.baselines`), fetched from the
  baseline cache when present, else trained and then stored there;
* ``results.csv``: one row per run (baselines first, family ``baseline``): model, balancer, family, seed,
  status, run_dir, epochs, seconds_per_epoch, peak_memory_mb, then ``valid_<task>_<metric>`` and
  ``test_<task>_<metric>`` for every task and metric;
* ``summary.json`` and ``summary.md``: per (family, model, balancer): mean +- std over seeds of each task's test
  metric, MTL gain, verdict, Delta_m and outcome (:mod:`mtlkit.analysis.verdict`), time per epoch, peak memory;
* ``plots/``: :func:`mtlkit.analysis.plots.bench_plots`.

Resumable: a run whose ``metrics.json`` exists is not trained again; a run that crashed is reported with status
``failed`` (its ``train.log`` kept), the others go on, and the next call tries it again (from its last checkpoint).
Peak memory is the child's own ``ru_maxrss`` (``os.wait4`` on its pid; ``RUSAGE_CHILDREN`` would be the maximum
over every child so far).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mtlkit.analysis.baselines import BaselineCache, baseline_config, key_material, key_of
from mtlkit.analysis.verdict import (
    RULE,
    Estimate,
    Verdict,
    delta_m,
    mtl_gain,
    outcome,
    task_verdict,
)
from mtlkit.config import MAXIMIZED_METRICS, ConfigError, RunConfig
from mtlkit.errors import MtlkitError, did_you_mean, listing
from mtlkit.schema import Schema

RUN_RECORD = "bench_run.json"
LOG = "train.log"
BASELINE_FAMILY = "baseline"


@dataclass
class RunSpec:
    """One training run of the grid (or a baseline)."""

    name: str
    family: str
    model: str
    balancer: str
    seed: int
    out_dir: Path
    config: RunConfig
    baseline_key: str | None = None


@dataclass
class RunRecord:
    """What the bench knows about a finished (or failed) run."""

    spec: RunSpec
    status: str  # "ok" | "failed"
    how: str  # "trained" | "reused" | "cached" | "failed"
    wall_seconds: float | None = None
    peak_memory_mb: float | None = None
    returncode: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    seconds_per_epoch: float | None = None


@dataclass
class BenchResult:
    out_dir: Path
    records: list[RunRecord]
    baselines: list[RunRecord]
    summary: dict[str, Any]
    wall_seconds: float
    plots: list[Path] | None
    plots_error: str | None


# ------------------------------------------------------------------------------------------------ planning
def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _check_names(what: str, given: Sequence[str], known: Sequence[str]) -> None:
    bad = [name for name in given if name not in known]
    if bad:
        hints = "; ".join(f"{name!r}{did_you_mean(name, known)}" for name in bad)
        raise MtlkitError(f"unknown {what} {hints}; available: {listing(known, 40)}")
    repeated = sorted({n for n in given if list(given).count(n) > 1})
    if repeated:
        raise MtlkitError(f"{what} {listing(repeated)} named twice; name each once")


def _params(
    own: str, own_params: dict[str, Any], table: dict[str, dict[str, Any]], name: str
) -> dict[str, Any]:
    """Hyperparameters for ``name``: ``bench.<table>[name]``, else the config's own when it is the config's own
    name, else none (the defaults)."""
    if name in table:
        return dict(table[name] or {})
    if name == own:
        return dict(own_params)
    return {}


def plan(
    config: RunConfig,
    out_dir: Path,
    *,
    models: Sequence[str],
    balancers: Sequence[str],
    families: Sequence[str],
    seeds: Sequence[int],
    threads: int,
) -> list[RunSpec]:
    """Every run of the grid, validated (a bad model parameter is a ConfigError before anything starts).

    ``mtl`` runs every model x balancer x seed; each other family runs once per seed with the config's model and
    balancer, or the ones the family always trains (``Family.fixed_model`` / ``fixed_balancer``: multi_model's
    runs are named and summarised as single_task + static).
    """
    from mtlkit.balancing import list_balancers
    from mtlkit.families import family_class, list_families
    from mtlkit.models import list_models

    _check_names("model", models, list_models())
    _check_names("balancer", balancers, list_balancers())
    _check_names("family", families, list_families())
    if not seeds:
        raise MtlkitError("--seeds must be >= 1")
    base = config.to_dict()
    bench = config.bench
    specs: list[RunSpec] = []
    for family in families:
        family_params = _params(config.family.name, config.family.params, bench.family_params, family)
        if family == "mtl":
            combos = [(m, b) for m in models for b in balancers]
        else:
            kind = family_class(family)
            combos = [(kind.fixed_model or config.model.name, kind.fixed_balancer or config.balancer.name)]
        for model, balancer in combos:
            for seed in seeds:
                data = json.loads(json.dumps(base))
                data["seed"] = seed
                data["model"] = {
                    "name": model,
                    "params": _params(config.model.name, config.model.params, bench.model_params, model),
                }
                data["balancer"] = {
                    "name": balancer,
                    "params": _params(
                        config.balancer.name, config.balancer.params, bench.balancer_params, balancer
                    ),
                }
                data["family"] = {"name": family, "params": family_params}
                _limit_threads(data, threads)
                name = f"{family}__{model}__{balancer}__seed{seed}"
                run_config = RunConfig.from_dict(data, source=f"bench run {name}")
                specs.append(
                    RunSpec(name, family, model, balancer, seed, out_dir / "runs" / name, run_config)
                )
    return specs


def _limit_threads(data: dict[str, Any], threads: int) -> None:
    """No progress bars in the logs; torch threads capped at ``threads`` (jobs x threads <= cores).

    The cap goes through the child's environment (``OMP_NUM_THREADS``, which torch reads at start-up), so a run's
    configuration does not depend on ``--jobs`` and an interrupted run resumes under another ``--jobs``; only an
    explicit ``training.num_threads`` above the cap is lowered in the configuration.
    """
    training = data["training"]
    training["progress"] = False
    if training.get("num_threads") is not None and training["num_threads"] > threads:
        training["num_threads"] = threads


def plan_baselines(config: RunConfig, out_dir: Path, seeds: Sequence[int], threads: int) -> list[RunSpec]:
    """The single-task baseline of every seed (same data, training section and seed as the grid's runs)."""
    specs = []
    for seed in seeds:
        base = baseline_config(config, seed)
        key = key_of(key_material(base))
        data = base.to_dict()
        _limit_threads(data, threads)
        run_config = RunConfig.from_dict(data, source=f"bench baseline seed {seed}")
        specs.append(
            RunSpec(
                f"baseline__seed{seed}",
                BASELINE_FAMILY,
                base.model.name,
                "static",
                seed,
                out_dir / "baselines" / f"seed{seed}",
                run_config,
                baseline_key=key,
            )
        )
    return specs


# ------------------------------------------------------------------------------------------------ running
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _seconds_per_epoch(run_dir: Path) -> float | None:
    try:
        with (run_dir / "history.csv").open(newline="") as f:
            values = [float(row["seconds"]) for row in csv.DictReader(f) if row.get("seconds")]
    except (OSError, KeyError, ValueError):
        return None
    return sum(values) / len(values) if values else None


def _finish(record: RunRecord) -> RunRecord:
    run_dir = record.spec.out_dir
    record.metrics = _read_json(run_dir / "metrics.json")
    if record.metrics:
        record.status = "ok"
        epochs = record.metrics.get("epochs")
        record.epochs = int(epochs) if isinstance(epochs, int | float) else None
        record.seconds_per_epoch = _seconds_per_epoch(run_dir)
    saved = _read_json(run_dir / RUN_RECORD)
    if record.peak_memory_mb is None:
        record.peak_memory_mb = saved.get("peak_memory_mb")
    if record.wall_seconds is None:
        record.wall_seconds = saved.get("wall_seconds")
    return record


def train_child(spec: RunSpec, threads: int) -> RunRecord:
    """Train one run in a child process (``python -m mtlkit.cli train``); its output goes to ``train.log``."""
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "bench_config.yaml"
    config_file.write_text(spec.config.to_yaml())
    command = [sys.executable, "-m", "mtlkit.cli", "train", str(config_file), "--out", str(out)]
    if (out / "checkpoint.pt").exists():
        command.append("--resume")  # an interrupted run continues from its last checkpoint
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    started = time.perf_counter()
    with (out / LOG).open("w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    peak_mb = usage.ru_maxrss / 1024.0  # kilobytes on Linux
    record = RunRecord(spec, "failed", "trained", wall, peak_mb, proc.returncode)
    (out / RUN_RECORD).write_text(
        json.dumps(
            {
                "returncode": proc.returncode,
                "wall_seconds": wall,
                "peak_memory_mb": peak_mb,
                "command": command,
            },
            indent=2,
        )
    )
    _finish(record)
    if proc.returncode != 0:
        record.status = "failed"
    if record.status == "failed":
        record.how = "failed"
    return record


def train_in_process(spec: RunSpec, threads: int) -> RunRecord:
    """Train one run in this process (``train_run``), for tests and debugging: no process start-up cost, but no
    per-run memory figure, and runs share the process (use it with ``jobs=1``). A failure is written to the
    run's ``train.log`` and gives status ``failed``, as with :func:`train_child`."""
    import traceback

    from mtlkit.training.run import train_run

    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        train_run(spec.config, out, resume=(out / "checkpoint.pt").exists())
        returncode = 0
    except Exception:
        (out / LOG).write_text(traceback.format_exc())
        returncode = 1
    wall = time.perf_counter() - started
    (out / RUN_RECORD).write_text(json.dumps({"returncode": returncode, "wall_seconds": wall}, indent=2))
    record = _finish(RunRecord(spec, "failed", "trained", wall, None, returncode))
    if returncode != 0:
        record.status = record.how = "failed"
    return record


def _existing(spec: RunSpec) -> RunRecord | None:
    if (spec.out_dir / "metrics.json").is_file():
        return _finish(RunRecord(spec, "ok", "reused"))
    return None


# ------------------------------------------------------------------------------------------------ the bench
def run_bench(
    config: RunConfig,
    out_dir: str | Path,
    *,
    models: Sequence[str] | None = None,
    balancers: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    seeds: int = 1,
    jobs: int | None = None,
    main_task: str | None = None,
    baseline_cache: str | Path | None = None,
    console: Console | None = None,
    train: Callable[[RunSpec, int], RunRecord] | None = None,
) -> BenchResult:
    """Run the grid into ``out_dir`` (see the module docstring); returns the records and the summary.

    Seeds are ``config.seed, config.seed + 1, ...`` (``seeds`` of them). ``models`` / ``balancers`` /
    ``families`` default to the config's own. Everything is validated before any run starts. ``train`` runs one
    spec (default :func:`train_child`, a process per run; :func:`train_in_process` for tests).
    """
    runner = train if train is not None else train_child
    console = console or Console(highlight=False)
    out = Path(out_dir)
    models = list(models) if models else [config.model.name]
    balancers = list(balancers) if balancers else [config.balancer.name]
    families = list(families) if families else [config.family.name]
    if seeds < 1:
        raise MtlkitError(f"--seeds must be >= 1, got {seeds}")
    cores = available_cores()
    if jobs is None:
        jobs = cores
    if jobs < 1:
        raise MtlkitError(f"--jobs must be >= 1, got {jobs}")
    if jobs > cores:
        console.print(f"--jobs {jobs} is more than the {cores} cores available: running {cores} at a time")
        jobs = cores
    threads = max(1, cores // jobs)
    seed_list = [config.seed + i for i in range(seeds)]

    specs = plan(
        config, out, models=models, balancers=balancers, families=families, seeds=seed_list, threads=threads
    )
    base_specs = plan_baselines(config, out, seed_list, threads)
    schema = _data_schema(config)  # after the cheap checks of names: loading data takes a while
    if main_task is not None and main_task not in schema.task_names:
        raise MtlkitError(
            f"--main-task {main_task!r} is not a task{did_you_mean(main_task, schema.task_names)}; "
            f"tasks are {listing(schema.task_names)}"
        )
    _write_bench_json(
        out, config, models, balancers, families, seed_list, jobs, threads, main_task, base_specs
    )

    cache = BaselineCache(baseline_cache)
    started = time.perf_counter()
    base_records: dict[str, RunRecord] = {}
    records: dict[str, RunRecord] = {}
    todo: list[RunSpec] = []
    for spec in base_specs:
        found = _existing(spec)
        if found is None and spec.baseline_key is not None and cache.fetch(spec.baseline_key, spec.out_dir):
            found = _finish(RunRecord(spec, "ok", "cached"))
        if found is not None:
            base_records[spec.name] = found
        else:
            todo.append(spec)
    for spec in specs:
        found = _existing(spec)
        if found is not None:
            records[spec.name] = found
        else:
            todo.append(spec)
    reused = len(base_records) + len(records)
    console.print(
        f"bench [bold]{out}[/bold]: {len(specs)} runs + {len(base_specs)} baselines, {reused} already done, "
        f"{len(todo)} to train; {jobs} at a time x {threads} torch threads ({cores} cores)"
    )
    lock = threading.Lock()
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("training", total=len(todo))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(runner, spec, threads): spec for spec in todo}
            for future in as_completed(futures):
                spec = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # the runner itself failed (e.g. cannot start a process)
                    record = RunRecord(spec, "failed", "failed")
                    (spec.out_dir / LOG).parent.mkdir(parents=True, exist_ok=True)
                    with (spec.out_dir / LOG).open("a") as log:
                        log.write(f"\nbench: could not run: {exc!r}\n")
                with lock:
                    if spec.family == BASELINE_FAMILY:
                        base_records[spec.name] = record
                        if record.status == "ok" and spec.baseline_key is not None:
                            cache.store(spec.baseline_key, spec.out_dir, key_material(_baseline_of(spec)))
                    else:
                        records[spec.name] = record
                progress.advance(bar)
                _report(progress.console, record)
    wall = time.perf_counter() - started

    ordered_base = [base_records[s.name] for s in base_specs]
    ordered = [records[s.name] for s in specs]
    write_results(out / "results.csv", ordered_base + ordered, schema)
    summary = summarize(ordered_base, ordered, schema, main_task)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=_json_default))
    (out / "summary.md").write_text(summary_markdown(summary, ordered_base + ordered, out))
    plots, plots_error = _plots(out)
    failed = [r for r in ordered_base + ordered if r.status != "ok"]
    console.print(
        f"bench done in {wall:.0f} s: {len(ordered) + len(ordered_base) - len(failed)} ok, {len(failed)} failed; "
        f"wrote {out / 'results.csv'}, {out / 'summary.md'}"
    )
    for record in failed:
        console.print(f"[red]failed[/red] {record.spec.name}: see {record.spec.out_dir / LOG}")
    if plots_error is not None:
        console.print(f"[yellow]plots not written[/yellow]: {plots_error}")
    else:
        console.print(f"plots: {len(plots or [])} written into {out / 'plots'}")
    return BenchResult(out, ordered, ordered_base, summary, wall, plots, plots_error)


def _baseline_of(spec: RunSpec) -> RunConfig:
    data = spec.config.to_dict()
    return RunConfig.from_dict(data, source="baseline")


def _report(console: Console, record: RunRecord) -> None:
    spec = record.spec
    if record.status == "ok":
        test = record.metrics.get("test", {}).get("mean", {})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in list(test.items())[:2] if isinstance(v, float))
        time_text = f"{record.wall_seconds:.0f} s" if record.wall_seconds is not None else ""
        console.print(f"[green]ok[/green] {spec.name} {time_text} (test mean {shown})")
    else:
        console.print(f"[red]failed[/red] {spec.name} (exit {record.returncode}; log {spec.out_dir / LOG})")


def _data_schema(config: RunConfig) -> Schema:
    """The data set's Schema (its tasks are what every run is judged on)."""
    from mtlkit.training.run import build_splits

    return build_splits(config).schema


def _write_bench_json(
    out: Path,
    config: RunConfig,
    models: list[str],
    balancers: list[str],
    families: list[str],
    seeds: list[int],
    jobs: int,
    threads: int,
    main_task: str | None,
    base_specs: list[RunSpec],
) -> None:
    path = out / "bench.json"
    previous = _read_json(path) if path.exists() else {}
    if previous and previous.get("config") != config.to_dict():
        raise MtlkitError(
            f"{out} holds a bench of another configuration (see {path}); use another --out, or delete the folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "grid": {"models": models, "balancers": balancers, "families": families, "seeds": seeds},
        "jobs": jobs,
        "threads_per_job": threads,
        "main_task": main_task,
        "baseline": {
            "name": config.bench.baseline.get("name"),
            "params": config.bench.baseline.get("params") or {},
            "keys": {str(s.seed): s.baseline_key for s in base_specs},
        },
        "config": config.to_dict(),
    }
    path.write_text(json.dumps(record, indent=2))


def _plots(out: Path) -> tuple[list[Path] | None, str | None]:
    """``mtlkit.analysis.plots.bench_plots(out)``, guarded: a missing or failing plot function is reported."""
    try:
        from mtlkit.analysis.plots import bench_plots
    except ImportError as exc:
        return None, f"mtlkit.analysis.plots.bench_plots is not available ({exc})"
    try:
        return list(bench_plots(out)), None
    except Exception as exc:  # the plots are extra: the bench results stand without them
        return None, f"bench_plots({out}) failed: {type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------------ results
def _metric_columns(schema: Schema, records: Sequence[RunRecord]) -> list[str]:
    columns: list[str] = []
    for part in ("valid", "test"):
        for task in schema.task_names:
            names: list[str] = []
            for record in records:
                for metric in record.metrics.get(part, {}).get(task, {}):
                    if metric not in names:
                        names.append(metric)
            columns += [f"{part}_{task}_{m}" for m in names]
    return columns


RESULT_COLUMNS = (
    "model",
    "balancer",
    "family",
    "seed",
    "status",
    "run_dir",
    "epochs",
    "seconds_per_epoch",
    "peak_memory_mb",
)


def write_results(path: Path, records: Sequence[RunRecord], schema: Schema) -> None:
    """``results.csv``: one row per run (see the module docstring); empty cells where a value is missing."""
    metric_columns = _metric_columns(schema, records)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*RESULT_COLUMNS, *metric_columns])
        for r in records:
            s = r.spec
            row: list[Any] = [
                s.model,
                s.balancer,
                s.family,
                s.seed,
                r.status,
                os.path.relpath(s.out_dir, path.parent),
                _cell(r.epochs),
                _cell(r.seconds_per_epoch),
                _cell(r.peak_memory_mb),
            ]
            for column in metric_columns:
                part, rest = column.split("_", 1)
                value = _lookup(r.metrics, part, rest, schema)
                row.append(_cell(value))
            writer.writerow(row)


def _lookup(metrics: dict[str, Any], part: str, rest: str, schema: Schema) -> float | None:
    for task in sorted(schema.task_names, key=len, reverse=True):
        if rest.startswith(task + "_"):
            value = metrics.get(part, {}).get(task, {}).get(rest[len(task) + 1 :])
            return float(value) if isinstance(value, int | float) else None
    return None


def _cell(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def _test_values(records: Sequence[RunRecord], task: str, metric: str) -> list[float]:
    values = []
    for r in records:
        value = r.metrics.get("test", {}).get(task, {}).get(metric) if r.status == "ok" else None
        if isinstance(value, int | float) and math.isfinite(value):
            values.append(float(value))
    return values


def _mean(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return sum(xs) / len(xs) if xs else None


def summarize(
    baselines: Sequence[RunRecord], records: Sequence[RunRecord], schema: Schema, main_task: str | None
) -> dict[str, Any]:
    """``summary.json`` (format in docs: per task the test metric ``Task.metric``, mean +- std over seeds, MTL gain
    and verdict against the baseline; Delta_m and outcome per row)."""
    tasks = list(schema.task_names)
    metrics = {t: str(schema.task(t).metric) for t in tasks}
    higher = {t: metrics[t] in MAXIMIZED_METRICS for t in tasks}
    base_est: dict[str, Estimate] = {}
    for task in tasks:
        values = _test_values(baselines, task, metrics[task])
        if values:
            base_est[task] = Estimate.of(values)
    baseline_name = baselines[0].spec.model if baselines else None
    summary: dict[str, Any] = {
        "tasks": tasks,
        "metrics": metrics,
        "higher_is_better": higher,
        "main_task": main_task,
        "rule": RULE,
        "baseline": {
            "name": baseline_name,
            "per_task": {t: {"mean": e.mean, "std": e.std, "n": e.n} for t, e in base_est.items()},
            "seconds_per_epoch": _mean([r.seconds_per_epoch for r in baselines if r.status == "ok"]),
            "peak_memory_mb": _max([r.peak_memory_mb for r in baselines if r.status == "ok"]),
        },
        "rows": [],
    }
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.spec.model, r.spec.balancer, r.spec.family), []).append(r)
    for (model, balancer, family), group in groups.items():
        ok = [r for r in group if r.status == "ok"]
        if not ok:
            continue
        per_task: dict[str, Any] = {}
        verdicts: dict[str, Verdict] = {}
        for task in tasks:
            values = _test_values(ok, task, metrics[task])
            if not values:
                continue
            est = Estimate.of(values)
            entry: dict[str, Any] = {
                "mean": est.mean,
                "std": est.std,
                "n": est.n,
                "gain": None,
                "verdict": None,
            }
            if task in base_est:
                entry["gain"] = mtl_gain(est.mean, base_est[task].mean, higher[task])
                entry["verdict"] = verdicts[task] = task_verdict(est, base_est[task], higher[task])
            per_task[task] = entry
        judged = [t for t in tasks if t in per_task and t in base_est]
        complete = len(judged) == len(tasks)
        dm = None
        if complete and all(base_est[t].mean != 0 for t in tasks):
            dm = delta_m(
                [per_task[t]["mean"] for t in tasks],
                [base_est[t].mean for t in tasks],
                [higher[t] for t in tasks],
            )
        main = main_task if main_task in verdicts else None
        summary["rows"].append(
            {
                "model": model,
                "balancer": balancer,
                "family": family,
                "seeds": len(ok),
                "per_task": per_task,
                "delta_m": dm,
                "outcome": outcome(verdicts, main) if complete else None,
                "seconds_per_epoch": _mean([r.seconds_per_epoch for r in ok]),
                "peak_memory_mb": _max([r.peak_memory_mb for r in ok]),
            }
        )
    return summary


def _max(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return max(xs) if xs else None


def _pm(entry: dict[str, Any]) -> str:
    if entry["n"] > 1:
        return f"{entry['mean']:.4f} ± {entry['std']:.4f}"
    return f"{entry['mean']:.4f} (1 seed)"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def summary_markdown(summary: dict[str, Any], records: Sequence[RunRecord], out: Path) -> str:
    """``summary.md``: the table of ``summary.json`` (baseline row first) with the rule under it."""
    tasks = summary["tasks"]
    head = ["method", "seeds"]
    for t in tasks:
        arrow = "↑" if summary["higher_is_better"][t] else "↓"
        head += [f"{t} {summary['metrics'][t]} {arrow}", f"{t} gain", f"{t} verdict"]
    head += ["Δm %", "outcome", "s / epoch", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    base = summary["baseline"]
    row = [f"baseline ({base['name']})", str(max((e["n"] for e in base["per_task"].values()), default=0))]
    for t in tasks:
        entry = base["per_task"].get(t)
        row += [_pm(entry) if entry else "-", "", ""]
    row += ["0", "", _num(base.get("seconds_per_epoch"), ".2f"), _num(base.get("peak_memory_mb"), ".0f")]
    lines.append("| " + " | ".join(row) + " |")
    for r in summary["rows"]:
        method = (
            f"{r['model']} + {r['balancer']}" if r["family"] == "mtl" else f"{r['family']} ({r['model']})"
        )
        row = [method, str(r["seeds"])]
        for t in tasks:
            entry = r["per_task"].get(t)
            if entry is None:
                row += ["-", "-", "-"]
                continue
            gain = entry["gain"]
            row += [_pm(entry), "-" if gain is None else f"{gain:+.4f}", entry["verdict"] or "-"]
        row += [
            _num(r["delta_m"], "+.2f"),
            r["outcome"] or "-",
            _num(r["seconds_per_epoch"], ".2f"),
            _num(r["peak_memory_mb"], ".0f"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    text = ["# Bench summary", "", f"Bench folder: `{out}`. Test metrics, mean ± sample std over seeds.", ""]
    if summary["main_task"]:
        text += [f"Main task: {summary['main_task']}.", ""]
    text += lines
    text += ["", f"Rule: {summary['rule']}", ""]
    text += [
        "MTL gain (PLE paper, eq. 11): M_MTL - M_single where higher is better, M_single - M_MTL otherwise. "
        "Δm (Maninis et al. 2019): mean over tasks of the relative gain in %, positive = better than the "
        "single-task baseline. Time: mean seconds per training epoch (with validation); memory: peak resident "
        "memory of the training process (max over seeds).",
        "",
    ]
    failed = [r for r in records if r.status != "ok"]
    if failed:
        text += ["Failed runs (not in the table):", ""]
        text += [f"- {r.spec.name}: `{os.path.relpath(r.spec.out_dir / LOG, out)}`" for r in failed]
        text.append("")
    return "\n".join(text)


def parse_list(text: str | None, what: str) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]`` (None stays None); empty items are an error."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise MtlkitError(f"--{what} takes comma-separated names (e.g. a,b), got {text!r}")
    return items


__all__ = [
    "BenchResult",
    "ConfigError",
    "RunRecord",
    "RunSpec",
    "parse_list",
    "plan",
    "run_bench",
    "summarize",
    "summary_markdown",
    "write_results",
]
