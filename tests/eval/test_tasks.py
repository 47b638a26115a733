"""Suite loaders: counts, ids, pinned hashes, input rebuilding, MBPP assert parsing, the plain value format."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smallcode.eval import values
from smallcode.eval.check import compat_program
from smallcode.eval.sandbox import run_python
from smallcode.eval.tasks import DataFileError, load_suite
from smallcode.eval.tasks.evalplus import load_mbppplus, mbpp_plus_args
from smallcode.eval.tasks.mbpp import _docstring, load_mbpp, strict_inputs
from smallcode.eval.tasks.pinned import MBPP_PLUS, parse_jsonl


def test_suite_sizes(shared_data: Path) -> None:
    assert len(load_suite("humaneval")) == 164
    assert len(load_suite("mbpp", shared_data)) == 500
    assert len(load_suite("mbpp:full", shared_data)) == 974
    assert len(load_suite("mbpp:sanitized", shared_data)) == 427
    plus = load_suite("humaneval+", shared_data)
    assert len(plus) == 164
    # PROVENANCE.md: 1577 base inputs, 125497 plus inputs; one unusable input is left out.
    assert sum(t.meta["n_base"] for t in plus) == 1577
    assert sum(t.meta["n_release_inputs"] for t in plus) == 1577 + 125497
    assert sum(len(t.inputs) + len(t.meta["dropped_inputs"]) for t in plus) == 1577 + 125497
    assert sum(len(t.inputs) for t in plus) == 1577 + 125497 - 1
    mbpp_plus = load_suite("mbpp+", shared_data)
    assert len(mbpp_plus) == 399
    assert sum(t.meta["n_base"] for t in mbpp_plus) == 1236
    assert sum(len(t.inputs) + len(t.meta["dropped_inputs"]) for t in mbpp_plus) == 1236 + 42082
    by_id = {t.task_id: t for t in mbpp_plus}
    assert len(by_id["Mbpp/255"].inputs) == 112 - 4
    assert all(not by_id[i].inputs for i in ("Mbpp/88", "Mbpp/737", "Mbpp/787", "Mbpp/794"))


def test_unknown_suite_and_missing_dir() -> None:
    with pytest.raises(ValueError, match="unknown suite"):
        load_suite("humaneval++")
    with pytest.raises(DataFileError, match="data_dir"):
        load_suite("mbpp+")
    with pytest.raises(ValueError, match="split"):
        load_suite("mbpp:dev", Path("."))


def test_humaneval_ids_line_up_with_humanevalplus(shared_data: Path) -> None:
    he = load_suite("humaneval", shared_data)
    plus = {t.task_id: t for t in load_suite("humaneval+", shared_data)}
    assert [t.task_id for t in he] == [f"HumanEval/{i}" for i in range(164)]
    for t in he:
        p = plus[t.task_id]
        assert p.meta["orig_task_id"] == t.task_id.replace("/", "_")
        assert t.inputs == p.inputs[: p.meta["n_base"]]
        assert t.entry_point == p.entry_point
    # Without the EvalPlus release, HumanEval has no strict inputs (compat only).
    assert all(not t.inputs for t in load_suite("humaneval"))
    # The three tasks with a float tolerance in the release.
    assert {t.task_id: t.atol for t in he if t.atol} == {
        "HumanEval/2": 1e-6,
        "HumanEval/4": 1e-6,
        "HumanEval/32": 1e-4,
    }


def test_humaneval_base_inputs_are_the_check_asserts(shared_data: Path) -> None:
    # Independent reference: the literal arguments in HumanEval/0's own check() are its base inputs.
    t = load_suite("humaneval", shared_data)[0]
    calls = [
        tuple(ast.literal_eval(a) for a in node.args)
        for node in ast.walk(ast.parse(t.test))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "candidate"
    ]
    assert calls == list(t.inputs)


def test_tampered_file_is_refused(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "mbppplus").mkdir()
    target = tmp_path / MBPP_PLUS.relpath
    shutil.copyfile(shared_data / MBPP_PLUS.relpath, target)
    with open(target, "ab") as f:
        f.write(b"\n")
    with pytest.raises(DataFileError, match=r"MbppPlus-prerelease-767efcc\.jsonl: sha256 mismatch"):
        load_mbppplus(tmp_path)
    target.unlink()
    with pytest.raises(DataFileError, match="not found"):
        load_mbppplus(tmp_path)


def test_malformed_lines_are_named() -> None:
    good = json.dumps({"task_id": "a", "x": 1}).encode()
    with pytest.raises(DataFileError, match=r"f\.jsonl:2: not a JSON record"):
        parse_jsonl(Path("f.jsonl"), good + b"\n{oops\n", ("task_id",), 2)
    with pytest.raises(DataFileError, match=r"f\.jsonl:2: record lacks field\(s\) task_id"):
        parse_jsonl(Path("f.jsonl"), good + b'\n{"x": 2}\n', ("task_id",), 2)
    with pytest.raises(DataFileError, match="1 records, expected 2"):
        parse_jsonl(Path("f.jsonl"), good, ("task_id",), 2)


def test_mbpp_plus_inputs_get_their_types(shared_data: Path) -> None:
    tasks = {t.task_id: t for t in load_mbppplus(shared_data)}
    assert tasks["Mbpp/2"].inputs[0] == ((3, 4, 5, 6), (5, 7, 4, 10))
    a, b = tasks["Mbpp/124"].inputs[0]
    assert type(a) is float and type(b) is complex
    assert all(type(x[0]) is tuple for x in tasks["Mbpp/580"].inputs)
    assert mbpp_plus_args(722, [{"a": [1, 2]}, 1, 2]) == ({"a": (1, 2)}, 1, 2)
    assert mbpp_plus_args(3, [[1, 2]]) == ([1, 2],)  # tasks without a rule keep JSON's lists


def test_mbpp_strict_input_extraction() -> None:
    inputs, want, why = strict_inputs(["assert f((1, 2), 'a') == [3]", "assert f(-1, {1: 2}) == None"], "f")
    assert (inputs, want, why) == ((((1, 2), "a"), (-1, {1: 2})), [[3], None], "")
    for bad in (
        "assert set(f(1)) == {1}",
        "assert f(x) == 1",
        "assert f(1)",
        "assert math.isclose(f(1), 2)",
        "assert f(a=1) == 2",
        "assert f(1) != 2",
    ):
        inputs, want, why = strict_inputs(["assert f(0) == 0", bad], "f")
        assert inputs == () and why, bad


def test_mbpp_prompt_quotes_any_text() -> None:
    nasty = "a \"\"\" b \\n c ''' \\"
    assert ast.literal_eval(_docstring(nasty).strip()) == f"\n{nasty}\n"


def test_mbpp_tasks_parse_and_skips_are_counted(shared_data: Path) -> None:
    tasks = load_mbpp(shared_data, "full")
    for t in tasks:
        ast.parse(t.prompt + t.reference)  # every program is valid Python
    strict = [t for t in tasks if t.inputs]
    # 7 tasks have asserts that are not `f(literals) == literal`; 26 references disagree in type.
    assert len(strict) == 974 - 7 - 26
    assert all(t.meta["strict_skip"] for t in tasks if not t.inputs)
    assert all(len(t.inputs) == len(t.meta["assert_expected"]) for t in strict)


def test_some_references_pass_their_own_tests(shared_data: Path) -> None:
    # The whole-suite run is benchmarks/reference_solutions.py; here a few per suite, in subprocesses.
    picks = load_suite("humaneval")[:3] + load_mbpp(shared_data, "test")[:3] + load_mbppplus(shared_data)[:3]
    for t in picks:
        assert run_python(compat_program(t, t.reference)).ok, t.task_id
    # MBPP+ float asserts use math.isclose; the loader supplies the import the release assumes.
    mbpp_plus = {t.task_id: t for t in load_mbppplus(shared_data)}
    assert run_python(compat_program(mbpp_plus["Mbpp/120"], mbpp_plus["Mbpp/120"].reference)).ok
    # Mbpp/164's reference fails its own asserts (one of the tasks MBPP+ v0.2.0 drops).
    assert not run_python(compat_program(mbpp_plus["Mbpp/164"], mbpp_plus["Mbpp/164"].reference)).ok
    broken = load_suite("humaneval")[0]
    assert not run_python(compat_program(broken, "    return None\n")).ok


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30)
    | st.floats()
    | st.text()
    | st.binary()
    | st.complex_numbers(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.integers() | st.text() | st.tuples(st.integers()), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(), max_size=3)
        | st.sets(st.integers(), max_size=3)
    ),
    max_leaves=12,
)


def _same(a: object, b: object) -> bool:
    """Equal and of identical types all the way down (nan equals nan here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=200, deadline=None)
