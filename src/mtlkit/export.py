"""Export a trained run for serving: TorchScript or ONNX, with a JSON signature and the encoders as JSON.

The exported model takes the encoded feature tensors a :class:`~mtlkit.data.table.Batch` holds,

* ``categorical``: int64 [B, C], one vocabulary code per categorical feature (0 = unknown / missing),
* ``numeric``: float32 [B, F], filled and standardised numeric columns (``Schema.numeric_columns``),
* ``values``: float32 [B, V], raw value columns of the fusion (e.g. price), only when the run's fusion has any,

and returns, in this order,

1. one output per task of the data set, in schema order: ``sigmoid(logit)`` [B] for a binary task,
   ``softmax(logits)`` [B, K] for a multiclass one, the predicted value [B] for a regression one (exactly what
   ``mtlkit predict`` writes as ``pred_<task>``);
2. the model's extra per-row outputs (ESMM's ``pcvr_<task>``) in the order the model returns them;
3. ``score`` [B], the fused ranking score, when the run has a fusion (``fusion.json``).

TorchScript (``torch.jit.trace`` of :class:`ServingModel`) returns a ``Dict[str, Tensor]`` with those names in
that order; ONNX returns them as outputs with those names. The batch dimension is dynamic in both. Next to the
model file, ``<file>.signature.json`` describes inputs and outputs (names, dtypes, shapes, the feature name of
every column) and ``<file>.encoders.json`` holds the fitted encoders, so that a serving system can turn raw
values into the input tensors (see :func:`encoders_document` for the rules).

Every export is checked before it is reported done: the written file is loaded back (``torch.jit.load``, or
``onnx.checker`` and ``onnxruntime``) and run on a batch of another size than the one it was traced with; its
outputs must match the PyTorch model to ``TOLERANCE``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from mtlkit.data.encoders import Encoders
from mtlkit.errors import MtlkitError, did_you_mean, listing, refuse_to_replace
from mtlkit.families.base import Family
from mtlkit.models.base import MultiTaskModel
from mtlkit.schema import MISSING_SUFFIX, Schema

#: Formats ``export_run`` writes, with the default file name in ``<run>/export/``.
FORMATS: dict[str, str] = {"torchscript": "model.pt", "onnx": "model.onnx"}

#: Largest absolute difference allowed between the exported file's outputs and the PyTorch model's.
TOLERANCE = 1e-5

#: Name of the fused-score output.
SCORE = "score"

#: Input names, in the order the exported model takes them.
INPUTS = ("categorical", "numeric", "values")

#: Rows of the example batch the model is traced with, and of the (different) batch it is checked on.
EXAMPLE_ROWS = 8
CHECK_ROWS = 5

#: Version of the signature and encoders JSON documents.
DOCUMENT_VERSION = 1


class ScoreFusion(Protocol):
    """What export needs of a fusion (:class:`mtlkit.fusion.Fusion`): pure torch ops on per-task scores and raw
    value columns, returning the fused score [B]."""

    def __call__(self, scores: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> Tensor: ...


# ------------------------------------------------------------------------------------------- the module
class ServingModel(nn.Module):
    """A trained model as a function of the raw encoded tensors: per-task probabilities, extras, fused score.

    Args:
        model: the trained :class:`MultiTaskModel` (set to eval mode here).
        family: maps the model's predictions to one score per task of the data set (the identity for ``mtl``).
        fusion: the run's fusion (called as ``fusion(scores, values)``), or None.
        value_columns: the raw value columns the fusion reads, in the order of the ``values`` input.

    :meth:`scores` computes the outputs as an ordered dict; ``forward`` is what gets traced (see
    :func:`traceable`). The probabilities are those of ``Trainer.predict`` followed by ``Family.task_scores``.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        family: Family,
        fusion: ScoreFusion | None = None,
        value_columns: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if fusion is None and value_columns:
            raise ValueError(f"value_columns {list(value_columns)} are given without a fusion to read them")
        if fusion is not None and SCORE in family.schema.task_names:
            raise MtlkitError(
                f"the run has a task named {SCORE!r}, which is also the name of the fused score: exported "
                f"outputs need unique names; rename the task (Task.name, keep Task.label) and retrain"
            )
        self.model = model.eval()
        self.family = family
        self.fusion = fusion
        self.value_columns = tuple(value_columns)
        self.kinds = {t.name: t.kind for t in model.schema.tasks}
        cat, num, values = example_inputs(self, EXAMPLE_ROWS)
        with torch.no_grad():
            names = list(self.scores(cat, num, values))
        self.output_names: tuple[str, ...] = tuple(names)

    @property
    def schema(self) -> Schema:
        """The schema the model was trained on (its features are the inputs)."""
        return self.model.schema

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUTS if self.value_columns else INPUTS[:2]

    def scores(self, categorical: Tensor, numeric: Tensor, values: Tensor | None = None) -> dict[str, Tensor]:
        """Every output by name, in the exported order (tasks, extras, then ``score``)."""
        out = self.model.compute(categorical, numeric)
        predictions: dict[str, Tensor] = {}
        for task, logit in out.logits.items():
            kind = self.kinds[task]
            if kind == "binary":
                predictions[task] = torch.sigmoid(logit)
            elif kind == "multiclass":
                predictions[task] = torch.softmax(logit, dim=-1)
            else:
                predictions[task] = logit
        predictions.update(out.extras)
        scores = self.family.task_scores(predictions)
        tasks = [t for t in self.family.schema.task_names if t in scores]
        ordered = {name: scores[name].float() for name in [*tasks, *(k for k in scores if k not in tasks)]}
        if self.fusion is not None:
            columns: dict[str, Tensor] = {}
            if self.value_columns:
                if values is None:
                    raise ValueError(
                        f"this model needs the values input (columns {list(self.value_columns)})"
                    )
                columns = {c: values[:, j] for j, c in enumerate(self.value_columns)}
            fused = _fused_score(self.fusion, ordered, columns).float()
            # a family's own single score (sample_weighting, pairwise_ltr: the same tensor as every task's
            # output) gives way to the fused score, as in mtlkit predict's score column
            ordered.pop(SCORE, None)
            ordered[SCORE] = fused
        return ordered


