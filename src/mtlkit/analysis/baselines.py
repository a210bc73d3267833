"""Single-task baselines: the runs a multi-task model is judged against, trained once and cached.

A baseline for a run configuration and a seed is the configuration with the model replaced by
``config.bench.baseline`` (``{"name": "single_task", "params": {}}`` by default), the ``static`` balancer (every
task weight 1), the ``mtl`` family and no diagnostics or fusion: the same data, features, training section
(epochs, batch size, optimiser, learning rate, early stopping) and seed as the runs it judges.

How a baseline is trained: one run of the ``single_task`` architecture, which holds one independent network per
task (own embedding, bottom and tower; no shared parameter). With static weights of 1 each network receives
exactly the gradient of its own loss, and Adam's update is per parameter, so this is training each task alone
(same batches, same budget) except for one coupling: early stopping and ``restore_best`` pick one epoch for all
tasks (from the configured monitor, ``valid.mean.auc`` by default). That is also how the multi-task runs it is
compared with pick their epoch, so the comparison is like for like; and it needs one run per seed instead of
one per task and seed, and no one-task data sets (a registered data set has no option to drop tasks). A
``grad_clip`` on the total norm couples the tasks too; with the default (no clipping) it does not apply.

Caching: :func:`baseline_key` hashes exactly what determines a baseline: the data section (for files, also
their size and modification time), the training section without the settings that cannot change the result
(``progress``, ``tensorboard``, ``checkpoint_every``, ``num_threads``, ``keep_freed_memory``), the seed, and
the resolved baseline model (name and every parameter, defaults filled). The multi-task model, the balancer,
the family, diagnostics and fusion are not part of it, so a second bench over the same data reuses the baselines
of the first.
:class:`BaselineCache` keeps finished baseline run folders under ``<cache>/<key>/`` (default
``$MTLKIT_BASELINE_CACHE``, else ``~/.cache/mtlkit/baselines``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from mtlkit.config import ConfigError, RunConfig

ENV_VAR = "MTLKIT_BASELINE_CACHE"
#: Training settings that cannot change a run's result (left out of the baseline key).
NON_DETERMINING_TRAINING = ("progress", "tensorboard", "checkpoint_every", "num_threads", "keep_freed_memory")
#: Bumped when the way a baseline is trained changes, so old cache entries are not reused.
KEY_VERSION = 1


def default_cache_dir() -> Path:
    """``$MTLKIT_BASELINE_CACHE``, else ``$XDG_CACHE_HOME/mtlkit/baselines`` (``~/.cache/mtlkit/baselines``)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mtlkit" / "baselines"


def baseline_config(config: RunConfig, seed: int) -> RunConfig:
    """The single-task baseline of ``config`` for ``seed`` (see the module docstring)."""
    spec = dict(config.bench.baseline)
    unknown = sorted(set(spec) - {"name", "params"})
    if unknown or not isinstance(spec.get("name"), str):
        raise ConfigError(
            f"bench.baseline should be {{name: MODEL, params: {{...}}}} (e.g. {{name: single_task}}), got {spec!r}"
        )
    data = config.to_dict()
    data["seed"] = seed
    data["model"] = {"name": spec["name"], "params": dict(spec.get("params") or {})}
    data["balancer"] = {"name": "static", "params": {}}
    data["family"] = {"name": "mtl", "params": {}}
    data["diagnostics"] = {}
    data.pop("fusion", None)
    return RunConfig.from_dict(data, source="bench.baseline")


def baseline_key(config: RunConfig, seed: int) -> str:
    """A hash (24 hex digits) of exactly what determines the baseline of ``config`` for ``seed``."""
    base = baseline_config(config, seed)
    return key_of(key_material(base))


def key_material(baseline: RunConfig) -> dict[str, Any]:
    """What the key of a baseline configuration hashes (written next to the cached run as ``key.json``)."""
    full = baseline.to_dict()
    training = {k: v for k, v in full["training"].items() if k not in NON_DETERMINING_TRAINING}
    data = dict(full["data"])
    files = {}
    for part in ("train", "valid", "test"):
        path = data.get(part)
        if isinstance(path, str) and Path(path).is_file():
            stat = Path(path).stat()
            files[part] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {
        "version": KEY_VERSION,
        "data": data,
        "files": files,
        "training": training,
        "seed": full["seed"],
        "model": full["model"],
    }


def key_of(material: dict[str, Any]) -> str:
    """The key (24 hex digits of a SHA-256) of :func:`key_material`."""
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class BaselineCache:
    """Finished baseline run folders by key: ``<root>/<key>/`` (a run folder plus ``key.json``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"BaselineCache(root={str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / "metrics.json").is_file()

    def fetch(self, key: str, dest: Path) -> bool:
        """Copy the cached run ``key`` into ``dest`` (replacing what is there); False when it is not cached."""
        if not self.has(key):
            return False
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.path(key), dest)
        return True

    def store(self, key: str, run_dir: Path, material: dict[str, Any]) -> None:
        """Copy a finished run folder into the cache (atomically: a half-copied entry is never visible)."""
        if self.has(key) or not (run_dir / "metrics.json").is_file():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{uuid.uuid4().hex}.tmp"
        shutil.copytree(run_dir, tmp)
        (tmp / "key.json").write_text(json.dumps(material, indent=2, sort_keys=True, default=str))
        try:
            tmp.rename(self.path(key))
        except OSError:  # another bench stored the same key first
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["BaselineCache", "baseline_config", "baseline_key", "default_cache_dir", "key_material", "key_of"]
