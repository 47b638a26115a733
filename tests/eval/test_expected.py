"""Expected outputs from reference solutions: computed in the sandbox, type-exact, cached by content."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from smallcode.eval import expected as expected_mod
from smallcode.eval.expected import ReferenceFailure, reference_outcomes, task_fingerprint
from smallcode.tasks import load_suite
from smallcode.tasks.base import Task
from smallcode.tasks.mbpp import STRICT_UNRELIABLE_FULL, strict_inputs


def _task(reference: str, inputs: tuple, tid: str = "t/0") -> Task:
    return Task(task_id=tid, suite="unit", prompt="def f(x):\n", entry_point="f", reference=reference, inputs=inputs)


def test_outcomes_are_type_exact_and_errors_are_kept(tmp_path: Path) -> None:
    t = _task(
        "    if isinstance(x, int) and x < 0:\n        raise ValueError('neg')\n"
        "    x.append(1) if isinstance(x, list) else None\n"
        "    return (x, 1.0, {1}) if x != 0 else [x]\n",
        inputs=((3,), (0,), (-1,), ([5],), ([5],)),
    )
    out = reference_outcomes([t], cache=tmp_path / "expected.json", workers=1)["t/0"]
    assert out[0].ok and out[0].value == (3, 1.0, {1}) and type(out[0].value[1]) is float
    assert out[1].ok and out[1].value == [0] and type(out[1].value) is list
    assert not out[2].ok and out[2].error.startswith("ValueError: neg")
    # Each call gets its own copy of the input, so a mutating reference cannot leak into the next one.
    assert out[3].value[0] == [5, 1] and out[4].value[0] == [5, 1]
    assert out[0].equals((3, 1.0, {1})) and not out[0].equals((3, 1, {1})) and not out[2].equals(None)


def test_cache_hit_does_not_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _task("    return x * 2\n", inputs=((1,), (2,)))
    cache = tmp_path / "expected.json"
    first = reference_outcomes([t], cache=cache, workers=1)
    assert task_fingerprint(t) in json.loads(cache.read_text())

    def boom(*a: object, **k: object) -> list:
        raise AssertionError("recomputed despite a cache entry")

    monkeypatch.setattr(expected_mod, "reference_run", boom)
    assert reference_outcomes([t], cache=cache, workers=1) == first
    # A different reference is a different key.
    with pytest.raises(AssertionError, match="recomputed"):
        reference_outcomes([_task("    return x * 3\n", inputs=((1,),))], cache=cache, workers=1)


def test_unusable_outputs_are_marked_and_broken_programs_raise(tmp_path: Path) -> None:
    t = _task("    return object() if x else iter([])\n", inputs=((1,),))
    (o,) = reference_outcomes([t], workers=1)["t/0"]
    assert not o.ok and o.error.startswith("unencodable:")
    broken = _task("    return (\n", inputs=((1,),), tid="t/9")
    with pytest.raises(ReferenceFailure, match="t/9: the reference solution failed"):
        reference_outcomes([broken], workers=1)
    failures: dict[str, str] = {}
    assert reference_outcomes([broken, t], workers=1, failures=failures).keys() == {"t/0"}
    assert failures["t/9"].startswith("t/9: the reference solution failed")


def test_mbpp_references_match_their_assert_literals(shared_data: Path, tmp_path: Path) -> None:
    # Independent reference: the literals in MBPP's own asserts. Strict tasks must agree type-exactly
    # (the first 40 of the test split here; all of them in benchmarks/reference_solutions.py) ...
    tasks = load_suite("mbpp", shared_data)
    strict = [t for t in tasks if t.inputs][:40]
    outs = reference_outcomes(strict, cache=tmp_path / "expected.json", workers=2)
    for t in strict:
        for o, w in zip(outs[t.task_id], t.meta["assert_expected"], strict=True):
            assert o.equals(w), t.task_id
    # ... and the tasks demoted to compat really disagree with their asserts.
    demoted = [t for t in tasks if int(t.task_id.split("/")[1]) in STRICT_UNRELIABLE_FULL]
    assert len(demoted) == 14 and not any(t.inputs for t in demoted)
    probe = [replace(t, inputs=strict_inputs(t.test.splitlines(), t.entry_point)[0]) for t in demoted]
    outs = reference_outcomes(probe, cache=tmp_path / "expected.json", workers=2)
    for t in probe:
        lits = strict_inputs(t.test.splitlines(), t.entry_point)[1]
        assert not all(o.equals(w) for o, w in zip(outs[t.task_id], lits, strict=True)), t.task_id
