"""The run configuration: examples, round trip, defaults, every error message, ``--set`` overrides."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mtlkit.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    check_monitor,
    load_config,
)
from mtlkit.data.datasets import dataset_parameters, load_dataset
from mtlkit.data.datasets.census_income import census_schema
from mtlkit.errors import MtlkitError
from mtlkit.models import model_parameters
from mtlkit.schema import Feature, Schema, Task

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

MINIMAL = """
data:
  dataset: synthetic
model:
  name: mmoe
"""


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> RunConfig:
    return load_config(_write(tmp_path, text), overrides)


@contextmanager
def _error(*fragments: str) -> Iterator[None]:
    """Expect a ConfigError whose message contains every fragment literally."""
    with pytest.raises(ConfigError) as info:
        yield
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def _base(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"data": {"dataset": "synthetic"}, "model": {"name": "mmoe"}}
    data.update(sections)
    return data


def _files(**data: Any) -> dict[str, Any]:
    return {"data": {"train": "/d/train.csv", **data}, "model": {"name": "mmoe"}}


SCHEMA = {
    "features": [{"name": "user_id"}, {"name": "price", "kind": "numeric"}],
    "tasks": [{"name": "click"}],
}


# ------------------------------------------------------------------------------------------- examples
def test_there_are_the_three_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"synthetic.yaml", "census_income.yaml", "aliexpress.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    again = tmp_path / "resolved.yaml"
    again.write_text(config.to_yaml(), encoding="utf-8")
    assert load_config(again) == config
    assert RunConfig.from_dict(config.to_dict()) == config


def test_synthetic_example_is_the_binary_mmoe_job() -> None:
    config = load_config(ROOT / "examples" / "synthetic.yaml")
    assert config.data.dataset == "synthetic"
    assert config.data.params is not None
    assert config.data.params["binary"] is True
    assert config.data.params["correlation"] == 0.5
    assert config.model.name == "mmoe"
    assert config.training.early_stopping.monitor == "valid.mean.auc"
    schema = load_dataset("synthetic", **{**config.data.params, "train_rows": 10, "valid_rows": 5}).schema
    check_monitor(config, schema)


def test_census_example_is_mmoe_group_1() -> None:
    config = load_config(ROOT / "examples" / "census_income.yaml")
    assert config.data.params is not None
    assert config.data.params["group"] == 1
    assert config.model.name == "mmoe"
    assert config.model.params["num_experts"] == 8
    check_monitor(config, census_schema(1))


def test_aliexpress_example_monitor_fits_its_tasks(data_dir: Path) -> None:
    config = load_config(ROOT / "examples" / "aliexpress.yaml")
    assert config.data.params is not None
    check_monitor(config, load_dataset("aliexpress", **config.data.params).schema)


# ------------------------------------------------------------------------------------------- defaults
def test_defaults_are_filled() -> None:
    config = RunConfig.from_dict(_base())
    t = config.training
    assert config.seed == 0
    assert (t.epochs, t.batch_size, t.eval_batch_size) == (10, 1024, 8192)
    assert (t.optimizer, t.lr, t.weight_decay, t.schedule) == ("adam", 1e-3, 0.0, "none")
    assert (t.step_size, t.gamma, t.warmup_steps, t.grad_clip) == (None, None, None, None)
    es = t.early_stopping
    assert (es.monitor, es.mode, es.patience) == ("valid.mean.auc", "auto", 3)
    assert (es.task, es.metric, es.direction) == ("mean", "auc", "max")
    assert t.restore_best is True
    assert (t.device, t.num_threads, t.checkpoint_every) == ("auto", None, 1)
    assert (t.progress, t.tensorboard) == (True, False)
    assert config.balancer.name == "static"
    assert config.balancer.params == {}


def test_model_and_dataset_params_are_filled_with_signature_defaults() -> None:
    config = RunConfig.from_dict(_base(model={"name": "mmoe", "params": {"num_experts": 4}}))
    expected = {
        k: list(p.default) if isinstance(p.default, tuple) else p.default
        for k, p in model_parameters("mmoe").items()
    }
    assert config.model.params == {**expected, "num_experts": 4}
    assert config.data.params == {k: p.default for k, p in dataset_parameters("synthetic").items()}


def test_resolved_yaml_leaves_out_data_keys_that_do_not_apply() -> None:
    dumped = RunConfig.from_dict(_base()).to_dict()
    assert set(dumped) == {"seed", "data", "model", "balancer", "training", "diagnostics", "family", "bench"}
    assert "fusion" not in dumped  # no fusion configured
    assert set(dumped["data"]) == {"dataset", "params"}
    assert "expert_sizes: [64]" in RunConfig.from_dict(_base()).to_yaml()


@pytest.mark.parametrize(
    ("mode", "metric", "direction"),
    [
        ("auto", "auc", "max"),
        ("auto", "gauc", "max"),
        ("auto", "accuracy", "max"),
        ("auto", "logloss", "min"),
        ("auto", "mse", "min"),
        ("max", "logloss", "max"),
        ("min", "auc", "min"),
    ],
)
def test_direction_from_mode_and_metric(mode: str, metric: str, direction: str) -> None:
    stopping = {"monitor": f"valid.mean.{metric}", "mode": mode}
    config = RunConfig.from_dict(_base(training={"early_stopping": stopping}))
    assert config.training.early_stopping.direction == direction


def test_scientific_notation_without_dot_is_a_float(tmp_path: Path) -> None:
    config = _load(tmp_path, MINIMAL + "training:\n  lr: 1e-3\n  weight_decay: 5E-5\n")
    assert config.training.lr == pytest.approx(1e-3)
    assert config.training.weight_decay == pytest.approx(5e-5)


def test_step_schedule_gets_default_gamma() -> None:
    config = RunConfig.from_dict(_base(training={"schedule": "step", "step_size": 2}))
    assert (config.training.step_size, config.training.gamma) == (2, 0.1)


def test_valid_settings_are_accepted() -> None:
    training = {
        "optimizer": "adamw",
        "schedule": "linear_warmup",
        "warmup_steps": 100,
        "grad_clip": 1.0,
        "device": "cuda:1",
        "num_threads": 2,
        "early_stopping": {"monitor": "valid.click.logloss", "patience": None},
    }
    config = RunConfig.from_dict(
        _base(seed=7, training=training, balancer={"name": "dwa", "params": {"t": 2}})
    )
    assert config.training.device == "cuda:1"
    assert config.training.early_stopping.patience is None
    assert config.balancer.params == {"t": 2}


# --------------------------------------------------------------------------------------------- files
def test_file_data_with_schema_and_default_split(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        f"""
        data:
          train: data/train.csv
          schema: {SCHEMA}
        model:
          name: shared_bottom
        """,
    )
    data = config.data
    assert data.train == str(tmp_path / "data" / "train.csv")  # relative to the config file
    assert data.split == [0.8, 0.1, 0.1]
    assert data.split_seed == 0
    assert data.params is None
    schema = data.to_schema()
    assert schema == Schema((Feature("user_id"), Feature("price", "numeric")), (Task("click"),))
    assert set(config.to_dict()["data"]) == {"train", "schema", "split", "split_seed"}
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml(), encoding="utf-8")
    assert load_config(again) == config


def test_file_data_split_only_for_missing_parts(tmp_path: Path) -> None:
    config = RunConfig.from_dict(_files(valid="/d/valid.csv", labels=["click"]))
    assert config.data.split == [0.9, 0.1]
    assert config.data.to_schema() is None
    config = RunConfig.from_dict(
        _files(test="/d/t.parquet", labels=["click"], split=[0.7, 0.3], split_seed=3)
    )
    assert (config.data.split, config.data.split_seed) == ([0.7, 0.3], 3)
    both = RunConfig.from_dict(_files(valid="/d/v.csv", test="/d/t.csv", labels=["click"]))
    assert (both.data.split, both.data.split_seed) == (None, None)


def test_a_part_sharing_the_train_or_valid_file_is_an_error(tmp_path: Path) -> None:
    with _error(
        "line 3: data.valid: is the same file as data.train ("
        + str(tmp_path / "t.csv")
        + "): its rows would be "
        "trained on and measured on",
        "leave data.valid out to carve it from the train file by data.split",
    ):
        _load(tmp_path, "data:\n  train: t.csv\n  valid: t.csv\n  labels: [y]\nmodel: {name: mmoe}\n")
    with _error("data.test: is the same file as data.valid", "used to pick the best epoch and measured on"):
        _load(
            tmp_path,
            "data: {train: t.csv, valid: v.csv, test: x/../v.csv, labels: [y]}\nmodel: {name: mmoe}\n",
        )
    # relative paths are resolved against the config file's folder before they are compared; overrides too
    with _error(
        "data.test: is the same file as data.train", "(from --set data.test=" + str(tmp_path) + "/t.csv)"
    ):
        _load(
            tmp_path,
            "data: {train: t.csv, labels: [y]}\nmodel: {name: mmoe}\n",
            (f"data.test={tmp_path}/t.csv",),
        )
    _load(
        tmp_path, "data: {train: t.csv, valid: v.csv, labels: [y]}\nmodel: {name: mmoe}\n"
    )  # distinct: fine
    # a stored configuration (a run folder trained that way) still validates, for evaluate and predict
    config = RunConfig.from_dict(_files(valid="/d/train.csv", labels=["click"]))
    assert [loc for loc, _ in config.data.shared_files()] == [("valid",)]


def test_path_objects_are_accepted() -> None:
    config = RunConfig.from_dict(
        {"data": {"train": Path("/d/x.csv"), "labels": ["y"]}, "model": {"name": "mmoe"}}
    )
    assert config.data.train == "/d/x.csv"


def test_absolute_paths_and_dataset_paths(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        """
        data:
          dataset: aliexpress
          params: {path: sample}
        model: {name: esmm}
        """,
    )
    assert config.data.params is not None
    assert config.data.params["path"] == str(tmp_path / "sample")
    config = _load(tmp_path, "data: {train: /abs/t.csv, labels: [y]}\nmodel: {name: mmoe}\n")
    assert config.data.train == "/abs/t.csv"


# ------------------------------------------------------------------------------------ validation errors
def test_config_error_is_an_mtlkit_error() -> None:
    assert issubclass(ConfigError, MtlkitError)
    with pytest.raises(ValueError, match="model"):
        RunConfig.from_dict({"data": {"dataset": "synthetic"}})


def test_unknown_nested_key_names_file_line_path_and_closest_key(tmp_path: Path) -> None:
    text = MINIMAL + "training:\n  early_stopping:\n    patince: 5\n"
    with _error(
        "run.yaml, line 8: training.early_stopping.patince: unknown key 'patince'",
        "(did you mean 'patience'?)",
        "'monitor', 'mode', 'patience'",
    ):
        _load(tmp_path, text)


@pytest.mark.parametrize(
    ("section", "key", "closest"),
    [
        ("trainig", None, "training"),
        ("training", "learning_rat", None),
        ("training", "epoch", "epochs"),
        ("data", "datset", "dataset"),
        ("balancer", "nam", "name"),
        ("model", "param", "params"),
    ],
)
def test_unknown_keys_everywhere(section: str, key: str | None, closest: str | None) -> None:
    data = _base()
    if key is None:
        data[section] = {}
        path = section
    else:
        data.setdefault(section, {})[key] = 1
        path = f"{section}.{key}"
    fragments = [f"<dict>: {path}: unknown key"]
    if closest:
        fragments.append(f"(did you mean {closest!r}?)")
    with _error(*fragments):
        RunConfig.from_dict(data)


@pytest.mark.parametrize(
    ("training", "path", "fragments"),
    [
        ({"epochs": "ten"}, "training.epochs", ["valid integer", "got 'ten'"]),
        ({"epochs": 0}, "training.epochs", ["greater than or equal to 1", "got 0"]),
        ({"epochs": 2.5}, "training.epochs", ["valid integer", "got 2.5"]),
        ({"batch_size": True}, "training.batch_size", ["valid integer", "got True"]),
        ({"lr": -0.001}, "training.lr", ["greater than 0", "got -0.001"]),
        ({"lr": "fast"}, "training.lr", ["valid number", "got 'fast'"]),
        ({"lr": float("nan")}, "training.lr", ["finite number"]),
        ({"weight_decay": -1.0}, "training.weight_decay", ["greater than or equal to 0", "got -1.0"]),
        (
            {"optimizer": "adamm"},
            "training.optimizer",
            ["'adam', 'adamw'", "got 'adamm'", "did you mean 'adam'"],
        ),
        ({"schedule": "cosin"}, "training.schedule", ["got 'cosin'", "(did you mean 'cosine'?)"]),
        ({"grad_clip": 0}, "training.grad_clip", ["greater than 0", "got 0"]),
        ({"restore_best": "yes"}, "training.restore_best", ["valid boolean", "got 'yes'"]),
        ({"device": "gpu"}, "training.device", ["auto, cpu, cuda or cuda:N", "got 'gpu'"]),
        ({"device": "cuda:x"}, "training.device", ["got 'cuda:x'", "(did you mean 'cuda'?)"]),
        ({"num_threads": 0}, "training.num_threads", ["greater than or equal to 1", "got 0"]),
        ({"checkpoint_every": 0}, "training.checkpoint_every", ["greater than or equal to 1"]),
        ({"early_stopping": 3}, "training.early_stopping", ["section of key: value pairs", "got 3"]),
        (
            {"early_stopping": {"patience": 0}},
            "training.early_stopping.patience",
            ["greater than or equal to 1"],
        ),
        ({"early_stopping": {"mode": "maximum"}}, "training.early_stopping.mode", ["did you mean 'max'"]),
    ],
)
def test_bad_training_values(training: dict[str, Any], path: str, fragments: list[str]) -> None:
    with _error(f"<dict>: {path}: ", *fragments):
        RunConfig.from_dict(_base(training=training))


@pytest.mark.parametrize(
    ("monitor", "fragments"),
    [
        ("mean.auc", ["'valid.<task>.<metric>'", "got 'mean.auc'"]),
        ("test.mean.auc", ["got 'test.mean.auc'"]),
        ("valid..auc", ["got 'valid..auc'"]),
        ("valid.mean.acu", ["unknown metric 'acu'", "(did you mean 'auc'?)"]),
        ("valid.click.log_loss", ["unknown metric 'log_loss'", "(did you mean 'logloss'?)"]),
    ],
)
def test_bad_monitor_format(monitor: str, fragments: list[str]) -> None:
    with _error("training.early_stopping.monitor: ", *fragments):
        RunConfig.from_dict(_base(training={"early_stopping": {"monitor": monitor}}))


@pytest.mark.parametrize(
    ("training", "path", "fragment"),
    [
        ({"schedule": "step"}, "training.step_size", "schedule 'step' needs step_size"),
        (
            {"schedule": "linear_warmup"},
            "training.warmup_steps",
            "schedule 'linear_warmup' needs warmup_steps",
        ),
        ({"step_size": 3}, "training.step_size", "only used by schedule 'step' (schedule is 'none'), got 3"),
        (
            {"schedule": "cosine", "gamma": 0.5},
            "training.gamma",
            "only used by schedule 'step' (schedule is 'cosine'), got 0.5",
        ),
        (
            {"schedule": "step", "step_size": 1, "warmup_steps": 10},
            "training.warmup_steps",
            "only used by schedule 'linear_warmup'",
        ),
    ],
)
def test_schedule_fields(training: dict[str, Any], path: str, fragment: str) -> None:
    with _error(f"<dict>: {path}: {fragment}"):
        RunConfig.from_dict(_base(training=training))


def test_all_problems_are_listed_one_per_line(tmp_path: Path) -> None:
    text = """
    seed: -1
    data:
      dataset: synthetic
      params: {corelation: 0.5}
    model:
      name: mmoe
    training:
      lr: 0
      optimiser: adam
    """
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{tmp_path / 'run.yaml'}: 4 problems in the run configuration:"
    body = "\n".join(lines[1:])
    assert len(lines) == 5
    assert "run.yaml, line 2: seed: should be greater than or equal to 0, got -1" in body
    assert "run.yaml, line 5: data.params.corelation: data set 'synthetic' has no parameter" in body
    assert "(did you mean 'correlation'?)" in body
    assert "run.yaml, line 9: training.lr: should be greater than 0, got 0" in body
    assert (
        "run.yaml, line 10: training.optimiser: unknown key 'optimiser' (did you mean 'optimizer'?)" in body
    )


def test_missing_sections_and_names() -> None:
    with _error("data: required section missing", "model: required section missing"):
        RunConfig.from_dict({})
    with _error("model.name: required key missing", "'mmoe'"):
        RunConfig.from_dict({"data": {"dataset": "synthetic"}, "model": {}})
    with _error("balancer.name: should name a balancing method", "got ' '"):
        RunConfig.from_dict(_base(balancer={"name": " "}))


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with _error("run.yaml: a run configuration is a YAML mapping", "an empty document"):
        _load(tmp_path, "# nothing\n")
    with _error("run.yaml: a run configuration is a YAML mapping", "a list"):
        _load(tmp_path, "- data\n- model\n")
    with _error("<dict>: a run configuration is a mapping", "a str"):
        RunConfig.from_dict("data")


# ----------------------------------------------------------------------------- data set and model names
def test_unknown_dataset_suggests_closest() -> None:
    with _error(
        "data.dataset: unknown data set 'census_incme'", "(did you mean 'census_income'?)", "'synthetic'"
    ):
        RunConfig.from_dict(_base(data={"dataset": "census_incme"}))


def test_unknown_dataset_param_suggests_closest() -> None:
    with _error(
        "data.params.grop: data set 'census_income' has no parameter 'grop'",
        "(did you mean 'group'?)",
        "it accepts 'group'",
    ):
        RunConfig.from_dict(_base(data={"dataset": "census_income", "params": {"grop": 2}}))


def test_dataset_param_type_is_checked() -> None:
    with _error("data.params.group: should be a valid integer", "takes group: int", "got '2'"):
        RunConfig.from_dict(_base(data={"dataset": "census_income", "params": {"group": "2"}}))
    with _error("data.params.conversion: should be 'entire_space' or 'clicked_only'", "got 'all'"):
        RunConfig.from_dict(_base(data={"dataset": "aliexpress", "params": {"conversion": "all"}}))


def test_unknown_model_suggests_closest() -> None:
    with _error("model.name: unknown model 'mmeo'", "(did you mean 'mmoe'?)", "'dselect_k'"):
        RunConfig.from_dict(_base(model={"name": "mmeo"}))


def test_model_params_names_and_types() -> None:
    params = {"num_expert": 4, "expert_sizes": 32, "tower_sizes": [8, 1.5], "dropout": "0.1"}
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(_base(model={"name": "mmoe", "params": params}))
    message = str(info.value)
    assert (
        "model.params.num_expert: model 'mmoe' has no parameter 'num_expert' (did you mean 'num_experts'?)"
        in (message)
    )
    assert "model.params.expert_sizes: should be an instance of Sequence" in message
    assert "takes expert_sizes: Sequence[int]), got 32" in message
    assert "model.params.tower_sizes[1]: should be a valid integer" in message
    assert "got 1.5" in message
    assert "model.params.dropout: should be a valid number" in message


# ----------------------------------------------------------------------------------------- data layout
@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"dataset": "synthetic", "train": "/d/t.csv"}, ["data: give either dataset", "not both"]),
        ({}, ["data: needs either dataset: NAME", "'census_income'", "train: FILE"]),
        ({"dataset": "synthetic", "labels": ["y"]}, ["data.labels: only for files", "got ['y']"]),
        ({"dataset": "synthetic", "schema": SCHEMA}, ["data.schema: only for files"]),
        ({"dataset": "synthetic", "valid": "/v.csv"}, ["data.valid: only for files"]),
        ({"dataset": "synthetic", "split": [0.5, 0.5]}, ["data.split: only for files"]),
        ({"train": "/d/t.csv"}, ["data: with files, give schema", "or labels"]),
        ({"train": "/d/t.csv", "labels": ["y"], "schema": SCHEMA}, ["data: give schema", "not both"]),
        (
            {"train": "/d/t.csv", "labels": ["y"], "params": {"a": 1}},
            ["data.params: params are for registered"],
        ),
        ({"train": "/d/t.xlsx", "labels": ["y"]}, ["data.train: cannot tell the format of /d/t.xlsx"]),
        ({"train": "", "labels": ["y"]}, ["data.train: should be a file path, got ''"]),
        ({"train": "/d/t.csv", "labels": []}, ["data.labels: should name at least one"]),
        ({"train": "/d/t.csv", "labels": ["y", "y"]}, ["data.labels: repeats 'y'"]),
        ({"train": "/d/t.csv", "labels": [3]}, ["data.labels[0]: should be a valid string, got 3"]),
        ({"train": "/d/t.csv", "labels": ["y"], "split": [0.8, 0.3, 0.1]}, ["data.split: fractions should"]),
        ({"train": "/d/t.csv", "labels": ["y"], "split": [0.8, 0.2]}, ["data.split: needs 3 fractions"]),
        (
            {"train": "/t.csv", "valid": "/v.csv", "labels": ["y"], "split": [0.9, 0.1, 0.0]},
            ["needs 2 fractions"],
        ),
        (
            {"train": "/t.csv", "valid": "/v.csv", "test": "/s.csv", "labels": ["y"], "split_seed": 1},
            ["only applies"],
        ),
        (
            {"train": "/d/t.csv", "labels": ["y"], "split_seed": -1},
            ["data.split_seed: should be greater than"],
        ),
    ],
)
def test_data_layout_errors(data: dict[str, Any], fragments: list[str]) -> None:
    with _error(*fragments):
        RunConfig.from_dict({"data": data, "model": {"name": "mmoe"}})


def test_invalid_schema_is_reported_under_data_schema(tmp_path: Path) -> None:
    text = """
    data:
      train: t.csv
      schema:
        features:
          - {name: user_id, knd: categorical}
        tasks: [{name: click}]
    model: {name: mmoe}
    """
    with _error("run.yaml, line 4: data.schema: features[0]: unknown key 'knd'", "(did you mean 'kind'?)"):
        _load(tmp_path, text)


# ------------------------------------------------------------------------------------------ YAML errors
def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = "data:\n  dataset: synthetic\nmodel:\n  name: [mmoe\ntraining: {}\n"
    with _error(str(tmp_path / "run.yaml"), "invalid YAML at line 5"):
        _load(tmp_path, text)
    with _error("run.yaml: invalid YAML at line 2, column 9", "mapping values are not allowed"):
        _load(tmp_path, "seed: 0\nmodel: a: b\n")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    text = MINIMAL + "training:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n"
    with _error("run.yaml, line 9: duplicate key 'lr' in training (first at line 7)"):
        _load(tmp_path, text)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with _error("config file", "nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")
    with _error("is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"seed: \xff\n")
    with _error("latin1.yaml is not UTF-8 text"):
        load_config(bad)


# -------------------------------------------------------------------------------------------- overrides
def test_overrides_parse_typed_yaml_values(tmp_path: Path) -> None:
    text = MINIMAL.replace("dataset: synthetic", "dataset: census_income")
    config = _load(
        tmp_path,
        text,
        (
            "training.lr=0.01",
            "model.params.expert_sizes=[32,16]",
            "data.params.group=2",
            "training.early_stopping.patience=null",
            "training.progress=false",
            "seed=3",
            "training.weight_decay=1e-4",
        ),
    )
    assert config.training.lr == 0.01
    assert config.model.params["expert_sizes"] == [32, 16]
    assert config.data.params is not None
    assert config.data.params["group"] == 2
    assert config.training.early_stopping.patience is None
    assert config.training.progress is False
    assert config.seed == 3
    assert config.training.weight_decay == pytest.approx(1e-4)


def test_overrides_create_nested_sections_and_leave_input_unchanged() -> None:
    data = {"data": {"dataset": "synthetic"}, "model": {"name": "mmoe", "params": None}}
    out = apply_overrides(
        data,
        [
            "training.early_stopping.monitor=valid.y1.mse",
            "model.params.num_experts=4",
            "balancer.params.weights={y1: 2, y2: 1}",
            "balancer.params.extra.depth=1",
            "training.device = cuda:0",
        ],
    )
    assert out["training"] == {"early_stopping": {"monitor": "valid.y1.mse"}, "device": "cuda:0"}
    assert out["model"]["params"] == {"num_experts": 4}
    assert out["balancer"] == {"params": {"weights": {"y1": 2, "y2": 1}, "extra": {"depth": 1}}}
    assert data == {"data": {"dataset": "synthetic"}, "model": {"name": "mmoe", "params": None}}
    config = RunConfig.from_dict(out)
    assert config.training.early_stopping.monitor == "valid.y1.mse"


def test_override_params_follow_a_renamed_model() -> None:
    for order in (
        ["model.name=ple", "model.params.num_levels=3"],
        ["model.params.num_levels=3", "model.name=ple"],
    ):
        config = RunConfig.from_dict(apply_overrides(_base(), order))
        assert config.model.name == "ple"
        assert config.model.params["num_levels"] == 3


def test_override_replaces_data_source() -> None:
    out = apply_overrides(_base(), ["data.dataset=null", "data.train=/d/t.csv", "data.labels=[click, buy]"])
    config = RunConfig.from_dict(out)
    assert config.data.dataset is None
    assert config.data.labels == ["click", "buy"]


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("training.lerning_rate=0.1", ["training.lerning_rate is not a key", "keys in training are"]),
        ("training.epoch=3", ["training.epoch is not a key", "(did you mean 'epochs'?)"]),
        ("trainin.lr=0.1", ["trainin is not a key", "(did you mean 'training'?)", "keys in the top level"]),
        (
            "training.early_stopping.patinece=2",
            ["(did you mean 'patience'?)", "keys in training.early_stopping"],
        ),
        (
            "model.params.num_expert=4",
            ["model 'mmoe' has no parameter 'num_expert'", "(did you mean 'num_experts'?)"],
        ),
        (
            "data.params.corelation=0.9",
            ["data set 'synthetic' has no parameter", "(did you mean 'correlation'?)"],
        ),
        ("training.lr.value=1", ["training.lr is a value, not a section", "--set training.lr=VALUE"]),
        ("model.params.expert_sizes.0=3", ["model.params.expert_sizes is a value, not a section"]),
        ("training.lr", ["--set takes KEY.PATH=VALUE", "got 'training.lr'"]),
        ("=3", ["--set takes KEY.PATH=VALUE"]),
        ("training..lr=3", ["--set takes KEY.PATH=VALUE"]),
        (
            "model.params.expert_sizes=[32,",
            ["--set model.params.expert_sizes=[32,: the value is not valid YAML"],
        ),
        ("model.name.x=1", ["model.name holds 'mmoe', not a section"]),
    ],
)
def test_bad_override_paths(override: str, fragments: list[str]) -> None:
    with _error(*fragments):
        apply_overrides(_base(), [override])


def test_bad_value_after_override_names_the_override(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "training:\n  lr: 0.1\n")
    with _error(
        "run.yaml: training.lr: should be greater than 0, got -1 (from --set training.lr=-1)",
    ) as _:
        load_config(path, ["training.lr=-1"])
    with _error("model.params.expert_sizes: should be an instance of Sequence", "(from --set model.params"):
        load_config(path, ["model.params.expert_sizes=64"])
    with _error("model.name: unknown model 'mmo'", "(did you mean 'mmoe'?)", "(from --set model.name=mmo)"):
        load_config(path, ["model.name=mmo"])


def test_overridden_file_paths_are_not_moved(tmp_path: Path) -> None:
    path = _write(tmp_path, "data: {train: a.csv, labels: [y]}\nmodel: {name: mmoe}\n")
    assert load_config(path).data.train == str(tmp_path / "a.csv")
    assert load_config(path, ["data.train=b.csv"]).data.train == "b.csv"


# -------------------------------------------------------------------------------------- check_monitor
def _schema(*tasks: Task) -> Schema:
    return Schema((Feature("user_id"),), tasks)


def _with_monitor(monitor: str) -> RunConfig:
    return RunConfig.from_dict(_base(training={"early_stopping": {"monitor": monitor}}))


@pytest.mark.parametrize(
    "monitor", ["valid.mean.auc", "valid.click.gauc", "valid.buy.logloss", "valid.mean.accuracy"]
)
def test_check_monitor_accepts(monitor: str) -> None:
    check_monitor(_with_monitor(monitor), _schema(Task("click"), Task("buy")))


def test_check_monitor_unknown_task() -> None:
    with _error(
        "training.early_stopping.monitor: 'valid.clik.auc' names no task: 'clik' is not a task",
        "(did you mean 'click'?)",
        "use 'mean' or one of 'click', 'buy'",
    ):
        check_monitor(_with_monitor("valid.clik.auc"), _schema(Task("click"), Task("buy")))


def test_check_monitor_metric_of_the_wrong_kind() -> None:
    schema = _schema(Task("watch", "regression"), Task("time", "regression"))
    with _error(
        "training.early_stopping.monitor: 'valid.mean.auc': metric 'auc' is not defined for regression task 'watch'",
        "regression metrics: 'mse', 'mae', 'rmse'",
        "e.g. 'valid.mean.mse'",
    ):
        check_monitor(_with_monitor("valid.mean.auc"), schema)
    with _error("metric 'gauc' is not defined for multiclass task 'kind'"):
        check_monitor(_with_monitor("valid.kind.gauc"), _schema(Task("kind", "multiclass", num_classes=3)))


def test_check_monitor_mean_over_mixed_kinds() -> None:
    schema = _schema(Task("click"), Task("watch", "regression"))
    with _error("for regression task 'watch'", "different kinds", "monitor one task, e.g. 'valid.watch.mse'"):
        check_monitor(_with_monitor("valid.mean.auc"), schema)
    check_monitor(_with_monitor("valid.click.auc"), schema)


def test_every_model_and_dataset_parameter_default_survives_the_round_trip() -> None:
    from mtlkit.models import list_models

    for name in list_models():
        config = RunConfig.from_dict(_base(model={"name": name}))
        assert RunConfig.from_dict(config.to_dict()) == config
        assert set(config.model.params) == {
            k for k, p in model_parameters(name).items() if p.default is not inspect.Parameter.empty
        }


def test_empty_params_sections_mean_no_parameters(tmp_path: Path) -> None:
    config = _load(tmp_path, MINIMAL + "  params:\nbalancer:\n  name: static\n  params:\n")
    assert config.balancer.params == {}
    assert config.model.params["num_experts"] == 8


def test_keys_must_be_text(tmp_path: Path) -> None:
    with _error(
        "run.yaml, line 4: data.params.1: keys should be text, got 1", "run.yaml, line 7: 2: keys should"
    ):
        _load(tmp_path, "data:\n  dataset: synthetic\n  params:\n    1: a\nmodel:\n  name: mmoe\n2: b\n")


def test_default_monitor_is_named_when_it_does_not_fit() -> None:
    config = RunConfig.from_dict(_base())
    with _error("'valid.mean.auc' is the default monitor", "e.g. 'valid.mean.mse'"):
        check_monitor(config, _schema(Task("y1", "regression"), Task("y2", "regression")))


def test_a_single_override_string_is_one_override(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, MINIMAL), "training.lr=0.5").training.lr == 0.5  # type: ignore[arg-type]


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + textwrap.dedent(MINIMAL).encode())
    assert load_config(path).model.name == "mmoe"
