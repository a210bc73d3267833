"""The Family contract: registry, metrics from task scores, and every family on the funnel through mtlkit train."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from mtlkit.cli import main
from mtlkit.data.datasets import load_dataset
from mtlkit.errors import MtlkitError
from mtlkit.families import create_family, list_families
from mtlkit.families.base import as_logits, task_metrics
from mtlkit.training.run import build_splits, evaluate_run, load_config, load_run

FAMILIES = {
    "mtl": {},
    "multi_model": {"model_params": {"bottom_sizes": [16], "tower_sizes": [8]}},
    "sample_weighting": {"actions": {"conversion": 1.0, "click": 0.2}},
    "pairwise_ltr": {"order": ["conversion", "click"]},
}
FUNNEL = {"impressions": 4000, "users": 300, "items": 200, "ctr": 0.2, "cvr": 0.3, "seed": 1}


def test_the_four_families_are_registered() -> None:
    assert list_families() == list(FAMILIES)


def test_as_logits_inverts_the_predicted_probabilities() -> None:
    z = torch.tensor([-30.0, -2.0, 0.0, 3.0, 40.0])
    back = as_logits(torch.sigmoid(z), "binary")
    assert back.dtype == torch.float64
    torch.testing.assert_close(back[1:4], z[1:4].double(), rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(back[-1]))  # a probability of exactly 1.0 stays finite
    logits = torch.tensor([[1.0, 2.0, -1.0]])
    torch.testing.assert_close(
        torch.softmax(as_logits(torch.softmax(logits, -1), "multiclass"), -1),
        torch.softmax(logits, -1).double(),
    )
    values = torch.tensor([1.5, -2.0])
    assert torch.equal(as_logits(values, "regression"), values.double())


def _config(family: str = "mtl") -> dict[str, object]:
    return {
        "seed": 0,
        "data": {"dataset": "funnel", "params": dict(FUNNEL)},
        "model": {"name": "mmoe", "params": {"num_experts": 2, "expert_sizes": [16], "tower_sizes": [8]}},
        "family": {"name": family, "params": FAMILIES[family]},
        "training": {
            "epochs": 1,
            "batch_size": 256,
            "lr": 0.01,
            "progress": False,
            "device": "cpu",
            "num_threads": 1,
            "early_stopping": {"monitor": "valid.mean.auc", "patience": None},
        },
    }


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_on_the_funnel_and_reports_the_original_tasks(
    family: str, tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(family)))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for part in ("valid", "test"):
        assert set(metrics[part]) == {"click", "conversion", "mean"}
        for task in ("click", "conversion"):
            assert {"auc", "gauc", "logloss", "accuracy"} == set(metrics[part][task])
            assert 0.0 <= metrics[part][task]["auc"] <= 1.0  # a format check: quality is tested per family
    run = load_run(out, device="cpu")
    if family == "multi_model":  # the configured mmoe is replaced by independent per-task networks
        assert type(run.trainer.model).__name__ == "SingleTask"
        assert "family multi_model" in metrics["note"]
    splits = build_splits(load_config(out / "config.yaml"))
    assert evaluate_run(run, splits.valid) == metrics["valid"]
    # metrics from predicted probabilities (the path of the families that train on derived labels) equal the
    # Trainer's on logits wherever both apply: the two ways of scoring a family agree
    via_scores = task_metrics(run.data_schema, run.task_scores(splits.test), splits.test)
    for task, values in metrics["test"].items():
        assert via_scores[task] == pytest.approx(values, rel=1e-4, abs=1e-6, nan_ok=True)


def test_a_family_parameter_error_names_the_family_and_the_value() -> None:
    schema = load_dataset("funnel", **FUNNEL).schema
    with pytest.raises(
        MtlkitError, match=r"family 'sample_weighting': actions\['click'\] must be a finite number"
    ):
        create_family("sample_weighting", schema, actions={"click": float("inf")})


@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_splits_use_the_declared_training_schema(family: str) -> None:
    splits = load_dataset("funnel", **{**FUNNEL, "impressions": 1000})
    made = create_family(family, splits.schema, **FAMILIES[family])
    out = made.training_splits(splits)
    assert out.schema == made.training_schema
    for part, original in zip(out.parts().values(), splits.parts().values(), strict=True):
        assert part.schema == made.training_schema
        assert len(part) == len(original)
        assert torch.equal(part.categorical, original.categorical)
    assert made.schema == splits.schema
