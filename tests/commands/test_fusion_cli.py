"""``mtlkit predict`` with a fusion (the score column) and ``mtlkit fusion search`` on a small trained run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import yaml

from mtlkit.cli import main
from mtlkit.fusion import Fusion

ROWS = 1500


def write_funnel_csv(path: Path, rows: int, seed: int) -> None:
    """Click from x1, conversion after a click from x2, ten rows per request, a price per row."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    click = (rng.random(rows) < 1 / (1 + np.exp(-2 * x1))).astype(float)
    conversion = click * (rng.random(rows) < 1 / (1 + np.exp(-2 * x2)))
    table = pa.table(
        {
            "x1": x1,
            "x2": x2,
            "cat": rng.choice(["a", "b", "c"], size=rows),
            "request": np.arange(rows) // 10,
            "price": np.exp(rng.normal(size=rows)),
            "click": click,
            "conversion": conversion,
        }
    )
    pacsv.write_csv(table, path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fusion_cli")
    write_funnel_csv(folder / "train.csv", ROWS, seed=0)
    config = {
        "seed": 0,
        "data": {
            "train": str(folder / "train.csv"),
            "split": [0.6, 0.2, 0.2],
            "split_seed": 0,
            "schema": {
                "features": [
                    {"name": "x1", "kind": "numeric"},
                    {"name": "x2", "kind": "numeric"},
                    {"name": "cat", "kind": "categorical"},
                ],
                "tasks": [{"name": "click"}, {"name": "conversion"}],
                "group": "request",
                "values": ["price"],
            },
        },
        "model": {"name": "shared_bottom", "params": {}},
        "training": {"epochs": 2, "batch_size": 128, "lr": 0.01, "device": "cpu"},
        "fusion": {"kind": "product", "weights": {"click": 1.0, "conversion": 2.0}, "values": {"price": 0.5}},
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(folder / "run.yaml"), "--out", str(folder / "run")]) == 0
    return folder / "run"


def test_train_saved_the_configured_fusion(run_dir: Path) -> None:
    assert Fusion.load(run_dir / "fusion.json") == Fusion(
        "product", {"click": 1.0, "conversion": 2.0}, {"price": 0.5}
    )


def test_predict_adds_a_score_equal_to_the_fusion_of_the_pred_columns(run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "new.csv"
    write_funnel_csv(source, 50, seed=1)
    out = tmp_path / "scored.csv"
    assert main(["predict", str(run_dir), str(source), str(out)]) == 0
    table = pacsv.read_csv(out).to_pydict()
    ctr, cvr, price = (np.asarray(table[c]) for c in ("pred_click", "pred_conversion", "price"))
    np.testing.assert_allclose(table["score"], ctr * cvr**2 * price**0.5, rtol=1e-5)
    # another fusion file: a weighted sum without value columns
    other = tmp_path / "other.json"
    Fusion("weighted_sum", {"click": 0.2, "conversion": 0.8}).save(other)
    assert main(["predict", str(run_dir), str(source), str(out), "--fusion", str(other), "--overwrite"]) == 0
    table = pacsv.read_csv(out).to_pydict()
    expected = 0.2 * np.asarray(table["pred_click"]) + 0.8 * np.asarray(table["pred_conversion"])
    np.testing.assert_allclose(table["score"], expected, rtol=1e-5)


def test_predict_errors_name_the_file_and_column(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "no_price.csv"
    write_funnel_csv(source, 20, seed=2)
    table = pacsv.read_csv(source)
    pacsv.write_csv(table.drop_columns(["price"]), source)
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(source), str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{source} has no column 'price'" in err
    bad = tmp_path / "bad.json"
    Fusion("product", {"clicks": 1.0}).save(bad)
    assert main(["predict", str(run_dir), str(source), str(tmp_path / "o.csv"), "--fusion", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no task 'clicks' (did you mean 'click'?)" in err
    # a file that already has the fused score's column
    scored = tmp_path / "scored.csv"
    write_funnel_csv(scored, 20, seed=3)
    pacsv.write_csv(pacsv.read_csv(scored).append_column("score", pa.array([0.0] * 20)), scored)
    assert main(["predict", str(run_dir), str(scored), str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{scored} already has the column(s) 'score', which predict adds" in err
    assert "and the fused score" in err
    assert not (tmp_path / "o.csv").exists()


def search(run_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    capsys.readouterr()
    assert main(["fusion", "search", str(run_dir), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_search_auc_of_one_task_puts_the_weight_on_it(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = search(run_dir, capsys, "--target", "auc:conversion", "--kind", "weighted_sum", "--grid", "5")
    assert report["fusion"]["weights"] == {"click": 0.0, "conversion": 1.0}
    assert report["fusion"]["values"] == {"price": 0.0}  # the run's fusion reads price: searched too
    assert report["valid"]["target"] == pytest.approx(report["own_auc"]["valid"]["conversion"])
    assert report["test"]["target"] == pytest.approx(report["test"]["auc"]["conversion"])
    assert set(report["valid"]["auc"]) == {"click", "conversion"}
    assert report["search"]["trials"] == 15  # C(5 - 1 + 2, 2) points of the 3-weight simplex
    assert "current" in report


def test_search_ndcg_with_optuna_saves_a_deterministic_fusion(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--target", "ndcg:click+3*conversion@5", "--trials", "8", "--seed", "1"]
    first = search(run_dir, capsys, *args)
    again = search(run_dir, capsys, *args, "--save")
    assert first["fusion"] == again["fusion"]
    assert first["search"]["method"] == "optuna TPE (seed 1)"
    assert Fusion.load(run_dir / "fusion.json") == Fusion.from_dict(first["fusion"])
    assert 0.0 < first["valid"]["target"] <= 1.0
    # a table too
    capsys.readouterr()
    assert (
        main(
            [
                "fusion",
                "search",
                str(run_dir),
                "--target",
                "auc:click",
                "--tasks",
                "click,conversion",
                "--values",
                "",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "auc click" in out
    assert "weights" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "auc:clik"], "no task 'clik'"),
        (["--target", "ndcg:price-click"], "is not a term"),
        (["--target", "auc:click", "--tasks", "click,purchase"], "--tasks: no task 'purchase'"),
        (["--target", "auc:click", "--values", "prise"], "did you mean 'price'"),
        (["--target", "auc:click", "--tasks", "click", "--values", ""], "nothing to search"),
    ],
)
def test_search_errors_are_one_line_with_status_2(
    run_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    capsys.readouterr()
    assert main(["fusion", "search", str(run_dir), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]
