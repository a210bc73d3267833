"""``mtlkit bench CONFIG --models a,b --balancers x,y --seeds N --out DIR``: the bench grid (:mod:`mtlkit.bench`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    """Add the ``bench`` subcommand to the CLI's subparsers."""
    bench = commands.add_parser(
        "bench",
        help="train every model x balancer x seed, judge them against single-task baselines",
        description=(
            "Train every combination of --models x --balancers x seeds (and each other --families entry once per "
            "seed) as separate 'mtlkit train' processes, up to --jobs at a time; train or reuse the single-task "
            "baselines; write results.csv, summary.json, summary.md and plots into --out. Finished runs are not "
            "trained again when the command is repeated."
        ),
    )
    bench.add_argument("config", help="the run configuration (YAML) every run starts from")
    bench.add_argument("--out", required=True, help="the bench folder")
    bench.add_argument("--models", help="comma-separated model names (default: the config's model)")
    bench.add_argument("--balancers", help="comma-separated balancer names (default: the config's balancer)")
    bench.add_argument(
        "--families",
        help="comma-separated solution families, e.g. mtl,multi_model (default: the config's family); "
        "families other than mtl run once per seed with the config's model and balancer",
    )
    bench.add_argument(
        "--seeds", type=int, default=3, help="number of seeds: config seed, +1, ... (default 3)"
    )
    bench.add_argument("--jobs", type=int, help="runs at a time (default: the number of cores)")
    bench.add_argument(
        "--main-task", help="the main task (an auxiliary task may pay for its gain: 'well done')"
    )
    bench.add_argument(
        "--baseline-cache",
        help="folder of cached single-task baselines (default: $MTLKIT_BASELINE_CACHE, else "
        "~/.cache/mtlkit/baselines)",
    )
    bench.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a configuration value, e.g. --set training.epochs=3 (repeatable; values are YAML)",
    )
    bench.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    from mtlkit.bench import parse_list, run_bench
    from mtlkit.config import load_config

    config = load_config(args.config, args.overrides)
    result = run_bench(
        config,
        args.out,
        models=parse_list(args.models, "models"),
        balancers=parse_list(args.balancers, "balancers"),
        families=parse_list(args.families, "families"),
        seeds=args.seeds,
        jobs=args.jobs,
        main_task=args.main_task,
        baseline_cache=args.baseline_cache,
    )
    failed = [r for r in [*result.baselines, *result.records] if r.status != "ok"]
    return 1 if failed else 0