def _fused_score(fusion: ScoreFusion, scores: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> Tensor:
    """``fusion(scores, values)``; for an :class:`mtlkit.fusion.Fusion` without value columns, the same formula
    without its empty value term.

    ``Fusion`` adds ``features(values [B, 0]) @ weights [0]``, which onnxruntime 1.31 computes from uninitialised
    memory (a MatMul with an empty inner dimension gave -inf in some rows), so that term is left out here.
    """
    try:
        from mtlkit.fusion import Fusion, fusion_kind
    except ImportError:  # a checkout without mtlkit.fusion: only duck-typed fusions exist
        return fusion(scores, values)
    if not isinstance(fusion, Fusion) or fusion.value_columns:
        return fusion(scores, values)
    kind = fusion_kind(fusion.kind)
    p = torch.stack([scores[t].reshape(-1) for t in fusion.tasks], dim=1)
    features, _ = kind.features(p, p[:, :0], fusion.eps)
    weights = torch.tensor(list(fusion.weights.values()), dtype=features.dtype, device=features.device)
    return kind.output(features @ weights)


class _Traced(nn.Module):
    """The traced entry point of a :class:`ServingModel` without value inputs: a dict (TorchScript) or a
    tuple (ONNX) of the outputs in order."""

    def __init__(self, serving: ServingModel, as_dict: bool) -> None:
        super().__init__()
        self.serving = serving
        self.as_dict = as_dict

    def _outputs(self, scores: dict[str, Tensor]) -> dict[str, Tensor] | tuple[Tensor, ...]:
        return scores if self.as_dict else tuple(scores.values())

    def forward(self, categorical: Tensor, numeric: Tensor) -> dict[str, Tensor] | tuple[Tensor, ...]:
        return self._outputs(self.serving.scores(categorical, numeric))


class _TracedWithValues(_Traced):
    """The traced entry point of a :class:`ServingModel` whose fusion reads raw value columns."""

    def forward(  # type: ignore[override]
        self, categorical: Tensor, numeric: Tensor, values: Tensor
    ) -> dict[str, Tensor] | tuple[Tensor, ...]:
        return self._outputs(self.serving.scores(categorical, numeric, values))


def traceable(serving: ServingModel, as_dict: bool) -> nn.Module:
    """The module to trace: takes exactly ``serving.input_names`` and returns a dict or a tuple."""
    cls = _TracedWithValues if serving.value_columns else _Traced
    return cls(serving, as_dict).eval()


def example_inputs(serving: ServingModel, rows: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor | None]:
    """Random valid inputs: codes within every vocabulary, standard-normal numeric columns, positive values."""
    schema = serving.schema
    g = torch.Generator().manual_seed(seed)
    codes = [torch.randint(0, f.vocab_size or 1, (rows,), generator=g) for f in schema.categorical]
    cat = torch.stack(codes, 1) if codes else torch.zeros(rows, 0, dtype=torch.int64)
    num = torch.randn(rows, len(schema.numeric_columns), generator=g)
    values = None
    if serving.value_columns:
        values = torch.rand(rows, len(serving.value_columns), generator=g) * 10 + 0.5
    return cat, num, values


def _inputs(cat: Tensor, num: Tensor, values: Tensor | None) -> tuple[Tensor, ...]:
    return (cat, num) if values is None else (cat, num, values)


# ------------------------------------------------------------------------------------------- documents
def signature(serving: ServingModel, fmt: str, model_file: str, encoders_file: str) -> dict[str, Any]:
    """The JSON description of an exported model's inputs and outputs (see docs/export.md)."""
    schema = serving.schema
    cat, num, values = example_inputs(serving, EXAMPLE_ROWS)
    with torch.no_grad():
        outputs = serving.scores(cat, num, values)
    inputs: list[dict[str, Any]] = [
        {
            "name": "categorical",
            "dtype": "int64",
            "shape": ["batch", len(schema.categorical)],
            "columns": [f.name for f in schema.categorical],
            "meaning": "vocabulary codes, one column per categorical feature (0 = unknown or missing)",
        },
        {
            "name": "numeric",
            "dtype": "float32",
            "shape": ["batch", len(schema.numeric_columns)],
            "columns": [column for _, column in schema.numeric_columns],
            "meaning": "filled and standardised numeric columns (and <feature>__missing 0/1 flags)",
        },
    ]
    if serving.value_columns:
        inputs.append(
            {
                "name": "values",
                "dtype": "float32",
                "shape": ["batch", len(serving.value_columns)],
                "columns": list(serving.value_columns),
                "meaning": "raw (unscaled) value columns the fused score reads",
            }
        )
    kinds = {t.name: t for t in serving.family.schema.tasks}
    described: list[dict[str, Any]] = []
    for name, tensor in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "dtype": "float32",
            "shape": ["batch", *tensor.shape[1:]],
        }
        if name == SCORE and serving.fusion is not None:
            entry["meaning"] = "fused ranking score (fusion.json)"
        elif name == SCORE:
            entry["meaning"] = "the family's one ranking score (the same values as each task's output)"
        elif name in kinds:
            task = kinds[name]
            entry["task_kind"] = task.kind
            entry["meaning"] = {
                "binary": "probability of the positive label (sigmoid of the logit)",
                "multiclass": f"probability of each of the {task.num_classes} classes (softmax)",
                "regression": "predicted value",
            }[task.kind]
        else:
            entry["meaning"] = "extra per-row output of the model"
        described.append(entry)
    return {
        "version": DOCUMENT_VERSION,
        "format": fmt,
        "file": model_file,
        "model": type(serving.model).__name__,
        "family": type(serving.family).__name__,
        "tasks": list(serving.family.schema.task_names),
        "inputs": inputs,
        "outputs": described,
        "output_order": list(outputs),
        "encoders": encoders_file,
        "fusion": repr(serving.fusion) if serving.fusion is not None else None,
        "tolerance": TOLERANCE,
    }


