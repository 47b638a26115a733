"""The value module: digests of large values, and that it and the payload need only the standard library.

Defect: large Counter and defaultdict values were digested by their keys alone, so outputs differing
only in their counts passed strict mode. The property test below covers every container type, nested,
inside a container large enough that the digest path is taken.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from smallcode.eval.values import DIGEST_OVER
from smallcode.eval.values import encode_output as digest_or_encode

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
    d = digest_or_encode(big(kind, v))
    assert d[0] == "digest"
    assert digest_or_encode(big(kind, rebuilt(v))) == d
    changed = [w for w in variants(v) if kind not in ("set", "frozenset") or _hashable(w)]
    if changed:
        w = data.draw(st.sampled_from(changed))
        assert digest_or_encode(big(kind, w)) != d, (kind, v, w)


def test_counts_change_the_digest() -> None:
    words = [f"w{i}" for i in range(DIGEST_OVER + 8)]
    a = Counter(words)
    b = Counter(words)
    b["w0"] += 1
    for t in (Counter, lambda c: defaultdict(None, c)):
        assert digest_or_encode(t(a))[0] == "digest"
        assert digest_or_encode(t(a)) != digest_or_encode(t(b))


def test_values_and_payload_import_under_isolated_mode() -> None:
    """The sandbox ships these two modules into ``python -I -S``; they must need nothing else."""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules)\n"
        "from smallcode.eval import values\n"
        "from smallcode.eval.sandbox import payload\n"
        "assert callable(payload.serve) and values.same(values.encode(1), values.encode(1))\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'smallcode'}))\n"
    )
    r = subprocess.run([sys.executable, "-I", "-S", "-c", code, src], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
