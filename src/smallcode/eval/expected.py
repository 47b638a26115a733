"""Expected outputs for strict checking: the task's reference solution run on its inputs, in the sandbox.

The reference runs like a candidate (``strict_program`` in ``call`` mode, fresh decoded arguments
per input, so a mutating reference cannot leak into the next input) with more room: a multiple of the
candidate's time and memory limits. Its outputs are wire encodings (``values.py``); an input on which
it raises gives ``["raise", type, message]``. :class:`ExpectedCache` keeps them, and the reference's
time, per task in one JSON file (mode 0600) keyed by everything that decides them, so they are
computed once per run directory. :func:`reference_outcomes` runs many tasks on parallel sandboxes and
reads the results as :class:`Outcome` values, for the tools that audit the suites.

Deliberately not here: comparing a candidate's outputs with these (``check.py``), scheduling
(``runner.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallcode.eval.check import encoded_inputs, strict_program, strict_timeout
from smallcode.eval.sandbox import Isolation, Limits, Sandbox
from smallcode.fileio import atomic_write_bytes
from smallcode.tasks import values
from smallcode.tasks.base import Task

REFERENCE_TIMEOUT_FACTOR = 10.0
"""The reference (trusted to finish) gets this many times the candidate's configured limit."""
REFERENCE_MEMORY_FACTOR = 4
"""The reference may use this many times the candidate's address-space limit."""


class ReferenceFailure(RuntimeError):
    """The task's own reference solution does not run, so strict mode cannot check the task."""


def reference_run(
    task: Task, sandbox: Sandbox, timeout_s: float = 3.0, per_input_s: float = 0.05
) -> tuple[list[Any], float]:
    """Run the reference solution on the task's inputs (in the sandbox): its outputs and seconds."""
    r = sandbox.run(
        strict_program(task, task.reference),
        mode="call",
        entry_point=task.entry_point,
        inputs=encoded_inputs(task),
        timeout_s=REFERENCE_TIMEOUT_FACTOR * strict_timeout(task, timeout_s, per_input_s),
        memory_mb=REFERENCE_MEMORY_FACTOR * sandbox.limits.memory_mb,
    )
    if r.status != "ok" or r.outputs is None:
        raise ReferenceFailure(f"{task.task_id}: the reference solution failed ({r.status}: {r.error})")
    return r.outputs, r.duration_s


def expected_outputs(task: Task, sandbox: Sandbox, timeout_s: float = 3.0, per_input_s: float = 0.05) -> list[Any]:
    """The reference solution's outputs on the task's inputs."""
    return reference_run(task, sandbox, timeout_s, per_input_s)[0]


def task_fingerprint(task: Task) -> str:
    """Hash of everything that decides a task's expected outputs (and of the encoding's version)."""
    h = hashlib.sha256()
    for part in (
        f"values-v{values.VERSION}",
        task.task_id,
        task.preamble,
        task.prompt,
        task.reference,
        task.entry_point,
        json.dumps(encoded_inputs(task)),
    ):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class ExpectedCache:
    """Expected outputs per task, computed once and kept in a JSON file readable only by its owner.

    The file lives in the run directory, which the bwrap sandbox cannot see; its 0600 mode keeps
    the unprivileged sandbox uid out in the other modes too. ``path=None`` keeps it in memory.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path is not None and path.exists():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self.data = {}  # a cache is only a cache: recompute

    def get(self, task: Task, sandbox: Sandbox, timeout_s: float = 3.0, per_input_s: float = 0.05) -> list[Any]:
        """The reference's outputs for ``task`` (computed on first use); raises ReferenceFailure."""
        key = task_fingerprint(task)
        hit = self.data.get(key)
        if isinstance(hit, str):
            raise ReferenceFailure(hit)
        if isinstance(hit, dict):
            return hit["outputs"]
        try:
            outputs, seconds = reference_run(task, sandbox, timeout_s, per_input_s)
        except ReferenceFailure as e:
            self.data[key] = str(e)
            raise
        self.data[key] = {"outputs": outputs, "seconds": seconds}
        return outputs

    def seconds(self, task: Task) -> float:
        """How long the reference took on all inputs (0 when unknown)."""
        hit = self.data.get(task_fingerprint(task))
        return float(hit.get("seconds", 0.0)) if isinstance(hit, dict) else 0.0

    def save(self) -> None:
        if self.path is not None:
            atomic_write_bytes(self.path, json.dumps(self.data).encode(), mode=0o600)


@dataclass(frozen=True)
class Outcome:
    """What the reference did on one input, read from its wire encoding."""

    ok: bool
    """True when it returned a value strict mode can compare; False when it raised, or returned
    something outside the supported types (``error`` says which)."""
    encoded: Any
    """The wire encoding (a digest for large values)."""
    value: Any = None
    """The decoded value, when ``ok`` and not a digest."""
    error: str = ""
    """``"<ExceptionType>: <message>"`` when it raised; ``"unencodable: <type>"`` for a value of an
    unsupported type."""

    @classmethod
    def of(cls, e: Any) -> Outcome:
        if e[0] == "raise":
            return cls(False, e, error=f"{e[1]}: {e[2]}")
        if e[0] == "other":
            return cls(False, e, error=f"unencodable: {e[1]}")
        return cls(True, e, None if e[0] == "digest" else values.decode(e))

    def equals(self, value: Any, atol: float = 0.0) -> bool:
        """Whether the reference returned ``value`` (type-exact, as strict mode compares)."""
        return self.ok and values.same(self.encoded, values.encode_output(value), atol)


def reference_outcomes(
    tasks: Sequence[Task],
    cache: Path | None = None,
    workers: int | None = None,
    isolation: Isolation = "auto",
    timeout_s: float = 3.0,
    failures: dict[str, str] | None = None,
    progress: bool = False,
) -> dict[str, list[Outcome]]:
    """The reference's :class:`Outcome` on each input of every task that has inputs, by task id,
    computed on ``workers`` parallel sandboxes through an :class:`ExpectedCache` at ``cache``.

    A task whose reference does not run raises :class:`ReferenceFailure`, or, when ``failures`` is
    given, is left out and its reason recorded there.
    """
    expected = ExpectedCache(cache)
    local = threading.local()
    boxes: list[Sandbox] = []
    lock = threading.Lock()

    def one(task: Task) -> tuple[str, list[Outcome] | str]:
        sb = getattr(local, "sb", None)
        if sb is None:
            sb = local.sb = Sandbox(isolation, Limits(timeout_s=timeout_s))
            with lock:
                boxes.append(sb)
        try:
            return task.task_id, [Outcome.of(e) for e in expected.get(task, sb, timeout_s)]
        except ReferenceFailure as e:
            if failures is None:
                raise
            return task.task_id, str(e)

    from tqdm import tqdm

    todo = [t for t in tasks if t.inputs]
    out: dict[str, list[Outcome]] = {}
    try:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for tid, res in tqdm(
                pool.map(one, todo), total=len(todo), desc="expected outputs", disable=not progress, unit="task"
            ):
                if isinstance(res, str):
                    failures[tid] = res  # type: ignore[index]
                else:
                    out[tid] = res
    finally:
        expected.save()
        for sb in boxes:
            sb.close()
    return out