def encoders_document(encoders: Encoders, schema: Schema) -> dict[str, Any]:
    """The fitted encoders as plain JSON, in input-column order, with the rules to apply them.

    * categorical column ``j``: the value's text (integral numbers without a decimal point: ``3``, not
      ``3.0``) looked up in ``vocabulary``; code = position + 1; a missing or unseen value gives 0.
    * numeric feature: ``x`` missing (null / NaN) -> ``fill_value``; column = ``(x - mean) / std``; with
      ``missing_indicator`` the next column is 1.0 when ``x`` was missing, else 0.0.
    """
    encoders.check(schema)
    categorical = [
        {
            "column": j,
            "feature": f.name,
            "source": f.source,
            "unknown_code": 0,
            "vocabulary": list(encoders.categorical[f.name].vocabulary),
        }
        for j, f in enumerate(schema.categorical)
    ]
    numeric: list[dict[str, Any]] = []
    position = 0
    for f in schema.numeric:
        enc = encoders.numeric[f.name]
        columns = [position] + ([position + 1] if enc.missing_indicator else [])
        numeric.append(
            {
                "columns": columns,
                "feature": f.name,
                "source": f.source,
                "fill_value": enc.fill_value,
                "mean": enc.mean,
                "std": enc.std,
                "missing_indicator": enc.missing_indicator,
            }
        )
        position += len(columns)
    return {
        "version": DOCUMENT_VERSION,
        "rules": {
            "categorical": "code = vocabulary.index(str(value)) + 1; missing or unseen values give 0; integral "
            "numbers are written without a decimal point (3, not 3.0)",
            "numeric": "x = fill_value if missing; column = (x - mean) / std; with missing_indicator the next "
            "column (<feature>" + MISSING_SUFFIX + ") is 1.0 if x was missing else 0.0",
        },
        "categorical": categorical,
        "numeric": numeric,
    }


