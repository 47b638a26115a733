"""The base of every config dataclass: to/from dict, JSON/YAML files, dotted overrides, field checks.

A config is a dataclass that subclasses :class:`Config`. However it is made (constructor, dict,
file, ``key=value`` overrides), the base checks every field against its annotation before the
config's own ``__post_init__`` runs: a ``Literal`` field holds one of its values, an ``int`` an
integer (not a bool), a ``str`` a string, a nested config is built from a mapping, and lists, tuples,
dicts and ``X | None`` are checked element by element; a mapping marked ``Partial(SomeConfig)`` holds
some of SomeConfig's fields with their types. An ``int`` given where a ``float`` is declared
becomes a float; nothing else is converted (``"3"`` is not an int). Unknown and missing keys are
errors too, so a typo in a recipe is a :class:`ConfigError` naming the class and the field.

Checks that bound a number or relate two fields stay in each config's ``__post_init__``; the base
wraps that method so its own checks run first and no subclass can skip them. ``field_docs`` reads
each field's docstring (the string under its annotation), which the CLI uses as option help.

Not here: what any field means, CLI wiring (``smallcode.cli.options``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Self

import yaml

from smallcode.errors import UserError
from smallcode.fileio import atomic_write_text


class ConfigError(UserError, ValueError):
    """A config value or file that cannot work; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Partial:
    """Marks a mapping of some of ``of``'s fields (``Annotated[dict[str, Any], Partial(ModelConfig)]``).

    The base checks the names and types of such a mapping as ``of`` would, without building one: for
    overrides applied later to a config that is not known yet (a preset, a checkpoint's).
    """

    of: type[Config]


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _describe(tp: Any) -> str:
    """The declared type in words, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("None" if a is type(None) else _describe(a) for a in args)
    if origin is not None:
        return str(tp).replace("typing.", "")
    if tp is bool:
        return "true or false"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` as the declared type ``tp``; a ConfigError naming ``where`` when it is not one."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        partial = next((m for m in tp.__metadata__ if isinstance(m, Partial)), None)
        return partial.of.check_partial(value, where) if partial else _convert(args[0], value, where)

    def wrong() -> ConfigError:
        return ConfigError(f"{where} must be {_describe(tp)}, got {value!r} ({type(value).__name__})")

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # ``X | None``: X's own message says more than a list of types
            return _convert(options[0], value, where)
        for option in options:
            try:
                return _convert(option, value, where)
            except ConfigError:
                continue
        raise wrong()
    if origin is Literal:
        # ``True == 1``: compare types too, so a bool is not taken for an int choice
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{where} must be one of {', '.join(repr(a) for a in args)}; got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise wrong()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must hold {len(args)} values, got {value!r}")
            items = [_convert(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(args, value, strict=True))]
        else:
            item_type = args[0] if args else Any
            items = [_convert(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
        same = type(value) is origin and all(a is b for a, b in zip(items, value, strict=True))
        return value if same else origin(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong()
        key_type, value_type = args or (Any, Any)
        out = {_convert(key_type, k, f"{where} key"): _convert(value_type, v, f"{where}.{k}") for k, v in value.items()}
        return value if all(out[k] is v for k, v in value.items()) else out
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            try:
                return tp.from_dict(value)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from e
        raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong()
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if type(value) is not float else value
        raise wrong()
    if isinstance(tp, type) and not isinstance(value, tp):
        raise wrong()
    return value


def _fields_of(tp: Any) -> type[Config] | None:
    """The config whose fields a value declared as ``tp`` holds: a nested config, or a Partial mapping's."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        partial = next((m for m in tp.__metadata__ if isinstance(m, Partial)), None)
        return partial.of if partial else _fields_of(args[0])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _fields_of(options[0]) if len(options) == 1 else None
    return tp if isinstance(tp, type) and issubclass(tp, Config) else None


class Config:
    """Mixin for dataclass configs: checked fields, dict/file round trips, overrides, field docs."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "_after_field_checks", False):
            return

        @functools.wraps(own)
        def __post_init__(self: Config) -> None:
            self._check_fields()
            own(self)

        __post_init__._after_field_checks = True  # type: ignore[attr-defined]
        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]

    def __post_init__(self) -> None:
        self._check_fields()

    def _check_fields(self) -> None:
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            checked = _convert(hints[f.name], value, f"{type(self).__name__}.{f.name}")
            if checked is not value:
                object.__setattr__(self, f.name, checked)  # object's: a frozen config is also built once

    @classmethod
    def check_partial(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        """Some of this config's fields (e.g. overrides of a preset) checked by name and type, not built.

        Returns the values as the fields hold them (an int where a float is declared becomes a float).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping of {cls.__name__} fields, got {data!r}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names, key=str)
        if unknown:
            raise ConfigError(f"{where}: unknown {cls.__name__} field(s) {unknown}; allowed fields are {sorted(names)}")
        hints = _field_types(cls)
        return {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Each field's docstring, as one line (the string literal written under the field)."""
        return dict(_field_docs(cls))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields), key=str)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {unknown}; allowed fields are {sorted(fields)}"
            )
        missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{cls.__name__}: missing required field(s) {missing}")
        return cls(**data)

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
            node, of = data, _fields_of(type(self))
            *parents, leaf = dotted.split(".")
            for p in parents:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"override {dotted!r}: {p!r} is not a nested config")
                node = node[p]
                of = _fields_of(_field_types(of)[p]) if of is not None and p in _field_types(of) else None
            # A partial mapping holds only the keys given so far; its config says which it may take.
            allowed = sorted(f.name for f in dataclasses.fields(of)) if of is not None else sorted(node)  # type: ignore[arg-type]
            if leaf not in allowed:
                raise ConfigError(f"override {dotted!r}: unknown field {leaf!r}; allowed: {allowed}")
            node[leaf] = value
        return self.from_dict(data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = (
            yaml.safe_dump(self.to_dict(), sort_keys=False)
            if path.suffix in (".yaml", ".yml")
            else json.dumps(self.to_dict(), indent=2) + "\n"
        )
        atomic_write_text(path, text)

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


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's docstring wins over its parent's
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source shipped: the fields simply have no docs
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs

