"""The README's first two commands are exactly what .ci/run runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block is not None, "README must open with a bash block of two commands"
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert readme.index("```bash") < 200, "the commands must be in the README's first lines"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f".ci/run does not run the README command: {command}"
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
    assert "-c constraints.txt" in commands[0]


def test_the_train_from_python_example_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Train from Python") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "the section must hold a python block"
    scope: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md (Train from Python)", "exec"), scope)
    history, metrics, scores = scope["history"], scope["metrics"], scope["scores"]
    assert len(history) == 3  # epochs=3, no early stop within 3 epochs of patience 3
    assert set(metrics) == {"y1", "y2", "mean"}
    assert 0.5 < metrics["mean"]["auc"] <= 1.0  # it learned something on the synthetic tasks
    assert {t: tuple(s.shape) for t, s in scores.items()} == {"y1": (1000,), "y2": (1000,)}
    assert all(float(s.min()) >= 0.0 and float(s.max()) <= 1.0 for s in scores.values())
