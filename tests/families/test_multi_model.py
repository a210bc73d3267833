"""multi_model: per-task networks trained together equal networks trained alone; a run through mtlkit train."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from mtlkit import Feature, MtlkitError, Schema, Task
from mtlkit.balancing import create_balancer
from mtlkit.data.table import Table
from mtlkit.families import create_family
from mtlkit.families.base import relabel
from mtlkit.families.multi_model import MultiModel
from mtlkit.models import create_model
from mtlkit.training.trainer import Trainer, TrainingOptions

SCHEMA = Schema(
    (Feature("user", "categorical", embedding_dim=4), Feature("f1", "numeric"), Feature("f3", "numeric")),
    (Task("click"), Task("conversion")),
)
OPTIONS = TrainingOptions(epochs=2, batch_size=64, lr=0.01, monitor=None, progress=False)


def _family() -> MultiModel:
    family = create_family("multi_model", SCHEMA, model_params={"bottom_sizes": [8], "tower_sizes": [4]})
    assert isinstance(family, MultiModel)
    return family


def test_it_chooses_independent_networks_and_equal_weights(funnel: Table) -> None:
    family = _family()
    name, params = family.model_choice("mmoe", {"num_experts": 4})
    assert (name, params["share_embedding"]) == ("single_task", False)
    assert family.balancer_choice("pcgrad", {})[0] == "static"
    model = create_model(name, funnel.schema, **params)
    assert list(model.shared_parameters()) == []


def test_a_shared_embedding_is_refused() -> None:
    with pytest.raises(MtlkitError, match="share_embedding must be False"):
        create_family("multi_model", SCHEMA, model_params={"share_embedding": True})


@pytest.fixture
def funnel(funnel_arrow: Callable[[int, int], Any]) -> Table:
    return Table.from_arrow(funnel_arrow(60, 5), SCHEMA)


def test_joint_training_equals_each_network_trained_alone(funnel: Table) -> None:
    """Each task's network gets gradient from its own loss only: training both together for two epochs gives the
    same weights as training each one alone on its task, from the same start and on the same batches."""
    table = funnel
    family = _family()
    name, params = family.model_choice("mmoe", {})
    joint = create_model(name, table.schema, **params)
    start = {k: v.clone() for k, v in joint.state_dict().items()}
    balancer_name, balancer_params = family.balancer_choice("uncertainty", {})
    balancer = create_balancer(balancer_name, table.schema, **balancer_params)
    Trainer(joint, balancer, OPTIONS, seed=0, device="cpu").fit(table)
    moved = 0
    for j, task in enumerate(table.schema.tasks):
        schema = Schema(table.schema.features, (task,))
        alone = create_model(name, schema, **params)
        alone.load_state_dict({k: v for k, v in start.items() if f".{task.name}." in k})
        single = relabel(table, schema, table.labels[:, j : j + 1], None)
        Trainer(alone, create_balancer("static", schema), OPTIONS, seed=0, device="cpu").fit(single)
        trained = joint.state_dict()
        for key, value in alone.state_dict().items():
            torch.testing.assert_close(trained[key], value, rtol=1e-5, atol=1e-6)
            moved += int(not torch.equal(value, start[key]))
    assert moved == len(joint.state_dict())  # every parameter trained (the comparison is not vacuous)