@given(_values)
def test_codec_round_trip_is_type_exact(value: object) -> None:
    assert _same(values.loads(values.dumps(value)), value)


def test_codec_keeps_what_eq_forgets() -> None:
    assert values.dumps(1) != values.dumps(1.0) != values.dumps(True)
    assert values.dumps([1]) != values.dumps((1,))
    assert values.dumps({1}) != values.dumps(frozenset({1}))
    with pytest.raises(values.CodecError):
        values.to_plain(object())
    with pytest.raises(values.CodecError):
        values.from_plain({"$": "pickle", "v": ""})


def test_same_value_is_type_exact_but_order_free() -> None:
    assert values.same_value({"a": 1, "b": (2,)}, {"b": (2,), "a": 1})
    assert values.same_value({1, 2}, {2, 1}) and values.same_value(float("nan"), float("nan"))
    assert not values.same_value(240, 240.0) and not values.same_value([1], (1,))
    assert not values.same_value({"a": 1}, {"a": True})


def test_fetch_checks_the_pin_and_keeps_nothing_on_mismatch(tmp_path: Path) -> None:
    # Offline: a file:// URL stands in for the release server.
    import gzip
    import hashlib

    from smallcode.eval.tasks.fetch import fetch_file
    from smallcode.eval.tasks.pinned import PinnedFile

    payload = b'{"task_id": "x"}\n'
    (tmp_path / "release.jsonl.gz").write_bytes(gzip.compress(payload))
    url = (tmp_path / "release.jsonl.gz").as_uri()
    good = PinnedFile("sub/x.jsonl", hashlib.sha256(payload).hexdigest(), 1, url=url, gzip=True)
    got = fetch_file(good, tmp_path / "cache")
    assert got.read_bytes() == payload and got == tmp_path / "cache" / "sub" / "x.jsonl"
    bad = PinnedFile("sub/y.jsonl", "0" * 64, 1, url=url, gzip=True)
    with pytest.raises(DataFileError, match="is not the pinned"):
        fetch_file(bad, tmp_path / "cache")
    assert not (tmp_path / "cache" / "sub" / "y.jsonl").exists()
