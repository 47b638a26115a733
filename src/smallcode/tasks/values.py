"""Values that cross a process boundary: encode, decode, digest and compare them, type-exactly.

Strict verdicts compare what a candidate returned with what the reference returned, in another
process and often from a cache on disk, so the representation must keep what ``==`` forgets:
``1`` vs ``1.0`` vs ``True``, ``[1]`` vs ``(1,)``, ``{1}`` vs ``frozenset({1})``, a ``Counter`` vs a
``dict``. One table of the supported types (``_TYPES``: tag, shape, scalar encodings) drives
every walk over a value, and every walk dispatches on the shape, so all of them agree on what a
value is made of. Two JSON representations come out of it:

* the *wire* form (:func:`encode` / :func:`decode`): ``[tag, ...]`` lists, used between the harness
  and the sandbox and in the expected-output cache. It covers the exact built-in scalars and
  containers plus ``Counter``, ``defaultdict``, ``OrderedDict``, ``deque`` and ``re.Match``; any
  other type (subclasses included, so an ``int`` subclass with a lying ``__eq__`` cannot pass for an
  int) becomes ``["other", typename]``, which never compares equal. Values bigger than
  ``DIGEST_OVER`` become ``["digest", sha256]`` (:func:`encode_output`), hashed without building
  their encoding.
* the *plain* form (:func:`to_plain` / :func:`from_plain`): compact JSON for data files (a list is a
  JSON array, other containers ``{"$": tag, "v": ...}``), limited to None, bool, int, float,
  complex, str, bytes, list, tuple, dict, set and frozenset; anything else raises
  :class:`CodecError`. Task files and their sha256 pins are written in it, so it never changes.

Comparison (:func:`same`) is structural on wire encodings: exact types, dict and set order ignored
(``OrderedDict`` order kept), NaN equal to NaN, floats within an absolute tolerance, digests by
equality (so the tolerance applies only below ``DIGEST_OVER``).

Standard library only and no smallcode imports: the sandbox's payload runs it under
``python -I -S``. Decoding never executes code (no pickle, no eval).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from array import array
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Sequence
from typing import Any

VERSION = 2
"""Bumped whenever an encoding or digest changes; caches of encoded values key on it
(2: dict-like values are digested by their items, not their keys)."""

MAX_DEPTH = 200
DIGEST_OVER = 4096
"""Values costlier than this (a unit per node, per 64 characters, per 512 bits) are digested."""

# Shapes of the supported types.
SCALAR, SEQUENCE, SET, MAPPING, ORDERED_MAPPING, MATCH, OTHER = range(7)


def _str_digest(x: str) -> bytes:
    b = x.encode("utf-8", "surrogatepass")
    return b"S%d:" % len(b) + b


# The one table of supported types: tag, shape and, for scalars, their wire encoding and the bytes
# their digest takes in. Keyed by id(type) so that a lookup never runs a metaclass's __hash__ or
# __eq__ (which could raise, or make a foreign type pass for ``int``).
_TYPES: dict[int, tuple[str, int, Any, Any]] = {
    id(t): entry
    for t, entry in (
        (type(None), ("none", SCALAR, lambda x: ["none"], lambda x: b"N;")),
        (bool, ("bool", SCALAR, lambda x: ["bool", x], lambda x: b"B1;" if x else b"B0;")),
        # hex: exact, and free of the int->str digit limit
        (int, ("int", SCALAR, lambda x: ["int", hex(x)], lambda x: b"I" + hex(x).encode() + b";")),
        (float, ("float", SCALAR, lambda x: ["float", x.hex()], lambda x: b"F" + x.hex().encode() + b";")),
        (
            complex,
            (
                "complex",
                SCALAR,
                lambda x: ["complex", x.real.hex(), x.imag.hex()],
                lambda x: b"C" + x.real.hex().encode() + b"," + x.imag.hex().encode() + b";",
            ),
        ),
        (str, ("str", SCALAR, lambda x: ["str", x], _str_digest)),
        (bytes, ("bytes", SCALAR, lambda x: ["bytes", x.hex()], lambda x: b"Y%d:" % len(x) + x)),
        (list, ("list", SEQUENCE, None, None)),
        (tuple, ("tuple", SEQUENCE, None, None)),
        (deque, ("deque", SEQUENCE, None, None)),
        (set, ("set", SET, None, None)),
        (frozenset, ("frozenset", SET, None, None)),
        (dict, ("dict", MAPPING, None, None)),
        (Counter, ("Counter", MAPPING, None, None)),
        (defaultdict, ("defaultdict", MAPPING, None, None)),
        (OrderedDict, ("OrderedDict", ORDERED_MAPPING, None, None)),
        (re.Match, ("Match", MATCH, None, None)),
    )
}
_UNKNOWN = ("other", OTHER, None, None)
_FLOAT_ONLY = {float}
_SCALAR_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})
_FROM_ITEMS: dict[str, Any] = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "deque": deque}
_FROM_PAIRS: dict[str, Any] = {
    "dict": dict,
    "Counter": lambda pairs: Counter(dict(pairs)),  # Counter(pairs) would count the pairs
    "defaultdict": lambda pairs: defaultdict(None, pairs),
    "OrderedDict": OrderedDict,
}
_PLAIN_TAGS = frozenset("none bool int float complex str bytes list tuple dict set frozenset".split())


class CodecError(ValueError):
    """A value outside the supported types, or a malformed encoding."""


def _typename(x: Any) -> str:
    try:
        return str(type(x).__qualname__)[:100]
    except Exception:  # noqa: BLE001 - hostile types may raise anything
        return "?"


def _kind(x: Any) -> tuple[str, int, Any, Any]:
    """``(tag, shape, wire, digest)`` of ``x``'s exact type from the table (``other`` when absent).
    Every walk over a value dispatches on the shape, never on the type: all dict-likes are walked
    as (key, value) pairs, all sequences and sets as their items."""
    return _TYPES.get(id(type(x)), _UNKNOWN)


def _match_parts(m: re.Match) -> tuple[str, tuple[int, int], tuple[Any, ...]]:
    """What a match is, as a value: its subject, span and groups (not the pattern that found it)."""
    return m.string, m.span(), m.groups()


# ---- the wire form ------------------------------------------------------------------------------


def encode(x: Any, _depth: int = 0) -> Any:
    """Tagged, type-exact JSON-compatible encoding of ``x`` (see the module docstring)."""
    if _depth > MAX_DEPTH:
        return ["other", "too deep"]
    tag, shape, wire, _ = _TYPES.get(id(type(x)), _UNKNOWN)  # _kind, inlined: the hottest loop
    if wire is not None:
        return wire(x)
    if shape == SEQUENCE or shape == SET:
        return [tag, [encode(v, _depth + 1) for v in x]]
    if shape == MAPPING or shape == ORDERED_MAPPING:
        # defaultdict's factory is dropped: it is behaviour, not value.
        return [tag, [[encode(k, _depth + 1), encode(v, _depth + 1)] for k, v in x.items()]]
    if shape == MATCH:
        return [tag, encode(_match_parts(x), _depth + 1)]
    return ["other", _typename(x)]


def decode(e: Any) -> Any:
    """Inverse of :func:`encode` for the encodable types (a match decodes to a stand-in tuple)."""
    tag = e[0]
    if tag == "none":
        return None
    if tag == "bool":
        return bool(e[1])
    if tag == "int":
        return int(e[1], 16)
    if tag == "float":
        return float.fromhex(e[1])
    if tag == "complex":
        return complex(float.fromhex(e[1]), float.fromhex(e[2]))
    if tag == "str":
        return str(e[1])
    if tag == "bytes":
        return bytes.fromhex(e[1])
    if tag in _FROM_ITEMS:
        return _FROM_ITEMS[tag](decode(v) for v in e[1])
    if tag in _FROM_PAIRS:
        return _FROM_PAIRS[tag]([(decode(k), decode(v)) for k, v in e[1]])
    if tag == "Match":
        return ("Match", *decode(e[1]))  # matches cannot be rebuilt
    raise ValueError(f"cannot decode value tagged {tag!r}")


def _cost_over(x: Any, limit: int) -> bool:
    """Whether ``x`` costs more than ``limit`` units (visits at most ``limit`` nodes)."""
    todo, seen = [x], 0
    while todo:
        v = todo.pop()
        seen += 1
        tag, shape, _, _ = _TYPES.get(id(type(v)), _UNKNOWN)  # _kind, inlined
        if tag == "str" or tag == "bytes":
            seen += len(v) >> 6
        elif tag == "int":
            seen += v.bit_length() >> 9
        if seen > limit:
            return True
        if shape == SEQUENCE or shape == SET:
            todo.extend(v)
        elif shape == MAPPING or shape == ORDERED_MAPPING:
            todo.extend(v.keys())
            todo.extend(v.values())
    return False


def _repr_into(x: Any, h: Any) -> bool:
    """Hash a sequence of exact scalars by its repr, which is exact and type-faithful for them
    (``1``, ``1.0``, ``True``, ``'1'`` all differ) and runs at C speed; False where repr cannot
    (ints beyond the str-conversion digit limit)."""
    try:
        text = repr(x)
    except ValueError:
        return False
    h.update(b"r:" + text.encode("utf-8", "surrogatepass"))
    return True


_DIGEST_TAGS = {
    "list": b"L",
    "tuple": b"T",
    "deque": b"Q",
    "set": b"E",
    "frozenset": b"Z",
    "dict": b"D",
    "Counter": b"C",
    "defaultdict": b"V",
    "OrderedDict": b"O",
}


def _digest_into(x: Any, h: Any, depth: int = 0) -> None:
    """Feed a type-exact, order-canonical serialisation of ``x`` to ``h`` without building it.
    A mapping's item is hashed as its (key, value) pair, whatever the mapping's type."""
    if depth > MAX_DEPTH:
        raise ValueError("too deep")
    tag, shape, _, scalar = _kind(x)
    if scalar is not None:
        h.update(scalar(x))
    elif shape == MATCH:
        h.update(b"M:")
        _digest_into(_match_parts(x), h, depth + 1)
    elif shape == ORDERED_MAPPING:
        h.update(_DIGEST_TAGS[tag] + b"%d:" % len(x))
        for item in x.items():
            _digest_into(item, h, depth + 1)
    elif shape == SEQUENCE:
        h.update(_DIGEST_TAGS[tag] + b"%d:" % len(x))
        kinds = set(map(type, x))
        # Homogeneous sequences of scalars take a C-speed path (a million floats in HumanEval+);
        # which path runs depends only on the value, so equal values still hash equal.
        if kinds == _FLOAT_ONLY:
            h.update(b"f:" + array("d", x).tobytes())
        elif kinds <= _SCALAR_TYPES and _repr_into(x, h):
            pass
        else:
            for v in x:
                _digest_into(v, h, depth + 1)
    elif shape == SET or shape == MAPPING:
        parts = []
        for item in x.items() if shape == MAPPING else x:
            sub = hashlib.sha256()
            _digest_into(item, sub, depth + 1)
            parts.append(sub.digest())
        h.update(_DIGEST_TAGS[tag] + b"%d:" % len(x) + b"".join(sorted(parts)))
    else:
        raise ValueError(_typename(x))


def digest(x: Any) -> str:
    """Hex sha256 of ``x``'s type-exact, order-canonical serialisation; raises ValueError for an
    unsupported type (its name is the message) or a value nested too deep."""
    h = hashlib.sha256()
    _digest_into(x, h)
    return h.hexdigest()


def encode_output(x: Any) -> Any:
    """:func:`encode` for values up to ``DIGEST_OVER``; bigger ones become ``["digest", sha256]``,
    computed without materialising an encoding (HumanEval+ has outputs of a million elements)."""
    if not _cost_over(x, DIGEST_OVER):
        return encode(x)
    try:
        return ["digest", digest(x)]
    except ValueError as e:
        return ["other", f"large value containing {e}"]
    except RecursionError:
        return ["other", "too deep"]


# ---- comparing wire encodings -------------------------------------------------------------------


def _key(e: Any) -> str:
    return json.dumps(e, sort_keys=True)


def same(exp: Any, got: Any, atol: float = 0.0) -> bool:
    """Type-exact structural equality of two wire encodings; ``got`` may be malformed (it comes
    from untrusted code) and then is simply not equal."""
    if not isinstance(got, list) or not got or got[0] != exp[0]:
        return False
    tag = exp[0]
    if tag == "float":
        a, b = float.fromhex(exp[1]), float.fromhex(got[1])
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or (atol > 0 and abs(a - b) <= atol)
    if tag == "complex":
        return same(["float", exp[1]], ["float", got[1]], atol) and same(["float", exp[2]], ["float", got[2]], atol)
    if tag in ("list", "tuple", "deque"):
        return len(exp[1]) == len(got[1]) and all(same(x, y, atol) for x, y in zip(exp[1], got[1], strict=True))
    if tag in ("set", "frozenset"):
        return sorted(map(_key, exp[1])) == sorted(map(_key, got[1]))
    if tag == "OrderedDict":
        return len(exp[1]) == len(got[1]) and all(
            same(k1, k2) and same(v1, v2, atol) for (k1, v1), (k2, v2) in zip(exp[1], got[1], strict=True)
        )
    if tag in ("dict", "Counter", "defaultdict"):
        if len(exp[1]) != len(got[1]):
            return False
        mine = {_key(k): v for k, v in got[1]}
        return all(_key(k) in mine and same(v, mine[_key(k)], atol) for k, v in exp[1])
    if tag == "raise":
        return got[1] == exp[1]  # same exception type; messages may differ
    if tag == "other":
        return False  # values we cannot compare exactly never pass
    if tag == "Match":
        return same(exp[1], got[1])
    if tag == "digest":
        return got[1] == exp[1]
    return got == exp


def same_value(a: Any, b: Any) -> bool:
    """:func:`same` on two values: equal and of identical types all the way down, NaN equals NaN."""
    return same(encode(a), encode(b))


def show(e: Any, limit: int = 120) -> str:
    """A short human-readable rendering of a wire encoding (or of an output tag)."""
    try:
        if isinstance(e, list) and e and e[0] == "raise":
            text = f"raises {e[1]}"
        elif isinstance(e, list) and e and e[0] == "other":
            text = f"<object of type {e[1]}>"
        elif isinstance(e, list) and e and e[0] == "digest":
            text = f"<large value, sha256 {e[1][:12]}>"
        else:
            text = repr(decode(e))
    except Exception:  # noqa: BLE001 - malformed encodings come from untrusted children
        text = "<malformed>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_mismatch(expected: list[Any], got: Any, atol: float = 0.0, inputs: Sequence[Any] = ()) -> str | None:
    """None when ``got`` (encoded outputs, one per input) matches ``expected`` element by element,
    else a one-line description of the first difference (naming the argument tuple from ``inputs``)."""
    if not isinstance(got, list) or len(got) != len(expected):
        n = len(got) if isinstance(got, list) else "no"
        return f"returned {n} outputs for {len(expected)} inputs"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        try:
            ok = same(e, g, atol)
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            args = show(encode(tuple(inputs[i])), 80) if i < len(inputs) else "?"
            return f"input #{i} {args}: expected {show(e)}, got {show(g)}"
    return None


# ---- the plain form (data files) ----------------------------------------------------------------

# JSON numbers are exact for ints, but CPython caps int<->str conversion at 4300 digits by default,
# so big ints travel as hex strings.
_BIG = 1 << 62


def to_plain(x: Any) -> Any:
    """JSON-compatible data that :func:`from_plain` turns back into an equal, same-typed value."""
    tag, shape, _, _ = _kind(x)
    if tag not in _PLAIN_TAGS:
        t = type(x)
        raise CodecError(f"cannot encode a value of type {t.__module__}.{_typename(x)}")
    if tag in ("none", "bool", "str"):
        return x
    if tag == "int":
        return x if -_BIG < x < _BIG else {"$": "int", "v": hex(x)}
    if tag == "float":
        return x if math.isfinite(x) else {"$": "float", "v": repr(x)}
    if tag == "complex":
        return {"$": "complex", "v": [to_plain(x.real), to_plain(x.imag)]}
    if tag == "bytes":
        return {"$": "bytes", "v": x.hex()}
    if tag == "list":
        return [to_plain(v) for v in x]
    if tag == "tuple":
        return {"$": "tuple", "v": [to_plain(v) for v in x]}
    if shape == MAPPING:
        return {"$": "dict", "v": [[to_plain(k), to_plain(v)] for k, v in x.items()]}
    items = [to_plain(v) for v in x]
    # Sets have no order; sorting the encodings makes equal sets encode to equal bytes (cache keys).
    items.sort(key=_key)
    return {"$": tag, "v": items}


def from_plain(data: Any) -> Any:
    """Inverse of :func:`to_plain`; raises :class:`CodecError` on anything it did not produce."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [from_plain(v) for v in data]
    if not isinstance(data, dict) or set(data) != {"$", "v"}:
        raise CodecError(f"malformed encoded value: {str(data)[:80]}")
    tag, v = data["$"], data["v"]
    if tag == "tuple":
        return tuple(from_plain(x) for x in v)
    if tag == "dict":
        return {from_plain(k): from_plain(x) for k, x in v}
    if tag == "set":
        return {from_plain(x) for x in v}
    if tag == "frozenset":
        return frozenset(from_plain(x) for x in v)
    if tag == "int":
        return int(v, 16)
    if tag == "float":
        return float(v)
    if tag == "complex":
        return complex(from_plain(v[0]), from_plain(v[1]))
    if tag == "bytes":
        return bytes.fromhex(v)
    raise CodecError(f"unknown tag {tag!r} in encoded value")


def dumps(value: Any) -> str:
    """The plain form as compact JSON text."""
    return json.dumps(to_plain(value), separators=(",", ":"))


def loads(text: str) -> Any:
    return from_plain(json.loads(text))
