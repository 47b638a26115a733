r"""Click options made from a config dataclass: one option per field, its help the field's docstring.

``@config_options(RunConfig, aliases=...)`` on a command declares every field of the config as an
option and hands the command one built config (``cfg``) instead of a keyword per field, so a field's
name, type, default and help are written once, in the dataclass. Types become options so:

* ``bool``: a flag pair ``--name/--no-name``;
* ``int``, ``float``, ``str``: a value of that type; ``X | None``: X, and leaving it out means None;
* ``Literal[...]``: a choice among its values;
* ``list[X]``: comma-separated, and the option may be repeated (``--suites humaneval,mbpp`` or
  ``--suites humaneval --suites mbpp``); inside an item ``\n``, ``\t``, ``\,`` and ``\\`` stand for a
  newline, a tab, a comma and a backslash.

An option's name is its field's with dashes (``top_p``: ``--top-p``); ``aliases`` adds other spellings
that commands accepted before. A value of the wrong type is click's usage error naming the option; a
value the config refuses is a usage error with the config's message.

Not here: options that are not config fields (which backend, the output directory): a command declares
those by hand. Nested configs and dicts have no flat option form and are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import click

from smallcode.config import Config, ConfigError

_ESCAPES = {"n": "\n", "t": "\t", ",": ",", "\\": "\\"}


def split_list(text: str) -> list[str]:
    """The items of a comma-separated option value, each stripped of outer blanks; blank items are dropped."""
    items: list[list[str]] = [[]]
    chars = iter(text)
    for c in chars:
        if c == ",":
            items.append([])
        else:  # an escape stays one token, so neither the split nor the strip below touches it
            items[-1].append(c + next(chars, "") if c == "\\" else c)
    out = []
    for tokens in items:
        while tokens and tokens[0].isspace():
            tokens.pop(0)
        while tokens and tokens[-1].isspace():
            tokens.pop()
        if tokens:
            out.append("".join(_ESCAPES.get(t[1:], t) if t[0] == "\\" else t for t in tokens))
    return out


def join_list(items: Iterable[Any]) -> str:
    """The comma-separated form of ``items`` that ``split_list`` reads back (shown as option defaults)."""
    reverse = {v: "\\" + k for k, v in _ESCAPES.items()}
    return ",".join("".join(reverse.get(c, c) for c in str(item)) for item in items)


class CommaList(click.ParamType):
    """A list given as one comma-separated value; each item converted by ``item``."""

    def __init__(self, item: click.ParamType) -> None:
        self.item = item
        self.name = f"{item.name},..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[Any]:
        items = value if isinstance(value, list | tuple) else split_list(value)
        return [self.item.convert(v, param, ctx) for v in items]


def _param_type(tp: Any, where: str) -> click.ParamType:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if not all(isinstance(a, str) for a in args):
            raise TypeError(f"{where}: only Literals of strings become choices, got {tp}")
        return click.Choice(list(args))
    if origin is list:
        return CommaList(_param_type(args[0] if args else str, where))
    scalars: dict[Any, click.ParamType] = {int: click.INT, float: click.FLOAT, str: click.STRING}
    if tp in scalars:
        return scalars[tp]
    raise TypeError(f"{where}: a field of type {tp} has no option form")


def _without_none(tp: Any, where: str = "") -> Any:
    """``X`` for ``X | None``; other types as they are."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp
    options = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(options) != 1:
        raise TypeError(f"{where}: a union of several types has no option form")
    return options[0]


def _option(cls: type[Config], f: dataclasses.Field[Any], tp: Any, help_text: str, aliases: list[str],
            param_type: click.ParamType | None, defaults: Config | None = None
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    where = f"{cls.__name__}.{f.name}"
    tp = _without_none(tp, where)
    dashed = f.name.replace("_", "-")
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and defaults is None
    if defaults is not None:
        default = getattr(defaults, f.name)
    else:
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
    if tp is bool:
        more = {"required": True} if required else {"default": default, "show_default": True}
        return click.option(f"--{dashed}/--no-{dashed}", *aliases, f.name, help=help_text, **more)
    shown = default is not None
    repeated = typing.get_origin(tp) is list
    if repeated and not required:  # the text a user would type, which the option's type reads back
        default = [join_list(default)] if default is not None else []
    more = {"required": True} if required else {"default": default, "show_default": shown}
    return click.option(f"--{dashed}", *aliases, f.name, type=param_type or _param_type(tp, where), multiple=repeated,
                        help=help_text, **more)


def config_options(cls: type[Config], *, exclude: Iterable[str] = (), aliases: Mapping[str, list[str]] | None = None,
                   click_types: Mapping[str, click.ParamType] | None = None, param: str = "cfg",
                   defaults: Config | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that adds an option per field of ``cls`` and passes the built config as ``param``.

    ``exclude``: fields left at their defaults (no option). ``aliases``: extra option names per field
    (for a bool, flag pairs such as ``"--security/--no-security"``). ``click_types``: a click type that
    refines a field's (e.g. a ``click.Path`` that must exist for a directory field). ``defaults``: an
    instance of ``cls`` whose values are the options' defaults instead of the class's.
    """
    skip, aliases, click_types = set(exclude), dict(aliases or {}), dict(click_types or {})
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]  # type: ignore[arg-type]
    unknown = (set(aliases) | set(click_types) | skip) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown:
        raise TypeError(f"config_options({cls.__name__}): no such field(s) {sorted(unknown)}")
    docs = cls.field_docs()
    lists = [f.name for f in fields if typing.get_origin(_without_none(hints[f.name])) is list]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f in fields}
            for name in lists:  # a repeatable option gives one list per use; none only when the default is None
                values[name] = [item for given in values[name] for item in given] if values[name] else None
            try:
                cfg = cls(**values)
            except ConfigError as e:
                raise click.UsageError(str(e)) from e
            return fn(*args, **{param: cfg}, **kwargs)

        # click lists options in the reverse order of decoration: add the last field first
        for f in reversed(fields):
            wrapper = _option(cls, f, hints[f.name], docs.get(f.name, ""), aliases.get(f.name, []),
                              click_types.get(f.name), defaults)(wrapper)
        return wrapper

    return decorate