def load_encoders(path: str | Path) -> Encoders:
    """Read an encoders document written by :func:`export_run` back into :class:`Encoders`."""
    from mtlkit.data.encoders import CategoricalEncoder, NumericEncoder

    source = Path(path)
    try:
        data = json.loads(source.read_text())
        return Encoders(
            {e["feature"]: CategoricalEncoder(e["vocabulary"]) for e in data["categorical"]},
            {
                e["feature"]: NumericEncoder(
                    float(e["fill_value"]), float(e["mean"]), float(e["std"]), bool(e["missing_indicator"])
                )
                for e in data["numeric"]
            },
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MtlkitError(
            f"cannot read encoders from {source} ({type(exc).__name__}: {exc}); write it again with "
            f"mtlkit export"
        ) from None


# ------------------------------------------------------------------------------------------- writers
@dataclass
class ExportResult:
    """What :func:`export_run` / :func:`export_serving` wrote and how it was checked."""

    format: str
    path: Path
    signature_path: Path
    encoders_path: Path | None
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    seconds: float
    max_abs_diff: float
    checked_with: str
    notes: list[str] = field(default_factory=list)


def companion_paths(path: Path) -> tuple[Path, Path]:
    """``<file>.signature.json`` and ``<file>.encoders.json`` next to an exported file."""
    return path.with_name(path.name + ".signature.json"), path.with_name(path.name + ".encoders.json")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' chatter (deprecation notes, tracer warnings, torchvision registration notes):
    correctness is checked numerically afterwards instead."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_Sink()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _failure(serving: ServingModel, fmt: str, exc: BaseException) -> MtlkitError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    other = "onnx" if fmt == "torchscript" else "torchscript"
    return MtlkitError(
        f"model {type(serving.model).__name__} cannot be exported to {fmt}: {type(exc).__name__}: {first[:300]} "
        f"(see docs/export.md for what each format supports; try --format {other})"
    )


def _check_failure(serving: ServingModel, fmt: str, exc: BaseException) -> MtlkitError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return MtlkitError(
        f"the {fmt} export of {type(serving.model).__name__} fails on a batch of {CHECK_ROWS} rows (it was "
        f"traced with {EXAMPLE_ROWS}): {type(exc).__name__}: {first[:300]}; the model's code depends on the "
        f"batch size through Python values (see docs/export.md)"
    )


def _max_diff(expected: Mapping[str, Tensor], got: Sequence[Tensor | np.ndarray]) -> float:
    worst = 0.0
    for (name, want), have in zip(expected.items(), got, strict=True):
        have_t = torch.as_tensor(np.asarray(have)) if not isinstance(have, Tensor) else have
        if tuple(have_t.shape) != tuple(want.shape):
            raise MtlkitError(
                f"the exported output {name!r} has shape {list(have_t.shape)}, the model gives "
                f"{list(want.shape)}: the export is wrong; please report it"
            )
        worst = max(
            worst, float((have_t.detach().double() - want.double()).abs().max()) if want.numel() else 0.0
        )
    return worst


def _write_torchscript(serving: ServingModel, path: Path) -> tuple[float, str]:
    example = _inputs(*example_inputs(serving, EXAMPLE_ROWS))
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(
                traceable(serving, as_dict=True), example, strict=False, check_trace=False
            )
            # parameters become constants: no autograd graph at serving time, and constants are folded
            traced = torch.jit.freeze(traced)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))
    except MtlkitError:
        raise
    except Exception as exc:
        raise _failure(serving, "torchscript", exc) from exc
    check = _inputs(*example_inputs(serving, CHECK_ROWS, seed=1))
    with torch.no_grad():
        expected = serving.scores(*check)
        try:
            got = loaded(*check)
        except Exception as exc:
            raise _check_failure(serving, "torchscript", exc) from exc
    if list(got) != list(expected):
        raise MtlkitError(
            f"the TorchScript file returns {list(got)}, expected {list(expected)}; please report it"
        )
    return _max_diff(expected, list(got.values())), "torch.jit.load"


