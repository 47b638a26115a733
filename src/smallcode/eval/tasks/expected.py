"""Expected outputs for ``strict`` checking: the reference solution run on each task's inputs.

For every task, one fresh interpreter (in a temporary directory) executes ``preamble + prompt +
reference`` and calls ``entry_point`` on a deep copy of each input, with a per-call time limit; the
outcomes (the return value, or the exception type when the reference raises) travel back through the
type-exact :mod:`codec` and are cached on disk under a key hashing everything that determines them
(program, inputs, codec version, Python minor version), so they are computed once per machine.

This module runs only reference code that ships with a dataset or that the miner extracted; it is not
a sandbox for model output and never sees a candidate. Comparing candidate outputs with these values is
the verdict code's job (``smallcode.eval.check``), not this module's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallcode.eval.tasks import codec
from smallcode.eval.tasks._run import run_python
from smallcode.tasks.base import Task


class ExpectedError(RuntimeError):
    """The reference solution could not be run on a task's inputs; the message names the task."""


@dataclass(frozen=True)
class Outcome:
    """What the reference did on one input."""

    ok: bool
    """True when it returned (``value`` holds the result); False when it raised."""
    value: Any = None
    error: str = ""
    """``"<ExceptionType>: <message>"`` when it raised; ``"timeout: ..."`` / ``"unencodable: ..."`` when
    the input is unusable for strict checking."""


_CHILD = r"""
import copy, json, resource, signal, sys
# A reference that would build gigabytes for one input must fail fast, not swap the machine.
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
sys.path.insert(0, {codec_dir!r})
import codec
del sys.path[0]
job = json.load(open(sys.argv[1]))
ns = {{"__name__": "__reference__"}}
exec(compile(job["source"], "<reference>", "exec"), ns)
fn = ns[job["entry_point"]]

class _Slow(BaseException):
    pass

def _alarm(signum, frame):
    raise _Slow()

signal.signal(signal.SIGALRM, _alarm)
out = []
for enc in job["inputs"]:
    args = codec.decode(enc)
    try:
        signal.setitimer(signal.ITIMER_REAL, job["per_call_s"])
        try:
            value = fn(*copy.deepcopy(args))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        enc_value = codec.encode(value)
        if len(json.dumps(enc_value)) > job["max_output_bytes"]:
            out.append(["unencodable", "output larger than %d bytes" % job["max_output_bytes"]])
        else:
            out.append(["ok", enc_value])
    except _Slow:
        out.append(["timeout", "reference ran past %ss" % job["per_call_s"]])
    except codec.CodecError as e:
        out.append(["unencodable", str(e)])
    except MemoryError:
        out.append(["unencodable", "reference ran out of memory"])
    except Exception as e:
        out.append(["raise", "%s: %s" % (type(e).__name__, str(e)[:200])])
with open(sys.argv[2] + ".tmp", "w") as f:
    json.dump(out, f)
import os
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
"""


# A reference that returns tens of megabytes for one input (MBPP+ Mbpp/255: 1.6M combinations) makes an
# expected value nobody can compare cheaply; such inputs are marked unusable instead.
_MAX_OUTPUT_BYTES = 32 << 20


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "smallcode" / "expected"


def reference_source(task: Task) -> str:
    return (task.preamble + "\n" if task.preamble else "") + task.prompt + task.reference


def cache_key(task: Task) -> str:
    blob = json.dumps(
        {
            "codec": codec.CODEC_VERSION,
            "max_output_bytes": _MAX_OUTPUT_BYTES,
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "source": reference_source(task),
            "entry_point": task.entry_point,
            "inputs": codec.encode(list(task.inputs)),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _parse(task: Task, raw: list) -> list[Outcome]:
    outcomes = []
    for i, (kind, payload) in enumerate(raw):
        if kind == "ok":
            outcomes.append(Outcome(True, codec.decode(payload)))
        elif kind in ("raise", "timeout", "unencodable"):
            # "raise": the reference raised; the other two mean strict mode cannot use this input.
            outcomes.append(Outcome(False, error=payload if kind == "raise" else f"{kind}: {payload}"))
        else:
            raise ExpectedError(f"{task.suite} {task.task_id}: input {i}: unknown outcome {kind!r}")
    return outcomes


def _compute(task: Task, per_call_s: float, timeout_s: float) -> list:
    codec_dir = str(Path(codec.__file__).parent)
    with tempfile.TemporaryDirectory(prefix="smallcode-expected-") as tmp:
        job = os.path.join(tmp, "job.json")
        result = os.path.join(tmp, "out.json")
        with open(job, "w") as f:
            json.dump(
                {
                    "source": reference_source(task),
                    "entry_point": task.entry_point,
                    "inputs": [codec.encode(a) for a in task.inputs],
                    "per_call_s": per_call_s,
                    "max_output_bytes": _MAX_OUTPUT_BYTES,
                },
                f,
            )
        run = run_python(_CHILD.format(codec_dir=codec_dir), timeout=timeout_s, args=(job, result))
        if not run.ok or not os.path.exists(result):
            why = "timed out" if run.returncode is None else f"exit {run.returncode}"
            raise ExpectedError(f"{task.suite} {task.task_id}: reference run failed ({why}): {run.stderr[-800:]}")
        with open(result) as f:
            return json.load(f)


def expected_outputs(
    tasks: Sequence[Task],
    cache_dir: Path | None = None,
    workers: int | None = None,
    per_call_s: float = 20.0,
    timeout_s: float = 600.0,
    progress: bool = True,
) -> dict[str, list[Outcome]]:
    """For each task with strict inputs, the reference's outcome on each input, by ``task_id``.

    Cached under ``cache_dir`` (default ``~/.cache/smallcode/expected``); a cache hit costs one hash.
    An input on which the reference raises gives ``Outcome(ok=False, error="Type: msg")``; one where it
    runs past ``per_call_s`` or returns a value the codec cannot carry gives ``error`` starting with
    ``"timeout:"`` / ``"unencodable:"`` (strict mode cannot use it). Raises :class:`ExpectedError` when
    the reference program itself cannot run. Tasks must come from one suite (ids are the keys).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    todo = [t for t in tasks if t.inputs]
    results: dict[str, list[Outcome]] = {}

    def one(task: Task) -> tuple[str, list[Outcome]]:
        path = cache / f"{cache_key(task)}.json"
        if path.exists():
            try:
                return task.task_id, _parse(task, json.loads(path.read_text()))
            except (json.JSONDecodeError, ValueError, TypeError):
                path.unlink(missing_ok=True)  # a torn or foreign file: recompute
        raw = _compute(task, per_call_s, timeout_s)
        outcomes = _parse(task, raw)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(raw, f)
        os.replace(tmp, path)
        return task.task_id, outcomes

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for tid, outcomes in tqdm(
            pool.map(one, todo), total=len(todo), desc="expected outputs", disable=not progress, unit="task"
        ):
            results[tid] = outcomes
    return results
