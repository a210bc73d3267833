"""Model training step: mtlkit's MMoE, PLE and Shared-Bottom, and a plain looped MMoE, against the matmul rate.

One training step = forward on a batch of 1024 rows, the sum of two binary cross-entropy losses (2 binary
tasks), ``zero_grad``, backward and an Adam step (lr 1e-3): ``torch.optim.Adam(fused=True)`` for every
contender, the looped reference included, since that is what mtlkit's trainer uses on CPU (``--adam default`` or
``foreach`` times torch's other implementations). Two sizes:

* ``paper`` (the MMoE paper's census-income setting): 100 numeric inputs, 8 experts of [16], towers [8];
* ``production`` (production-like): 20 categorical features (vocabulary 1,000 each, embedding_dim 16, so
  320 inputs) + 180 numeric = 500 inputs, 8 experts of [256, 128], towers [64].

Comparable hyperparameters per model (``model_configs``):

* ``mmoe``: 8 shared experts, one softmax gate per task;
* ``ple``: 1 extraction level (= CGC) with 4 shared experts + 2 task experts per task = 8 experts in all, each
  task's gate over its 2 + 4 experts;
* ``shared_bottom``: bottom [8 x first expert width, the other expert widths], i.e. [128] (paper) and
  [2048, 128] (production): the same matmul FLOPs as the 8 experts and the same output width at production;
* ``mmoe_looped``: the same MMoE written as the seeds' reference code does it: an ``nn.ModuleList`` of
  ``nn.Sequential(nn.Linear, nn.ReLU)`` experts run in a Python loop and ``torch.stack``-ed, per task a gate
  (``nn.Linear`` + softmax) and the gated sum ``torch.sum(experts * g.unsqueeze(2), dim=1)``, then the task's
  tower. (Until 2026-11-21 its gated sum was a ``torch.bmm``, which is slower at the paper size: that overstated
  mtlkit's speedup, 1.46x against 1.36x in one ad hoc run.) It uses mtlkit's ``FeatureEmbedding`` (so only the experts / gates / towers differ) and is checked to
  compute the same logits as mtlkit's MMoE given the same weights.

A model whose ``create_model`` raises (e.g. PLE before it exists) is reported as not available and skipped.

The machine's fp32 matmul rate is measured in the same run: the median GFLOP/s of ``torch.mm`` on
1024 x 1024 x 1024 (the "ceiling"), and, for reference, on the production experts' first-layer shape
[1024, 500] x [500, 2048]. FLOPs per sample of a training step are counted analytically over matmuls only::

    forward = sum over Linear-like products of 2 * in * out   (bias, activations, softmax, embeddings: 0)
    train   = 3 * forward                                     (backward = 2 x forward: dX and dW)

(``flops_per_sample``). Every model is also run once under ``torch.utils.flop_counter.FlopCounterMode`` as a
cross-check (``counted_*`` in the JSON; its training count is lower where autograd skips dX of an input that
needs no gradient, e.g. the numeric-only input at the paper size, and it does not see ``mmoe_looped``'s gated sums,
which are elementwise products and sums, not matmuls: 2 E d per task and sample fewer). The achieved fraction of the ceiling is
(train FLOPs x samples/s) / ceiling GFLOP/s, computed per round against the ceiling measured in that round.

Timing, one size after the other: an untimed warm-up (``--warmup`` steps per model), then ``--repeats`` rounds;
each round measures the matmul rates, times ``--steps-per-round`` consecutive steps of every model of the size
(in an order reversed every other round), and measures the matmul rates again (the round's ceiling is the mean
of the two). Each model's block of timed steps starts with ``--round-warmup`` untimed steps: the first step after
the matmul measurement (or after another model) runs on cold caches, which otherwise penalises whichever model
runs first in a round (measured: ~9% at the paper size) and, with an odd number of rounds, biases the median.
Reported numbers are medians over rounds; the speedup of mtlkit's MMoE over the looped one is the median of the
per-round ratios. Each step's forward (+ loss) / zero_grad + backward / optimizer time is also recorded
(``phase_seconds``), and so are the process's minor page faults per step (``minor_faults_per_step``: memory the
allocator returned to the OS and faulted in again, a cost that varies between runs). By default
(``--allocator trainer``) the process keeps freed memory as ``mtlkit train`` does
(:func:`mtlkit.training.memory.keep_freed_memory`), for every contender alike; ``--allocator default`` leaves
glibc's malloc as it is.

Where a step's time goes: before the rounds, every matrix-product call one training step of each model makes
(``mm``, ``addmm``, ``bmm``, ``baddbmm``, forward and backward) is recorded with a ``TorchDispatchMode``
(:func:`step_products`), and in every round the same calls are replayed alone, in the step's order and with the
step's shapes and strides, on random operands (:class:`ProductReplay`, ``products`` in each model's JSON). The
replay's FLOPs equal FlopCounterMode's training count (a check in the tests); step - replay (the *rest*) is
everything else the step does, and the step's time with no rest bounds the fraction of the ceiling it can reach.

Writes a JSON result (``--json``) and the ``model_step`` section of ``docs/benchmarks.md`` (unless
``--no-docs``). Run from the repository root::

    python benchmarks/model_step.py
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mtlkit.models import create_model
from mtlkit.models.base import Output
from mtlkit.models.layers import Experts, FeatureEmbedding
from mtlkit.schema import Feature, Schema, Task

# benchmarks/_common.py is imported from this file's folder, also when a test loads this file by its path
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from _common import median, sig3

SCRIPT = "benchmarks/model_step.py"
SECTION = "model_step"
START_MARKER, END_MARKER = _common.markers(SECTION)

BATCH_SIZE = 1024
NUM_TASKS = 2
TASK_NAMES = tuple(f"task_{k}" for k in range(NUM_TASKS))
LEARNING_RATE = 1e-3
NUM_BATCHES = 4  # distinct random batches, cycled through
MODELS = ("mmoe", "ple", "shared_bottom")
LOOPED = "mmoe_looped"
MINIMAL = "mmoe_minimal"
REFERENCES = (LOOPED, MINIMAL)
ADAM_VARIANTS = ("default", "foreach", "fused")

TARGET_SPEEDUP = 2.0  # mtlkit MMoE vs looped MMoE, paper size
TARGET_FRACTION = 0.70  # mtlkit MMoE vs the matmul ceiling, production size
TARGET_SPEEDUP_SIZE = "paper"
TARGET_FRACTION_SIZE = "production"


# ---------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Size:
    """One benchmark size: the inputs and the expert / tower widths every model is built from."""

    name: str
    what: str
    numeric: int
    categorical: int
    vocab_size: int
    embedding_dim: int
    num_experts: int
    expert_sizes: tuple[int, ...]
    tower_sizes: tuple[int, ...]

    @property
    def input_dim(self) -> int:
        return self.numeric + self.categorical * self.embedding_dim


SIZES: dict[str, Size] = {
    "paper": Size(
        name="paper",
        what="MMoE paper (census-income): 100 numeric inputs, 8 experts of [16], towers [8]",
        numeric=100,
        categorical=0,
        vocab_size=0,
        embedding_dim=16,
        num_experts=8,
        expert_sizes=(16,),
        tower_sizes=(8,),
    ),
    "production": Size(
        name="production",
        what="production-like: 20 categorical (vocabulary 1,000, embedding_dim 16) + 180 numeric = 500 inputs, "
        "8 experts of [256, 128], towers [64]",
        numeric=180,
        categorical=20,
        vocab_size=1_000,
        embedding_dim=16,
        num_experts=8,
        expert_sizes=(256, 128),
        tower_sizes=(64,),
    ),
}

PLE_SHARED_EXPERTS = 4
PLE_TASK_EXPERTS = 2  # per task: 4 + 2 * 2 = 8 experts, as MMoE's 8
PLE_LEVELS = 1


def build_schema(size: Size) -> Schema:
    features = [
        Feature(f"cat_{j}", kind="categorical", embedding_dim=size.embedding_dim, vocab_size=size.vocab_size)
        for j in range(size.categorical)
    ]
    features += [Feature(f"num_{j}", kind="numeric") for j in range(size.numeric)]
    return Schema(tuple(features), tuple(Task(name, kind="binary") for name in TASK_NAMES))


def model_configs(size: Size) -> dict[str, dict[str, Any]]:
    """``create_model`` keyword arguments of each mtlkit model at ``size`` (comparable hyperparameters)."""
    first, *rest = size.expert_sizes
    return {
        "mmoe": {
            "num_experts": size.num_experts,
            "expert_sizes": list(size.expert_sizes),
            "tower_sizes": list(size.tower_sizes),
        },
        "ple": {
            "num_levels": PLE_LEVELS,
            "shared_experts": PLE_SHARED_EXPERTS,
            "task_experts": PLE_TASK_EXPERTS,
            "expert_sizes": list(size.expert_sizes),
            "tower_sizes": list(size.tower_sizes),
        },
        "shared_bottom": {
            "bottom_sizes": [size.num_experts * first, *rest],
            "tower_sizes": list(size.tower_sizes),
        },
    }


def make_batches(size: Size, count: int, seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``count`` random batches (codes [B, C] int64, numeric [B, F] float32, labels [B, K] in {0, 1})."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        categorical = torch.randint(0, size.vocab_size or 1, (BATCH_SIZE, size.categorical), generator=g)
        numeric = torch.randn((BATCH_SIZE, size.numeric), generator=g)
        labels = torch.bernoulli(torch.full((BATCH_SIZE, NUM_TASKS), 0.3), generator=g)
        out.append((categorical, numeric, labels))
    return out


# ---------------------------------------------------------------------------------------------- FLOPs
def mlp_flops(in_dim: int, sizes: Sequence[int]) -> tuple[int, int]:
    """(forward matmul FLOPs per sample, output width) of Linear layers of ``sizes`` after ``in_dim``."""
    flops, width = 0, in_dim
    for s in sizes:
        flops += 2 * width * s
        width = s
    return flops, width


def tower_flops(in_dim: int, sizes: Sequence[int]) -> int:
    """A task tower: MLP(sizes) then a Linear to 1 logit."""
    flops, width = mlp_flops(in_dim, sizes)
    return flops + 2 * width


def forward_flops(name: str, size: Size) -> int:
    """Analytic forward matmul FLOPs per sample of model ``name`` at ``size`` (see the module docstring)."""
    d_in, k = size.input_dim, NUM_TASKS
    if name in ("mmoe", *REFERENCES):
        e = size.num_experts
        experts, d = mlp_flops(d_in, size.expert_sizes)
        gates = 2 * d_in * e  # Linear(D, E) per task
        mix = 2 * e * d  # [1, E] x [E, d] per task
        return e * experts + k * (gates + mix + tower_flops(d, size.tower_sizes))
    if name == "shared_bottom":
        cfg = model_configs(size)["shared_bottom"]
        bottom, d = mlp_flops(d_in, cfg["bottom_sizes"])
        return bottom + k * tower_flops(d, size.tower_sizes)
    if name == "ple":
        s, t = PLE_SHARED_EXPERTS, PLE_TASK_EXPERTS
        flops, width = 0, d_in
        for level in range(PLE_LEVELS):
            expert, d = mlp_flops(width, size.expert_sizes)
            flops += (s + k * t) * expert  # every expert, whatever its input
            flops += k * (2 * width * (s + t) + 2 * (s + t) * d)  # task gates and mixes
            if level < PLE_LEVELS - 1:  # the shared gate feeds the next level
                flops += 2 * width * (s + k * t) + 2 * (s + k * t) * d
            width = d
        return flops + k * tower_flops(width, size.tower_sizes)
    raise ValueError(f"no FLOPs formula for {name!r}")


def counted_flops(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[int, int]:
    """(forward, forward + backward) matmul FLOPs per sample counted by FlopCounterMode on ``batch``.

    No optimizer step is taken; the gradients are cleared afterwards.
    """
    categorical, numeric, labels = batch
    with FlopCounterMode(display=False) as counter:
        model_logits(model, categorical, numeric)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss = task_loss(model_logits(model, categorical, numeric), labels)
        loss.backward()
    train = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    b = categorical.shape[0]
    return forward // b, train // b


# ---------------------------------------------------------------------------------------------- looped
class LoopedMMoE(nn.Module):
    """MMoE as the seeds' reference code writes it: a Python list of expert MLPs, looped over and stacked, and per
    task a gate whose weights multiply the stacked experts elementwise before a sum over the experts.

    Same function as ``mtlkit.models.mmoe.MMoE`` (see :meth:`load_from`), same input layer.
    """

    def __init__(
        self, schema: Schema, num_experts: int, expert_sizes: Sequence[int], tower_sizes: Sequence[int]
    ) -> None:
        super().__init__()
        self.task_names = schema.task_names
        self.embedding = FeatureEmbedding(schema)
        d_in = self.embedding.shared_dim
        self.experts = nn.ModuleList()
        for _ in range(num_experts):
            layers: list[nn.Module] = []
            width = d_in
            for s in expert_sizes:
                layers += [nn.Linear(width, s), nn.ReLU()]
                width = s
            self.experts.append(nn.Sequential(*layers))
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(d_in, num_experts), nn.Softmax(dim=-1)) for _ in self.task_names
        )
        self.towers = nn.ModuleList()
        for _ in self.task_names:
            layers, t_width = [], width
            for s in tower_sizes:
                layers += [nn.Linear(t_width, s), nn.ReLU()]
                t_width = s
            layers.append(nn.Linear(t_width, 1))
            self.towers.append(nn.Sequential(*layers))

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, _ = self.embedding(categorical, numeric)
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, d]
        logits = {}
        for task, gate, tower in zip(self.task_names, self.gates, self.towers, strict=True):
            mixed = torch.sum(
                experts * gate(x).unsqueeze(2), dim=1
            )  # the seeds' gated sum: [B, E, d] -> [B, d]
            logits[task] = tower(mixed).squeeze(-1)
        return Output(logits=logits, shared=experts)

    @torch.no_grad()
    def load_from(self, mmoe: nn.Module) -> None:
        """Copy the weights of an mtlkit MMoE (same sizes) into this model."""
        self.embedding.load_state_dict(mmoe.embedding.state_dict())
        for layer, (weight, bias) in enumerate(zip(mmoe.experts.weights, mmoe.experts.biases, strict=True)):
            for e, expert in enumerate(self.experts):
                linear = expert[2 * layer]
                linear.weight.copy_(weight[e].t())
                linear.bias.copy_(bias[e])
        for task, gate, tower in zip(self.task_names, self.gates, self.towers, strict=True):
            gate[0].load_state_dict(mmoe.gates[task].linear.state_dict())
            theirs = [m for m in mmoe.towers.towers[task].modules() if isinstance(m, nn.Linear)]
            ours = [m for m in tower if isinstance(m, nn.Linear)]
            for a, b in zip(ours, theirs, strict=True):
                a.load_state_dict(b.state_dict())


# ---------------------------------------------------------------------------------------------- minimal
class MinimalMMoE(nn.Module):
    """The same MMoE fused as far as eager PyTorch goes, without mtlkit's per-task parameter split.

    mtlkit's ``Experts`` and ``FeatureEmbedding``; all gates as one [T*E, in] weight (one matmul, one softmax, no
    per-step concatenation of per-task weights); one batched matmul for every task's mix; every task's tower
    layer as one [T, in, out] weight applied with one ``baddbmm``. A reference for how fast this step can be in
    eager mode, not a model mtlkit can ship as it is: there a task's gate and tower are its own parameters (the
    shared / per-task split of the model contract), which this layout gives up. Same function as mtlkit's MMoE
    (see :meth:`load_from`).
    """

    def __init__(
        self, schema: Schema, num_experts: int, expert_sizes: Sequence[int], tower_sizes: Sequence[int]
    ) -> None:
        super().__init__()
        self.task_names = schema.task_names
        t = len(self.task_names)
        self.embedding = FeatureEmbedding(schema)
        d_in = self.embedding.shared_dim
        self.experts = Experts(num_experts, d_in, expert_sizes)
        self.num_experts = num_experts
        bound = 1.0 / math.sqrt(d_in)
        self.gate_weight = nn.Parameter(torch.empty(t * num_experts, d_in).uniform_(-bound, bound))
        self.gate_bias = nn.Parameter(torch.empty(t * num_experts, 1).uniform_(-bound, bound))
        self.tower_weights = nn.ParameterList()
        self.tower_biases = nn.ParameterList()
        width = self.experts.out_dim
        for out in (*tower_sizes, 1):
            b = 1.0 / math.sqrt(width)
            self.tower_weights.append(nn.Parameter(torch.empty(t, width, out).uniform_(-b, b)))
            self.tower_biases.append(nn.Parameter(torch.empty(t, 1, out).uniform_(-b, b)))
            width = out

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        x, _ = self.embedding(categorical, numeric)
        experts = self.experts(x)  # [B, E, d]
        t, batch = len(self.task_names), x.shape[0]
        logits = torch.addmm(self.gate_bias, self.gate_weight, x.t()).view(t, self.num_experts, batch)
        gates = torch.softmax(logits, dim=1).permute(2, 0, 1).contiguous()  # [B, T, E]
        h = torch.bmm(gates, experts).transpose(0, 1).contiguous()  # [T, B, d]
        last = len(self.tower_weights) - 1
        for i, (weight, bias) in enumerate(zip(self.tower_weights, self.tower_biases, strict=True)):
            h = torch.baddbmm(bias, h, weight)
            if i < last:
                h = torch.relu_(h)
        return Output(logits=dict(zip(self.task_names, h.squeeze(-1).unbind(0), strict=True)), shared=experts)

    @torch.no_grad()
    def load_from(self, mmoe: nn.Module) -> None:
        """Copy the weights of an mtlkit MMoE (same sizes) into this model."""
        self.embedding.load_state_dict(mmoe.embedding.state_dict())
        self.experts.load_state_dict(mmoe.experts.state_dict())
        self.gate_weight.copy_(torch.cat([mmoe.gates[t].linear.weight for t in self.task_names]))
        self.gate_bias.copy_(torch.cat([mmoe.gates[t].linear.bias for t in self.task_names]).unsqueeze(1))
        for k, t in enumerate(self.task_names):
            theirs = [m for m in mmoe.towers.towers[t].modules() if isinstance(m, nn.Linear)]
            for layer, linear in enumerate(theirs):
                self.tower_weights[layer][k].copy_(linear.weight.t())
                self.tower_biases[layer][k, 0].copy_(linear.bias)


def reference_matches(name: str, size: Size, seed: int) -> float | None:
    """Max |logit difference| between mtlkit's MMoE and reference ``name`` holding the same weights (None when
    mtlkit's MMoE cannot be built)."""
    schema = build_schema(size)
    cfg = model_configs(size)["mmoe"]
    torch.manual_seed(seed)
    try:
        mmoe = create_model("mmoe", schema, **cfg)
    except Exception:
        return None
    kind = LoopedMMoE if name == LOOPED else MinimalMMoE
    reference = kind(schema, size.num_experts, size.expert_sizes, size.tower_sizes)
    reference.load_from(mmoe)
    categorical, numeric, _ = make_batches(size, 1, seed)[0]
    with torch.no_grad():
        a = mmoe.compute(categorical, numeric).logits
        b = reference.compute(categorical, numeric).logits
    return max(float((a[t] - b[t]).abs().max()) for t in schema.task_names)


