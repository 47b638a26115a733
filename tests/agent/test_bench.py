"""The repair benchmark: suites built from the packaged tasks, the oracle resolves every task, doing
nothing or gutting the tests resolves none, and a run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_sandbox_helpers import require_bwrap  # tests/eval, put on the path by conftest

from smallcode.agent import AgentConfig, ScriptedModel
from smallcode.eval.agent_bench import REPAIR_SUITES, load_repair_suite, oracle_replies, run_repair, verdict
from smallcode.eval.sandbox import Limits, Sandbox


@pytest.fixture(scope="module")
def tasks() -> list:
    require_bwrap()
    with Sandbox("auto", Limits(timeout_s=5.0)) as sb:
        return [t for s in REPAIR_SUITES for t in load_repair_suite(s, limit=2, sandbox=sb)]


def test_each_task_has_a_bug_its_tests_catch(tasks: list) -> None:
    assert {t.suite for t in tasks} == set(REPAIR_SUITES) and len(tasks) == 6
    with Sandbox("auto", Limits(timeout_s=10.0)) as sb:
        for t in tasks:
            assert t.buggy != t.fixed
            assert verdict(t, t.fixed, sb) and not verdict(t, t.buggy, sb)


def test_the_oracle_resolves_every_task_and_a_run_resumes(tasks: list, tmp_path: Path) -> None:
    calls: list[str] = []

    def oracle(rt):  # noqa: ANN001, ANN202
        calls.append(rt.task_id)
        return ScriptedModel(oracle_replies(rt))

    summary = run_repair(tasks[:4], oracle, tmp_path, AgentConfig(max_steps=3), model_name="oracle")
    assert all(s["resolved_pct"] == 100.0 for s in summary["suites"].values())
    summary = run_repair(tasks, oracle, tmp_path, AgentConfig(max_steps=3), model_name="oracle")
    assert len(calls) == len(tasks)  # the first four were not run again
    assert sum(s["tasks"] for s in summary["suites"].values()) == len(tasks)
    assert all(s["resolved_pct"] == 100.0 for s in summary["suites"].values())
    assert "| repair-repo | 2 | 2 (100.0%)" in (tmp_path / "report.md").read_text()
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["exit_reason"] for r in rows} == {"tests_passed"}
    with pytest.raises(ValueError, match="other settings"):
        run_repair(tasks, oracle, tmp_path, AgentConfig(max_steps=4))


def test_doing_nothing_or_gutting_the_tests_resolves_nothing(tasks: list, tmp_path: Path) -> None:
    some = [tasks[0], tasks[2]]
    summary = run_repair(some, lambda rt: ScriptedModel(["```submit\n```"]), tmp_path / "nothing", AgentConfig())
    assert all(s["resolved"] == 0 for s in summary["suites"].values())

    def gut(rt):  # noqa: ANN001, ANN202
        return ScriptedModel([f"```bash\necho 'print(1)' > {rt.test_file}\n```", "```test\n```"])

    summary = run_repair(some, gut, tmp_path / "gut", AgentConfig(max_steps=2))
    assert all(s["resolved"] == 0 and s["tests_changed"] == 1 for s in summary["suites"].values())
    rows = [json.loads(line) for line in (tmp_path / "gut" / "results.jsonl").read_text().splitlines()]
    assert all(r["tests_passed"] and not r["resolved"] for r in rows)


def test_unknown_suite() -> None:
    with pytest.raises(ValueError, match="unknown repair suite"):
        load_repair_suite("repair-nope")


class ThirdTimeRight:
    """A backend whose greedy answer and first two samples are wrong and whose third is the reference."""

    name = "third-time-right"

    def __init__(self, tasks: list) -> None:
        self.ref = {t.prompt: t.reference for t in tasks}

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int,
                 stop: list[str]) -> list[list[str]]:
        wrong = "def nothing():\n    return None\n"
        return [[self.ref[p] if i == 2 else wrong for i in range(n)] for p in prompts]


def test_execution_guided_keeps_the_first_sample_that_passes() -> None:
    from smallcode.eval.agent_bench import execution_guided
    from smallcode.tasks import load_suite

    require_bwrap()
    mbpp = load_suite("mbpp")[:3]
    rows = execution_guided(mbpp, ThirdTimeRight(mbpp), k=4)
    assert [(r["plain"], r["guided"], r["candidates_run"]) for r in rows] == [(False, True, 3)] * 3
    rows = execution_guided(mbpp, ThirdTimeRight(mbpp), k=2)  # the right one is never sampled
    assert not any(r["guided"] for r in rows)
