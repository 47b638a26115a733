"""MBPP (Mostly Basic Python Problems): the full 974, the standard 500-task test split, the 427 sanitized.

Reads the package's copies of ``mbpp/mbpp.jsonl`` and ``mbpp/sanitized-mbpp.json``, or the ones under
``data_dir`` when given (pinned sha256 either way).
Splits follow the upstream README: tasks 11-510 are ``test``, 1-10 ``prompt`` (few-shot), 511-600
``validation``, 601-974 ``train``; ``full`` is all 974 and ``sanitized`` the hand-checked 427.

The prompt is a docstring holding the problem text and the dataset's asserts (as in the MBPP paper,
the asserts are how the model learns the function's name and signature); the program is
``prompt + completion`` where the completion is the whole function. ``compat`` runs the asserts
(after ``test_setup_code`` / ``test_imports``). ``strict`` inputs are read from the asserts with
``ast`` where every assert has the form ``assert f(<literals>) == <literal>``; a task with any other
assert (``math.isclose``, ``set(f(x)) == ...``, bare ``assert f(x)``, names from setup code) keeps
``compat`` only, with the reason in ``meta["strict_skip"]``; so does a task whose reference returns a
different type than its asserts spell out (``STRICT_UNRELIABLE_*``). The literal each assert expects is kept
in ``meta["assert_expected"]`` so a reference solution can be checked against its own tests; the
strict expected values themselves come from running the reference in the evaluation, never from here.
"""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path
from typing import Any, Literal

from smallcode.tasks.base import Task
from smallcode.tasks.pinned import MBPP_FULL, MBPP_SANITIZED, DataFileError, parse_jsonl, pinned_bytes

MbppSplit = Literal["full", "test", "sanitized", "prompt", "validation", "train"]
SPLITS: tuple[str, ...] = ("full", "test", "sanitized", "prompt", "validation", "train")
_RANGES = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}

# Tasks whose reference returns something other than what their own asserts spell out, type-exactly:
# an int where the assert writes a float or the reverse (``240`` vs ``240.0``, ``False`` vs ``0``), or a
# ``Counter``/``defaultdict`` where it writes a dict. ``==`` hides the difference, a type-exact strict
# check would not: it would fail solutions that the dataset's asserts accept. These keep compat only.
# Found by ``benchmarks/reference_solutions.py`` (assert_literal_mismatch); checked in the tests.
STRICT_UNRELIABLE_FULL = frozenset(
    {
        14,
        38,
        40,
        55,
        76,
        78,
        88,
        293,
        335,
        397,
        414,
        422,
        432,
        491,
        511,
        518,
        653,
        814,
        835,
        848,
        851,
        902,
        931,
        935,
        957,
        959,
    }
)
STRICT_UNRELIABLE_SANITIZED = frozenset({14, 80, 88, 293, 397, 422, 432})

_FULL_FIELDS = ("text", "code", "task_id", "test_setup_code", "test_list", "challenge_test_list")
_SAN_FIELDS = ("prompt", "code", "task_id", "test_imports", "test_list")


def read_mbpp_full(data_dir: Path | None = None) -> list[dict]:
    """The 974 raw MBPP records (the package's, or ``data_dir``'s)."""
    path, data = pinned_bytes(MBPP_FULL, data_dir)
    return parse_jsonl(path, data, _FULL_FIELDS, MBPP_FULL.records)


