"""mtlkit train / evaluate / predict end to end, including a run killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pacsv
import pytest
import yaml

from mtlkit.cli import main

CONFIG = {
    "seed": 3,
    "data": {
        "dataset": "synthetic",
        "params": {"binary": True, "train_rows": 4000, "valid_rows": 500, "test_rows": 500, "dim": 20},
    },
    "model": {"name": "mmoe", "params": {"num_experts": 4, "expert_sizes": [16], "tower_sizes": [8]}},
    "training": {
        "epochs": 6,
        "batch_size": 64,
        "lr": 0.01,
        "schedule": "cosine",
        "progress": False,
        "device": "cpu",
        "early_stopping": {"monitor": "valid.mean.auc", "patience": None},
    },
}


def _config(tmp_path: Path, **training: object) -> Path:
    data = json.loads(json.dumps(CONFIG))
    data["training"].update(training)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _train_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mtlkit.cli", "train", str(config), "--out", str(out), *extra]


def test_train_writes_the_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, epochs=2)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert [r[:2] for r in rows] == [[p, t] for p in ("valid", "test") for t in ("y1", "y2", "mean")]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["valid"]) == {"y1", "y2", "mean"}
    assert 0.5 < metrics["test"]["mean"]["auc"] <= 1.0
    assert metrics["best_epoch"] in (1, 2)
    assert (run / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 2
    # a second train into the same folder must not silently overwrite it
    assert main(["train", str(config), "--out", str(run)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


def test_a_run_killed_after_an_epoch_resumes_to_the_same_result(tmp_path: Path) -> None:
    config = _config(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    uninterrupted = tmp_path / "uninterrupted"
    subprocess.run(_train_command(config, uninterrupted), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _train_command(config, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = killed / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-training"
    from mtlkit.training import load_checkpoint

    position = load_checkpoint(checkpoint)["position"]
    assert position["finished"] is False
    assert 1 <= position["epoch"] < 6
    assert not (killed / "metrics.json").exists()
    subprocess.run(_train_command(config, killed, "--resume"), check=True, env=env, capture_output=True)
    expected = json.loads((uninterrupted / "metrics.json").read_text())
    assert json.loads((killed / "metrics.json").read_text()) == expected
    history = (killed / "history.csv").read_text().splitlines()
    reference = (uninterrupted / "history.csv").read_text().splitlines()
    drop_seconds = lambda lines: [",".join(line.split(",")[:-1]) for line in lines]  # noqa: E731
    assert drop_seconds(history) == drop_seconds(reference)


def test_loss_params_reach_the_task_losses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mtlkit.config import load_config
    from mtlkit.training.run import train_run

    config = load_config(_config(tmp_path, epochs=1, loss_params={"y2": {"pos_weight": 4.0}}))
    result = train_run(config, tmp_path / "run")
    assert [repr(loss) for loss in result.trainer.losses.losses.values()] == [
        "BCE(pos_weight=1.0)",
        "BCE(pos_weight=4.0)",
    ]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["training"]["loss_params"] == {
        "y2": {"pos_weight": 4.0}
    }
    bad = _config(tmp_path, epochs=1, loss_params={"y3": {"pos_weight": 4.0}})
    assert main(["train", str(bad), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "training.loss_params: loss parameters given for 'y3', which is not a task" in err
    assert not (tmp_path / "bad").exists()  # checked before the run folder is made


def test_resume_without_a_checkpoint_says_it_starts_a_new_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, epochs=1)
    run = tmp_path / "typo"
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 0
    assert f"no checkpoint in {run} to resume: starting a new run there" in capsys.readouterr().err
    assert (run / "metrics.json").exists()
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 0  # a finished run: nothing to say
    assert "no checkpoint" not in capsys.readouterr().err


def test_resume_accepts_a_checkpoint_written_before_a_key_existed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtlkit.training import load_checkpoint, save_checkpoint

    config = _config(tmp_path, epochs=1)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    del state["config"]["training"]["loss_params"]  # as an mtlkit without that key wrote it
    save_checkpoint(run / "checkpoint.pt", state)
    capsys.readouterr()
    assert main(["train", str(config), "--out", str(run), "--resume"]) == 0
    assert "another configuration" not in capsys.readouterr().err


def test_resume_refuses_another_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, epochs=1)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    code = main(["train", str(config), "--out", str(run), "--resume", "--set", "training.lr=0.5"])
    assert code == 2
    assert "holds a run of another configuration" in capsys.readouterr().err


def test_evaluate_and_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, epochs=1)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test"] == json.loads((run / "metrics.json").read_text())["test"]
    # predict: a file with the feature columns (and one extra column) comes back with pred_ columns
    header = ",".join(["id"] + [f"x{i + 1}" for i in range(20)])
    rows = [",".join([f"row{r}"] + [f"{(r * 7 + i) % 5 - 2}.5" for i in range(20)]) for r in range(7)]
    (tmp_path / "new.csv").write_text("\n".join([header, *rows]) + "\n")
    assert main(["predict", str(run), str(tmp_path / "new.csv"), str(tmp_path / "out.csv")]) == 0
    out = pacsv.read_csv(tmp_path / "out.csv")
    assert out.column_names == ["id"] + [f"x{i + 1}" for i in range(20)] + ["pred_y1", "pred_y2"]
    assert out.column("id").to_pylist() == [f"row{r}" for r in range(7)]
    assert all(0.0 <= p <= 1.0 for p in out.column("pred_y1").to_pylist())
    # the same from Python: the run folder loaded back
    from mtlkit import load_run

    loaded = load_run(run)
    scores = loaded.task_scores(loaded.read(tmp_path / "new.csv"))
    assert scores["y1"].numpy().tolist() == pytest.approx(out.column("pred_y1").to_pylist(), abs=1e-6)
    from mtlkit.training.run import build_splits

    assert loaded.evaluate(build_splits(loaded.config).test) == evaluated["test"]
    # an existing output file is kept unless --overwrite
    before = (tmp_path / "out.csv").read_bytes()
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "new.csv"), str(tmp_path / "out.csv")]) == 2
    assert f"{tmp_path / 'out.csv'} exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out.csv").read_bytes() == before
    # an input that already holds prediction columns (here: the output itself) would get them twice
    args = ["predict", str(run), str(tmp_path / "out.csv"), str(tmp_path / "again.csv")]
    assert main(args) == 2
    assert "already has the column(s) 'pred_y1', 'pred_y2', which predict adds" in capsys.readouterr().err
    assert not (tmp_path / "again.csv").exists()
    assert (
        main(["predict", str(run), str(tmp_path / "new.csv"), str(tmp_path / "out.csv"), "--overwrite"]) == 0
    )
    assert (tmp_path / "out.csv").read_bytes() == before  # the same predictions again
    # missing feature columns are an error naming them
    (tmp_path / "bad.csv").write_text("id,x1\nrow0,1.0\n")
    assert main(["predict", str(run), str(tmp_path / "bad.csv"), str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert "'x2', needed by feature 'x2'" in err
    assert "bad.csv" in err
    assert not (tmp_path / "o.csv").exists()


def test_a_bad_config_exits_2_with_the_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: mmoe\ntraining:\n  epoch: 3\n")
    assert main(["train", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "training.epoch" in err
    assert "epochs" in err


def _write_events(path: Path, rows: int, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    user = rng.integers(0, 30, rows)
    price = rng.normal(size=rows)
    click = (rng.random(rows) < 1 / (1 + np.exp(-(price + (user % 3 == 0))))).astype(int)
    buy = np.where(click == 1, (rng.random(rows) < 0.3).astype(int), 0)
    lines = ["user,price,click,buy"] + [
        f"u{u},{p:.3f},{c},{b}" for u, p, c, b in zip(user, price, click, buy, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("with_valid", [False, True])
def test_train_from_files(tmp_path: Path, with_valid: bool, capsys: pytest.CaptureFixture[str]) -> None:
    _write_events(tmp_path / "train.csv", 600, seed=0)
    _write_events(tmp_path / "valid.csv", 150, seed=1)
    data: dict[str, object] = {"train": "train.csv", "labels": ["click", "buy"]}
    if with_valid:
        data["valid"] = "valid.csv"
    config = {
        "data": data,
        "model": {"name": "shared_bottom", "params": {"bottom_sizes": [8], "tower_sizes": [4]}},
        "training": {"epochs": 1, "batch_size": 64, "progress": False, "device": "cpu"},
    }
    (tmp_path / "files.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "files.yaml"), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["test"]) == {"click", "buy", "mean"}
    assert ("valid.csv" in metrics["note"]) is with_valid
    assert "carved from the train file" in metrics["note"]


def test_predict_handles_unknown_categories_and_keeps_the_rows(tmp_path: Path) -> None:
    _write_events(tmp_path / "train.csv", 400, seed=0)
    config = {
        "data": {"train": "train.csv", "labels": ["click", "buy"]},
        "model": {"name": "mmoe", "params": {"num_experts": 2, "expert_sizes": [4], "tower_sizes": [4]}},
        "training": {"epochs": 1, "batch_size": 64, "progress": False, "device": "cpu"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    # users never seen in training, a missing user and a missing price: predictions for every row, in order
    (tmp_path / "new.csv").write_text("user,price\nnobody,0.5\n,1.0\nu3,\nu4,-2.0\n")
    assert (
        main(["predict", str(tmp_path / "run"), str(tmp_path / "new.csv"), str(tmp_path / "out.parquet")])
        == 0
    )
    import pyarrow.parquet as pq

    out = pq.read_table(tmp_path / "out.parquet")
    assert out.num_rows == 4
    assert out.column("user").to_pylist() == ["nobody", None, "u3", "u4"]
    assert all(0.0 <= p <= 1.0 for p in out.column("pred_click").to_pylist())


def test_tensorboard_logging_or_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, epochs=1, tensorboard=True)
    code = main(["train", str(config), "--out", str(tmp_path / "run")])
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert code == 2
        assert "pip install tensorboard" in capsys.readouterr().err
    else:
        assert code == 0
        assert list((tmp_path / "run" / "tensorboard").iterdir())
