"""Feature, Task and Schema: validation messages, defaults, JSON round-trip, frozenness."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import pytest

from mtlkit.errors import MtlkitError, SchemaError
from mtlkit.schema import LOSSES, METRICS, MISSING_SUFFIX, Feature, Schema, Task


def _schema(**kwargs: Any) -> Schema:
    """A small valid schema; keyword arguments replace its parts."""
    parts: dict[str, Any] = {
        "features": (Feature("user_id"), Feature("price", "numeric")),
        "tasks": (Task("click"), Task("buy", depends_on="click")),
    }
    parts.update(kwargs)
    return Schema(**parts)


def _raises(match: str) -> Any:
    """``pytest.raises(SchemaError)`` whose message contains ``match`` literally."""
    return pytest.raises(SchemaError, match=re.escape(match))


# ---------------------------------------------------------------------- Feature validation
def test_schema_error_is_a_value_error_and_mtlkit_error() -> None:
    with pytest.raises(ValueError, match="kind"):
        Feature("x", "text")  # type: ignore[arg-type]
    assert issubclass(SchemaError, MtlkitError)


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_feature_name_must_be_non_empty_string(name: Any) -> None:
    with _raises(repr(name)):
        Feature(name)


def test_feature_bad_kind_names_value_and_suggests() -> None:
    with _raises("'categorcal'") as info:
        Feature("age", "categorcal")  # type: ignore[arg-type]
    message = str(info.value)
    assert "'age'" in message
    assert "did you mean 'categorical'?" in message


def test_feature_bad_fill_names_value() -> None:
    with _raises("'meen'") as info:
        Feature("age", "numeric", fill="meen")  # type: ignore[arg-type]
    assert "did you mean 'mean'?" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("embedding_dim", 0), ("embedding_dim", 2.5), ("vocab_size", 0), ("min_count", 0), ("min_count", -3)],
)
def test_feature_integer_fields_echo_bad_value(field: str, value: Any) -> None:
    with _raises(f"{field} must be an integer") as info:
        Feature("age", **{field: value})
    assert repr(value) in str(info.value)


def test_feature_empty_column_name_rejected() -> None:
    with _raises("column"):
        Feature("age", column="")


def test_feature_towers_as_plain_string_rejected_with_fix() -> None:
    with _raises("'click'") as info:
        Feature("age", towers="click")  # type: ignore[arg-type]
    message = str(info.value)
    assert "string" in message
    assert "['click']" in message  # says how to write it


def test_feature_towers_repeat_rejected() -> None:
    with _raises("repeat"):
        Feature("age", towers=("click", "click"))


def test_feature_towers_list_becomes_tuple() -> None:
    f = Feature("age", towers=["click", "buy"])  # type: ignore[arg-type]
    assert f.towers == ("click", "buy")
    assert not f.shared
    assert Feature("age").shared


def test_feature_defaults_source_and_width() -> None:
    f = Feature("age")
    assert f.kind == "categorical"
    assert f.source == "age"
    assert f.width == 0
    assert Feature("age", column="AGE").source == "AGE"
    assert Feature("p", "numeric").width == 1
    assert Feature("p", "numeric", missing_indicator=True).width == 2


# ---------------------------------------------------------------------- Task validation
def test_task_bad_kind_suggests() -> None:
    with _raises("'binay'") as info:
        Task("click", "binay")  # type: ignore[arg-type]
    assert "did you mean 'binary'?" in str(info.value)


def test_task_loss_not_for_kind_names_loss_and_kind() -> None:
    with _raises("'mse'") as info:
        Task("click", "binary", loss="mse")
    message = str(info.value)
    assert "'click'" in message
    assert "'binary'" in message


def test_task_unknown_loss_suggests() -> None:
    with _raises("did you mean 'focal'?"):
        Task("click", loss="focall")


def test_task_metric_not_for_kind_names_metric() -> None:
    with _raises("'auc'") as info:
        Task("watch", "regression", metric="auc")
    assert "'regression'" in str(info.value)


@pytest.mark.parametrize("num_classes", [None, 1, 0, 2.0])
def test_multiclass_needs_num_classes(num_classes: Any) -> None:
    with _raises(f"num_classes >= 2, got {num_classes!r}"):
        Task("genre", "multiclass", num_classes=num_classes)


def test_num_classes_only_for_multiclass() -> None:
    with _raises("got 3 for kind 'binary'"):
        Task("click", num_classes=3)


@pytest.mark.parametrize("weight", [-1.0, -0.5, math.nan, math.inf, True, False, "1"])
def test_task_weight_invalid_is_echoed(weight: Any) -> None:
    with _raises(f"got {weight!r}") as info:
        Task("click", weight=weight)
    assert "weight" in str(info.value)


def test_task_weight_int_becomes_float() -> None:
    t = Task("click", weight=2)
    assert t.weight == 2.0
    assert isinstance(t.weight, float)
    assert Task("click", weight=0).weight == 0.0


def test_task_depends_on_itself_rejected() -> None:
    with _raises("'click'") as info:
        Task("click", depends_on="click")
    assert "itself" in str(info.value)


@pytest.mark.parametrize("kind", ["binary", "regression", "multiclass"])
def test_task_default_loss_and_metric_per_kind(kind: str) -> None:
    t = Task("t", kind, num_classes=4 if kind == "multiclass" else None)  # type: ignore[arg-type]
    assert t.loss == LOSSES[kind][0]
    assert t.metric == METRICS[kind][0]
    assert t.column == "t"
    assert t.output_dim == (4 if kind == "multiclass" else 1)


def test_task_defaults_are_the_documented_ones() -> None:
    assert (Task("a").loss, Task("a").metric) == ("bce", "auc")
    assert (Task("a", "regression").loss, Task("a", "regression").metric) == ("mse", "mse")
    m = Task("a", "multiclass", num_classes=3)
    assert (m.loss, m.metric) == ("ce", "accuracy")
    assert Task("a", label="is_click").column == "is_click"


# ---------------------------------------------------------------------- Schema validation
def test_schema_needs_tasks_and_features() -> None:
    with _raises("at least one task"):
        Schema((Feature("a"),), ())
    with _raises("at least one feature"):
        Schema((), (Task("y"),))


def test_schema_rejects_non_feature_objects() -> None:
    with _raises("'age'"):
        Schema(("age",), (Task("y"),))  # type: ignore[arg-type]
    with _raises("'y'"):
        Schema((Feature("a"),), ("y",))  # type: ignore[arg-type]


def test_duplicate_feature_name() -> None:
    with _raises("duplicate feature name 'age'"):
        _schema(features=(Feature("age"), Feature("age", "numeric")))


def test_duplicate_task_name() -> None:
    with _raises("duplicate task name 'click'"):
        _schema(tasks=(Task("click"), Task("click", "regression")))


def test_two_tasks_sharing_a_label_column() -> None:
    with _raises("'y'"):
        _schema(tasks=(Task("a", label="y"), Task("b", label="y")))


def test_unknown_tower_with_suggestion() -> None:
    with _raises("tower 'clik' is not a task") as info:
        _schema(features=(Feature("user_id", towers=("clik",)),))
    message = str(info.value)
    assert "did you mean 'click'?" in message
    assert "'buy'" in message  # lists the tasks


def test_depends_on_unknown_with_suggestion() -> None:
    with _raises("depends_on 'clck' is not a task") as info:
        _schema(tasks=(Task("click"), Task("buy", depends_on="clck")))
    assert "did you mean 'click'?" in str(info.value)


def test_depends_on_cycle_names_the_cycle() -> None:
    with _raises("cycle") as info:
        _schema(tasks=(Task("a", depends_on="c"), Task("b", depends_on="a"), Task("c", depends_on="b")))
    message = str(info.value)
    for name in ("a", "b", "c"):
        assert f"{name} -> " in message or f"-> {name}" in message


def test_depends_on_two_cycle() -> None:
    with _raises("cycle"):
        _schema(tasks=(Task("a", depends_on="b"), Task("b", depends_on="a")))


def test_depends_on_chain_is_fine() -> None:
    s = _schema(tasks=(Task("a"), Task("b", depends_on="a"), Task("c", depends_on="b")))
    assert s.task("c").depends_on == "b"


def test_label_column_used_as_feature() -> None:
    with _raises("'click'") as info:
        _schema(features=(Feature("click"),))
    assert "label" in str(info.value)


def test_label_column_used_as_feature_via_column() -> None:
    with _raises("'is_click'") as info:
        _schema(
            features=(Feature("f", column="is_click"),),
            tasks=(Task("click", label="is_click"),),
        )
    assert "'f'" in str(info.value)


@pytest.mark.parametrize("what", ["group", "sample_weight"])
def test_group_or_weight_column_is_a_label(what: str) -> None:
    with _raises(f"{what} column 'click'"):
        _schema(**{what: "click"})


@pytest.mark.parametrize("what", ["group", "sample_weight"])
def test_group_or_weight_column_is_a_feature(what: str) -> None:
    with _raises(f"{what} column 'price'") as info:
        _schema(**{what: "price"})
    assert "never inputs" in str(info.value)


@pytest.mark.parametrize("what", ["group", "sample_weight"])
def test_group_or_weight_column_read_by_renamed_feature(what: str) -> None:
    with _raises("'uid'") as info:
        _schema(features=(Feature("user", column="uid"),), **{what: "uid"})
    assert "'user'" in str(info.value)


def test_group_and_weight_same_column() -> None:
    with _raises("'w'"):
        _schema(group="w", sample_weight="w")


@pytest.mark.parametrize("what", ["group", "sample_weight"])
def test_group_or_weight_empty_name(what: str) -> None:
    with _raises("non-empty string"):
        _schema(**{what: ""})


def test_lookup_unknown_feature_and_task_suggests() -> None:
    s = _schema()
    assert s.feature("price").kind == "numeric"
    assert s.task("buy").depends_on == "click"
    with _raises("no feature 'prize'") as info:
        s.feature("prize")
    assert "did you mean 'price'?" in str(info.value)
    with _raises("no task 'clik'") as info:
        s.task("clik")
    assert "did you mean 'click'?" in str(info.value)


# ---------------------------------------------------------------------- derived views
def test_numeric_columns_layout_with_missing_indicators() -> None:
    s = Schema(
        features=(
            Feature("a", "numeric", missing_indicator=True),
            Feature("u"),
            Feature("b", "numeric"),
            Feature("c", "numeric", missing_indicator=True),
        ),
        tasks=(Task("y"),),
    )
    assert s.numeric_columns == (
        ("a", "a"),
        ("a", "a" + MISSING_SUFFIX),
        ("b", "b"),
        ("c", "c"),
        ("c", "c" + MISSING_SUFFIX),
    )
    assert MISSING_SUFFIX == "__missing"
    assert sum(f.width for f in s.features) == len(s.numeric_columns)
    assert [f.name for f in s.categorical] == ["u"]
    assert [f.name for f in s.numeric] == ["a", "b", "c"]
    assert s.feature_names == ("a", "u", "b", "c")
    assert s.task_names == ("y",)


def test_source_columns_order_and_dedup() -> None:
    s = Schema(
        features=(
            Feature("user", column="uid"),
            Feature("user_num", "numeric", column="uid"),
            Feature("price", "numeric"),
        ),
        tasks=(Task("click", label="is_click"), Task("watch", "regression")),
        group="query",
        sample_weight="w",
    )
    assert s.source_columns == ("uid", "price", "is_click", "watch", "query", "w")


def test_replace_features_returns_new_validated_schema() -> None:
    s = _schema()
    sized = s.replace_features(
        dataclasses.replace(f, vocab_size=7) if f.kind == "categorical" else f for f in s.features
    )
    assert sized.feature("user_id").vocab_size == 7
    assert s.feature("user_id").vocab_size is None
    assert sized != s
    with _raises("label"):
        s.replace_features([Feature("click")])


# ---------------------------------------------------------------------- round trip
def _rich_schema() -> Schema:
    return Schema(
        features=(
            Feature("user", embedding_dim=8, column="uid", vocab_size=10, min_count=3),
            Feature("price", "numeric", fill="median", missing_indicator=True, standardize=False),
            Feature("video", towers=("watch", "like")),
        ),
        tasks=(
            Task("click", weight=0.5, loss="focal", metric="logloss"),
            Task("watch", "regression", label="watch_time", loss="huber", depends_on="click"),
            Task("like", "multiclass", num_classes=5, depends_on="watch"),
        ),
        group="query",
        sample_weight="w",
    )


def test_json_round_trip_equal() -> None:
    s = _rich_schema()
    text = s.to_json()
    back = Schema.from_json(text)
    assert back == s
    assert back.feature("video").towers == ("watch", "like")
    assert back.task("like").depends_on == "watch"
    assert back.group == "query"
    assert back.sample_weight == "w"
    assert Schema.from_json(s.to_json(indent=None)) == s


def test_dict_round_trip_is_plain_json() -> None:
    s = _rich_schema()
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d  # only JSON types
    assert d["features"][2]["towers"] == ["watch", "like"]
    assert Schema.from_dict(d) == s
    assert Schema.from_dict(json.loads(json.dumps(d))) == s


def test_from_dict_minimal_uses_defaults() -> None:
    s = Schema.from_dict({"features": [{"name": "a"}], "tasks": [{"name": "y"}]})
    assert s == Schema((Feature("a"),), (Task("y"),))


def test_from_dict_unknown_schema_key_names_closest() -> None:
    d = _schema().to_dict()
    d["sample_weights"] = "w"
    with _raises("unknown key 'sample_weights'") as info:
        Schema.from_dict(d)
    assert "did you mean 'sample_weight'?" in str(info.value)


def test_from_dict_unknown_feature_key_names_closest() -> None:
    d = _schema().to_dict()
    d["features"][1]["embeding_dim"] = 4
    with _raises("features[1]: unknown key 'embeding_dim'") as info:
        Schema.from_dict(d)
    assert "did you mean 'embedding_dim'?" in str(info.value)


def test_from_dict_unknown_task_key_names_closest() -> None:
    d = _schema().to_dict()
    d["tasks"][0]["dependson"] = "buy"
    with _raises("tasks[0]: unknown key 'dependson'") as info:
        Schema.from_dict(d)
    assert "did you mean 'depends_on'?" in str(info.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], "mapping"),
        ({"tasks": [{"name": "y"}]}, "'features'"),
        ({"features": [{"name": "a"}], "tasks": {"name": "y"}}, "'tasks'"),
        ({"features": ["a"], "tasks": [{"name": "y"}]}, "features[0]"),
        ({"features": [{"kind": "numeric"}], "tasks": [{"name": "y"}]}, "features[0]"),
    ],
)
def test_from_dict_bad_shapes(data: Any, match: str) -> None:
    with _raises(match):
        Schema.from_dict(data)


def test_from_json_bad_text() -> None:
    with _raises("does not parse"):
        Schema.from_json("{features: ")


def test_from_dict_validates_like_the_constructor() -> None:
    d = _schema().to_dict()
    d["tasks"][1]["depends_on"] = "nope"
    with _raises("'nope'"):
        Schema.from_dict(d)


# ---------------------------------------------------------------------- frozen
def test_frozen() -> None:
    s = _rich_schema()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.group = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.features[0].name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tasks[0].weight = 2.0  # type: ignore[misc]
    assert isinstance(s.features, tuple)
    assert isinstance(s.tasks, tuple)


def test_equal_schemas_hash_equal() -> None:
    assert hash(_rich_schema()) == hash(_rich_schema())
    assert _rich_schema() == _rich_schema()
    assert Feature("a") != Feature("a", "numeric")


@pytest.mark.parametrize(
    ("name", "message"), [("ctr.v2", "contains '.'"), ("train", "is reserved"), ("to", "is reserved")]
)
def test_task_names_that_torch_modules_cannot_hold_are_rejected(name: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        Task(name)
    assert Task("training", label="train").column == "train"  # a label column may have any name


# ---------------------------------------------------------------------- value columns
def test_values_default_empty_and_list_becomes_tuple() -> None:
    assert _schema().values == ()
    s = _schema(values=["price_raw", "true_ctr"])
    assert s.values == ("price_raw", "true_ctr")
    assert s.source_columns[-2:] == ("price_raw", "true_ctr")


def test_values_may_be_read_by_a_feature() -> None:
    s = _schema(values=("price",))  # feature "price" reads the same column
    assert s.values == ("price",)
    assert s.source_columns.count("price") == 1


def test_values_as_plain_string_rejected_with_fix() -> None:
    with _raises("got the string 'price' (write ['price'])"):
        _schema(values="price")


@pytest.mark.parametrize("column", ["click", "buy"])
def test_value_column_is_a_label(column: str) -> None:
    with _raises(f"value column {column!r} is the label of task {column!r}"):
        _schema(values=("price", column))


@pytest.mark.parametrize("what", ["group", "sample_weight"])
def test_value_column_is_group_or_weight(what: str) -> None:
    with _raises(f"value column 'q' is also the schema's {what} column"):
        _schema(values=("q",), **{what: "q"})


def test_value_columns_repeat_or_empty_rejected() -> None:
    with _raises("duplicate value column name 'p'"):
        _schema(values=("p", "p"))
    with _raises("value column name must be a non-empty string, got ''"):
        _schema(values=("",))


def test_values_round_trip_and_old_dicts_load() -> None:
    s = dataclasses.replace(_rich_schema(), values=("price", "true_ctr"))
    d = s.to_dict()
    assert d["values"] == ["price", "true_ctr"]
    back = Schema.from_json(s.to_json())
    assert back == s
    assert back.values == ("price", "true_ctr")
    old = _rich_schema().to_dict()
    del old["values"]  # written before value columns existed
    assert Schema.from_dict(old) == _rich_schema()
    assert Schema.from_dict(old).values == ()
