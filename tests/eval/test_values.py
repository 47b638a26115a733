"""The value module: digests of large values, and that it and the payload need only the standard library.

Defect: large Counter and defaultdict values were digested by their keys alone, so outputs differing
only in their counts passed strict mode. The property test below covers every container type, nested,
inside a container large enough that the digest path is taken.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from smallcode.tasks.values import DIGEST_OVER, decode, encode, encode_output, same

leaves = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-4, 4) | st.text(max_size=3)
hashables = st.recursive(
    leaves, lambda inner: st.tuples(inner, inner) | st.frozensets(leaves, max_size=3), max_leaves=4
)
keys = st.integers(-5, 5) | st.text(max_size=3)
nested = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.lists(inner, max_size=3).map(deque)
        | st.dictionaries(keys, inner, max_size=3)
        | st.dictionaries(keys, inner, max_size=3).map(Counter)
        | st.dictionaries(keys, inner, max_size=3).map(lambda d: defaultdict(None, d))
        | st.dictionaries(keys, inner, max_size=3).map(OrderedDict)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
    ),
    max_leaves=8,
)
CONTAINERS = ("list", "tuple", "deque", "dict", "Counter", "defaultdict", "OrderedDict", "set", "frozenset")


def _leaf_variant(x: Any) -> Any:
    if x is None:
        return 0
    if type(x) is bool:
        return not x
    if type(x) is int:
        return x + 1
    if type(x) is float:
        return x + 1.0 if math.isfinite(x) else 0.0
    return x + "x"


def variants(v: Any) -> Iterator[Any]:
    """Values equal to ``v`` except in exactly one nested place."""
    t = type(v)
    if t in (list, tuple, deque):
        for i, item in enumerate(v):
            for w in variants(item):
                items = list(v)
                items[i] = w
                yield t(items)
    elif t in (dict, Counter, defaultdict, OrderedDict):
        for k, item in v.items():
            for w in variants(item):
                d = defaultdict(None, v) if t is defaultdict else t(v)
                d[k] = w
                yield d
    elif t in (set, frozenset):
        for item in v:
            for w in variants(item):
                if w not in v:
                    yield t((v - {item}) | {w})
    else:
        yield _leaf_variant(v)


def rebuilt(v: Any) -> Any:
    """An equal copy built independently, unordered containers filled in reverse order."""
    t = type(v)
    if t in (list, tuple, deque):
        return t(rebuilt(x) for x in v)
    if t is OrderedDict:
        return OrderedDict((k, rebuilt(x)) for k, x in v.items())
    if t in (dict, Counter, defaultdict):
        pairs = [(k, rebuilt(x)) for k, x in reversed(list(v.items()))]
        return defaultdict(None, pairs) if t is defaultdict else t(dict(pairs))
    if t in (set, frozenset):
        return t(reversed([rebuilt(x) for x in v]))
    return v


def big(kind: str, v: Any) -> Any:
    """``v`` inside a container large enough that the digest path is taken."""
    filler = range(DIGEST_OVER + 8)
    if kind in ("list", "tuple", "deque"):
        return {"list": list, "tuple": tuple, "deque": deque}[kind]([v, *filler])
    if kind in ("set", "frozenset"):
        return {"set": set, "frozenset": frozenset}[kind]([("v", v), *filler])
    pairs = [("v", v), *((i, i) for i in filler)]
    if kind == "defaultdict":
        return defaultdict(None, pairs)
    return {"dict": dict, "Counter": Counter, "OrderedDict": OrderedDict}[kind](dict(pairs))


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(CONTAINERS), v=nested, data=st.data())
def test_digest_is_equal_for_equal_values_and_differs_for_any_change(kind: str, v: Any, data: st.DataObject) -> None:
    if kind in ("set", "frozenset") and not _hashable(v):
        v = repr(v)
    d = encode_output(big(kind, v))
    assert d[0] == "digest"
    assert encode_output(big(kind, rebuilt(v))) == d
    changed = [w for w in variants(v) if kind not in ("set", "frozenset") or _hashable(w)]
    if changed:
        w = data.draw(st.sampled_from(changed))
        assert encode_output(big(kind, w)) != d, (kind, v, w)


def test_counts_change_the_digest() -> None:
    words = [f"w{i}" for i in range(DIGEST_OVER + 8)]
    a = Counter(words)
    b = Counter(words)
    b["w0"] += 1
    for t in (Counter, lambda c: defaultdict(None, c)):
        assert encode_output(t(a))[0] == "digest"
        assert encode_output(t(a)) != encode_output(t(b))


def test_values_and_payload_import_under_isolated_mode() -> None:
    """The sandbox ships these two modules into ``python -I -S``; they must need nothing else."""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules)\n"
        "from smallcode.tasks import values\n"
        "from smallcode.eval.sandbox import payload\n"
        "assert callable(payload.serve) and values.same(values.encode(1), values.encode(1))\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'smallcode'}))\n"
    )
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, src], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ---- the wire form ------------------------------------------------------------------------------------

wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.complex_numbers(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.integers() | st.text(max_size=8), inner, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=8), max_size=4)
        | st.sets(st.integers(), max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(wire_values)
def test_encode_round_trips_type_exactly(v: object) -> None:
    back = decode(json.loads(json.dumps(encode(v))))
    assert back == v
    assert same(encode(v), encode(back), 0.0)  # sets have no canonical order: compare as the harness does


def test_encode_keeps_what_eq_forgets() -> None:
    assert encode(1) != encode(1.0) != encode(True)
    assert encode([1]) != encode((1,))
    assert encode({1}) != encode(frozenset({1}))
    assert encode(10**5000) == encode(10**5000)  # beyond int->str digit limits
    assert decode(encode(float("nan"))) != 0  # noqa: PLR0124 - nan round-trips as a float

    class Sub(int):
        pass

    assert encode(Sub(3))[0] == "other"


def test_large_outputs_come_back_as_exact_digests() -> None:
    big = list(range(10_000))
    assert encode_output([1, 2]) == encode([1, 2])  # small values are encoded in full
    d = encode_output(big)
    assert d[0] == "digest" and d == encode_output(list(range(10_000)))
    assert d != encode_output(tuple(big))
    assert encode_output(big + [1]) != encode_output(big + [1.0]) != encode_output(big + [True])
    mixed = [1, 2.5] + [float(i) for i in range(10_000)]
    assert encode_output(mixed) == encode_output(list(mixed)) != encode_output([1.0, 2.5] + mixed[2:])
    # order-free containers hash independently of iteration order
    words = [f"w{i}" for i in range(5000)]
    assert encode_output(set(words)) == encode_output(set(reversed(words)))
    assert encode_output(dict.fromkeys(words, 0)) == encode_output(dict.fromkeys(reversed(words), 0))
    assert encode_output(Counter(words)) == encode_output(Counter(list(reversed(words))))
    assert encode_output(Counter(words)) != encode_output(dict(Counter(words)))
    assert encode_output(OrderedDict.fromkeys(words)) != encode_output(OrderedDict.fromkeys(reversed(words)))
    assert encode_output("x" * 500_000)[0] == "digest" != encode_output("x" * 100)[0]
    assert encode_output([10**5000] * 5000)[0] == "digest"  # beyond repr's digit limit

    class Sub(int):
        pass

    assert encode_output([Sub(1)] * 5000)[0] == "other"
