"""Private helper: run one trusted Python program in a fresh interpreter, in a temporary directory.

Used only for programs we wrote or that the dataset ships (reference solutions, the miner's checks),
never for model output: it sets a wall-clock timeout and a scrubbed working directory but is not a
sandbox (no resource limits, no namespaces). Generated code goes through ``smallcode.eval.sandbox``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from smallcode.tasks.base import Task


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    """Exit status; None when the program ran past its timeout and was killed."""
    stderr: str
    """Last few KiB of stderr (the traceback, when there is one)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONHASHSEED"] = "0"  # set iteration order feeds into some outputs; make it repeatable
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_python(source: str, timeout: float = 30.0, args: tuple[str, ...] = ()) -> RunResult:
    """Run ``source`` with this interpreter in a fresh temp dir; kill it (and its group) on timeout."""
    with tempfile.TemporaryDirectory(prefix="smallcode-run-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        proc = subprocess.Popen(
            [sys.executable, "-s", path, *args],
            cwd=tmp,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            _, err = proc.communicate()
            return RunResult(None, err.decode("utf-8", "replace")[-4000:])
        return RunResult(proc.returncode, err.decode("utf-8", "replace")[-4000:])


def compat_program(task: Task, completion: str) -> str:
    """The program ``compat`` mode runs: preamble, prompt + completion, then the dataset's own checks."""
    program = task.preamble + ("\n" if task.preamble else "") + task.prompt + completion
    if "def check(" in task.test:
        return f"{program}\n\n{task.test}\n\ncheck({task.entry_point})\n"
    return f"{program}\n\n{task.test}\n"


def check_compat(task: Task, completion: str, timeout: float = 30.0) -> RunResult:
    """Run ``task``'s own tests on ``completion`` (trusted code only, see the module docstring)."""
    return run_python(compat_program(task, completion), timeout=timeout)
