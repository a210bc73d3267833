"""SingleTask: independent per-task networks; no parameter shared unless the embedding is."""

from __future__ import annotations

import pytest
import torch

from mtlkit.models import model_parameters
from mtlkit.models.single_task import SingleTask
from mtlkit.schema import Feature, Schema, Task

TASKS = ("click", "watch", "genre")


def _schema() -> Schema:
    """Shared and tower-only features of both kinds; binary, regression (depending on click), multiclass."""
    return Schema(
        features=(
            Feature("c", "categorical", vocab_size=10, embedding_dim=4),
            Feature("x", "numeric"),
            Feature("d", "categorical", vocab_size=6, embedding_dim=3, towers=("watch",)),
            Feature("y", "numeric", towers=("click", "genre"), missing_indicator=True),
        ),
        tasks=(
            Task("click"),
            Task("watch", "regression", depends_on="click"),
            Task("genre", "multiclass", num_classes=3),
        ),
    )


def _inputs(rows: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    categorical = torch.stack(
        [torch.randint(0, 10, (rows,), generator=g), torch.randint(0, 6, (rows,), generator=g)], dim=1
    )
    return categorical, torch.randn(rows, 3, generator=g)


def _model(**kwargs: object) -> SingleTask:
    torch.manual_seed(0)
    return SingleTask(_schema(), bottom_sizes=(8, 6), tower_sizes=(4,), **kwargs)  # type: ignore[arg-type]


def test_nothing_is_shared_by_default() -> None:
    model = _model()
    assert list(model.shared_parameters()) == []
    owned = [id(p) for t in TASKS for p in model.task_parameters(t)]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())  # each parameter: exactly one task
    out = model.compute(*_inputs())
    assert out.shared is None
    assert out.logits["click"].shape == (16,)
    assert out.logits["genre"].shape == (16, 3)


def test_shared_embedding_is_the_only_shared_part() -> None:
    model = _model(share_embedding=True)
    shared = {id(p) for p in model.shared_parameters()}
    private_tables = {id(p) for t in TASKS for m in model.embedding.task_modules(t) for p in m.parameters()}
    assert shared == {id(p) for p in model.embedding.parameters()} - private_tables
    assert shared  # the shared table of "c"
    categorical, numeric = _inputs()
    expected, _ = model.embedding(categorical, numeric)
    out = model.compute(categorical, numeric)
    assert out.shared is not None
    torch.testing.assert_close(out.shared, expected)


@pytest.mark.parametrize("share_embedding", [False, True])
@pytest.mark.parametrize("task", TASKS)
def test_a_task_loss_never_reaches_another_task(task: str, share_embedding: bool) -> None:
    model = _model(share_embedding=share_embedding)
    out = model.compute(*_inputs())
    out.logits[task].square().sum().backward()
    for p in model.task_parameters(task):
        assert p.grad is not None  # its own net is trained
        assert p.grad.abs().sum() > 0
    for other in TASKS:
        if other == task:
            continue
        for p in model.task_parameters(other):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, (task, other, p.shape)


def test_dependent_towers_are_always_detached() -> None:
    """A single-task baseline shares nothing, so a dependent task never trains its parent's tower."""
    assert "detach_dependency" not in model_parameters("single_task")
    assert _model().towers.detach_dependency is True


def test_changing_one_task_net_leaves_the_others_unchanged() -> None:
    model = _model()
    categorical, numeric = _inputs()
    before = model.compute(categorical, numeric).logits
    with torch.no_grad():
        for p in model.task_parameters("genre"):
            p.add_(1.0)
    after = model.compute(categorical, numeric).logits
    torch.testing.assert_close(after["click"], before["click"], rtol=0, atol=0)
    torch.testing.assert_close(after["watch"], before["watch"], rtol=0, atol=0)
    assert not torch.allclose(after["genre"], before["genre"])


def test_each_task_embeds_only_the_features_it_sees() -> None:
    model = _model()
    # click and genre see c and y (numeric values, no table); watch sees c and its own d
    assert [t.num_embeddings for t in model.embeddings["click"].embedding.tables] == [10]
    assert [t.num_embeddings for t in model.embeddings["genre"].embedding.tables] == [10]
    assert sorted(t.num_embeddings for t in model.embeddings["watch"].embedding.tables) == [6, 10]
    categorical, numeric = _inputs()
    before = model.compute(categorical, numeric).logits
    changed = categorical.clone()
    changed[:, 1] = (changed[:, 1] + 1) % 6  # only watch sees d
    after = model.compute(changed, numeric).logits
    torch.testing.assert_close(after["click"], before["click"], rtol=0, atol=0)
    torch.testing.assert_close(after["genre"], before["genre"], rtol=0, atol=0)
    assert not torch.allclose(after["watch"], before["watch"])


def test_bottom_sizes_are_validated() -> None:
    with pytest.raises(ValueError, match=r"bottom_sizes must be a list of integers >= 1, got \[8, 0\]"):
        SingleTask(_schema(), bottom_sizes=(8, 0))