def _write_onnx(serving: ServingModel, path: Path) -> tuple[float, str]:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise MtlkitError(
            f"ONNX export needs the packages onnx and onnxscript ({exc}); install them with "
            f"pip install 'mtlkit[export]'"
        ) from None
    example = _inputs(*example_inputs(serving, EXAMPLE_ROWS))
    batch = torch.export.Dim("batch")
    names = serving.input_names
    try:
        with _quiet():
            program = torch.onnx.export(
                traceable(serving, as_dict=False),
                example,
                input_names=list(names),
                output_names=list(serving.output_names),
                dynamic_shapes={name: {0: batch} for name in names},
                dynamo=True,
                verbose=False,
            )
            assert program is not None
            program.save(str(path))
        onnx.checker.check_model(str(path), full_check=True)
    except MtlkitError:
        raise
    except Exception as exc:
        raise _failure(serving, "onnx", exc) from exc
    check = _inputs(*example_inputs(serving, CHECK_ROWS, seed=1))
    with torch.no_grad():
        expected = serving.scores(*check)
    try:
        import onnxruntime
    except ImportError:
        return float("nan"), "onnx.checker only (onnxruntime is not installed)"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_names = [o.name for o in session.get_outputs()]
    if got_names != list(expected):
        raise MtlkitError(
            f"the ONNX file has outputs {got_names}, expected {list(expected)}; please report it"
        )
    feeds = {name: t.numpy() for name, t in zip(names, check, strict=True)}
    try:
        got = session.run(None, feeds)
    except Exception as exc:
        raise _check_failure(serving, "onnx", exc) from exc
    return _max_diff(expected, got), "onnx.checker and onnxruntime"


_WRITERS = {"torchscript": _write_torchscript, "onnx": _write_onnx}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise MtlkitError(
            f"unknown export format {fmt!r}{did_you_mean(fmt, FORMATS)}; formats are {listing(FORMATS)}"
        )
    return fmt


