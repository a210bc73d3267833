"""keep_freed_memory: glibc's malloc thresholds, what they change, when they are left alone, and train's use of them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mtlkit.training.memory as memory
import mtlkit.training.run as run
from mtlkit.cli import main

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# 64 MiB blocks: above the largest mmap threshold glibc picks by itself (32 MiB), so by default every one is a
# fresh mmap whose pages are faulted in when it is written
FAULTS = """
import resource, sys, torch
from mtlkit.training.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory().applied
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.empty(16 * 2**20).fill_(1.0)
before = faults()
for _ in range(10):
    torch.empty(16 * 2**20).fill_(1.0)
print(faults() - before)
"""


def _minor_faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, env=env, check=True, timeout=120
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="malloc thresholds are glibc's; this C library is not glibc")
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    pages = 64 * 2**20 // 4096
    default, kept = _minor_faults("default"), _minor_faults("keep")
    assert default > 8 * pages  # ten fresh mappings: about 10 x 16,384 faults
    # the heap's own pages, reused (measured: 0; one block's worth is allowed for the heap still settling)
    assert kept <= pages


def _recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []

    def fake(param: int, value: int) -> bool:
        calls.append((param, value))
        return True

    monkeypatch.setattr(memory, "_mallopt", fake)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return calls


@pytest.mark.skipif(not GLIBC, reason="malloc thresholds are glibc's; this C library is not glibc")
def test_sets_both_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recorder(monkeypatch)
    setting = memory.keep_freed_memory()
    assert setting.applied
    assert calls == [(-3, 256 * 2**20), (-1, 2**30)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    assert "M_MMAP_THRESHOLD=268435456" in setting.reason


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("MALLOC_MMAP_THRESHOLD_", "1048576", "MALLOC_MMAP_THRESHOLD_"),
        ("MALLOC_TRIM_THRESHOLD_", "0", "MALLOC_TRIM_THRESHOLD_"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", "GLIBC_TUNABLES glibc.malloc.trim_threshold"),
    ],
)
def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch, name: str, value: str, shown: str) -> None:
    calls = _recorder(monkeypatch)
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setenv(name, value)
    setting = memory.keep_freed_memory()
    assert not setting.applied
    assert shown in setting.reason
    assert calls == []


def test_unrelated_tunables_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recorder(monkeypatch)
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2")
    assert memory.keep_freed_memory().applied
    assert len(calls) == 2


@pytest.mark.parametrize(("system", "libc"), [("linux", "musl"), ("darwin", ""), ("win32", "")])
def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch, system: str, libc: str) -> None:
    calls = _recorder(monkeypatch)
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: (libc, ""))
    monkeypatch.setattr(memory.sys, "platform", system)
    setting = memory.keep_freed_memory()
    assert setting == memory.MemorySetting(False, "the C library is not glibc")
    assert calls == []


def test_a_refused_threshold_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    _recorder(monkeypatch)
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(memory, "_mallopt", lambda param, value: False)
    assert memory.keep_freed_memory() == memory.MemorySetting(False, "mallopt refused the thresholds")


@pytest.mark.parametrize("keep", [True, False])
def test_train_applies_it_unless_configured_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    applied: list[bool] = []
    monkeypatch.setattr(run, "keep_freed_memory", lambda: applied.append(True))
    config = {
        "seed": 0,
        "data": {
            "dataset": "synthetic",
            "params": {"binary": True, "train_rows": 300, "valid_rows": 100, "test_rows": 100, "dim": 5},
        },
        "model": {"name": "shared_bottom", "params": {"bottom_sizes": [8], "tower_sizes": [4]}},
        "training": {
            "epochs": 1,
            "batch_size": 100,
            "progress": False,
            "device": "cpu",
            "keep_freed_memory": keep,
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 0
    assert applied == ([True] if keep else [])
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["training"]["keep_freed_memory"] is keep
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
