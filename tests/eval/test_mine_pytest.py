"""Mining a repository's own pytest suite: the shipped fixture package ``tests/fixtures/minipkg``.

Its tests are run once in the sandbox; some of its test files are bad on purpose (one raises at import,
one imports a missing module, a test hangs, one forks without end, one needs the network) and must be
reported file by file without stopping the run. The problems expected are worked out by hand from the
fixture's source (see the comments in ``EXPECTED``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from test_sandbox_helpers import require_bwrap  # tests/eval, put on the path by conftest

from smallcode.eval.check import check_compat
from smallcode.eval.mining.repo import load_mined, mine_repo
from smallcode.eval.mining.repo_pytest import discover, trace_repository
from smallcode.eval.sandbox import Limits, Sandbox, checking_limits
from smallcode.tasks.repo import descriptive_name, sandbox_paths

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "minipkg"

# Functions a quick passing test calls, with a docstring or a two-word name, whose tests a `pass` or
# `return None` body fails. Left out: warn_if_negative (its test asserts nothing: `pass` passes), g and
# Stack.size (no docstring, one-word name), parity_name (its only test fails), untested_helper (no
# test calls it), Stack.__init__ (a dunder).
EXPECTED = {
    "repo/minipkg.mathops/clamp",
    "repo/minipkg.mathops/mean_of",  # no docstring, descriptive name
    "repo/minipkg.structures/Stack.peek",  # checked by a unittest.TestCase, run by pytest
    "repo/minipkg.structures/Stack.push",
    "repo/minipkg.textops/count_words",
    "repo/minipkg.textops/slugify",
    "repo/minipkg.textops/strip_prefix",  # no docstring, descriptive name
}


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mined") / "minipkg.jsonl"
    return mine_repo(FIXTURE, out, workers=1, progress=False, test_timeout_s=2.0)


def _header(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])["header"]


def test_mines_exactly_the_functions_the_tests_check(mined: Path) -> None:
    tasks = load_mined(mined)
    assert {t.task_id for t in tasks} == EXPECTED
    header = _header(mined)
    assert header["candidates"] == len(EXPECTED) + 1  # warn_if_negative was a candidate, then dropped
    assert header["by_check"] == {"pytest": len(EXPECTED)}
    clamp = next(t for t in tasks if t.entry_point == "clamp")
    assert clamp.meta["tests"] == [f"tests/test_mathops.py::test_clamp[{p}]" for p in ("-5-0", "5-5", "50-10")]
    assert clamp.prompt.endswith('    """``value`` limited to the closed range [low, high]."""\n')
    mean = next(t for t in tasks if t.entry_point == "mean_of")
    assert mean.prompt == "# minipkg.mathops: function\ndef mean_of(values):\n"
    assert mean.reference == "    total = sum(values)\n    return total / len(values)\n"


def test_bad_test_files_are_reported_per_file_and_do_not_stop_the_run(mined: Path) -> None:
    tests = _header(mined)["tests"]
    # 15 collected (4 textops, 7 mathops with the 3 parametrized clamps, structures, hang, fork,
    # network); the two modules that fail to collect add none. Passed: 4 + 5 + 1; failed: parity,
    # hang, fork; skipped: 1; the network test is counted apart.
    assert (tests["collected"], tests["passed"], tests["failed"], tests["skipped"], tests["network"]) == (
        15, 10, 3, 1, 1)
    assert tests["completed"] is True
    problems = tests["problems"]
    assert sorted(problems) == ["tests/test_broken_module.py", "tests/test_fork.py", "tests/test_hang.py",
                                "tests/test_import_error.py", "tests/test_mathops.py", "tests/test_network.py"]
    assert problems["tests/test_broken_module.py"] == [
        "collection error: RuntimeError: this test module is broken at import time"]
    assert problems["tests/test_import_error.py"] == [
        "collection error: ModuleNotFoundError: No module named 'minipkg.missing'"]
    assert "ran past 2.0s" in problems["tests/test_hang.py"][0]
    assert "test_forks_without_end: failed" in problems["tests/test_fork.py"][0]
    assert problems["tests/test_network.py"] == [
        "tests/test_network.py::test_needs_the_network: needs the network or a service (skipped)"]
    assert "test_parity_name_is_wrong" in problems["tests/test_mathops.py"][0]


def test_the_check_fails_a_wrong_body_and_passes_the_original(mined: Path) -> None:
    tasks = load_mined(mined)
    by_name = {t.entry_point: t for t in tasks}
    with Sandbox("auto", checking_limits(20.0, sandbox_paths(tasks)), ro_paths=sandbox_paths(tasks)) as sb:
        clamp = by_name["clamp"]
        assert check_compat(clamp, clamp.reference, sb, 20.0).passed
        # Right for two of the three parametrized cases: the third (50 -> 10) catches it.
        wrong = "    if value < low:\n        return low\n    return value\n"
        assert check_compat(clamp, wrong, sb, 20.0).status == "failed"
        # A completion that calls the real function recurses: the check swapped it for the candidate.
        cheat = "    import minipkg.mathops\n    return minipkg.mathops.clamp(value, low, high)\n"
        assert not check_compat(clamp, cheat, sb, 20.0).passed
        peek = by_name["peek"]
        assert check_compat(peek, "    return self.items[0]\n", sb, 20.0).status == "failed"


def test_eval_run_checks_them_with_the_repository_bound_in(mined: Path, tmp_path: Path) -> None:
    from smallcode.eval.runner import RunConfig, evaluate

    tasks = [t for t in load_mined(mined) if t.entry_point in ("clamp", "slugify")]
    right = {t.task_id: [t.reference] for t in tasks}
    cfg = RunConfig(suites=["repo"], mode="compat", timeout_s=20.0, security_scan=False)
    assert evaluate(tasks, right, cfg, tmp_path / "right", progress=False)["suites"]["repo"]["pass@1"] == 1.0
    wrong = {t.task_id: [t.reference.split("\n")[0].split("return")[0] + "return None\n"] for t in tasks}
    assert evaluate(tasks, wrong, cfg, tmp_path / "wrong", progress=False)["suites"]["repo"]["pass@1"] == 0.0


def test_a_run_past_its_whole_limit_keeps_what_it_recorded() -> None:
    # The per-test alarm is longer than the whole run: the hanging test is cut by the run's limit.
    report = trace_repository(discover(FIXTURE), timeout_s=6.0, test_timeout_s=60.0, progress=False)
    assert report.completed is False
    assert any("still running when the whole run passed its 6s limit" in p
               for p in report.problems["tests/test_hang.py"])
    # The files that failed to collect were reported before the run was cut.
    assert "tests/test_import_error.py" in report.problems


def test_the_repair_suite_built_from_it_runs_with_the_oracle_at_100(mined: Path, tmp_path: Path) -> None:
    from smallcode.agent.models import ScriptedModel
    from smallcode.eval.agent_bench import load_repair_suite, oracle_replies, run_repair

    tasks = load_repair_suite("repair-repo", limit=2, repo_file=mined)
    assert len(tasks) == 2
    for rt in tasks:
        assert rt.repo == str(FIXTURE) and rt.module.startswith("minipkg/") and rt.buggy != rt.fixed
        assert "python -B -m pytest" in rt.test_command
    summary = run_repair(tasks, lambda rt: ScriptedModel(oracle_replies(rt), name="oracle"), tmp_path / "run")
    s = summary["suites"]["repair-repo"]
    assert (s["tasks"], s["resolved"]) == (2, 2)
    assert s["exit_reasons"] == {"tests_passed": 2}  # the agent's own run of the repository's tests passed


def test_sandbox_binds_a_path_read_only_and_a_copy_writable() -> None:
    require_bwrap()  # binds are bubblewrap's; the other layers see the host
    rw = tempfile.mkdtemp(prefix="smallcode-test-rw-")
    try:
        with Sandbox("bwrap", Limits(timeout_s=10.0), ro_paths=(str(FIXTURE),), rw_paths=(rw,)) as sb:
            if sb.child_uid is not None:
                os.chown(rw, sb.child_uid, sb.child_uid)
            program = (
                "import os\n"
                f"assert 'textops.py' in os.listdir({str(FIXTURE / 'minipkg')!r})\n"
                f"open({rw + '/made'!r}, 'w').write('x')\n"
                "try:\n"
                f"    open({str(FIXTURE / 'made')!r}, 'w')\n"
                "except OSError:\n"
                "    pass\n"
                "else:\n"
                "    raise SystemExit('the read-only bind was writable')\n"
                f"assert not os.path.exists({str(FIXTURE.parents[1] / 'conftest.py')!r})  # nothing else\n"
            )
            r = sb.run(program)
            assert r.ok, r.error + r.output
        assert os.listdir(rw) == ["made"]
        assert not (FIXTURE / "made").exists()
    finally:
        shutil.rmtree(rw, ignore_errors=True)


def test_descriptive_names() -> None:
    assert descriptive_name("strip_prefix") and descriptive_name("_parse_header") and descriptive_name("toDict")
    assert not descriptive_name("g") and not descriptive_name("size") and not descriptive_name("run")
