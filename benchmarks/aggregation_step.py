"""Gradient aggregation step: the cost of every mtlkit gradient aggregator relative to equal weights, on MMoE.

One training step = forward of mtlkit's MMoE on a batch of 1024 rows, the T binary cross-entropy losses of
``mtlkit.losses.LossSet`` (what the Trainer uses),
``zero_grad``, ``mtl_backward(losses, model, balancer, shared=Output.shared, mix=Output.mix)`` (as the Trainer) and a
``torch.optim.Adam(fused=True)`` step (lr 1e-3). The reference is the equal-weight step: the loss weighting
``static`` (``create_weighting("static", schema)``, one backward of the loss sum). Every aggregator of
``list_aggregators()`` is timed in both modes:

* ``parameter``: per-task gradients of the shared parameters (embeddings + experts): one backward through the
  towers and the gates (MMoE reports its gated mix, ``Output.mix``), then, at the paper size (numeric inputs: the
  experts are all that is shared), the experts' closed form (``mtlkit.models.layers.ExpertsTrace``: one product
  for all tasks); at the production size (shared embeddings) T vector-Jacobian products from the tower inputs,
  by the engine's rule (``mtlkit.backward.jacobian_strategy``: one per task above 100,000 shared parameters on
  CPU);
* ``representation``: per-task gradients at ``Output.shared`` (the experts' outputs), through the gates and towers
  only (MMoE reports its gated mix, ``Output.mix``, so the engine forms them from one backward through the towers
  and an outer product with the gate weights), then one backward.

Sizes are those of ``benchmarks/model_step.py`` (``paper``: 100 numeric inputs, 8 experts of [16], towers [8];
``production``: 20 categorical (vocabulary 1,000, dim 16) + 180 numeric = 500 inputs, 8 experts of [256, 128],
towers [64]), with 2 and 5 binary tasks, batch 1024, 2 threads.

Timing, one (size, tasks) group after the other: every contender of the group (the equal-weight step and each
(mode, method)) gets ``--warmup`` untimed steps, then ``--repeats`` interleaved rounds (order reversed every other
round); in each round a contender runs ``--round-warmup`` untimed steps and then ``--steps-per-round`` timed steps.
The ratio of a contender is the median over rounds of (its seconds per step / the equal-weight step's seconds per
step in the same round).

The analytic floor of parameter mode is (1 + 2T) / 3: one forward (cost 1) plus T full backward passes (cost 2
each) against one forward and one backward (1 + 2). Representation mode has no such floor (its per-task part
is only the towers and gates).

``--libmtl`` also measures LibMTL 1.1.5 (installed from PyPI into ``benchmarks/.libmtl-venv``, a venv with
``--system-site-packages`` that reuses this environment's torch; LibMTL is installed with ``--no-deps``): its
EW, MGDA, PCGrad and CAGrad weightings (parameter mode, ``rep_grad=False``: one backward per task, as its
``Trainer`` does) on LibMTL's own ``MMoE`` architecture with equivalent experts / towers, in a subprocess of the
same run (see ``LIBMTL_RUNNER``). LibMTL 1.1.5 has no Nash-MTL, and its CAGrad hard-codes 3 tasks in two
reshapes: the runner replaces that 3 by the task count at run time and labels those ratios "measured, patched".
Without ``--libmtl`` (or when LibMTL cannot be installed / run) the LibMTL ratios quoted in the issue are shown,
labelled as quoted.

Writes a JSON result (``--json``) and the ``aggregation_step`` section of ``docs/benchmarks.md`` (unless
``--no-docs``). Run from the repository root::

    python benchmarks/aggregation_step.py --libmtl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from mtlkit.aggregation import create_aggregator, list_aggregators
from mtlkit.backward import mtl_backward
from mtlkit.losses import LossSet
from mtlkit.models import create_model
from mtlkit.models.base import Output
from mtlkit.schema import Feature, Schema, Task
from mtlkit.training.memory import MMAP_THRESHOLD, TRIM_THRESHOLD
from mtlkit.weighting import create_weighting

# benchmarks/_common.py is imported from this file's folder, also when a test loads this file by its path
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import median
from model_step import SIZES, Size

SCRIPT = "benchmarks/aggregation_step.py"
SECTION = "aggregation_step"
START_MARKER, END_MARKER = _common.markers(SECTION)

BATCH_SIZE = 1024
LEARNING_RATE = 1e-3
NUM_BATCHES = 4
TASK_COUNTS = (2, 5)
MODES = ("parameter", "representation")
BASELINE = "static"

# targets of the issue
TARGET_REPRESENTATION = 1.2  # representation mode <= 1.2x equal weights at 5 tasks, both sizes
TARGET_FLOOR_SLACK = 0.15  # parameter mode, production size: <= (1 + 15%) x (1 + 2T) / 3
TARGET_LIBMTL_FRACTION = 0.60  # parameter mode, paper size: <= 60% of LibMTL's ratio, per method
TARGET_SOLVER_SLACK = 0.10  # nash_mtl, mgda, pe_ltr <= (1 + 10%) x pcgrad at 5 tasks
SOLVER_METHODS = ("nash_mtl", "mgda", "pe_ltr")
#: level of the bootstrap interval reported for each measured ratio (_common.median_interval)
INTERVAL_LEVEL = 0.95

LIBMTL_VERSION = "1.1.5"
LIBMTL_VENV = _common.REPO_ROOT / "benchmarks" / ".libmtl-venv"
#: LibMTL 1.1.5's CAGrad objective reshapes to a hard-coded 3 tasks: (pattern, replacement) applied to its source
#: at run time by the runner, so that it runs at any task count (see LIBMTL_RUNNER)
LIBMTL_CAGRAD_RESHAPES = (
    (r"reshape\(\s*1\s*,\s*3\s*\)", "reshape(1, -1)"),
    (r"reshape\(\s*3\s*,\s*1\s*\)", "reshape(-1, 1)"),
)


def generalise_reshapes(source: str) -> str:
    """``source`` with LIBMTL_CAGRAD_RESHAPES applied (what the runner does to LibMTL's CAGrad.backward)."""
    for pattern, replacement in LIBMTL_CAGRAD_RESHAPES:
        source = re.sub(pattern, replacement, source)
    return source


# LibMTL class per mtlkit method name (LibMTL 1.1.5 has no Nash-MTL)
LIBMTL_METHODS = {"mgda": "MGDA", "pcgrad": "PCGrad", "cagrad": "CAGrad"}
LIBMTL_KWARGS = {"EW": {}, "MGDA": {"mgda_gn": "none"}, "PCGrad": {}, "CAGrad": {"calpha": 0.5, "rescale": 1}}
# the LibMTL ratios to its equal-weight step (quoted, not measured here): method -> {tasks: ratio}
LIBMTL_QUOTED = {
    "mgda": {2: 1.9, 5: 3.1},
    "pcgrad": {2: 1.8, 5: 3.5},
    "cagrad": {2: 2.0, 5: 3.0},
    "nash_mtl": {2: 3.9, 5: 4.7},
}


def floor_ratio(tasks: int) -> float:
    """The analytic parameter-mode floor (1 + 2T) / 3 (see the module docstring)."""
    return (1 + 2 * tasks) / 3


# ---------------------------------------------------------------------------------------------- problem
def task_names(tasks: int) -> tuple[str, ...]:
    return tuple(f"task_{k}" for k in range(tasks))


def build_schema(size: Size, tasks: int) -> Schema:
    features = [
        Feature(f"cat_{j}", kind="categorical", embedding_dim=size.embedding_dim, vocab_size=size.vocab_size)
        for j in range(size.categorical)
    ]
    features += [Feature(f"num_{j}", kind="numeric") for j in range(size.numeric)]
    return Schema(tuple(features), tuple(Task(name, kind="binary") for name in task_names(tasks)))


def make_batches(size: Size, tasks: int, count: int, seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        categorical = torch.randint(0, size.vocab_size or 1, (BATCH_SIZE, size.categorical), generator=g)
        numeric = torch.randn((BATCH_SIZE, size.numeric), generator=g)
        labels = torch.bernoulli(torch.full((BATCH_SIZE, tasks), 0.3), generator=g)
        out.append((categorical, numeric, labels))
    return out


def mmoe_config(size: Size) -> dict[str, Any]:
    return {
        "num_experts": size.num_experts,
        "expert_sizes": list(size.expert_sizes),
        "tower_sizes": list(size.tower_sizes),
    }


def contender_name(mode: str | None, method: str) -> str:
    return method if mode is None else f"{mode}/{method}"


@dataclass
class Contender:
    """One balancer on its own MMoE (same initial weights for all), ready to be stepped."""

    name: str
    model: nn.Module
    balancer: nn.Module
    optimizer: torch.optim.Optimizer
    batches: list[tuple[Tensor, Tensor, Tensor]]
    losses: LossSet
    cursor: int = 0

    def step(self) -> None:
        categorical, numeric, labels = self.batches[self.cursor]
        self.cursor = (self.cursor + 1) % len(self.batches)
        out: Output = self.model.compute(categorical, numeric)  # type: ignore[operator]
        losses = self.losses(out.logits, labels)  # the Trainer's losses (masked, per-row, weighted mean)
        self.optimizer.zero_grad(set_to_none=True)
        mtl_backward(losses, self.model, self.balancer, shared=out.shared, mix=out.mix)  # type: ignore[arg-type]
        self.optimizer.step()

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - start) / steps


def build_contender(
    size: Size, tasks: int, mode: str | None, method: str, batches: list[Any], seed: int
) -> Contender:
    schema = build_schema(size, tasks)
    torch.manual_seed(seed)
    model = create_model("mmoe", schema, **mmoe_config(size))
    model.train()
    if mode is None:
        balancer: nn.Module = create_weighting(method, schema)
    else:
        balancer = create_aggregator(method, schema, mode=mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=True)
    return Contender(contender_name(mode, method), model, balancer, optimizer, batches, LossSet(schema))


# ---------------------------------------------------------------------------------------------- rounds
def run_group(size: Size, tasks: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time the equal-weight step and every (mode, method) of one (size, tasks) group, interleaved."""
    repeats = args.repeats if size.name == "paper" else args.production_repeats
    batches = make_batches(size, tasks, NUM_BATCHES, args.seed)
    contenders = [build_contender(size, tasks, None, BASELINE, batches, args.seed)]
    contenders += [
        build_contender(size, tasks, mode, method, batches, args.seed)
        for mode in args.modes
        for method in args.methods
    ]
    for c in contenders:
        for _ in range(args.warmup):
            c.step()
        _common.check_finite([float(p.detach().sum()) for p in c.model.parameters()], c.name)

    def timed(c: Contender) -> Callable[[int], float]:
        def block(r: int) -> float:
            for _ in range(args.round_warmup):
                c.step()
            return c.run(args.steps_per_round)

        return block

    def report(r: int, latest: dict[str, float]) -> None:
        base = latest[BASELINE]
        worst = max(latest, key=lambda n: latest[n])
        print(
            f"{size.name} T={tasks} round {r + 1}/{repeats}: {BASELINE} {base * 1e3:.2f} ms, "
            f"slowest {worst} {latest[worst] / base:.2f}x",
            flush=True,
        )

    runs = _common.interleaved_rounds(repeats, {c.name: timed(c) for c in contenders}, after_round=report)
    base = runs[BASELINE]
    out: dict[str, Any] = {
        "size": size.name,
        "tasks": tasks,
        "repeats": repeats,
        "floor": floor_ratio(tasks),
        "baseline": {"seconds_per_step": base, "median_ms": median(base) * 1e3},
        "modes": {},
    }
    for mode in args.modes:
        methods: dict[str, Any] = {}
        for method in args.methods:
            seconds = runs[contender_name(mode, method)]
            ratios = [s / b for s, b in zip(seconds, base, strict=True)]
            _common.check_finite(ratios, (size.name, tasks, mode, method))
            methods[method] = {
                "seconds_per_step": seconds,
                "median_ms": median(seconds) * 1e3,
                "ratio_per_round": ratios,
                "ratio": median(ratios),
                "ratio_interval": list(_common.median_interval(ratios, INTERVAL_LEVEL)),
            }
        out["modes"][mode] = methods
    return out


# ---------------------------------------------------------------------------------------------- LibMTL
LIBMTL_RUNNER = r'''
"""Runs inside benchmarks/.libmtl-venv: times LibMTL's weightings on LibMTL's MMoE; prints JSON."""
import importlib.util, json, sys, time, types
import torch
import torch.nn as nn
import torch.nn.functional as F

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
if cfg["keep_freed_memory"]:  # the thresholds mtlkit's side runs with (mallopt: M_MMAP_THRESHOLD -3, M_TRIM -1)
    import ctypes
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    assert libc.mallopt(-3, cfg["mmap_threshold"]) and libc.mallopt(-1, cfg["trim_threshold"])
# LibMTL/__init__.py imports LibMTL.model.resnet, which imports torchvision.models.utils (gone from torchvision
# and not needed here): register empty packages and import only the architecture and weighting modules.
spec = importlib.util.find_spec("LibMTL")
root = list(spec.submodule_search_locations)[0]
for pkg, sub in (("LibMTL", ""), ("LibMTL.architecture", "/architecture"), ("LibMTL.weighting", "/weighting")):
    module = types.ModuleType(pkg)
    module.__path__ = [root + sub]
    sys.modules[pkg] = module
import importlib
MMoE = importlib.import_module("LibMTL.architecture.MMoE").MMoE
weightings = {name: getattr(importlib.import_module("LibMTL.weighting." + name), name) for name in cfg["kwargs"]}

# LibMTL 1.1.5's CAGrad.backward reshapes the weights to a hard-coded 3 tasks (reshape(1,3) and reshape(3,1) in
# its objective), so it fails at 2 and 5 tasks. Replace those two 3s by the task count in the installed source at
# run time (nothing else changes; the installed file is left alone) and say so in the output.
patched = {}
if "CAGrad" in weightings:
    import inspect, re
    cls = weightings["CAGrad"]
    lines = inspect.getsource(cls.backward).splitlines(keepends=True)
    indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
    # strip the method's own indentation (its commented-out lines start at column 0, so textwrap.dedent cannot)
    source = "".join(line[len(indent):] if line.startswith(indent) else line for line in lines)
    fixed = source
    for pattern, replacement in cfg["cagrad_reshapes"]:
        fixed = re.sub(pattern, replacement, fixed)
    if fixed != source:
        scope = {}
        exec(compile(fixed, inspect.getsourcefile(cls), "exec"), vars(sys.modules[cls.__module__]), scope)
        cls.backward = scope["backward"]
        patched["CAGrad"] = ("the hard-coded 3-task reshapes in its objective, reshape(1,3) and reshape(3,1), "
                             "replaced by reshape(1, -1) and reshape(-1, 1) at run time")


def mlp(d_in, sizes, last=None):
    layers, width = [], d_in
    for s in sizes:
        layers += [nn.Linear(width, s), nn.ReLU()]
        width = s
    if last is not None:
        layers.append(nn.Linear(width, last))
    return nn.Sequential(*layers)


def build(size, tasks, weighting):
    names = [f"task_{k}" for k in range(tasks)]

    class MTLmodel(MMoE, weightings[weighting]):  # as LibMTL's Trainer composes them
        def __init__(self):
            decoders = nn.ModuleDict({t: mlp(size["expert_sizes"][-1], size["tower_sizes"], 1) for t in names})
            super().__init__(names, lambda: mlp(size["input_dim"], size["expert_sizes"]), decoders,
                             False, False, torch.device("cpu"), img_size=[size["input_dim"]],
                             num_experts=[size["num_experts"]])
            self.init_param()

        def zero_grad_share_params(self):
            # LibMTL 1.1.5 was written when zero_grad() zeroed in place; since torch 2.0 it sets .grad to None,
            # which breaks its _reset_grad: zero in place, as it expects
            self.experts_shared.zero_grad(set_to_none=False)

    torch.manual_seed(cfg["seed"])
    model = MTLmodel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    return model, optimizer


def batches(size, tasks):
    g = torch.Generator().manual_seed(cfg["seed"])
    return [(torch.randn(1024, size["input_dim"], generator=g),
             torch.bernoulli(torch.full((1024, tasks), 0.3), generator=g)) for _ in range(4)]


def stepper(model, optimizer, data, weighting):
    state = {"i": 0}
    kwargs = cfg["kwargs"][weighting]

    def step():
        x, y = data[state["i"] % len(data)]
        state["i"] += 1
        preds = model(x)
        losses = torch.stack([F.binary_cross_entropy_with_logits(preds[t].squeeze(-1), y[:, k])
                              for k, t in enumerate(model.task_name)])
        optimizer.zero_grad(set_to_none=True)
        model.backward(losses, **kwargs)
        optimizer.step()

    return step


out, errors = {}, {}
for size in cfg["sizes"]:
    for tasks in cfg["tasks"]:
        data = batches(size, tasks)
        steps = {}
        for w in cfg["kwargs"]:
            step = stepper(*build(size, tasks, w), data, w)
            try:
                for _ in range(max(1, cfg["warmup"])):
                    step()
            except Exception as exc:  # e.g. LibMTL 1.1.5's CAGrad hard-codes 3 tasks
                errors[f"{size['name']}/{tasks}/{w}"] = f"{type(exc).__name__}: {exc}"
                continue
            steps[w] = step
        names = list(steps)
        runs = {w: [] for w in names}
        repeats = cfg["repeats"][size["name"]]
        for r in range(repeats):
            for w in (names if r % 2 == 0 else names[::-1]):
                for _ in range(cfg["round_warmup"]):
                    steps[w]()
                start = time.perf_counter()
                for _ in range(cfg["steps_per_round"]):
                    steps[w]()
                runs[w].append((time.perf_counter() - start) / cfg["steps_per_round"])
        out[f"{size['name']}/{tasks}"] = runs
        print(f"libmtl {size['name']} T={tasks} done", file=sys.stderr, flush=True)
print(json.dumps({"runs": out, "errors": errors, "patched": patched}))
'''


def venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_libmtl(path: Path) -> Path:
    """Create ``path`` (a venv that sees this environment's packages, torch included) and install LibMTL
    there with ``--no-deps``; returns its python. Raises on failure."""
    python = venv_python(path)
    if not python.exists():
        print(f"creating {path}", flush=True)
        venv.EnvBuilder(system_site_packages=True, with_pip=True).create(path)
    # when this environment is itself a venv, --system-site-packages reaches only the base interpreter's
    # packages: a .pth file adds this environment's site-packages (torch, numpy, scipy) after the venv's own
    purelib = sysconfig.get_paths()["purelib"]
    found = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    (Path(found.stdout.strip()) / "_mtlkit_parent_env.pth").write_text(purelib + "\n", encoding="utf-8")
    check = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('LibMTL'))"],
        capture_output=True,
        text=True,
    )
    if check.stdout.strip() != LIBMTL_VERSION:
        print(f"installing LibMTL=={LIBMTL_VERSION} (--no-deps) into {path}", flush=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--no-deps", f"LibMTL=={LIBMTL_VERSION}"],
            check=True,
            timeout=600,
        )
    return python


def run_libmtl(args: argparse.Namespace) -> dict[str, Any]:
    """LibMTL's per-method ratios to its own equal-weight (EW) step, or {"measured": False, "reason": ...}."""
    try:
        python = ensure_libmtl(args.libmtl_venv)
        sizes = [
            {
                "name": SIZES[s].name,
                "input_dim": SIZES[s].input_dim,
                "num_experts": SIZES[s].num_experts,
                "expert_sizes": list(SIZES[s].expert_sizes),
                "tower_sizes": list(SIZES[s].tower_sizes),
            }
            for s in args.sizes
        ]
        cfg = {
            "sizes": sizes,
            "tasks": args.tasks,
            "kwargs": LIBMTL_KWARGS,
            "repeats": {"paper": args.repeats, "production": args.production_repeats},
            "warmup": args.warmup,
            "round_warmup": args.round_warmup,
            "steps_per_round": args.steps_per_round,
            "threads": args.threads,
            "seed": args.seed,
            "cagrad_reshapes": LIBMTL_CAGRAD_RESHAPES,
            "keep_freed_memory": args.allocator_record["applied"],
            "mmap_threshold": MMAP_THRESHOLD,
            "trim_threshold": TRIM_THRESHOLD,
        }
        with tempfile.TemporaryDirectory() as tmp:
            runner = Path(tmp) / "libmtl_runner.py"
            runner.write_text(LIBMTL_RUNNER, encoding="utf-8")
            done = subprocess.run(
                [str(python), str(runner), json.dumps(cfg)],
                capture_output=True,
                text=True,
                timeout=args.libmtl_timeout,
                check=True,
            )
        raw = json.loads(done.stdout.strip().splitlines()[-1])
        runs_by_group, errors, patched = raw["runs"], raw["errors"], raw.get("patched", {})
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        stderr = getattr(exc, "stderr", None)
        if stderr:
            reason += f" ({stderr.strip().splitlines()[-1]})"
        print(f"LibMTL not measured: {reason}", flush=True)
        return {"measured": False, "reason": reason}
    groups: dict[str, Any] = {}
    for key, runs in runs_by_group.items():
        if "EW" not in runs:
            continue
        base = runs["EW"]
        groups[key] = {
            "ew_seconds_per_step": base,
            "ew_median_ms": median(base) * 1e3,
            "methods": {},
        }
        for method, cls in LIBMTL_METHODS.items():
            if cls not in runs:
                groups[key]["methods"][method] = {
                    "class": cls,
                    "error": errors.get(f"{key}/{cls}", "not run"),
                }
                continue
            ratios = [s / b for s, b in zip(runs[cls], base, strict=True)]
            groups[key]["methods"][method] = {
                "class": cls,
                "seconds_per_step": runs[cls],
                "median_ms": median(runs[cls]) * 1e3,
                "ratio_per_round": ratios,
                "ratio": median(ratios),
            }
    return {
        "measured": True,
        "version": LIBMTL_VERSION,
        "architecture": "LibMTL.architecture.MMoE (experts = Linear+ReLU MLPs of the size's expert widths on a "
        "dense input of the size's input width, no embedding tables; towers = MLP + Linear to 1 logit)",
        "mode": "parameter (rep_grad=False): one backward per task, LibMTL's Trainer path",
        "kwargs": LIBMTL_KWARGS,
        "groups": groups,
        "errors": errors,
        "patched": patched,
    }


# ---------------------------------------------------------------------------------------------- targets
def libmtl_reference(result: dict[str, Any], size: str, tasks: int, method: str) -> tuple[float | None, str]:
    """LibMTL's ratio for (size, tasks, method): measured when available, else quoted from the issue."""
    lib = result["libmtl"]
    if lib.get("measured"):
        m = lib["groups"].get(f"{size}/{tasks}", {}).get("methods", {}).get(method)
        if m is not None and "ratio" in m:
            return m["ratio"], "measured, patched" if m["class"] in lib.get("patched", {}) else "measured"
    quoted = LIBMTL_QUOTED.get(method, {}).get(tasks)
    return (quoted, "quoted from the issue") if quoted is not None else (None, "none")


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target check: what, measured, limit, met (None = not measured)."""
    rows: list[dict[str, Any]] = []

    def measured(size: str, tasks: int, mode: str, method: str) -> dict[str, Any] | None:
        g = result["groups"].get(f"{size}/{tasks}")
        if g is None or mode not in g["modes"] or method not in g["modes"][mode]:
            return None
        return cast(dict[str, Any], g["modes"][mode][method])

    def ratio(size: str, tasks: int, mode: str, method: str) -> float | None:
        m = measured(size, tasks, mode, method)
        return None if m is None else float(m["ratio"])

    methods = result["methods"]
    for size in ("paper", "production"):
        worst = [(ratio(size, 5, "representation", m), m) for m in methods]
        worst = [(r, m) for r, m in worst if r is not None]
        for r, m in worst:
            rows.append(
                {
                    "target": "representation <= 1.2x equal weights, 5 tasks",
                    "size": size,
                    "tasks": 5,
                    "mode": "representation",
                    "method": m,
                    "measured": r,
                    "limit": TARGET_REPRESENTATION,
                    "met": r <= TARGET_REPRESENTATION,
                }
            )
    for tasks in result["tasks"]:
        limit = (1 + TARGET_FLOOR_SLACK) * floor_ratio(tasks)
        for m in methods:
            r = ratio("production", tasks, "parameter", m)
            if r is not None:
                rows.append(
                    {
                        "target": "parameter, production: <= 1.15 x (1+2T)/3",
                        "size": "production",
                        "tasks": tasks,
                        "mode": "parameter",
                        "method": m,
                        "measured": r,
                        "limit": limit,
                        "met": r <= limit,
                    }
                )
        for m in LIBMTL_QUOTED:
            r = ratio("paper", tasks, "parameter", m)
            if r is None:
                continue
            ref, source = libmtl_reference(result, "paper", tasks, m)
            rows.append(
                {
                    "target": f"parameter, paper: <= 60% of LibMTL's ratio ({source})",
                    "size": "paper",
                    "tasks": tasks,
                    "mode": "parameter",
                    "method": m,
                    "measured": r,
                    "limit": None if ref is None else TARGET_LIBMTL_FRACTION * ref,
                    "met": None if ref is None else r <= TARGET_LIBMTL_FRACTION * ref,
                }
            )
    for size in ("paper", "production"):
        for mode in MODES:
            base = ratio(size, 5, mode, "pcgrad")
            if base is None:
                continue
            for m in SOLVER_METHODS:
                r = ratio(size, 5, mode, m)
                if r is not None:
                    rows.append(
                        {
                            "target": "solver <= 1.10 x pcgrad, 5 tasks",
                            "size": size,
                            "tasks": 5,
                            "mode": mode,
                            "method": m,
                            "measured": r,
                            "limit": (1 + TARGET_SOLVER_SLACK) * base,
                            "met": r <= (1 + TARGET_SOLVER_SLACK) * base,
                        }
                    )
    for row in rows:  # how far each measured ratio could move with other rounds
        m = measured(row["size"], row["tasks"], row["mode"], row["method"])
        row["interval"] = None if m is None or "ratio_interval" not in m else list(m["ratio_interval"])
    return rows


# ---------------------------------------------------------------------------------------------- docs
def docs_section(result: dict[str, Any]) -> str:
    yes = {True: "yes", False: "**no**", None: "not measured"}
    lib = result["libmtl"]
    lines = [
        "## Gradient aggregation step",
        "",
        f"`{SCRIPT}`: a training step of mtlkit's MMoE (forward, `mtl_backward` with the balancer, "
        f"`Adam(fused=True)` step; batch {result['batch_size']}, {result['threads']} threads) with each gradient "
        "aggregator, as a ratio to the equal-weight step (`static`) timed interleaved with it in the same rounds "
        "(median over rounds of the per-round ratio). `parameter`: per-task gradients of the shared parameters "
        "(one backward through the towers and the gates, then at the paper size, where the experts are all that "
        "is shared, their closed form for all tasks at once (`mtlkit.models.layers.ExpertsTrace`: one product), "
        "at the production size, with shared embeddings, T vector-Jacobian products from the tower inputs, one "
        "`autograd.grad` per task by the engine's size rule `mtlkit.backward.jacobian_strategy`); "
        "`representation`: "
        "per-task gradients at "
        "`Output.shared` (through gates and towers only; MMoE reports its gated mix, `Output.mix`, so they are "
        "outer products of the gate weights with the gradient at the tower inputs, and a weighting is applied "
        "inside the one backward by hooks on the mix's node; so is GradDrop's direction where the node's product "
        "for `Output.shared`, which it replaces, takes ATen's BLAS path (E T d >= 400: every group here but the "
        "paper size at 2 tasks), else GradDrop takes a backward through the towers and a second one from the mix). "
        "Floor = (1 + 2T)/3: the FLOP ratio of one forward "
        "(1) + T backward passes through the whole model (2 each) to one forward + one backward; where a step is "
        "dominated by per-operation overhead rather than FLOPs (the paper size), measured ratios can be below it. "
        "Sizes as in the model step section: "
        + "; ".join(f"{s['name']}: {s['what']}" for s in result["sizes"].values())
        + f". Rounds: paper {result['repeats']}, production {result['production_repeats']}, "
        f"{result['steps_per_round']} timed steps per contender per round.",
        "",
        _common.allocator_sentence(result["allocator"])
        + (" LibMTL's process runs with the same thresholds." if result["allocator"]["applied"] else ""),
        "",
    ]
    for key, g in result["groups"].items():
        size, tasks = key.split("/")
        lines += [
            f"**{size}, {tasks} tasks** (equal weights: {g['baseline']['median_ms']:.2f} ms/step; "
            f"parameter-mode floor {g['floor']:.2f}x)",
            "",
            "| method | parameter ms | parameter ratio | ratio / floor | representation ms | representation ratio "
            "| LibMTL ratio (parameter) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for m in result["methods"]:
            p = g["modes"].get("parameter", {}).get(m)
            r = g["modes"].get("representation", {}).get(m)
            ref, source = libmtl_reference(result, size, int(tasks), m)
            ref_text = (
                "" if ref is None else f"{ref:.2f}x ({'quoted' if source.startswith('quoted') else source})"
            )
            lines.append(
                f"| `{m}` | {p['median_ms']:.2f} | {p['ratio']:.2f}x | {p['ratio'] / g['floor']:.2f} "
                if p
                else f"| `{m}` | - | - | - "
            )
            lines[-1] += (
                f"| {r['median_ms']:.2f} | {r['ratio']:.2f}x " if r else "| - | - "
            ) + f"| {ref_text} |"
        lines.append("")
    if lib.get("measured"):
        lines += [
            f"LibMTL {lib['version']}: measured in this run (a subprocess in `benchmarks/.libmtl-venv`, after the "
            f"mtlkit rounds, so not interleaved with them), {lib['architecture']}; {lib['mode']}; ratios of MGDA, "
            "PCGrad, CAGrad to LibMTL's own EW step. LibMTL 1.1.5 has no Nash-MTL: its column shows the issue's "
            "quoted ratio (labelled quoted: from the issue, not measured).",
            "",
        ]
        for cls, how in lib.get("patched", {}).items():
            lines += [f"LibMTL's {cls} is measured patched (labelled so): {how}.", ""]
        if lib.get("errors"):
            lines += [
                "LibMTL runs that failed (not measured; the column and the target rows then use the issue's "
                "quoted ratio): " + "; ".join(f"`{k}`: {v}" for k, v in lib["errors"].items()) + ".",
                "",
            ]
    else:
        lines += [
            f"LibMTL: **not measured** ({lib.get('reason', 'run without --libmtl')}). The LibMTL ratios shown are "
            "quoted from the issue (not measured here): MGDA/PCGrad/CAGrad 1.9/1.8/2.0x at 2 tasks, "
            "3.1/3.5/3.0x at 5 tasks, Nash-MTL 3.9/4.7x.",
            "",
        ]
    lines += [
        f"Measured: the median ratio over rounds (met: at most the limit); its {INTERVAL_LEVEL:.0%} interval: a "
        f"bootstrap percentile interval of that median ({_common.BOOTSTRAP_RESAMPLES:,} resamples of the rounds, "
        "fixed seed), how far it could move with other rounds on this machine. A check whose interval contains "
        "its limit is within the noise of this run.",
        "",
        f"| target | size | T | mode | method | measured | {INTERVAL_LEVEL:.0%} interval | limit | met |",
        "|---|---|---:|---|---|---:|---|---:|:---:|",
    ]
    for t in result["targets"]:
        limit = "-" if t["limit"] is None else f"{t['limit']:.2f}x"
        interval = "-" if t.get("interval") is None else "{:.2f}-{:.2f}x".format(*t["interval"])
        lines.append(
            f"| {t['target']} | {t['size']} | {t['tasks']} | {t['mode']} | `{t['method']}` "
            f"| {t['measured']:.2f}x | {interval} | {limit} | {yes[t['met']]} |"
        )
    met = [t["met"] for t in result["targets"]]
    noisy = [t for t in result["targets"] if t["met"] is not None and _straddles(t)]
    lines += [
        "",
        f"Targets: {sum(1 for x in met if x)} met, {sum(1 for x in met if x is False)} not met, "
        f"{sum(1 for x in met if x is None)} not measured, of {len(met)} checks; "
        f"{len(noisy)} of them with the limit inside the interval "
        f"({sum(1 for t in noisy if t['met'])} met, {sum(1 for t in noisy if not t['met'])} not met).",
        "",
    ]
    lines += _common.docs_footer(result, SECTION)
    return "\n".join(lines)


def _straddles(target: dict[str, Any]) -> bool:
    """Whether a check's limit lies inside the interval of its measured ratio."""
    interval, limit = target.get("interval"), target["limit"]
    return interval is not None and limit is not None and interval[0] <= limit <= interval[1]


def update_docs(path: Path, section: str) -> None:
    _common.update_docs(path, SECTION, section)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time an MMoE training step with each mtlkit gradient aggregator, relative to equal weights, "
        "interleaved over several rounds; optionally LibMTL's weightings too.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES), help="sizes to run")
    p.add_argument("--tasks", nargs="+", type=int, default=list(TASK_COUNTS), help="numbers of tasks")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="aggregator modes")
    p.add_argument(
        "--methods", nargs="+", default=None, help="aggregators (default: all of list_aggregators())"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=41,
        help="interleaved rounds at the paper size (steps of a few ms: single rounds vary by ~10%% and more, so "
        "many; the 95%% interval reported for each median ratio was 0.03-0.11 wide with 21 rounds)",
    )
    p.add_argument(
        "--production-repeats", type=int, default=9, help="interleaved rounds at the production size"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per contender before the rounds")
    p.add_argument("--round-warmup", type=int, default=1, help="untimed steps before each contender's block")
    p.add_argument("--steps-per-round", type=int, default=4, help="consecutive timed steps per contender")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--libmtl", action="store_true", help=f"also measure LibMTL {LIBMTL_VERSION} (installs it)"
    )
    p.add_argument("--libmtl-venv", type=Path, default=LIBMTL_VENV, help="the venv LibMTL is installed into")
    p.add_argument("--libmtl-timeout", type=float, default=900, help="seconds allowed for the LibMTL run")
    _common.add_allocator_argument(p)
    _common.add_output_arguments(p, SECTION)
    args = p.parse_args(argv)
    _common.require_positive(p, args, ("repeats", "production_repeats", "steps_per_round", "threads"))
    for name in ("warmup", "round_warmup"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if any(t < 1 for t in args.tasks):
        p.error("--tasks must be >= 1")
    available = list_aggregators()
    args.methods = available if args.methods is None else list(dict.fromkeys(args.methods))
    unknown = [m for m in args.methods if m not in available]
    if unknown:
        p.error(f"unknown aggregator(s) {unknown}; available: {available}")
    args.sizes = list(dict.fromkeys(args.sizes))
    args.tasks = list(dict.fromkeys(args.tasks))
    args.modes = list(dict.fromkeys(args.modes))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    raw_args = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_args)
    command = _common.command_line(SCRIPT, raw_args)
    torch.set_num_threads(args.threads)
    # before anything is timed; the LibMTL process gets the same thresholds
    args.allocator_record = _common.apply_allocator(args.allocator)
    started = time.perf_counter()
    groups = {
        f"{size}/{tasks}": run_group(SIZES[size], tasks, args) for size in args.sizes for tasks in args.tasks
    }
    mtlkit_seconds = time.perf_counter() - started
    libmtl = run_libmtl(args) if args.libmtl else {"measured": False, "reason": "run without --libmtl"}
    result: dict[str, Any] = {
        "benchmark": SECTION,
        "batch_size": BATCH_SIZE,
        "threads": torch.get_num_threads(),
        "learning_rate": LEARNING_RATE,
        "adam": "fused",
        "allocator": args.allocator_record,
        "baseline": BASELINE,
        "methods": args.methods,
        "modes": args.modes,
        "tasks": args.tasks,
        "repeats": args.repeats,
        "production_repeats": args.production_repeats,
        "warmup": args.warmup,
        "round_warmup": args.round_warmup,
        "steps_per_round": args.steps_per_round,
        "sizes": {s: {"name": s, "what": SIZES[s].what, **asdict(SIZES[s])} for s in args.sizes},
        "floor_formula": "(1 + 2T) / 3",
        **_common.environment(),
        "groups": groups,
        "mtlkit_seconds": mtlkit_seconds,
        "libmtl": libmtl,
        "libmtl_quoted_from_issue": {m: {str(t): r for t, r in v.items()} for m, v in LIBMTL_QUOTED.items()},
        **_common.provenance(command),
    }
    result["targets"] = evaluate_targets(result)
    wrote = _common.write_outputs(args, SECTION, result, lambda: docs_section(result))

    print()
    for key, g in groups.items():
        print(f"{key}: equal weights {g['baseline']['median_ms']:.2f} ms/step, floor {g['floor']:.2f}x")
        for m in args.methods:
            cells = [f"{mode} {g['modes'][mode][m]['ratio']:.2f}x" for mode in args.modes]
            print(f"  {m:12s} " + "  ".join(cells))
    verdict = {True: "met", False: "NOT met", None: "not measured"}
    for t in result["targets"]:
        print(f"{t['target']} {t['size']} T={t['tasks']} {t['mode']} {t['method']}: {verdict[t['met']]}")
    print(wrote)
    return result


if __name__ == "__main__":
    main()