def export_serving(
    serving: ServingModel,
    fmt: str,
    path: str | Path,
    encoders: Encoders | None = None,
) -> ExportResult:
    """Write ``serving`` as ``fmt`` to ``path`` with its signature (and encoders) JSON, and check the file.

    Raises MtlkitError when the format is unknown, the model cannot be exported, or the written file does not
    reproduce the PyTorch outputs to :data:`TOLERANCE` on a batch of another size than the traced one.
    """
    check_format(fmt)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    signature_path, encoders_path = companion_paths(out)
    # written and checked under a temporary name, then renamed: a failed export leaves no file behind that does
    # not reproduce the model, and the file it would have replaced stays as it was
    partial = out.with_name(f".{out.name}.partial{out.suffix}")
    start = time.perf_counter()
    try:
        diff, checked_with = _WRITERS[fmt](serving, partial)
        if not diff <= TOLERANCE and not np.isnan(diff):
            raise MtlkitError(
                f"the {fmt} export of {type(serving.model).__name__} differs from the PyTorch model by {diff:.3g} "
                f"(tolerance {TOLERANCE:g}) on a batch of {CHECK_ROWS} rows: the export is wrong, please report it"
            )
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    written_encoders = None
    if encoders is not None:
        encoders_path.write_text(json.dumps(encoders_document(encoders, serving.schema), indent=1))
        written_encoders = encoders_path
    document = signature(serving, fmt, out.name, encoders_path.name if written_encoders else "")
    document["check"] = {"max_abs_diff": diff, "rows": CHECK_ROWS, "with": checked_with}
    signature_path.write_text(json.dumps(document, indent=2, allow_nan=True))
    notes = [] if not np.isnan(diff) else ["onnxruntime is not installed: the file was not run"]
    return ExportResult(
        fmt,
        out,
        signature_path,
        written_encoders,
        serving.output_names,
        serving.input_names,
        seconds,
        diff,
        checked_with,
        notes,
    )


# ------------------------------------------------------------------------------------------- runs
def _fusion_of(run_dir: Path, data_schema: Schema) -> tuple[ScoreFusion | None, tuple[str, ...]]:
    """The run's fusion (``fusion.json``, checked against the data set's tasks) and the raw value columns it
    reads, or (None, ())."""
    path = run_dir / "fusion.json"
    if not path.exists():
        return None, ()
    from mtlkit.fusion import Fusion

    fusion = Fusion.load(path)
    fusion.check(data_schema, where=str(path))
    return fusion, fusion.value_columns


def serving_model(run_dir: str | Path) -> tuple[ServingModel, Encoders]:
    """The :class:`ServingModel` of a run folder (on the CPU, with its fusion) and the run's fitted encoders."""
    from mtlkit.training.run import load_run

    run = load_run(run_dir, device="cpu")
    fusion, value_columns = _fusion_of(Path(run_dir), run.data_schema)
    model = run.trainer.model
    assert isinstance(model, MultiTaskModel)
    return ServingModel(model, run.family, fusion, value_columns), run.encoders


def export_run(
    run_dir: str | Path, fmt: str, out: str | Path | None = None, overwrite: bool = False
) -> ExportResult:
    """Export the run in ``run_dir`` as ``fmt`` (default file ``<run_dir>/export/model.pt`` or ``.onnx``, replaced
    by every export). A file named by ``out`` (or its ``.signature.json`` / ``.encoders.json``) that exists is
    an error unless ``overwrite``: it may be anything, and a typo must not replace it."""
    check_format(fmt)
    run = Path(run_dir)
    if not run.is_dir():
        raise MtlkitError(f"no run folder at {run}: train first (mtlkit train CONFIG --out {run})")
    if out is not None:
        for named in (Path(out), *companion_paths(Path(out))):
            refuse_to_replace(named, "the export", overwrite)
    serving, encoders = serving_model(run)
    path = Path(out) if out is not None else run / "export" / FORMATS[fmt]
    return export_serving(serving, fmt, path, encoders)


__all__ = [
    "FORMATS",
    "SCORE",
    "TOLERANCE",
    "ExportResult",
    "ServingModel",
    "encoders_document",
    "example_inputs",
    "export_run",
    "export_serving",
    "load_encoders",
    "serving_model",
    "signature",
    "traceable",
]
