"""predict_file: a file's rows written out again with their predictions, in parts of rows, the same whatever the
part size; errors name the row in the file and leave the output as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from mtlkit import predict_file
from mtlkit.cli import main
from mtlkit.config import RunConfig
from mtlkit.data import readers
from mtlkit.data.columns import Origin
from mtlkit.data.readers import TableWriter, write_table
from mtlkit.errors import MtlkitError
from mtlkit.fusion import Fusion
from mtlkit.training.run import LoadedRun, load_run, train_run


def _events(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 30, rows)
    price = rng.normal(size=rows).round(3)
    click = (rng.random(rows) < 1 / (1 + np.exp(-price))).astype(int)
    buy = np.where(click == 1, (rng.random(rows) < 0.3).astype(int), 0)
    return pa.table(
        {
            "id": [f"r{i}" for i in range(rows)],
            "user": [f"u{u}" for u in user],
            "price": price,
            "click": click,
            "buy": buy,
        }
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    folder = tmp_path_factory.mktemp("predict")
    pacsv.write_csv(_events(400, seed=0).drop_columns(["id"]), folder / "train.csv")  # id: passed through
    config = RunConfig.from_dict(
        {
            "data": {"train": str(folder / "train.csv"), "labels": ["click", "buy"]},
            "model": {"name": "mmoe", "params": {"num_experts": 2, "expert_sizes": [4], "tower_sizes": [4]}},
            "training": {"epochs": 1, "batch_size": 64, "progress": False, "device": "cpu"},
        }
    )
    train_run(config, folder / "run")
    return load_run(folder / "run")


def _read(path: Path, **csv: Any) -> pa.Table:
    return pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path, **csv)


def assert_same_output(a: Path, b: Path, **csv: Any) -> None:
    """Two prediction files hold the same rows: the input's columns exactly, the predictions (``pred_*``,
    ``score``) to float32 rounding: the model's products differ in their last bits between batch shapes (BLAS
    blocks a 3-row and a 10-row product differently), so parts of another size are not bit-identical."""
    x, y = _read(a, **csv), _read(b, **csv)
    assert x.schema == y.schema
    for name in x.column_names:
        if name.startswith("pred_") or name == "score":
            np.testing.assert_allclose(x.column(name).to_numpy(), y.column(name).to_numpy(), rtol=1e-6)
        else:
            assert x.column(name).equals(y.column(name)), name


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_parts_give_the_file_one_pass_gives(run: LoadedRun, tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"new{suffix}"
    write_table(_events(10, seed=1).drop_columns(["click", "buy"]), source)
    fusion = Fusion("weighted_sum", {"click": 0.3, "buy": 0.7}, {"price": 0.1})
    whole = predict_file(run, source, tmp_path / f"whole{suffix}", fusion=fusion)
    written: list[int] = []
    parts = predict_file(
        run, source, tmp_path / f"parts{suffix}", fusion=fusion, chunk_rows=3, on_part=written.append
    )
    assert written == [3, 6, 9, 10]  # rows written so far, after each part
    assert (whole.rows, whole.parts, parts.rows, parts.parts) == (10, 1, 10, 4)
    assert whole.columns == parts.columns == ["pred_click", "pred_buy", "score"]
    assert_same_output(tmp_path / f"whole{suffix}", tmp_path / f"parts{suffix}")
    out = (
        pq.read_table(tmp_path / "parts.parquet")
        if suffix == ".parquet"
        else pacsv.read_csv(tmp_path / "parts.csv")
    )
    assert out.column("id").to_pylist() == [f"r{i}" for i in range(10)]  # every row, in order
    # the predictions are the run's own, and the score the fusion of them
    scores = run.task_scores(run.read(source))
    np.testing.assert_allclose(out.column("pred_buy").to_numpy(), scores["buy"].numpy(), rtol=1e-6)
    price = out.column("price").to_numpy()
    expected = 0.3 * scores["click"].double().numpy() + 0.7 * scores["buy"].double().numpy() + 0.1 * price
    np.testing.assert_allclose(out.column("score").to_numpy(), expected, rtol=1e-6)


def test_a_column_that_turns_to_text_far_down_keeps_one_type_in_every_part(
    run: LoadedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Column types come from the whole file, not from each part: an id column of numbers that holds text only
    after the first blocks is text in every part, so the parts write one file, the same for any part size."""
    monkeypatch.setattr(readers, "CSV_BLOCK_SIZE", 1 << 10)  # types from ~60 rows
    monkeypatch.setattr(readers, "CSV_PART_BLOCK_SIZE", 1 << 10)  # text found after parts were written
    source = tmp_path / "late.csv"
    ids = [str(i) if i < 500 else f"x{i}" for i in range(600)]
    source.write_text("id,user,price\n" + "".join(f"{k},u{i % 9},{i / 100}\n" for i, k in enumerate(ids)))
    small = predict_file(run, source, tmp_path / "small.csv", chunk_rows=64)
    whole = predict_file(run, source, tmp_path / "whole.csv", chunk_rows=10_000)
    assert (small.parts, whole.parts, small.rows) == (10, 1, 600)
    text_id = pacsv.ConvertOptions(column_types={"id": pa.string()})
    assert_same_output(tmp_path / "small.csv", tmp_path / "whole.csv", convert_options=text_id)
    out = pacsv.read_csv(
        tmp_path / "small.csv", convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()})
    )
    assert out.column("id").to_pylist() == ids
    assert not list(tmp_path.glob("*.tmp"))  # the parts written with id as numbers were dropped


