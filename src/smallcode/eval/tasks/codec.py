"""A type-exact, JSON-based encoding of the plain Python values that code tasks take and return.

Strict verdicts compare values across process boundaries (reference run, candidate run, disk cache),
so the encoding must keep what ``==`` forgets: ``1`` vs ``1.0`` vs ``True``, ``[1]`` vs ``(1,)``,
``{1}`` vs ``frozenset({1})``. Supported: None, bool, int (any size), float (nan, infinities), complex,
str, bytes, list, tuple, dict (any hashable keys), set, frozenset. Anything else raises
:class:`CodecError`; the codec never falls back to ``repr``/``pickle`` (decoding must never execute
code). Lists are plain JSON arrays; every other container is a ``{"$": tag, "v": ...}`` object, and
plain JSON objects never occur, so tags cannot collide with data.
"""

from __future__ import annotations

import json
import math
from typing import Any

CODEC_VERSION = 1

# JSON numbers are exact for ints, but CPython caps int<->str conversion at 4300 digits by default,
# so big ints travel as hex strings.
_BIG = 1 << 62


class CodecError(ValueError):
    """A value outside the supported types, or a malformed encoding."""


def encode(value: Any) -> Any:
    """JSON-compatible data that :func:`decode` turns back into an equal, same-typed value."""
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_BIG < value < _BIG else {"$": "int", "v": hex(value)}
    if t is float:
        return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
    if t is list:
        return [encode(v) for v in value]
    if t is tuple:
        return {"$": "tuple", "v": [encode(v) for v in value]}
    if t is dict:
        return {"$": "dict", "v": [[encode(k), encode(v)] for k, v in value.items()]}
    if t is set or t is frozenset:
        items = [encode(v) for v in value]
        # Sets have no order; sorting the encodings makes equal sets encode to equal bytes (cache keys).
        items.sort(key=lambda e: json.dumps(e, sort_keys=True))
        return {"$": t.__name__, "v": items}
    if t is complex:
        return {"$": "complex", "v": [encode(value.real), encode(value.imag)]}
    if t is bytes:
        return {"$": "bytes", "v": value.hex()}
    raise CodecError(f"cannot encode a value of type {t.__module__}.{t.__qualname__}")


def decode(data: Any) -> Any:
    """Inverse of :func:`encode`."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict) or set(data) != {"$", "v"}:
        raise CodecError(f"malformed encoded value: {str(data)[:80]}")
    tag, v = data["$"], data["v"]
    if tag == "tuple":
        return tuple(decode(x) for x in v)
    if tag == "dict":
        return {decode(k): decode(x) for k, x in v}
    if tag == "set":
        return {decode(x) for x in v}
    if tag == "frozenset":
        return frozenset(decode(x) for x in v)
    if tag == "int":
        return int(v, 16)
    if tag == "float":
        return float(v)
    if tag == "complex":
        return complex(decode(v[0]), decode(v[1]))
    if tag == "bytes":
        return bytes.fromhex(v)
    raise CodecError(f"unknown tag {tag!r} in encoded value")


def dumps(value: Any) -> str:
    return json.dumps(encode(value), separators=(",", ":"))


def loads(text: str) -> Any:
    return decode(json.loads(text))


def same_value(a: Any, b: Any) -> bool:
    """Equal and of identical types all the way down; dict and set order ignored, NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b or (a != a and b != b)
    if type(a) is complex:
        return same_value(a.real, b.real) and same_value(a.imag, b.imag)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if type(a) in (set, frozenset):
        return sorted(map(dumps, a)) == sorted(map(dumps, b))
    return a == b
