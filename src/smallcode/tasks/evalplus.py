"""HumanEval+ and MBPP+ (EvalPlus): the base tasks plus EvalPlus's extra test inputs.

Reads the package's copies of the releases, or the ones under ``data_dir`` when given
(``humanevalplus/HumanEvalPlus-v0.1.0.jsonl``, ``mbppplus/MbppPlus-prerelease-767efcc.jsonl``), each
checked against its pinned sha256. Task ids are normalised to the current upstream form
(``HumanEval/0``; MBPP+ already uses ``Mbpp/2``) and the original id is kept in ``meta``. ``inputs``
are the base inputs followed by the plus inputs (``meta["n_base"]`` says where the plus ones start),
less a few listed in ``UNUSABLE_INPUTS`` whose reference result is too large to be an expected value;
four MBPP+ tasks whose reference returns objects rather than data (``COMPAT_ONLY``) carry no inputs.
JSON has no tuples, sets or complex numbers, so MBPP+ inputs are rebuilt into the types the reference
solution expects (see :func:`mbpp_plus_args`).

Expected outputs are not stored in the releases and not computed here: the evaluation runs the
reference solution on the inputs in the sandbox and caches the result. ``compat`` checking uses the
original dataset checks (HumanEval's ``check``, MBPP's asserts); only ``strict`` sees the plus inputs.
This module does not implement the v0.1.10 / v0.2.0 fixes (see ``data/NOTICE`` for the versions); expect small
differences from numbers published on those versions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from smallcode.tasks.base import Task
from smallcode.tasks.pinned import HUMANEVAL_PLUS, MBPP_PLUS, DataFileError, parse_jsonl, pinned_bytes

_HE_FIELDS = (
    "task_id",
    "prompt",
    "entry_point",
    "canonical_solution",
    "test",
    "contract",
    "base_input",
    "atol",
    "plus_input",
)
_MBPP_FIELDS = (
    "task_id",
    "prompt",
    "entry_point",
    "canonical_solution",
    "base_input",
    "atol",
    "plus_input",
    "contract",
    "assertion",
)


def read_humanevalplus(data_dir: Path | None = None) -> list[dict]:
    """Raw HumanEval+ v0.1.0 records with ids normalised to ``HumanEval/N`` (original in ``orig_task_id``)."""
    path, data = pinned_bytes(HUMANEVAL_PLUS, data_dir)
    records = parse_jsonl(path, data, _HE_FIELDS, HUMANEVAL_PLUS.records)
    for lineno, rec in enumerate(records, start=1):
        tid = rec["task_id"]
        if not (isinstance(tid, str) and tid.startswith("HumanEval_") and tid[10:].isdigit()):
            raise DataFileError(f"{path}:{lineno}: unexpected task_id {tid!r} (v0.1.0 uses HumanEval_N)")
        rec["orig_task_id"] = tid
        rec["task_id"] = "HumanEval/" + tid[10:]
    return records


def read_mbppplus(data_dir: Path | None = None) -> list[dict]:
    """Raw MBPP+ records (399 tasks of the pre-release snapshot)."""
    path, data = pinned_bytes(MBPP_PLUS, data_dir)
    return parse_jsonl(path, data, _MBPP_FIELDS, MBPP_PLUS.records)


def _args(path_hint: str, inputs: Any) -> list[list[Any]]:
    if inputs == {}:  # Mbpp/793 stores its (absent) plus inputs as an empty object
        return []
    if not isinstance(inputs, list) or not all(isinstance(a, list) for a in inputs):
        raise DataFileError(f"{path_hint}: inputs must be a list of argument lists")
    return inputs


# Inputs whose reference result cannot serve as an expected value: it runs out of memory (Mbpp/255:
# combinations_with_replacement of 77) or is larger than 32 MiB serialised (HumanEval/160). Indices
# into base + plus inputs; found by benchmarks/reference_solutions.py.
UNUSABLE_INPUTS: dict[str, frozenset[int]] = {
    "Mbpp/255": frozenset({88, 89, 93, 103}),
    "HumanEval/160": frozenset({306}),
}
# MBPP+ tasks whose reference returns objects rather than data (collections.Counter, re.Match): a
# type-exact comparison of serialised values says nothing about them, so they keep compat only.
COMPAT_ONLY: frozenset[str] = frozenset({"Mbpp/88", "Mbpp/737", "Mbpp/787", "Mbpp/794"})


def _usable(task_id: str, inputs: list) -> tuple[list, list[int]]:
    if task_id in COMPAT_ONLY:
        return [], list(range(len(inputs)))
    drop = UNUSABLE_INPUTS.get(task_id, frozenset())
    return [a for i, a in enumerate(inputs) if i not in drop], sorted(drop)


def load_humanevalplus(data_dir: Path | None = None) -> list[Task]:
    """HumanEval+ v0.1.0 as tasks: base then plus inputs for strict mode, HumanEval's check for compat."""
    tasks = []
    for rec in read_humanevalplus(data_dir):
        base = _args(f"{rec['orig_task_id']} base_input", rec["base_input"])
        plus = _args(f"{rec['orig_task_id']} plus_input", rec["plus_input"])
        inputs, dropped = _usable(rec["task_id"], base + plus)
        tasks.append(
            Task(
                task_id=rec["task_id"],
                suite="humaneval+",
                prompt=rec["prompt"],
                entry_point=rec["entry_point"],
                reference=rec["canonical_solution"],
                test=rec["test"],
                inputs=tuple(tuple(a) for a in inputs),
                atol=float(rec["atol"]),
                meta={
                    "source": "humanevalplus v0.1.0",
                    "orig_task_id": rec["orig_task_id"],
                    "n_base": len(base),
                    "n_release_inputs": len(base) + len(plus),
                    "dropped_inputs": dropped,
                    "contract": rec["contract"],
                },
            )
        )
    return tasks


