"""Plots: each plot function writes a real PNG from small hand-made data; folder readers reject bad files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from matplotlib.image import imread

from mtlkit.analysis.plots import (
    MAX_PARETO_PAIRS,
    Bar,
    Point,
    bench_plots,
    pareto_front,
    pareto_pairs,
    plot_affinity,
    plot_conflicts,
    plot_curves,
    plot_gate_heatmap,
    plot_pareto,
    plot_task_bars,
    run_plots,
)
from mtlkit.errors import MtlkitError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_width: int = 200, min_height: int = 150) -> None:
    """A PNG file (signature) with plausible dimensions and more than one colour."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= min_width, (path, image.shape)
    assert height >= min_height, (path, image.shape)
    assert image.std() > 0.01, f"{path} is blank"


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    history = {
        "epoch": [1.0, 2.0],
        "loss_a": [0.7, 0.6],
        "loss_b": [0.7, 0.65],
        "valid_a_auc": [0.6, 0.7],
        "valid_b_auc": [0.6, 0.65],
        "valid_mean_auc": [0.6, 0.675],
    }
    paths = [
        plot_curves(history, ["a", "b"], tmp_path / "curves.png", best_epoch=2),
        plot_conflicts(
            [1, 2, 3], {"a / b": [0.5, -0.1, 0.2]}, {"a": [1, 2, 3], "b": [2, 2, 1]}, tmp_path / "c.png"
        ),
        plot_gate_heatmap({"g1": [0.2, 0.8], "g2": [0.1, 0.1, 0.8]}, tmp_path / "gates.png"),
        plot_affinity(["a", "b"], [[0.1, -0.2], [0.0, 0.3]], tmp_path / "aff.png"),
        plot_pareto(
            [Point("m1", 0.7, 0.6, 0.01, 0.02), Point("m2", 0.6, 0.7)],
            "a auc",
            "b auc",
            tmp_path / "pareto.png",
            baseline=Point("base", 0.65, 0.65),
        ),
        plot_task_bars(
            ["a", "b"],
            {"a": [Bar("m1", 0.7, 0.01, (0.69, 0.71), "better")], "b": [Bar("m1", 0.6, 0.0, (), "worse")]},
            tmp_path / "bars.png",
            baseline={"a": (0.65, 0.01), "b": (0.62, 0.0)},
        ),
    ]
    for path in paths:
        assert_png(path)


def test_plot_affinity_rejects_a_matrix_of_the_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(MtlkitError, match="2 x 2"):
        plot_affinity(["a", "b"], [[1.0, 2.0, 3.0]], tmp_path / "x.png")


def test_pareto_front_respects_the_direction_of_each_task() -> None:
    points = [Point("a", 1.0, 1.0), Point("b", 2.0, 0.5), Point("c", 0.5, 0.5), Point("d", 2.0, 2.0)]
    assert pareto_front(points) == [False, False, False, True]
    # x lower is better: c has the best x, d the best y, a trades off; b is dominated by d (same x, higher y)
    assert pareto_front(points, x_higher=False) == [True, False, True, True]
    assert pareto_front([Point("tie", 1, 1), Point("tie2", 1, 1)]) == [True, True]


def test_pareto_pairs_are_capped() -> None:
    assert pareto_pairs(["a", "b"]) == ([("a", "b")], 0)
    pairs, left_out = pareto_pairs([f"t{i}" for i in range(5)])  # 10 pairs
    assert len(pairs) == MAX_PARETO_PAIRS
    assert left_out == 10 - MAX_PARETO_PAIRS


def test_run_plots_draw_what_the_folder_has(tmp_path: Path, make_run: Callable[..., Path]) -> None:
    full = run_plots(make_run(tmp_path / "full"))
    assert sorted(p.name for p in full) == ["affinity.png", "conflicts.png", "curves.png", "expert_usage.png"]
    for path in full:
        assert path.parent == tmp_path / "full" / "plots"
        assert_png(path)
    assert [p.name for p in run_plots(make_run(tmp_path / "bare", diagnostics=False))] == ["curves.png"]


def test_bench_plots(bench_dir: Path) -> None:
    paths = bench_plots(bench_dir)
    assert sorted(p.name for p in paths) == ["pareto_income__marital.png", "task_bars.png"]
    for path in paths:
        assert_png(path)


@pytest.mark.parametrize(
    ("relative", "content", "message"),
    [
        ("history.csv", "epoch,lr\n1,0.1\n", "no loss_<task> columns"),
        ("history.csv", "epoch,loss_a\n1,abc\n", "'abc' is not a number"),
        ("history.csv", "epoch,loss_a\n1\n", "line 2 has 1 fields"),
        ("diagnostics/conflicts.csv", "step,epoch,cos_a__b\n1,1,0.5\n", "no norm_<task> columns"),
        ("diagnostics/expert_usage.json", '{"gates": {"a": ["x"]}}', "gate 'a'"),
        ("diagnostics/expert_usage.json", "{not json", "not valid JSON"),
        ("diagnostics/affinity.json", '{"tasks": ["a", "b"], "matrix": [[1]]}', "2 x 2"),
    ],
)
def test_malformed_run_files_name_the_file(
    tmp_path: Path, make_run: Callable[..., Path], relative: str, content: str, message: str
) -> None:
    folder = make_run(tmp_path / "run")
    (folder / relative).write_text(content)
    with pytest.raises(MtlkitError, match=message) as info:
        run_plots(folder)
    assert str(folder / relative) in str(info.value)


def test_missing_history_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(MtlkitError, match=r"history\.csv: file not found"):
        run_plots(tmp_path)


@pytest.mark.parametrize(
    ("relative", "content", "message"),
    [
        ("summary.json", '{"tasks": ["income"]}', "'metrics' missing"),
        ("summary.json", "[1, 2]", "expected a JSON object"),
        ("results.csv", "model,seed\nx,0\n", "missing column"),
    ],
)
def test_malformed_bench_files_name_the_file(
    bench_dir: Path, relative: str, content: str, message: str
) -> None:
    (bench_dir / relative).write_text(content)
    with pytest.raises(MtlkitError, match=message) as info:
        bench_plots(bench_dir)
    assert str(bench_dir / relative) in str(info.value)
