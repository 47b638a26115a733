"""The base of every config dataclass: to/from dict, JSON/YAML files, dotted overrides.

A config is a plain frozen-free dataclass that subclasses :class:`Config`. Unknown keys are an
error (a typo in a recipe must not be silently ignored); nested dataclasses round-trip.
Validation belongs to each config's ``__post_init__``, not here.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Self

import yaml


class ConfigError(ValueError):
    """A config value or file that cannot work; the message names the field."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    """Turn a value read from YAML/JSON/CLI into the field's declared type where that is unambiguous."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, name)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return tp.from_dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (list, tuple) and isinstance(value, list | tuple):
        return origin(value)
    return value


class Config:
    """Mixin for dataclass configs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {unknown}; allowed fields are {sorted(fields)}"
            )
        types_ = _field_types(cls)
        kwargs = {k: _coerce(types_[k], v, k) for k, v in data.items()}
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Self:
        return self.from_dict({**self.to_dict(), **changes})

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Self:
        """Apply ``key=value`` or ``a.b=value`` overrides; values are parsed as YAML scalars."""
        if isinstance(overrides, list):
            parsed: dict[str, Any] = {}
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override {item!r} is not of the form key=value")
                key, raw = item.split("=", 1)
                parsed[key.strip()] = yaml.safe_load(raw)
            overrides = parsed
        data = self.to_dict()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"override {dotted!r}: {p!r} is not a nested config")
                node = node[p]
            if leaf not in node:
                raise ConfigError(f"override {dotted!r}: unknown field {leaf!r}; allowed: {sorted(node)}")
            node[leaf] = value
        return self.from_dict(data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = (
            yaml.safe_dump(self.to_dict(), sort_keys=False)
            if path.suffix in (".yaml", ".yml")
            else json.dumps(self.to_dict(), indent=2) + "\n"
        )
        path.write_text(text)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config ({e.strerror})") from e
        try:
            data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'} ({e})") from e
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from e
