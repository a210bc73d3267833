"""Loss scales: every registered loss weighting on two tasks whose losses differ by about a million times.

The MMoE synthetic data (``generate_synthetic``, 2 tasks, correlation 0.5) with its first task kept as a
regression whose labels are multiplied by 1000 (an MSE around 1e6 at the start) and its second task thresholded
at its training median into a binary task (a BCE around 0.69). One MMoE is trained per method and seed with the
same data, initialisation, batch order and budget; the table gives per-task TEST metrics: R^2 of the regression
task (1 - MSE / variance of its test labels: the same number in any unit, 1 = perfect, 0 = predicting the mean)
and AUC of the binary task. Reference runs with static weights (each task alone, and fixed weights where GradNorm
ends) give the levels a method must reach to "recover" a task. The data (seed 0) is the same for every seed; the
seed sets the initial model and the batch order.

    python benchmarks/loss_scales.py                            # every method, seeds 0-4, updates the docs
    python benchmarks/loss_scales.py --methods static gradnorm --seeds 0 --train-rows 500 --epochs 1 --no-docs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pyarrow as pa
import torch
from rich.console import Console

import _common
from mtlkit import Feature, Schema, Task
from mtlkit.data.columns import Origin
from mtlkit.data.datasets.synthetic import generate_synthetic
from mtlkit.data.table import Table
from mtlkit.metrics import roc_auc
from mtlkit.models import create_model
from mtlkit.training.trainer import Trainer, TrainingOptions
from mtlkit.weighting import create_weighting, list_weightings

SECTION = "loss_scales"
LABEL_SCALE = 1000.0
CORRELATION = 0.5
DATA_SEED = 0
MODEL = {"num_experts": 8, "expert_sizes": [16], "tower_sizes": [8]}  # the MMoE paper's census sizes


def build_tables(train_rows: int, test_rows: int, dim: int) -> tuple[Table, Table, dict[str, Any]]:
    """Train and test Tables: task ``big`` = 1000 x y1 (regression), task ``small`` = [y2 > train median]."""
    data = generate_synthetic(train_rows + test_rows, CORRELATION, tasks=2, dim=dim, seed=DATA_SEED)
    big = data.y[:, 0] * LABEL_SCALE
    threshold = float(np.median(data.y[:train_rows, 1]))
    small = (data.y[:, 1] > threshold).astype(np.float64)
    features = tuple(Feature(f"x{i + 1}", "numeric") for i in range(dim))
    schema = Schema(features, (Task("big", "regression"), Task("small", "binary")))
    columns: dict[str, Any] = {f.name: data.x[:, i] for i, f in enumerate(features)}
    columns.update({"big": big, "small": small})
    arrow = pa.table(columns)
    train = Table.from_arrow(arrow.slice(0, train_rows), schema, origin=Origin("<loss_scales train>"))
    test = Table.from_arrow(
        arrow.slice(train_rows, test_rows),
        schema,
        encoders=train.encoders,
        origin=Origin("<loss_scales test>"),
    )
    info = {
        "generator": f"generate_synthetic(rows={train_rows + test_rows}, correlation={CORRELATION}, tasks=2, "
        f"dim={dim}, seed={DATA_SEED})",
        "big": f"regression, labels y1 x {LABEL_SCALE:g} (train label sd {float(big[:train_rows].std()):.1f})",
        "small": f"binary, y2 > {threshold:.4f} (train median; test positive rate "
        f"{float(small[train_rows:].mean()):.3f})",
        "train_rows": train_rows,
        "test_rows": test_rows,
    }
    return train, test, info


#: Reference runs (static weights through the same model and budget), shown next to the methods:
#: name -> (weights (big, small), what it shows).
REFERENCES: dict[str, tuple[list[float], str]] = {
    "big alone": ([1.0, 0.0], "`big` trained alone (weights 1, 0): its single-task R^2"),
    "small alone": ([0.0, 1.0], "`small` trained alone (weights 0, 1): its single-task AUC"),
    "fixed 1e-4 : 2": (
        [1e-4, 2.0],
        "static weights (1e-4, 2), about where GradNorm ends, held fixed from the first step",
    ),
}


def run_one(
    method: str, seed: int, train: Table, test: Table, args: argparse.Namespace, **params: Any
) -> dict[str, Any]:
    """Train one MMoE with ``method`` and ``seed``; test R^2 (big), MSE (big, in label units) and AUC (small)."""
    torch.manual_seed(seed)  # the same initial model for every method
    model = create_model("mmoe", train.schema, **MODEL)
    balancer = create_weighting(method, train.schema, **params)
    options = TrainingOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        monitor=None,  # no early stopping: every method gets the same budget and keeps its last epoch
        patience=None,
        progress=False,
    )
    quiet = Console(quiet=True)  # no epoch lines: one line per run is printed instead
    trainer = Trainer(model, balancer, options, seed=seed, device="cpu", log=quiet)
    started = time.perf_counter()
    history = trainer.fit(train)
    seconds = time.perf_counter() - started
    predictions = trainer.predict(test)
    y_big = test.label("big").double()
    mse = float(((predictions["big"].double() - y_big) ** 2).mean())
    r2 = 1.0 - mse / float(y_big.var(unbiased=False))
    auc = roc_auc(predictions["small"], test.label("small"))
    last = [history[-1]["loss_big"], history[-1]["loss_small"]]
    weights = balancer.effective_weights(torch.tensor(last))
    return {
        "seed": seed,
        "big_r2": r2,
        "big_mse": mse,
        "small_auc": float(auc),
        "final_train_losses": last,
        "train_losses_per_epoch": [[row["loss_big"], row["loss_small"]] for row in history],
        "final_effective_weights": [float(w) for w in weights],
        "seconds": seconds,
    }


def run_seeds(
    label: str, method: str, train: Table, test: Table, args: argparse.Namespace, **params: Any
) -> dict[str, Any]:
    """Every seed of one method (or reference); a failure is recorded, and the benchmark goes on."""
    runs = []
    try:
        for seed in args.seeds:
            run = run_one(method, seed, train, test, args, **params)
            runs.append(run)
            print(
                f"{label} seed {seed}: big R^2 {run['big_r2']:.4f}, small AUC {run['small_auc']:.4f} "
                f"({run['seconds']:.1f}s)",
                file=sys.stderr,
            )
    except Exception as exc:  # another engineer's method failing must not hide the others' results
        traceback.print_exc()
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "runs": runs}
    return {"status": "ok", "runs": runs, "summary": _summary(runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=None, help="weightings to run (default: every one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--train-rows", type=int, default=10_000)
    parser.add_argument("--test-rows", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=100, help="inputs of the synthetic data")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the model is tiny)")
    _common.add_output_arguments(parser, SECTION)
    args = parser.parse_args(argv)
    _common.require_positive(
        parser, args, ["train_rows", "test_rows", "dim", "epochs", "batch_size", "threads"]
    )
    command = _common.command_line(
        "benchmarks/loss_scales.py", list(argv if argv is not None else sys.argv[1:])
    )
    torch.set_num_threads(args.threads)
    registered = list_weightings()
    methods = args.methods or registered
    unknown = [m for m in methods if m not in registered]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; registered: {registered}")
    train, test, data_info = build_tables(args.train_rows, args.test_rows, args.dim)
    started = time.perf_counter()
    references = {}
    for label, (weights, what) in REFERENCES.items():
        references[label] = {
            "weights": weights,
            "what": what,
            **run_seeds(label, "static", train, test, args, weights=weights),
        }
    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        try:
            create_weighting(method, train.schema)
        except Exception as exc:  # a method whose module is not written yet, or does not import
            results[method] = {"status": "not available", "error": f"{type(exc).__name__}: {exc}"}
            print(f"{method}: not available ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        results[method] = run_seeds(method, method, train, test, args)
    result = {
        "data": data_info,
        "model": {"name": "mmoe", **MODEL},
        "training": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "adam",
            "lr": args.lr,
            "early_stopping": None,
            "threads": args.threads,
        },
        "seeds": args.seeds,
        "references": references,
        "methods": results,
        "total_seconds": time.perf_counter() - started,
        **_common.environment(),
        **_common.provenance(command),
    }
    print(_common.write_outputs(args, SECTION, result, lambda: _docs(result)), file=sys.stderr)
    return 0


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for key in ("big_r2", "big_mse", "small_auc"):
        values = [r[key] for r in runs]
        out[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return out


#: A run "recovers" a task when its mean test metric is at most this far below the task trained alone.
RECOVERY_MARGIN = {"big_r2": 0.02, "small_auc": 0.02}


def _recovery(result: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, bool]]] | None:
    """Single-task levels (from the references) and, per method, which tasks it recovers; None without them."""
    refs = result["references"]
    if any(refs.get(k, {}).get("status") != "ok" for k in ("big alone", "small alone")):
        return None
    alone = {
        "big_r2": refs["big alone"]["summary"]["big_r2"]["mean"],
        "small_auc": refs["small alone"]["summary"]["small_auc"]["mean"],
    }
    verdicts = {}
    for m, r in result["methods"].items():
        if r["status"] == "ok":
            verdicts[m] = {k: r["summary"][k]["mean"] >= alone[k] - RECOVERY_MARGIN[k] for k in alone}
    return alone, verdicts


def _row(label: str, r: dict[str, Any], shown: tuple[bool, bool], recovered: str) -> str:
    if r["status"] != "ok":
        return f"| {label} | {r['status']} | | | | |"
    s = r["summary"]
    w = r["runs"][0]["final_effective_weights"]
    big = f"{s['big_r2']['mean']:.3f} +- {s['big_r2']['std']:.3f}" if shown[0] else "-"
    small = f"{s['small_auc']['mean']:.3f} +- {s['small_auc']['std']:.3f}" if shown[1] else "-"
    worst = f"{s['small_auc']['min']:.3f}" if shown[1] else "-"
    return f"| {label} | {big} | {small} | {worst} | {w[0]:.3g}, {w[1]:.3g} | {recovered} |"


def _docs(result: dict[str, Any]) -> str:
    data, training, model = result["data"], result["training"], result["model"]
    seeds = result["seeds"]
    lines = [
        "## Loss scales: a regression task in large units next to a binary task, every loss weighting",
        "",
        f"Data: {data['generator']}, {data['train_rows']:,} train / {data['test_rows']:,} test rows. Task `big`: "
        f"{data['big']}: its MSE starts around 1e6. Task `small`: {data['small']}: its BCE starts at 0.69. "
        f"Model: MMoE, {model['num_experts']} experts of {model['expert_sizes']}, towers {model['tower_sizes']}. "
        f"Training: Adam, lr {training['lr']}, batch {training['batch_size']}, {training['epochs']} epochs, no "
        f"early stopping (the last epoch is kept), {training['threads']} torch thread(s). For each seed every run "
        "starts from the same initial model and sees the same batches; every method runs with its default "
        "hyperparameters.",
        "",
        f"Test metrics, mean +- sd over seeds {', '.join(map(str, seeds))}. `big`: R^2 = 1 - MSE / variance of its "
        "test labels (unit-free: 1 is perfect, 0 is predicting the mean; MSE in label units = variance x "
        "(1 - R^2), both in the JSON). `small`: AUC. Weights: each task's effective weight d objective / d L_i "
        "at the end of training (first seed; a random draw for random methods). References (static weights "
        "through the same model and budget): "
        + "; ".join(f"*{k}*: {v['what']}" for k, v in result["references"].items())
        + ".",
        "",
        "| run | `big` R^2 | `small` AUC | `small` AUC, worst seed | end weights (big, small) | recovers both |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    shown = {"big alone": (True, False), "small alone": (False, True)}
    for label, r in result["references"].items():
        lines.append(_row(f"*{label}*", r, shown.get(label, (True, True)), ""))
    recovery = _recovery(result)
    for method, r in result["methods"].items():
        mark = ""
        if recovery is not None and method in recovery[1]:
            mark = "yes" if all(recovery[1][method].values()) else "**no**"
        lines.append(_row(f"`{method}`", r, (True, True), mark))
    lines += ["", *_verdict(result, recovery), ""]
    missing = {m: r for m, r in result["methods"].items() if r["status"] != "ok"}
    if missing:
        lines += [
            "Not run: " + "; ".join(f"`{m}` {r['status']} ({r['error']})" for m, r in missing.items()),
            "",
        ]
    lines += [
        f"Total {result['total_seconds']:.0f} s.",
    ]
    lines += _common.docs_footer(result, SECTION, raw="Raw results (every seed, final losses and weights)")
    return "\n".join(lines)


def _drop(run: dict[str, Any], half: int) -> float:
    """Relative fall of the ``big`` training loss from epoch ``half`` to the last epoch."""
    losses = [epoch[0] for epoch in run["train_losses_per_epoch"]]
    return 1.0 - losses[-1] / losses[max(0, half - 1)]


def _verdict(
    result: dict[str, Any], recovery: tuple[dict[str, float], dict[str, dict[str, bool]]] | None
) -> list[str]:
    """Plain sentences derived from the numbers: who recovers both tasks, and what equal weights do."""
    if recovery is None:
        return ["The single-task references did not run: no verdict."]
    alone, verdicts = recovery
    ok = {m: r["summary"] for m, r in result["methods"].items() if r["status"] == "ok"}
    both = [m for m, v in verdicts.items() if all(v.values())]
    lines = [
        f"A method recovers a task when its mean is at most {RECOVERY_MARGIN['big_r2']} R^2 / "
        f"{RECOVERY_MARGIN['small_auc']} AUC below the task trained alone (R^2 {alone['big_r2']:.3f}, AUC "
        f"{alone['small_auc']:.3f}).",
        "",
        "- **Recover both tasks:** " + (", ".join(f"`{m}`" for m in both) if both else "none") + ".",
    ]
    for m, v in verdicts.items():
        if all(v.values()):
            continue
        lost = []
        if not v["big_r2"]:
            lost.append(f"`big` (R^2 {ok[m]['big_r2']['mean']:.3f} vs {alone['big_r2']:.3f} alone)")
        if not v["small_auc"]:
            lost.append(f"`small` (AUC {ok[m]['small_auc']['mean']:.3f} vs {alone['small_auc']:.3f} alone)")
        lines.append(f"- **`{m}` loses** " + " and ".join(lost) + ".")
    if "static" in ok:
        auc = ok["static"]["small_auc"]["mean"]
        gap = alone["small_auc"] - auc
        if gap > RECOVERY_MARGIN["small_auc"]:
            lines.append(
                f"- **Equal weights (`static`) let the large loss dominate:** the shared experts follow the `big` "
                f"task, whose loss is about a million times larger, and the binary task reaches AUC {auc:.3f}, "
                f"{gap:.3f} below the {alone['small_auc']:.3f} it reaches alone (it stays well above 0.5: its own "
                "tower and gate get only its gradient, and Adam scales each parameter's step to its gradient)."
            )
        else:
            lines.append(f"- Equal weights (`static`) keep the binary task here (AUC {auc:.3f}).")
    fixed = result["references"].get("fixed 1e-4 : 2", {})
    if "gradnorm" in verdicts and not all(verdicts["gradnorm"].values()) and fixed.get("status") == "ok":
        f = fixed["summary"]
        runs = result["methods"]["gradnorm"]["runs"]
        ends = [r["final_effective_weights"][0] for r in runs]
        half = len(runs[0]["train_losses_per_epoch"]) // 2
        gn_drop = statistics.fmean(_drop(r, half) for r in runs)
        fixed_drop = statistics.fmean(_drop(r, half) for r in fixed["runs"])
        lines.append(
            "- **Why GradNorm loses here:** the `big` task's gradient at the shared representation is so much "
            "larger than the binary task's that GradNorm's rule drives the `big` weight from 1 down to "
            f"{min(ends):.2g}-{max(ends):.2g} (the floor is 1e-4) during training. The likely cause of the loss: "
            "Adam's second-moment estimates (beta2 = 0.999, a memory of about a thousand steps) still hold the "
            "gradients of weight 1, so the parameters the `big` loss dominated (its tower, the shared experts) "
            "take steps shrunk by about as much as the weight, and all but stop learning. Consistent with this, "
            f"`big`'s training loss falls by {gn_drop:.0%} over the second half of training under GradNorm, "
            f"against {fixed_drop:.0%} with the same end weights held fixed from the first step (*fixed 1e-4 : "
            f"2*), which reaches R^2 {f['big_r2']['mean']:.3f} and AUC {f['small_auc']['mean']:.3f}: the end "
            "point is good; moving the weights by orders of magnitude while Adam trains the model is what hurts."
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