# --- MBPP+ argument types -------------------------------------------------------------------------
# The release stores arguments as JSON, so tuples arrive as lists, complex numbers as strings, etc.
# Which tasks need which rebuild is a property of the data (the reference solutions and their
# contracts say what they accept); EvalPlus's loader applies the same rebuilds. Each rule maps one
# argument list to the argument tuple the function is called with.


def _tup(x: Any) -> tuple:
    return tuple(x)


def _deep_tup(x: Any) -> Any:
    return tuple(_deep_tup(v) for v in x) if isinstance(x, list) else x


def _each_arg(f: Callable[[Any], Any]) -> Callable[[list], tuple]:
    return lambda args: tuple(f(a) for a in args)


def _arg(i: int, f: Callable[[Any], Any]) -> Callable[[list], tuple]:
    return lambda args: tuple(f(a) if j == i else a for j, a in enumerate(args))


def _list_of_tuples(x: list) -> list:
    return [tuple(v) for v in x]


def _sets_or_empty_dicts(x: list) -> list:
    # Mbpp/115 ("are all dictionaries empty"): JSON wrote sets and empty dicts as lists.
    return [(set(v) if v else {}) if isinstance(v, list) else v for v in x]


_RULES: list[tuple[set[int], Callable[[list], tuple]]] = [
    (
        {
            2,
            116,
            132,
            143,
            222,
            261,
            273,
            394,
            399,
            421,
            424,
            429,
            470,
            560,
            579,
            596,
            616,
            630,
            726,
            740,
            744,
            809,
        },
        _each_arg(_tup),
    ),
    ({63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}, _each_arg(_list_of_tuples)),
    ({75, 413, 444, 753}, _arg(0, _list_of_tuples)),
    ({106, 750}, _arg(1, _tup)),
    ({250, 307, 405, 446, 617, 720, 763, 808}, _arg(0, _tup)),
    ({259, 401, 445}, _each_arg(lambda x: tuple(tuple(v) for v in x))),
    ({278}, _arg(0, lambda x: tuple(tuple(v) if isinstance(v, list) else v for v in x))),
    ({722}, _arg(0, lambda d: {k: tuple(v) for k, v in d.items()})),
    ({580, 615, 791}, _each_arg(_deep_tup)),
    ({115}, _arg(0, _sets_or_empty_dicts)),
    ({124}, lambda args: (float(args[0]), complex(args[1]))),
    ({252}, lambda args: (complex(args[0]),)),
]
_RULE_OF: dict[int, Callable[[list], tuple]] = {n: rule for ids, rule in _RULES for n in ids}


def mbpp_plus_args(task_number: int, args: list) -> tuple:
    """Rebuild one MBPP+ argument list into the argument tuple for task ``Mbpp/<task_number>``."""
    rule = _RULE_OF.get(task_number)
    return rule(args) if rule else tuple(args)


def load_mbppplus(data_dir: Path | None = None) -> list[Task]:
    """MBPP+ as tasks: base then plus inputs (rebuilt into their types) for strict, MBPP's asserts for compat."""
    tasks = []
    for rec in read_mbppplus(data_dir):
        tid = rec["task_id"]
        try:
            number = int(tid.split("/")[1])
        except (IndexError, ValueError) as e:
            raise DataFileError(f"{MBPP_PLUS.relpath}: unexpected task_id {tid!r}") from e
        base = _args(f"{tid} base_input", rec["base_input"])
        plus = _args(f"{tid} plus_input", rec["plus_input"])
        usable, dropped = _usable(tid, base + plus)
        try:
            inputs = tuple(mbpp_plus_args(number, a) for a in usable)
        except (TypeError, ValueError, AttributeError) as e:
            raise DataFileError(f"{MBPP_PLUS.relpath}: {tid}: cannot rebuild inputs ({e})") from e
        prompt = rec["prompt"] if rec["prompt"].endswith("\n") else rec["prompt"] + "\n"
        test = rec["assertion"]
        if "math." in test and "import math" not in test:
            # The float asserts use math.isclose without importing math (EvalPlus's harness imports it).
            test = "import math\n" + test
        tasks.append(
            Task(
                task_id=tid,
                suite="mbpp+",
                prompt=prompt,
                entry_point=rec["entry_point"],
                reference=rec["canonical_solution"],
                test=test,
                inputs=inputs,
                atol=float(rec["atol"]),
                meta={
                    "source": "mbppplus prerelease 767efcc",
                    "n_base": len(base),
                    "n_release_inputs": len(base) + len(plus),
                    "dropped_inputs": dropped,
                    "contract": rec["contract"],
                },
            )
        )
    return tasks
