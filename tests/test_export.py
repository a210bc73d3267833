"""Export for serving: every registered model as TorchScript and ONNX, run outside PyTorch's eager mode on a batch
of another size than the traced one, matches the model to 1e-5 (probabilities, extras and the fused score)."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
import torch
from torch import Tensor

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.cli import main
from mtlkit.data.encoders import Encoders
from mtlkit.export import (
    EXAMPLE_ROWS,
    SCORE,
    ServingModel,
    encoders_document,
    export_serving,
    load_encoders,
)
from mtlkit.families import create_family
from mtlkit.families.base import MTL
from mtlkit.fusion import Fusion
from mtlkit.models import MultiTaskModel, create_model, list_models
from mtlkit.models.base import Output
from mtlkit.training.run import build_splits, load_run

MODELS = list_models()

#: Models exported to ONNX by default (ONNX export takes 1-3 s per model); the others are marked slow. Chosen to
#: cover the kinds of computation: softmax-gated experts (MMoE), extras (ESMM), attention (AITM); mmoe and esmm
#: also carry a fused score with a value input.
ONNX_DEFAULT = ("mmoe", "esmm", "aitm")

SCHEMA = Schema(
    (
        Feature("user", "categorical", vocab_size=11, embedding_dim=4),
        Feature("item", "categorical", vocab_size=7, embedding_dim=3),
        Feature("price", "numeric", missing_indicator=True),
        Feature("age", "numeric"),
    ),
    (
        Task("click"),
        Task("purchase", depends_on="click"),
        Task("dwell", "regression"),
        Task("rating", "multiclass", num_classes=3),
    ),
)

ROWS = 13  # rows of the batch the exported files run on (the example they are traced with has EXAMPLE_ROWS)


class PriceFusion:
    """A fusion like ``mtlkit.fusion.Fusion``: ``click^0.5 * purchase^1.5 * price^0.3 + 0.1 * dwell``."""

    value_columns = ("price",)

    def __call__(self, scores: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> Tensor:
        return (
            scores["click"] ** 0.5 * scores["purchase"] ** 1.5 * values["price"] ** 0.3
            + 0.1 * scores["dwell"]
        )


def _model(name: str) -> MultiTaskModel:
    torch.manual_seed(0)
    model = create_model(name, SCHEMA)
    with torch.no_grad():  # move away from the initial weights so that every output carries information
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(rows: int, seed: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [torch.randint(0, f.vocab_size or 1, (rows,), generator=g) for f in SCHEMA.categorical], 1
    )
    num = torch.randn(rows, len(SCHEMA.numeric_columns), generator=g)
    price = torch.rand(rows, 1, generator=g) * 50 + 1
    return cat, num, price


def _expected(model: MultiTaskModel, cat: Tensor, num: Tensor, price: Tensor | None) -> dict[str, Tensor]:
    """What the export must reproduce, computed here from the model directly (not through ServingModel)."""
    with torch.no_grad():
        out = model.eval().compute(cat, num)
    expected = {
        "click": torch.sigmoid(out.logits["click"]),
        "purchase": torch.sigmoid(out.logits["purchase"]),
        "dwell": out.logits["dwell"],
        "rating": torch.softmax(out.logits["rating"], dim=-1),
        **out.extras,
    }
    if price is not None:
        expected[SCORE] = PriceFusion()(expected, {"price": price[:, 0]})
    return expected


def _close(got: Mapping[str, Tensor | np.ndarray], expected: Mapping[str, Tensor]) -> None:
    assert list(got) == list(expected)
    for name, want in expected.items():
        have = torch.as_tensor(np.asarray(got[name]))
        assert have.shape == want.shape, name
        torch.testing.assert_close(have, want.float(), atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def _check_export(name: str, fmt: str, tmp_path: Path, fused: bool) -> None:
    model = _model(name)
    fusion = PriceFusion() if fused else None
    serving = ServingModel(model, MTL(SCHEMA), fusion, PriceFusion.value_columns if fused else ())
    path = tmp_path / ("model.pt" if fmt == "torchscript" else "model.onnx")
    result = export_serving(serving, fmt, path)
    assert result.path == path
    assert path.is_file()
    assert result.max_abs_diff <= 1e-5
    names = ["click", "purchase", "dwell", "rating"]
    names += ["pcvr_purchase", "pctcvr_purchase"] if name == "esmm" else []
    names += [SCORE] if fused else []
    assert EXAMPLE_ROWS not in (ROWS, 1)
    for rows in (ROWS, 1):  # another batch size than the traced one, and one row (scoring a single candidate)
        cat, num, price = _inputs(rows)
        expected = _expected(model, cat, num, price if fused else None)
        assert list(expected) == names
        if fmt == "torchscript":
            loaded = torch.jit.load(str(path))
            args = (cat, num, price) if fused else (cat, num)
            got = dict(loaded(*args).items())
        else:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {"categorical": cat.numpy(), "numeric": num.numpy()}
            if fused:
                feeds["values"] = price.numpy()
            assert [i.name for i in session.get_inputs()] == list(feeds)
            output_names = [o.name for o in session.get_outputs()]
            got = dict(zip(output_names, session.run(None, feeds), strict=True))
        _close(got, expected)
    signature = json.loads(result.signature_path.read_text())
    assert signature["output_order"] == list(expected)
    assert signature["inputs"][0]["columns"] == ["user", "item"]
    assert signature["inputs"][1]["columns"] == ["price", "price__missing", "age"]
    assert [o["shape"] for o in signature["outputs"]][3] == ["batch", 3]  # rating: one probability per class


@pytest.mark.parametrize("name", MODELS)
def test_every_model_exports_to_torchscript(name: str, tmp_path: Path) -> None:
    _check_export(name, "torchscript", tmp_path, fused=name in ("mmoe", "esmm"))


@pytest.mark.parametrize(
    "name",
    [n if n in ONNX_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in MODELS],
)
def test_every_model_exports_to_onnx(name: str, tmp_path: Path) -> None:
    _check_export(name, "onnx", tmp_path, fused=name in ("mmoe", "esmm"))


def test_onnx_default_subset_names_registered_models() -> None:
    assert set(ONNX_DEFAULT) <= set(MODELS)


# ----------------------------------------------------------------------------------------- failures
class _BatchSized(MultiTaskModel):
    """A model whose forward uses the batch size as a Python number: tracing bakes it in."""

    def __init__(self, schema: Schema) -> None:
        super().__init__(schema)
        self.linear = torch.nn.Linear(len(schema.numeric_columns), 1)

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        rows = int(numeric.shape[0])
        base = self.linear(numeric).squeeze(-1) + torch.arange(rows, dtype=torch.float32) * 0
        return Output({t: base for t in self.schema.task_names})

    def task_modules(self, task: str) -> list[torch.nn.Module]:
        return []


class _DataDependent(_BatchSized):
    """A model with Python control flow on tensor values: torch.export (ONNX) cannot capture it."""

    def compute(self, categorical: Tensor, numeric: Tensor) -> Output:
        base = self.linear(numeric).squeeze(-1)
        if bool(base.sum() > 0):
            base = base * 2
        return Output({t: base for t in self.schema.task_names})


BINARY = Schema((Feature("a", "numeric"), Feature("b", "numeric")), (Task("y"), Task("z")))


def test_a_trace_that_bakes_in_the_batch_size_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    serving = ServingModel(_BatchSized(BINARY), MTL(BINARY))
    path = tmp_path / "bad.pt"
    with pytest.raises(MtlkitError, match=r"torchscript export of _BatchSized fails on a batch of 5 rows"):
        export_serving(serving, "torchscript", path)
    assert not path.exists()


def test_a_failed_export_keeps_the_file_it_would_have_replaced(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    export_serving(ServingModel(create_model("shared_bottom", BINARY), MTL(BINARY)), "torchscript", path)
    before = path.read_bytes()
    with pytest.raises(MtlkitError, match="fails on a batch of 5 rows"):
        export_serving(ServingModel(_BatchSized(BINARY), MTL(BINARY)), "torchscript", path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.signature.json"]  # no partial


def test_untraceable_control_flow_is_a_clear_onnx_error(tmp_path: Path) -> None:
    serving = ServingModel(_DataDependent(BINARY), MTL(BINARY))
    with pytest.raises(
        MtlkitError, match=r"_DataDependent cannot be exported to onnx: .*try --format torchscript"
    ):
        export_serving(serving, "onnx", tmp_path / "bad.onnx")


def test_unknown_format_names_the_formats(tmp_path: Path) -> None:
    serving = ServingModel(_model("mmoe"), MTL(SCHEMA))
    with pytest.raises(MtlkitError, match=r"unknown export format 'onx' \(did you mean 'onnx'\?\)"):
        export_serving(serving, "onx", tmp_path / "m")


def test_a_task_called_score_clashes_with_the_fused_score() -> None:
    schema = Schema((Feature("a", "numeric"),), (Task("score"), Task("z")))

    def fuse(scores: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> Tensor:
        return scores["score"] * scores["z"]

    with pytest.raises(MtlkitError, match=r"named 'score'.* rename the task"):
        ServingModel(create_model("shared_bottom", schema), MTL(schema), fuse)


# ----------------------------------------------------------------------------------------- encoders
def test_encoders_json_rules_reproduce_the_encoders() -> None:
    schema = Schema(
        (
            Feature("shop", "categorical"),
            Feature("size", "categorical", column="size_code"),
            Feature("price", "numeric", missing_indicator=True),
            Feature("age", "numeric", fill="median"),
        ),
        (Task("y"),),
    )
    train = pa.table(
        {
            "shop": ["a", "b", "a", "c", None, "a"],
            "size_code": [3.0, 1.0, 3.0, 2.0, 1.0, float("nan")],
            "price": [1.0, float("nan"), 3.5, 10.0, 2.0, 4.0],
            "age": [20.0, 30.0, 40.0, 50.0, 60.0, 70.0],
            "y": [0, 1, 0, 1, 0, 1],
        }
    )
    encoders = Encoders.fit(train, schema)
    document = json.loads(json.dumps(encoders_document(encoders, schema)))
    rows = [
        {"shop": "a", "size_code": 3.0, "price": 2.0, "age": 33.0},
        {"shop": "zzz", "size_code": 1.0, "price": None, "age": None},
        {"shop": None, "size_code": 9.0, "price": 0.0, "age": 70.0},
    ]
    raw = pa.table(
        {k: [r[k] for r in rows] for k in rows[0]},
        schema=pa.schema(
            [
                ("shop", pa.string()),
                ("size_code", pa.float64()),
                ("price", pa.float64()),
                ("age", pa.float64()),
            ]
        ),
    )
    want_cat, want_num = encoders.encode(raw, schema)
    # the documented rules, applied with plain Python to the JSON alone
    cat = np.zeros((len(rows), len(document["categorical"])), np.int64)
    for entry in document["categorical"]:
        for i, row in enumerate(rows):
            value = row[entry["source"]]
            if isinstance(value, float) and value == int(value):
                value = int(value)
            text = None if value is None else str(value)
            cat[i, entry["column"]] = (
                entry["vocabulary"].index(text) + 1 if text in entry["vocabulary"] else 0
            )
    num = np.zeros((len(rows), 3), np.float32)
    for entry in document["numeric"]:
        for i, row in enumerate(rows):
            value = row[entry["source"]]
            missing = value is None or math.isnan(value)
            x = entry["fill_value"] if missing else value
            num[i, entry["columns"][0]] = (x - entry["mean"]) / entry["std"]
            if entry["missing_indicator"]:
                num[i, entry["columns"][1]] = 1.0 if missing else 0.0
    np.testing.assert_array_equal(cat, want_cat)
    np.testing.assert_allclose(num, want_num, rtol=1e-6, atol=1e-6)
    assert cat[1, 0] == 0  # an unseen shop
    assert cat[2, 0] == 0  # a missing shop
    assert num[1, 1] == 1.0  # the missing flag of price


# ----------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    config = Path(__file__).resolve().parents[1] / "examples" / "synthetic.yaml"
    code = main(
        [
            "train",
            str(config),
            "--out",
            str(out),
            "--set",
            "data.params.train_rows=600",
            "--set",
            "data.params.valid_rows=200",
            "--set",
            "data.params.test_rows=200",
            "--set",
            "training.epochs=1",
            "--set",
            "training.progress=false",
        ]
    )
    assert code == 0
    return out


def test_cli_exports_a_trained_run_that_matches_mtlkit_predict(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["export", str(trained_run), "--format", "torchscript"]) == 0
    assert main(["export", str(trained_run), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "checked with torch.jit.load" in out
    assert "checked with onnx.checker and onnxruntime" in out
    folder = trained_run / "export"
    for name in ("model.pt", "model.onnx"):
        assert (folder / name).is_file()
        signature = json.loads((folder / f"{name}.signature.json").read_text())
        assert signature["output_order"] == ["y1", "y2"]
        assert signature["inputs"][1]["columns"] == [f"x{i}" for i in range(1, 101)]
        assert load_encoders(folder / signature["encoders"]) == load_run(trained_run).encoders
    run = load_run(trained_run, device="cpu")
    valid = build_splits(run.config).valid
    expected = run.task_scores(valid)  # what mtlkit predict writes
    scripted = torch.jit.load(str(folder / "model.pt"))(valid.categorical, valid.numeric)
    _close(dict(scripted.items()), expected)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"categorical": valid.categorical.numpy(), "numeric": valid.numeric.numpy()})
    _close(dict(zip(["y1", "y2"], outs, strict=True)), expected)


def test_cli_writes_to_out(trained_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "serving" / "ranker.ts"
    assert main(["export", str(trained_run), "--format", "torchscript", "--out", str(target)]) == 0
    assert target.is_file()
    signature = json.loads((tmp_path / "serving" / "ranker.ts.signature.json").read_text())
    assert signature["file"] == "ranker.ts"
    assert signature["encoders"] == "ranker.ts.encoders.json"
    assert (tmp_path / "serving" / "ranker.ts.encoders.json").is_file()


@pytest.mark.parametrize("existing", ["ranker.ts", "ranker.ts.signature.json", "ranker.ts.encoders.json"])
def test_cli_does_not_replace_an_out_file_without_overwrite(
    trained_run: Path, tmp_path: Path, existing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "ranker.ts"
    (tmp_path / existing).write_text("someone's file")
    args = ["export", str(trained_run), "--format", "torchscript", "--out", str(target)]
    assert main(args) == 2
    assert f"{tmp_path / existing} exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / existing).read_text() == "someone's file"
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((tmp_path / "ranker.ts.signature.json").read_text())["file"] == "ranker.ts"
    # the default file inside the run folder is mtlkit's own and is replaced by every export
    assert main(["export", str(trained_run), "--format", "torchscript"]) == 0
    assert main(["export", str(trained_run), "--format", "torchscript"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "onx"], r"unknown export format 'onx' \(did you mean 'onnx'\?\)"),
        (["--format", "torchscript"], r"no run folder at"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(
    args: list[str], message: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = trained_run if "onx" in args else tmp_path / "missing"
    capsys.readouterr()
    assert main(["export", str(run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("mtlkit: error: ")
    assert re.search(message, err)


def test_cli_folder_without_checkpoint_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- families, fusion
def test_a_single_score_family_exports_every_task_and_gives_score_to_the_fusion(tmp_path: Path) -> None:
    """sample_weighting trains one model on 'any action' and scores every task with it (plus ``score``);
    with a fusion, ``score`` is the fused score instead."""
    schema = Schema(SCHEMA.features, (Task("click"), Task("purchase", depends_on="click")))
    family = create_family("sample_weighting", schema, actions={"purchase": 1.0, "click": 0.2})
    torch.manual_seed(0)
    model = create_model("mmoe", family.training_schema)  # type: ignore[attr-defined]
    cat, num, price = _inputs(ROWS)
    with torch.no_grad():
        single = torch.sigmoid(next(iter(model.eval().compute(cat, num).logits.values())))
    plain = export_serving(ServingModel(model, family), "torchscript", tmp_path / "plain.pt")
    assert plain.outputs == ("click", "purchase", "score")
    got = dict(torch.jit.load(str(plain.path))(cat, num).items())
    for name in ("click", "purchase", "score"):
        torch.testing.assert_close(got[name], single, atol=1e-5, rtol=0)

    def fuse(scores: Mapping[str, Tensor], values: Mapping[str, Tensor]) -> Tensor:
        return scores["click"] * values["price"]

    serving = ServingModel(model, family, fuse, ("price",))
    fused = export_serving(serving, "onnx", tmp_path / "fused.onnx")
    assert fused.outputs == ("click", "purchase", "score")
    session = ort.InferenceSession(str(fused.path), providers=["CPUExecutionProvider"])
    outs = session.run(None, {"categorical": cat.numpy(), "numeric": num.numpy(), "values": price.numpy()})
    got = dict(zip(fused.outputs, outs, strict=True))
    torch.testing.assert_close(torch.from_numpy(got["purchase"]), single, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.from_numpy(got["score"]), single * price[:, 0], atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize(
    ("kind", "weights", "values", "fmt"),
    [
        ("product", {"click": 1.0, "purchase": 0.5}, {"price": 0.3}, "torchscript"),
        # no value columns: the case where onnxruntime read uninitialised memory (see export._fused_score)
        ("weighted_sum", {"click": 1.0, "purchase": 2.0, "dwell": 0.1}, {}, "onnx"),
        pytest.param(
            "product", {"click": 1.0, "purchase": 0.5}, {"price": 0.3}, "onnx", marks=pytest.mark.slow
        ),
        pytest.param("weighted_sum", {"click": 1.0, "dwell": 0.1}, {}, "torchscript", marks=pytest.mark.slow),
    ],
)
def test_the_runs_fusion_is_exported_as_score(
    kind: str, weights: dict[str, float], values: dict[str, float], fmt: str, tmp_path: Path
) -> None:
    fusion = Fusion(kind, weights, values)
    model = _model("esmm")
    serving = ServingModel(model, MTL(SCHEMA), fusion, fusion.value_columns)
    result = export_serving(serving, fmt, tmp_path / f"m.{fmt}")
    assert result.inputs == (("categorical", "numeric", "values") if values else ("categorical", "numeric"))
    cat, num, price = _inputs(ROWS)
    with torch.no_grad():
        out = model.eval().compute(cat, num)
    probs = {t: torch.sigmoid(out.logits[t]) for t in ("click", "purchase")} | {"dwell": out.logits["dwell"]}
    expected = fusion(probs, {"price": price[:, 0]} if values else {}).float()
    if fmt == "torchscript":
        args = (cat, num, price) if values else (cat, num)
        score = torch.jit.load(str(result.path))(*args)["score"]
    else:
        session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        feeds = {"categorical": cat.numpy(), "numeric": num.numpy()}
        if values:
            feeds["values"] = price.numpy()
        score = torch.from_numpy(session.run(["score"], feeds)[0])
    torch.testing.assert_close(score, expected, atol=1e-5, rtol=1e-5)
    signature = json.loads(result.signature_path.read_text())
    assert signature["output_order"][-1] == "score"
    if values:
        assert signature["inputs"][2] == {
            "name": "values",
            "dtype": "float32",
            "shape": ["batch", 1],
            "columns": ["price"],
            "meaning": "raw (unscaled) value columns the fused score reads",
        }


def test_cli_exports_the_runs_fusion_json_as_score(trained_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "fused"
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns("export"))
    fusion = Fusion("product", {"y1": 1.0, "y2": 0.5})
    fusion.save(run_dir / "fusion.json")
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 0
    run = load_run(run_dir, device="cpu")
    valid = build_splits(run.config).valid
    predictions = run.task_scores(valid)
    expected = {**predictions, "score": fusion(predictions, {}).float()}  # what mtlkit predict writes
    scripted = torch.jit.load(str(run_dir / "export" / "model.pt"))(valid.categorical, valid.numeric)
    _close(dict(scripted.items()), expected)
    signature = json.loads((run_dir / "export" / "model.pt.signature.json").read_text())
    assert signature["fusion"] == repr(fusion)


def test_cli_fusion_json_naming_an_unknown_task_is_an_error(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "bad"
    shutil.copytree(trained_run, run_dir, ignore=shutil.ignore_patterns("export"))
    (run_dir / "fusion.json").write_text(json.dumps({"kind": "product", "weights": {"y3": 1.0}}))
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert "no task 'y3'" in err
    assert str(run_dir / "fusion.json") in err
    assert not (run_dir / "export" / "model.pt").exists()