def read_mbpp_sanitized(data_dir: Path | None = None) -> list[dict]:
    """The 427 raw records of the sanitized split (the package's, or ``data_dir``'s)."""
    path, data = pinned_bytes(MBPP_SANITIZED, data_dir)
    try:
        records = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFileError(f"{path}: not a JSON array ({e})") from e
    if not isinstance(records, list) or len(records) != MBPP_SANITIZED.records:
        raise DataFileError(f"{path}: expected a JSON array of {MBPP_SANITIZED.records} records")
    for i, rec in enumerate(records):
        missing = [k for k in _SAN_FIELDS if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise DataFileError(f"{path}: record {i} lacks field(s) {', '.join(missing)}")
    return records


def _docstring(text: str) -> str:
    """A triple-quoted string literal holding ``text`` verbatim, valid Python whatever ``text`` contains."""
    body = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    literal = f'"""\n{body}\n"""\n'
    if ast.literal_eval(literal.strip()) != f"\n{text}\n":  # guard: the escaping above must be lossless
        raise DataFileError(f"cannot quote problem text {text[:40]!r}")
    return literal


def entry_point_of(code: str, tests: list[str], where: str) -> str:
    """The function the asserts call that the reference code defines (MBPP has no entry-point field)."""
    try:
        with warnings.catch_warnings():  # some references have '\d'-style escapes in plain strings
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            tree = ast.parse(code)
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    except SyntaxError as e:
        raise DataFileError(f"{where}: reference code does not parse ({e})") from e
    for line in tests:
        try:
            tree = ast.parse(line)
        except SyntaxError as e:
            raise DataFileError(f"{where}: test {line[:60]!r} does not parse ({e})") from e
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                return node.func.id
    raise DataFileError(f"{where}: no assert calls a function that the reference defines")


def strict_inputs(tests: list[str], entry_point: str) -> tuple[tuple[tuple[Any, ...], ...], list[Any], str]:
    """(inputs, literals, "") if every assert is ``f(<literals>) == <literal>``, else ((), [], why)."""
    inputs, expected = [], []
    for line in tests:
        try:
            stmt = ast.parse(line).body
        except SyntaxError:
            return (), [], f"unparsable assert {line[:60]!r}"
        if len(stmt) != 1 or not isinstance(stmt[0], ast.Assert):
            return (), [], f"not a single assert: {line[:60]!r}"
        test = stmt[0].test
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
            return (), [], f"not an == comparison: {line[:60]!r}"
        call, want = test.left, test.comparators[0]
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == entry_point):
            return (), [], f"left side is not a call of {entry_point}: {line[:60]!r}"
        if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
            return (), [], f"keyword or starred arguments: {line[:60]!r}"
        try:
            args = tuple(ast.literal_eval(a) for a in call.args)
            value = ast.literal_eval(want)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return (), [], f"arguments or expected value are not literals: {line[:60]!r}"
        inputs.append(args)
        expected.append(value)
    return tuple(inputs), expected, ""


def _task(tid: int, text: str, code: str, tests: list[str], setup: str, split: str, extra: dict) -> Task:
    where = f"Mbpp/{tid}"
    code = code.replace("\r\n", "\n")
    entry = entry_point_of(code, tests, where)
    inputs, expected, why = strict_inputs(tests, entry)
    unreliable = STRICT_UNRELIABLE_SANITIZED if split == "sanitized" else STRICT_UNRELIABLE_FULL
    if inputs and tid in unreliable:
        inputs, why = (), "the reference's outputs differ in type from the asserts' literals"
    test = "\n".join(([setup] if setup.strip() else []) + tests) + "\n"
    prompt = _docstring(text.strip() + "\n" + "\n".join(tests))
    meta = {"source": "mbpp google-research@30adf0ec", "split": split, "strict_skip": why, **extra}
    if expected:
        meta["assert_expected"] = expected
    return Task(
        task_id=where,
        suite="mbpp",
        prompt=prompt,
        entry_point=entry,
        reference=code + "\n",
        test=test,
        inputs=inputs,
        meta=meta,
    )


def load_mbpp(data_dir: Path | None = None, split: MbppSplit = "test") -> list[Task]:
    """MBPP tasks of one split; ``test`` (500 tasks) is the split published numbers use."""
    if split not in SPLITS:
        raise ValueError(f"unknown MBPP split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "sanitized":
        return [
            _task(
                r["task_id"],
                r["prompt"],
                r["code"],
                r["test_list"],
                "\n".join(r["test_imports"]),
                split,
                {"source_file": r["source_file"]},
            )
            for r in read_mbpp_sanitized(data_dir)
        ]
    lo, hi = _RANGES.get(split, (1, 974))
    return [
        _task(
            r["task_id"],
            r["text"],
            r["code"],
            r["test_list"],
            r["test_setup_code"],
            split,
            {"challenge_tests": r["challenge_test_list"]},
        )
        for r in read_mbpp_full(data_dir)
        if lo <= r["task_id"] <= hi
    ]
