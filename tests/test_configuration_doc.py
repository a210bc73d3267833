"""docs/configuration.md lists every key of the run configuration with its default, and nothing else."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from mtlkit.config import RunConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _section(annotation: object) -> type[BaseModel] | None:
    """The config section class an annotation holds (``X`` or ``X | None``), else None."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def config_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key path, default as the page writes it) for every leaf key of the configuration."""
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        section = _section(field.annotation)
        if section is not None:
            yield from config_keys(section, key + ".")
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        if default is PydanticUndefined:
            yield key, "required"
        else:
            yield (
                key,
                "`" + yaml.safe_dump(default, default_flow_style=True).removesuffix("...\n").strip() + "`",
            )


def documented_keys() -> dict[str, str]:
    """Key path -> default cell of every table row of the page."""
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \|", DOC.read_text(), re.M)
    keys = [key for key, _ in rows]
    assert len(keys) == len(set(keys)), "a key is listed twice"
    return {key: default.strip() for key, default in rows}


def test_every_key_is_documented_with_its_default() -> None:
    expected = dict(config_keys())
    assert len(expected) > 40
    documented = documented_keys()
    assert set(documented) == set(expected), (
        f"missing: {sorted(set(expected) - set(documented))}; not keys: {sorted(set(documented) - set(expected))}"
    )
    for key, default in expected.items():
        assert documented[key] == default, f"{key}: page says {documented[key]}, RunConfig has {default}"


def test_the_example_is_a_valid_configuration() -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    config = RunConfig.from_dict(yaml.safe_load(block.group(1)))
    assert config.balancer.name == "pcgrad"