def test_a_bad_value_in_a_later_part_names_its_row_in_the_file(run: LoadedRun, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    rows = ["user,price"] + [f"u{i},{i}.5" for i in range(7)]
    rows[6] = "u5,inf"  # the 6th data row, line 7
    source.write_text("\n".join(rows) + "\n")
    output = tmp_path / "out.csv"
    output.write_text("kept\n")
    with pytest.raises(MtlkitError, match=r"value inf at row 6 \(line 7\) of .*bad.csv \(rows 4-6\)"):
        predict_file(run, source, output, chunk_rows=3)
    assert output.read_text() == "kept\n"  # the parts written before the error are dropped
    assert not (tmp_path / "out.csv.tmp").exists()


def test_fusion_values_are_checked_over_the_whole_file_first(run: LoadedRun, tmp_path: Path) -> None:
    source = tmp_path / "neg.csv"
    source.write_text("user,price\nu1,1.0\nu2,2.0\nu3,-1.0\nu4,3.0\n")
    fusion = Fusion("product", {"click": 1.0}, {"price": 1.0})
    first = r"first: row 3 \(line 4\) of .*neg.csv \(rows 3-4\), -1.0"
    with pytest.raises(MtlkitError, match=rf"'price' has 1 negative values \({first}\)"):
        predict_file(run, source, tmp_path / "o.csv", fusion=fusion, chunk_rows=2)
    assert not (tmp_path / "o.csv").exists()
    with pytest.raises(MtlkitError, match=r"neg.csv has no column 'cost', which the fusion reads as a value"):
        predict_file(run, source, tmp_path / "o.csv", fusion=Fusion("product", {"click": 1.0}, {"cost": 1.0}))
    with pytest.raises(MtlkitError, match="fuses task 'clik'"):
        predict_file(run, source, tmp_path / "o.csv", fusion=Fusion("weighted_sum", {"clik": 1.0}))


def test_chunk_rows_must_be_positive(
    run: LoadedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(MtlkitError, match="chunk_rows must be an integer >= 1, got 0"):
        predict_file(run, tmp_path / "x.csv", tmp_path / "o.csv", chunk_rows=0)
    assert (
        main(
            [
                "predict",
                str(run.out_dir),
                str(tmp_path / "x.csv"),
                str(tmp_path / "o.csv"),
                "--chunk-rows",
                "0",
            ]
        )
        == 2
    )
    assert "--chunk-rows must be >= 1, got 0" in capsys.readouterr().err


def test_cli_says_in_how_many_parts(
    run: LoadedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "new.csv"
    pacsv.write_csv(_events(5, seed=2).drop_columns(["click", "buy"]), source)
    out = tmp_path / "o.parquet"
    assert main(["predict", str(run.out_dir), str(source), str(out), "--chunk-rows", "2"]) == 0
    assert f"wrote 5 rows with pred_click, pred_buy to {out} in 3 parts of 2 rows" in capsys.readouterr().out
    assert pq.read_table(out).num_rows == 5


def test_table_writer_appends_and_is_atomic(tmp_path: Path) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", None, "z"]})
    for suffix in (".csv", ".parquet"):
        one, pieces = tmp_path / f"one{suffix}", tmp_path / f"pieces{suffix}"
        write_table(table, one)
        with TableWriter(pieces) as writer:
            writer.write(table.slice(0, 2))
            writer.write(table.slice(2))
        assert (
            one.read_bytes() == pieces.read_bytes()
            if suffix == ".csv"
            else pq.read_table(pieces).equals(table)
        )
    target = tmp_path / "kept.csv"
    target.write_text("old\n")

    def fail_midway() -> None:
        with TableWriter(target) as writer:
            writer.write(table)
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        fail_midway()
    assert target.read_text() == "old\n"
    assert not (tmp_path / "kept.csv.tmp").exists()


def test_origin_part_names_the_rows_it_holds() -> None:
    origin = Origin("f.csv", first_line=2)
    assert origin.part(0, 10).where(9) == "row 10 (line 11) of f.csv (rows 1-10)"
    part = origin.part(1_000_000, 500)
    assert part.source == "f.csv (rows 1,000,001-1,000,500)"
    assert part.where(0) == "row 1000001 (line 1000002) of f.csv (rows 1,000,001-1,000,500)"
    assert Origin("f.parquet").part(3, 3).where(2) == "row 6 of f.parquet (rows 4-6)"


def test_keep_writes_only_the_named_input_columns(run: LoadedRun, tmp_path: Path) -> None:
    source = tmp_path / "new.parquet"
    write_table(_events(12, seed=4), source)  # with id and labels, which the output leaves out
    fusion = Fusion("weighted_sum", {"click": 0.5, "buy": 0.5}, {"price": 0.2})
    whole = tmp_path / "whole.parquet"
    predict_file(run, source, whole, fusion=fusion)
    slim = tmp_path / "slim.parquet"
    result = predict_file(run, source, slim, fusion=fusion, keep=["id", "id"], chunk_rows=5)
    assert result.parts == 3
    table = pq.read_table(slim)
    assert table.column_names == ["id", "pred_click", "pred_buy", "score"]  # price is read, not written
    assert table.equals(pq.read_table(whole).select(table.column_names))
    only = predict_file(run, source, tmp_path / "only.csv", keep=[])
    assert pacsv.read_csv(tmp_path / "only.csv").column_names == only.columns == ["pred_click", "pred_buy"]


def test_keep_names_columns_of_the_file(
    run: LoadedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "new.csv"
    pacsv.write_csv(_events(4, seed=5).append_column("pred_buy", pa.array([0.0] * 4)), source)
    with pytest.raises(
        MtlkitError, match=r"(?s)new.csv lacks 1 column.*'idd', needed by keep \(did you mean 'id'\?\)"
    ):
        predict_file(run, source, tmp_path / "o.csv", keep=["idd"])
    with pytest.raises(
        MtlkitError, match=r"already has the column\(s\) 'pred_buy'.*or leave them out of keep"
    ):
        predict_file(run, source, tmp_path / "o.csv", keep=["id", "pred_buy"])
    predict_file(run, source, tmp_path / "o.csv", keep=["id"])  # its own pred_buy is not written: no clash
    no_user = tmp_path / "no_user.csv"
    pacsv.write_csv(_events(4, seed=5).drop_columns(["user"]), no_user)
    with pytest.raises(MtlkitError, match=r"(?s)lacks 1 column.*'user', needed by feature 'user'"):
        predict_file(run, no_user, tmp_path / "o2.csv", keep=["id"])
    out = tmp_path / "cli.csv"
    assert main(["predict", str(run.out_dir), str(source), str(out), "--keep", "id, price"]) == 0
    assert pacsv.read_csv(out).column_names == ["id", "price", "pred_click", "pred_buy"]
    assert "with pred_click, pred_buy" in capsys.readouterr().out
