"""The MMoE synthetic generator: the geometry the paper promises and the label-correlation trend."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mtlkit import DataError, load_dataset
from mtlkit.data.datasets.synthetic import correlation_factor, generate_synthetic


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("p", [-1.0, -0.5, 0.0, 0.3, 0.8, 1.0])
def test_cosine_of_task_weights_equals_p(p: float) -> None:
    data = generate_synthetic(10, correlation=p, seed=3)
    assert _cos(data.w[0], data.w[1]) == pytest.approx(p, abs=1e-9)
    # the paper's construction: w1 = c u1 with |u1| = 1, and |w2| = c
    assert np.linalg.norm(data.w[0]) == pytest.approx(1.0)
    assert np.linalg.norm(data.w[1]) == pytest.approx(1.0)


def test_scale_sets_the_norm_of_every_weight_vector() -> None:
    data = generate_synthetic(10, correlation=0.4, tasks=3, scale=2.5, seed=1)
    np.testing.assert_allclose(np.linalg.norm(data.w, axis=1), 2.5)


@pytest.mark.parametrize(("tasks", "p"), [(3, 0.5), (5, 0.9), (4, -0.3), (6, 1.0)])
def test_many_tasks_have_the_given_pairwise_cosine(tasks: int, p: float) -> None:
    w = generate_synthetic(5, correlation=p, tasks=tasks, seed=0).w
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    gram = unit @ unit.T
    expected = np.full((tasks, tasks), p)
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(gram, expected, atol=1e-9)


def test_correlation_factor_reproduces_the_paper_for_two_tasks() -> None:
    p = 0.6
    factor = correlation_factor(2, p)
    np.testing.assert_allclose(factor, [[1.0, 0.0], [p, np.sqrt(1 - p**2)]])


def test_impossible_correlation_is_an_error_naming_the_bound() -> None:
    with pytest.raises(DataError, match=r"correlation must be in \[-0.5, 1\] for 3 tasks"):
        correlation_factor(3, -0.7)
    with pytest.raises(DataError, match="correlation"):
        load_dataset("synthetic", correlation=1.5)


def test_label_correlation_rises_with_p_and_is_one_at_p_one() -> None:
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    means = []
    for p in grid:
        corr = [np.corrcoef(generate_synthetic(8000, p, seed=s).y.T)[0, 1] for s in range(4)]
        means.append(float(np.mean(corr)))
    assert all(b > a for a, b in itertools.pairwise(means)), means
    assert abs(means[0]) < 0.05
    assert means[-1] > 0.98


def test_labels_follow_the_formula() -> None:
    data = generate_synthetic(50, correlation=0.2, noise_std=0.0, seed=7)
    z = data.x @ data.w.T
    expected = z + np.sin(z[:, :, None] * data.alpha + data.beta).sum(axis=2)
    np.testing.assert_allclose(data.y, expected, atol=1e-10)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = generate_synthetic(100, 0.5, seed=1)
    b = generate_synthetic(100, 0.5, seed=1)
    c = generate_synthetic(100, 0.5, seed=2)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.y, c.y)


def test_load_synthetic_regression_splits() -> None:
    splits = load_dataset("synthetic", train_rows=500, valid_rows=100, test_rows=50, tasks=3)
    assert [len(t) for t in splits.parts().values()] == [500, 100, 50]
    assert splits.schema.task_names == ("y1", "y2", "y3")
    assert all(t.kind == "regression" for t in splits.schema.tasks)
    assert splits.train.numeric.shape == (500, 100)
    assert splits.valid.encoders is splits.train.encoders
    assert "correlation 0.5" in splits.note


def test_load_synthetic_binary_is_balanced_zero_one() -> None:
    splits = load_dataset("synthetic", binary=True, train_rows=2000)
    labels = splits.train.labels.numpy()
    assert set(np.unique(labels)) <= {0.0, 1.0}
    np.testing.assert_allclose(labels.mean(axis=0), 0.5, atol=0.03)
    assert all(t.metric == "auc" for t in splits.schema.tasks)
