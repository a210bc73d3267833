"""What the benchmark scripts share: interleaved timing rounds and medians, number formatting, the environment
and provenance fields of a JSON result, writing it, and the marked sections of ``docs/benchmarks.md``.

Each script writes one section of the benchmarks page, between ``<!-- name:start -->`` and ``<!-- name:end -->``,
and leaves every other section as it is. Scripts import this module as ``_common`` (they put their own folder on
``sys.path`` first, so that also works when a test loads a script from its path).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import statistics
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from mtlkit.training.memory import MMAP_THRESHOLD, TRIM_THRESHOLD, keep_freed_memory

ALLOCATORS = ("trainer", "default")
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_DOCS = REPO_ROOT / "docs" / "benchmarks.md"

DOCS_HEADER = """# Benchmarks

Speed measurements of mtlkit. Each section below is written by a script under `benchmarks/`, which also
writes its raw numbers (every timed round) to a JSON file under `benchmarks/results/`; re-run the script to
refresh its section. Other sections are left untouched.

Machine: 2 CPU cores, shared with other work and therefore noisy. Contenders are timed interleaved
(A, B, A, B, ...) so that noise hits them alike, and the numbers reported are medians over the rounds;
differences of a few percent are within the noise. Every section gives the command that produced it
(run from the repository root).
"""

R = TypeVar("R")


# ---------------------------------------------------------------------------------------------- timing
def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


#: resamples of the bootstrap interval of a median (median_interval)
BOOTSTRAP_RESAMPLES = 2000


def median_interval(xs: Sequence[float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A bootstrap percentile interval for the median of ``xs`` (per-round values): the medians of
    ``BOOTSTRAP_RESAMPLES`` resamples of the rounds (with replacement, a fixed seed, so a result file gives the
    same interval every time) and their ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. How far the
    reported median could move with other rounds on this machine; an interval, not a wall-clock guarantee."""
    values = np.asarray(list(xs), dtype=float)
    if values.size == 0:
        raise ValueError("median_interval needs at least one value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(BOOTSTRAP_RESAMPLES, values.size)), axis=1)
    low, high = np.quantile(medians, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def interleaved_rounds(
    repeats: int,
    contenders: Mapping[str, Callable[[int], R]],
    *,
    alternate: bool = True,
    before_round: Callable[[int], None] | None = None,
    after_round: Callable[[int, dict[str, R]], None] | None = None,
) -> dict[str, list[R]]:
    """Run every contender once per round, ``repeats`` rounds, and collect what each returns, per contender.

    ``contenders[name](r)`` measures contender ``name`` in round ``r`` (0-based) and returns its measurement.
    Contenders run one after the other in each round (A, B, A, B, ...), so that the machine's noise hits them
    alike; with ``alternate`` the order is reversed every other round (A, B, B, A, ...), so that neither always
    runs first. ``before_round(r)`` runs before a round's contenders and ``after_round(r, this round's
    measurements)`` after them.
    """
    out: dict[str, list[R]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        if before_round is not None:
            before_round(r)
        order = names[::-1] if alternate and r % 2 else names
        latest = {name: contenders[name](r) for name in order}
        for name in names:
            out[name].append(latest[name])
        if after_round is not None:
            after_round(r, {name: latest[name] for name in names})
    return out


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is unavailable): the difference over a
    timed block counts the pages the allocator handed back to the OS and had to fault in again."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


# ---------------------------------------------------------------------------------------------- numbers
def sig3(x: float) -> str:
    """A number to 3 significant digits with thousands separators (the machine is noisy); 0 and non-finite
    values as they are."""
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    exponent = math.floor(math.log10(x))
    return f"{round(x, 2 - exponent):,.{max(0, 2 - exponent)}f}"


def check_finite(values: Iterable[float], what: object) -> None:
    """Raise when a result that must be a finite number is not (``what`` is shown in the error)."""
    if not all(math.isfinite(v) for v in values):
        raise RuntimeError(f"non-finite result: {what}")


# ---------------------------------------------------------------------------------------------- provenance
def git_commit() -> str | None:
    """The repository's HEAD commit, or None outside a git checkout."""
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


def command_line(script: str, argv: list[str]) -> str:
    """The command that reproduces this run, from the repository root."""
    return shlex.join(["python", script, *argv])


def environment() -> dict[str, str]:
    """Software and platform fields of a JSON result."""
    return {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }


def provenance(command: str) -> dict[str, Any]:
    """The closing fields of a JSON result: when, at which commit, with which command."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": command,
    }


def provenance_line(result: Mapping[str, Any]) -> str:
    """The docs line naming the software, the time and the commit of a result."""
    commit = result.get("git_commit")
    return (
        f"torch {result['torch_version']}, Python {result['python_version']}, {result['timestamp']}"
        + (f", commit `{commit[:12]}`" if commit else "")
        + "."
    )


def docs_footer(result: Mapping[str, Any], section: str, raw: str = "Raw per-round timings") -> list[str]:
    """The closing lines of every benchmark's docs section: provenance, where the raw JSON is, the command."""
    return [
        provenance_line(result),
        f"{raw}: `benchmarks/results/{section}.json`. Command:",
        "",
        "```",
        result["command"],
        "```",
    ]


# ---------------------------------------------------------------------------------------------- arguments
def add_output_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    """``--json``, ``--docs`` and ``--no-docs``: where a script writes its result and which page it updates."""
    parser.add_argument(
        "--json", type=Path, default=RESULTS_DIR / f"{section}.json", help="where to write the JSON result"
    )
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="the benchmarks page to update")
    parser.add_argument("--no-docs", action="store_true", help="do not update the benchmarks page")


def add_allocator_argument(parser: argparse.ArgumentParser) -> None:
    """``--allocator``: ``trainer`` (glibc's malloc thresholds raised as ``mtlkit train`` raises them,
    ``training.keep_freed_memory``) or ``default`` (malloc left as the process found it)."""
    parser.add_argument(
        "--allocator",
        choices=ALLOCATORS,
        default="trainer",
        help="trainer: keep freed memory in the process as mtlkit train does (training.keep_freed_memory: "
        "glibc's malloc thresholds raised, so freed buffers are not faulted in again every step); default: "
        "leave malloc as it is",
    )


def apply_allocator(choice: str) -> dict[str, Any]:
    """Apply ``--allocator`` to this process (before anything is timed); the JSON record of what was done."""
    if choice == "default":
        return {"choice": choice, "applied": False, "reason": "malloc left as it is"}
    setting = keep_freed_memory()
    return {"choice": choice, "applied": setting.applied, "reason": setting.reason}


def allocator_sentence(record: Mapping[str, Any]) -> str:
    """One sentence for a docs section: how memory was allocated in the run."""
    if record["applied"]:
        return (
            "Memory: freed memory kept in the process, as `mtlkit train` does (`training.keep_freed_memory`: "
            f"glibc's malloc thresholds raised to {_binary_size(MMAP_THRESHOLD)} (mmap) and "
            f"{_binary_size(TRIM_THRESHOLD)} (trim), so the buffers a step frees are reused by the next one "
            "instead of going back to the OS and being faulted in again)."
        )
    return f"Memory: malloc as the process found it ({record['reason']})."


def _binary_size(n: int) -> str:
    """256 MiB, 1 GiB: a power-of-two byte count in its largest whole binary unit."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, names: Iterable[str]) -> None:
    """Exit with a usage error when one of the integer options ``names`` is < 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")


# ---------------------------------------------------------------------------------------------- outputs
def markers(section: str) -> tuple[str, str]:
    """The start and end markers of ``section`` in the benchmarks page."""
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


def update_docs(path: Path, section: str, text: str) -> None:
    """Replace what is between ``section``'s markers in ``path`` with ``text``.

    A missing file is created (with the page's header), a missing section is appended; every other section is
    left as it is. Markers that are duplicated or out of order are an error to fix by hand.
    """
    start, end = markers(section)
    block = f"{start}\n{text.strip()}\n{end}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{DOCS_HEADER}\n{block}\n", encoding="utf-8")
        return
    page = path.read_text(encoding="utf-8")
    starts, ends = page.count(start), page.count(end)
    if starts == 0 and ends == 0:
        path.write_text(page.rstrip("\n") + f"\n\n{block}\n", encoding="utf-8")
        return
    i, j = page.find(start), page.find(end)
    if starts != 1 or ends != 1 or j < i:
        raise SystemExit(
            f"{path}: expected one {start} followed by one {end}, found {starts} start "
            f"and {ends} end marker(s); fix the file by hand"
        )
    path.write_text(page[:i] + block + page[j + len(end) :], encoding="utf-8")


def write_json(path: Path, result: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def write_outputs(
    args: argparse.Namespace, section: str, result: Mapping[str, Any], docs_text: Callable[[], str]
) -> str:
    """Write the JSON result to ``args.json`` and, unless ``args.no_docs``, ``docs_text()`` into ``section`` of
    ``args.docs``; returns the line that says what was written."""
    write_json(args.json, result)
    if not args.no_docs:
        update_docs(args.docs, section, docs_text())
    return f"wrote {args.json}" + ("" if args.no_docs else f" and {args.docs}")
