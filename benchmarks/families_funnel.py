"""The four solution families side by side on the funnel generator: per-task AUC, the NDCG@10 of a fairly chosen
fused score against the ideal ranking, and training time (issue 8, item 6).

Every (family, model, seed) of ``examples/funnel_bench.yaml`` is trained as ``mtlkit bench`` trains it: the runs
come from :func:`mtlkit.bench.plan` (same data, epochs, batch size, learning rate and early stopping for all;
family parameters from ``bench.family_params``) and each is trained in its own process by
:func:`mtlkit.bench.train_child` (``python -m mtlkit.cli train``; peak memory is the child's ``ru_maxrss``).
The bench's single-task baselines are not trained: ``multi_model`` is that baseline here.

Then, for each run, the fused score is chosen the same way for every family: the weights of
``click^a * conversion^b * price^c`` are searched on the validation split (:func:`mtlkit.fusion.search_fusion`,
grid over the simplex, target ``ndcg:true_value@10``: NDCG@10 per request with the expected revenue
``true_ctr * true_cvr * price`` as gain) and the chosen fusion is measured on the test split. Families with one
score (sample_weighting, pairwise_ltr) give it to both tasks, so their search is over ``score^(a+b) * price^c``.
References on the same test split: the ideal ranking (``true_value``, 1 by construction), ``true_ctr`` alone,
``true_ctr * true_cvr`` (expected conversions, no price), ``price`` alone and a random order.

``--real`` also trains every family for one epoch on the AliExpress and Ali-CCP samples (``shared/data``, a format
check: does each family train and report per-task metrics on that layout?).

Two data settings (``--variants``): the generator's defaults (10,000 users, 2,000 items) and denser ids (1,000
users, 500 items, up to 10 epochs), both 1,000,000 impressions at a 0.5 % conversion rate.

    python benchmarks/families_funnel.py --real                 # seeds 0 1 2, mmoe and esmm, updates the docs
    python benchmarks/families_funnel.py --seeds 0 --real --no-docs
    python benchmarks/families_funnel.py --quick --no-docs      # tiny sizes, 1 epoch, in one process (smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

import _common
from mtlkit.bench import RUN_RECORD, RunSpec, available_cores, plan, train_child, train_in_process
from mtlkit.config import RunConfig, load_config
from mtlkit.data.paths import ENV_VAR
from mtlkit.errors import MtlkitError
from mtlkit.fusion import Fusion, FusionData, SearchSpace, evaluate_fusion, search_fusion
from mtlkit.metrics import grouped_ndcg
from mtlkit.training.run import build_splits, load_run, train_run

SECTION = "families_funnel"
FAMILIES = ("mtl", "multi_model", "sample_weighting", "pairwise_ltr")
TARGET = "ndcg:true_value@10"
K = 10
#: Data settings, each a table: name -> (title, overrides applied after the config and --set).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("Generator defaults: 10,000 users, 2,000 items", []),
    "dense": (
        "Denser ids: 1,000 users, 500 items, up to 10 epochs (validation AUC still rose at epoch 6)",
        ["data.params.users=1000", "data.params.items=500", "training.epochs=10"],
    ),
}
#: Tiny sizes of --quick: a few seconds in one process.
QUICK = [
    "data.params.impressions=4000",
    "data.params.users=300",
    "data.params.items=100",
    "training.epochs=1",
    "training.batch_size=256",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="examples/funnel_bench.yaml", help="the bench configuration")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (data fixed)")
    parser.add_argument("--models", nargs="+", default=["mmoe", "esmm"], help="models of the mtl family")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), help="families to train")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config overrides")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="data settings to run"
    )
    parser.add_argument("--grid", type=int, default=21, help="grid levels of the fusion search (3 weights)")
    parser.add_argument("--quick", action="store_true", help="tiny funnel, 1 epoch, one seed, in process")
    parser.add_argument("--in-process", action="store_true", help="train in this process (no peak memory)")
    parser.add_argument("--real", action="store_true", help="also the format check on the real samples")
    parser.add_argument("--no-funnel", action="store_true", help="skip the funnel part (with --real)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="root of the real data (default: $MTLKIT_DATA_DIR, else ../shared/data beside the repository)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the run folders here (default: a temporary folder); "
        "runs already finished there are reused",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite the docs section from the JSON result at --json",
    )
    _common.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    if args.render_only:
        saved = json.loads(args.json.read_text())
        _common.update_docs(args.docs, SECTION, _docs(saved))
        print(f"rewrote the {SECTION} section of {args.docs} from {args.json}", file=sys.stderr)
        return 0
    if args.grid < 2:
        parser.error("--grid must be >= 2")
    command = _common.command_line(
        "benchmarks/families_funnel.py", list(argv if argv is not None else sys.argv[1:])
    )
    overrides = [*(QUICK if args.quick else []), *args.overrides]
    seeds = args.seeds[:1] if args.quick else args.seeds
    started = time.perf_counter()
    result: dict[str, Any] = {"config": args.config, "overrides": overrides, "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work if args.work is not None else Path(tmp)
        if not args.no_funnel:
            in_process = args.in_process or args.quick
            result["funnel"] = {}
            for name in args.variants[:1] if args.quick else args.variants:
                title, extra = VARIANTS[name]
                config = load_config(args.config, [*overrides, *extra])
                part = run_funnel(config, work / "funnel" / name, args, seeds, in_process)
                result["funnel"][name] = {"title": title, "overrides": [*overrides, *extra], **part}
        if args.real:
            result["real"] = run_real(work / "real", _real_data_dir(args.data_dir))
    result["wall_seconds"] = time.perf_counter() - started
    result.update(_common.environment())
    result.update(_common.provenance(command))
    print(_common.write_outputs(args, SECTION, result, lambda: _docs(result)), file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------ funnel
def run_funnel(
    config: RunConfig, work: Path, args: argparse.Namespace, seeds: list[int], in_process: bool
) -> dict[str, Any]:
    threads = available_cores()
    base = config.to_dict()
    specs = plan(
        config,
        work,
        models=args.models,
        balancers=[config.balancer.name],
        families=args.families,
        seeds=seeds,
        threads=threads,
    )
    for spec in specs:  # the evaluation below loads the data once: every run must read the same data
        if spec.config.to_dict()["data"] != base["data"]:
            raise MtlkitError(f"run {spec.name} reads other data than the configuration")
    records = []
    for spec in specs:
        records.append(_train(spec, threads, in_process))
    splits = build_splits(config)
    valid_truth, test_truth = (FusionData.from_table(t, {}) for t in (splits.valid, splits.test))
    space = SearchSpace("product", ("click", "conversion"), ("price",))
    fixed = Fusion("product", {"click": 0.0, "conversion": 1.0}, {"price": 1.0})
    runs = []
    for spec, record in zip(specs, records, strict=True):
        if record["status"] != "ok":
            runs.append(record)
            continue
        run = load_run(spec.out_dir, device="cpu")
        data = {
            part: FusionData.from_table(table, run.task_scores(table))
            for part, table in (("valid", splits.valid), ("test", splits.test))
        }
        search = search_fusion(data["valid"], TARGET, space, grid=args.grid)
        record["fusion"] = {
            "weights": {**search.fusion.weights, **search.fusion.values},
            "method": search.method,
            "candidates": search.trials,
            "search_seconds": search.seconds,
            "valid_ndcg": search.value,
            "test_ndcg": evaluate_fusion(search.fusion, data["test"], TARGET)["target"],
        }
        record["fixed_conversion_x_price"] = {
            part: evaluate_fusion(fixed, data[part], TARGET)["target"] for part in ("valid", "test")
        }
        runs.append(record)
        print(
            f"{spec.name}: test AUC click {record['test']['click']['auc']:.4f} conversion "
            f"{record['test']['conversion']['auc']:.4f}; fused NDCG@{K} valid {search.value:.4f} test "
            f"{record['fusion']['test_ndcg']:.4f}",
            file=sys.stderr,
        )
    return {
        "families": args.families,
        "models": args.models,
        "seeds": seeds,
        "threads": threads,
        "in_process": in_process,
        "training": {
            "epochs": config.training.epochs,
            "batch_size": config.training.batch_size,
            "lr": config.training.lr,
            "weight_decay": config.training.weight_decay,
            "monitor": config.training.early_stopping.monitor,
            "patience": config.training.early_stopping.patience,
        },
        "data_params": dict(config.data.params or {}),
        "split_note": splits.note,
        "rows": {"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test)},
        "rates": _rates(splits),
        "fusion_search": {"target": TARGET, "space": "click^a * conversion^b * price^c", "grid": args.grid},
        "references": _references(test_truth, valid_truth),
        "runs": runs,
        "summary": _summarise(runs),
        "training_wall_seconds": sum(r["wall_seconds"] or 0.0 for r in runs),
    }


def _train(spec: RunSpec, threads: int, in_process: bool) -> dict[str, Any]:
    """Train one run (or reuse a finished one in ``spec.out_dir``) and read back its record."""
    done = (spec.out_dir / "metrics.json").is_file()
    if not done:
        print(f"training {spec.name} ...", file=sys.stderr)
        record = (train_in_process if in_process else train_child)(spec, threads)
        if record.status != "ok":
            log = spec.out_dir / "train.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            print(f"{spec.name} failed:\n{tail}", file=sys.stderr)
    saved = (
        json.loads((spec.out_dir / RUN_RECORD).read_text()) if (spec.out_dir / RUN_RECORD).exists() else {}
    )
    out: dict[str, Any] = {
        "name": spec.name,
        "family": spec.family,
        "model": spec.model,
        "seed": spec.seed,
        "status": "ok" if (spec.out_dir / "metrics.json").is_file() else "failed",
        "reused": done,
        "wall_seconds": saved.get("wall_seconds"),
        "peak_memory_mb": saved.get("peak_memory_mb"),
    }
    if out["status"] != "ok":
        return out
    metrics = json.loads((spec.out_dir / "metrics.json").read_text())
    seconds = _history_seconds(spec.out_dir / "history.csv")
    out.update(
        {
            "valid": metrics["valid"],
            "test": metrics["test"],
            "best_epoch": metrics["best_epoch"],
            "epochs": metrics["epochs"],
            "epoch_seconds": seconds,
            "train_seconds": sum(seconds),
            "note": metrics["note"],
        }
    )
    return out


def _history_seconds(path: Path) -> list[float]:
    import csv

    with path.open(newline="") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def _rates(splits: Any) -> dict[str, float]:
    out = {}
    for part in ("train", "valid", "test"):
        table = getattr(splits, part)
        out[f"{part}_ctr"] = float(table.label("click").mean())
        out[f"{part}_conversion_rate"] = float(table.label("conversion").mean())
    return out


def _references(test: FusionData, valid: FusionData) -> dict[str, dict[str, float]]:
    """NDCG@10 (gain true_value, per request) and the task AUCs of scores built from the ground truth."""
    out = {}
    for name, data in (("test", test), ("valid", valid)):
        v = data.values
        generator = torch.Generator().manual_seed(0)
        scores = {
            "true_value (ideal)": v["true_value"],
            "true_ctr * true_cvr": v["true_ctr"] * v["true_cvr"],
            "true_ctr": v["true_ctr"],
            "price": v["price"],
            "random": torch.rand(len(data), generator=generator, dtype=torch.float64),
        }
        assert data.groups is not None
        out[name] = {
            label: grouped_ndcg(s.to(torch.float64), v["true_value"].to(torch.float64), data.groups, K)
            for label, s in scores.items()
        }
    ceiling = FusionData(
        scores={
            "click": test.values["true_ctr"],
            "conversion": test.values["true_ctr"] * test.values["true_cvr"],
        },
        labels=test.labels,
    )
    from mtlkit.fusion import task_aucs

    out["test_auc_of_true_probabilities"] = task_aucs(ceiling)
    return out


def _mean_sd(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "sd": math.nan, "n": 0, "median": math.nan, "min": math.nan}
    return {
        "mean": statistics.fmean(finite),
        "sd": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "n": len(finite),
        "median": statistics.median(finite),
        "min": min(finite),
    }


def _summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        rows.setdefault((run["family"], run["model"]), []).append(run)
    out = []
    for (family, model), group in rows.items():
        ok = [r for r in group if r["status"] == "ok"]
        row: dict[str, Any] = {
            "family": family,
            "model": model if family in ("mtl", "sample_weighting", "pairwise_ltr") else "single_task x2",
            "seeds": len(group),
            "ok": len(ok),
        }
        if ok:
            row.update(
                {
                    "auc_click": _mean_sd([r["test"]["click"]["auc"] for r in ok]),
                    "auc_conversion": _mean_sd([r["test"]["conversion"]["auc"] for r in ok]),
                    "ndcg_valid": _mean_sd([r["fusion"]["valid_ndcg"] for r in ok]),
                    "ndcg_test": _mean_sd([r["fusion"]["test_ndcg"] for r in ok]),
                    "ndcg_fixed_test": _mean_sd([r["fixed_conversion_x_price"]["test"] for r in ok]),
                    "weights": [r["fusion"]["weights"] for r in ok],
                    "epochs": [r["epochs"] for r in ok],
                    "seconds_per_epoch": _mean_sd([s for r in ok for s in r["epoch_seconds"]]),
                    "train_seconds": _mean_sd([r["train_seconds"] for r in ok]),
                    "wall_seconds": _mean_sd([r["wall_seconds"] for r in ok]),
                    "peak_memory_mb": _mean_sd([r["peak_memory_mb"] for r in ok if r["peak_memory_mb"]]),
                }
            )
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ real samples
def _real_data_dir(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return _common.REPO_ROOT.parent / "shared" / "data"


#: data set -> (data params, conversion task name)
REAL = {
    "aliexpress": ({"valid_fraction": 0.1}, "conversion"),
    "ali_ccp": ({"group": "101"}, "purchase"),  # field 101 (user id) as the group, so pairwise_ltr can pair
}


def real_config(dataset: str, family: str, data_dir: Path) -> RunConfig:
    """One epoch of ``family`` on a real sample: MMoE (ESMM-free, so every family can use it), batch 32."""
    params, conversion = REAL[dataset]
    family_params: dict[str, Any] = {
        "mtl": {},
        "multi_model": {"model_params": {"bottom_sizes": [32], "tower_sizes": [16]}},
        "sample_weighting": {"actions": {conversion: 1.0, "click": 0.2}},
        "pairwise_ltr": {"order": [conversion, "click"]},
    }[family]
    return RunConfig.from_dict(
        {
            "seed": 0,
            "data": {"dataset": dataset, "params": {"data_dir": str(data_dir), **params}},
            "model": {
                "name": "mmoe",
                "params": {"num_experts": 2, "expert_sizes": [32], "tower_sizes": [16]},
            },
            "family": {"name": family, "params": family_params},
            "training": {
                "epochs": 1,
                "batch_size": 32,
                "lr": 0.001,
                "progress": False,
                # tiny validation parts may hold no positive, where AUC is undefined
                "early_stopping": {"monitor": "valid.mean.logloss", "patience": None},
            },
        },
        source=f"families_funnel real {dataset} {family}",
    )


def run_real(work: Path, data_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"data_dir": str(data_dir), "runs": []}
    for dataset in REAL:
        for family in FAMILIES:
            entry: dict[str, Any] = {"dataset": dataset, "family": family}
            started = time.perf_counter()
            try:
                result = train_run(real_config(dataset, family, data_dir), work / dataset / family)
                entry.update(
                    {
                        "status": "ok",
                        "rows": {p: len(getattr(result.splits, p)) for p in ("train", "valid", "test")},
                        "test": result.metrics["test"],
                        "note": result.metrics["note"],
                    }
                )
                if family == "pairwise_ltr":
                    entry["train_pairs"] = _pairs(result.splits.train)
            except Exception as exc:  # a family that cannot run here is reported, not fatal
                entry.update({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
                traceback.print_exc()
            entry["seconds"] = time.perf_counter() - started
            out["runs"].append(entry)
            print(f"real {dataset} {family}: {entry['status']}", file=sys.stderr)
    return out


def _pairs(table: Any) -> int:
    """Pairs (i, j) of the same group with grade_i > grade_j in a pairwise_ltr training Table (labels = grades)."""
    grades, groups = table.labels[:, 0], table.groups
    known = ~torch.isnan(grades)
    total = 0
    for group in torch.unique(groups[known]):
        g = grades[known & (groups == group)]
        total += int((g.unsqueeze(1) > g.unsqueeze(0)).sum())
    return total


# ------------------------------------------------------------------------------------------------ docs
def _f(stat: dict[str, float] | None, digits: int = 4) -> str:
    if not stat or not math.isfinite(stat.get("mean", math.nan)):
        return "-"
    if stat["n"] > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def _time(stat: dict[str, float] | None) -> str:
    """Median (min) of a timing: the machine is shared, so the minimum is the least disturbed measurement."""
    if not stat or not stat["n"]:
        return "-"
    return f"{_common.sig3(stat['median'])} ({_common.sig3(stat['min'])})"


def _reading(funnel: dict[str, Any]) -> list[str]:
    """A few sentences computed from the numbers (so that they stay true when the script is re-run)."""
    rows = [r for r in funnel["summary"] if r["ok"]]
    if len(rows) < 2:
        return []
    by_ndcg = sorted(rows, key=lambda r: r["ndcg_test"]["mean"], reverse=True)
    best, worst = by_ndcg[0], by_ndcg[-1]
    spread = best["ndcg_test"]["mean"] - worst["ndcg_test"]["mean"]
    seeds = min(r["ndcg_test"]["n"] for r in rows)
    noise = max(r["ndcg_test"]["sd"] for r in rows)
    refs = funnel["references"]["test"]
    ceiling = funnel["references"]["test_auc_of_true_probabilities"]
    top_click = max(r["auc_click"]["mean"] for r in rows)
    top_conv = max(r["auc_conversion"]["mean"] for r in rows)
    gains = [r["ndcg_test"]["mean"] - r["ndcg_fixed_test"]["mean"] for r in rows]

    def name(r: dict[str, Any]) -> str:
        return f"{r['family']} ({r['model']})"

    def place(label: str, ref: float) -> str:
        top, bottom = best["ndcg_test"]["mean"], worst["ndcg_test"]["mean"]
        where = (
            "every family above"
            if bottom > ref
            else "every family below"
            if top < ref
            else "some above, some below"
        )
        return f"{where} {label} ({ref:.4f})"

    per_user = funnel["rows"]["train"] / max(int(funnel["data_params"].get("users", 1)), 1)
    lines = [
        "",
        f"Reading (computed from the numbers above): the fused NDCG@10 of the families spans {spread:.4f} "
        f"(best {name(best)} {best['ndcg_test']['mean']:.4f}, last {name(worst)} "
        f"{worst['ndcg_test']['mean']:.4f})"
        + (
            f", against a seed-to-seed sd of up to {noise:.4f}"
            if seeds > 1
            else " (one seed: no seed noise known)"
        )
        + f". Ranking: {place('the true CTR alone', refs['true_ctr'])}; {place('price alone', refs['price'])}; "
        f"{place('a random order', refs['random'])}; the ideal ranking is 1. The learnt task scores stay far from the true probabilities (best test AUC "
        f"click {top_click:.4f} vs {ceiling['click']:.4f}, conversion {top_conv:.4f} vs "
        f"{ceiling['conversion']:.4f}), with about {per_user:.0f} training impressions per user. Searching the "
        f"fusion instead of the fixed `conversion x price` changes the test NDCG@10 by "
        f"{min(gains):+.4f} to {max(gains):+.4f} depending on the family.",
    ]
    return lines


def _weights(ws: list[dict[str, float]]) -> str:
    return "; ".join(f"{w['click']:.2f} / {w['conversion']:.2f} / {w['price']:.2f}" for w in ws)


def _docs(result: dict[str, Any]) -> str:
    lines = ["## Solution families on the funnel (benchmarks/families_funnel.py)"]
    for funnel in (result.get("funnel") or {}).values():
        t = funnel["training"]
        rows = funnel["rows"]
        rates = funnel["rates"]
        lines += [
            "",
            f"### {funnel['title']}",
            "",
            f"Data: {funnel['split_note']}. Rows train / valid / test {rows['train']:,} / {rows['valid']:,} / "
            f"{rows['test']:,}; test CTR {rates['test_ctr']:.4f}, test conversion rate "
            f"{rates['test_conversion_rate']:.4%}.",
            "",
            f"Same budget for every family: at most {t['epochs']} epochs, batch {t['batch_size']}, Adam lr "
            f"{t['lr']:g}, weight decay {t.get('weight_decay', 0.0):g}, early stopping on `{t['monitor']}` (patience {t['patience']}) with the best epoch "
            f"restored; model seeds {', '.join(map(str, funnel['seeds']))} on the same data (config "
            f"`{result['config']}`{', overrides ' + ', '.join(f'`{o}`' for o in funnel['overrides']) if funnel['overrides'] else ''}). "
            "mtl: MMoE (4 experts of 64, towers 32) or ESMM (towers 64, 32); multi_model: one single_task "
            "network per task (bottom 64, tower 32, nothing shared); sample_weighting: the same MMoE on one "
            "label `any` (conversion 1.0, click 0.2, negatives 1.0); pairwise_ltr: the same MMoE, RankNet pairs "
            "within a request by the order conversion > click > impression.",
            "",
            f"Fused score: the weights of `click^a * conversion^b * price^c` searched on the validation split "
            f"(grid of {funnel['fusion_search']['grid']} levels over the simplex, "
            f"`mtlkit.fusion.search_fusion`, target `{TARGET}`: NDCG@{K} per request with gain `true_value` = "
            f"true_ctr * true_cvr * price), then measured on the test split. Families with one score give it to "
            f"both tasks. AUCs are each family's own task scores on the test split (sample_weighting and "
            f"pairwise_ltr: their one score for both tasks).",
            "",
            "| family | model | test AUC click | test AUC conversion | NDCG@10 test (fused) | NDCG@10 valid "
            "(searched) | NDCG@10 test, conversion x price | weights a / b / c (per seed) | epochs | s / epoch "
            "| s / run | peak MB |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for row in funnel["summary"]:
            if not row["ok"]:
                lines.append(f"| {row['family']} | {row['model']} | failed | | | | | | | | | |")
                continue
            lines.append(
                f"| {row['family']} | {row['model']} | {_f(row['auc_click'])} | {_f(row['auc_conversion'])} | "
                f"{_f(row['ndcg_test'])} | {_f(row['ndcg_valid'])} | {_f(row['ndcg_fixed_test'])} | "
                f"{_weights(row['weights'])} | {', '.join(map(str, row['epochs']))} | "
                f"{_time(row['seconds_per_epoch'])} | {_time(row['wall_seconds'])} | "
                f"{_f(row['peak_memory_mb'], 0)} |"
            )
        refs = funnel["references"]
        ceiling = refs["test_auc_of_true_probabilities"]
        lines += [
            "",
            f"References on the same test split, NDCG@{K} (gain true_value): "
            + ", ".join(f"{name} {value:.4f}" for name, value in refs["test"].items())
            + f". AUC of the true probabilities (the ceiling): click (true_ctr) {ceiling['click']:.4f}, "
            f"conversion (true_ctr * true_cvr) {ceiling['conversion']:.4f}.",
            "",
            "Mean ± sd over the seeds; weights normalised to sum 1 (only ratios matter). s / epoch: median "
            "(min) over every epoch of every seed, one pass over the training split plus the validation pass "
            "(history.csv); s / run: median (min) of the training process's wall time (data generation, "
            "training, test evaluation); peak MB: its peak resident memory, mean ± sd. "
            f"{funnel['threads']} torch threads, `nice`, on the shared 2-core machine. All "
            f"{len(funnel['runs'])} training runs together: {funnel['training_wall_seconds'] / 60:.1f} min.",
        ]
        lines += _reading(funnel)
    real = result.get("real")
    if real is not None:
        lines += [
            "",
            "Format check on the real samples in `shared/data` (one epoch each, MMoE 2 experts of 32, batch 32; "
            "Ali-CCP with field 101, the user id, as the group and not an input; the samples have 120 "
            "(AliExpress) and 200 (Ali-CCP) rows, so the numbers only show that every family trains and reports "
            "per-task metrics; the logloss of sample_weighting and pairwise_ltr is that of their one score read "
            "as a probability of each task, which it is not trained to be):",
            "",
            "| data set | family | status | test metrics |",
            "|---|---|---|---|",
        ]
        for entry in real["runs"]:
            if entry["status"] == "ok":
                metrics = "; ".join(
                    f"{task}: "
                    + ", ".join(f"{m} {v:.3f}" for m, v in values.items() if m in ("auc", "logloss"))
                    for task, values in entry["test"].items()
                    if task != "mean"
                )
                if entry.get("train_pairs") == 0:
                    metrics += (
                        " (0 training pairs: no group of the training split holds two different grades, so the "
                        "pairwise loss is 0 and the model keeps its initial weights)"
                    )
                elif "train_pairs" in entry:
                    metrics += f" ({entry['train_pairs']} training pairs)"
            else:
                metrics = entry["error"].replace("|", "/")
            lines.append(f"| {entry['dataset']} | {entry['family']} | {entry['status']} | {metrics} |")
    reused = sum(r.get("reused", False) for f in (result.get("funnel") or {}).values() for r in f["runs"])
    lines += [
        "",
        f"Whole script: {result['wall_seconds'] / 60:.1f} min"
        + (f" ({reused} runs reused from an earlier call with the same --work)." if reused else "."),
    ]
    lines += _common.docs_footer(result, SECTION, raw="Raw results (every run and seed)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
