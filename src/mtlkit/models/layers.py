"""Building blocks shared by every architecture.

* :class:`FeatureEmbedding`: categorical codes and numeric values -> one shared input vector, plus the inputs of
  features that only some task towers see (``Feature.towers``);
* :class:`MLP`: Linear layers with activation, optional batch / layer norm and dropout;
* :class:`Experts`: E experts of any depth held as stacked weights [E, in, out] per layer and applied with one
  batched matmul per layer (never a Python loop over expert modules);
* :class:`Gate`, :class:`TaskGates` and :func:`mix`: softmax gates over experts (one, or one per task computed
  together) and the gated sum;
* :class:`TaskTowers`: one tower per task, fed in dependency order (``Task.depends_on``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import cast

import torch
from torch import Tensor, nn

from mtlkit.errors import SchemaError, did_you_mean, listing
from mtlkit.schema import Schema

#: Activations by name (the only place that maps a name to an activation).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}
NORMS = ("none", "batch", "layer")


def activation(name: str) -> nn.Module:
    """A fresh activation module by name; an unknown name is an error listing the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}{did_you_mean(name, ACTIVATIONS)}; known: {listing(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


def check_sizes(what: str, sizes: Sequence[int], allow_empty: bool = True) -> tuple[int, ...]:
    """Validate a list of layer widths (positive integers)."""
    out = tuple(sizes)
    if (not out and not allow_empty) or any(not isinstance(s, int) or s < 1 for s in out):
        raise ValueError(f"{what} must be a list of integers >= 1, got {list(out)}")
    return out


def check_fraction(what: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {value}")
    return float(value)


# ------------------------------------------------------------------------------------------------ inputs
class FeatureEmbedding(nn.Module):
    """Encoded features -> (shared input [B, D], tower inputs {task: [B, D_task]}).

    Categorical features with the same embedding width and the same ``towers`` share one embedding table
    (their vocabularies stacked with offsets), so a lookup is one ``nn.Embedding`` call per group, not per
    feature. Numeric columns enter as values (``numeric_dim=0``) or each through its own linear projection to
    ``numeric_dim`` values, applied as one broadcast multiply.

    Args:
        schema: a fitted schema (every categorical feature has ``vocab_size``).
        numeric_dim: 0 to use numeric values as they are, else the width each numeric column is projected to.
    """

    shared_columns: Tensor

    def __init__(self, schema: Schema, numeric_dim: int = 0) -> None:
        super().__init__()
        if numeric_dim < 0:
            raise ValueError(f"numeric_dim must be >= 0, got {numeric_dim}")
        self.numeric_dim = numeric_dim
        self.task_names = schema.task_names
        # -- categorical groups: (embedding_dim, towers) -> one table
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
        for j, f in enumerate(schema.categorical):
            groups.setdefault((f.embedding_dim, f.towers), []).append(j)
        self.tables = nn.ModuleList()
        self.group_towers: list[tuple[str, ...]] = []
        pieces: list[tuple[tuple[str, ...], int]] = []  # (towers, width) per output block, in order
        for k, ((dim, towers), columns) in enumerate(groups.items()):
            sizes = [int(schema.categorical[j].vocab_size or 0) for j in columns]
            offsets = torch.tensor([0, *sizes[:-1]], dtype=torch.int64).cumsum(0)
            self.register_buffer(f"columns_{k}", torch.tensor(columns, dtype=torch.int64), persistent=False)
            self.register_buffer(f"offsets_{k}", offsets, persistent=False)
            table = nn.Embedding(sum(sizes), dim)
            nn.init.normal_(table.weight, std=0.05)
            self.tables.append(table)
            self.group_towers.append(towers)
            pieces.append((towers, len(columns) * dim))
        # -- numeric columns (a missing-indicator column follows its feature and shares its towers)
        by_name = {f.name: f for f in schema.numeric}
        numeric_towers = [by_name[name].towers for name, _ in schema.numeric_columns]
        self.num_numeric = len(numeric_towers)
        self.projections = nn.ModuleList()
        self.projection_towers: list[tuple[str, ...]] = []
        if numeric_dim:
            # projected: one projection module per towers group, so a task owns its private columns' weights
            numeric_groups: dict[tuple[str, ...], list[int]] = {}
            for j, towers in enumerate(numeric_towers):
                numeric_groups.setdefault(towers, []).append(j)
            for towers, columns in numeric_groups.items():
                self.projections.append(NumericProjection(columns, numeric_dim))
                self.projection_towers.append(towers)
                pieces.append((towers, len(columns) * numeric_dim))
        else:
            pieces.extend((towers, 1) for towers in numeric_towers)
        # -- where each output column goes
        shared_cols: list[int] = []
        tower_cols: dict[str, list[int]] = {t: [] for t in self.task_names}
        start = 0
        for towers, w in pieces:
            cols = list(range(start, start + w))
            if not towers:
                shared_cols += cols
            for t in towers:
                tower_cols[t] += cols
            start += w
        self.total_dim = start
        self.shared_dim = len(shared_cols)
        self.tower_dims = {t: len(c) for t, c in tower_cols.items()}
        self.routed = any(towers for towers, _ in pieces)
        self.register_buffer("shared_columns", torch.tensor(shared_cols, dtype=torch.int64), persistent=False)
        for i, t in enumerate(self.task_names):
            self.register_buffer(
                f"tower_columns_{i}", torch.tensor(tower_cols[t], dtype=torch.int64), persistent=False
            )
        if self.shared_dim == 0:
            raise SchemaError(
                "every feature is restricted to some towers (Feature.towers): the shared part of the model "
                "would have no input; leave at least one feature shared"
            )

    def forward(self, categorical: Tensor, numeric: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        blocks: list[Tensor] = []
        batch = categorical.shape[0]
        for k, table in enumerate(self.tables):
            columns: Tensor = getattr(self, f"columns_{k}")
            offsets: Tensor = getattr(self, f"offsets_{k}")
            codes = categorical.index_select(1, columns) + offsets
            # index_select, not table(codes): its backward (index_add) is ~3x faster than embedding's on CPU
            weight = cast(nn.Embedding, table).weight
            blocks.append(weight.index_select(0, codes.reshape(-1)).view(batch, -1))
        if self.num_numeric:
            if self.numeric_dim:
                blocks.extend(projection(numeric) for projection in self.projections)
            else:
                blocks.append(numeric)
        full = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
        if not self.routed:
            return full, {}
        shared = full.index_select(1, self.shared_columns)
        towers = {
            t: full.index_select(1, getattr(self, f"tower_columns_{i}"))
            for i, t in enumerate(self.task_names)
            if self.tower_dims[t]
        }
        return shared, towers

    def task_modules(self, task: str) -> list[nn.Module]:
        """Embedding tables and numeric projections of features seen by ``task``'s tower alone."""
        tables = [t for t, towers in zip(self.tables, self.group_towers, strict=True) if towers == (task,)]
        projections = [
            p for p, towers in zip(self.projections, self.projection_towers, strict=True) if towers == (task,)
        ]
        return [*tables, *projections]


class NumericProjection(nn.Module):
    """Each of some numeric columns projected to ``dim`` values: x[:, j] * w_j + b_j, one broadcast op."""

    columns: Tensor

    def __init__(self, columns: Sequence[int], dim: int) -> None:
        super().__init__()
        self.register_buffer("columns", torch.tensor(list(columns), dtype=torch.int64), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(columns), dim).uniform_(-1.0, 1.0))
        self.bias = nn.Parameter(torch.zeros(len(columns), dim))

    def forward(self, numeric: Tensor) -> Tensor:
        x = numeric.index_select(1, self.columns)
        return (x.unsqueeze(-1) * self.weight + self.bias).reshape(numeric.shape[0], -1)


# --------------------------------------------------------------------------------------------- dense nets
def activate(h: Tensor, modules: Sequence[nn.Module]) -> Tensor:
    """``modules`` (an activation, a dropout: elementwise) applied in turn to h, the fresh output of a product:
    a ReLU runs in place (autograd's ReLU saves its output, not its input, and nothing else reads h)."""
    for module in modules:
        h = torch.relu_(h) if isinstance(module, nn.ReLU) else module(h)
    return h


class MLP(nn.Sequential):
    """Linear -> [norm] -> activation -> [dropout], once per width in ``sizes`` (empty = identity).

    Args:
        norm: ``"none"``, ``"batch"`` (BatchNorm1d) or ``"layer"`` (LayerNorm), after each Linear.
    """

    def __init__(
        self,
        in_dim: int,
        sizes: Sequence[int],
        activation_name: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        sizes = check_sizes("MLP sizes", sizes)
        check_fraction("dropout", dropout)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {listing(NORMS)}, got {norm!r}")
        layers: list[nn.Module] = []
        width = in_dim
        for size in sizes:
            layers.append(nn.Linear(width, size))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(size))
            elif norm == "layer":
                layers.append(nn.LayerNorm(size))
            layers.append(activation(activation_name))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = width


class Experts(nn.Module):
    """E independent MLP experts as stacked weights: layer l holds W_l [E, in, out] and b_l [E, out].

    ``forward(x)`` takes x [B, in] (every expert sees the same input: one GEMM against [in, E*out]) or
    x [B, E, in] (expert e sees x[:, e]: one batched matmul) and returns [B, E, out]. Initialised like
    ``nn.Linear`` (uniform in +-1/sqrt(in)), so it equals a list of E ``nn.Linear`` stacks with the same
    weights.

    Layout (speed only; every result is the same whatever the memory layout): ``weights[0]`` has shape
    [E, in, out] like every layer but is stored in [in, E, out] order (strides (out, E*out, 1)), so the shared-input
    GEMM reads it as [in, E*out] without a copy in forward or backward; flatten it (or its gradient) with
    ``reshape`` / ``flatten``, not ``view``. Hidden activations are kept expert-major [E, B, h] between layers
    (``torch.baddbmm`` per layer), and the result is returned as an [B, E, out] view of that (not contiguous when
    there are two layers or more: making it contiguous measured slower at the benchmark's production size).
    """

    def __init__(
        self,
        num_experts: int,
        in_dim: int,
        sizes: Sequence[int],
        activation_name: str = "relu",
        dropout: float = 0.0,
        record_trace: bool = False,
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        #: whether a training call records its :class:`ExpertsTrace` for :meth:`pop_trace` (a model that reports
        #: it in ``GatedMix.source`` asks for it; nobody else should hold the call's tensors)
        self.record_trace = record_trace
        self.sizes = check_sizes("expert sizes", sizes, allow_empty=False)
        self.num_experts = num_experts
        self.in_dim = in_dim
        self.out_dim = self.sizes[-1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        width = in_dim
        for layer, size in enumerate(self.sizes):
            bound = 1.0 / math.sqrt(width)
            weight = torch.empty(num_experts, width, size).uniform_(-bound, bound)
            if layer == 0:  # same values, [in, E, out] memory order (see the class docstring)
                weight = weight.transpose(0, 1).contiguous().transpose(0, 1)
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.empty(num_experts, size).uniform_(-bound, bound)))
            width = size
        self.activation_name = activation_name
        self.act = activation(activation_name)
        self.dropout = nn.Dropout(check_fraction("dropout", dropout)) if dropout else nn.Identity()
        #: what follows each layer's product (see :func:`activate`)
        self._after: tuple[nn.Module, ...] = (self.act, self.dropout) if dropout else (self.act,)
        self._trace: ExpertsTrace | None = None  # the last call's, until pop_trace takes it

    def _activate(self, h: Tensor) -> Tensor:
        return activate(h, self._after)

    def forward(self, x: Tensor) -> Tensor:
        # the record goes straight into __dict__: nn.Module.__setattr__ costs ~1.5 us a call
        if not self._traceable(x):
            self.__dict__["_trace"] = None
            return self._layers(x, None)
        outputs: list[Tensor] = []
        out = self._layers(x, outputs)
        self.__dict__["_trace"] = ExpertsTrace(self, x, out, tuple(outputs))
        return out

    def _traceable(self, x: Tensor) -> bool:
        """Whether to record this call's :class:`ExpertsTrace`: asked for (``record_trace``), and the per-task
        gradients of its parameters have that closed form: a shared input x [B, in] that needs no gradient,
        activation relu or identity, gradients being recorded, not under torch.export / torch.compile."""
        return (
            self.record_trace
            and x.dim() == 2
            and not x.requires_grad
            and torch.is_grad_enabled()
            and self.activation_name in _TRACEABLE_ACTIVATIONS
            and not torch.compiler.is_compiling()
        )

    def pop_trace(self, output: Tensor) -> ExpertsTrace | None:
        """The :class:`ExpertsTrace` of the last call if it returned ``output`` (a forward hook that replaced the
        output changed what the closed form describes), else None; the call's record is dropped either way (it
        holds the call's input and activations)."""
        trace = self._trace
        self.__dict__["_trace"] = None
        return trace if trace is not None and trace.output is output else None

    def _layers(self, x: Tensor, outputs: list[Tensor] | None) -> Tensor:
        """The experts on x; each layer's activated output is appended to ``outputs`` when given (layer 0 with a
        shared input: [B, E*out]; any other layer: [E, B, out])."""
        last = len(self.sizes) - 1
        h = x
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if layer == 0 and x.dim() == 2:
                # shared input: [B, in] @ [in, E*out] in one GEMM; the reshape is a view of weights[0]'s memory
                flat = weight.transpose(0, 1).reshape(weight.shape[1], -1)
                h = self._activate(torch.addmm(bias.reshape(-1), x, flat))
                if outputs is not None:
                    outputs.append(h)
                h = h.view(x.shape[0], self.num_experts, -1)  # [B, E, out]
                if layer == last:
                    return h
                h = h.transpose(0, 1)  # [E, B, out], a view
            else:
                if layer == 0:
                    h = x.transpose(0, 1)  # per-expert input [B, E, in] -> [E, B, in], a view
                # [E, B, in] @ [E, in, out] + b, batched over experts
                h = self._activate(torch.baddbmm(bias.unsqueeze(1), h, weight))
                if outputs is not None:
                    outputs.append(h)
        return h.transpose(0, 1)


#: Activations whose derivative :class:`ExpertsTrace` reads off the activated output (relu: 1 where it is > 0).
_TRACEABLE_ACTIVATIONS = ("relu", "identity")


class ExpertsTrace:
    """The per-task gradients of an :class:`Experts` call's parameters in closed form, for the backward engine's
    parameter mode (``GatedMix.source``): one batched product per layer for all T tasks at once, instead of T
    vector-Jacobian products through autograd.

    The call had a shared input x [B, in] that needs no gradient and returned out [B, E, d]. Given a gated mix's
    gate weights w [B, T, E] and the gradient u [B, T, d] of the losses at the towers' inputs (slice t: of L_t
    alone), task t's gradient at out is G_t[b, e] = w[b, t, e] u[b, t] (the mix's outer product), and back
    through layer l (z = a_{l-1} W_l[e] + b_l[e], a_l = drop(act(z))), with all tasks folded into the columns,
    layout [E, B, T, h]::

        dZ_l = G_l * act'(z) * keep / (1 - p)   (relu: 1 where a_l > 0; identity: 1 where kept; read off a_l)
        dW_l[t, e] = a_{l-1}[e]^T dZ_l[e, :, t]     db_l[t, e] = sum_b dZ_l[e, b, t]
        G_{l-1}[e, :, t] = dZ_l[e, :, t] W_l[e]^T                          (a_{-1} = x for every expert)

    Dropout (p > 0, training) is read off the output too: a kept unit of a relu layer is > 0 exactly where its
    pre-activation is; an identity layer's kept units are those not exactly 0 (a pre-activation of exactly 0
    counts as dropped: its gradient is then 0 instead of 1 / (1 - p), a measure-zero event).
    """

    def __init__(self, experts: Experts, x: Tensor, output: Tensor, outputs: tuple[Tensor, ...]) -> None:
        self.experts = experts
        self.x = x
        #: the tensor the call returned ([B, E, d]: a model's Output.shared)
        self.output = output
        self.outputs = outputs
        p = experts.dropout.p if isinstance(experts.dropout, nn.Dropout) and experts.training else 0.0
        self.scale = 1.0 / (1.0 - p)
        self.dropped = p > 0

    @property
    def parameters(self) -> tuple[Tensor, ...]:
        """The parameters whose gradients :meth:`task_gradients` returns, in that order."""
        return (*self.experts.weights, *self.experts.biases)

    def _derivative(self, grad: Tensor, out: Tensor) -> Tensor:
        """grad (contiguous, overwritten) times the activation's (and dropout's) derivative read off ``out``, a
        view that broadcasts to it over the tasks."""
        wide = out.expand_as(grad)
        if self.experts.activation_name == "relu":  # 0 where out <= 0
            torch.ops.aten.threshold_backward.grad_input(grad, wide, 0.0, grad_input=grad)
        elif self.dropped:
            grad.mul_(wide != 0)
        return grad.mul_(self.scale) if self.dropped else grad

    @torch.no_grad()
    def task_gradients(self, weights: Tensor, upstream: Tensor) -> list[Tensor]:
        """[T, *p.shape] for each of :attr:`parameters`: row t is d L_t / d p, from the gate weights
        ``weights`` [B, T, E] and the gradient ``upstream`` [B, T, d] at the towers' inputs (no graph is
        recorded)."""
        experts = self.experts
        b, t, e = weights.shape
        grad = weights.unsqueeze(3) * upstream.unsqueeze(2)  # [B, T, E, d]
        if len(experts.sizes) == 1:
            # one layer: [B, T*E*d] as it is, one GEMM x^T [in, B] @ [B, T*E*d] for every task and expert
            width = experts.out_dim
            dz = self._derivative(grad, self.outputs[0].view(b, 1, e, width)).view(b, -1)
            grad_w = torch.mm(self.x.t(), dz).view(-1, t, e, width).permute(1, 2, 0, 3)  # [T, E, in, d]
            return [grad_w, dz.sum(0).view(t, e, width)]
        grads_w: list[Tensor] = []
        grads_b: list[Tensor] = []
        grad = grad.permute(2, 0, 1, 3).contiguous()  # [E, B, T, d]: every layer's product is batched over E
        for layer in range(len(experts.sizes) - 1, -1, -1):
            out = self.outputs[layer]
            width = out.shape[-1] if layer else out.shape[-1] // e
            if layer == 0:
                out = out.view(b, e, width).transpose(0, 1)
            dz = self._derivative(grad, out.unsqueeze(2)).view(e, b, t * width)
            below = self.x.t().expand(e, -1, -1) if layer == 0 else self.outputs[layer - 1]
            if layer == 1:
                below = below.view(b, e, -1).transpose(0, 1)
            if layer > 0:
                below = below.transpose(1, 2)
            # [E, in, B] @ [E, B, T*h] -> [E, in, T, h] -> [T, E, in, h]
            grads_w.append(torch.bmm(below, dz).view(e, -1, t, width).permute(2, 0, 1, 3))
            grads_b.append(dz.view(e, b, t, width).sum(1).transpose(0, 1))  # [T, E, h]
            if layer > 0:
                # [E, B*T, h] @ [E, h, h'] -> the gradient at the layer's input, [E, B, T, h']
                weight = experts.weights[layer]
                grad = torch.bmm(dz.view(e, b * t, width), weight.transpose(1, 2)).view(e, b, t, -1)
        return [*reversed(grads_w), *reversed(grads_b)]


def _softmax_gates(weight: Tensor, bias: Tensor, x: Tensor, groups: int) -> Tensor:
    """``groups`` softmax gates at once: weight [G*E, in], bias [G*E], x [B, in] -> [B, G, E].

    The logits are computed transposed, [G, E, B], so the softmax runs over a non-innermost dimension of size E
    (vectorised along the batch; a softmax over an innermost dimension of 8 is several times slower), then
    made contiguous as [B, G, E] for the batched mix.
    """
    logits = torch.addmm(bias.unsqueeze(1), weight, x.t())  # [G*E, B]
    probs = torch.softmax(logits.view(groups, -1, x.shape[0]), dim=1)  # [G, E, B]
    return probs.permute(2, 0, 1).contiguous()  # [B, G, E]


class Gate(nn.Module):
    """softmax(W x + b) over ``num_experts``: [B, in] -> [B, E], rows sum to 1."""

    def __init__(self, in_dim: int, num_experts: int) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"a gate needs num_experts >= 1, got {num_experts}")
        self.linear = nn.Linear(in_dim, num_experts)

    def forward(self, x: Tensor) -> Tensor:
        return _softmax_gates(self.linear.weight, self.linear.bias, x, 1).squeeze(1)


class TaskGates(nn.ModuleDict):
    """One softmax :class:`Gate` per task, all over the same ``num_experts`` experts and reading the same input.

    A ``ModuleDict`` task -> :class:`Gate`, so each task's gate stays its own parameters (the per-task split of
    :class:`~mtlkit.models.base.MultiTaskModel` needs that) under the names a dict of gates has; ``forward``
    computes every gate with one matmul (the gates' weights concatenated, a copy of T x E x in numbers) and one
    softmax: x [B, in] -> [B, T, E] (tasks in the order given; every row over E sums to 1), ready for
    :func:`mix`. Equal to ``torch.stack([gate(x) for gate in self.values()], dim=1)``.
    """

    def __init__(self, task_names: Sequence[str], in_dim: int, num_experts: int) -> None:
        if num_experts < 1:
            raise ValueError(f"a gate needs num_experts >= 1, got {num_experts}")
        super().__init__({t: Gate(in_dim, num_experts) for t in task_names})
        self.num_experts = num_experts

    def forward(self, x: Tensor) -> Tensor:
        linears = [cast(Gate, gate).linear for gate in self.values()]
        weight = torch.cat([linear.weight for linear in linears])  # [T*E, in]
        bias = torch.cat([linear.bias for linear in linears])  # [T*E]
        return _softmax_gates(weight, bias, x, len(linears))


def mix(gate: Tensor, experts: Tensor) -> Tensor:
    """Gated sum of expert outputs, one batched matmul: gate [B, E] -> [B, d], or the gates of T tasks
    [B, T, E] -> [B, T, d]; experts [B, E, d]."""
    if gate.dim() == 3:
        return torch.bmm(gate, experts)
    return torch.bmm(gate.unsqueeze(1), experts).squeeze(1)


# ----------------------------------------------------------------------------------------------- towers
class TaskTowers(nn.Module):
    """One tower per task: ``MLP(sizes)`` then a Linear to the task's output width.

    A task that ``depends_on`` another gets that task's logits appended to its tower input (detached from the
    graph when ``detach_dependency``, so the dependent task's loss does not train the other task's tower).
    Towers run in dependency order. Binary and regression logits are returned as [B], multiclass as [B, K].

    Args:
        in_dims: the input width of each task's tower.
    """

    def __init__(
        self,
        schema: Schema,
        in_dims: dict[str, int],
        sizes: Sequence[int],
        activation_name: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
        detach_dependency: bool = True,
    ) -> None:
        super().__init__()
        self.detach_dependency = detach_dependency
        self.order = dependency_order(schema)
        self.parent = {t.name: t.depends_on for t in schema.tasks}
        # a tower whose logits feed a dependent task through the graph is reached by that task's loss
        self.read_through = (
            {t.depends_on for t in schema.tasks if t.depends_on} if not detach_dependency else set()
        )
        self.output_dims = {t.name: t.output_dim for t in schema.tasks}
        self.task_names = schema.task_names
        self.towers = nn.ModuleDict()
        for t in schema.tasks:
            extra = schema.task(t.depends_on).output_dim if t.depends_on else 0
            body = MLP(in_dims[t.name] + extra, sizes, activation_name, dropout, norm)
            self.towers[t.name] = nn.Sequential(body, nn.Linear(body.out_dim, t.output_dim))
        # the towers :meth:`stacked` runs as one batched matmul per layer: same shapes, no dependency, no norm
        self.stackable = (
            norm == "none"
            and len(schema.tasks) > 1
            and not any(t.depends_on for t in schema.tasks)
            and len({in_dims[t] for t in self.task_names}) == 1
            and len(set(self.output_dims.values())) == 1
        )
        #: per layer, every task's Linear (schema order) and the elementwise modules that follow it in the first
        #: task's tower (activation, dropout; none after the head): the towers as :meth:`stacked` runs them
        self._stack_layers: list[tuple[list[nn.Linear], tuple[nn.Module, ...]]] = []
        if self.stackable:
            # each tower flattened, in order: its MLP's layers, then the head
            towers = [
                [m for m in self.towers[t].modules() if not isinstance(m, nn.Sequential)]
                for t in self.task_names
            ]
            starts = [i for i, m in enumerate(towers[0]) if isinstance(m, nn.Linear)]
            for i, end in pairwise([*starts, len(towers[0])]):
                linears = [cast(nn.Linear, tower[i]) for tower in towers]
                self._stack_layers.append((linears, tuple(towers[0][i + 1 : end])))

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        raw: dict[str, Tensor] = {}
        for task in self.order:
            x = inputs[task]
            parent = self.parent[task]
            if parent is not None:
                signal = raw[parent].detach() if self.detach_dependency else raw[parent]
                x = torch.cat([x, signal], dim=1)
            raw[task] = self.towers[task](x)
        return {t: (v.squeeze(-1) if self.output_dims[t] == 1 else v) for t, v in raw.items()}

    def stacked(self, x: Tensor, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`forward` for tower inputs given stacked, x [B, T, in] (task t's input is x[:, t], schema task
        order: a gated mix's output), joined with the tasks' tower-only features ``extra``.

        When the towers are :attr:`stackable` (every task's tower of the same shapes, no ``depends_on``, no norm)
        and no task has tower-only features, each tower layer runs for every task at once: the tasks' weights
        stacked into [T, out, in] (each task keeps its own parameters) and one ``baddbmm`` on x viewed as
        [T, B, in], instead of T matmuls on T slices of x. Same values (up to the order of float sums) and the
        same per-task gradients; dropout draws one mask for the stacked activations. Measured on the MMoE paper's
        model with 5 tasks (batch 1024, forward + backward + Adam, side by side): 2.85 -> 2.47 ms per step
        (docs/decisions.md).
        """
        if not self.stackable or extra:
            common = dict(zip(self.task_names, x.unbind(1), strict=True))
            return self(tower_inputs(common, extra))
        return self._layers(x.transpose(0, 1), self._stack_layers)  # x as [T, B, in], a view

    def common(self, x: Tensor, extra: dict[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`forward` when every tower reads the same input x [B, in] (a shared bottom's output), joined with
        the tasks' tower-only features ``extra``.

        For :attr:`stackable` towers and no tower-only features the first layer of every tower is one GEMM, x
        against the tasks' first weights concatenated ([T * out, in], a copy of T small weights per step; each
        task keeps its own parameters), and the other layers run as in :meth:`stacked`. Measured on a
        Shared-Bottom of the MMoE paper's size with 5 tasks (bottom [128], towers [8]): 2.31 -> 1.91 ms per
        step, side by side; the same at 2 tasks (docs/decisions.md).
        """
        if not self.stackable or extra:
            return self(tower_inputs(dict.fromkeys(self.task_names, x), extra))
        (linears, after), *rest = self._stack_layers
        weight = torch.cat([linear.weight for linear in linears])  # [T * out, in]
        bias = torch.cat([linear.bias for linear in linears])
        h = activate(torch.addmm(bias, x, weight.t()), after)  # [B, T * out]
        return self._layers(h.view(x.shape[0], len(linears), -1).transpose(0, 1), rest)  # [T, B, out], a view

    def _layers(
        self, h: Tensor, layers: list[tuple[list[nn.Linear], tuple[nn.Module, ...]]]
    ) -> dict[str, Tensor]:
        """The tower ``layers`` on h [T, B, in], each one ``baddbmm`` with the tasks' weights stacked, then each
        task's logits ([B], or [B, K] for a multiclass task)."""
        for linears, after in layers:
            weight = torch.stack([linear.weight for linear in linears])  # [T, out, in]
            bias = torch.stack([linear.bias for linear in linears])  # [T, out]
            h = activate(torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)), after)
        rows = h.squeeze(-1) if h.shape[-1] == 1 else h  # [T, B] or [T, B, K]
        return dict(zip(self.task_names, rows.unbind(0), strict=True))

    def task_modules(self, task: str) -> list[nn.Module]:
        """The task's tower (``MultiTaskModel`` treats it as shared when ``task`` is in ``read_through``)."""
        return [self.towers[task]]


def dependency_order(schema: Schema) -> list[str]:
    """Task names with every task after the task it depends on (the Schema has no cycles)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        parent = schema.task(name).depends_on
        if parent is not None:
            visit(parent)
        done.add(name)
        order.append(name)

    for t in schema.tasks:
        visit(t.name)
    return order


def tower_inputs(common: dict[str, Tensor], extra: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each task's tower input: its part of the model's output (``common``: task -> tensor), joined with its
    tower-only features."""
    return {t: torch.cat([h, extra[t]], dim=1) if t in extra else h for t, h in common.items()}