# ---------------------------------------------------------------------------------------------- steps
def model_logits(model: nn.Module, categorical: Tensor, numeric: Tensor) -> dict[str, Tensor]:
    out: Output = model.compute(categorical, numeric)  # type: ignore[operator]
    return out.logits


def task_loss(logits: dict[str, Tensor], labels: Tensor) -> Tensor:
    """Sum over tasks of the mean binary cross-entropy; task k's labels are column k."""
    losses = [F.binary_cross_entropy_with_logits(logits[t], labels[:, k]) for k, t in enumerate(TASK_NAMES)]
    return torch.stack(losses).sum()


def make_optimizer(model: nn.Module, variant: str) -> torch.optim.Optimizer:
    kwargs: dict[str, Any] = {} if variant == "default" else {variant: True}
    return torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, **kwargs)


@dataclass
class Contender:
    """One model of one size, ready to be stepped."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: list[tuple[Tensor, Tensor, Tensor]]
    cursor: int = 0

    def step(self) -> tuple[float, float, float]:
        """One training step; returns its (forward + loss, zero_grad + backward, optimizer) seconds."""
        categorical, numeric, labels = self.batches[self.cursor]
        self.cursor = (self.cursor + 1) % len(self.batches)
        t0 = time.perf_counter()
        loss = task_loss(model_logits(self.model, categorical, numeric), labels)
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        self.optimizer.step()
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    def run(self, steps: int) -> tuple[float, list[float], float]:
        """Wall seconds per step over ``steps`` consecutive steps, the mean seconds of each phase, and the minor
        page faults per step."""
        phases = [0.0, 0.0, 0.0]
        faults = _common.minor_faults()
        start = time.perf_counter()
        for _ in range(steps):
            for i, s in enumerate(self.step()):
                phases[i] += s
        total = time.perf_counter() - start
        return total / steps, [p / steps for p in phases], (_common.minor_faults() - faults) / steps


def build_contender(
    name: str, size: Size, batches: list[tuple[Tensor, Tensor, Tensor]], adam: str, seed: int
) -> tuple[Contender | None, dict[str, Any]]:
    """The contender and its description, or (None, {"available": False, "error": ...})."""
    schema = build_schema(size)
    torch.manual_seed(seed)
    config: dict[str, Any]
    if name in REFERENCES:
        config = {
            "num_experts": size.num_experts,
            "expert_sizes": list(size.expert_sizes),
            "tower_sizes": list(size.tower_sizes),
        }
        kind = LoopedMMoE if name == LOOPED else MinimalMMoE
        model: nn.Module = kind(schema, size.num_experts, size.expert_sizes, size.tower_sizes)
    else:
        config = model_configs(size)[name]
        try:
            model = create_model(name, schema, **config)
        except Exception as exc:  # not written yet, or a parameter it does not take
            return None, {"available": False, "config": config, "error": f"{type(exc).__name__}: {exc}"}
    model.train()
    counted_forward, counted_train = counted_flops(model, batches[0])
    forward = forward_flops(name, size)
    info = {
        "available": True,
        "config": config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_sample": {
            "forward": forward,
            "train": 3 * forward,
            "counted_forward": counted_forward,
            "counted_train": counted_train,
        },
    }
    return Contender(name, model, make_optimizer(model, adam), batches), info


# ---------------------------------------------------------------------------------------------- products
#: The aten ops whose calls are a step's matrix products (``nn.Linear`` and ``torch.matmul`` reach these on CPU).
PRODUCT_OPS = ("mm", "addmm", "bmm", "baddbmm")


@dataclass(frozen=True)
class Product:
    """One matrix-product call of a training step: the aten op, its arguments (a tensor as its shape and
    strides, anything else as it was passed), and its multiply-add FLOPs (2 x m x k x n per matrix)."""

    op: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    flops: int


@dataclass(frozen=True)
class TensorArg:
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def product_flops(op: str, args: Sequence[Any]) -> int:
    """2 x m x k x n per matrix of an ``op`` call (``addmm`` / ``baddbmm``: the bias comes first)."""
    a, b = [x for x in args if isinstance(x, TensorArg)][-2:]
    batch = a.shape[0] if op in ("bmm", "baddbmm") else 1
    m, k = a.shape[-2:]
    return 2 * batch * m * k * b.shape[-1]


class _RecordProducts(TorchDispatchMode):
    """Records every call of a :data:`PRODUCT_OPS` op that reaches the dispatcher (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.products: list[Product] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        op = func.overloadpacket.__name__
        if op in PRODUCT_OPS:
            recorded = tuple(
                TensorArg(tuple(x.shape), tuple(x.stride())) if isinstance(x, Tensor) else x for x in args
            )
            self.products.append(Product(op, recorded, dict(kwargs), product_flops(op, recorded)))
        return func(*args, **kwargs)


def step_products(model: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> list[Product]:
    """The matrix products one training step of ``model`` makes (forward, loss, backward), in the order it makes
    them. No optimizer step is taken; the gradients are cleared afterwards."""
    categorical, numeric, labels = batch
    with _RecordProducts() as recorder:
        task_loss(model_logits(model, categorical, numeric), labels).backward()
    model.zero_grad(set_to_none=True)
    return recorder.products


def strided_randn(arg: TensorArg, generator: torch.Generator) -> Tensor:
    """A float32 tensor of ``arg``'s shape and strides over fresh normal values."""
    if 0 in arg.shape:
        return torch.empty(arg.shape)
    span = 1 + sum((n - 1) * st for n, st in zip(arg.shape, arg.stride, strict=True))
    return torch.randn(span, generator=generator).as_strided(arg.shape, arg.stride)


class ProductReplay:
    """A step's matrix products run alone, in the step's order, on random operands with the step's shapes and
    strides (every call allocates its result, as in the step): how long the step would take if nothing but its
    products took any time."""

    def __init__(self, products: Sequence[Product], seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.products = list(products)
        self.calls = [
            (
                getattr(torch.ops.aten, p.op).default,
                [strided_randn(x, g) if isinstance(x, TensorArg) else x for x in p.args],
                p.kwargs,
            )
            for p in self.products
        ]

    @property
    def flops(self) -> int:
        return sum(p.flops for p in self.products)

    def step(self) -> None:
        for func, args, kwargs in self.calls:
            func(*args, **kwargs)

    def run(self, steps: int) -> float:
        """Wall seconds per replay over ``steps`` consecutive replays."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return (time.perf_counter() - start) / steps


# ---------------------------------------------------------------------------------------------- matmul
MATMUL_SHAPES: dict[str, tuple[int, int, int]] = {
    "square_1024": (1024, 1024, 1024),
    "production_expert_layer1": (BATCH_SIZE, SIZES["production"].input_dim, 8 * 256),
}
CEILING_SHAPE = "square_1024"


def make_matmul_operands(seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: (torch.randn((m, k), generator=g), torch.randn((k, n), generator=g))
        for name, (m, k, n) in MATMUL_SHAPES.items()
    }


def matmul_gflops(a: Tensor, b: Tensor, calls: int) -> float:
    """Median GFLOP/s of ``calls`` torch.mm(a, b) (output preallocated)."""
    out = torch.empty((a.shape[0], b.shape[1]))
    flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    rates = []
    for _ in range(calls):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(flops / (time.perf_counter() - start) / 1e9)
    return median(rates)


# ---------------------------------------------------------------------------------------------- output
def adam_text(variant: str) -> str:
    """The optimizer as the docs name it."""
    if variant == "default":
        return "`torch.optim.Adam` (torch's default implementation)"
    note = " (what mtlkit's trainer uses on CPU)" if variant == "fused" else ""
    return f"`torch.optim.Adam({variant}=True)`{note}"


def fmt_flops(flops: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{sig3(flops / scale)} {unit}"
    return sig3(flops)


def docs_section(result: dict[str, Any]) -> str:
    """The markdown between the markers (markers excluded)."""
    yes = {True: "yes", False: "**no**", None: "not measured"}
    mm = result["matmul"]
    lines = [
        "## Model training step: MMoE, PLE, Shared-Bottom vs a looped MMoE and the matmul rate",
        "",
        f"One training step = forward on {result['batch_size']} rows, sum of 2 binary cross-entropy losses, "
        f"`zero_grad`, backward, {adam_text(result['adam'])} step (lr {LEARNING_RATE:g}) for every model, "
        "`mmoe_looped` included; "
        f"{result['threads']} torch threads, CPU, float32. Median of {result['repeats']} interleaved rounds of "
        f"{result['steps_per_round']} consecutive steps per model (after {result['warmup']} warm-up steps; "
        f"each model's block in a round starts with {result['round_warmup']} untimed step(s), so that no model "
        "pays for cold caches after the matmul measurement or the previous model); the order of the contenders "
        "is reversed every other round.",
        "",
        "Sizes and configurations (comparable hyperparameters):",
        "",
    ]
    sizes = list(result["sizes"].values())
    for size in sizes:
        lines.append(f"* `{size['name']}`: {size['what']}.")
    run = {name for size in sizes for name in size["models"]}
    diffs = [
        f"{s['name']}: {s['looped_max_abs_diff']:.1e}" for s in sizes if s["looped_max_abs_diff"] is not None
    ]
    if "mmoe" in run:
        lines.append("* `mmoe`: 8 shared experts, one softmax gate per task.")
    if LOOPED in run:
        lines.append(
            "* `mmoe_looped`: the same MMoE as the seeds' reference code writes it (`nn.ModuleList` of "
            "`nn.Sequential(nn.Linear, nn.ReLU)` experts run in a Python loop, `torch.stack`, per task a gate and "
            "the gated sum `torch.sum(experts * g.unsqueeze(2), dim=1)`, then its tower), with mtlkit's "
            "`FeatureEmbedding`"
            + (
                f"; gives the same logits as `mmoe` with the same weights (max |difference| {', '.join(diffs)})"
                if diffs
                else ""
            )
            + ". Until 2026-11-21 this reference formed the gated sum with `torch.bmm`, which is slower than the "
            "seeds' elementwise sum at the paper size and so overstated `mmoe`'s speedup (1.57x in the last run "
            "with it; side by side in one ad hoc run the two forms gave 1.46x and 1.36x)."
        )
    if MINIMAL in run:
        mdiffs = [
            f"{s['name']}: {s['minimal_max_abs_diff']:.1e}"
            for s in sizes
            if s.get("minimal_max_abs_diff") is not None
        ]
        lines.append(
            "* `mmoe_minimal`: a reference, not an mtlkit model: the same MMoE fused as far as eager PyTorch goes "
            "once the per-task parameter split of mtlkit's model contract is given up (all gates one weight, "
            "every tower layer one [T, in, out] weight and one `baddbmm` over the tasks; mtlkit's `Experts` and "
            "`FeatureEmbedding`). It shows how much of the 2x target this step allows in eager mode"
            + (
                f"; same logits as `mmoe` with the same weights (max |difference| {', '.join(mdiffs)})"
                if mdiffs
                else ""
            )
            + "."
        )
    if "ple" in run:
        lines.append(
            f"* `ple`: {PLE_LEVELS} extraction level (CGC), {PLE_SHARED_EXPERTS} shared experts + "
            f"{PLE_TASK_EXPERTS} task experts per task = {PLE_SHARED_EXPERTS + NUM_TASKS * PLE_TASK_EXPERTS} "
            "experts of the same sizes as MMoE's; each task's gate mixes its own + the shared experts."
        )
    if "shared_bottom" in run:
        bottoms = ", ".join(
            f"{s['models']['shared_bottom']['config']['bottom_sizes']} ({s['name']})" for s in sizes
        )
        lines.append(
            f"* `shared_bottom`: bottom [8 x first expert width, other expert widths] = {bottoms}: the same "
            "matmul FLOPs as the 8 experts."
        )
    lines += [
        "",
        "FLOPs/sample counts matmuls only: forward = sum of 2 x in x out over every Linear-like product "
        "(experts, gates, gate-weighted mix, towers; biases, activations, softmax and embedding lookups count "
        "0); a training step = 3 x forward (backward = dX + dW = 2 x forward). Fraction of ceiling = "
        "(FLOPs/sample x samples/s) / the fp32 matmul rate of `torch.mm` 1024 x 1024 x 1024 measured in the "
        "same round (median over rounds of the per-round fraction). `torch.utils.flop_counter` counts the "
        "same forward FLOPs for every model (JSON: `counted_forward`); its backward count is lower at the paper "
        "size, where the numeric-only input needs no dX.",
        "",
        _common.allocator_sentence(result["allocator"]),
        "",
        "Page faults/step: minor page faults of the process per training step (median over rounds). With "
        "glibc's default thresholds `malloc` may hand the freed top of its heap (and every freed block above "
        "its mmap threshold) back to the OS at the end of a step and fault it in again during the next one; "
        "whether it does depends on the heap's history, so a step at the production size then differs by "
        "several ms between runs (`--allocator default` shows it).",
        "",
        f"Matmul ceiling (median over rounds): {sig3(mm['ceiling_gflops'])} GFLOP/s "
        f"(`torch.mm` 1024 x 1024 x 1024); production experts' first-layer shape "
        f"[1024, 500] x [500, 2048]: {sig3(mm['shapes']['production_expert_layer1']['median_gflops'])} GFLOP/s.",
        "",
        "| size | model | median ms/step | samples/s | FLOPs/sample (train) | GFLOP/s | fraction of ceiling "
        "| vs `mmoe_looped` | forward / backward / optimizer ms | page faults/step |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    unavailable = []
    for size in result["sizes"].values():
        for name, m in size["models"].items():
            if not m["available"]:
                unavailable.append(f"`{name}` ({size['name']}): {m['error']}")
                continue
            speedup = f"{m['speedup_vs_looped']:.2f}x" if m.get("speedup_vs_looped") else ""
            if name == LOOPED:
                speedup = "1.00x"
            ph = m["median_phase_ms"]
            lines.append(
                f"| {size['name']} | `{name}` | {m['median_ms']:.2f} | {sig3(m['samples_per_second'])} "
                f"| {fmt_flops(m['flops_per_sample']['train'])} | {sig3(m['achieved_gflops'])} "
                f"| {100 * m['median_fraction_of_ceiling']:.1f}% | {speedup} "
                f"| {ph['forward']:.2f} / {ph['backward']:.2f} / {ph['optimizer']:.2f} "
                f"| {m['median_minor_faults_per_step']:,.0f} |"
            )
    if unavailable:
        lines += ["", "Not available (skipped): " + "; ".join(unavailable) + "."]
    lines += ["", *products_lines(result)]
    tg = result["targets"]
    speedup = "-" if tg["speedup"] is None else f"{tg['speedup']:.2f}x"
    fraction = "-" if tg["fraction"] is None else f"{100 * tg['fraction']:.1f}%"
    lines += [
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
        f"| `mmoe` >= {tg['speedup_min']:g}x `mmoe_looped`, {TARGET_SPEEDUP_SIZE} size "
        f"| {speedup} | {yes[tg['speedup_met']]} |",
        f"| `mmoe` >= {100 * tg['fraction_min']:.0f}% of the matmul ceiling, {TARGET_FRACTION_SIZE} size "
        f"| {fraction} | {yes[tg['fraction_met']]} |",
        "",
    ]
    lines += _common.docs_footer(result, SECTION)
    return "\n".join(lines)


def products_lines(result: dict[str, Any]) -> list[str]:
    """The docs' account of how much of each step its matrix products take alone, and what that leaves the
    targets."""
    lines = [
        "Where a step's time goes: every matrix-product call one training step makes (`mm`, `addmm`, `bmm`, "
        "`baddbmm`, forward and backward, bias adds of `addmm` / `baddbmm` included), recorded once with a "
        "`TorchDispatchMode` and replayed alone in the step's order, with the step's shapes and strides, on "
        "random operands (*products alone*), timed in the same rounds as the steps. *Rest* = step - products "
        "alone (median over rounds of the per-round difference): embedding lookups, activations and their "
        "gradients, softmax, bias gradients, losses, copies, Adam, autograd's bookkeeping. *Bound* = the "
        "fraction of the ceiling the step would reach with the table's FLOPs if the rest took no time.",
        "",
        "| size | model | product calls | products alone ms | products' fraction of ceiling | rest ms | bound |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for size in result["sizes"].values():
        for name, m in size["models"].items():
            if not m["available"]:
                continue
            p = m["products"]
            lines.append(
                f"| {size['name']} | `{name}` | {p['count']} | {p['median_ms']:.2f} "
                f"| {100 * p['median_fraction_of_ceiling']:.1f}% | {p['median_rest_ms']:.2f} "
                f"| {100 * p['median_fraction_without_rest']:.1f}% |"
            )
    notes = []
    ceiling = result["matmul"]["ceiling_gflops"]
    production = result["sizes"].get(TARGET_FRACTION_SIZE, {}).get("models", {}).get("mmoe", {})
    if production.get("available"):
        need = production["flops_per_sample"]["train"] * BATCH_SIZE / (TARGET_FRACTION * ceiling * 1e9) * 1e3
        p = production["products"]
        notes.append(
            f"At the {TARGET_FRACTION_SIZE} size, {100 * TARGET_FRACTION:.0f}% of the median ceiling means a "
            f"`mmoe` step of {need:.1f} ms; its products alone take {p['median_ms']:.1f} ms, which leaves "
            f"{need - p['median_ms']:.1f} ms for the rest (measured: {p['median_rest_ms']:.1f} ms)."
        )
    paper = result["sizes"].get(TARGET_SPEEDUP_SIZE, {}).get("models", {})
    if paper.get("mmoe", {}).get("available") and paper.get(LOOPED, {}).get("available"):
        need = paper[LOOPED]["median_ms"] / TARGET_SPEEDUP
        p = paper["mmoe"]["products"]
        notes.append(
            f"At the {TARGET_SPEEDUP_SIZE} size, {TARGET_SPEEDUP:g}x `mmoe_looped` means a `mmoe` step of "
            f"{need:.2f} ms; its products alone take {p['median_ms']:.2f} ms, which leaves "
            f"{need - p['median_ms']:.2f} ms for the rest (measured: {p['median_rest_ms']:.2f} ms)."
        )
    if notes:
        lines += ["", " ".join(notes)]
    return lines


def update_docs(path: Path, section: str) -> None:
    """Replace what is between this benchmark's markers in ``path`` (create the file / section if missing)."""
    _common.update_docs(path, SECTION, section)


# ---------------------------------------------------------------------------------------------- rounds
def run_size(
    size: Size,
    args: argparse.Namespace,
    operands: dict[str, tuple[Tensor, Tensor]],
    mm_rates: dict[str, list[float]],
) -> dict[str, Any]:
    """Build the contenders of one size, warm them up, time them over interleaved rounds, and summarize.

    Each round measures the matmul rates (appended to ``mm_rates``) before and after the contenders' blocks
    and pairs every contender's round with the mean of the two ceilings.
    """
    batches = make_batches(size, NUM_BATCHES, args.seed)
    models: dict[str, dict[str, Any]] = {}
    contenders: list[Contender] = []
    for name in args.models:
        contender, info = build_contender(name, size, batches, args.adam, args.seed)
        models[name] = info
        if contender is None:
            print(f"{size.name}: {name} not available ({info['error']}); skipped")
            continue
        contenders.append(contender)
        fl = info["flops_per_sample"]
        print(
            f"{size.name}: {name}: {info['parameters']:,} parameters, train FLOPs/sample "
            f"{fmt_flops(fl['train'])} (FlopCounterMode: {fmt_flops(fl['counted_train'])})"
        )
    out: dict[str, Any] = {
        "name": size.name,
        "what": size.what,
        "size": asdict(size),
        "input_dim": size.input_dim,
        "looped_max_abs_diff": reference_matches(LOOPED, size, args.seed) if LOOPED in args.models else None,
        "minimal_max_abs_diff": reference_matches(MINIMAL, size, args.seed)
        if MINIMAL in args.models
        else None,
        "ceiling_gflops_per_round": [],
        "models": models,
    }
    if not contenders:
        return out
    replays = {c.name: ProductReplay(step_products(c.model, batches[0]), args.seed) for c in contenders}

    for c in contenders:
        for _ in range(args.warmup):
            c.step()
            replays[c.name].step()
    ceilings: list[float] = out["ceiling_gflops_per_round"]
    before: dict[str, float] = {}

    def measure_before(r: int) -> None:
        before.update({name: matmul_gflops(a, b, args.matmul_calls) for name, (a, b) in operands.items()})

    def measure_after(r: int, latest: dict[str, tuple[float, list[float], float]]) -> None:
        after = {name: matmul_gflops(a, b, args.matmul_calls) for name, (a, b) in operands.items()}
        for name in MATMUL_SHAPES:
            mm_rates[name].append((before[name] + after[name]) / 2)
        ceilings.append(mm_rates[CEILING_SHAPE][-1])
        print(
            f"{size.name} round {r + 1}/{args.repeats}: ceiling {ceilings[-1]:.0f} GFLOP/s; "
            + ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, (seconds, _, _) in latest.items())
        )

    def timed(c: Contender) -> Callable[[int], tuple[float, list[float], float]]:
        def block(r: int) -> tuple[float, list[float], float]:
            for _ in range(args.round_warmup):
                c.step()
            return c.run(args.steps_per_round)

        return block

    def replayed(replay: ProductReplay) -> Callable[[int], tuple[float, list[float], float]]:
        def block(r: int) -> tuple[float, list[float], float]:
            for _ in range(args.round_warmup):
                replay.step()
            return replay.run(args.steps_per_round), [], 0.0

        return block

    blocks = {c.name: timed(c) for c in contenders}
    blocks.update({products_key(name): replayed(replay) for name, replay in replays.items()})
    runs = _common.interleaved_rounds(
        args.repeats,
        blocks,
        before_round=measure_before,
        after_round=measure_after,
    )
    replay_seconds = {name: [sec for sec, _, _ in runs.pop(products_key(name))] for name in replays}
    per_step = {name: [seconds for seconds, _, _ in rounds] for name, rounds in runs.items()}
    phases = {name: [ph for _, ph, _ in rounds] for name, rounds in runs.items()}
    faults = {name: [f for _, _, f in rounds] for name, rounds in runs.items()}

    names = ("forward", "backward", "optimizer")
    for name, seconds in per_step.items():
        m = models[name]
        train_flops = m["flops_per_sample"]["train"]
        fractions = [
            train_flops * BATCH_SIZE / sec / 1e9 / ceiling
            for sec, ceiling in zip(seconds, ceilings, strict=True)
        ]
        med = median(seconds)
        m.update(
            {
                "seconds_per_step": seconds,
                "median_ms": med * 1e3,
                "samples_per_second": BATCH_SIZE / med,
                "achieved_gflops": train_flops * BATCH_SIZE / med / 1e9,
                "fraction_of_ceiling": fractions,
                "median_fraction_of_ceiling": median(fractions),
                "minor_faults_per_step": faults[name],
                "median_minor_faults_per_step": median(faults[name]),
                "phase_seconds": {ph: [p[i] for p in phases[name]] for i, ph in enumerate(names)},
                "median_phase_ms": {
                    ph: median([p[i] for p in phases[name]]) * 1e3 for i, ph in enumerate(names)
                },
                "products": products_summary(
                    replays[name], replay_seconds[name], seconds, ceilings, train_flops
                ),
            }
        )
    for name in ("mmoe", MINIMAL):
        if name in per_step and LOOPED in per_step:
            ratios = [lo / mt for lo, mt in zip(per_step[LOOPED], per_step[name], strict=True)]
            models[name]["speedup_vs_looped_per_round"] = ratios
            models[name]["speedup_vs_looped"] = median(ratios)
    return out


def products_key(name: str) -> str:
    """The name of model ``name``'s product replay among a round's contenders."""
    return f"{name} (products alone)"


def products_summary(
    replay: ProductReplay,
    seconds: Sequence[float],
    step_seconds: Sequence[float],
    ceilings: Sequence[float],
    train_flops: int,
) -> dict[str, Any]:
    """JSON of a model's product replay timed in the same rounds as its steps: per round, its seconds, its own
    fraction of the ceiling, the rest of the step (step - products) and the fraction of the ceiling the step
    would reach if the rest took no time (the model's train FLOPs, as in the main table)."""
    rounds = list(zip(seconds, step_seconds, ceilings, strict=True))
    fraction = [replay.flops / sec / 1e9 / ceiling for sec, _, ceiling in rounds]
    rest = [step - sec for sec, step, _ in rounds]
    bound = [train_flops * BATCH_SIZE / sec / 1e9 / ceiling for sec, _, ceiling in rounds]
    return {
        "calls": [
            {
                "op": p.op,
                "args": [asdict(x) if isinstance(x, TensorArg) else x for x in p.args],
                "kwargs": p.kwargs,
                "flops": p.flops,
            }
            for p in replay.products
        ],
        "count": len(replay.products),
        "flops_per_sample": replay.flops // BATCH_SIZE,
        "seconds_per_step": list(seconds),
        "median_ms": median(seconds) * 1e3,
        "fraction_of_ceiling": fraction,
        "median_fraction_of_ceiling": median(fraction),
        "rest_seconds": rest,
        "median_rest_ms": median(rest) * 1e3,
        "fraction_without_rest": bound,
        "median_fraction_without_rest": median(bound),
    }


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Time a training step (forward + backward + Adam) of mtlkit's MMoE, PLE and "
        "Shared-Bottom and of a plain looped MMoE, interleaved over several rounds, against the measured "
        "fp32 matmul rate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES), help="sizes to run")
    p.add_argument(
        "--models",
        nargs="+",
        choices=[*MODELS, *REFERENCES],
        default=[*MODELS, *REFERENCES],
        help=f"contenders ({LOOPED} is the reference MMoE written with a Python loop over experts, {MINIMAL} the "
        "same MMoE fused without per-task parameters)",
    )
    p.add_argument("--repeats", type=int, default=15, help="interleaved rounds to take medians over")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per contender before the rounds")
    p.add_argument(
        "--round-warmup",
        type=int,
        default=1,
        help="untimed steps at the start of each contender's block in every round (warms its caches)",
    )
    p.add_argument("--steps-per-round", type=int, default=10, help="consecutive timed steps per contender")
    p.add_argument("--matmul-calls", type=int, default=5, help="torch.mm calls per shape per round")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument(
        "--adam",
        choices=ADAM_VARIANTS,
        default="fused",
        help="torch.optim.Adam implementation, the same for every contender (fused=True is what mtlkit's "
        "trainer uses on CPU; default = torch's default choice)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the random batches")
    _common.add_allocator_argument(p)
    _common.add_output_arguments(p, SECTION)
    args = p.parse_args(argv)
    _common.require_positive(p, args, ("repeats", "steps_per_round", "matmul_calls", "threads"))
    for name in ("warmup", "round_warmup"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    args.sizes = list(dict.fromkeys(args.sizes))
    args.models = list(dict.fromkeys(args.models))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    raw_args = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_args)
    command = _common.command_line(SCRIPT, raw_args)
    torch.set_num_threads(args.threads)
    allocator = _common.apply_allocator(args.allocator)

    operands = make_matmul_operands(args.seed)
    for a, b in operands.values():
        matmul_gflops(a, b, 2)  # warm-up
    mm_rates: dict[str, list[float]] = {name: [] for name in MATMUL_SHAPES}  # every round, in run order
    sizes_out = {name: run_size(SIZES[name], args, operands, mm_rates) for name in args.sizes}
    if not any(m["available"] for s in sizes_out.values() for m in s["models"].values()):
        raise SystemExit("no contender could be built")

    def model_field(size: str, field: str) -> float | None:
        m = sizes_out.get(size, {}).get("models", {}).get("mmoe", {})
        value = m.get(field)
        return float(value) if value is not None else None

    speedup = model_field(TARGET_SPEEDUP_SIZE, "speedup_vs_looped")
    fraction = model_field(TARGET_FRACTION_SIZE, "median_fraction_of_ceiling")
    speedup_met = None if speedup is None else speedup >= TARGET_SPEEDUP
    fraction_met = None if fraction is None else fraction >= TARGET_FRACTION
    result: dict[str, Any] = {
        "benchmark": SECTION,
        "batch_size": BATCH_SIZE,
        "tasks": NUM_TASKS,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "round_warmup": args.round_warmup,
        "steps_per_round": args.steps_per_round,
        "threads": torch.get_num_threads(),
        "adam": args.adam,
        "allocator": allocator,
        "learning_rate": LEARNING_RATE,
        **_common.environment(),
        "flops_formula": "forward = sum of 2*in*out over matmuls (experts, gates, mix, towers); train = 3*forward",
        "matmul": {
            "ceiling_shape": CEILING_SHAPE,
            "ceiling_gflops": median(mm_rates[CEILING_SHAPE]),
            "calls_per_round": args.matmul_calls,
            "shapes": {
                name: {
                    "m_k_n": list(MATMUL_SHAPES[name]),
                    "gflops": rates,
                    "median_gflops": median(rates),
                }
                for name, rates in mm_rates.items()
            },
        },
        "sizes": sizes_out,
        "targets": {
            "speedup_min": TARGET_SPEEDUP,
            "speedup_size": TARGET_SPEEDUP_SIZE,
            "speedup": speedup,
            "speedup_met": speedup_met,
            "fraction_min": TARGET_FRACTION,
            "fraction_size": TARGET_FRACTION_SIZE,
            "fraction": fraction,
            "fraction_met": fraction_met,
            "all_met": bool(speedup_met and fraction_met),
        },
        **_common.provenance(command),
    }
    for size_out in sizes_out.values():
        for m in size_out["models"].values():
            if m["available"] and not all(
                math.isfinite(x) and x > 0 for x in (m["median_ms"], m["median_fraction_of_ceiling"])
            ):
                raise RuntimeError(f"non-finite result: {m}")
    wrote = _common.write_outputs(args, SECTION, result, lambda: docs_section(result))

    print()
    print(f"matmul ceiling: {result['matmul']['ceiling_gflops']:.0f} GFLOP/s (torch.mm 1024^3, median)")
    for size_out in sizes_out.values():
        for name, m in size_out["models"].items():
            if not m["available"]:
                print(f"{size_out['name']:>10} {name:14s} not available")
                continue
            extra = f", {m['speedup_vs_looped']:.2f}x looped" if "speedup_vs_looped" in m else ""
            print(
                f"{size_out['name']:>10} {name:14s} {m['median_ms']:8.2f} ms/step "
                f"{m['samples_per_second']:>10,.0f} samples/s "
                f"{100 * m['median_fraction_of_ceiling']:5.1f}% of ceiling{extra}"
            )
    verdict: dict[bool | None, str] = {True: "met", False: "NOT met", None: "not measured"}
    print(f"target mmoe >= {TARGET_SPEEDUP:g}x looped ({TARGET_SPEEDUP_SIZE}): {verdict[speedup_met]}")
    print(
        f"target mmoe >= {100 * TARGET_FRACTION:.0f}% of ceiling ({TARGET_FRACTION_SIZE}): "
        f"{verdict[fraction_met]}"
    )
    print(wrote)
    return result


if __name__ == "__main__":
    main()
